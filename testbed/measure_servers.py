"""Link measurement of a network placed on several servers (each server its own clock).

A link whose two measuring hosts share a server is measured there one-way, as on one machine (`testbed.measure`:
probes stamped on that server's clock), by this module run on the server through its agent (`python -m
testbed.measure_servers REQUEST REPORT`, a recorded process: it rebuilds the run's plan, which is deterministic, from the topology file, run id
and placement). A link crossing between servers is measured as half the round trip of echo probes (ping) from the
host on its first server to the host on the other, never with two clocks; both directions get that figure and
are judged by the same rule and tolerance as a one-way measurement, the switches' share taken from the hops the
servers measured.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed import measure
from testbed.agent import AgentClient
from testbed.errors import MeasurementError
from testbed.multihost import python_on, share_dir
from testbed.plan import LinkPlan, NetworkPlan, build_plan
from testbed.probes import ProbePlan, ProbeStream
from testbed.record import Created, CreationRecord
from topologies import load_topology

MEASURE_TIMEOUT_S = 300.0


def _on_server(plan: NetworkPlan, link: LinkPlan) -> str | None:
    """Returns the server both measuring hosts of a link are on, or None if they are on two servers."""
    a, b = plan.measure_pair(link)
    return a.server if a.server == b.server else None


def request_for(plan: NetworkPlan, topology_file: str, links: Sequence[str], server: str,
                probes: ProbePlan, tolerance: measure.Tolerance, tdf: float) -> dict[str, Any]:
    """Returns what a server needs to measure its own links and switch hops."""
    return {"topology": topology_file, "run_id": plan.run_id, "subnet": plan.subnet,
            "sites_on": {sw.site: sw.server for sw in plan.switches}, "links": list(links),
            "hop_sites": [sw.site for sw in plan.switches if sw.server == server],
            "probes": dataclasses.asdict(probes), "tolerance": dataclasses.asdict(tolerance), "tdf": tdf}


def run_request(req: Mapping[str, Any]) -> measure.LinkReport:
    """Measures the request's links and hops on this machine (the server's side)."""
    plan = build_plan(load_topology(req["topology"]), req["run_id"], req["subnet"], req["sites_on"])
    chosen = [lk for lk in plan.shaped_links if lk.name in set(req["links"])]
    return measure.measure(plan, ProbePlan(**req["probes"]), measure.Tolerance(**req["tolerance"]), chosen,
                           tdf=req["tdf"], hop_sites=set(req["hop_sites"]))


def _report_from(doc: Mapping[str, Any]) -> measure.LinkReport:
    links = [measure.LinkMeasurement(**{**m, "switches": tuple(m["switches"])}) for m in doc["links"]]
    return measure.LinkReport(links, [measure.SwitchHop(**h) for h in doc["hops"]], doc["hop_ms"],
                              doc["hop_measured"])


def _echo_delays_ns(client: AgentClient | None, plan: NetworkPlan, link: LinkPlan, count: int, interval_ms: float,
                    timeout_s: float) -> list[int]:
    """Returns half of each echo probe's round trip (ns, real time) from the link's first host to its second."""
    from testbed import sh

    a, b = plan.measure_pair(link)
    argv = sh.in_netns(a.netns, ["ping", "-n", "-c", str(count), "-i", f"{max(interval_ms, 2.0) / 1000:.3f}",
                                 "-W", "5", b.ip])
    done = sh.run(argv, check=False, timeout_s=timeout_s, server=client)
    rtts = [float(t) for t in re.findall(r"time=([\d.]+) ms", done.stdout)]
    return [round(r * 1e6 / 2) for r in rtts[1:]]  # the first also waits for the flows to be set up


def _measure_on(client: AgentClient, req: dict[str, Any], run_dir: Path, record: CreationRecord) -> measure.LinkReport:
    """Runs a server's share of the measurement as a process of its own there (recorded, so that `clean` stops it
    should this run die; the agent stays free to answer meanwhile) and returns its report."""
    server = client.server.name
    base = share_dir(run_dir, server) / f"measure-{server}"  # gathered at teardown
    paths = {k: f"{base}.{k}" for k in ("request.json", "report.json", "log", "topology.yaml")}
    client.write(paths["topology.yaml"], Path(req["topology"]).read_bytes())
    client.write(paths["request.json"], json.dumps({**req, "topology": paths["topology.yaml"]}).encode())
    python = python_on(client.server.repo)
    pid, ticks = client.spawn([python, "-m", "testbed.measure_servers", paths["request.json"], paths["report.json"]],
                              log=paths["log"], cwd=client.server.repo)
    record.add(Created("process", f"measure on {server}", pid=pid, start_ticks=ticks, server=server))
    deadline = time.monotonic() + MEASURE_TIMEOUT_S
    while (rc := client.poll(pid)) is None:
        if time.monotonic() > deadline:
            client.kill(pid, ticks, "SIGKILL")
            raise MeasurementError(f"server {server}: measuring took over {MEASURE_TIMEOUT_S:g} s; see {paths['log']}")
        time.sleep(0.1)
    if rc != 0:
        tail = client.read(paths["log"]).decode(errors="replace").splitlines()[-10:]
        raise MeasurementError(f"server {server}: measuring failed (exit {rc}):\n" + "\n".join(tail))
    return _report_from(json.loads(client.read(paths["report.json"])))


def measure_placed(plan: NetworkPlan, topology_file: str, clients: Mapping[str, AgentClient],
                   probes: ProbePlan, tolerance: measure.Tolerance, tdf: float,
                   links: Sequence[LinkPlan], record: CreationRecord) -> measure.LinkReport:
    """Returns both directions of every given link, each measured on its server or across two by echo, with every
    server's switch hops."""
    by_server: dict[str, list[str]] = {}
    crossing = []
    for link in links:
        server = _on_server(plan, link)
        if server is None:
            crossing.append(link)
        else:
            by_server.setdefault(server, []).append(link.name)
    reports = []
    for server in plan.servers:  # every server measures its switch hops, with or without links of its own
        req = request_for(plan, topology_file, by_server.get(server, []), server, probes, tolerance, tdf)
        if server == "local":
            reports.append(run_request(req))
            continue
        reports.append(_measure_on(clients[server], req, record.run_dir.resolve(), record))
    hops = [h for r in reports for h in r.hops]
    hop_ms, hop_measured = measure.hop_costs(plan, hops)
    spread_ms = measure.hop_spreads(plan, hops)
    results = [m for r in reports for m in r.links]
    for link in crossing:
        assert link.shape is not None
        count = probes.count_for(link.shape)
        interval_ms = probes.interval_for(link.shape, tdf)
        client = clients.get(plan.measure_pair(link)[0].server)
        wait_s = count * max(interval_ms, 2.0) / 1000 + 10 + 2 * link.shape.delay_ms * tdf / 1000
        delays = _echo_delays_ns(client, plan, link, count + 1, interval_ms, wait_s)
        a, b = plan.measure_pair(link)
        for direction, src, dst in (("a->b", a, b), ("b->a", b, a)):
            stream = ProbeStream(link, link.site_a, direction, src.name, dst.name, None, None,  # type: ignore
                                     count, int(interval_ms * 1e6), list(delays), tdf=tdf)
            results.append(measure.judge(stream, tolerance, hop_ms, spread_ms))
    order = {lk.name: i for i, lk in enumerate(plan.links)}
    results.sort(key=lambda m: (order[m.link], m.direction))
    return measure.LinkReport(results, hops, hop_ms, hop_measured)


def main(argv: Sequence[str]) -> int:
    """`python -m testbed.measure_servers REQUEST.json REPORT.json` (on a server, started through its agent)."""
    report = run_request(json.loads(Path(argv[0]).read_text()))
    Path(argv[1]).write_text(json.dumps({"links": [dataclasses.asdict(m) for m in report.links],
                                         "hops": [dataclasses.asdict(h) for h in report.hops],
                                         "hop_ms": report.hop_ms, "hop_measured": report.hop_measured}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
