"""Results pages (analysis/resultspage.py): provenance first, names that stay in docs/results/, the option every
script that measures a docs figure shares; and the policy tables' page (experiments/policy_tables.py)."""

from __future__ import annotations

import argparse

import pytest

from analysis import resultspage
from experiments import policy_tables
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from topologies import load_topology
from training.evaluate import evaluate


def test_a_page_opens_with_its_provenance_then_the_body(tmp_path):
    path = resultspage.write_results_page("speed", "Speed", "| a |\n|---|\n| 1 |\n", command="x --y",
                                          results_dir=tmp_path)
    assert path == tmp_path / "speed.md"
    lines = path.read_text().splitlines()
    assert lines[0] == "# Speed"
    assert [line.split(":")[0] for line in lines[4:8]] == ["- date", "- commit", "- machine", "- command"]
    assert lines[7] == "- command: `x --y`" and lines[-1] == "| 1 |"


@pytest.mark.parametrize("bad", ["../escape", "/tmp/x", "page.md", "", "-x"])
def test_a_page_name_cannot_leave_docs_results(bad, tmp_path):
    with pytest.raises(ValueError, match="page name"):
        resultspage.write_results_page(bad, "t", "b", results_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_option_writes_no_page_unless_asked_and_names_the_default():
    ap = argparse.ArgumentParser()
    resultspage.add_results_page_argument(ap, "policy-tables")
    assert ap.parse_args([]).results_page is None
    assert ap.parse_args(["--results-page"]).results_page == "policy-tables"
    assert ap.parse_args(["--results-page", "other"]).results_page == "other"
    with pytest.raises(SystemExit):
        ap.parse_args(["--results-page", "a/b"])


def test_policy_tables_pool_the_seeds_as_evaluate_and_bold_the_best():
    system = build_system(load_topology("full-edge"), load_profiles(PROVISIONAL_PROFILE))
    ev = evaluate(system, None, [60.0], [1, 2], 30.0)
    lines = policy_tables.table(ev).splitlines()
    assert len(lines) == 2 + 7 and lines[0].startswith("| lambda | policy | success | failed | rejected | ar-vr (s / f / r)")
    best = ev.best_static(60.0)
    bold = [line for line in lines if "**" in line]
    assert len(bold) == 1 and f"**{best}**" in bold[0]
    r = ev.results[60.0][best].overall
    assert f"**{100 * r.success:.2f}** | {100 * r.failed:.2f} | {100 * r.rejected:.2f} |" in bold[0]


def test_every_script_writes_its_page_only_when_asked():
    """One convention: a script writes docs/results/ only given --results-page, never by default."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    writers = [p for folder in ("benchmarks", "experiments") for p in sorted((root / folder).glob("*.py"))
               if "write_results_page(" in p.read_text()]
    assert len(writers) >= 3
    for path in writers:
        text = path.read_text()
        assert "add_results_page_argument(" in text and "--no-page" not in text, path.name
