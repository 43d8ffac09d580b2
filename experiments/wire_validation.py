"""The time-dilation validation's testbed runs against a simulator that charges the wire's bytes: each kept
paper-load case (benchmarks/validate_dilation.py; docs/results/dilation-cases/paper-*.json) simulated again as
`compare` simulates it (benchmarks/dilation_resim.py), with SimConfig.wire_ratio 1.0 (the simulator as it runs
today) and with the ratio of the testbed's wires (`--wire-ratio`, default 1.0138: the three radios of
docs/results/radio-sharing.md counted 1.0134-1.0143 x the frames' payload at MTU 9000), each judged by the
validation's checks against the kept testbed figures: success within 1.5 points, the window correlation at least
0.95 or the simulator's own across run seeds (simulated again under the same ratio), the same ranking (a
reversal by a gap the simulator gives under another seed excused), the testbed judged faithful (as kept).

    .venv/bin/python experiments/wire_validation.py [--cases docs/results/dilation-cases] [--wire-ratio 1.0138] \\
        [--results-page]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.fidelity import ranking_reversals  # noqa: E402
from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from benchmarks.dilation_ceiling import ceilings  # noqa: E402
from benchmarks.dilation_report import (  # noqa: E402
    SUCCESS_MAX_PTS,
    WINDOW_CORR_MIN,
    paper_checks,
    series_spread,
)
from benchmarks.dilation_resim import (  # noqa: E402
    kept_correlation,
    paper_id,
    resimulable,
    series_array,
    simulate_case,
)
from experiments.radio_sharing import cell  # noqa: E402
from simulator.engine import SimConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "docs" / "results" / "dilation-cases"
MEASURED_RATIO = 1.0138
"""The wire's bytes over the frames' payload on the testbed's radios (docs/results/radio-sharing.md: 1.0134, 1.0143
and 1.0138 on its three radios, MTU 9000)."""


@dataclass(frozen=True)
class Row:
    """One policy of one case under one wire ratio, judged."""

    sim: float
    diff_pts: float
    """Testbed minus simulator success, points."""
    corr: float
    """Window correlation with the kept testbed series (nan: flat, or none kept)."""
    own_corr: float
    """The simulator's median window correlation with itself across run seeds (nan: flat, or none)."""
    failed: tuple[str, ...]


def judge_case(result: dict, ratio: float) -> dict[str, Row]:
    """Returns per policy of a kept paper case its row under `ratio`, judged by the validation's checks
    (`benchmarks.dilation_report.paper_checks`); a policy whose testbed series was not kept fails the windows'."""
    ceil = ceilings(result, ratio)
    sim = {p: simulate_case(result, p, wire_ratio=ratio) for p in result["policies"]}
    testbed = {p: v["testbed"] for p, v in result["policies"].items()}
    reversed_ = ranking_reversals({p: s for p, (s, _) in sim.items()}, testbed)
    rows = {}
    for p, v in result["policies"].items():
        success, series = sim[p]
        kept = v.get("series_testbed")
        corr = kept_correlation(series, kept) if kept else float("nan")
        figures = {"diff_pts": 100 * (v["testbed"] - success), "corr": corr, "verdict": v["verdict"],
                   "spread": series_spread(series, series_array(kept)) if kept else None}
        failed, _ = paper_checks(p, figures, reversed_, ceil, testbed)
        if not kept:
            failed = [("windows: no testbed series kept" if f == "windows" else f) for f in failed]
        rows[p] = Row(success, figures["diff_pts"], corr, ceil[p].corr_median if p in ceil else float("nan"),
                      tuple(failed))
    return rows


def _checks(row: Row) -> str:
    return "yes" if not row.failed else "NO (" + ", ".join(row.failed) + ")"


def page(cases: dict[str, dict], ratio: float) -> str:
    """Returns the page's body: every resimulable kept paper case under wire ratios 1.0 and `ratio`."""
    ratios = tuple(dict.fromkeys((1.0, ratio)))  # 1.0: the simulator as it runs, always shown
    lines = [f"The kept testbed runs of the time-dilation validation ([dilation.md](dilation.md)) against this "
             f"commit's simulator as `compare` runs it (wire ratio 1.0: each link transmits the payload) and "
             f"charging {ratio:g} x the payload on every link (radio and path; the testbed's wires counted "
             f"{MEASURED_RATIO:g} x, [radio-sharing.md](radio-sharing.md)). Under each ratio, each policy run "
             f"judged by the validation's checks: success within {SUCCESS_MAX_PTS:g} points, the window "
             f"correlation at least {WINDOW_CORR_MIN:g} or, where lower, the "
             "simulator's own median across run seeds (then the windows also within "
             f"{SUCCESS_MAX_PTS:g} points on average), the same ranking (a reversal by a gap the simulator gives "
             "under another seed excused), the testbed judged faithful (its kept verdict). *Own*: the simulator's "
             "median correlation with itself under that ratio. The schedulers decide with the payload under each "
             "(as the testbed's do). A flat series has no correlation (-).", "",
             "| case | policy | testbed | " + " | ".join(
                 f"simulator ({r:g}) | diff (pts) | window corr | own | checks" for r in ratios) + " |",
             "|---|---|---|" + "---|---|---|---|---|" * len(ratios)]
    passed = {r: 0 for r in ratios}
    windows = {r: 0 for r in ratios}
    absdiff: dict[float, list[float]] = {r: [] for r in ratios}
    skipped = []
    for cid, result in cases.items():
        if not resimulable(result):
            skipped.append(cid)
            continue
        judged = {r: judge_case(result, r) for r in ratios}
        for p, v in result["policies"].items():
            cells = []
            for r in ratios:
                row = judged[r][p]
                passed[r] += not row.failed
                windows[r] += not any(f.startswith("windows") for f in row.failed)
                absdiff[r].append(abs(row.diff_pts))
                cells.append(f"{row.sim:.4f} | {row.diff_pts:+.2f} | {cell(row.corr, '.3f')} | {cell(row.own_corr, '.3f')} | "
                             f"{_checks(row)}")
            lines.append(f"| {cid} | {p} | {v['testbed']:.4f} | " + " | ".join(cells) + " |")
    n = len(absdiff[1.0])
    lines += [""] + [f"- wire ratio {r:g}: every check met in {passed[r]} of {n} policy runs, the windows' in "
                     f"{windows[r]}; mean absolute success difference {np.mean(absdiff[r]):.3f} points, largest "
                     f"{max(absdiff[r]):.2f}." for r in ratios if n]
    if skipped:
        lines += ["", f"Not simulated again (an option the re-simulation does not follow): {', '.join(skipped)}."]
    return "\n".join(lines) + "\n"


def load_cases(folder: Path) -> dict[str, dict]:
    """Returns the kept paper cases of `folder` by id, in order of lambda then seed. Raises ValueError naming a
    file that cannot be read or is not a kept case."""
    out, order = {}, {}
    for path in sorted(folder.glob("paper-*.json")):
        try:
            result = json.loads(path.read_text())
            if result["kind"] != "paper":
                raise ValueError(f"kind {result['kind']!r}")
            lam, seed = paper_id(str(result["id"]))
            if result["id"] != path.stem:
                raise ValueError(f"id {result['id']!r} is not its file's name")
            key = (float(lam), int(seed))
            if not isinstance(result["argv"], list) or not result["policies"]:
                raise ValueError("no argv or no policy")
            for p, v in result["policies"].items():
                if not (isinstance(v["testbed"], (int, float)) and isinstance(v["verdict"], str)):
                    raise ValueError(f"policy {p!r}: testbed success or verdict missing")
        except OSError as e:
            raise ValueError(f"{path}: cannot read: {e.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a kept paper case ({type(e).__name__}: {e})") from None
        if result["id"] in out:
            raise ValueError(f"{path}: case {result['id']!r} is kept twice in {folder}")
        out[result["id"]], order[result["id"]] = result, key
    if not out:
        raise ValueError(f"{folder}: no kept paper case (paper-*.json)")
    return dict(sorted(out.items(), key=lambda kv: order[kv[0]]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The validation's kept testbed runs against the simulator charging the "
                                             "wire's bytes.")
    ap.add_argument("--cases", type=Path, default=CASES, help="folder of kept cases (default: %(default)s)")
    ap.add_argument("--wire-ratio", type=float, default=MEASURED_RATIO,
                    help="bytes on the wire per byte of payload (default %(default)s, measured)")
    add_results_page_argument(ap, "wire-validation")
    args = ap.parse_args(argv)
    try:
        SimConfig(wire_ratio=args.wire_ratio)  # refuses a ratio below 1, nan or inf
    except ValueError as e:
        print(f"error: --wire-ratio: {e}", file=sys.stderr)
        return 2
    try:
        cases = load_cases(args.cases)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    body = page(cases, args.wire_ratio)
    print(body)
    if args.results_page:
        print(f"wrote {write_results_page(args.results_page, 'The validation with the wire’s bytes charged', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
