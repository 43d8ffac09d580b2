"""benchmarks/validate_dilation.py without root: its cases parse with the real commands' options, a rerun
resumes (from this machine's results or kept ones), and its report reads hand-made results (and per-query
records), kept self-contained, into the checks once the runs themselves are gone."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from analysis.records import RECORD_NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vd():
    spec = importlib.util.spec_from_file_location("validate_dilation", ROOT / "benchmarks" / "validate_dilation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cases(vd, work: Path) -> list:
    return vd.cases(work, {20: 8.0, 60: 25.0}, 4.0, (1.0, 10.0))


def test_case_ids_and_their_command_lines_parse(vd, tmp_path) -> None:
    from live.compare import register as register_compare
    from live.spec import add_run_arguments, spec_from_args

    cases = _cases(vd, tmp_path)
    ids = [c.id for c in cases]
    assert ids == ["conv-s1-k10", "conv-s1-k20", "conv-s2-k10", "conv-s2-k20", "conv-s3-k10", "conv-s3-k20",
                   "neg-s1", "neg-s2", "neg-s3", "paper-l20-s1", "paper-l20-s2", "paper-l20-s3", "paper-l60-s1",
                   "paper-l60-s2", "paper-l60-s3", "bench-k1", "bench-k10"]
    run_parser = argparse.ArgumentParser()
    add_run_arguments(run_parser)
    sub = argparse.ArgumentParser().add_subparsers()
    register_compare(sub)
    compare_parser = sub.choices["compare"]
    for c in cases:
        if c.kind in ("convergence", "negative"):
            assert c.argv[2] == "run"
            spec = spec_from_args(run_parser.parse_args(list(c.argv[3:])))
            assert spec.events is None and spec.switch == "lxbr" and spec.pcap == "none"
            assert spec.tdf == (4.0 if c.kind == "negative" else float(c.id.split("-k")[1]))
            assert spec.real_sites == ()  # profile-driven workers: no core reserved, the run has them all
        elif c.kind == "paper":
            args = compare_parser.parse_args(list(c.argv[3:]))
            assert args.policies == ",".join(vd.POLICIES) and args.tdf in (8.0, 25.0) and args.duration == 120.0
    assert next(c for c in cases if c.kind == "negative").ok_exits == (0, 1)
    topo = (tmp_path / "full-edge-nojitter.yaml").read_text()
    assert "delay_dev_ms: 0" in topo and "delay_dev_ms: 1.0" not in topo


def test_fidelity_page_is_written_by_the_one_paper_case_named(vd, tmp_path, capsys) -> None:
    cases = vd.cases(tmp_path, {20: 8.0, 60: 25.0}, 4.0, (1.0,), fidelity_page="paper-l60-s2")
    assert [c.id for c in cases if "--results-page" in c.argv] == ["paper-l60-s2"]
    from live.compare import register as register_compare

    sub = argparse.ArgumentParser().add_subparsers()
    register_compare(sub)
    args = sub.choices["compare"].parse_args(list(next(c for c in cases if c.id == "paper-l60-s2").argv[3:]))
    assert args.results_page == "fidelity" and args.lambda_per_min == "60"
    assert not any("--results-page" in c.argv for c in _cases(vd, tmp_path))
    assert vd.main(["--work", str(tmp_path), "--fidelity-page", "neg-s1", "--list"]) == 2
    assert "--fidelity-page: 'neg-s1' is not a paper case" in capsys.readouterr().err


def test_bench_case_uses_bench_lives_options(vd, tmp_path) -> None:
    text = (ROOT / "benchmarks" / "bench_live.py").read_text()
    bench = next(c for c in _cases(vd, tmp_path) if c.kind == "bench")
    for flag in (a for a in bench.argv if a.startswith("--")):
        assert f'"{flag}"' in text, flag


def test_a_rerun_skips_the_cases_done(vd, tmp_path) -> None:
    cases = _cases(vd, tmp_path)
    keep = tmp_path / "keep"
    (tmp_path / "neg-s2").mkdir()
    (tmp_path / "neg-s2" / "result.json").write_text("{}")
    left = [c.id for c in vd.to_run(cases, tmp_path, {"neg-s1", "neg-s2"}, keep)]
    assert left == ["neg-s1"] and len(vd.to_run(cases, tmp_path, None, keep)) == len(cases) - 1
    keep.mkdir()
    (keep / "neg-s1.json").write_text("{}")  # kept by an earlier machine: done here too
    assert vd.to_run(cases, tmp_path, {"neg-s1", "neg-s2"}, keep) == []


def test_an_unfinished_try_is_set_aside_before_the_case_runs_again(vd, tmp_path) -> None:
    folder = tmp_path / "conv-s3-k10"
    assert vd.set_aside(folder) is None  # no folder yet
    (folder / "run" / "records").mkdir(parents=True)
    (folder / "run" / "summary.json").write_text("{}")
    (folder / "log.txt").write_text("error")
    aside = vd.set_aside(folder)
    assert aside is not None and aside.parent == folder and aside.name.startswith("incomplete-")
    assert (aside / "run" / "summary.json").exists() and not (folder / "run").exists() and (folder / "log.txt").exists()
    assert vd.set_aside(folder) is None  # nothing left to move
    (folder / "run").mkdir()
    (folder / "result.json").write_text("{}")  # a finished case is never touched
    assert vd.set_aside(folder) is None and (folder / "run").exists()


def _records(path: Path, latencies_ms: dict[tuple[int, int], float | None]) -> None:
    path.mkdir(parents=True)
    lines = [",".join(RECORD_NAMES)]
    for (s, q), lat in latencies_ms.items():
        row = {n: "" for n in RECORD_NAMES} | {"stream_id": s, "query": q, "antenna": "ant1", "app": "ar-vr",
                                                 "t_send_ms": 1000.0 + q, "outcome": "success" if lat else "failed",
                                                 "t_response_ms": "" if lat is None else 1000.0 + q + lat}
        lines.append(",".join(str(row[n]) for n in RECORD_NAMES))
    (path / "records.csv").write_text("\n".join(lines) + "\n")


def _result(work: Path, cid: str, **fields) -> None:
    (work / cid).mkdir(parents=True, exist_ok=True)
    (work / cid / "result.json").write_text(json.dumps({"id": cid, **fields}))


def test_report_from_hand_made_results_kept_once_the_runs_are_gone(vd, tmp_path) -> None:
    _records(tmp_path / "a", {(0, 0): 20.0, (0, 1): 21.0, (1, 0): 30.0, (1, 1): None})
    _records(tmp_path / "b", {(0, 0): 20.1, (0, 1): 21.3, (1, 0): 30.05, (2, 0): 9.0})
    (tmp_path / "a" / "config.json").write_text(json.dumps({"versions": {"git_commit": "abcdef1234567890"}}))
    conv, neg = ["--duration", "20", "--tdf"], ["--duration", "60", "--tdf", "4"]
    _result(tmp_path, "conv-s1-k10", kind="convergence", run=str(tmp_path / "a"), verdict="faithful",
            argv=[*conv, "10"], wall_s=230.4)
    _result(tmp_path, "conv-s1-k20", kind="convergence", run=str(tmp_path / "b"), verdict="faithful",
            argv=[*conv, "20"], wall_s=431.0)
    _result(tmp_path, "neg-s1", kind="negative", tdf=4, verdict="not faithful", stopped_early=True,
            violations=["source send lag"], argv=neg, wall_s=61.2)
    _result(tmp_path, "neg-s2", kind="negative", tdf=4, verdict="faithful", stopped_early=False, violations=[],
            argv=neg, wall_s=300)
    policies = {"closest": {"sim": 0.95, "testbed": 0.94, "diff_pts": -1.0, "corr": 0.97, "verdict": "faithful"},
                "load-balancing": {"sim": 0.90, "testbed": 0.87, "diff_pts": -3.0, "corr": 0.96, "verdict": "faithful"}}
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "report.json").write_text(json.dumps({"policies": [
        {"policy": "closest", "series_simulator": [0.9, 1.0, None], "series_testbed": [0.9, 0.9, 0.5]}]}))
    closest = tmp_path / "cmp" / "testbed" / "closest"  # its monitor: 0.2 (before t0) and 0.7 cores of other work
    closest.mkdir(parents=True)
    # closest's two logs, 3 queries: (0, 1) missed on the testbed alone (no answer), (0, 2) on both sides
    (tmp_path / "cmp" / "simulator" / "closest").mkdir(parents=True)
    for side, outcomes in (("simulator", ("ontime", "ontime", "failed")), ("testbed", ("ontime", "failed", "failed"))):
        rows = [",".join(RECORD_NAMES)] + [",".join(str({
            "stream_id": 0, "query": q, "cluster": "dc1", "t_send_ms": 1000.0 * q, "outcome": o}.get(n, ""))
            for n in RECORD_NAMES) for q, o in enumerate(outcomes)]
        (tmp_path / "cmp" / side / "closest" / "records.csv").write_text("\n".join(rows) + "\n")
    (closest / "summary.json").write_text(json.dumps({"extra": {"fidelity": {"verdict": "faithful", "figures": []}}}))
    (closest / "config.json").write_text(json.dumps({"tdf": 1.0}))  # the first sample covers t0: left out
    (closest / "monitor.jsonl").write_text("".join(json.dumps(
        {"t_ms": t, "real_s": 1.0, "host_cores": busy, "procs": {"source ant1 (8)": {
            "group": "sources", "cores": 0.3, "run_ms": 300.0, "wait_ms": 0.0}}}) + "\n"
        for t, busy in ((500.0, 0.5), (1500.0, 1.0))))
    _result(tmp_path, "paper-l20-s1", kind="paper", policies=policies, spearman=1.0,
            argv=["--topo", "full-edge", "--duration", "120", "--tdf", "4"], wall_s=1500, out=str(tmp_path / "cmp"))
    tie = {"least-impedance": {"sim": 1.0, "testbed": 0.999, "diff_pts": -0.1, "corr": 0.96, "verdict": "faithful"},
           "load-balancing": {"sim": 1.0, "testbed": 1.0, "diff_pts": 0.0, "corr": 0.96, "verdict": "faithful"},
           "closest": {"sim": 0.997, "testbed": 0.998, "diff_pts": 0.1, "corr": 0.96, "verdict": "faithful"}}
    _result(tmp_path, "paper-l20-s2", kind="paper", policies=tie, spearman=0.866, argv=["--tdf", "4"], wall_s=1)
    flip = {"closest": {"sim": 0.99, "testbed": 0.98, "diff_pts": -1.0, "corr": 0.96, "verdict": "faithful"},
            "load-balancing": {"sim": 0.985, "testbed": 0.984, "diff_pts": -0.1, "corr": 0.96, "verdict": "faithful"}}
    _result(tmp_path, "paper-l60-s1", kind="paper", policies=flip, spearman=-1.0, argv=["--tdf", "8"], wall_s=1)
    _result(tmp_path, "bench-k10", kind="bench", max_faithful_qps=200,
            rows=[{"rate_per_antenna_qps": 200, "verdict": "faithful"}, {"rate_per_antenna_qps": 400,
                                                                          "verdict": "not faithful"}])
    keep = tmp_path / "keep"
    assert vd.archive(tmp_path, keep) == ["bench-k10", "conv-s1-k10", "conv-s1-k20", "neg-s1", "neg-s2",
                                          "paper-l20-s1", "paper-l20-s2", "paper-l60-s1"]
    assert vd.archive(tmp_path, keep) == []  # kept already
    for run in ("a", "b", "cmp"):
        shutil.rmtree(tmp_path / run)  # a later machine: the runs are gone, their kept results are not
    body, passed = vd.report(keep, ["conv-s1-k10", "conv-s1-k20", "neg-s1", "neg-s3"])
    assert body.startswith("Not run yet (1 of 4 cases): neg-s3.")
    # |0.1|, |0.3|, |0.05|; K 10 faster on each (-0.1, -0.3, -0.05): H = -0.1 / (1/10 - 1/20)
    assert "| 1 | 20 | 3 | 0.100 | -0.100 | 0.00 | -2.0 | yes | faithful / faithful | 230 / 431 |" in body
    assert "| 2 | not run |" in body
    assert "| 1 | 4 | 60 | not faithful | yes | source send lag | yes | 61 |" in body
    assert "| 2 | 4 | 60 | faithful | no |  | NO | 300 |" in body
    # closest's windows both sides have: sim 90, 100 (sd 5), testbed 90, 90 (sd 0), |diff| 0 and 10 (mean 5)
    # beside the correlation, the simulator's own across run seeds on the case's trace (λ20, seed 1: closest's
    # series varies; load-balancing's misses a few queries in a few windows, at random: about 0 with itself)
    # below 0.95 (closest's varies: 0.91 at λ20, seed 1), the windows must also be within 1.5 points on average
    assert re.search(r"\| 20 \| 1 \| 4 \| 120 \| closest \| 0\.950 \| 0\.940 \| -1\.00 \| 0\.970 \| "
                     r"0\.\d{3} / -?\d\.\d{3} \| 5\.00 / 0\.00 \| 5\.00 \| faithful \| 0\.70 \| NO \(windows\) \| 1500 \|",
                     body)
    # load-balancing: its windows are judged too (the simulator's own correlation is below 0.95), and it kept none
    assert ("| 20 | 1 | 4 | 120 | load-balancing | 0.900 | 0.870 | -3.00 | 0.960 | -0.034 / -0.045 | - | - | "
            "faithful | - | NO (success, windows) | 1500 |") in body
    # a simulator tie (least-impedance, load-balancing) may come out either way (rho 0.866); a strict order may not
    assert "| least-impedance | 1.000 | 0.999 | -0.10 | 0.960 | - | - | - | faithful | - | yes |" in body
    assert "| closest | 0.997 | 0.998 | +0.10 | 0.960 | - | - | - | faithful | - | yes |" in body
    assert ("| load-balancing | 0.985 | 0.984 | -0.10 | 0.960 | - | - | - | faithful | - | NO (ranking: closest > "
            "load-balancing reversed) |") in body
    assert "| 10 | 200 (faithful), 400 (not faithful) | 200 |" in body
    # over the seeds, per lambda, K and policy: ranges, and how many seeds pass every check (seed 1 fails its windows)
    assert ("| 20 | 4 | closest | 1, 2 | 0.950 to 0.997 | 0.940 to 0.998 | -1.00 to +0.10 | 0.960 to 0.970 | "
            "1 of 2 |") in body
    assert "| 60 | 8 | closest | 1 | 0.990 | 0.980 | -1.00 | 0.960 | 0 of 1 |" in body
    # kept: paired; beside it the simulator against itself on the case's trace (a count, λ20 seed 1's closest)
    # (a median and its range); the testbed's own miss alone in its window of 3 (dispersion 2/3), the simulator none
    assert re.search(r"\| paper-l20-s1 \| closest \| 3 \| 0 \| 1 \| 1 \| 0 \| 1 \| \d+(\.5)? \(\d+-\d+\) \| "
                     r"0\.67 / - \| no answer 1 \| dc1 1 \|", body)
    assert "| paper-l20-s1 | load-balancing |" not in body  # no logs kept
    assert ("The command of `conv-s1-k10` (the others differ in seed, K or rate): `--duration 20 --tdf 10`; the runs "
            "ran at commit abcdef123456") in body
    assert not passed
    # The same testbed figures against this commit's simulator on the case's own trace (lambda 20, seed 1, 120 s);
    # closest's kept testbed series (3 windows) gives a correlation again, load-balancing kept none.
    now = re.search(r"\| 20 \| 1 \| closest \| 0\.9400 \| 0\.9500 \| (0\.\d{4}|1\.0000) \| -1\.00 \| ([+-]\d+\.\d\d) \| "
                    r"(yes|NO) \| (-?\d\.\d{3}|nan) \|", body)
    assert now and float(now.group(2)) == pytest.approx(100 * (0.94 - float(now.group(1))), abs=0.006)
    assert re.search(r"\| 20 \| 1 \| load-balancing \| 0\.8700 \| 0\.9000 \| [01]\.\d{4} \| -3\.00 \| .* \| - \|", body)
    assert ("Not re-simulated (their argv lacks --topo or --duration, or has an option this does not follow): "
            "paper-l20-s2, paper-l60-s1.") in body
    for cid in ("neg-s2", "paper-l20-s1", "paper-l60-s1"):
        (keep / f"{cid}.json").unlink()
    assert vd.report(keep)[1]


def test_window_check_bar_is_the_simulators_own_correlation_where_that_is_lower() -> None:
    from benchmarks.dilation_ceiling import Ceiling, gap_within_simulator, window_bar
    from benchmarks.dilation_report import windows_agree

    assert window_bar(0.95, Ceiling(0.60, 0.44, (1.0,))) == 0.60
    assert window_bar(0.95, Ceiling(0.98, 0.97, (1.0,))) == 0.95
    assert window_bar(0.95, Ceiling(float("nan"), float("nan"), (1.0,))) == 0.95 and window_bar(0.95, None) == 0.95
    close, apart = {"mean_diff_pts": 0.2}, {"mean_diff_pts": 1.6}
    assert windows_agree({"corr": 0.96, "spread": apart}, 0.95, 0.95)  # the bar: the correlation alone
    assert not windows_agree({"corr": 0.94, "spread": close}, 0.95, 0.95)
    # below it (the simulator's own correlation), the windows must also be close on average
    assert windows_agree({"corr": 0.61, "spread": close}, 0.60, 0.95)
    assert not windows_agree({"corr": 0.61, "spread": apart}, 0.60, 0.95)
    assert not windows_agree({"corr": 0.59, "spread": close}, 0.60, 0.95)
    # undefined (a flat series): the mean difference alone decides
    assert windows_agree({"corr": float("nan"), "spread": close}, 0.95, 0.95)
    assert not windows_agree({"corr": float("nan"), "spread": apart}, 0.95, 0.95)
    assert not windows_agree({"corr": float("nan")}, 0.95, 0.95)
    # a reversed order is excused only by a gap the simulator gives under one of its seeds
    a, b = Ceiling(0.9, 0.9, (0.999, 0.998, 1.0)), Ceiling(0.9, 0.9, (0.998, 0.999, 0.999))
    assert gap_within_simulator(a, b, -0.001) and not gap_within_simulator(a, b, -0.002)
    assert not gap_within_simulator(a, None, -0.001)


def test_unknown_case_is_refused_and_list_runs_nothing(vd, tmp_path, capsys) -> None:
    assert vd.main(["--work", str(tmp_path), "--only", "conv-s9-k10"]) == 2
    assert "unknown case(s) conv-s9-k10" in capsys.readouterr().err
    assert vd.main(["--work", str(tmp_path), "--list"]) == 0
    assert "neg-s1" in capsys.readouterr().out and not list(tmp_path.glob("*/log.txt"))


def test_monitor_margins_split_faithful_from_not(vd, tmp_path) -> None:
    def run(name: str, verdict: str, lag_p99: float) -> dict:
        figures = [{"invariant": "source send lag", "statistic": "p99", "value": lag_p99, "threshold": 5.0,
                    "unit": "virtual ms", "hard": True},
                   {"invariant": "host CPU", "statistic": "mean", "value": 0.9, "threshold": 0.85, "unit": "share",
                    "hard": False}]
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"extra": {"fidelity": {"verdict": verdict, "figures": figures}}}))
        from benchmarks.dilation_report import _run_facts

        return _run_facts(tmp_path / name)

    runs = [run("a", "faithful", 0.4), run("b", "faithful", 1.2), run("c", "not faithful", 7.5),
            run("d", "not faithful", 3.0)]
    lines = vd.monitor_margins(runs)
    assert lines[2:] == ["| source send lag (p99, virtual ms) | 5 | 1.2 (2) | 7.5 (2) | 1 |"]  # soft ones left out


def test_bench_rates_start_low_only_undilated(vd, tmp_path) -> None:
    assert vd.bench_rates(1.0) == "25,50,100,200,400,800,1600"  # brackets the undilated ~50 per antenna
    assert vd.bench_rates(4.0) == vd.bench_rates(40.0) == "100,200,400,800,1600"
    k1 = next(c for c in _cases(vd, tmp_path) if c.id == "bench-k1")
    assert k1.argv[k1.argv.index("--rates") + 1] == vd.bench_rates(1.0)


def test_a_kept_cases_id_gives_its_lambda_and_seed_as_written() -> None:
    from benchmarks.dilation_resim import case_seed, paper_id

    assert paper_id("paper-l60-s2") == ("60", "2") and paper_id("paper-l6.5-s13") == ("6.5", "13")
    for bad in ("paper-l60-2", "bench-l60-s2", "paper-l60-s2-x", "paper-l-s2"):
        with pytest.raises(ValueError, match=re.escape(f"id {bad!r} is not paper-l<lambda>-s<seed>")):
            paper_id(bad)
    assert case_seed({"id": "paper-l60-s3", "argv": ["compare"]}) == 3
    assert case_seed({"id": "paper-l60-s3", "argv": ["compare", "--seed", "7"]}) == 7
