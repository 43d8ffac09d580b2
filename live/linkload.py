"""How full each link of a live run was, from its wires' own counts (testbed/wire.py, `load_per_s`): per virtual
second and link direction, the rate it carried, the share of the time it was sending and the longest wait at the wire
(`link_load.csv`), and the directions that were full (summary.json `links_full`, the run's closing lines).

It works with either switch wherever userspace wires shape the links (`--shaping wire`, `auto` without netem);
with netem there is nothing to count (the controller's `link_utilisation.jsonl`, with Open vSwitch and os-ken,
has the ports' rates). A full link is where frames queue: the simulator queues them too, on the antennas' radios and
on the paths' links (simulator/links.py, simulator/paths.py), but not TCP's losses and back-off where the queue in
front of the link overflows (docs/fidelity.md, "A full link"), so the run names those links and when.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.fidelity import FULL_BUSY
from live.monitor import WINDOW_MS
from live.verdict import dilation_factor, real_second_windows, record_columns, t0_real_s, traffic_end_ms

LOAD_NAME = "link_load.csv"
RADIO_PREFIX = "radio-"
"""The wires of the antennas' radio links (testbed/plan.py); their direction a->b is the uplink."""


@dataclass(frozen=True)
class LinkWindow:
    """One virtual second of one link direction."""

    t_s: float
    """The window's start, virtual s since t0."""
    link: str
    direction: str
    mbps: float
    """Megabits per virtual second that entered the link in the window."""
    busy: float
    """The share of the window it spent sending them (its transmission time at the link's rate)."""
    wait_max_ms: float
    """The longest a frame the link started sending in the window waited at the wire for the frames before it,
    virtual ms: a burst the rate limiter in front of the wire (the kernel's TBF) let through at once. The queue in
    front of that limiter (TBF's, up to 50 ms of the link's bytes, and TCP's send buffers) is not in it."""


@dataclass(frozen=True)
class FullLink:
    """A link direction that was full (FULL_BUSY) in at least one virtual second of the traffic."""

    link: str
    direction: str
    radio: bool
    """An antenna's radio, else a path's link (a topology link, shared by several antennas' paths)."""
    full_s: float
    """Virtual seconds it was full in."""
    first_full_s: float
    """The first of them, virtual s since t0."""
    busy_max: float
    wait_max_ms: float
    """The longest wait at the wire over the traffic, virtual ms (LinkWindow.wait_max_ms)."""


def direction_label(link: str, direction: str) -> str:
    """Returns a wire direction in sites' terms: `up`/`down` on a radio, `co1->dc1` on a link named `co1-dc1`."""
    if link.startswith(RADIO_PREFIX):
        return "up" if direction == "a->b" else "down"
    ends = link.split("-")
    if len(ends) == 2 and direction in ("a->b", "b->a"):
        return f"{ends[0]}->{ends[1]}" if direction == "a->b" else f"{ends[1]}->{ends[0]}"
    return direction


def load_windows(directions: list[dict], t0_s: float, k: float, end_s: float | None) -> list[LinkWindow]:
    """Returns each wire direction's load per virtual second from t0 to the end of the traffic (`t0_s`, `end_s`:
    real epoch s on the run's wall clock, None: to the last frame): each real second's counts shared out over the
    windows it overlaps, by overlap (its longest wait goes to each of them). Directions without counts (a wire
    older than them) are left out."""
    out = []
    for d in directions:
        sums: dict[int, list[float]] = {}
        for second, nbytes, busy_ns, wait_us in d.get("load_per_s", []):
            for w, share in real_second_windows(second, t0_s, k, end_s):
                row = sums.setdefault(w, [0.0, 0.0, 0.0])
                row[0] += nbytes * share
                row[1] += busy_ns * share
                row[2] = max(row[2], wait_us)
        out += [LinkWindow(float(w), d["link"], direction_label(d["link"], d["direction"]),
                           round(v[0] * 8 / 1e3 / WINDOW_MS, 4), round(v[1] / (k * WINDOW_MS * 1e6), 4),
                           round(v[2] / 1000, 3))
                for w, v in sorted(sums.items())]
    return out


def full_links(windows: list[LinkWindow], busy: float = FULL_BUSY) -> list[FullLink]:
    """Returns the link directions full in some window, the longest full first."""
    by: dict[tuple[str, str], list[LinkWindow]] = {}
    for w in windows:
        by.setdefault((w.link, w.direction), []).append(w)
    out = []
    for (link, direction), ws in by.items():
        full = [w for w in ws if w.busy >= busy]
        if full:
            out.append(FullLink(link, direction, link.startswith(RADIO_PREFIX), float(len(full)),
                                min(w.t_s for w in full), max(w.busy for w in ws), max(w.wait_max_ms for w in ws)))
    return sorted(out, key=lambda f: (-f.full_s, f.first_full_s, f.link, f.direction))


def write_link_load(path: Path, windows: list[LinkWindow]) -> None:
    with path.open("w") as f:
        f.write("t_s,link,direction,mbps,busy,wait_max_ms\n")
        f.writelines(f"{w.t_s:g},{w.link},{w.direction},{w.mbps:g},{w.busy:g},{w.wait_max_ms:g}\n"
                     for w in sorted(windows, key=lambda w: (w.t_s, w.link, w.direction)))


def link_load(run_dir: Path) -> list[dict] | None:
    """Writes the run's `link_load.csv` from its wires' counts and returns its full link directions (as dicts,
    for summary.json); None where it has no wires (links shaped by netem) or no t0 (nothing written)."""
    directions = []
    for p in sorted(run_dir.glob("wire-*.stats.json")):
        try:
            directions += json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    if not directions:
        return None
    config = json.loads((run_dir / "config.json").read_text())
    t0 = t0_real_s(run_dir, config)
    if t0 is None:
        return None
    k, end_ms = dilation_factor(config), traffic_end_ms(record_columns(run_dir / "records.csv"))
    windows = load_windows(directions, t0, k, None if end_ms is None else t0 + k * end_ms / 1000.0)
    write_link_load(run_dir / LOAD_NAME, windows)
    return [asdict(f) for f in full_links(windows)]


def format_full(extra: dict) -> list[str]:
    """Returns the closing lines on the links of a run's summary.json `extra`: those full (none: no line), or why
    their load was not counted."""
    if error := extra.get("link_load_error"):
        return [f"link load not counted: {error}"]
    full = extra.get("links_full")
    if full is None:
        return ["link load not counted: no userspace wire shaped the links (netem; with Open vSwitch and os-ken, "
                "link_utilisation.jsonl has the ports' rates)"] if "links_full" in extra else []
    lines = []
    for f in full:
        lines.append(f"link {f['link']} {f['direction']} full (sending >= {FULL_BUSY:.0%} of the time) in "
                     f"{f['full_s']:g} virtual s from {f['first_full_s']:g} s (busy at most {f['busy_max']:.2f})")
    return lines + ([f"(per virtual second and link: {LOAD_NAME})"] if lines else [])
