"""`--tdf auto` beyond `run`: `compare` pilots every policy at each K and runs them all at the one K chosen,
`bench_live` gives each rate its own, `net --check` climbs from K 1 to the first K whose every link is within
tolerance. The option's parsing and refusals here; the commands for real on tiny (root)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from live.autotdf import MAX_PILOTS, search
from testbed.leftovers import leftovers
from testbed.record import CreationRecord
from topologies.timescale import TDF_LADDER, parse_tdf_or_auto

REPO = Path(__file__).resolve().parents[1]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,5,video-analytics,10,20000,1000,0.2,object-detection
2,ant1,1.0,5,video-analytics,5,20000,1000,0.2,object-detection
"""


def test_auto_or_a_factor_of_at_least_one() -> None:
    assert parse_tdf_or_auto("auto") is None and parse_tdf_or_auto(" auto ") is None
    assert parse_tdf_or_auto("4") == 4.0 and parse_tdf_or_auto("1") == 1.0
    for bad in ("0.5", "nan", "inf", "fast", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="--tdf"):
            parse_tdf_or_auto(bad)


@pytest.mark.parametrize("command", ["compare", "net"])
def test_compare_and_net_take_auto(command: str) -> None:
    from live.compare import register as compare_commands
    from testbed.cli import register as net_commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    compare_commands(sub)
    net_commands(sub)
    assert parser.parse_args([command, "--tdf", "auto"]).tdf is None
    assert parser.parse_args([command, "--tdf", "6"]).tdf == 6.0
    assert parser.parse_args([command]).tdf == 1.0


@pytest.mark.parametrize("extra", [{"check": False}, {"check": True, "events": Path("ev.yaml")}])
def test_net_auto_without_a_check_or_with_events_is_refused_in_one_line(extra: dict, tmp_path: Path, capsys) -> None:
    from testbed.cli import cmd_net

    args = argparse.Namespace(**{"topo": "tiny", "out": tmp_path / "net", "tdf": None, "events": None, **extra})
    assert cmd_net(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --tdf auto:") and "--check" in err
    assert not (tmp_path / "net").exists()


def test_bench_live_table_gives_each_rates_k_under_auto() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_live import load_table, results_page
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    row = {"mtu": 9000, "answered_per_antenna_qps": 99.0, "success": 1.0, "source_lag_p99_ms": 0.4,
           "scheduler_overhead_p50_us": None, "scheduler_overhead_p99_us": None, "cpu_cores": 0.8, "cpu_s": {}}
    rows = [{**row, "rate_per_antenna_qps": 100, "tdf": 4.0, "tdf_auto": True, "verdict": "faithful"},
            {**row, "rate_per_antenna_qps": 400, "tdf": 10.0, "tdf_auto": True, "verdict": "not faithful"}]
    table = load_table(rows)
    assert "| K (auto) | verdict |" in table[0] and table[0].count("|") == table[1].count("|")
    assert table[2].startswith("| 9000 | 100 | 4 | faithful | 99.0 |")
    assert table[3].startswith("| 9000 | 400 | 10 | not faithful | 99.0 |")
    assert "--tdf auto (each rate's K in the table)" in results_page(None, rows, 10.0)
    fixed = [{**r, "tdf": 4.0, "tdf_auto": False} for r in rows]
    assert "K (auto)" not in load_table(fixed)[0] and "K = 4" in results_page(None, fixed, 10.0)


@pytest.mark.root
@pytest.mark.slow
@needs_root
def test_compare_auto_pilots_every_policy_and_runs_them_at_one_k(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(TRACE)
    out = tmp_path / "cmp"
    policies = ["closest", "least-impedance"]
    done = subprocess.run([sys.executable, str(REPO / "run_testbed.py"), "compare", "--topo", "tiny", "--trace",
                           str(tmp_path / "trace.csv"), "--policies", ",".join(policies), "--real-workers", "none",
                           "--switch", "lxbr", "--controller", "none", "--tdf", "auto", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    autos = [json.loads((out / "testbed" / p / "config.json").read_text())["time_dilation"]["auto"] for p in policies]
    auto = autos[0]
    assert all(a == auto for a in autos)  # one search, recorded in every policy's run
    assert auto["peak_at_s"] == 1.0 and auto["peak_queries_per_s"] == 15.0
    verdicts = {}
    for p in auto["pilots"]:  # a K passes when every policy's pilot there is judged faithful; a failing one ends it
        judged = []
        for policy in policies:
            summary = out / "pilots" / f"k{p['tdf']:g}" / policy / "summary.json"
            if not summary.exists():
                break
            fid = json.loads(summary.read_text())["extra"]["fidelity"]
            assert fid["tdf"] == p["tdf"]
            judged.append(fid["verdict"] == "faithful")
        assert judged and (all(judged) == p["faithful"]) and (len(judged) == len(policies) or not judged[-1])
        verdicts[p["tdf"]] = p["faithful"]
    assert 1 <= len(verdicts) <= MAX_PILOTS and set(verdicts) <= set(TDF_LADDER)
    chosen = search(auto["estimate"], lambda k: verdicts[k])
    assert [(p["tdf"], p["faithful"]) for p in auto["pilots"]] == list(chosen.pilots) and auto["tdf"] == chosen.tdf
    report = json.loads((out / "report.json").read_text())
    assert [p["policy"] for p in report["policies"]] == policies
    for policy in policies:
        assert json.loads((out / "testbed" / policy / "spec.json").read_text())["tdf"] == chosen.tdf
        assert report["testbed_fidelity"][policy]["tdf"] == chosen.tdf
    assert f"--tdf auto: K {chosen.tdf:g}" in done.stdout


@pytest.mark.root
@pytest.mark.slow
@needs_root
def test_net_check_auto_stops_at_the_first_k_whose_links_are_within_tolerance(tmp_path: Path) -> None:
    out = tmp_path / "net"
    done = subprocess.run([sys.executable, str(REPO / "run_testbed.py"), "net", "--topo", "tiny", "--check",
                           "--switch", "lxbr", "--shaping", "wire", "--tolerance-ms", "1.0", "--tdf", "auto",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    checked = [line.split("K ")[-1] for line in done.stdout.splitlines() if line.startswith("--tdf auto: checking")]
    assert checked and checked == [f"{k:g}" for k in TDF_LADDER[:len(checked)]]  # from 1 up, one step at a time
    assert sorted(p.name for p in out.iterdir()) == sorted(f"k{k}" for k in checked)  # a fresh network each
    if done.returncode == 0:  # the last K checked is the one chosen, every direction ok there
        assert f"--tdf auto: K {checked[-1]}, the smallest" in done.stdout
        assert json.loads((out / f"k{checked[-1]}" / "link_measurements.json").read_text())
    else:
        assert done.returncode == 1 and len(checked) == 3 and "--tdf auto: no K up to 3" in done.stderr
    for k in checked:  # every network it checked was torn down, nothing of it left
        record = CreationRecord(out / f"k{k}")
        run_id = next(e.name for e in record.entries() if e.kind == "run")
        procs = [(e.pid, e.start_ticks) for e in record.entries() if e.kind == "process"]
        assert record.is_torn_down() and leftovers(run_id, procs) == []
