"""What the simulator would say against the testbed with the testbed's radio: its own queries of a compare run
re-judged with each antenna's radio uplink timed by another link model, then compared with the testbed as
`compare` does (success, the difference in points, the window correlation).

    .venv/bin/python experiments/radio_whatif.py DIR[:POLICY] ... [--results-page]

Each DIR is the output of `run_testbed.py compare` (as for experiments/radio_sharing.py: its trace.csv, and per
policy testbed/<policy>/ with records.csv, link_load.csv and wire-radio-<antenna>.json, and
simulator/<policy>/records.csv). Per antenna, the simulator's frames that crossed its radio (`t_sched_ms` known)
are timed through the simulator's model, FIFO on their payload, and through each of radio_sharing's models (FIFO
or processor sharing, on the payload or on the wire's bytes, the ratio of the wire's bytes to the payload measured
on the testbed's frames of that antenna); each frame's query moves by the difference (every time after its send),
and a query judged by its deadline (on time, or late with an answer) is on time again exactly when its new
response time is within it.
Nothing else moves: this is a first-order estimate. The schedulers decide as they did (their feasibility
check charges the payload), workers batch as they did, the paths' queues and the radio's downlink (answers of a
few hundred bytes) are as they were, the wire's bytes are charged on the radio alone (not on the paths' links),
and rejected queries, unanswered ones and those failed for another reason stay what they were. Frames the
simulator did not get through a radio (no `t_sched_ms`) are left out of its replay. Every antenna whose frames
the simulator sent needs its wire's config and load on the testbed's side (else the one-line error, exit 2).
The windows are the compare run's (report.json's `window_s`, else 1 s).
`--results-page` also writes docs/results/radio-whatif.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.fidelity import compare_tables  # noqa: E402
from analysis.records import read_records  # noqa: E402
from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from experiments.radio_sharing import (  # noqa: E402
    MODEL_NAMES,
    MODELS,
    InputError,
    cell,
    compare_trace,
    frame_bytes,
    link_load,
    model_ms,
    only_policy,
    radio_shape,
    read_frames,
    run_made,
    wire_ratio,
)

SHIFTED = ("t_sched_ms", "t_worker_ms", "t_infer_start_ms", "t_infer_end_ms", "t_response_ms")
"""A query's times after its send: all move with its radio uplink."""
INTRO = ("Per compare output below: the simulator's own queries re-judged with each antenna's radio uplink timed "
         "by another model of the link (experiments/radio_sharing.py's; "
         "[radio-sharing.md](radio-sharing.md) compares them with the testbed's measured radio), against the "
         "testbed as `compare` compares them. Each frame that crossed a radio moves by what the model gives it "
         "over the simulator's own model (FIFO on the payload), every time of its query after the send with it, "
         "and a query judged by its deadline is on time when its new response is within it. A first-order "
         "estimate: the schedulers' decisions (their feasibility check charges the payload), the workers' "
         "batches, the paths' queues and the radio's downlink stay as they were (the wire's bytes are charged on "
         "the radio alone), and so do queries rejected, unanswered or failed for another reason. The first row "
         "is the simulator as it ran (the compare run's own figures). "
         "[fidelity.md](../fidelity.md) (\"A full link\") says what follows from it.\n")


@dataclass(frozen=True)
class Rejudged:
    """The simulator's records with one radio model, and how many queries changed their outcome."""

    model: str
    records: pa.Table
    late_now: int
    """Queries on time as simulated and late under the model."""
    on_time_now: int
    """Queries late as simulated and on time under the model."""


def radio_deltas(sim: pa.Table, tb_dir: Path, bytes_by_stream: dict[int, int]) -> dict[str, np.ndarray]:
    """Returns per model of MODELS, per query of the simulator's records `sim`, how much later (ms) its frame gets
    through its antenna's radio under that model than under FIFO on its payload (0 where it did not cross one);
    each antenna's radio shape and wire ratio from the testbed's folder `tb_dir` (InputError where it has none)."""
    ant = np.asarray(sim.column("antenna").to_pylist(), dtype=object)
    send = np.asarray(sim.column("t_send_ms").to_numpy(zero_copy_only=False), dtype=np.float64)
    sched = np.asarray(sim.column("t_sched_ms").to_numpy(zero_copy_only=False), dtype=np.float64)
    stream = np.asarray(sim.column("stream_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    deltas = {m: np.zeros(len(send)) for m in MODELS}
    for a in sorted(set(ant[np.isfinite(sched)].tolist())):
        shape = radio_shape(tb_dir, a)
        load_s, load_mbps, _ = link_load(tb_dir, a)
        ratio, _ = wire_ratio(read_frames(tb_dir / "records.csv", bytes_by_stream, a), load_s, load_mbps,
                              tb_dir / "link_load.csv")
        idx = np.flatnonzero((ant == a) & np.isfinite(sched))
        tx = np.array([bytes_by_stream[s] for s in stream[idx]], dtype=np.float64) / (shape["bw_mbps"] * 1000.0 / 8.0)
        base = model_ms("fifo_payload", send[idx], tx, ratio)
        for m in MODELS:
            deltas[m][idx] = model_ms(m, send[idx], tx, ratio) - base
    return deltas


def rejudge(sim: pa.Table, delta: np.ndarray, deadline_ms: np.ndarray, model: str) -> Rejudged:
    """Returns `sim` with each query's times after its send moved by `delta` and each query judged by its deadline
    (on time, or failed for its deadline, with a response) on time again when its response is within `deadline_ms`
    of its send (late: outcome failed, reason deadline); the others keep their outcome."""
    send = np.asarray(sim.column("t_send_ms").to_numpy(zero_copy_only=False), dtype=np.float64)
    response = np.asarray(sim.column("t_response_ms").to_numpy(zero_copy_only=False), dtype=np.float64)
    outcome = np.asarray(sim.column("outcome").to_pylist(), dtype=object)
    reason = np.asarray(sim.column("reason").to_pylist(), dtype=object)
    was = outcome == "ontime"
    answered = np.isfinite(response) & (was | (reason == "deadline"))  # judged by its deadline alone
    now = np.where(answered, response + delta - send <= deadline_ms, was)
    new_outcome = np.where(answered, np.where(now, "ontime", "failed"), outcome)
    new_reason = np.where(answered & now, None, np.where(answered & ~now & was, "deadline", reason))
    table = sim
    for col in SHIFTED:
        i = table.schema.get_field_index(col)
        v = np.asarray(table.column(col).to_numpy(zero_copy_only=False), dtype=np.float64)
        null = np.asarray(table.column(col).is_null().to_numpy(zero_copy_only=False), dtype=bool)
        table = table.set_column(i, col, pa.array(v + delta, type=table.schema.field(col).type, mask=null))
    for col, values in (("outcome", new_outcome), ("reason", new_reason)):
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pa.array(values.tolist(), type=table.schema.field(col).type))
    return Rejudged(model, table, int((was & ~now).sum()), int((~was & now).sum()))


def analyse(folder: Path, policy: str) -> str:
    """Returns the page's body for one policy of the compare output `folder`."""
    trace = compare_trace(folder)
    bytes_by_stream = frame_bytes(trace)
    deadline_by_stream = {int(s): float(d) for s, d in zip(trace.stream_id, trace.max_delay_ms, strict=True)}
    tb_dir = folder / "testbed" / policy
    tables = {}
    for side, path in (("simulator", folder / "simulator" / policy / "records.csv"), ("testbed", tb_dir / "records.csv")):
        if not path.is_file():
            raise InputError(f"{path}: no such file (expected a compare output's per-query records)")
        try:
            tables[side] = read_records(path)
        except (KeyError, ValueError, pa.ArrowException) as e:
            raise InputError(f"{path}: not a per-query records table ({' '.join(str(e).split())})") from None
    sim, tb = tables["simulator"], tables["testbed"]
    stream = np.asarray(sim.column("stream_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    missing = sorted(set(stream.tolist()) - set(deadline_by_stream))
    if missing:
        raise InputError(f"{folder / 'simulator' / policy / 'records.csv'}: stream {missing[0]} is not in the trace")
    deadline = np.array([deadline_by_stream[s] for s in stream], dtype=np.float64)
    window_s, own, report = 1.0, "", {}
    with contextlib.suppress(OSError, ValueError):
        report = json.loads((folder / "report.json").read_text())
    if isinstance(report, dict) and "window_s" in report:
        try:
            window_s = float(report["window_s"])
        except (TypeError, ValueError):
            window_s = math.nan
        if not (math.isfinite(window_s) and window_s > 0):
            raise InputError(f"{folder / 'report.json'}: window_s {report['window_s']!r} is not a number of seconds > 0")
    with contextlib.suppress(KeyError, TypeError, ValueError, StopIteration):
        p = next(p for p in report["policies"] if p["policy"] == policy)
        own = (f" The simulator's window correlation with itself under other run seeds, as simulated: "
               f"{float(p['simulator_self_correlation']):.3f} (report.json; not simulated again under the other "
               f"models).")
    rows = []
    for model, delta in radio_deltas(sim, tb_dir, bytes_by_stream).items():
        r = rejudge(sim, delta, deadline, model)
        c = compare_tables({policy: (r.records, tb)}, "", "", window_s).policies[0]
        rows.append(f"| {MODEL_NAMES[model]}{' (as simulated)' if model == 'fifo_payload' else ''} | "
                    f"{c.simulator.success:.4f} | {c.testbed.success:.4f} | {c.success_diff_pts:+.2f} | "
                    f"{cell(c.window_correlation, '.3f')} | {r.late_now} / {r.on_time_now} |")
    return (f"{len(stream)} queries in the simulator, {tb.num_rows} on the testbed; windows of {window_s:g} s."
            f"{run_made(tb_dir, folder)}{own}\n\n"
            "| simulator's radio uplink | simulator success | testbed success | testbed - simulator (pts) | "
            "window correlation | on time -> late / late -> on time |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def parse_case(text: str) -> tuple[Path, str]:
    """Returns the compare output and policy of `DIR[:POLICY]` (no policy: the one the output holds)."""
    folder, _, policy = text.partition(":")
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"{path}: no such folder (expected a `run_testbed.py compare` output)")
    policy = policy or only_policy(path, f"name one as {path}:POLICY")
    if not (path / "testbed" / policy).is_dir():
        raise InputError(f"{path / 'testbed' / policy}: no such folder (no testbed run of policy {policy!r})")
    return path, policy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The simulator's queries of a compare run re-judged with the testbed's "
                                             "radio models, against the testbed.")
    ap.add_argument("cases", nargs="+", metavar="DIR[:POLICY]",
                    help="a `run_testbed.py compare` output folder and its policy (default: the only one it holds)")
    add_results_page_argument(ap, "radio-whatif")
    args = ap.parse_args(argv)
    try:
        cases = [parse_case(c) for c in args.cases]
        body = "\n".join(f"## `{folder}`: {policy}\n\n{analyse(folder, policy)}" for folder, policy in cases)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    body = INTRO + "\n" + body
    print(body)
    if args.results_page:
        print(f"wrote {write_results_page(args.results_page, 'The simulator with the testbed’s radio', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
