"""What every Mininet node and link of a run needs besides its own parameters: the run's creation record, its
directory, MTU, shaping backend and time dilation factor, and how to start a helper process. `TestbedNet` hands it to each.

Importing this module also sets `Mininet.inited`: Mininet's own initialisation would rewrite machine-wide
sysctls (`fixLimits`: TCP buffer sizes of every later namespace) that other networks on this machine rely on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mininet.net import Mininet

from testbed import sh
from testbed.record import CreationRecord

if TYPE_CHECKING:
    from testbed.agent import AgentClient, Server

Mininet.inited = True  # skip ensureRoot() + fixLimits(); preflight checks root

Spawn = Callable[..., subprocess.Popen]
"""(name, argv, log path, stdout, server=None) -> a started, recorded helper process the network watches (on another
server: an object with Popen's pid, poll, send_signal, wait and kill, its output in the log)."""


@dataclass(frozen=True)
class BuildContext:
    """The run-wide facts the nodes, switches and links of one network realise themselves with."""

    record: CreationRecord
    run_dir: Path
    mtu: int
    backend: str
    """How delay is shaped: 'netem' (kernel qdisc) or 'wire' (the userspace wire)."""
    wire_netns: str
    """The namespace holding every wire's inner interfaces (exists with the 'wire' backend only)."""
    seed: int
    spawn: Spawn
    tdf: float = 1.0
    """Time dilation factor K: links are shaped K times slower in real time (delays x K, rates / K) and the
    hosts' TCP timers scaled to match (`topologies.timescale`)."""
    run_id: str = ""
    clients: Mapping[str, AgentClient] = field(default_factory=dict)
    """The agent of every remote server holding a site (none for a single-machine run)."""
    servers: Mapping[str, Server] = field(default_factory=dict)
    control_dir: str | None = None
    """Where the ssh master connections of remote nodes' shells live (short: a socket path is at most 108 bytes)."""
    crossing: Mapping[str, CrossSpec] = field(default_factory=dict)
    """Per link crossing between servers: its tunnel and the delay its wire adds."""

    def client(self, server: str | None) -> AgentClient | None:
        """Returns the agent of a remote server, None for this machine (`local`)."""
        return None if server in (None, "local") else self.clients[server]


@dataclass(frozen=True)
class CrossSpec:
    """A link between two servers as built: the `ip link add ... type vxlan` line of each side (server -> line)
    and the delay its wire adds (the link's less the underlay's one way, real ms before dilation)."""

    lines: Mapping[str, str]
    wire_delay_ms: float


def run_checked(cmd: str, shell: bool = True, server: AgentClient | None = None) -> tuple[str, str, int]:
    """Runs a command line as Mininet's `errRun` would (its `run=` hook), but raises CommandError on failure:
    Mininet itself ignores a failed `ovs-vsctl` and carries on without the bridges. On `server` if given."""
    done = sh.run(["/bin/sh", "-c", cmd] if shell else cmd.split(), timeout_s=60, server=server)
    return done.stdout, done.stderr, done.returncode


def netns_of(node: object) -> str | None:
    """Returns the named namespace of a node (a host), or None for the root namespace (switches)."""
    return getattr(node, "netns", None)


def client_of(node: object) -> AgentClient | None:
    """Returns the agent of the server a node lives on (None: this machine)."""
    return getattr(node, "client", None)


def server_of(node: object) -> str | None:
    """Returns the name of the remote server a node lives on, as the record writes it (None: this machine)."""
    return getattr(node, "record_server", None)
