"""The emulated network's control plane coming up: the os-ken controller started and every switch given its
flows, or, without a controller, the Linux bridges' spanning tree settled and checked against the plan's."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from testbed import measure, stp
from testbed.errors import NetworkError

if TYPE_CHECKING:
    from testbed.network import EmulatedNetwork

HELPER_START_S = 20.0
CONTROLLER_READY_S = 30.0
STP_SETTLE_S = 20.0
"""How long after the expected convergence the Linux bridges may still take to settle."""


def start_controller(net: EmulatedNetwork) -> None:
    """Starts the os-ken controller (recorded, on the driver) and waits until it listens."""
    net.run_dir.mkdir(parents=True, exist_ok=True)
    cfg = net.run_dir / "controller.json"
    cfg.write_text(json.dumps(net.plan.controller_config(), indent=1) + "\n")
    net.controller_port = _free_tcp_port()
    listen = net.servers.controller_addr if net.servers else "127.0.0.1"
    proc = net.spawn_helper("controller", [sys.executable, "-m", "testbed.controller.main", str(cfg),
                                      str(net.run_dir), str(net.controller_port),
                                      str(net.stats_interval_s * net.tdf), str(net.tdf), listen],
                       net.run_dir / "controller.log")
    deadline = time.monotonic() + HELPER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with socket.socket() as s:
            if s.connect_ex((listen, net.controller_port)) == 0:
                return
        time.sleep(0.05)
    raise NetworkError(f"the os-ken controller did not start listening (exit {proc.poll()}):\n"
                       f"{tail(net.run_dir / 'controller.log')}")


def wait_controller_ready(net: EmulatedNetwork) -> None:
    """Waits until every switch has its flows from the controller; raises NetworkError naming those without."""
    ready_path = net.run_dir / "controller_ready.jsonl"
    want = {s.dpid for s in net.plan.switches}
    deadline = time.monotonic() + CONTROLLER_READY_S
    got: set[int] = set()
    while time.monotonic() < deadline:
        if ready_path.exists():
            got = {json.loads(line)["dpid"] for line in ready_path.read_text().splitlines() if line.strip()}
            if want <= got:
                return
        time.sleep(0.05)
    missing = sorted(want - got)
    raise NetworkError(f"switches with datapath ids {missing} never got their flows from the controller; "
                       f"controller log:\n{tail(net.run_dir / 'controller.log')}")


def wait_spanning_tree(net: EmulatedNetwork) -> None:
    """Waits until STP has settled, then checks that the bridges built the tree worked out in advance
    and that each antenna-to-cluster path measures as the loader's path; raises NetworkError if not."""
    assert net.stp is not None and net.mn is not None
    deadline = time.monotonic() + net.stp.convergence_s + STP_SETTLE_S
    while not all(sw.connected() for sw in net.mn.switches):
        if time.monotonic() > deadline:
            raise NetworkError("the Linux bridges' spanning tree did not settle: "
                               + "; ".join(f"{sw.name} {sw.port_states()}" for sw in net.mn.switches))
        time.sleep(0.2)
    states = {port: state for sw in net.mn.switches for port, state in sw.port_states().items()}
    built = stp.tree_from_states(net.plan, states)
    if built != net.stp.tree:
        raise NetworkError(f"the bridges built the spanning tree {sorted(built)}, not the expected "
                           f"{sorted(net.stp.tree)}: some antenna-to-cluster paths would be longer")
    wrong = measure.check_paths(net.plan, tdf=net.tdf)
    if wrong:
        raise NetworkError("on the spanning tree, antenna-to-cluster paths do not measure as the topology's "
                           "shortest paths:\n  " + "\n  ".join(wrong))
    net.log(f"spanning tree settled: root {net.stp.root}, blocked {', '.join(net.blocked_links) or 'none'}")


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    """Returns the last lines of a log, or "(no log)"."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
