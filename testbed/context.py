"""What every Mininet node and link of a run needs besides its own parameters: the run's creation record, its
directory, MTU, shaping backend and time dilation factor, and how to start a helper process. `TestbedNet` hands it to each.

Importing this module also sets `Mininet.inited`: Mininet's own initialisation would rewrite machine-wide
sysctls (`fixLimits`: TCP buffer sizes of every later namespace) that other networks on this machine rely on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mininet.net import Mininet

from testbed import sh
from testbed.record import CreationRecord

Mininet.inited = True  # skip ensureRoot() + fixLimits(); preflight checks root

Spawn = Callable[[str, list[str], Path, "int | None"], subprocess.Popen]
"""(name, argv, log path, stdout) -> a started, recorded helper process the network watches."""


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


def run_checked(cmd: str, shell: bool = True) -> tuple[str, str, int]:
    """Runs a command line as Mininet's `errRun` would (its `run=` hook), but raises CommandError on failure:
    Mininet itself ignores a failed `ovs-vsctl` and carries on without the bridges."""
    done = sh.run(["/bin/sh", "-c", cmd] if shell else cmd.split(), timeout_s=60)
    return done.stdout, done.stderr, done.returncode


def netns_of(node: object) -> str | None:
    """Returns the named namespace of a node (a host), or None for the root namespace (switches)."""
    return getattr(node, "netns", None)
