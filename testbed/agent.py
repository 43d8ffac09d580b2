"""A server of a multi-host run (`Server`), and the agent that runs commands on it over one persistent ssh.

The driver starts `python -m testbed.agent` on the server through `ssh -T` once and then exchanges JSON lines
with it: one request, one answer, in order. A request is {"op": ..., ...}; an answer {"ok": true, ...} or
{"ok": false, "error": "..."}. Ops: `run` (argv, input, timeout_s → rc, stdout, stderr), `spawn` (a detached
process with its log, env, cwd and network namespace → pid and start ticks), `poll`, `kill` (by pid and start
ticks), `read` and `write` (files), `remove` (a run's recorded entries made here), `which` (programs on PATH),
`clock` (the server's run wall clock, topologies/wallclock.py), `join` (groups for the agent itself and its ssh
session). A spawned process may join cgroups before it execs (`Server.cgroups`: a live run's `-rest` cpuset
there), and an agent started for such a server joins them itself.
`AgentClient` is the driver's end; every error it raises names the server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import sh
from testbed.errors import NetworkError
from topologies import wallclock

REPO = Path(__file__).resolve().parents[1]
REPLY_MARGIN_S = 10.0
"""How much longer than a command's own timeout the client waits for its answer."""
SERVER_SPEC = re.compile(r"^(?P<name>[A-Za-z][\w-]*)=(?P<dest>[^\s:=]+)(?::(?P<port>\d+))?$")


class AgentError(NetworkError):
    """The agent on a server could not be started or reached, or refused a request; the message names the server."""


@dataclass(frozen=True)
class Server:
    """A machine of a multi-host run, reached by ssh from the driver."""

    name: str
    dest: str
    """ssh destination, user@host."""
    port: int = 22
    underlay_addr: str | None = None
    """The server's address on the network that carries the cross-server links (None: the address of `dest`)."""
    mtu: int | None = None
    """The underlay's MTU where stated or measured."""
    ssh_options: tuple[str, ...] = ()
    """Extra ssh arguments (-i KEY, -o ...); the user's ssh config applies otherwise."""
    repo: str = str(REPO)
    """The repository path on the server (a multi-host run needs the same path and commit everywhere)."""
    cgroups: tuple[str, ...] = ()
    """Groups (paths there) every process the agent spawns joins before it execs: a live run's `-rest` cpuset and
    pressure group on that server (live/cores.py). They go with the run, never into `servers.json`."""

    @classmethod
    def parse(cls, text: str) -> Server:
        """Returns the server of `name=user@host[:port]`; raises ValueError naming the text otherwise."""
        m = SERVER_SPEC.match(text.strip())
        if not m:
            raise ValueError(f"bad server {text!r}: expected name=user@host[:port], e.g. gpu=root@10.1.0.7:22")
        return cls(name=m["name"], dest=m["dest"], port=int(m["port"] or 22))

    @property
    def user(self) -> str | None:
        """The login user of `dest` (None: ssh's default for the host)."""
        return self.dest.rsplit("@", 1)[0] if "@" in self.dest else None

    def ssh_argv(self, *remote: str) -> list[str]:
        """Returns the ssh command line that runs `remote` (one shell line) on the server, key login only."""
        return ["ssh", "-T", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", *self.ssh_options, self.dest, *remote]


# --- the agent (runs on the server) ---

def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Asks the kernel for `sig` when this process's parent ends (prctl PR_SET_PDEATHSIG, kept across exec). In a
    spawned child before exec, SIGKILL: a run's processes on a server end with the agent, so with the driver's ssh,
    as a local run's end with it."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)


def _child_setup(cgroups: Sequence[str], die_with_agent: bool) -> None:
    """In a spawned child before exec: joins the groups (the whole process: its `cgroup.procs`), so that what it
    execs starts there, and asks to die with the agent."""
    for group in cgroups:
        with open(Path(group) / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
    if die_with_agent:
        die_with_parent()


def _text(path: str) -> str | None:
    """Returns a file's text, None if it cannot be read (a process or thread gone)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _parent_and_name(pid: int) -> tuple[int, str]:
    """Returns a process's parent pid and command name (0, '' if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, ""
    return int(stat.rsplit(")", 1)[1].split()[1]), stat[stat.index("(") + 1:stat.rindex(")")]


def ssh_session_of(pid: int) -> list[int]:
    """Returns the processes between `pid` and the sshd listening for connections when they are that connection's
    own (its sshd processes, a sudo), nearest first; [] when anything else is between (a login shell) or no sshd
    is above it."""
    chain: list[int] = []
    parent, _ = _parent_and_name(pid)
    while parent > 1:
        grand, name = _parent_and_name(parent)
        if not (name.startswith("sshd") or name == "sudo"):
            return []
        if name.startswith("sshd") and not _parent_and_name(grand)[1].startswith("sshd"):
            return chain if any(_parent_and_name(p)[1].startswith("sshd") for p in chain) else []
        chain.append(parent)
        parent = grand
    return []


def read_start_ticks(pid: int) -> int:
    """Returns the process' start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


class Agent:
    """Answers requests; keeps the processes it spawned so that it can reap and poll them."""

    def __init__(self) -> None:
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def handle(self, req: Mapping[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if fn is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        try:
            return {"ok": True, **fn(**{k: v for k, v in req.items() if k != "op"})}
        except Exception as e:  # noqa: BLE001 - every failure goes back to the driver as one line
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    def op_run(self, argv: list[str], input: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
        try:
            done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout_s, check=False)
        except FileNotFoundError:
            return {"rc": 127, "stdout": "", "stderr": f"command not found: {argv[0]}"}
        except subprocess.TimeoutExpired:
            return {"rc": None, "stdout": "", "stderr": f"timed out after {timeout_s:g} s"}
        return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

    def op_spawn(self, argv: list[str], log: str, env: dict[str, str] | None = None, cwd: str | None = None,
                 netns: str | None = None, die_with_agent: bool = False,
                 cgroups: Sequence[str] = ()) -> dict[str, Any]:
        full = argv if netns is None else ["ip", "netns", "exec", netns, *argv]
        for group in cgroups:  # refused here, naming it: a failure in the child would only say "preexec_fn"
            if not (Path(group) / "cgroup.procs").is_file():
                raise ValueError(f"cgroup {group} does not exist")
        setup = (lambda: _child_setup(cgroups, die_with_agent)) if cgroups or die_with_agent else None
        with open(log, "ab") as out:
            proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True,
                                    preexec_fn=setup)
        self.children[proc.pid] = proc
        return {"pid": proc.pid, "start_ticks": read_start_ticks(proc.pid)}

    def op_poll(self, pid: int) -> dict[str, Any]:
        proc = self.children.get(pid)
        if proc is None:
            raise ValueError(f"pid {pid} was not spawned by this agent")
        return {"returncode": proc.poll()}

    def op_kill(self, pid: int, start_ticks: int, signal_name: str = "SIGTERM") -> dict[str, Any]:
        """Signals pid only if it is still the process started at start_ticks (a reused pid is left alone)."""
        try:
            same = read_start_ticks(pid) == start_ticks
        except (OSError, IndexError, ValueError):
            same = False
        if same:
            os.kill(pid, getattr(signal, signal_name))
        return {"signalled": same}

    def op_read(self, path: str, offset: int = 0, max_bytes: int = 1 << 20) -> dict[str, Any]:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(max_bytes)
        return {"data_b64": base64.b64encode(data).decode(), "size": os.path.getsize(path)}

    def op_write(self, path: str, data_b64: str, mode: int = 0o644) -> dict[str, Any]:
        """Writes the file at once: a reader sees the old file or the whole new one (a t0 file is polled)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.agent-new")
        tmp.write_bytes(base64.b64decode(data_b64))
        os.chmod(tmp, mode)
        tmp.replace(path)
        return {}

    def op_remove(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Removes a run's entries made on this server (the record's own `remove_entries`, run here)."""
        from testbed.record import Created, remove_entries

        return {"problems": remove_entries([Created(**e) for e in entries])}

    def op_join(self, cgroups: list[str]) -> dict[str, Any]:
        """Moves this agent and the processes of its own ssh session above it (sshd's per-connection processes, a
        sudo; never the sshd that listens, a daemon of the server's) into the groups; returns the pids moved."""
        session = ssh_session_of(os.getpid())
        for group in cgroups:
            with open(Path(group) / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            for pid in session:
                with contextlib.suppress(OSError), open(Path(group) / "cgroup.procs", "w") as f:
                    f.write(str(pid))
        return {"moved": [os.getpid(), *session]}

    def op_cpu_sample(self, pids: list[int], groups: Sequence[str] = ()) -> dict[str, Any]:
        """Returns what a CPU monitor reads here at once: /proc/stat's first line, /proc/pressure/cpu, each group's
        `cpu.pressure`, and per live process of `pids` each thread's name and schedstat (None: unreadable)."""
        threads: dict[str, dict[str, list[str | None]]] = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                threads[str(pid)] = {t: [_text(f"/proc/{pid}/task/{t}/comm"), _text(f"/proc/{pid}/task/{t}/schedstat")]
                                     for t in os.listdir(f"/proc/{pid}/task")}
        return {"cpus": os.cpu_count(), "stat": (_text("/proc/stat") or "").split("\n", 1)[0],
                "pressure": _text("/proc/pressure/cpu"), "groups": {g: _text(f"{g}/cpu.pressure") for g in groups},
                "threads": threads}

    def op_which(self, names: list[str]) -> dict[str, Any]:
        return {"paths": {n: shutil.which(n) for n in names}}

    def op_clock(self) -> dict[str, Any]:
        return {"time": wallclock.time_s()}

    def reap(self) -> None:
        for proc in self.children.values():
            proc.poll()


def serve(inp: Any = None, out: Any = None) -> None:
    """The agent's loop: a hello line, then one answer line per request line, until stdin closes."""
    if out is None:  # answers on a private copy of stdout; whatever else writes to fd 1 goes to stderr
        out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    inp = inp or sys.stdin
    wallclock.export_base()  # what it starts reads its clock: the one whose offset from the driver's is measured
    agent = Agent()
    ssh = os.environ.get("SSH_CONNECTION", "").split()  # client address, port, server address, port
    hello = {"ok": True, "hello": {"pid": os.getpid(), "uid": os.geteuid(), "cwd": os.getcwd(),
                                   "python": sys.executable, "server_addr": ssh[2] if len(ssh) == 4 else None}}
    out.write(json.dumps(hello) + "\n")
    out.flush()
    for line in inp:
        try:
            req = json.loads(line)
            reply = agent.handle(req) if isinstance(req, dict) else {"ok": False, "error": "request not an object"}
        except json.JSONDecodeError as e:
            reply = {"ok": False, "error": f"bad request line: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        agent.reap()


# --- the client (on the driver) ---

def remote_command(server: Server) -> str:
    """Returns the shell line ssh runs on the server: the repository's Python with the agent (through `sudo -n`
    for a user other than root), or one error line."""
    repo = shlex.quote(server.repo)
    missing = json.dumps({"ok": False, "error": f"no repository with a .venv at {server.repo}"})
    sudo = "sudo -n " if server.user not in (None, "root") else ""
    return (f"cd {repo} 2>/dev/null && test -x .venv/bin/python || {{ echo {shlex.quote(missing)}; exit 3; }}; "
            f"exec {sudo}.venv/bin/python -m testbed.agent")


class AgentClient:
    """The driver's end of one server's agent: one ssh process, requests answered in order (thread-safe)."""

    def __init__(self, server: Server, *, start_timeout_s: float = 30.0) -> None:
        self.server = server
        self.argv = server.ssh_argv(remote_command(server))
        self._lock = threading.Lock()
        self._stderr: list[str] = []
        self._buf = b""
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise AgentError(f"server {server.name}: no ssh client here: apt-get install openssh-client") from None
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.hello = self._read(start_timeout_s, "starting the agent")
        if not self.hello.get("ok"):
            self.close()
            raise AgentError(f"server {server.name} ({server.dest}): starting the agent: {self.hello.get('error')}")
        self.hello = self.hello["hello"]
        if server.cgroups:  # the agent of a run's server works for the run: in its groups there, as what it spawns
            try:
                self.call("join", cgroups=list(server.cgroups))
            except BaseException:
                self.close()
                raise

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr = (self._stderr + [line.decode(errors="replace").rstrip()])[-20:]

    def _read(self, timeout_s: float, what: str) -> dict[str, Any]:
        """Returns the next answer line; raises AgentError if none comes in time or the connection ends."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.proc.kill()
                self.proc.wait()
                raise AgentError(f"server {self.server.name} ({self.server.dest}): {what}: "
                                 f"no answer within {timeout_s:g} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self.proc.wait(timeout=5)
                time.sleep(0.05)  # the stderr thread's last lines
                detail = "; ".join(s for s in self._stderr if s) or f"ssh exited {self.proc.returncode}"
                raise AgentError(f"server {self.server.name} ({self.server.dest}): {what}: {detail}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, op: str, wait_s: float = 30.0, **args: Any) -> dict[str, Any]:
        """Sends one request and returns its answer, waiting `wait_s` (plus a margin) for it; raises AgentError
        (naming the server) on a refusal."""
        with self._lock:
            if self.proc.poll() is not None:
                raise AgentError(f"server {self.server.name}: agent connection closed")
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
            self.proc.stdin.flush()
            reply = self._read(wait_s + REPLY_MARGIN_S, op)
        if not reply.get("ok"):
            raise AgentError(f"server {self.server.name}: {op} failed: {reply.get('error')}")
        return reply

    def run(self, argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
            timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Runs argv on the server; raises CommandError naming the server if it fails and `check` is set."""
        r = self.call("run", wait_s=timeout_s, argv=list(argv), input=input_text, timeout_s=timeout_s)
        where = f"server {self.server.name}: "
        if r["rc"] is None:
            raise sh.timed_out(argv, timeout_s, where)
        done = subprocess.CompletedProcess(list(argv), r["rc"], r["stdout"], r["stderr"])
        if check and done.returncode != 0:
            raise sh.failed(argv, done, input_text, where)
        return done

    def spawn(self, argv: Sequence[str], *, log: str, env: Mapping[str, str] | None = None,
              cwd: str | None = None, netns: str | None = None, die_with_agent: bool = False,
              cgroups: Sequence[str] | None = None) -> tuple[int, int]:
        """Starts a detached process on the server (killed when the agent ends if `die_with_agent`), in `cgroups`
        (default: the server record's); returns its pid and start ticks (there)."""
        groups = list(self.server.cgroups if cgroups is None else cgroups)
        r = self.call("spawn", argv=list(argv), log=log, env=dict(env or {}), cwd=cwd, netns=netns,
                      die_with_agent=die_with_agent, **({"cgroups": groups} if groups else {}))
        return r["pid"], r["start_ticks"]

    def poll(self, pid: int) -> int | None:
        return self.call("poll", pid=pid)["returncode"]

    def kill(self, pid: int, start_ticks: int, signal_name: str = "SIGTERM") -> bool:
        return self.call("kill", pid=pid, start_ticks=start_ticks, signal_name=signal_name)["signalled"]

    def read(self, path: str, offset: int = 0) -> bytes:
        return base64.b64decode(self.call("read", path=path, offset=offset)["data_b64"])

    def read_all(self, path: str, offset: int = 0, chunk_bytes: int = 1 << 20) -> bytes:
        """Returns the file's bytes from `offset` to its end, read in chunks (raises AgentError if it is absent)."""
        chunks: list[bytes] = []
        got = 0
        while True:
            chunk = base64.b64decode(self.call("read", path=path, offset=offset + got,
                                               max_bytes=chunk_bytes)["data_b64"])
            chunks.append(chunk)
            got += len(chunk)
            if len(chunk) < chunk_bytes:
                return b"".join(chunks)

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.call("write", path=path, data_b64=base64.b64encode(data).decode(), mode=mode)

    def which(self, names: Sequence[str]) -> dict[str, str | None]:
        return self.call("which", names=list(names))["paths"]

    def clock(self) -> float:
        return self.call("clock")["time"]

    def close(self) -> None:
        """Ends the agent (stdin closed: it exits) and its ssh; processes it spawned keep running."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve()
