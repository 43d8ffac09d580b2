"""The command line: simulate and trace end to end on small inputs, and clear errors on bad ones."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_simulate_charges_the_wire_ratio_on_the_links(tmp_path: Path) -> None:
    up = {}
    for ratio in ("1", "2"):
        r = run_cli("simulate", "--topo", "full-edge", "--lambda", "20", "--duration", "5", "--policy", "closest",
                    "--wire-ratio", ratio, "--out", str(tmp_path / ratio))
        assert r.returncode == 0, r.stderr
        with (tmp_path / ratio / "records.csv").open(newline="") as f:
            up[ratio] = sorted(float(row["t_sched_ms"]) - float(row["t_send_ms"]) for row in csv.DictReader(f)
                               if row["t_sched_ms"])
        assert json.loads((tmp_path / ratio / "summary.json").read_text())["extra"]["wire_ratio"] == float(ratio)
    # the same frames, each up its radio longer by one more transmission of its payload (~0.4-1.5 ms at 400 Mbit/s)
    assert len(up["1"]) == len(up["2"]) > 100
    assert 0.3 < float(np.median(np.array(up["2"]) - np.array(up["1"]))) < 2.0


@pytest.mark.parametrize(("args", "expected"), [
    (("simulate", "--topo", "nowhere"), "unknown topology 'nowhere'"),
    (("simulate", "--topo", "tiny", "--policy", "fastest"), "unknown policy 'fastest'"),
    (("simulate", "--topo", "tiny", "--lambda", "lots"), "lambda 'lots'"),
    (("simulate", "--topo", "tiny", "--trace", "/nonexistent.csv"), "/nonexistent.csv: cannot read"),
    (("simulate", "--topo", "tiny", "--window", "0", "--duration", "5"), "window_s 0.0: must be"),
    (("simulate", "--topo", "tiny", "--duration", "-5"), "--duration -5.0: must be"),
    (("simulate", "--topo", "tiny", "--duration", "nan"), "--duration nan: must be"),
    (("simulate", "--topo", "tiny", "--duration", "5", "--capacity-headroom", "-1"),
     "capacity_headroom -1.0: must be"),
    (("simulate", "--topo", "tiny", "--duration", "5", "--wire-ratio", "0.5"), "wire_ratio 0.5: must be"),
    (("trace", "--topo", "tiny", "--duration", "-3", "-o", "/tmp/never.csv"), "--duration -3.0: must be"),
    (("--topo", "tiny", "--policy", "aset"), "--policy aset needs --agent"),
    (("simulate", "--topo", "tiny", "--policy", "aset"), "--policy aset needs --agent"),
    (("run", "--topo", "tiny", "--agent", "/nonexistent.onnx"), "--agent /nonexistent.onnx: no ONNX agent there"),
    (("net", "--topo", "tiny", "--mtu", "9"), "mtu 9 is not an integer from 68 to 65535"),
    (("run", "--topo", "tiny", "--mtu", "70000"), "mtu 70000 is not an integer from 68 to 65535"),
])
def test_bad_arguments_give_one_clear_error(args: tuple[str, ...], expected: str) -> None:
    r = run_cli(*args)
    assert r.returncode == 2
    assert expected in r.stderr
    assert "Traceback" not in r.stderr


def test_duration_limits_a_replayed_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    assert run_cli("trace", "--topo", "tiny", "--lambda", "30", "--duration", "60", "-o", str(trace)).returncode == 0
    full = run_cli("simulate", "--topo", "tiny", "--trace", str(trace), "--policy", "closest", "--out",
                   str(tmp_path / "a"), "--no-records")
    short = run_cli("simulate", "--topo", "tiny", "--trace", str(trace), "--policy", "closest", "--duration", "5",
                    "--out", str(tmp_path / "b"), "--no-records")
    assert full.returncode == short.returncode == 0, full.stderr + short.stderr
    q_full = json.loads((tmp_path / "a" / "summary.json").read_text())["overall"]["queries"]
    q_short = json.loads((tmp_path / "b" / "summary.json").read_text())["overall"]["queries"]
    from workload.trace import read_trace
    assert q_short == read_trace(trace).expected_queries(until_s=5) < q_full == read_trace(trace).expected_queries()


def test_every_command_draws_the_same_workload_from_a_seed(tmp_path: Path) -> None:
    from live.spec import RunSpec
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology
    from workload.trace import read_trace

    out = tmp_path / "t.csv"
    assert run_cli("trace", "--topo", "full-edge", "--lambda", "3", "--duration", "60", "--seed", "4",
                   "-o", str(out)).returncode == 0
    system = build_system(load_topology("full-edge"), load_profiles())
    live, _ = RunSpec(topo="full-edge", lambda_per_min="3", duration_s=60.0, seed=4).workload().build(system.antennas)
    cli = read_trace(out)
    assert len(cli) == len(live) > 0
    assert (cli.start_s == pytest.approx(live.start_s, abs=1e-6)) and (cli.app == live.app).all()


def test_simulate_runs_an_aset_agent_after_the_static_policies(tmp_path: Path) -> None:
    from aset_agents import constant_agent

    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology

    system = build_system(load_topology("tiny"), load_profiles())
    agent = constant_agent(tmp_path / "agent.onnx", system, "farthest", window_s=2.0)
    r = run_cli("simulate", "--topo", "tiny", "--lambda", "6", "--duration", "10", "--policy", "all",
                "--agent", str(agent), "--out", str(tmp_path / "o"), "--no-records")
    assert r.returncode == 0, r.stderr
    aset = json.loads((tmp_path / "o" / "aset" / "summary.json").read_text())
    farthest = json.loads((tmp_path / "o" / "farthest" / "summary.json").read_text())
    assert aset["policy"] == "aset" and aset["overall"] == farthest["overall"]  # the same choice, every window
    assert aset["extra"]["policy_windows"] == {"windows": 5, "policies": {"farthest": 5}}
    rows = (tmp_path / "o" / "aset" / "windows.csv").read_text().splitlines()
    assert rows[0] == "window,t_start_ms,t_end_ms,policy" and rows[-1] == "4,8000.0,10000.0,farthest"


def test_simulate_takes_an_agent_folder_as_the_live_run_and_evaluate_do(tmp_path: Path) -> None:
    """`--agent DIR` reads DIR/agent.onnx (the folder `train --out` writes, as agents/<topology>); a folder
    without one is refused with the option named."""
    from aset_agents import constant_agent

    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology

    system = build_system(load_topology("tiny"), load_profiles())
    (tmp_path / "agent").mkdir()
    constant_agent(tmp_path / "agent" / "agent.onnx", system, "farthest", window_s=2.0)
    r = run_cli("simulate", "--topo", "tiny", "--lambda", "6", "--duration", "4", "--agent", str(tmp_path / "agent"),
                "--out", str(tmp_path / "o"), "--no-records")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["policy"] == "aset"
    (tmp_path / "empty").mkdir()
    r = run_cli("simulate", "--topo", "tiny", "--lambda", "6", "--duration", "4", "--agent", str(tmp_path / "empty"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: --agent {tmp_path / 'empty'}: no ONNX "
                                                                   "agent there (expected agent.onnx, as `train --out` writes)"]
