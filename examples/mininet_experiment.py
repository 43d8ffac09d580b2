#!/usr/bin/env python3
"""Your own experiment on a project topology, with Mininet's API: load the topology, build its network, run
commands on two hosts, tear down. Needs root.

    .venv/bin/python examples/mininet_experiment.py [TOPOLOGY] [--switch lxbr --controller none]

`EmulatedNetwork` builds the network as the testbed does (names, addresses, shaped links, everything
recorded, `run_testbed.py clean` after a crash); `tb.mn` is the `mininet.net.Mininet` it built, so anything
Mininet's API offers works on it: `net.get(...)`, `node.cmd(...)`, `node.popen(...)`, `net.pingAll()`, the CLI.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed import EmulatedNetwork  # noqa: E402
from testbed.switches import controller_for  # noqa: E402

GET = """import socket, sys, time, urllib.request
for _ in range(50):
    with socket.socket() as s:
        if s.connect_ex((sys.argv[1], 8080)) == 0:
            break
    time.sleep(0.1)
print(len(urllib.request.urlopen(f"http://{sys.argv[1]}:8080/", timeout=30).read()))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("topology", nargs="?", default="tiny", help="topology name or YAML file (default tiny)")
    ap.add_argument("--switch", choices=("ovs", "lxbr"), default="ovs")
    ap.add_argument("--controller", choices=("osken", "none"), default=None,
                    help="default: none with --switch lxbr, osken with ovs")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default runs/net-<time>-<id>)")
    args = ap.parse_args()

    with EmulatedNetwork(args.topology, switch=args.switch, controller=controller_for(args.switch, args.controller),
                         run_dir=args.out) as tb:
        net = tb.mn  # a mininet.net.Mininet: hosts by name, switches by bridge name
        antenna = tb.topology.antennas[0].name
        cloud = tb.topology.clusters[-1].name
        src, dst = net.get(f"sources-{antenna}", f"worker-{cloud}")
        print(f"*** {src.name} ({src.IP()}) -> {dst.name} ({dst.IP()})")
        out = src.cmd(f"ping -c 5 -i 0.2 {dst.IP()}")
        print(out.strip().splitlines()[-1])
        rtt_ms = float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))
        one_way = tb.topology.site(antenna).radio.delay_ms + tb.topology.path(antenna, cloud).delay_ms
        print(f"*** mean RTT {rtt_ms:.2f} ms; the topology's one-way delay is {one_way:g} ms (x2 = {2 * one_way:g})")
        server = dst.popen(["python3", "-m", "http.server", "8080", "--bind", dst.IP()],  # in dst's namespace
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = src.popen(["python3", "-c", GET, dst.IP()], stdout=subprocess.PIPE, text=True)
            reply, _ = client.communicate(timeout=60)
            print(f"*** HTTP GET from {src.name}: {reply.strip()} bytes")
        finally:
            server.terminate()
            server.wait()
        loss = net.pingAll(timeout="2")
    print(f"*** all pairs: {loss:g}% lost; network torn down")
    return 0 if loss == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
