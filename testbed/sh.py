"""Runs the system commands that build the network (ip, tc, ethtool, ovs-vsctl) and fails loudly.

Every command's failure raises `CommandError` with the command line and its stderr: nothing is
printed and ignored (unlike Mininet's TCLink). `in_netns` prefixes a command for a namespace. A command for
another server of a multi-host run goes through that server's agent (`server=`), failing the same way.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

from testbed.errors import CommandError

if TYPE_CHECKING:
    from testbed.agent import AgentClient


def run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
        timeout_s: float = 30.0, server: AgentClient | None = None) -> subprocess.CompletedProcess[str]:
    """Returns the finished command (on `server` if given, else here); raises CommandError if it exits non-zero
    and `check` is set."""
    if server is not None:
        return server.run(argv, input_text=input_text, check=check, timeout_s=timeout_s)
    try:
        done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise CommandError(f"command not found: {argv[0]} (in: {shlex.join(argv)})") from None
    except subprocess.TimeoutExpired:
        raise timed_out(argv, timeout_s) from None
    if check and done.returncode != 0:
        raise failed(argv, done, input_text)
    return done


def timed_out(argv: Sequence[str], timeout_s: float, where: str = "") -> CommandError:
    """Returns the error of a command that ran out of time (`where`: "server b: " for another server)."""
    return CommandError(f"{where}command timed out after {timeout_s:g} s: {shlex.join(argv)}")


def failed(argv: Sequence[str], done: subprocess.CompletedProcess[str], input_text: str | None = None,
           where: str = "") -> CommandError:
    """Returns the error of a command that exited non-zero: its line, exit status, stderr and input."""
    detail = (done.stderr or done.stdout).strip()
    if input_text is not None:
        detail += "\n  input was:\n    " + input_text.strip().replace("\n", "\n    ")
    return CommandError(f"{where}`{shlex.join(argv)}` failed (exit {done.returncode}): {detail}")


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """Returns argv run inside the named network namespace (or unchanged for the root namespace)."""
    return list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]


def ip_batch(lines: Sequence[str], netns: str | None = None, server: AgentClient | None = None) -> None:
    """Runs `ip` commands as one batch (fast), on `server` if given; raises CommandError naming the failing line."""
    if not lines:
        return
    argv = ["ip", "-batch", "-"] if netns is None else ["ip", "-n", netns, "-batch", "-"]
    run(argv, input_text="\n".join(lines) + "\n", server=server)


def ip_batch_force(lines: Sequence[str], netns: str | None = None, server: AgentClient | None = None) -> None:
    """Runs `ip` commands as one batch, going on past failing lines (teardown: gone already is fine)."""
    if lines:
        argv = ["ip", "-force", "-batch", "-"] if netns is None else ["ip", "-n", netns, "-force", "-batch", "-"]
        run(argv, input_text="\n".join(lines) + "\n", check=False, server=server)
