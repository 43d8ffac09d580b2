"""Why a full radio delays frames more on the testbed than in the simulator: the testbed's measured uplink time
per second against two models of the link, replayed on the testbed's own frames.

    .venv/bin/python experiments/radio_sharing.py DIR[:ANTENNA[:FROM_S]] ... [--policy P] [--antenna ant1] \\
        [--from-s 100] [--results-page]

Each DIR is the output of `run_testbed.py compare` (its trace.csv, and per policy testbed/<policy>/ with
records.csv, link_load.csv and wire-radio-<antenna>.json, and simulator/<policy>/records.csv). The frames are the
antenna's queries that crossed its radio (`t_sched_ms` known), at their send time and the trace's frame size.
The models, each giving a frame's wait plus transmission at the radio's rate:
- FIFO: one message at a time in order of sending (`simulator.links.FifoLinks`, the simulator's radio queue);
- processor sharing: every frame in flight sending at once at an equal share of the rate, which is what
  concurrent TCP connections sharing the link packet by packet come near;
each on the frames' payload and on the bytes the wire counted (payload x the run's measured ratio of the wire's
bytes to the payload: TCP/IP and HTTP headers). Per virtual second of sending (from `--from-s`): the median and
90th percentile of each side's measured uplink time (`t_sched_ms - t_send_ms`: the radio's delay and jitter, its
queue, the scheduler reading the frame) beside each model's. A model that explains the queue differs from the
measured time by a constant (the delay): the summary gives each model's offset over the seconds the radio was
at most half busy and, over the seconds it was at least 90 % busy, the mean absolute difference of the
measured median from the model's plus that offset. The simulator's own frames through FIFO on their payload
check that this is the simulator's model (up to the order its links keep across their jitter draws, a wait that
grows with the link's load and its jitter).
The gap between the sides per second (testbed median less simulator median) is also fitted to what each model adds
to FIFO on the payload, which cancels what both sides share.
`--results-page` also writes docs/results/radio-sharing.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import heapq
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.records import read_records  # noqa: E402
from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from simulator.links import FifoLinks  # noqa: E402
from workload.trace import Trace, TraceError, read_trace  # noqa: E402

QUIET_BUSY = 0.5
"""Seconds the radio was at most this busy give each model's offset (its delay, jitter and the reading)."""
FULL_BUSY = 0.9
"""Seconds the radio was at least this busy are where the models are told apart."""
INTRO = ("Per compare output below: an antenna radio's measured uplink time on the testbed and in the simulator, "
         "per virtual second, against two models of the link replayed on the testbed's own frames (send times "
         "and sizes): FIFO, one message at a time in order of sending (the simulator's radio queue), and "
         "processor sharing, every frame in flight sending at an equal share of the rate (TCP connections "
         "sharing the link packet by packet come near it); each on the frames' payload and on the bytes the "
         "wire counted. A model that explains the radio's queue differs from the measured time by a constant "
         "(the radio's delay and jitter, the scheduler reading the frame): each model's offset is the median "
         "difference per second (median over the frames sent in it) over the seconds the radio was quiet, and "
         "over the seconds it was nearly full the table gives the mean and largest absolute difference of the "
         "measured median from the model's plus that offset. The last row checks the simulator's own frames, "
         "its measured time against FIFO on their payload (up to the order its links keep across their jitter "
         "draws, a wait that grows with the link's load and its jitter). The last column fits the gap between "
         "the sides instead, the testbed's median less the simulator's per second, to what each model adds to "
         "FIFO on the payload (same offset and seconds): what both sides share, that order included, cancels "
         "there. [fidelity.md](../fidelity.md) (\"A full link\") says what follows from it.\n")
MODELS = ("fifo_payload", "fifo_wire", "ps_payload", "ps_wire")
MODEL_NAMES = {"fifo_payload": "FIFO, payload", "fifo_wire": "FIFO, wire bytes",
               "ps_payload": "sharing, payload", "ps_wire": "sharing, wire bytes"}


class InputError(ValueError):
    """A file of the compare output missing or not what it should be; the message names it."""


def fifo_ms(send_ms: np.ndarray, tx_ms: np.ndarray) -> np.ndarray:
    """Returns each message's wait plus transmission on one link sending one message at a time, in order of
    sending (ties in the order given): the simulator's radio queue (`FifoLinks.order`)."""
    send_ms = np.asarray(send_ms, dtype=np.float64)
    tx_ms = np.asarray(tx_ms, dtype=np.float64)
    done = FifoLinks().order(np.zeros(len(send_ms), dtype=np.int64), send_ms, send_ms + tx_ms, np.inf, tx_ms)
    return done - send_ms


def sharing_ms(send_ms: np.ndarray, tx_ms: np.ndarray) -> np.ndarray:
    """Returns each message's time from its sending to its last byte on one link shared equally by every message
    in flight (processor sharing; `tx_ms`: its transmission time alone on the link). Virtual-time algorithm: the
    link's work per message in flight grows at 1 / n per ms while n are in flight; a message leaves when that work
    reaches its own since it entered."""
    send_ms = np.asarray(send_ms, dtype=np.float64)
    tx_ms = np.asarray(tx_ms, dtype=np.float64)
    order = np.argsort(send_ms, kind="stable")
    done = np.empty(len(send_ms))
    work, now, k, flight = 0.0, 0.0, 0, []  # flight: (work at which it leaves, index)
    while k < len(order) or flight:
        arrive = send_ms[order[k]] if k < len(order) else np.inf
        leave = now + (flight[0][0] - work) * len(flight) if flight else np.inf
        if arrive <= leave:
            if flight:
                work += (arrive - now) / len(flight)
            now = arrive
            i = int(order[k])
            heapq.heappush(flight, (work + tx_ms[i], i))
            k += 1
        else:
            work, i = heapq.heappop(flight)
            now = leave
            done[i] = now
    return done - send_ms


def model_ms(model: str, send_ms: np.ndarray, tx_ms: np.ndarray, wire_ratio: float) -> np.ndarray:
    """Returns each message's wait plus transmission under `model` (one of MODELS): FIFO or sharing, on the
    transmission of its payload (`tx_ms`) or of its wire bytes (`tx_ms` x `wire_ratio`)."""
    if model not in MODELS:
        raise ValueError(f"model {model!r}: one of {', '.join(MODELS)}")
    tx = tx_ms * wire_ratio if model.endswith("_wire") else tx_ms
    return fifo_ms(send_ms, tx) if model.startswith("fifo") else sharing_ms(send_ms, tx)


@dataclass(frozen=True)
class Frames:
    """One side's frames up one antenna's radio: send time (virtual ms), payload bytes, measured uplink time."""

    send_ms: np.ndarray
    payload_bytes: np.ndarray
    uplink_ms: np.ndarray


def read_frames(records: Path, bytes_by_stream: dict[int, int], antenna: str) -> Frames:
    """Returns the frames of `records` sent from `antenna` that crossed its radio."""
    if not records.is_file():
        raise InputError(f"{records}: no such file (expected a compare output's per-query records)")
    import pyarrow as pa

    try:
        t = read_records(records)
        ant = np.asarray(t.column("antenna").to_pylist(), dtype=object)
        send = np.asarray(t.column("t_send_ms").to_numpy(zero_copy_only=False), dtype=np.float64)
        sched = np.asarray(t.column("t_sched_ms").to_numpy(zero_copy_only=False), dtype=np.float64)
        stream = np.asarray(t.column("stream_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    except (KeyError, ValueError, pa.ArrowException) as e:
        raise InputError(f"{records}: not a per-query records table ({' '.join(str(e).split())})") from None
    keep = (ant == antenna) & np.isfinite(send) & np.isfinite(sched)
    if not keep.any():
        raise InputError(f"{records}: no query from antenna {antenna!r} crossed its radio")
    missing = sorted(set(stream[keep].tolist()) - set(bytes_by_stream))
    if missing:
        raise InputError(f"{records}: stream {missing[0]} is not in the trace")
    payload = np.array([bytes_by_stream[s] for s in stream[keep]], dtype=np.float64)
    return Frames(send[keep], payload, sched[keep] - send[keep])


def radio_shape(folder: Path, antenna: str) -> dict[str, float]:
    """Returns the radio's nominal shape (delay_ms, delay_dev_ms, bw_mbps) from its wire's config."""
    path = folder / f"wire-radio-{antenna}.json"
    try:
        shape = json.loads(path.read_text())[0]["shape"]
        return {k: float(shape[k]) for k in ("delay_ms", "delay_dev_ms", "bw_mbps")}
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise InputError(f"{path}: not a wire config (a list whose first entry has a shape with delay_ms, "
                         f"delay_dev_ms and bw_mbps; {type(e).__name__}: {e})") from None


def link_load(folder: Path, antenna: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the radio uplink's seconds, Mbit/s and busy share per virtual second from link_load.csv."""
    path = folder / "link_load.csv"
    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["link"] == f"radio-{antenna}" and r["direction"] == "up"]
        sec = np.array([int(r["t_s"]) for r in rows], dtype=np.int64)
        return sec, np.array([float(r["mbps"]) for r in rows]), np.array([float(r["busy"]) for r in rows])
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    except (KeyError, ValueError) as e:
        raise InputError(f"{path}: not a link load table ({e})") from None


def wire_ratio(frames: Frames, load_s: np.ndarray, load_mbps: np.ndarray, path: Path) -> tuple[float, int]:
    """Returns the wire's bytes over the frames' payload (`frames` sent per second against the link's measured
    `load_mbps` in seconds `load_s`, from `path`) and over how many seconds both were counted."""
    sec = (frames.send_ms // 1000.0).astype(np.int64)
    payload_mbps = np.array([frames.payload_bytes[sec == s].sum() * 8e-6 for s in load_s])
    both = (payload_mbps > 0) & (load_mbps > 0)
    if not both.any():
        raise InputError(f"{path}: no second with both the wire's and the frames' bytes")
    return float(load_mbps[both].sum() / payload_mbps[both].sum()), int(both.sum())


def per_second(send_ms: np.ndarray, values: np.ndarray, seconds: np.ndarray, q: float) -> np.ndarray:
    """Returns the q-quantile of `values` per second of sending, for each of `seconds` (nan: none sent)."""
    sec = (send_ms // 1000.0).astype(np.int64)
    out = np.full(len(seconds), np.nan)
    for j, s in enumerate(seconds):
        v = values[sec == s]
        if len(v):
            out[j] = np.quantile(v, q)
    return out


def fit(diff: np.ndarray, quiet: np.ndarray, full: np.ndarray) -> tuple[float, float, float]:
    """Returns a per-second difference's offset (its median over the `quiet` seconds) and, over the `full` ones,
    the mean and largest absolute difference from that offset (nan where a set has no finite value)."""
    q = diff[quiet][np.isfinite(diff[quiet])]
    offset = float(np.median(q)) if len(q) else float("nan")
    err = np.abs(diff[full] - offset)
    err = err[np.isfinite(err)]
    return offset, (float(err.mean()) if len(err) else float("nan")), (float(err.max()) if len(err) else float("nan"))


def seconds_text(seconds: np.ndarray) -> str:
    """Returns whole seconds as runs: "87, 103-119"."""
    runs: list[list[int]] = []
    for x in sorted(int(v) for v in seconds):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def cell(x: float, fmt: str = ".2f") -> str:
    """Returns a table cell: `x` formatted, or "-" where it is not a finite number (no value, no correlation)."""
    return "-" if not np.isfinite(x) else format(x, fmt)


def analyse(folder: Path, policy: str, antenna: str, from_s: float) -> str:
    """Returns the page's body for one policy and antenna of the compare output `folder`."""
    bytes_by_stream = frame_bytes(compare_trace(folder))
    tb_dir = folder / "testbed" / policy
    tb = read_frames(tb_dir / "records.csv", bytes_by_stream, antenna)
    sim = read_frames(folder / "simulator" / policy / "records.csv", bytes_by_stream, antenna)
    shape = radio_shape(tb_dir, antenna)
    bytes_per_ms = shape["bw_mbps"] * 1000.0 / 8.0
    load_s, load_mbps, busy = link_load(tb_dir, antenna)
    ratio, n_both = wire_ratio(tb, load_s, load_mbps, tb_dir / "link_load.csv")
    tx = tb.payload_bytes / bytes_per_ms
    models = {k: model_ms(k, tb.send_ms, tx, ratio) for k in MODELS}
    sim_fifo = fifo_ms(sim.send_ms, sim.payload_bytes / bytes_per_ms)
    seconds = np.unique((tb.send_ms // 1000.0).astype(np.int64))
    busy_at = dict(zip(load_s.tolist(), busy.tolist(), strict=True))
    sec_busy = np.array([busy_at.get(int(s), np.nan) for s in seconds])
    med = {k: per_second(tb.send_ms, v, seconds, 0.5) for k, v in models.items()}
    med_tb = per_second(tb.send_ms, tb.uplink_ms, seconds, 0.5)
    med_sim = per_second(sim.send_ms, sim.uplink_ms, seconds, 0.5)
    med_sim_fifo = per_second(sim.send_ms, sim_fifo, seconds, 0.5)
    quiet, full = sec_busy <= QUIET_BUSY, sec_busy >= FULL_BUSY
    summary = []
    for name, observed, model, gap in [(MODEL_NAMES[k], med_tb, med[k], med[k] - med["fifo_payload"])
                                       for k in MODELS] + [("simulator: FIFO, payload", med_sim, med_sim_fifo, None)]:
        offset, mae, worst = fit(observed - model, quiet, full)
        cells = [cell(offset), cell(mae), cell(worst)]
        if gap is not None:  # the gap between the sides against what the model adds to the simulator's FIFO
            cells.append(cell(fit((med_tb - med_sim) - gap, quiet, full)[1]))
        else:
            cells.append("-")
        summary.append(f"| {name} | " + " | ".join(cells) + " |")
    shown = seconds >= from_s
    p90 = {k: per_second(tb.send_ms, v, seconds[shown], 0.9) for k, v in models.items()}
    p90_tb = per_second(tb.send_ms, tb.uplink_ms, seconds[shown], 0.9)
    p90_sim = per_second(sim.send_ms, sim.uplink_ms, seconds[shown], 0.9)
    rows = []
    for k, j in enumerate(np.flatnonzero(shown)):
        rows.append(f"| {int(seconds[j])} | {cell(sec_busy[j])} | {cell(med_tb[j])} / {cell(p90_tb[k])} | "
                    f"{cell(med_sim[j])} / {cell(p90_sim[k])} | "
                    + " | ".join(f"{cell(med[m][j])} / {cell(p90[m][k])}" for m in MODELS) + " |")
    head = ("| virtual s | radio busy | testbed measured | simulator measured | "
            + " | ".join(MODEL_NAMES[m] for m in MODELS) + " |\n|---|---|---|---|" + "---|" * len(MODELS))
    made = run_made(tb_dir, folder)
    return (
        f"Radio {shape['bw_mbps']:g} Mbit/s, delay "
        f"{shape['delay_ms']:g} ms, jitter {shape['delay_dev_ms']:g} ms; {len(tb.send_ms)} frames up it on the testbed, "
        f"{len(sim.send_ms)} in the simulator. The wire counted {ratio:.4f} x the frames' payload (over "
        f"{n_both} seconds): the models' \"wire bytes\" charge each frame that many bytes.{made}\n\n"
        f"Offsets over the {int(quiet.sum())} seconds the radio was at most {QUIET_BUSY:.0%} busy, differences over "
        f"the {int(full.sum())} seconds it was at least {FULL_BUSY:.0%} busy ({seconds_text(seconds[full])}):\n\n"
        f"| model | offset (ms) | mean abs diff, full seconds (ms) | largest (ms) | gap to the simulator: mean abs "
        f"diff (ms) |\n"
        f"|---|---|---|---|---|\n" + "\n".join(summary) +
        f"\n\nPer second from {from_s:g} virtual s, median / 90th percentile (ms): the measured uplink time "
        f"(`t_sched_ms - t_send_ms`) on each side, and each model's wait plus transmission for the testbed's "
        f"frames:\n\n{head}\n" + "\n".join(rows) + "\n")


def compare_trace(folder: Path) -> Trace:
    """Returns a compare output's trace (trace.csv)."""
    try:
        return read_trace(folder / "trace.csv")
    except TraceError as e:
        raise InputError(str(e)) from None


def frame_bytes(trace: Trace) -> dict[int, int]:
    """Returns each stream's frame size (bytes) by stream id."""
    return {int(s): int(b) for s, b in zip(trace.stream_id, trace.frame_bytes, strict=True)}


def run_made(tb_dir: Path, folder: Path) -> str:
    """Returns a sentence on how a compare output's testbed run was made (its command, commit, K and MTU: the
    wire's bytes depend on it), from its config.json ('' where it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        config = json.loads((tb_dir / "config.json").read_text())
        return (f" The testbed's run: `{' '.join(config['argv'])}` at commit "
                f"{str(config['versions']['git_commit'])[:12]}, K {config['tdf']:g}, MTU {config['mtu']}; its output "
                f"read here from `{folder}`.")
    return ""


def only_policy(path: Path, hint: str) -> str:
    """Returns the one policy a compare output holds (its testbed/ folders); refuses none or several (`hint`: how
    to name one)."""
    held = sorted(p.name for p in (path / "testbed").glob("*") if p.is_dir())
    if len(held) != 1:
        raise InputError(f"{path / 'testbed'}: {'holds the policies ' + ', '.join(held) if held else 'no policy'}"
                         f"; {hint}")
    return held[0]


@dataclass(frozen=True)
class Case:
    """One radio to look at: a compare output, its policy, the antenna and the first second of its table."""

    folder: Path
    policy: str
    antenna: str
    from_s: float


def parse_case(text: str, policy: str | None, antenna: str, from_s: float) -> Case:
    """Returns the case `DIR[:ANTENNA[:FROM_S]]` (the others from the options); the policy is `policy` or, where
    None, the one policy the compare output holds."""
    folder, *rest = text.split(":")
    if len(rest) > 2:
        raise InputError(f"{text}: a case is DIR[:ANTENNA[:FROM_S]]")
    if rest and rest[0]:
        antenna = rest[0]
    if len(rest) == 2:
        try:
            from_s = float(rest[1])
        except ValueError:
            raise InputError(f"{text}: {rest[1]!r} is not a number of seconds") from None
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"{path}: no such folder (expected a `run_testbed.py compare` output)")
    return Case(path, policy or only_policy(path, "name one with --policy"), antenna, from_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A full radio's measured uplink time on the testbed and in the "
                                             "simulator against FIFO and processor sharing on the testbed's frames.")
    ap.add_argument("cases", nargs="+", metavar="DIR[:ANTENNA[:FROM_S]]",
                    help="a `run_testbed.py compare` output folder, the antenna and the first second of its table")
    ap.add_argument("--policy", default=None, help="the policy's folder in each (default: the only one it holds)")
    ap.add_argument("--antenna", default="ant1", help="the antenna where a case names none (default ant1)")
    ap.add_argument("--from-s", type=float, default=100.0,
                    help="first virtual second of the per-second table where a case names none (default 100)")
    add_results_page_argument(ap, "radio-sharing")
    args = ap.parse_args(argv)
    try:
        cases = [parse_case(c, args.policy, args.antenna, args.from_s) for c in args.cases]
        body = "\n".join(f"## `{c.folder}`: {c.policy}, {c.antenna}\n\n{analyse(c.folder, c.policy, c.antenna, c.from_s)}"
                         for c in cases)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    body = INTRO + "\n" + body
    print(body)
    if args.results_page:
        print(f"wrote {write_results_page(args.results_page, 'A full radio: one message at a time or shared', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
