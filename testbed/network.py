"""EmulatedNetwork: builds a topology's network on Mininet, keeps it up, measures it, tears it down.

It realises a `NetworkPlan` as a Mininet network (`TestbedTopo` -> `TestbedNet`: hosts in named
namespaces, Open vSwitch or Linux-bridge switches, shaped links, the os-ken controller as a
`RemoteController`), every object recorded in the run directory before it exists. Leaving the `with`
block, Ctrl-C, SIGTERM, an exception or a helper process dying all end in the same teardown: `net.stop()`
(Mininet's), then whatever the record still lists. `mn` is the Mininet network (its API, `get`, the CLI).

With a time dilation factor K (`tdf`) the network runs K times slower than the topology in real time (links,
the hosts' TCP timers); its measurements and the controller's rates are given in virtual time.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed import bringup, measure, preflight, sh, shaping, stp, switches
from testbed.errors import CommandError, HelperDiedError, NetworkError, PreflightError
from testbed.interrupts import HELPER_DIED_SIGNAL, raise_interrupt, sigint_default_in_children
from testbed.placement import Placement, control_dir, everything_local
from testbed.plan import NETWORK_FILE, End, HostPlan, NetworkPlan, build_plan
from testbed.portcounters import PortReading, PortSample, read_ports
from testbed.probes import ProbePlan
from testbed.record import Created, CreationRecord
from topologies import Topology, load_topology, wallclock
from topologies.timescale import TimeScale

if TYPE_CHECKING:
    from testbed.multihost import ServerSet
    from testbed.net import TestbedNet

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_MTU, MAX_MTU = 68, 65535
"""The MTUs an emulated network takes (Linux's bounds for a veth: IPv4's minimum, the 16-bit maximum)."""
WATCHDOG_JOIN_S = 10.0
"""How long teardown waits for the watchdog to see it and end (one poll of the helpers: local, or through agents)."""


class Host:
    """A host of the running network: runs commands and processes inside its namespace."""

    def __init__(self, plan: HostPlan, record: CreationRecord) -> None:
        self.plan = plan
        self._record = record

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def ip(self) -> str:
        return self.plan.ip

    @property
    def netns(self) -> str:
        return self.plan.netns

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Returns a process started in this host's namespace; teardown stops it if it still runs."""
        proc = subprocess.Popen(sh.in_netns(self.netns, argv), **kwargs)
        self._record.add_process(f"{self.name}: {shlex.join(argv)}", proc.pid)
        return proc

    def cmd(self, argv: Sequence[str] | str, timeout_s: float = 30.0, check: bool = True) -> str:
        """Returns the stdout of a command run to completion in this host's namespace."""
        args = shlex.split(argv) if isinstance(argv, str) else list(argv)
        return sh.run(sh.in_netns(self.netns, args), timeout_s=timeout_s, check=check).stdout

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.ip}, netns={self.netns})"


class EmulatedNetwork:
    """A topology's network, built on Mininet on enter and torn down on exit.

    shaping: 'auto' (netem where the kernel has it, else the wire), 'netem' or 'wire'.
    switch: 'ovs' (Open vSwitch, kernel datapath if loaded, userspace otherwise) or 'lxbr' (Linux bridges;
    on a topology with a cycle they run STP, accepted only if its tree carries every antenna-to-cluster path).
    controller: 'osken' (shortest-path forwarding, port statistics) or 'none' (standalone switches); by default
    the one that goes with the switches (none for Linux bridges, osken for Open vSwitch).
    mtu: the MTU of every interface of the network (hosts' eth0, switch ports, wires' inner ends, bridges),
    set as each is created; 68 to 65535. Jumbo frames (9000) cut the frames a query costs the userspace
    wires and switches (a 50 kB JPEG: ~35 frames at 1500, ~6 at 9000).
    tdf: time dilation factor K (docs/network.md#time-dilation): every link K times slower in real time than the
    topology says (delays and jitter x K, rates / K), the hosts' TCP timers x K, the controller's port
    statistics every `stats_interval_s` x K real seconds with rates per virtual second, link measurements in
    virtual ms.
    placement: the servers of a multi-host run and each site's server (`testbed.placement`); default: all here.
    """

    def __init__(self, topology: Topology | str | Path, *, shaping: str = "auto", switch: str = "ovs",
                 controller: str | None = None, run_dir: Path | None = None, subnet: str = "10.0.0.0/16",
                 seed: int = 0, stats_interval_s: float = 1.0, mtu: int = 1500,
                 log: Callable[[str], None] = print, tdf: float = 1.0,
                 placement: Placement | None = None) -> None:
        check_mtu(mtu)
        if not math.isfinite(tdf):
            raise ValueError(f"time dilation factor {tdf!r} is not a finite number")
        self.tdf = TimeScale(tdf).factor  # raises ValueError unless > 0
        self.topology = topology if isinstance(topology, Topology) else load_topology(topology)
        self.requested_shaping = shaping
        self.switch_kind = switch
        self.controller_kind = switches.controller_for(switch, controller)
        self.mtu = mtu
        self.run_id = _fresh_run_id()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir) if run_dir else Path("runs") / f"net-{stamp}-{self.run_id}"
        self.placement = placement or everything_local([s.name for s in self.topology.sites])
        """Which server each site lives on (docs/multihost.md); everything on this machine by default."""
        self.plan: NetworkPlan = build_plan(self.topology, self.run_id, subnet, dict(self.placement.sites))
        self.seed = seed
        self.stats_interval_s = stats_interval_s
        self.log = log
        self.shaping: str | None = None
        """The backend in use ('netem' or 'wire'), known once the network is up."""
        self.datapath: str | None = None
        """'system' or 'netdev' for OVS, None for Linux bridges."""
        self.stp: stp.StpPlan | None = None
        """The Linux bridges' spanning tree (a cyclic topology without a controller), else None."""
        self.controller_port: int | None = None
        self.mn: TestbedNet | None = None
        """The Mininet network (`mn.get(name).cmd(...)`, `mn.pingAll()`, the CLI), once built."""
        self.last_report: measure.LinkReport | None = None
        """The last link measurement, with the switch hops measured beside it."""
        self.record = CreationRecord(self.run_dir)
        self.servers: ServerSet | None = None
        """The agents and underlay of the remote servers of a placed run, while it is up (None: one machine)."""
        self._helpers: list[tuple[str, subprocess.Popen]] = []
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._helper_death: str | None = None
        self._old_handlers: dict[int, Any] = {}
        """The handlers `start` replaced (SIGTERM, HELPER_DIED_SIGNAL), put back by `stop`; empty off the main thread."""
        self._interrupt_signal: int | None = None
        """The signal the watchdog sends the main thread (None: none would raise KeyboardInterrupt there)."""
        self._up = False

    # -- public API --------------------------------------------------------------------------------

    def __enter__(self) -> EmulatedNetwork:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if self._helper_death and exc_type is KeyboardInterrupt:
            raise HelperDiedError(self._helper_death) from None

    def start(self) -> None:
        """Checks, builds, and waits until the network forwards; tears down on any failure."""
        # imported here, not above: `python -m testbed.deathwatch` imports the package, hence this module
        from testbed.deathwatch import start_deathwatch

        self.stp = preflight.check(self.topology, switch=self.switch_kind, controller=self.controller_kind,
                                   plan=self.plan)
        if not self.placement.is_local and self.requested_shaping == "netem":
            raise PreflightError("--shaping netem: a run across servers shapes its links with the wire (the crossing "
                                 "links need it); use --shaping wire or auto")
        self.record.start(self.run_id)
        start_deathwatch(self.record)  # stops the run's processes should this one die without tearing down
        if threading.current_thread() is threading.main_thread():
            self._old_handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, raise_interrupt)
            self._old_handlers[HELPER_DIED_SIGNAL] = signal.signal(HELPER_DIED_SIGNAL, self._on_helper_death)
            self._interrupt_signal = HELPER_DIED_SIGNAL
        elif callable(signal.getsignal(signal.SIGINT)):  # Python's SIGINT handler in the main thread
            self._interrupt_signal = signal.SIGINT
        try:
            t0 = time.monotonic()
            if not self.placement.is_local:
                from testbed.multihost import connect

                self.servers = connect(self.placement, self.plan, mtu=self.mtu, tdf=self.tdf, run_dir=self.run_dir)
            self._build()
            self._up = True
            stp_note = f", STP root {self.stp.root}" if self.stp else ""
            where = ("" if self.servers is None else ", servers " + ", ".join(
                f"{n} ({', '.join(s for s, on in self.placement.sites if on == n)})" for n in self.plan.servers))
            self.log(f"network {self.topology.name} up in {time.monotonic() - t0:.1f} s on Mininet "
                     f"{preflight.mininet_version()}: shaping={self.shaping}, switch={self.switch_kind}"
                     f"{f' ({self.datapath} datapath)' if self.datapath else ''}{stp_note}, "
                     f"controller={self.controller_kind}, mtu={self.mtu}"
                     f"{f', time dilation x{self.tdf:g}' if self.tdf != 1.0 else ''}{where}, run dir {self.run_dir}")
            self.log(self.address_table())
            from testbed.nodes import local_drop_note  # Mininet's modules: after preflight, as in _build

            if note := local_drop_note(self.tdf):
                self.log(note)
            self._start_deathwatch()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops Mininet's network, then removes whatever the run recorded and still exists; raises if
        something could not go."""
        self._stopping.set()
        self._up = False
        problems = []
        if self.mn is not None:
            try:
                self.mn.stop()
            except Exception as exc:  # the record below still removes everything
                problems.append(f"Mininet's stop failed ({type(exc).__name__}: {exc}); removed from the record")
            self.mn = None
        left = self.record.remove_all(self.servers.clients if self.servers else None)
        for _, proc in self._helpers:
            proc.poll()
        if self.servers is not None:
            self.servers.close(self._control_dir())
        stuck = False  # a watchdog still polling might yet send HELPER_DIED_SIGNAL: ignored then, not fatal
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(WATCHDOG_JOIN_S)
            stuck = self._watchdog.is_alive()
        for signum, handler in self._old_handlers.items():
            handler = signal.SIG_IGN if stuck and signum == HELPER_DIED_SIGNAL else handler
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers.clear()
        if left:
            raise NetworkError("teardown left things behind (run `run_testbed.py clean --run-dir "
                               f"{self.run_dir}` after fixing the cause):\n  " + "\n  ".join(problems + left))

    def host(self, name: str) -> Host:
        return Host(self.plan.host(name), self.record)

    def host_for(self, role: str, site: str) -> Host:
        """Returns the host of a role ('worker', 'scheduler', 'sources', 'probe') at a site."""
        return Host(self.plan.host_for(role, site), self.record)

    @property
    def hosts(self) -> list[Host]:
        return [Host(h, self.record) for h in self.plan.hosts]

    def get(self, *names: str) -> Any:
        """Returns Mininet's node(s) of these names (hosts by name, switches by bridge), as `Mininet.get`."""
        if self.mn is None:
            raise NetworkError("the network is not up")
        return self.mn.get(*names)

    def ip_of(self, role: str, site: str) -> str:
        return self.plan.host_for(role, site).ip

    def measure_links(self, probes: ProbePlan | None = None, tolerance: measure.Tolerance | None = None,
                      check: bool = True, links: Sequence[str] | None = None) -> list[measure.LinkMeasurement]:
        """Returns every shaped link's measurement (saved to the run dir, with the switch hops measured
        beside them: `last_report`); raises beyond tolerance if check. Trunks a spanning tree blocks carry
        no traffic and are not measured (`blocked_links`)."""
        blocked = set(self.blocked_links)
        chosen = [lk for lk in self.plan.shaped_links if (links is None or lk.name in links) and lk.name not in blocked]
        if self.servers is not None:  # each server's links on its own clock, crossing links by echo (RTT/2)
            from testbed.measure_servers import measure_placed

            report = measure_placed(self.plan, self.topology.source, self.servers.clients,
                                    probes or ProbePlan(), tolerance or measure.Tolerance(), self.tdf, chosen,
                                    self.record)
        else:
            report = measure.measure(self.plan, probes, tolerance, chosen, tdf=self.tdf)
        self.last_report = report
        path = self.run_dir / measure.MEASUREMENTS_FILE
        measure.save(report, path, {"topology": self.topology.name, "source": self.topology.source,
                                    "shaping": self.shaping, "switch": self.switch_kind,
                                    "datapath": self.datapath, "controller": self.controller_kind,
                                    "mtu": self.mtu, "tdf": self.tdf, "measured_at_s": wallclock.time_s(),
                                    "tolerance": asdict(tolerance or measure.Tolerance()),
                                    "probes": asdict(probes or ProbePlan()),
                                    "blocked_by_stp": sorted(blocked),
                                    "servers": {sw.site: sw.server for sw in self.plan.switches},
                                    "crossing_links_by_echo": [lk.name for lk in self.plan.crossing_links]})
        if check:
            measure.check(report.links, path)
        return report.links

    @property
    def blocked_links(self) -> list[str]:
        """Returns the trunks the Linux bridges' spanning tree blocks (none without STP)."""
        if self.stp is None:
            return []
        return sorted(lk.name for lk in self.plan.links if lk.kind == "trunk" and lk.name not in self.stp.tree)

    def port_stats(self) -> list[PortSample]:
        """Returns the current byte and packet counters of every switch port on every server, with the link it
        belongs to (testbed.portcounters: one agent request per other server); raises NetworkError naming a server
        that did not answer."""
        reading = self.port_reading()
        if reading.unread:
            raise NetworkError("port counters not read: " + "; ".join(reading.unread.values()))
        return reading.samples

    def port_reading(self) -> PortReading:
        """Returns every switch port's counters now, and the servers that did not answer (not raised)."""
        return read_ports(self.plan, self.servers.clients if self.servers else {})

    def link_utilisation(self) -> list[dict]:
        """Returns the controller's per-port utilisation records so far (empty without a controller)."""
        path = self.run_dir / "link_utilisation.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wire_pids(self) -> list[int]:
        """Returns the wire processes' pids in the plan's link order."""
        by_name = {name: p.pid for name, p in self._helpers}
        return [by_name[f"wire-{lk.name}"] for lk in self.plan.shaped_links if f"wire-{lk.name}" in by_name]

    def address_table(self) -> str:
        rows = [("host", "role", "site", "namespace", "address")] + self.plan.address_table()
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)

    def switch_table(self) -> str:
        """Returns one line per switch: its Mininet node (bridge) name, its site and datapath id."""
        return "\n".join(f"{sw.bridge}  site {sw.site}  dpid {sw.dpid}" for sw in self.plan.switches)

    def cli(self, script: Path | None = None, stdin: Any = None) -> bool:
        """Runs Mininet's CLI on the network (the project's TestbedCLI) until `exit`, end of input or SIGTERM;
        with `script`, runs its commands and returns. Returns True when SIGTERM (or a dying helper) ended it."""
        from testbed.mncli import TestbedCLI  # Mininet's CLI: imported with the network, after preflight

        if self.mn is None:
            raise NetworkError("the network is not up")
        return TestbedCLI(self.mn, stdin=stdin or sys.stdin, script=script, testbed=self).terminating

    @property
    def helper_died(self) -> str | None:
        """Says which helper process exited while the network was up (None while all run)."""
        return self._helper_death

    # -- building ----------------------------------------------------------------------------------

    def _build(self) -> None:
        # Mininet's modules are imported here, after preflight has checked that they are installed.
        from testbed.context import BuildContext
        from testbed.net import TestbedNet
        from testbed.nodes import IpBridge, NamedHost, RecordedOVS, StoppableRemote
        from testbed.topo import TestbedTopo

        plan, rec = self.plan, self.record
        scratch = shaping.scratch_name(self.run_id)
        rec.add(Created("netns", scratch))
        netem_ok, answer = shaping.probe_netem(scratch)
        if self.servers is not None:  # the crossing links need the wire, and one backend serves every server
            netem_ok, answer = False, "a run across servers shapes with the wire"
        self.shaping = shaping.choose_backend(self.requested_shaping, netem_ok, answer)
        if self.controller_kind == "osken":
            bringup.start_controller(self)
        if self.shaping == "wire":
            for server in dict.fromkeys(lk.server_a for lk in plan.shaped_links):
                self._make_wire_netns(server)
        ovs = self.switch_kind == "ovs"
        if self.servers is not None and not ovs:
            raise PreflightError("--switch lxbr: a run across servers uses Open vSwitch (--switch ovs)")
        self.datapath = switches.ovs_datapath() if ovs else None
        if self.servers is not None:
            self.datapath = "netdev"  # one datapath for every server: the userspace one runs everywhere
        ctx = BuildContext(record=rec, run_dir=self.run_dir.resolve(), mtu=self.mtu, backend=self.shaping,
                           wire_netns=plan.wire_netns, seed=self.seed, spawn=self.spawn_helper, tdf=self.tdf,
                           run_id=self.run_id, clients=self.servers.clients if self.servers else {},
                           servers=self.servers.servers if self.servers else {},
                           control_dir=self._control_dir(), crossing=self.servers.crossing if self.servers else {})
        topo = TestbedTopo(plan, backend=self.shaping, switch=self.switch_kind,
                           datapath=switches.mininet_datapath(self.datapath) if self.datapath else "user",
                           controller=self.controller_kind == "osken", stp=self.stp)
        self.mn = TestbedNet(topo, ctx, host=NamedHost, switch=RecordedOVS if ovs else IpBridge)
        if self.controller_kind == "osken":
            addr = self.servers.controller_addr if self.servers else "127.0.0.1"
            self.mn.addController("c0", controller=StoppableRemote, ip=addr, port=self.controller_port)
        with sigint_default_in_children():  # the node shells: else Ctrl-C could not stop their commands
            self.mn.build()
        self.mn.start()  # checks every shaped interface's qdiscs against the plan
        if self.controller_kind == "osken":
            bringup.wait_controller_ready(self)
        if self.stp is not None:
            bringup.wait_spanning_tree(self)
        self._write_description()

    def _make_wire_netns(self, server: str = "local") -> None:
        ns, client = self.plan.wire_netns, self.servers.clients.get(server) if self.servers else None
        self.record.add(Created("netns", ns, server=None if server == "local" else server))
        sh.run(["ip", "netns", "add", ns], server=client)
        sh.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1"], server=client)
        sh.ip_batch(["link set lo up"], netns=ns, server=client)

    def _control_dir(self) -> str | None:
        """Returns a short directory for the ssh master connections of remote nodes' shells (None: one machine)."""
        if self.servers is None:
            return None
        path = control_dir(self.run_id)
        path.mkdir(mode=0o700, exist_ok=True)
        return str(path)

    def spawn_helper(self, name: str, argv: list[str], log_path: Path, stdout: int | None = None,
                     server: str | None = None) -> subprocess.Popen:
        """Starts a helper of the network (controller, wire), recorded and watched: its death tears down. It runs
        in a session of its own, as on another server: Ctrl-C at a terminal (SIGINT to the foreground process
        group) is for the command and its CLI to act on, not a wire's end (`net --cli`: Ctrl-C stops a node's
        command); the network stops its helpers itself."""
        if server is not None:  # through the server's agent; dies with it (docs/multihost.md)
            assert self.servers is not None
            proc = self.servers.spawn(server, name, argv, log_path, self.record)
            self._helpers.append((name, proc))
            return proc  # type: ignore[return-value]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, stdout=stdout or log, stderr=log, env=env, stdin=subprocess.DEVNULL,
                                    start_new_session=True, bufsize=0)  # unbuffered: select sees every line
        self.record.add_process(name, proc.pid)
        self._helpers.append((name, proc))
        return proc

    def _write_description(self) -> None:
        desc = {
            "run_id": self.run_id, "topology": self.topology.name, "source": self.topology.source,
            "mininet": preflight.mininet_version(),
            "shaping": self.shaping, "switch": self.switch_kind, "datapath": self.datapath,
            "controller": self.controller_kind, "controller_port": self.controller_port, "mtu": self.mtu,
            "tdf": self.tdf,
            "stp": None if self.stp is None else {"root": self.stp.root, "tree": sorted(self.stp.tree)},
            "hosts": [asdict(h) for h in self.plan.hosts],
            "switches": [asdict(s) for s in self.plan.switches],
            "links": [{"name": lk.name, "kind": lk.kind, "a": _end_label(lk.a), "b": _end_label(lk.b),
                       "shape": asdict(lk.shape) if lk.shape else None} for lk in self.plan.links],
        }
        (self.run_dir / NETWORK_FILE).write_text(json.dumps(desc, indent=1) + "\n")

    # -- helpers dying -----------------------------------------------------------------------------

    def _start_deathwatch(self) -> None:
        self._watchdog = threading.Thread(target=self._watch, name="testbed-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            for name, proc in self._helpers:
                rc = proc.poll()
                if rc is not None and not self._stopping.is_set():
                    self._helper_death = f"helper {name} (pid {proc.pid}) exited with {rc} while the network was up"
                    self.log(f"error: {self._helper_death}; tearing down")
                    # A real signal to the main thread wakes it from a blocking call (sleep, select, poll),
                    # which _thread.interrupt_main alone would not do; its handler raises KeyboardInterrupt.
                    if self._interrupt_signal is not None:
                        signal.pthread_kill(threading.main_thread().ident, self._interrupt_signal)  # type: ignore[arg-type]
                    return

    def _on_helper_death(self, _signum: int, _frame: object) -> None:
        """HELPER_DIED_SIGNAL's handler: interrupts the main thread, unless teardown has begun or no helper died."""
        if self._helper_death and not self._stopping.is_set():
            raise KeyboardInterrupt(self._helper_death)


def check_mtu(mtu: int) -> None:
    """Raises ValueError unless `mtu` is an int from MIN_MTU to MAX_MTU."""
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"mtu {mtu!r} is not an integer from {MIN_MTU} to {MAX_MTU}")


def _fresh_run_id() -> str:
    existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    while True:
        rid = "".join(secrets.choice(alphabet) for _ in range(4))
        if not any(name.startswith(f"tb{rid}-") for name in existing):
            return rid


def _end_label(end: End) -> str:
    return end.host if end.host else f"{end.switch}:{end.port_no} ({end.ifname})"


__all__ = ["CommandError", "EmulatedNetwork", "Host", "PortSample"]
