"""Runs the system commands that build the network (ip, tc, ethtool, ovs-vsctl) and fails loudly.

Every command's failure raises `CommandError` with the command line and its stderr: nothing is
printed and ignored (unlike Mininet's TCLink). `in_netns` prefixes a command for a namespace.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from testbed.errors import CommandError


def run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
        timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Returns the finished command; raises CommandError if it exits non-zero and `check` is set."""
    try:
        done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise CommandError(f"command not found: {argv[0]} (in: {shlex.join(argv)})") from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"command timed out after {timeout_s:.0f} s: {shlex.join(argv)}") from None
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        if input_text is not None:
            detail += "\n  input was:\n    " + input_text.strip().replace("\n", "\n    ")
        raise CommandError(f"`{shlex.join(argv)}` failed (exit {done.returncode}): {detail}")
    return done


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """Returns argv run inside the named network namespace (or unchanged for the root namespace)."""
    return list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]


def ip_batch(lines: Sequence[str], netns: str | None = None) -> None:
    """Runs `ip` commands as one batch (fast); raises CommandError naming the failing line."""
    if not lines:
        return
    argv = ["ip", "-batch", "-"] if netns is None else ["ip", "-n", netns, "-batch", "-"]
    run(argv, input_text="\n".join(lines) + "\n")


def ip_batch_force(lines: Sequence[str], netns: str | None = None) -> None:
    """Runs `ip` commands as one batch, going on past failing lines (teardown: gone already is fine)."""
    if lines:
        argv = ["ip", "-force", "-batch", "-"] if netns is None else ["ip", "-n", netns, "-force", "-batch", "-"]
        run(argv, input_text="\n".join(lines) + "\n", check=False)
