"""The demonstration's results page (experiments/demo_page.py) prints the verdict's text as the run's table
prints it, cause included, and the other work on the machine at its largest, from a finished run's files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from analysis.records import RECORD_NAMES
from live.verdict import Figure, verdict

ROOT = Path(__file__).resolve().parents[1]


def _demo_page():
    spec = importlib.util.spec_from_file_location("demo_page", ROOT / "experiments" / "demo_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_prints_the_verdicts_cause_and_the_other_work_at_its_largest(tmp_path: Path) -> None:
    over = Figure("real-inference overrun", "p95", 0.379, 0.25, "share of profile", True, 1.0, 13)
    cause = {"windows_over": 13, "samples_over": 52, "real_wait_share": 0.0163, "other_cores": 0.479,
             "other_cores_elsewhere": 0.39, "host_steal_pct_max": 0.0, "core_slower": True}
    fid = verdict([over], 4.0, None, {"real_overrun_cause": cause, "outside_cores_mean": 0.018,
                                      "outside_cores_max": 0.416})
    summary = {"lambda_per_min": 6, "duration_s": 45, "seed": 1, "policy": "closest",
               "overall": {"success": 0.487, "queries": 10}, "per_app": {"ar-vr": {"success": 0.23}},
               "extra": {"fidelity": fid, "simulated": {}, "recorded_queries": 10, "expected_queries": 10,
                         "wall_s": 282.0}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "config.json").write_text(json.dumps({"workers": []}))
    (tmp_path / "spec.json").write_text(json.dumps({"switch": "lxbr", "controller": "none"}))
    (tmp_path / "records.csv").write_text(",".join(RECORD_NAMES) + "\n")
    body = _demo_page().page(tmp_path, 284.0)
    assert "## Fidelity verdict: not faithful" in body
    assert "time dilation K 4, switches lxbr, controller none (docs/live-run.md" in body
    assert "| real-inference overrun | p95 | 0.379 | 0.25 | share of profile | yes | 1 | 13 |" in body
    assert "```\nfidelity (K = 4): NOT FAITHFUL\n" in body and "```\n\n## Success" in body
    late = "real-inference overrun p95 0.379 share of profile > 0.25, from the window at 1 s (13 windows over)"
    assert f"\n  {late}\n" in body
    assert "the core itself ran slower (the host), not the run's doing" in body
    assert "0.018 cores on average over every sample, 0.416 at most in one interval after t0" in body
    assert "Links full" not in body  # none in the summary
    summary["extra"]["links_full"] = [{"link": "co1-dc1", "direction": "co1->dc1", "radio": False, "full_s": 7.0,
                                       "first_full_s": 38.0, "busy_max": 1.0, "wait_max_ms": 433.0}]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    body = _demo_page().page(tmp_path, 284.0)
    assert "| closest | co1-dc1 | co1->dc1 | 7 | 38 | 1.00 | 433.0 |" in body
    assert "others made with the same command" not in body
    again = _demo_page().page(tmp_path, 284.0, (tmp_path,))  # the same run twice: two rows
    row = ("| not faithful | real-inference overrun p95 0.379 > 0.25; cause: the host slowed the real-inference core "
           "| - | 0.487 | nan | 282 |")  # no effect kept, and these files cannot be judged again
    assert again.count(row) == 2 and again.index(row) < again.index("## Fidelity verdict")
    fid["diagnostics"]["real_overrun_effect"] = {"queries": 479, "made_late": 1, "made_ontime": 0, "judged": 7628,
                                                 "success_pts": -0.013}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert "real-inference core | 1 / 479 (-0.01) | 0.487 |" in _demo_page().page(tmp_path, 284.0, (tmp_path,))


def test_the_runs_table_names_each_cause_the_monitor_gives_in_a_few_words() -> None:
    text = _demo_page().overrun_cause_text
    base = {"core_slower": False, "stolen": False, "throughout": False, "waited": False, "host_steal_pct_max": 2.5}
    assert text(base | {"core_slower": True}) == "the host slowed the real-inference core"
    assert text(base | {"stolen": True}) == "the hypervisor stole up to 2.5 % of the CPU (the host)"
    assert text(base | {"throughout": True}).startswith("its core slower than profiled for the whole run")
    assert text(base) == "work on the other cores slowed its core"
    assert text(base | {"waited": True}) == "" and text({}) == ""  # it shared its core; or no cause at all
    assert text({"core_slower": False, "stolen": False}) == ""  # a cause recorded before `waited` existed
