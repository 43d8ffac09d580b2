"""How the network's signals reach whoever must act on them, however the run was started.

While the network is up, SIGTERM (`raise_interrupt`) and the watchdog's HELPER_DIED_SIGNAL raise KeyboardInterrupt in
the main thread, waking it from a blocking call, so a program blocked inside `with net:` tears down. Neither may
rely on SIGINT: a process started with SIGINT ignored (`cmd &` from a script, nohup) never gets one.
"""

from __future__ import annotations

import signal

HELPER_DIED_SIGNAL = signal.SIGUSR2
"""The signal the network's watchdog sends the main thread when a helper process dies; the network's handler raises
KeyboardInterrupt there (and ignores it when no helper died)."""


def raise_interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM's handler while the network is up: ends what the main thread does as Ctrl-C would."""
    raise KeyboardInterrupt("SIGTERM")
