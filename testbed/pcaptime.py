"""Rewrites a pcap's timestamps from real to virtual time (`run_testbed.py pcap-virtual IN OUT`).

A time-dilated run's captures carry real timestamps (tcpdump stamps what the kernel sees): K times slower than
the run's virtual time. Each record's time r becomes `A + (r - A) / K` (the run's `topologies.timescale` map, with
anchor A), minus T with `--t0-s T` (times since the run's start: the records' `ms since t0`). K and A come from the
options or from the `time.json` the live run writes beside its captures (`factor`, `anchor_epoch_s`,
`t0_virtual_epoch_s`; and `wall_step_s`, how far the machine's wall clock that stamped the capture was ahead of
the run's clock at t0, taken off first: topologies/wallclock.py). Classic pcap only, either byte order,
microsecond (magic a1b2c3d4) or nanosecond (a1b23c4d) stamps, kept as they are; the arithmetic is in integer nanoseconds. Records that would fall before
T (pcap times are unsigned) are left out and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from topologies.timescale import TimeScale

MAGIC_US, MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
PCAPNG_MAGIC = 0x0A0D0D0A
GLOBAL_HEADER_BYTES, RECORD_HEADER_BYTES = 24, 16
TIME_FILE = "time.json"
NS_PER_S = 1_000_000_000


class PcapError(ValueError):
    """A file that is not a pcap this tool reads, or time parameters it cannot use; the message names it."""


@dataclass(frozen=True)
class Rewritten:
    """What one rewrite did."""

    records_in: int
    records_out: int
    before_t0: int
    """Records left out: their virtual time is before T."""
    nanosecond: bool


def to_ns(seconds: float) -> int:
    """Returns epoch seconds as integer nanoseconds, from the number's decimal form (no binary rounding)."""
    return int(round(Decimal(repr(float(seconds))) * NS_PER_S))


def virtual_ns(real_ns: int, scale: TimeScale, anchor_ns: int, t0_ns: int = 0) -> int:
    """Returns the virtual time (ns, minus `t0_ns`) of a real time in ns under `scale` (anchor given in ns)."""
    return anchor_ns + round(scale.virtual_duration(real_ns - anchor_ns)) - t0_ns


def rewrite(src: Path, dst: Path, scale: TimeScale, t0_s: float | None = None, wall_step_s: float = 0.0) -> Rewritten:
    """Writes `dst`: `src` with every record's time mapped to virtual time (minus `t0_s`), less `wall_step_s` first
    (how far the machine's wall clock, which stamped the capture, was ahead of the run's); raises PcapError."""
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise PcapError(f"{src}: cannot read ({exc.strerror})") from None
    if len(data) < GLOBAL_HEADER_BYTES:
        raise PcapError(f"{src}: {len(data)} bytes, shorter than a pcap header ({GLOBAL_HEADER_BYTES})")
    order = next((o for o in "<>" if struct.unpack(o + "I", data[:4])[0] in (MAGIC_US, MAGIC_NS)), None)
    if order is None:
        magic = struct.unpack("<I", data[:4])[0]
        kind = "a pcapng file (write classic pcap: tcpdump -w)" if magic == PCAPNG_MAGIC else "not a pcap file"
        raise PcapError(f"{src}: magic {data[:4].hex()}: {kind}")
    nanosecond = struct.unpack(order + "I", data[:4])[0] == MAGIC_NS
    unit_ns = 1 if nanosecond else 1000
    anchor_ns = to_ns(scale.anchor_s)
    t0_ns = to_ns(t0_s) if t0_s is not None else 0
    step_ns = to_ns(wall_step_s)
    header = struct.Struct(order + "IIII")
    out = bytearray(data[:GLOBAL_HEADER_BYTES])
    pos, n_in, before = GLOBAL_HEADER_BYTES, 0, 0
    while pos < len(data):
        if pos + RECORD_HEADER_BYTES > len(data):
            raise PcapError(f"{src}: truncated record header at byte {pos} (record {n_in + 1})")
        sec, frac, incl, orig = header.unpack_from(data, pos)
        end = pos + RECORD_HEADER_BYTES + incl
        if end > len(data):
            raise PcapError(f"{src}: record {n_in + 1} at byte {pos} claims {incl} bytes, the file ends first")
        if frac * unit_ns >= NS_PER_S:
            raise PcapError(f"{src}: record {n_in + 1} at byte {pos}: fraction {frac} is a second or more")
        n_in += 1
        v = virtual_ns(sec * NS_PER_S + frac * unit_ns - step_ns, scale, anchor_ns, t0_ns)
        if v < 0:
            before += 1
        else:
            v_sec, v_frac_ns = divmod((v + unit_ns // 2) // unit_ns * unit_ns, NS_PER_S)  # to the file's unit
            out += header.pack(v_sec, v_frac_ns // unit_ns, incl, orig) + data[pos + RECORD_HEADER_BYTES:end]
        pos = end
    try:
        dst.write_bytes(bytes(out))
    except OSError as exc:
        raise PcapError(f"{dst}: cannot write ({exc.strerror})") from None
    return Rewritten(n_in, n_in - before, before, nanosecond)


def read_time_file(path: Path) -> tuple[TimeScale, float | None, float]:
    """Returns the time scale, the virtual t0 (None if absent) and the wall clock's step at t0 (0 if absent) a
    run's time.json gives; raises PcapError."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise PcapError(f"{path}: cannot read ({exc.strerror}); give --tdf and --anchor-s instead") from None
    except json.JSONDecodeError as exc:
        raise PcapError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise PcapError(f"{path}: expected an object with factor and anchor_epoch_s")
    for key in ("factor", "anchor_epoch_s"):
        if not isinstance(doc.get(key), int | float) or isinstance(doc.get(key), bool):
            raise PcapError(f"{path}: key {key!r} missing or not a number")
    t0 = doc.get("t0_virtual_epoch_s")
    if t0 is not None and (not isinstance(t0, int | float) or isinstance(t0, bool)):
        raise PcapError(f"{path}: key 't0_virtual_epoch_s' is not a number")
    step = doc.get("wall_step_s", 0.0)
    if not isinstance(step, int | float) or isinstance(step, bool) or not math.isfinite(step):
        raise PcapError(f"{path}: key 'wall_step_s' is not a number")
    return _scale(doc["factor"], doc["anchor_epoch_s"], str(path)), t0, float(step)


def _scale(factor: float, anchor_s: float, where: str) -> TimeScale:
    if not (math.isfinite(factor) and math.isfinite(anchor_s)):
        raise PcapError(f"{where}: factor {factor!r} and anchor {anchor_s!r} must be finite numbers")
    try:
        return TimeScale(float(factor), float(anchor_s))
    except ValueError as exc:
        raise PcapError(f"{where}: {exc}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `pcap-virtual` to run_testbed.py's parser."""
    p = subparsers.add_parser(
        "pcap-virtual", help="rewrite a time-dilated run's pcap to virtual time",
        description="Maps each record's real timestamp r to A + (r - A) / K (minus T with --t0-s or --since-t0). "
                    "K and A from --tdf/--anchor-s, else from time.json beside IN (or --time-json).")
    p.add_argument("input", type=Path, metavar="IN", help="a pcap (microsecond or nanosecond stamps)")
    p.add_argument("output", type=Path, metavar="OUT", help="the pcap to write")
    p.add_argument("--tdf", type=float, default=None, metavar="K", help="time dilation factor of the run")
    p.add_argument("--anchor-s", type=float, default=None, metavar="A", help="the run's anchor, epoch seconds")
    p.add_argument("--t0-s", type=float, default=None, metavar="T",
                   help="subtract this virtual epoch time (the run's t0): times since the start")
    p.add_argument("--time-json", type=Path, default=None, metavar="FILE",
                   help=f"the run's time file (default: {TIME_FILE} beside IN when --tdf is not given)")
    p.add_argument("--since-t0", action="store_true", help="subtract the time file's t0_virtual_epoch_s")
    p.set_defaults(func=cmd_pcap_virtual)


def cmd_pcap_virtual(args: argparse.Namespace) -> int:
    try:
        scale, t0, step = _resolve(args)
        done = rewrite(args.input, args.output, scale, t0, step)
    except PcapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    left = f", {done.before_t0} before t0 left out" if done.before_t0 else ""
    print(f"{args.output}: {done.records_out} of {done.records_in} records in virtual time "
          f"(K {scale.factor:g}, anchor {scale.anchor_s:.6f}{'' if t0 is None else f', minus t0 {t0:.6f}'}, "
          f"{f'less the wall clock step {step:+.6f} s, ' if step else ''}"
          f"{'ns' if done.nanosecond else 'us'} stamps{left})")
    return 0


def _resolve(args: argparse.Namespace) -> tuple[TimeScale, float | None, float]:
    """Returns the scale, the t0 to subtract and the wall clock's step, from the options or the time file."""
    if (args.tdf is None) != (args.anchor_s is None):
        raise PcapError("--tdf and --anchor-s go together (or neither: read from the run's time.json)")
    if args.tdf is not None:
        if args.since_t0 and args.t0_s is None:
            raise PcapError("--since-t0 reads t0 from the time file: with --tdf give --t0-s instead")
        return _scale(args.tdf, args.anchor_s, "--tdf/--anchor-s"), args.t0_s, 0.0
    scale, file_t0, step = read_time_file(args.time_json or args.input.parent / TIME_FILE)
    if args.t0_s is not None:
        return scale, args.t0_s, step
    if args.since_t0:
        if file_t0 is None:
            raise PcapError(f"{args.time_json or args.input.parent / TIME_FILE}: no t0_virtual_epoch_s for --since-t0")
        return scale, file_t0, step
    return scale, None, step
