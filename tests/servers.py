"""Several "servers" on one machine, for the multi-host tests and for trying multi-host runs by hand.

Each server is a network namespace (its underlay interface `eth0` on a bridge of the root namespace, at a stated
MTU) with a private mount namespace (a tmpfs `/run`, so its own `/run/netns`, `/run/openvswitch`, ...) and a
private PID namespace, holding its own ovsdb-server and ovs-vswitchd (userspace datapath) and its own sshd with
a generated host key. The driver reaches server i as root@<subnet>.i with a generated client key. Nothing a
program on one server does is visible on another or in the root namespace, as on separate machines.

Teardown is by pid: each server's PID namespace hangs off one `unshare --kill-child` process; killing it kills
the namespace's init and with it every process of the server. `stop()` returns whatever outlived it.

In a test: `with running([ServerSpec("a"), ServerSpec("b")], tmp_path) as farm:` (a module fixture yields it),
then `farm.record("a")` is the `testbed.agent.Server` to reach server a, `farm.inside("a", argv)` runs a command
there without ssh, `farm.leftovers_on("a")` lists what a run left there; leaving the block asserts nothing of
the servers is left. By hand:

    python tests/servers.py up --dir /tmp/mh [--servers a,b] [--mtu 1500]   # prints ssh lines, leaves them up
    python tests/servers.py down --dir /tmp/mh
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.agent import Server  # noqa: E402

SSHD = "/usr/sbin/sshd"
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
START_TIMEOUT_S = 30.0
# Links a bare server holds: loopback, its underlay end, and the tap of the userspace datapath.
BASE_LINKS = {"lo", "eth0", "ovs-netdev"}
OWN_PROGRAMS = {"sshd", "ovsdb-server", "ovs-vswitchd"}
HOLDERS: dict[int, subprocess.Popen[bytes]] = {}
"""The holder processes this process started, kept to be reaped at stop (and their exit seen)."""


@dataclass(frozen=True)
class ServerSpec:
    """One server of the fixture, and what to leave out of it (to test that preflight names it)."""

    name: str
    ovs: bool = True
    """Runs its own ovsdb-server and ovs-vswitchd."""
    authorized: bool = True
    """The driver's key may log in (else ssh in BatchMode fails)."""
    hide: tuple[str, ...] = ()
    """Paths made absent on this server: a file becomes an empty non-executable node, a folder an empty tmpfs of
    this server's own (what the server writes there, the driver does not see)."""
    users: tuple[str, ...] = ()
    """Login users other than root that exist on this server only (uid 4200 and on, shell /bin/sh)."""


@dataclass
class FixtureServer:
    """A running server: its namespace, address and the pids that hold it."""

    name: str
    netns: str
    root_link: str
    addr: str
    holder_pid: int
    """The `unshare --kill-child` process in the root namespace: killing it ends the server."""
    init_pid: int
    """The server's init (pid 1 inside), as the root namespace numbers it."""
    pidns_inode: int
    dir: str


@dataclass
class Farm:
    """The servers, their underlay bridge and the driver's ssh key and known hosts."""

    dir: str
    prefix: str
    bridge: str
    subnet: str
    mtu: int
    servers: list[FixtureServer] = field(default_factory=list)

    @property
    def driver_addr(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[254])

    def ssh_options(self) -> tuple[str, ...]:
        d = Path(self.dir)
        return ("-F", "/dev/null", "-i", str(d / "id"), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes")

    def record(self, name: str) -> Server:
        """Returns the agent's record of server `name` (reached as root over the underlay)."""
        s = self.get(name)
        return Server(name=s.name, dest=f"root@{s.addr}", underlay_addr=s.addr, mtu=self.mtu,
                      ssh_options=self.ssh_options(), repo=str(ROOT))

    def get(self, name: str) -> FixtureServer:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(f"no fixture server {name!r}")

    def inside(self, name: str, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs argv on server `name` directly (its network, mount and PID namespaces), not through ssh."""
        s = self.get(name)
        return subprocess.run(["nsenter", "-t", str(s.init_pid), "-m", "-n", "-p", "--", *argv],
                              capture_output=True, text=True, check=check, timeout=30)

    def leftovers_on(self, name: str) -> list[str]:
        """Returns what a run left on server `name`: namespaces, OVS bridges, links and processes beyond the
        server's own (its init, sshd, the OVS daemons) and the agents connected now."""
        found = []
        netns = self.inside(name, ["ip", "netns", "list"]).stdout.split()
        found += [f"{name}: netns {n}" for n in netns if not n.startswith("(id:")]
        br = self.inside(name, ["ovs-vsctl", "--timeout=5", "list-br"], check=False)
        found += [f"{name}: OVS bridge {b}" for b in br.stdout.split()]
        links = json.loads(self.inside(name, ["ip", "-j", "link", "show"]).stdout)
        found += [f"{name}: link {li['ifname']}" for li in links if li["ifname"] not in BASE_LINKS]
        ps = self.inside(name, ["ps", "-e", "-o", "pid=,ppid=,comm=,args="]).stdout.splitlines()
        for line in ps:
            pid, ppid, comm, args = line.split(None, 3)
            own = pid == "1" or comm in OWN_PROGRAMS or "-m testbed.agent" in args
            if not own and ppid != "0":  # ppid 0: nsenter's ps, entering from outside
                found.append(f"{name}: process {pid} {args}")
        return found


def _free_prefix() -> str:
    """Returns a name prefix (6 characters) that no namespace or link of the root namespace starts with."""
    names = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    names += subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for n in range(0x10000):
        prefix = f"mh{(os.getpid() + n) % 0x10000:04x}"
        if prefix not in names:
            return prefix
    raise RuntimeError("no free name prefix for the fixture's servers")


def _free_subnet() -> str:
    """Returns a /24 in 192.168.200-249 that no interface of the root namespace uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for third in range(200, 250):
        if f" 192.168.{third}." not in used:
            return f"192.168.{third}.0/24"
    raise RuntimeError("no free 192.168.200-249.0/24 for the fixture's underlay")


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def _keygen(path: Path) -> str:
    if not path.exists():
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
    return Path(f"{path}.pub").read_text().strip()


def _sshd_config(d: Path, addr: str, spec: ServerSpec) -> str:
    return "\n".join([
        f"ListenAddress {addr}:22", f"HostKey {d / 'hostkey'}", "PidFile /run/sshd.pid",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "AuthorizedKeysFile /run/authorized_keys",
        f"SetEnv TESTBED_FIXTURE_SERVER={spec.name}", "LogLevel ERROR", ""])


def start(specs: Sequence[ServerSpec], base_dir: Path, *, mtu: int = 1500, prefix: str | None = None) -> Farm:
    """Starts the servers; on any failure stops what it started and raises."""
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} missing: scripts/setup.sh installs openssh-server")
    base_dir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or _free_prefix()
    farm = Farm(dir=str(base_dir), prefix=prefix, bridge=f"{prefix}br", subnet=_free_subnet(), mtu=mtu)
    net = ipaddress.ip_network(farm.subnet)
    client_pub = _keygen(base_dir / "id")
    try:
        _sh("ip", "link", "add", farm.bridge, "mtu", str(mtu), "type", "bridge")
        _sh("ip", "addr", "add", f"{farm.driver_addr}/24", "dev", farm.bridge)
        _sh("ip", "link", "set", farm.bridge, "up")
        known = []
        for i, spec in enumerate(specs, start=1):
            s = _start_server(farm, spec, str(net[i]), client_pub)
            known.append(f"{s.addr} {Path(s.dir, 'hostkey.pub').read_text().strip()}")
        (base_dir / "known_hosts").write_text("\n".join(known) + "\n")
        (base_dir / "farm.json").write_text(json.dumps(asdict(farm), indent=1))
    except BaseException:
        stop(farm)
        raise
    return farm


def _start_server(farm: Farm, spec: ServerSpec, addr: str, client_pub: str) -> FixtureServer:
    d = Path(farm.dir) / spec.name
    d.mkdir(exist_ok=True)
    netns, root_link = f"{farm.prefix}-{spec.name}", f"{farm.prefix}{spec.name}"
    _keygen(d / "hostkey")
    (d / "authorized_keys").write_text(client_pub + "\n" if spec.authorized else "")
    (d / "sshd_config").write_text(_sshd_config(d, addr, spec))
    _sh("ip", "netns", "add", netns)
    _sh("ip", "link", "add", root_link, "mtu", str(farm.mtu), "type", "veth", "peer", "name", "eth0",
        "mtu", str(farm.mtu), "netns", netns)
    _sh("ip", "link", "set", root_link, "master", farm.bridge, "up")
    _sh("ip", "-n", netns, "addr", "add", f"{addr}/24", "dev", "eth0")
    _sh("ip", "-n", netns, "link", "set", "eth0", "up")
    _sh("ip", "-n", netns, "link", "set", "lo", "up")
    argv = ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--mount-proc", "--kill-child", sys.executable, __file__, "_init", str(d)]
    argv += ["--ovs"] if spec.ovs else []
    for path in spec.hide:
        argv += ["--hide", path]
    for user in spec.users:
        argv += ["--user", user]
    # close_fds (the default) matters: a daemon keeping an inherited lock fd (flock on /tmp/cpu.lock) holds it.
    holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              close_fds=True, start_new_session=True)
    server = FixtureServer(name=spec.name, netns=netns, root_link=root_link, addr=addr, holder_pid=holder.pid,
                           init_pid=0, pidns_inode=0, dir=str(d))
    farm.servers.append(server)
    HOLDERS[holder.pid] = holder
    out = _read_until_ready(holder, spec.name)
    children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
    server.init_pid = int(children[0])
    server.pidns_inode = os.stat(f"/proc/{server.init_pid}/ns/pid").st_ino
    assert out
    return server


def _read_until_ready(proc: subprocess.Popen[bytes], name: str) -> str:
    assert proc.stdout is not None
    deadline, out = time.monotonic() + START_TIMEOUT_S, b""
    while b"READY" not in out:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
        if not chunk:
            raise RuntimeError(f"fixture server {name} did not start: {out.decode(errors='replace').strip()}")
        out += chunk
    proc.stdout.close()
    return out.decode()


def stop(farm: Farm) -> list[str]:
    """Stops every server (by the pids holding them) and the bridge; returns what is left of them."""
    for s in farm.servers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(s.holder_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    inodes = {s.pidns_inode for s in farm.servers}
    while time.monotonic() < deadline and _pidns_procs(inodes):
        time.sleep(0.05)
    for s in farm.servers:
        while time.monotonic() < deadline and _netns_pids(s.netns):
            time.sleep(0.05)
        # the root end first: deleting the namespace removes it too, but only later (the kernel's cleanup work)
        subprocess.run(["ip", "link", "del", s.root_link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", s.netns], capture_output=True, check=False)
        if s.holder_pid in HOLDERS:
            HOLDERS.pop(s.holder_pid).wait(timeout=10)
    subprocess.run(["ip", "link", "del", farm.bridge], capture_output=True, check=False)
    return leftovers(farm)


def leftovers(farm: Farm) -> list[str]:
    """Returns what of the farm still exists in the root namespace: namespaces, links, processes."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in netns.split() if n.startswith(farm.prefix + "-")]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)
    found += [f"link {li['ifname']}" for li in links if li["ifname"].startswith(farm.prefix)]
    found += _pidns_procs({s.pidns_inode for s in farm.servers})
    found += [f"process {s.holder_pid} (holder of {s.name})" for s in farm.servers if _alive(s.holder_pid)]
    return found


def _pidns_procs(inodes: set[int]) -> list[str]:
    """Returns the live (not zombie) processes in these PID namespaces."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if os.stat(proc / "ns" / "pid").st_ino in inodes and _alive(int(proc.name)):
                found.append(f"process {proc.name} {(proc / 'comm').read_text().strip()}")
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _netns_pids(netns: str) -> list[str]:
    return subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()


@contextlib.contextmanager
def running(specs: Sequence[ServerSpec], base_dir: Path, *, mtu: int = 1500) -> Iterator[Farm]:
    """The servers for the length of a with block; asserts nothing of them is left afterwards."""
    farm = start(specs, base_dir, mtu=mtu)
    try:
        yield farm
    finally:
        left = stop(farm)
    assert left == [], f"fixture servers left: {left}"


# --- inside a server: its init (pid 1 of its PID namespace) ---

def _init(d: Path, ovs: bool, hide: Sequence[str], users: Sequence[str] = ()) -> None:
    """Mounts the private /run, hides paths, adds users, starts OVS and sshd, says READY, then reaps until
    killed."""
    def sh(*argv: str) -> None:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")

    sh("mount", "-t", "tmpfs", "-o", "mode=755", "fixture-run", "/run")
    for sub in ("sshd", "netns", "openvswitch", "lock"):
        os.makedirs(f"/run/{sub}", mode=0o755)
    # sshd reads the keys as the user logging in: in the private /run, readable by every user of the server
    Path("/run/authorized_keys").write_bytes((d / "authorized_keys").read_bytes())
    os.chmod("/run/authorized_keys", 0o644)
    for path in hide:
        sh("mount", "-t", "tmpfs", "-o", "mode=755", "hidden", path) if os.path.isdir(path) \
            else sh("mount", "--bind", "/dev/null", path)
    if users:  # a passwd of this server's own, over the machine's, in its mount namespace only
        lines = [f"{u}:x:{4200 + i}:{4200 + i}::/tmp:/bin/sh" for i, u in enumerate(users)]
        (d / "passwd").write_text(Path("/etc/passwd").read_text() + "\n".join(lines) + "\n")
        sh("mount", "--bind", str(d / "passwd"), "/etc/passwd")
    if ovs:
        if os.path.exists(d / "conf.db"):
            os.unlink(d / "conf.db")
        sh("ovsdb-tool", "create", str(d / "conf.db"), OVS_SCHEMA)
        sh("ovsdb-server", str(d / "conf.db"), "--remote=punix:/run/openvswitch/db.sock", "--pidfile",
           "--detach", f"--log-file={d / 'ovsdb.log'}")
        sh("ovs-vsctl", "--no-wait", "init")
        sh("ovs-vswitchd", "--pidfile", "--detach", f"--log-file={d / 'vswitchd.log'}")
    sh(SSHD, "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log"))
    deadline = time.monotonic() + START_TIMEOUT_S  # sshd forks before it listens; its pid file follows listen()
    while not os.path.exists("/run/sshd.pid"):
        if time.monotonic() > deadline:
            raise SystemExit(f"sshd wrote no pid file: {(d / 'sshd.log').read_text()}")
        time.sleep(0.01)
    # The launcher closes its pipe once it reads READY: nothing may be written to it after that (EPIPE).
    sys.stdout.flush()
    ready = os.dup(1)
    log = os.open(d / "init.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.write(ready, b"READY\n")
    os.close(ready)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes pause() below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # pid 1 exiting kills the whole namespace
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            signal.pause()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start servers and leave them running")
    up.add_argument("--dir", type=Path, required=True)
    up.add_argument("--servers", default="a,b", help="comma-separated names (default a,b)")
    up.add_argument("--mtu", type=int, default=1500, help="underlay MTU (default 1500)")
    down = sub.add_parser("down", help="stop the servers started with up --dir DIR")
    down.add_argument("--dir", type=Path, required=True)
    init = sub.add_parser("_init")  # internal: a server's pid 1
    init.add_argument("dir", type=Path)
    init.add_argument("--ovs", action="store_true")
    init.add_argument("--hide", action="append", default=[])
    init.add_argument("--user", action="append", default=[])
    args = p.parse_args(argv)
    if args.cmd == "_init":
        _init(args.dir, args.ovs, args.hide, args.user)
        return 0
    if args.cmd == "up":
        farm = start([ServerSpec(n) for n in args.servers.split(",")], args.dir, mtu=args.mtu)
        opts = " ".join(farm.ssh_options())
        for s in farm.servers:
            print(f"{s.name}: ssh {opts} root@{s.addr}")
        names = " ".join(f"{s.name}=root@{s.addr}" for s in farm.servers)
        print(f"preflight: .venv/bin/python -m testbed.serverchecks {names} --ssh-options '{opts}'")
        return 0
    state = json.loads((args.dir / "farm.json").read_text())
    farm = Farm(**{**state, "servers": [FixtureServer(**s) for s in state["servers"]]})
    left = stop(farm)
    print("\n".join(left) if left else "nothing left")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
