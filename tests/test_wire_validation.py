"""experiments/wire_validation.py: kept paper cases written here, simulated again under two wire ratios and judged
by the validation's checks; its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.dilation_resim import simulate_case
from experiments import wire_validation

ARGV = ["run_testbed.py", "compare", "--topo", "full-edge", "--lambda", "60", "--duration", "10", "--seed", "3"]
POLICIES = ("closest", "farthest")
"""Simulated on that trace: closest 0.9963, farthest 1.0."""


def _case(folder: Path, testbed: dict[str, float], cid: str = "paper-l60-s3") -> dict:
    """Writes a kept paper case whose testbed figures are `testbed` (success per policy), its window series the
    simulator's own; returns it."""
    result = {"id": cid, "kind": "paper", "argv": ARGV, "policies": {}}
    for p, success in testbed.items():
        _, series = simulate_case({**result, "policies": {}}, p)
        result["policies"][p] = {"testbed": success, "verdict": "faithful",
                                 "series_testbed": [None if x != x else float(x) for x in series]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{cid}.json").write_text(json.dumps(result))
    return result


def test_a_testbed_like_the_simulator_meets_every_check_and_a_far_one_does_not(tmp_path: Path) -> None:
    sim = {p: simulate_case({"id": "paper-l60-s3", "argv": ARGV}, p)[0] for p in POLICIES}
    hi, lo = sorted(POLICIES, key=lambda p: -sim[p])
    assert sim[hi] > sim[lo]
    same = _case(tmp_path / "same", sim)
    rows = wire_validation.judge_case(same, 1.0)
    assert {p: (r.failed, round(r.diff_pts, 9)) for p, r in rows.items()} == {p: ((), 0.0) for p in POLICIES}
    assert rows[lo].sim == sim[lo] and rows[lo].corr == pytest.approx(1.0)
    # the testbed 2 points under the simulator on the lower one: its success fails, nothing else
    off = _case(tmp_path / "off", {hi: sim[hi], lo: sim[lo] - 0.02})
    assert {p: r.failed for p, r in wire_validation.judge_case(off, 1.0).items()} == {hi: (), lo: ("success",)}
    # the two swapped: the ranking on both (no other seed of the simulator gives a gap that way round)
    swapped = _case(tmp_path / "swapped", {hi: sim[lo], lo: sim[hi]})
    reversal = f"ranking: {hi} > {lo} reversed"
    assert all(reversal in r.failed for r in wire_validation.judge_case(swapped, 1.0).values())
    # the ratio reaches the simulations (here the other seeds' windows: closest's misses are not its radios')
    wider = wire_validation.judge_case(same, 1.5)
    assert wider["closest"].own_corr != pytest.approx(rows["closest"].own_corr, abs=1e-3)
    # no testbed series kept: the windows cannot be judged, and say so
    del same["policies"][lo]["series_testbed"]
    assert wire_validation.judge_case(same, 1.0)[lo].failed == ("windows: no testbed series kept",)


def test_the_page_gives_both_ratios_and_what_each_meets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sim = {p: simulate_case({"id": "paper-l60-s3", "argv": ARGV}, p)[0] for p in POLICIES}
    _case(tmp_path, sim)
    _case(tmp_path, sim, cid="paper-l60-s4")  # a second case, the same argv (seed 3): both listed
    (tmp_path / "paper-l60-s5.json").write_text(json.dumps({"id": "paper-l60-s5", "kind": "paper", "policies": {
        "closest": {"testbed": 1.0, "verdict": "faithful"}}, "argv": ["--events", "x.yaml", "--topo", "full-edge"]}))
    assert wire_validation.main(["--cases", str(tmp_path), "--wire-ratio", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "| case | policy | testbed | simulator (1) |" in out and "simulator (1.5) |" in out
    assert out.count("| paper-l60-s3 |") == 2 and out.count("| paper-l60-s4 |") == 2
    assert "- wire ratio 1: every check met in 4 of 4 policy runs, the windows' in 4;" in out
    assert "- wire ratio 1.5: every check met in" in out
    assert "Not simulated again (an option the re-simulation does not follow): paper-l60-s5." in out
    # lambda in numbers (6 before 60 before 100), and a run without a kept series counted as not meeting the windows
    for cid in ("paper-l100-s1", "paper-l6-s1"):
        case = _case(tmp_path, sim, cid=cid)
        if cid == "paper-l6-s1":
            del case["policies"]["closest"]["series_testbed"]
            (tmp_path / f"{cid}.json").write_text(json.dumps(case))
    assert list(wire_validation.load_cases(tmp_path)) == ["paper-l6-s1", "paper-l60-s3", "paper-l60-s4",
                                                         "paper-l60-s5", "paper-l100-s1"]
    assert wire_validation.main(["--cases", str(tmp_path), "--wire-ratio", "1"]) == 0
    assert "every check met in 7 of 8 policy runs, the windows' in 7;" in capsys.readouterr().out
    for cid in ("paper-l100-s1", "paper-l6-s1"):
        (tmp_path / f"{cid}.json").unlink()
    # the ratio 1 is the simulator as it runs: shown once
    assert wire_validation.main(["--cases", str(tmp_path), "--wire-ratio", "1"]) == 0
    out = capsys.readouterr().out
    assert "simulator (1) |" in out and out.count("- wire ratio 1:") == 1 and "4 of 4 policy runs" in out


_KEPT = ('{"kind": "paper", "id": "paper-l6-s1", "argv": [], "policies": {"closest": {"testbed": 0.9, '
         '"verdict": "faithful"}}}')


@pytest.mark.parametrize(("files", "args", "message"), [
    ({}, [], "no kept paper case (paper-*.json)"),
    ({"paper-l6-s1.json": "{"}, [], "paper-l6-s1.json: not a kept paper case (JSONDecodeError"),
    ({"paper-l6-s1.json": '{"kind": "negative", "policies": {}}'}, [], "paper-l6-s1.json: not a kept paper case"),
    ({}, ["--wire-ratio", "0.99"], "--wire-ratio: wire_ratio 0.99: must be a finite number >= 1"),
    ({"paper-l6-s1.json": '{"kind": "paper", "id": "paper-lx-s1", "argv": [], "policies": {}}'}, [],
     "paper-l6-s1.json: not a kept paper case (ValueError: id 'paper-lx-s1' is not"),
    ({"paper-l6-s1.json": '{"kind": "paper", "id": "paper-l6-s1", "argv": [], "policies": {"closest": {'
                          '"testbed": 0.9}}}'}, [], "paper-l6-s1.json: not a kept paper case (KeyError: 'verdict')"),
    ({"paper-l6-s1.json": _KEPT, "paper-l6-s2.json": _KEPT}, [],
     "paper-l6-s2.json: not a kept paper case (ValueError: id 'paper-l6-s1' is not its file's name"),
    ({"paper-l6-s1.json": _KEPT.replace("paper-l6-s1", "bench-l6-s1")}, [], "is not paper-l<lambda>-s<seed>"),
    ({"paper-l6-s1.json": _KEPT.replace("paper-l6-s1", "paper-l6-x1")}, [], "is not paper-l<lambda>-s<seed>"),
])
def test_bad_input_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture, files: dict[str, str],
                                         args: list[str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert wire_validation.main(["--cases", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
