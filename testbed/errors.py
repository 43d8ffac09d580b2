"""Errors of the emulated network, each with a message a user can act on.

`NetworkError` is the base; checks before building raise `PreflightError`, a link measured outside
its tolerance raises `MeasurementError`, a failed system command raises `CommandError`.
"""

from __future__ import annotations


class NetworkError(RuntimeError):
    """The emulated network could not be built, kept running or torn down."""


class PreflightError(NetworkError):
    """A check before building failed (not root, a missing program, OVS down, a bad topology)."""


class CommandError(NetworkError):
    """A system command (ip, tc, ovs-vsctl, ethtool) failed; the message holds the command and stderr."""


class MeasurementError(NetworkError):
    """A link's measured delay, jitter or loss is outside the stated tolerance of its configured value."""


class HelperDiedError(NetworkError):
    """A helper process of the run (a wire, the controller) exited while the network was up."""
