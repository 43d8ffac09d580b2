"""Benchmarks the emulated network: link delay accuracy per backend and switch over all full-edge links,
the userspace wire's throughput and CPU per Mbit/s (against an unshaped veth path in the same run),
full-edge with every link loaded at once, and full-edge bring-up and teardown time. Needs root.

    .venv/bin/python benchmarks/bench_net.py [--only accuracy,throughput,load,timing] [--json OUT] [--no-page]

Writes docs/results/network.md (the parts it ran) unless --no-page.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from analysis.resultspage import write_results_page  # noqa: E402
from testbed import EmulatedNetwork, ProbePlan  # noqa: E402
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
    errs = sorted(abs(m.delay_error_ms) for m in results)
    return {"links": len(errs), "median_abs_err_ms": round(statistics.median(errs), 3),
            "p99_abs_err_ms": round(errs[min(len(errs) - 1, int(0.99 * len(errs)))], 3),
            "max_abs_err_ms": round(errs[-1], 3),
            "mean_signed_err_ms": round(statistics.fmean(m.delay_error_ms for m in results), 3)}


def zero_delay(topo):
    """Returns the topology with every delay and deviation set to 0: what the path costs by itself."""
    links = tuple(dataclasses.replace(lk, shape=dataclasses.replace(lk.shape, delay_ms=0.0, delay_dev_ms=0.0))
                  for lk in topo.links)
    sites = tuple(dataclasses.replace(s, radio=dataclasses.replace(s.radio, delay_ms=0.0, delay_dev_ms=0.0))
                  if s.radio else s for s in topo.sites)
    return dataclasses.replace(topo, links=links, sites=sites)


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
            with EmulatedNetwork(zero_delay(topo), shaping=backend, switch=switch, controller=controller,
                                 run_dir=TMP / f"zero-{backend}-{switch}", log=quiet) as net:
                base = net.measure_links(ProbePlan(count=200, interval_ms=10), check=False)
            base_ms = {(m.link, m.direction): m.median_delay_ms for m in base}
            emulated = sorted(abs(m.median_delay_ms - base_ms[(m.link, m.direction)] - m.configured_delay_ms)
                              for m in results)
            out[f"accuracy {key}"] = delay_errors(results) | {
                "path_without_delay_median_ms": round(statistics.median(base_ms.values()), 3),
                "median_abs_err_minus_path_ms": round(statistics.median(emulated), 3)}
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


def bench_timing(out: dict, repeats: int = 3) -> None:
    ups, downs = [], []
    for i in range(repeats):
        t0 = time.monotonic()
        net = EmulatedNetwork("full-edge", run_dir=TMP / f"timing-{i}", log=quiet)
        net.start()
        t1 = time.monotonic()
        net.stop()
        ups.append(t1 - t0)
        downs.append(time.monotonic() - t1)
    out["full-edge bring-up/teardown (ovs, os-ken, wire)"] = {
        "bring_up_s_median": round(statistics.median(ups), 2), "teardown_s_median": round(statistics.median(downs), 2),
        "bring_up_s": [round(x, 2) for x in ups], "teardown_s": [round(x, 2) for x in downs],
        "goal_s": 30}
    print(f"timing: {out['full-edge bring-up/teardown (ovs, os-ken, wire)']}", flush=True)


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
               "Errors are |median one-way delay - configured|; *minus path* subtracts what the same path measures "
               "with every delay set to 0 (veths, switch, wire hop).", "",
               _row("backend/switch", "link directions", "median err ms", "p99 err ms", "max err ms",
                    "mean signed ms", "path without delay ms", "median err minus path ms"),
               _row(*["---"] * 8)]
        md += [_row(k, v["links"], v["median_abs_err_ms"], v["p99_abs_err_ms"], v["max_abs_err_ms"],
                    v["mean_signed_err_ms"], v["path_without_delay_median_ms"], v["median_abs_err_minus_path_ms"])
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
    timing = out.get("full-edge bring-up/teardown (ovs, os-ken, wire)")
    if timing:
        md += ["## full-edge bring-up and teardown (OVS, os-ken, wire)", "",
               f"Bring-up median {timing['bring_up_s_median']} s ({timing['bring_up_s']}), teardown median "
               f"{timing['teardown_s_median']} s ({timing['teardown_s']}); goal under {timing['goal_s']} s.", ""]
    md += ["<details><summary>All figures (JSON)</summary>", "", "```json", json.dumps(out, indent=1), "```",
           "", "</details>"]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="accuracy,throughput,load,timing")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--no-page", action="store_true", help="do not write docs/results/network.md")
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
    if not args.no_page:
        page = write_results_page("network", "Emulated network: link accuracy, wire throughput, load, bring-up",
                                  page_body(out))
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
