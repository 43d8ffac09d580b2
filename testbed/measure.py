"""Measures every shaped link with real packets: one-way delay, its deviation, and loss, per direction, and
what the switches cost by themselves; judges each against the file and reports it.

The probes are `testbed.probes`' streams (one-way delays stamped by the receiver's kernel). One process opens
a sender and a receiver socket in the two hosts a link joins (and only that shaped link), runs every link's probes
at once, and compares each result with the file. Alongside, probes between two hosts on one switch's unshaped
ports measure that switch's own forwarding cost (a "hop"); a link's probes cross one or two switches, whose hops
are reported beside the link's shaping error (measured - configured - hops), on which the tolerance is judged,
widened by half the difference between each crossed hop's two directions (`hop_spreads`). A
link a direction of which is outside its tolerance is measured once more, alone (`ProbePlan.remeasure`): on 2
shared cores, dozens of concurrent probe streams through userspace switches and wires can delay a quarter of one
direction's probes and read as jitter the link does not have; a link shaped wrong fails the second time too, and
both attempts are kept. Probes of one direction are spaced by at least `jitter_spacing` times the link's
deviation, so that a FIFO link (the wire, netem with a rate) never holds one probe behind the one before it.

Under time dilation (factor K) the links are shaped K times slower in real time: the probes keep the plan's
pace in virtual time (intervals and spacing x K, waits for the dilated delays), and every delay is reported and
judged in virtual milliseconds (real / K), the switches' share included (their real cost / K).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from testbed.errors import MeasurementError
from testbed.plan import LinkPlan, NetworkPlan
from testbed.probes import (
    ProbePlan,
    ProbeStream,
    close_streams,
    median_p99_ms,
    open_stream,
    run_streams,
    worst_delay_ms,
)

MEASUREMENTS_FILE = "link_measurements.json"


@dataclass(frozen=True)
class Tolerance:
    """How far a measurement may be from the file before the run stops."""

    delay_abs_ms: float = 0.5
    delay_rel: float = 0.03
    dev_abs_ms: float = 0.5
    dev_rel: float = 0.35
    loss_abs_pct: float = 0.5
    loss_sigmas: float = 4.0
    """Loss may differ by this many binomial standard deviations (plus loss_abs_pct)."""


@dataclass(frozen=True)
class LinkMeasurement:
    """One direction of one link, as configured and as measured (all delays one-way, in virtual ms: the real
    figures / tdf)."""

    link: str
    kind: str
    direction: str
    src_host: str
    dst_host: str
    configured_delay_ms: float
    measured_delay_ms: float
    """Mean one-way delay of the probes that arrived, host to host across this link alone."""
    median_delay_ms: float
    """What the tolerance is checked on (robust to a probe held up by this machine's scheduler)."""
    p99_delay_ms: float
    configured_dev_ms: float
    measured_dev_ms: float
    """Robust standard deviation of the one-way delay (interquartile range / 1.349)."""
    configured_loss_pct: float
    measured_loss_pct: float
    probes_sent: int
    probes_received: int
    tolerance_delay_ms: float
    tolerance_dev_ms: float
    tolerance_loss_pct: float
    ok: bool
    problem: str
    switches: tuple[str, ...] = ()
    """The sites whose switches the probes crossed (one for a radio link, two for a trunk)."""
    switch_share_ms: float = 0.0
    """What those switches cost by themselves (their measured hops), part of the median."""
    switch_spread_ms: float = 0.0
    """How uncertain that share is: per switch crossed, half the difference between its hop's two directions
    (added to the delay tolerance; a userspace switch on a busy host can cost 1.3 ms one way and 0.8 the other)."""
    probe_interval_ms: float = 0.0
    """Real milliseconds between this direction's probes."""
    tdf: float = 1.0
    """The time dilation factor the link was shaped and measured at (real delays = these x tdf)."""
    attempts: int = 1
    """2 when the first measurement, among every link's at once, was outside tolerance and the link was measured
    again alone (these figures are the second's)."""
    first_problem: str = ""
    """What the first attempt found outside tolerance (empty after one attempt)."""

    @property
    def delay_error_ms(self) -> float:
        """Median measured minus configured one-way delay (switches included)."""
        return self.median_delay_ms - self.configured_delay_ms

    @property
    def shaping_error_ms(self) -> float:
        """Median measured minus configured one-way delay minus the switches' share: the shaping's own error,
        on which the tolerance is judged."""
        return self.median_delay_ms - self.configured_delay_ms - self.switch_share_ms


@dataclass(frozen=True)
class SwitchHop:
    """One direction between two hosts on one switch's unshaped ports: what that switch costs by itself
    (with the two veths it takes to reach it, as a link's probes also cross)."""

    site: str
    direction: str
    src_host: str
    dst_host: str
    median_delay_ms: float
    p99_delay_ms: float
    probes_sent: int
    probes_received: int


@dataclass(frozen=True)
class LinkReport:
    """Every link direction measured, the switch hops measured beside them, and the hop cost per site."""

    links: list[LinkMeasurement]
    hops: list[SwitchHop]
    hop_ms: dict[str, float]
    """Per site: its switch's one-way hop cost (ms), measured where the site has two unshaped hosts and the
    median of the measured switches elsewhere (see `hop_measured`)."""
    hop_measured: dict[str, bool]


def hop(s: ProbeStream) -> SwitchHop:
    """Returns what a switch hop's probe stream measured."""
    median, p99 = median_p99_ms(s)
    return SwitchHop(site=s.site, direction=s.direction, src_host=s.src, dst_host=s.dst,
                     median_delay_ms=round(median, 4), p99_delay_ms=round(p99, 4), probes_sent=s.count,
                     probes_received=len(s.delays_ns))


def _measured(hops: list[SwitchHop]) -> dict[str, list[float]]:
    """Returns per site the medians of its hop directions that were measured (some probe arrived)."""
    measured: dict[str, list[float]] = {}
    for h in hops:
        if not math.isnan(h.median_delay_ms):
            measured.setdefault(h.site, []).append(h.median_delay_ms)
    return measured


def _per_site(plan: NetworkPlan, per_site: dict[str, float]) -> dict[str, float]:
    """Returns `per_site` for every switch of the plan, the median of the given sites where one is missing (0 when
    none is given)."""
    fallback = statistics.median(per_site.values()) if per_site else 0.0
    return {sw.site: round(per_site.get(sw.site, fallback), 4) for sw in plan.switches}


def hop_costs(plan: NetworkPlan, hops: list[SwitchHop]) -> tuple[dict[str, float], dict[str, bool]]:
    """Returns each site's switch hop cost in ms (the mean of its two directions; the median of the measured
    switches where a site has no pair of unshaped hosts, 0 when none has) and whether it was measured."""
    measured = _measured(hops)
    costs = _per_site(plan, {site: statistics.fmean(v) for site, v in measured.items()})
    return costs, {sw.site: sw.site in measured for sw in plan.switches}


def hop_spreads(plan: NetworkPlan, hops: list[SwitchHop]) -> dict[str, float]:
    """Returns each site's switch hop uncertainty in ms: half the difference between its two directions' medians
    (at most the hop cost itself; the median of the others' where a site has not both directions measured, 0 when
    none has). A link's probes cross the switch in one direction only, which the hop pair's directions do not map
    onto, so the judge subtracts the mean and widens the tolerance by this."""
    return _per_site(plan, {site: (max(v) - min(v)) / 2 for site, v in _measured(hops).items() if len(v) == 2})


def judge(s: ProbeStream, tol: Tolerance, hop_ms: dict[str, float],
          spread_ms: dict[str, float] | None = None) -> LinkMeasurement:
    """Returns a link direction's probe stream judged on its shaping error: the median less the switches' hops
    (`hop_ms`, virtual ms per site) against the configured delay, within a tolerance widened by those hops'
    uncertainty (`spread_ms`, see `hop_spreads`); the robust deviation and the loss."""
    assert s.link is not None
    shape = s.link.shape
    assert shape is not None
    delays_ms = s.delays_ms()
    n = len(delays_ms)
    mean = statistics.fmean(delays_ms) if n else math.nan
    median = delays_ms[n // 2] if n else math.nan
    switches = s.link.switch_sites
    share = sum(hop_ms.get(site, 0.0) for site in switches)
    spread = sum((spread_ms or {}).get(site, 0.0) for site in switches)
    # Robust deviation (IQR / 1.349, equal to sigma for a normal law): a probe delayed by the host's
    # scheduler (this machine is shared) must not read as jitter the link does not have.
    dev = (delays_ms[(3 * n) // 4] - delays_ms[n // 4]) / 1.349 if n > 3 else math.nan
    loss_pct = 100.0 * (1 - n / s.count)
    p = shape.loss_pct / 100
    tol_delay = (tol.delay_abs_ms + tol.delay_rel * shape.delay_ms + 4 * shape.delay_dev_ms / math.sqrt(max(n, 1))
                 + spread)
    tol_dev = tol.dev_abs_ms + tol.dev_rel * shape.delay_dev_ms
    tol_loss = tol.loss_abs_pct + tol.loss_sigmas * 100 * math.sqrt(p * (1 - p) / s.count)
    problems = []
    if n == 0:
        problems.append("no probe arrived")
    else:
        if abs(median - share - shape.delay_ms) > tol_delay:
            problems.append(f"delay {median:.3f} ms (median; switches {share:.3f} ± {spread:.3f} ms of it), "
                            f"configured {shape.delay_ms:g} ms (tolerance {tol_delay:.3f})")
        if abs(dev - shape.delay_dev_ms) > tol_dev:
            problems.append(f"deviation {dev:.3f} ms, configured {shape.delay_dev_ms:g} ms (tolerance {tol_dev:.3f})")
        if abs(loss_pct - shape.loss_pct) > tol_loss:
            problems.append(f"loss {loss_pct:.2f}%, configured {shape.loss_pct:g}% (tolerance {tol_loss:.2f})")
    return LinkMeasurement(
        link=s.link.name, kind=s.link.kind, direction=s.direction, src_host=s.src, dst_host=s.dst,
        configured_delay_ms=shape.delay_ms, measured_delay_ms=round(mean, 4),
        median_delay_ms=round(median, 4),
        p99_delay_ms=round(delays_ms[min(n - 1, int(0.99 * n))], 4) if n else math.nan,
        configured_dev_ms=shape.delay_dev_ms, measured_dev_ms=round(dev, 4),
        configured_loss_pct=shape.loss_pct, measured_loss_pct=round(loss_pct, 3),
        probes_sent=s.count, probes_received=n, tolerance_delay_ms=round(tol_delay, 4),
        tolerance_dev_ms=round(tol_dev, 4), tolerance_loss_pct=round(tol_loss, 3),
        ok=not problems, problem="; ".join(problems), switches=switches, switch_share_ms=round(share, 4),
        switch_spread_ms=round(spread, 4),
        probe_interval_ms=round(s.interval_ns / 1e6, 3), tdf=s.tdf)


def measure(plan: NetworkPlan, probes: ProbePlan | None = None, tolerance: Tolerance | None = None,
            links: list[LinkPlan] | None = None, tdf: float = 1.0, hop_sites: set[str] | None = None) -> LinkReport:
    """Returns both directions of every shaped link (or of `links`) and of every switch hop (or of those at
    `hop_sites`), measured concurrently, each link judged on its shaping error; the links shaped at time dilation
    factor `tdf`, the results in virtual ms."""
    probes = probes or ProbePlan()
    tolerance = tolerance or Tolerance()
    chosen = links if links is not None else list(plan.shaped_links)
    streams = [open_stream(plan, link, plan.measure_pair(link), forward, probes, tdf)
               for link in chosen for forward in (True, False)]
    pairs = [pair for sw in plan.switches if (hop_sites is None or sw.site in hop_sites)
             and (pair := plan.hop_pair(sw.site)) is not None]
    hop_streams = [open_stream(plan, None, pair, forward, probes, tdf) for pair in pairs for forward in (True, False)]
    try:
        max_delay_ms = max((worst_delay_ms(lk.shape, tdf) for lk in chosen if lk.shape), default=0)
        run_streams(streams + hop_streams, probes, max_delay_ms)
        hops = [hop(s) for s in hop_streams]
        hop_ms, hop_measured = hop_costs(plan, hops)
        spread_ms = hop_spreads(plan, hops)
        results = [judge(s, tolerance, hop_ms, spread_ms) for s in streams]
    finally:
        close_streams(streams + hop_streams)
    if probes.remeasure:
        results = _remeasure(plan, chosen, results, probes, tolerance, hop_ms, spread_ms, tdf)
    return LinkReport(results, hops, hop_ms, hop_measured)


def _remeasure(plan: NetworkPlan, chosen: list[LinkPlan], results: list[LinkMeasurement], probes: ProbePlan,
               tolerance: Tolerance, hop_ms: dict[str, float], spread_ms: dict[str, float],
               tdf: float) -> list[LinkMeasurement]:
    """Measures the links with a direction outside tolerance once more, alone (both directions), judged with the
    switch hops on their paths measured again beside them (the first attempt's, taken with every link busy, read
    a quieter second attempt short); returns the results with theirs replaced and the first problem kept."""
    again = [lk for lk in chosen if any(m.link == lk.name and not m.ok for m in results)]
    if not again:
        return results
    streams = [open_stream(plan, link, plan.measure_pair(link), forward, probes, tdf)
               for link in again for forward in (True, False)]
    sites = {site for lk in again for site in lk.switch_sites}
    pairs = [pair for site in sorted(sites) if (pair := plan.hop_pair(site)) is not None]
    hop_streams = [open_stream(plan, None, pair, forward, probes, tdf) for pair in pairs for forward in (True, False)]
    try:
        run_streams(streams + hop_streams, probes, max((worst_delay_ms(lk.shape, tdf) for lk in again if lk.shape), default=0))
        now, spread_now = hop_ms, spread_ms
        if hop_streams:
            hops_now = [hop(s) for s in hop_streams]
            measured_now, _ = hop_costs(plan, hops_now)
            spreads = hop_spreads(plan, hops_now)
            now, spread_now = ({site: fresh[site] if site in sites else ms for site, ms in before.items()}
                               for fresh, before in ((measured_now, hop_ms), (spreads, spread_ms)))
        second = {(m.link, m.direction): m for m in (judge(s, tolerance, now, spread_now) for s in streams)}
    finally:
        close_streams(streams + hop_streams)
    first = {m.link: "; ".join(f"{f.direction}: {f.problem}" for f in results if f.link == m.link and not f.ok)
             for m in results}
    return [replace(second[(m.link, m.direction)], attempts=2, first_problem=first[m.link])
            if (m.link, m.direction) in second else m for m in results]


def save(report: LinkReport, path: Path, meta: dict) -> None:
    """Writes link_measurements.json: every link direction (`links`, as `compare --calibrate` reads them), the
    switch hops and the hop cost per site."""
    doc = {"meta": meta, "links": [asdict(m) for m in report.links], "switch_hops": [asdict(h) for h in report.hops],
           "switch_hop_ms": report.hop_ms, "switch_hop_measured": report.hop_measured}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def check(measurements: list[LinkMeasurement], saved_to: Path) -> None:
    """Raises MeasurementError naming every link direction outside its tolerance."""
    bad = [m for m in measurements if not m.ok]
    if bad:
        lines = "\n".join(f"  {m.link} {m.direction} ({m.src_host} -> {m.dst_host}): {m.problem}"
                          + (" (measured twice, the second time alone)" if m.attempts > 1 else "") for m in bad)
        raise MeasurementError(f"{len(bad)} link direction(s) are not shaped as the file says:\n{lines}\n"
                               f"(all measurements: {saved_to})")


def format_table(measurements: list[LinkMeasurement], hop_ms: dict[str, float] | None = None,
                 hop_measured: dict[str, bool] | None = None) -> str:
    """Returns the configured-vs-measured table printed by `net --check`: per link direction the median, the
    switches' share of it (± their direction spread, by which the tolerance widens) and the shaping error the
    tolerance judges; then each switch's hop cost."""
    dilated = sorted({m.tdf for m in measurements if m.tdf != 1.0})
    head = (f"{'link':<16} {'dir':<5} {'delay ms':>9} {'measured':>9} {'switches':>8} {'±':>6} {'shaping':>8} "
            f"{'dev ms':>7} {'measured':>9} {'loss %':>7} {'measured':>9}  status")
    rows = [head, "-" * len(head)]
    for m in measurements:
        rows.append(f"{m.link:<16} {m.direction:<5} {m.configured_delay_ms:>9.3f} {m.median_delay_ms:>9.3f} "
                    f"{m.switch_share_ms:>8.3f} {m.switch_spread_ms:>6.3f} {m.shaping_error_ms:>+8.3f} "
                    f"{m.configured_dev_ms:>7.3f} "
                    f"{m.measured_dev_ms:>9.3f} {m.configured_loss_pct:>7.2f} {m.measured_loss_pct:>9.2f}  "
                    f"{('ok' if m.attempts == 1 else 'ok, measured again alone') if m.ok else m.problem}")
    if hop_ms:
        measured = hop_measured or {}
        rows.append("switch hop (one-way, host to host through one switch): " + ", ".join(
            f"{site} {ms:.3f} ms{'' if measured.get(site) else '*'}" for site, ms in hop_ms.items()))
        if not all(measured.get(site) for site in hop_ms):
            rows.append("  * no two unshaped hosts on that switch: the median of the measured switches")
    if dilated:
        rows.append(f"time dilation factor {', '.join(f'{k:g}' for k in dilated)}: delays in virtual ms (real / K); "
                    "the links ran K times slower in real time")
    return "\n".join(rows)


PATH_PROBES = ProbePlan(count=30, interval_ms=5.0)
"""Probes per antenna-to-cluster path when checking a spanning tree: enough to tell one path from another."""


def check_paths(plan: NetworkPlan, probes: ProbePlan = PATH_PROBES, tolerance: Tolerance | None = None,
                tdf: float = 1.0) -> list[str]:
    """Returns a line per antenna-to-cluster path (scheduler host to worker host) whose measured one-way
    delay (virtual ms, at time dilation factor `tdf`) is not the topology's shortest path's; empty when every
    path forwards as the loader computed."""
    tolerance = tolerance or Tolerance()
    topo = plan.topology
    wanted = [(ant.name, cl.name) for ant in topo.antennas for cl in topo.clusters if ant.name != cl.name]
    streams, expected = [], []
    for ant, cl in wanted:
        path = topo.path(ant, cl)
        s = open_stream(plan, None, (plan.host_for("scheduler", ant), plan.host_for("worker", cl)), True, probes, tdf)
        s.interval_ns = int(tdf * max(probes.interval_ms, probes.jitter_spacing * path.delay_dev_ms) * 1e6)
        streams.append(s)
        expected.append(path)
    try:
        run_streams(streams, probes, max((worst_delay_ms(p, tdf) for p in expected), default=0.0))
        wrong = []
        for (ant, cl), s, path in zip(wanted, streams, expected, strict=True):
            median, _ = median_p99_ms(s)
            n = len(s.delays_ns)
            tol = (tolerance.delay_abs_ms + tolerance.delay_rel * path.delay_ms
                   + 4 * path.delay_dev_ms / math.sqrt(max(n, 1)))
            if n == 0 or abs(median - path.delay_ms) > tol:
                wrong.append(f"{ant} -> {cl}: {median:.3f} ms measured, the shortest path "
                             f"({' - '.join(plan.path_sites(ant, cl))}) is {path.delay_ms:g} ms (tolerance {tol:.3f})")
        return wrong
    finally:
        close_streams(streams)
