"""The command line: simulate and trace end to end on small inputs, and clear errors on bad ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_testbed.py"), *args], capture_output=True, text=True,
                          timeout=600)


def test_trace_then_simulate_all_policies_from_it(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    r = run_cli("trace", "--topo", "tiny", "--lambda", "6", "--duration", "20", "--seed", "3", "-o", str(trace))
    assert r.returncode == 0, r.stderr
    r = run_cli("simulate", "--topo", "tiny", "--trace", str(trace), "--policy", "all", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    for policy in ("closest", "least-impedance", "random-proportional-load"):
        summary = json.loads((tmp_path / "o" / policy / "summary.json").read_text())
        o = summary["overall"]
        assert o["queries"] > 0
        assert o["success"] + o["failed"] + o["rejected"] == pytest.approx(1.0)
        assert (tmp_path / "o" / policy / "records.csv").stat().st_size > 0
    assert (tmp_path / "o" / "success.png").read_bytes()[:4] == b"\x89PNG"
    assert "| closest |" in (tmp_path / "o" / "table.md").read_text()


def test_simulate_with_lambda_schedule_writes_one_policy(tmp_path: Path) -> None:
    r = run_cli("simulate", "--topo", "full-edge", "--lambda", "0:20,10:60", "--duration", "20",
                "--policy", "closest", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["lambda_per_min"] == "0:20,10:60" and summary["policy"] == "closest"
    assert len(summary["series_success"]) == 20


@pytest.mark.parametrize(("args", "expected"), [
    (("simulate", "--topo", "nowhere"), "unknown topology 'nowhere'"),
    (("simulate", "--topo", "tiny", "--policy", "fastest"), "unknown policy 'fastest'"),
    (("simulate", "--topo", "tiny", "--lambda", "lots"), "lambda 'lots'"),
    (("simulate", "--topo", "tiny", "--trace", "/nonexistent.csv"), "/nonexistent.csv: cannot read"),
])
def test_bad_arguments_give_one_clear_error(args: tuple[str, ...], expected: str) -> None:
    r = run_cli(*args)
    assert r.returncode == 2
    assert expected in r.stderr
    assert "Traceback" not in r.stderr
