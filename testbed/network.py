"""EmulatedNetwork: builds a topology's network for real, keeps it up, measures it, tears it down.

It realises a `NetworkPlan` (namespaces, veths, switches, shaping, wires, controller), recording each
thing in the run directory as it is made. Leaving the `with` block, Ctrl-C, SIGTERM, an exception
or a helper process dying all end in the same teardown, which removes exactly what was recorded.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed import measure, preflight, sh, shaping, switches
from testbed.errors import CommandError, HelperDiedError, NetworkError
from testbed.plan import HOST_IFNAME, End, HostPlan, LinkPlan, NetworkPlan, build_plan
from testbed.record import Created, CreationRecord
from testbed.wire import WireSpec
from topologies import Topology, load_topology

REPO_ROOT = Path(__file__).resolve().parent.parent
OFFLOADS_OFF = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]
"""Userspace forwarding (OVS netdev, the wire) copies frames as they are: without this, TCP
checksums are left for an offload that never happens and frames exceed the MTU (GSO)."""
TCP_INIT_WINDOW_SEGMENTS = 64
"""Initial congestion and receive windows of the hosts' routes (Linux: 10): with slow start after idle off,
a frame up to 64 segments (~570 kB at MTU 9000) leaves in one flight, as the simulator's transmission
model assumes (bytes / rate), instead of taking extra round trips on long paths."""
MIN_MTU, MAX_MTU = 68, 65535
"""The MTUs an emulated network takes (Linux's bounds for a veth: IPv4's minimum, the 16-bit maximum)."""
HELPER_START_S = 20.0
CONTROLLER_READY_S = 30.0


@dataclass(frozen=True)
class PortSample:
    """A switch port's kernel counters at one moment (the port is a veth in the root namespace)."""

    link: str
    switch: str
    port_no: int
    ifname: str
    t_s: float
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


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
    """A topology's network, built on enter and torn down on exit.

    shaping: 'auto' (netem where the kernel has it, else the wire), 'netem' or 'wire'.
    switch: 'ovs' (Open vSwitch, kernel datapath if loaded, userspace otherwise) or 'lxbr'.
    controller: 'osken' (shortest-path forwarding, port statistics) or 'none' (standalone switches).
    mtu: the MTU of every interface of the network (hosts' eth0, switch ports, wires' inner ends, bridges),
    set as each is created; 68 to 65535. Jumbo frames (9000) cut the frames a query costs the userspace
    wires and switches (a 50 kB JPEG: ~35 frames at 1500, ~6 at 9000).
    """

    def __init__(self, topology: Topology | str | Path, *, shaping: str = "auto", switch: str = "ovs",
                 controller: str = "osken", run_dir: Path | None = None, subnet: str = "10.0.0.0/16",
                 seed: int = 0, links_per_wire_process: int = 1, stats_interval_s: float = 1.0,
                 mtu: int = 1500, log: Callable[[str], None] = print) -> None:
        check_mtu(mtu)
        self.topology = topology if isinstance(topology, Topology) else load_topology(topology)
        self.requested_shaping = shaping
        self.switch_kind = switch
        self.controller_kind = controller
        self.mtu = mtu
        self.run_id = _fresh_run_id()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir) if run_dir else Path("runs") / f"net-{stamp}-{self.run_id}"
        self.plan: NetworkPlan = build_plan(self.topology, self.run_id, subnet)
        self.seed = seed
        self.links_per_wire_process = max(1, links_per_wire_process)
        self.stats_interval_s = stats_interval_s
        self.log = log
        self.shaping: str | None = None
        """The backend in use ('netem' or 'wire'), known once the network is up."""
        self.datapath: str | None = None
        """'system' or 'netdev' for OVS, None for Linux bridges."""
        self.controller_port: int | None = None
        self.record = CreationRecord(self.run_dir)
        self._helpers: list[tuple[str, subprocess.Popen]] = []
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._helper_death: str | None = None
        self._old_sigterm: object = None
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
        preflight.check(self.topology, switch=self.switch_kind, controller=self.controller_kind)
        self.record.start(self.run_id)
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            t0 = time.monotonic()
            self._build()
            self._up = True
            self.log(f"network {self.topology.name} up in {time.monotonic() - t0:.1f} s: shaping={self.shaping}, "
                     f"switch={self.switch_kind}{f' ({self.datapath} datapath)' if self.datapath else ''}, "
                     f"controller={self.controller_kind}, mtu={self.mtu}, run dir {self.run_dir}")
            self.log(self.address_table())
            self._start_watchdog()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops helpers and removes everything the run recorded; raises if something could not go."""
        self._stopping.set()
        self._up = False
        problems = self.record.remove_all()
        for _, proc in self._helpers:
            proc.poll()
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)  # type: ignore[arg-type]
            self._old_sigterm = None
        if problems:
            raise NetworkError("teardown left things behind (run `run_testbed.py clean --run-dir "
                               f"{self.run_dir}` after fixing the cause):\n  " + "\n  ".join(problems))

    def host(self, name: str) -> Host:
        return Host(self.plan.host(name), self.record)

    def host_for(self, role: str, site: str) -> Host:
        """Returns the host of a role ('worker', 'scheduler', 'sources', 'probe') at a site."""
        return Host(self.plan.host_for(role, site), self.record)

    @property
    def hosts(self) -> list[Host]:
        return [Host(h, self.record) for h in self.plan.hosts]

    def ip_of(self, role: str, site: str) -> str:
        return self.plan.host_for(role, site).ip

    def measure_links(self, probes: measure.ProbePlan | None = None, tolerance: measure.Tolerance | None = None,
                      check: bool = True, links: Sequence[str] | None = None) -> list[measure.LinkMeasurement]:
        """Returns every shaped link's measurement (saved to the run dir); raises beyond tolerance if check."""
        chosen = None if links is None else [lk for lk in self.plan.links if lk.name in links]
        results = measure.measure(self.plan, probes, tolerance, chosen)
        path = self.run_dir / measure.MEASUREMENTS_FILE
        measure.save(results, path, {"topology": self.topology.name, "source": self.topology.source,
                                     "shaping": self.shaping, "switch": self.switch_kind,
                                     "datapath": self.datapath, "controller": self.controller_kind,
                                     "measured_at_s": time.time(),
                                     "tolerance": asdict(tolerance or measure.Tolerance())})
        if check:
            measure.check(results, path)
        return results

    def port_stats(self) -> list[PortSample]:
        """Returns the current byte and packet counters of every switch port, with the link it belongs to."""
        samples = []
        for link in self.plan.links:
            for end in (link.a, link.b):
                if end.switch is None or end.netns is not None:
                    continue
                base = Path("/sys/class/net") / end.ifname / "statistics"
                read = {k: int((base / k).read_text()) for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}
                samples.append(PortSample(link=link.name, switch=end.switch, port_no=end.port_no or 0,
                                          ifname=end.ifname, t_s=time.time(), **read))
        return samples

    def link_utilisation(self) -> list[dict]:
        """Returns the controller's per-port utilisation records so far (empty without a controller)."""
        path = self.run_dir / "link_utilisation.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wire_pids(self) -> list[int]:
        return [p.pid for name, p in self._helpers if name.startswith("wire")]

    def address_table(self) -> str:
        rows = [("host", "role", "site", "namespace", "address")] + self.plan.address_table()
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)

    # -- building ----------------------------------------------------------------------------------

    def _build(self) -> None:
        plan, rec = self.plan, self.record
        scratch = shaping.scratch_name(self.run_id)
        rec.add(Created("netns", scratch))
        netem_ok, answer = shaping.probe_netem(scratch)
        self.shaping = shaping.choose_backend(self.requested_shaping, netem_ok, answer)
        if self.controller_kind == "osken":
            self._start_controller()
        namespaces = [h.netns for h in plan.hosts] + ([plan.wire_netns] if self.shaping == "wire" else [])
        for ns in namespaces:
            rec.add(Created("netns", ns))
        sh.ip_batch([f"netns add {ns}" for ns in namespaces])
        for ns in namespaces:
            sh.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1"])
        self._make_links()
        self._configure_interfaces()
        self._make_switches()
        self._shape()
        if self.shaping == "wire":
            self._start_wires()
        if self.controller_kind == "osken":
            self._wait_controller_ready()
        self._write_description()

    def _make_links(self) -> None:
        root: list[str] = []
        wire_ns = self.plan.wire_netns

        def veth(name: str, peer: str, peer_netns: str | None = None) -> str:
            """Returns the `ip link add` of a veth pair, both ends at the network's MTU from the start."""
            to_ns = f" netns {peer_netns}" if peer_netns else ""
            return f"link add {name} mtu {self.mtu} type veth peer name {peer} mtu {self.mtu}{to_ns}"

        for link in self.plan.links:
            wired = self.shaping == "wire" and link.shape is not None
            if link.kind == "trunk" and not wired:
                self.record.add(Created("link", link.a.ifname))
                root.append(veth(link.a.ifname, link.b.ifname))
            elif link.kind == "trunk":
                ia, ib = link.wire_ifnames()
                for end, inner in ((link.a, ia), (link.b, ib)):
                    self.record.add(Created("link", end.ifname))
                    root.append(veth(end.ifname, inner, wire_ns))
            elif not wired:  # local link, or radio shaped by netem: host eth0 straight to the switch port
                self.record.add(Created("link", link.b.ifname))
                root.append(veth(link.b.ifname, HOST_IFNAME, link.a.netns))
            else:  # radio through the wire: host eth0 -- la | wire | lb -- switch port
                ia, ib = link.wire_ifnames()
                self.record.add(Created("link", ia, netns=wire_ns))
                sh.ip_batch([veth(ia, HOST_IFNAME, link.a.netns)], netns=wire_ns)
                self.record.add(Created("link", link.b.ifname))
                root.append(veth(link.b.ifname, ib, wire_ns))
        sh.ip_batch(root)

    def _configure_interfaces(self) -> None:
        for h in self.plan.hosts:
            sh.ip_batch(["link set lo up", f"link set {HOST_IFNAME} address {h.mac}",
                         f"addr add {h.ip}/{h.prefix_len} dev {HOST_IFNAME}", f"link set {HOST_IFNAME} up"],
                        netns=h.netns)
            sh.run(sh.in_netns(h.netns, ["ethtool", "-K", HOST_IFNAME, *OFFLOADS_OFF]))
            sh.run(["ip", "netns", "exec", h.netns, "sysctl", "-q", "-w", "net.ipv4.tcp_slow_start_after_idle=0"])
            sh.ip_batch([f"route replace {self.plan.subnet} dev {HOST_IFNAME} proto kernel scope link src {h.ip} "
                         f"initcwnd {TCP_INIT_WINDOW_SEGMENTS} initrwnd {TCP_INIT_WINDOW_SEGMENTS}"], netns=h.netns)
        ports = [e.ifname for lk in self.plan.links for e in (lk.a, lk.b) if e.switch is not None]
        for ifname in ports:
            ipv6_off = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
            if ipv6_off.exists():  # absent below IPv6's minimum MTU (1280): the kernel has no IPv6 there
                ipv6_off.write_text("1\n")
            sh.run(["ethtool", "-K", ifname, *OFFLOADS_OFF])
        sh.ip_batch([f"link set {ifname} up" for ifname in ports])
        if self.shaping == "wire":
            inner = [n for lk in self.plan.shaped_links for n in lk.wire_ifnames()]
            for ifname in inner:
                sh.run(sh.in_netns(self.plan.wire_netns, ["ethtool", "-K", ifname, *OFFLOADS_OFF]))
            sh.ip_batch(["link set lo up"] + [f"link set {n} up" for n in inner], netns=self.plan.wire_netns)

    def _make_switches(self) -> None:
        if self.switch_kind == "ovs":
            self.datapath = switches.ovs_datapath()
            for sw in self.plan.switches:
                switches.add_ovs_bridge(self.plan, sw, self.record, self.datapath, self.controller_port, self.mtu)
        else:
            lines: list[str] = []
            for sw in self.plan.switches:
                lines += switches.add_linux_bridge(self.plan, sw, self.record, self.mtu)
            sh.ip_batch(lines)

    def _shape(self) -> None:
        per_ns: dict[str | None, list[list[str]]] = {}
        for link in self.plan.shaped_links:
            assert link.shape is not None
            for end in (link.a, link.b):
                cmds = (shaping.netem_commands if self.shaping == "netem" else shaping.rate_commands)(
                    end.ifname, link.shape, self.mtu)
                self.record.add(Created("qdisc", end.ifname, netns=end.netns))
                per_ns.setdefault(end.netns, []).extend(cmds)
        for ns, cmds in per_ns.items():
            lines = "\n".join(shlex.join(c[1:]) for c in cmds) + "\n"  # tc -batch takes lines without "tc"
            sh.run(sh.in_netns(ns, ["tc", "-batch", "-"]), input_text=lines)

    def _wire_groups(self) -> list[list[LinkPlan]]:
        links = list(self.plan.shaped_links)
        n = self.links_per_wire_process
        return [links[i:i + n] for i in range(0, len(links), n)]

    def _start_wires(self) -> None:
        procs = []
        for k, group in enumerate(self._wire_groups()):
            specs = []
            for link in group:
                assert link.shape is not None
                ia, ib = link.wire_ifnames()
                specs.append(WireSpec(link.name, ia, ib, link.shape, seed=self.seed * 1000 + link.index))
            cfg = self.run_dir / f"wire-{k}.json"
            cfg.write_text(json.dumps([asdict(s) for s in specs], indent=1) + "\n")
            argv = ["ip", "netns", "exec", self.plan.wire_netns, sys.executable, "-m", "testbed.wire",
                    str(cfg), str(self.run_dir / f"wire-{k}.stats.json")]
            procs.append((f"wire-{k} ({', '.join(s.name for s in specs)})",
                          self._spawn(argv, self.run_dir / f"wire-{k}.log", stdout=subprocess.PIPE)))
        deadline = time.monotonic() + HELPER_START_S
        for name, proc in procs:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline().decode().strip() if ready else ""
            if line != "ready":
                raise NetworkError(f"{name} did not start (exit {proc.poll()}); see {self.run_dir}/"
                                   f"{name.split()[0]}.log:\n{_tail(self.run_dir / (name.split()[0] + '.log'))}")

    def _spawn(self, argv: list[str], log_path: Path, stdout: int | None = None) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, stdout=stdout or log, stderr=log, env=env, stdin=subprocess.DEVNULL)
        self.record.add_process(log_path.stem, proc.pid)
        self._helpers.append((log_path.stem, proc))
        return proc

    def _start_controller(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.run_dir / "controller.json"
        cfg.write_text(json.dumps(self.plan.controller_config(), indent=1) + "\n")
        self.controller_port = _free_tcp_port()
        proc = self._spawn([sys.executable, "-m", "testbed.controller.main", str(cfg), str(self.run_dir),
                            str(self.controller_port), str(self.stats_interval_s)], self.run_dir / "controller.log")
        deadline = time.monotonic() + HELPER_START_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.controller_port)) == 0:
                    return
            time.sleep(0.05)
        raise NetworkError(f"the os-ken controller did not start listening (exit {proc.poll()}):\n"
                           f"{_tail(self.run_dir / 'controller.log')}")

    def _wait_controller_ready(self) -> None:
        ready_path = self.run_dir / "controller_ready.jsonl"
        want = {s.dpid for s in self.plan.switches}
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
                           f"controller log:\n{_tail(self.run_dir / 'controller.log')}")

    def _write_description(self) -> None:
        desc = {
            "run_id": self.run_id, "topology": self.topology.name, "source": self.topology.source,
            "shaping": self.shaping, "switch": self.switch_kind, "datapath": self.datapath,
            "controller": self.controller_kind, "controller_port": self.controller_port, "mtu": self.mtu,
            "hosts": [asdict(h) for h in self.plan.hosts],
            "switches": [asdict(s) for s in self.plan.switches],
            "links": [{"name": lk.name, "kind": lk.kind, "a": _end_label(lk.a), "b": _end_label(lk.b),
                       "shape": asdict(lk.shape) if lk.shape else None} for lk in self.plan.links],
        }
        (self.run_dir / "network.json").write_text(json.dumps(desc, indent=1) + "\n")

    # -- helpers dying -----------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        self._watchdog = threading.Thread(target=self._watch, name="testbed-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            for name, proc in self._helpers:
                rc = proc.poll()
                if rc is not None and not self._stopping.is_set():
                    self._helper_death = f"helper {name} (pid {proc.pid}) exited with {rc} while the network was up"
                    self.log(f"error: {self._helper_death}; tearing down")
                    # A real SIGINT to the main thread wakes it from a blocking call (sleep, select),
                    # which _thread.interrupt_main alone would not do.
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
                    return


def check_mtu(mtu: int) -> None:
    """Raises ValueError unless `mtu` is an int from MIN_MTU to MAX_MTU."""
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"mtu {mtu!r} is not an integer from {MIN_MTU} to {MAX_MTU}")


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _fresh_run_id() -> str:
    existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    while True:
        rid = "".join(secrets.choice(alphabet) for _ in range(4))
        if not any(name.startswith(f"tb{rid}-") for name in existing):
            return rid


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _end_label(end: End) -> str:
    return end.host if end.host else f"{end.switch}:{end.port_no} ({end.ifname})"


__all__ = ["CommandError", "EmulatedNetwork", "Host", "PortSample"]
