"""How the network's signals reach whoever must act on them, however the run was started.

While the network is up, SIGTERM (`raise_interrupt`) and the watchdog's HELPER_DIED_SIGNAL raise KeyboardInterrupt in
the main thread, waking it from a blocking call, so a program blocked inside `with net:` tears down. Neither may
rely on SIGINT: a process started with SIGINT ignored (`cmd &` from a script) never gets one, and would
hand the ignoring to every process it starts. Its node shells must not inherit that (`sigint_default_in_children`):
their commands could then not be stopped by Ctrl-C (Mininet's sendInt writes ^C to the shell's terminal). Nor
must a live run's processes (live/orchestrate.py's `run_live` runs within it): however the run was started, they
get SIGINT as they would from a terminal, while the run itself goes on ignoring it (SIGTERM stops it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELPER_DIED_SIGNAL = signal.SIGUSR2
"""The signal the network's watchdog sends the main thread when a helper process dies; the network's handler raises
KeyboardInterrupt there (and ignores it when no helper died)."""


def raise_interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM's handler while the network is up: ends what the main thread does as Ctrl-C would."""
    raise KeyboardInterrupt("SIGTERM")


@contextmanager
def sigint_default_in_children() -> Iterator[None]:
    """Within it (a `with` block, or a function it decorates), the processes this one starts get SIGINT's default
    action, even if this process ignores SIGINT; this process goes on ignoring it (a handler that does nothing,
    which exec resets to the default; an ignored signal stays ignored across exec). Only in the main thread
    (elsewhere it changes nothing); nested, the outermost acts."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, _ignore)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ignore(_signum: int, _frame: object) -> None:
    pass
