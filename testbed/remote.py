"""Mininet nodes on another server: Mininet's Cluster Edition (`mininet.examples.cluster`) reached through the
project's ssh (a `Server` record: its port and options, a ControlMaster per run directory) and without its
`sudo -E` before every command (root needs none; another user gets `sudo -n`).

`ServerShell` is the mix-in, placed before Cluster Edition's `RemoteMixin`: a node's shell is `ssh -tt dest mnexec
... bash` on its server, its `cmd()`, `popen()` and `rcmd()` (the server's root namespace) go there too.
`ServerHost` and `ServerOVSSwitch` are Mininet's remote host and Open vSwitch switch with it; links between nodes
of one server are Cluster Edition's `RemoteLink` (a veth made on that server). `ServerNamedHost` and
`ServerRecordedOVS` are the project's recorded host and switch (testbed/nodes.py) on a server of a placed run:
every command they and their interfaces run outside their shell goes through the server's agent, and the record
names the server. Cluster Edition's cleanup (`ssh server mn -c`) is never registered to run: the project tears
down what it recorded.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

from mininet.examples.cluster import RemoteHost, RemoteLink, RemoteMixin, RemoteOVSSwitch
from mininet.node import OVSSwitch

from testbed.agent import Server
from testbed.context import BuildContext, run_checked
from testbed.nodes import NamedHost, RecordedOVS

__all__ = ["RemoteLink", "ServerHost", "ServerNamedHost", "ServerOVSSwitch", "ServerRecordedOVS", "ServerShell",
           "ssh_tt_argv"]


def ssh_tt_argv(server: Server, control_dir: str | None) -> list[str]:
    """Returns the ssh command line (ending in the destination) a node's shell and commands run through: with a
    terminal (`-tt`, which Cluster Edition removes for popen), key login only, one master connection per server
    in `control_dir` when given."""
    argv = ["ssh", "-q", "-p", str(server.port), "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
            *server.ssh_options]
    if control_dir is not None:
        argv += ["-o", f"ControlPath={Path(control_dir) / 'ssh-%C'}", "-o", "ControlMaster=auto",
                 "-o", "ControlPersist=30"]
    return [*argv, "-tt", server.dest]


class ServerShell:
    """Mix-in before Cluster Edition's RemoteMixin: the node lives on `on`, reached with the project's ssh."""

    def __init__(self, name: str, on: Server, control_dir: str | None = None, **kwargs: Any) -> None:
        self.on = on
        self.control_dir = control_dir
        host = on.dest.rsplit("@", 1)[-1]
        # RemoteMixin keys its per-server batches on `server`: the server's name, unique per run
        super().__init__(name, server=on.name, serverIP=host, user=on.user or "root", **kwargs)

    def _project_ssh(self) -> None:
        self.sshcmd = ssh_tt_argv(self.on, self.control_dir)  # RemoteMixin's own begins with `sudo -E -u user`
        self.isRemote = True

    def startShell(self, *args: Any, **kwargs: Any) -> None:
        self._project_ssh()
        super().startShell(*args, **kwargs)

    def _popen(self, cmd: Any, sudo: bool = True, tt: bool = True, **params: Any) -> Any:
        self._project_ssh()
        if isinstance(cmd, str):
            cmd = cmd.split()
        if sudo and self.on.user not in (None, "root"):
            cmd = ["sudo", "-n", *cmd]
        return super()._popen(cmd, sudo=False, tt=tt, **params)


class ServerHost(ServerShell, RemoteHost):
    """A Mininet host in a namespace on another server."""


class ServerOVSSwitch(ServerShell, RemoteOVSSwitch):
    """An Open vSwitch bridge of another server's Open vSwitch, started and stopped in one batch per server."""

    def isOldOVS(self) -> bool:
        """Cluster Edition asks each server for a version before 1.10 (with distutils, deprecated); preflight's
        servers run Debian 12's 3.1 or later."""
        return False


class ServerNamedHost(ServerShell, RemoteMixin, NamedHost):
    """The project's host in a named namespace on another server: its shell is ssh's here (recorded here), its
    namespace named there once the shell's remote pid is known, its commands run through the server's agent."""

    def __init__(self, name: str, ctx: BuildContext | None = None, on_server: str = "local", **params: Any) -> None:
        assert ctx is not None, "ServerNamedHost needs the run's BuildContext (ctx=)"
        super().__init__(name, on=ctx.servers[on_server], control_dir=ctx.control_dir, ctx=ctx, on_server=on_server,
                         **params)

    def startShell(self, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        super().startShell(*args, **kwargs)  # RemoteMixin: self.pid is the shell's pid on the server
        self.name_namespace()


class ServerRecordedOVS(ServerShell, RemoteMixin, RecordedOVS):
    """The project's Open vSwitch switch on another server's Open vSwitch: started and stopped in one checked
    `ovs-vsctl` per server, run through that server's agent."""

    def __init__(self, name: str, ctx: BuildContext | None = None, on_server: str = "local", **params: Any) -> None:
        assert ctx is not None, "ServerRecordedOVS needs the run's BuildContext (ctx=)"
        params["batch"] = True
        super().__init__(name, on=ctx.servers[on_server], control_dir=ctx.control_dir, ctx=ctx, on_server=on_server,
                         **params)

    @classmethod
    def batchStartup(cls, switches: Any, run: Any = None) -> Any:  # noqa: N802
        for _, group in groupby(sorted(switches, key=lambda s: s.server_name), key=lambda s: s.server_name):
            group = tuple(group)
            client = group[0].client
            OVSSwitch.batchStartup.__func__(cls, group, run=lambda cmd, shell=True, c=client: run_checked(cmd, shell, c))
        return switches

    @classmethod
    def batchShutdown(cls, switches: Any, run: Any = None) -> Any:  # noqa: N802
        for _, group in groupby(sorted(switches, key=lambda s: s.server_name), key=lambda s: s.server_name):
            group = tuple(group)
            client = group[0].client
            argv = ["ovs-vsctl", "--timeout=10"] + [w for s in group for w in ("--", "--if-exists", "del-br", s.name)]
            client.run(argv, check=False)
            for switch in group:
                switch.terminate()
        return switches
