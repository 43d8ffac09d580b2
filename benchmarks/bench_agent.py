"""What a command on another server costs: `ip link show` through the server's agent (one persistent ssh,
testbed/agent.py) against the same command as a local subprocess, and against one ssh per command (what
Mininet's Cluster Edition does without a shared connection), on a fixture server (tests/servers.py: its own
namespaces and sshd on this machine, so the ssh and agent overhead is measured, not a network).

Rounds alternate the three ways (drift in the machine's speed hits all alike); medians are quoted, and ratios to
the local subprocess. Needs root.
Run: .venv/bin/python benchmarks/bench_agent.py [--commands 200] [--ssh 20] [--results-page]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from servers import ServerSpec, running  # noqa: E402

from analysis.resultspage import add_results_page_argument, write_results_page  # noqa: E402
from testbed.agent import AgentClient  # noqa: E402

COMMAND = ["ip", "link", "show"]


def timed_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", type=int, default=200, help="commands through the agent and locally")
    ap.add_argument("--ssh", type=int, default=20, help="commands with one ssh each")
    add_results_page_argument(ap, "multihost-agent")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, running([ServerSpec("a")], Path(d)) as farm:
        server = farm.record("a")
        started = time.perf_counter()
        agent = AgentClient(server)
        start_ms = (time.perf_counter() - started) * 1000
        try:
            local, remote, fresh = [], [], []
            for i in range(args.commands):
                local.append(timed_ms(lambda: subprocess.run(COMMAND, capture_output=True, check=True)))
                remote.append(timed_ms(lambda: agent.run(COMMAND)))
                if i < args.ssh:
                    fresh.append(timed_ms(lambda: subprocess.run(server.ssh_argv(*COMMAND), capture_output=True,
                                                                 check=True)))
        finally:
            agent.close()
    base = statistics.median(local)
    lines = [f"agent start (ssh + Python): {start_ms:.0f} ms"]
    for name, xs in (("local subprocess", local), ("agent (one ssh)", remote), ("ssh per command", fresh)):
        med = statistics.median(xs)
        lines.append(f"{name:18s} n={len(xs):4d}  median {med:7.2f} ms  "
                     f"p90 {statistics.quantiles(xs, n=10)[-1]:7.2f} ms  x{med / base:.1f} local")
    print("\n".join(lines))
    if args.results_page:
        body = (f"`{' '.join(COMMAND)}` on a fixture server (tests/servers.py: its own namespaces and sshd on this "
                "machine) through the server's agent (one persistent ssh), as a local subprocess, and with one "
                "ssh per command; rounds alternate the three, medians and 90th percentiles, ratios to the local "
                "subprocess.\n\n```text\n" + "\n".join(lines) + "\n```\n")
        print(f"wrote {write_results_page(args.results_page, 'A command on another server', body)}")


if __name__ == "__main__":
    main()
