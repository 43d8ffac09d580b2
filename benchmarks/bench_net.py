"""Benchmarks the emulated network (built on Mininet): link delay accuracy per backend and switch over all
full-edge links, the switches' own share apart from the shaping's, the userspace wire's throughput and CPU
per Mbit/s (against an unshaped veth path in the same run), full-edge with every link loaded at once, and
full-edge bring-up and teardown time against plain Mininet on the same topology in the same run. Needs root.

    .venv/bin/python benchmarks/bench_net.py [--only accuracy,throughput,load,timing] [--json OUT] [--results-page]

--results-page writes docs/results/network.md (the parts it ran).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from testbed import EmulatedNetwork, ProbePlan  # noqa: E402
from testbed.network import _fresh_run_id  # noqa: E402
from testbed.plan import build_plan  # noqa: E402
from testbed.record import Created, CreationRecord  # noqa: E402
from testbed.shaping import probe_netem  # noqa: E402
from topologies import load_topology  # noqa: E402

TMP = Path(tempfile.mkdtemp(prefix="bench-net-"))
RECV = ("import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((sys.argv[1], 5001)); s.listen(8); print('listening', flush=True)\n"
        "c,_=s.accept(); n=0\nwhile True:\n    b=c.recv(1<<20)\n    if not b: break\n    n+=len(b)\nprint(n, flush=True)\n")
SEND = ("import socket,sys,time\nfor _ in range(200):\n    try: s=socket.create_connection((sys.argv[1], 5001)); break\n"
        "    except OSError: time.sleep(0.05)\nbuf=bytes(1<<16); end=time.monotonic()+float(sys.argv[2]); t0=time.monotonic(); n=0\n"
        "rate=float(sys.argv[3])*1e6/8 if len(sys.argv)>3 else 0\n"
        "while time.monotonic()<end:\n    n+=s.send(buf)\n"
        "    if rate: time.sleep(max(0, t0+n/rate-time.monotonic()))\n"
        "s.close(); print(n, time.monotonic()-t0)\n")
LOAD_MBPS = 20.0
"""Per flow in the all-links load test: below the 2-core saturation point, so it shows accuracy under load."""


def quiet(_: str) -> None:
    pass


def cpu_s(pid: int) -> tuple[float, float]:
    """Returns (user, system) CPU seconds of a process; system time includes the receive path its sends
    run in softirq (bridge, TBF, the peer's TCP stack), which the kernel charges to the sender."""
    times = psutil.Process(pid).cpu_times()
    return times.user, times.system


def delay_errors(results) -> dict:
    """Returns the |median - configured| one-way delay errors over link directions, the same with the switches'
    measured share taken out (the shaping's own error), and that share."""
    errs = sorted(abs(m.delay_error_ms) for m in results)
    shaping_errs = sorted(abs(m.shaping_error_ms) for m in results)

    def p99(x: list[float]) -> float:
        return round(x[min(len(x) - 1, int(0.99 * len(x)))], 3)

    return {"links": len(errs), "median_abs_err_ms": round(statistics.median(errs), 3), "p99_abs_err_ms": p99(errs),
            "max_abs_err_ms": round(errs[-1], 3),
            "mean_signed_err_ms": round(statistics.fmean(m.delay_error_ms for m in results), 3),
            "switch_share_median_ms": round(statistics.median(m.switch_share_ms for m in results), 3),
            "median_abs_shaping_err_ms": round(statistics.median(shaping_errs), 3),
            "p99_abs_shaping_err_ms": p99(shaping_errs),
            "out_of_tolerance": sum(1 for m in results if not m.ok)}


def bench_accuracy(out: dict) -> None:
    topo = load_topology("full-edge")
    netem_ok, answer = probe_netem("tbbench-probe")
    out["netem"] = "available" if netem_ok else f"unavailable on this kernel ({answer})"
    backends = ["wire"] + (["netem"] if netem_ok else [])
    for backend in backends:
        for switch, controller in (("ovs", "osken"), ("lxbr", "none")):
            key = f"{backend}/{switch}"
            with EmulatedNetwork(topo, shaping=backend, switch=switch, controller=controller,
                                 run_dir=TMP / f"acc-{backend}-{switch}", log=quiet) as net:
                results = net.measure_links(ProbePlan(count=200, interval_ms=10), check=False)
                report = net.last_report
            assert report is not None
            hops = sorted(v for k, v in report.hop_ms.items() if report.hop_measured[k])
            out[f"accuracy {key}"] = delay_errors(results) | {
                "switch_hop_ms_median": round(statistics.median(hops), 3) if hops else None}
            print(f"accuracy {key}: {out[f'accuracy {key}']}", flush=True)


def transfer(net: EmulatedNetwork, src: str, dst: str, seconds: float) -> tuple[float, dict[int, tuple]]:
    """Returns the TCP goodput in Mbit/s from host src to host dst, and CPU seconds per wire pid."""
    rx, tx = net.host(dst), net.host(src)
    recv = rx.popen(["python3", "-c", RECV, rx.ip], stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "listening"
    before = {pid: cpu_s(pid) for pid in net.wire_pids()}
    sent, elapsed = tx.cmd(["python3", "-c", SEND, rx.ip, str(seconds)], timeout_s=seconds + 60).split()
    got = int(recv.stdout.readline())
    recv.wait(10)
    cpu = {pid: tuple(a - b for a, b in zip(cpu_s(pid), before[pid], strict=True)) for pid in before}
    return got * 8 / float(elapsed) / 1e6, cpu


def two_sites(bw_mbps: float, delay_ms: float, path: Path) -> Path:
    path.write_text(f"""name: pair
sites:
  - {{name: a, layer: antenna, radio: {{delay_ms: 1}}, compute: {{cpu_cores: 1}}}}
  - {{name: b, layer: dc, compute: {{cpu_cores: 1}}}}
links:
  - {{a: a, b: b, delay_ms: {delay_ms}, bw_mbps: {bw_mbps}}}
""")
    return path


def bench_throughput(out: dict) -> None:
    seconds = 5.0
    for bw in (100000.0, 50.0):
        topo = two_sites(bw, 1.0, TMP / f"pair-{bw:g}.yaml")
        with EmulatedNetwork(topo, shaping="wire", switch="lxbr", controller="none", run_dir=TMP / f"tp-{bw:g}",
                             log=quiet) as net:
            link_pid = net.wire_pids()[1]  # wires in link order: radio-a, a-b
            mbps, cpu = transfer(net, "worker-a", "worker-b", seconds)
        user_s, sys_s = cpu[link_pid]
        out[f"wire throughput bw={bw:g}"] = {
            "goodput_mbps": round(mbps, 1), "wire_user_core_fraction": round(user_s / seconds, 3),
            "wire_system_core_fraction": round(sys_s / seconds, 3),
            "wire_cpu_ms_per_mbit": round((user_s + sys_s) * 1000 / (mbps * seconds), 4),
            "wire_user_cpu_ms_per_mbit": round(user_s * 1000 / (mbps * seconds), 4)}
        print(f"wire throughput bw={bw:g}: {out[f'wire throughput bw={bw:g}']}", flush=True)
    # the same transfer with no wire at all (netem-less kernel: an unshaped veth path), for the ratio
    topo = two_sites(100000.0, 0.0, TMP / "pair-bare.yaml")
    with EmulatedNetwork(topo, shaping="wire", switch="lxbr", controller="none", run_dir=TMP / "tp-bare",
                         log=quiet) as net:
        local = net.host_for("worker", "a"), net.host_for("scheduler", "a")
        mbps_bare, _ = transfer(net, local[1].name, local[0].name, seconds)
    out["unshaped veth+bridge throughput"] = {"goodput_mbps": round(mbps_bare, 1)}
    ratio = out["wire throughput bw=100000"]["goodput_mbps"] / mbps_bare
    out["wire/unshaped goodput ratio"] = round(ratio, 3)
    print(f"unshaped: {mbps_bare:.1f} Mbit/s; wire/unshaped ratio {ratio:.3f}", flush=True)


def bench_load(out: dict) -> None:
    for switch, controller in (("ovs", "osken"), ("lxbr", "none")):
        for rate_mbps in (LOAD_MBPS, 0.0):
            bench_load_on(out, switch, controller, rate_mbps)


def bench_load_on(out: dict, switch: str, controller: str, rate_mbps: float) -> None:
    """Four bulk TCP flows, sources of every antenna to the cloud, cross all 12 links; probes meanwhile."""
    import threading

    run_dir = TMP / f"load-{switch}-{rate_mbps:g}"
    with EmulatedNetwork("full-edge", shaping="wire", switch=switch, controller=controller, run_dir=run_dir,
                         log=quiet) as net:
        idle = net.measure_links(ProbePlan(count=100, interval_ms=10), check=False)
        results: dict[str, float] = {}
        cloud = net.host_for("worker", "cloud")
        procs = []
        for k in range(4):
            port = 5001 + k
            recv = RECV.replace("5001", str(port))
            procs.append(cloud.popen(["python3", "-c", recv, cloud.ip], stdout=subprocess.PIPE, text=True))
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "listening"

        def send(k: int, ant: str) -> None:
            src = net.host_for("sources", ant)
            sent, elapsed = src.cmd(["python3", "-c", SEND.replace("5001", str(5001 + k)), cloud.ip, "8",
                                     str(rate_mbps)],
                                    timeout_s=80).split()
            results[ant] = int(sent) * 8 / float(elapsed) / 1e6

        threads = [threading.Thread(target=send, args=(k, a)) for k, a in enumerate(("ant1", "ant2", "ant3", "ant4"))]
        for t in threads:
            t.start()
        time.sleep(2.0)
        loaded = net.measure_links(ProbePlan(count=100, interval_ms=10), check=False)
        for t in threads:
            t.join()
        for p in procs:
            p.wait(10)
    stats = [d for f in sorted(run_dir.glob("wire-*.stats.json")) for d in json.loads(f.read_text())]
    key = f"full-edge loaded ({switch}, {f'{rate_mbps:g} Mbit/s per flow' if rate_mbps else 'unlimited flows'})"
    out[key] = {
        "flow_mbps_sources_to_cloud": {a: round(v, 1) for a, v in results.items()},
        "idle": delay_errors(idle), "loaded": delay_errors(loaded),
        "wire_late_p99_us_max": max(d["late_p99_us"] for d in stats),
        "wire_drops": sum(d["dropped_queue"] + d["dropped_send"] for d in stats)}
    print(f"{key}: {out[key]}", flush=True)


def plain_mininet_cycle(i: int) -> tuple[float, float]:
    """Returns (bring-up, teardown) seconds of stock Mininet on full-edge's plan: Host, OVSSwitch (userspace,
    standalone), Link; no shaping, no controller. Its bridges and switch ports are recorded first, so that
    `run_testbed.py clean` could remove them if the benchmark died."""
    from mininet.link import Link
    from mininet.net import Mininet
    from mininet.node import Host, OVSSwitch
    from mininet.topo import Topo

    import testbed.context  # noqa: F401  (sets Mininet.inited: no machine-wide sysctls)

    plan = build_plan(load_topology("full-edge"), _fresh_run_id())
    record = CreationRecord(TMP / f"plain-{i}")
    record.start(plan.run_id)
    for sw in plan.switches:
        record.add(Created("ovs-bridge", sw.bridge))
    for lk in plan.links:
        record.add(Created("link", lk.b.ifname))

    class PlainTopo(Topo):
        def build(self) -> None:
            for h in plan.hosts:
                self.addHost(h.name, ip=f"{h.ip}/{h.prefix_len}")
            for sw in plan.switches:
                self.addSwitch(sw.bridge, dpid=f"{sw.dpid:016x}", datapath="user", failMode="standalone")
            for lk in plan.links:
                ends = [e.host or plan.switch(e.switch).bridge for e in (lk.a, lk.b)]  # type: ignore[arg-type]
                self.addLink(*ends, port1=lk.a.port_no, port2=lk.b.port_no, intfName1=lk.a.ifname,
                             intfName2=lk.b.ifname)

    t0 = time.monotonic()
    net = Mininet(topo=PlainTopo(), host=Host, switch=OVSSwitch, link=Link, controller=None, build=False)
    net.build()
    net.start()
    t1 = time.monotonic()
    a, b = net.get(plan.hosts[0].name, plan.hosts[-1].name)
    assert " 0% packet loss" in a.cmd(f"ping -c1 -W5 {b.IP()}"), "plain Mininet does not forward"
    t2 = time.monotonic()
    net.stop()
    t3 = time.monotonic()
    assert record.remove_all() == []
    return t1 - t0, t3 - t2


def bench_timing(out: dict, repeats: int = 3) -> None:
    """full-edge's bring-up and teardown, the testbed's (OVS, os-ken, wires, shaping checked) and plain
    Mininet's, alternating, in this one run; the ratio is of the medians."""
    ups, downs, plain_ups, plain_downs = [], [], [], []
    for i in range(repeats):
        t0 = time.monotonic()
        net = EmulatedNetwork("full-edge", run_dir=TMP / f"timing-{i}", log=quiet)
        net.start()
        t1 = time.monotonic()
        net.stop()
        ups.append(t1 - t0)
        downs.append(time.monotonic() - t1)
        up, down = plain_mininet_cycle(i)
        plain_ups.append(up)
        plain_downs.append(down)
    med = statistics.median
    out["full-edge bring-up/teardown"] = {
        "testbed": "ovs (userspace), os-ken, wire shaping, qdiscs checked",
        "plain_mininet": "Host, OVSSwitch (userspace, standalone), Link: no shaping, no controller",
        "bring_up_s_median": round(med(ups), 2), "teardown_s_median": round(med(downs), 2),
        "plain_bring_up_s_median": round(med(plain_ups), 2), "plain_teardown_s_median": round(med(plain_downs), 2),
        "bring_up_ratio": round(med(ups) / med(plain_ups), 2), "teardown_ratio": round(med(downs) / med(plain_downs), 2),
        "bring_up_s": [round(x, 2) for x in ups], "teardown_s": [round(x, 2) for x in downs],
        "plain_bring_up_s": [round(x, 2) for x in plain_ups], "plain_teardown_s": [round(x, 2) for x in plain_downs],
        "goal_s": 5}
    print(f"timing: {out['full-edge bring-up/teardown']}", flush=True)


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def page_body(out: dict) -> str:
    """Returns the results page's findings as markdown tables (the figures of `out`)."""
    md = [__doc__.split("\n    .venv/bin/python")[0].strip(), "",
          f"{out['cpus']} CPUs, load average at start {', '.join(f'{x:.2f}' for x in out['load_avg_at_start'])}; "
          f"netem: {out.get('netem', 'not probed')}.", ""]
    acc = {k.removeprefix("accuracy "): v for k, v in out.items() if k.startswith("accuracy ")}
    if acc:
        md += ["## Link delay accuracy (full-edge, every link and direction, 200 probes each)", "",
               "*err* is |median one-way delay - configured| host to host across one link; the probes cross one "
               "(radio) or two (trunk) switches, whose own cost is measured apart, between two hosts on one switch's "
               "unshaped ports (*hop*), and *switches* is that share of a link's median; *shaping err* is "
               "|median - configured - switches|, what the tolerance judges.", "",
               _row("backend/switch", "link directions", "median err ms", "p99 err ms", "mean signed ms",
                    "hop ms (median)", "switches ms (median)", "median shaping err ms", "p99 shaping err ms",
                    "out of tolerance"),
               _row(*["---"] * 10)]
        md += [_row(k, v["links"], v["median_abs_err_ms"], v["p99_abs_err_ms"], v["mean_signed_err_ms"],
                    v["switch_hop_ms_median"], v["switch_share_median_ms"], v["median_abs_shaping_err_ms"],
                    v["p99_abs_shaping_err_ms"], v["out_of_tolerance"])
               for k, v in acc.items()] + [""]
    wire = {k.removeprefix("wire throughput bw="): v for k, v in out.items() if k.startswith("wire throughput")}
    if wire:
        md += ["## Userspace wire throughput (one TCP flow, 5 s, 1 ms link)", "",
               _row("link Mbit/s", "goodput Mbit/s", "wire user core", "wire system core", "wire CPU ms per Mbit"),
               _row(*["---"] * 5)]
        md += [_row(k, v["goodput_mbps"], v["wire_user_core_fraction"], v["wire_system_core_fraction"],
                    v["wire_cpu_ms_per_mbit"]) for k, v in wire.items()]
        md += ["", f"Unshaped veth + bridge path: {out['unshaped veth+bridge throughput']['goodput_mbps']} Mbit/s; "
                   f"wire / unshaped goodput {out['wire/unshaped goodput ratio']}.", ""]
    load = {k: v for k, v in out.items() if k.startswith("full-edge loaded")}
    if load:
        md += ["## full-edge with every link loaded (four TCP flows, sources of each antenna to the cloud)", "",
               _row("case", "flows Mbit/s", "idle median/p99 err ms", "loaded median/p99 err ms",
                    "wire late p99 us (max)", "wire drops"), _row(*["---"] * 6)]
        md += [_row(k.removeprefix("full-edge loaded "), ", ".join(f"{a} {m}" for a, m in v["flow_mbps_sources_to_cloud"].items()),
                    f"{v['idle']['median_abs_err_ms']} / {v['idle']['p99_abs_err_ms']}",
                    f"{v['loaded']['median_abs_err_ms']} / {v['loaded']['p99_abs_err_ms']}",
                    v["wire_late_p99_us_max"], v["wire_drops"]) for k, v in load.items()] + [""]
    timing = out.get("full-edge bring-up/teardown")
    if timing:
        md += ["## full-edge bring-up and teardown, against plain Mininet in the same run", "",
               _row("", "testbed (" + timing["testbed"] + ")", "plain Mininet (" + timing["plain_mininet"] + ")",
                    "ratio"), _row(*["---"] * 4),
               _row("bring-up s (median)", f"{timing['bring_up_s_median']} ({timing['bring_up_s']})",
                    f"{timing['plain_bring_up_s_median']} ({timing['plain_bring_up_s']})", timing["bring_up_ratio"]),
               _row("teardown s (median)", f"{timing['teardown_s_median']} ({timing['teardown_s']})",
                    f"{timing['plain_teardown_s_median']} ({timing['plain_teardown_s']})", timing["teardown_ratio"]),
               "", f"Goal: each under {timing['goal_s']} s.", ""]
    md += ["<details><summary>All figures (JSON)</summary>", "", "```json", json.dumps(out, indent=1), "```",
           "", "</details>"]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="accuracy,throughput,load,timing")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    add_results_page_argument(ap, "network")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_net.py needs root (namespaces, OVS)", file=sys.stderr)
        return 2
    started_s = time.monotonic()
    out: dict = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    for part in args.only.split(","):
        {"accuracy": bench_accuracy, "throughput": bench_throughput, "load": bench_load,
         "timing": bench_timing}[part](out)
    out["measured_in_s"] = round(time.monotonic() - started_s)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.results_page:
        page = write_results_page(args.results_page,
                                  "Emulated network: link accuracy, wire throughput, load, bring-up",
                                  page_body(out))
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
