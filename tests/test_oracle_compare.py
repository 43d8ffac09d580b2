"""aset_compare's figures on a scenario that the docs quote: each policy's success per phase of the cycle, and the
oracle's pooled gain over the best static with each agent's share of it."""

from __future__ import annotations

import numpy as np

from experiments.aset_compare import oracle_share, phase_table
from workload.scenario import load_scenario

CYCLE = """
name: two-phases
phases:
  - {duration_s: 3, lambda_per_min: 8}
  - {duration_s: 2, lambda_per_min: 3}
"""


def counts(per_window: list[tuple[int, int, int]]) -> np.ndarray:
    """[window, app, outcome] counts with one application: (on time, failed, rejected) per 1-s window."""
    return np.array(per_window, dtype=np.int64)[:, None, :]


def test_each_window_counts_in_its_phase_and_each_phase_bolds_its_best_static(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CYCLE)
    sc = load_scenario(p)
    # 7 windows of 1 s over a 5-s cycle: windows 0-2 and 5-6 in phase 0, windows 3-4 in phase 1
    rows = {"closest": counts([(9, 1, 0)] * 3 + [(10, 0, 0)] * 2 + [(9, 1, 0)] * 2),
            "cheaper": counts([(10, 0, 0)] * 3 + [(5, 0, 5)] * 2 + [(10, 0, 0)] * 2),
            "aset (x)": counts([(10, 0, 0)] * 3 + [(10, 0, 0)] * 2 + [(10, 0, 0)] * 2)}
    lines = phase_table(sc, rows, 1.0).splitlines()
    assert lines[2] == "| policy | phase 0: 3 s at lambda 8 | phase 1: 2 s at lambda 3 |"
    assert lines[4:] == ["| closest | 90.00 | **100.00** |", "| cheaper | **100.00** | 50.00 |",
                         "| aset (x) | 100.00 | 100.00 |"]


def test_the_oracles_gain_and_each_agents_share_of_it_are_over_the_pooled_best_static():
    pooled = {"closest": counts([(90, 0, 10)]), "cheaper": counts([(95, 0, 5)]), "aset (a)": counts([(96, 1, 3)]),
              "oracle": counts([(99, 0, 1)])}
    assert oracle_share(pooled, [1, 2]) == ("Seeds 1,2 pooled: the oracle gains +4.00 points over the best static "
                                            "(cheaper); aset (a) +1.00 (25 % of the oracle's).")
