"""A process that stops on SIGTERM or SIGINT (workers/lifecycle.py `stop_on_signals`, as a live source does) and is
then stopping ignores both (`ignore_stop_signals`): one arriving after its loop has closed, while it writes its
records' end and its last words, does not kill it (the loop's handlers removed would leave the default action)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAM = """
import asyncio, os, signal
from workers.lifecycle import ignore_stop_signals, stop_on_signals

async def main(ignore):
    stop = stop_on_signals()
    os.kill(os.getpid(), signal.SIGTERM)  # the stop it obeys
    await asyncio.wait_for(stop.wait(), 5)
    if ignore:
        ignore_stop_signals()

asyncio.run(main({ignore}))
os.kill(os.getpid(), signal.SIGTERM)  # another, once the loop is closed
os.kill(os.getpid(), signal.SIGINT)
print("last words", flush=True)
"""


def _run(ignore: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM.format(ignore=ignore)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_a_stopping_process_ignores_a_later_sigterm_and_sigint() -> None:
    done = _run(True)
    assert done.returncode == 0 and done.stdout == "last words\n", done


def test_without_it_a_later_sigterm_kills_it_before_its_last_words() -> None:
    done = _run(False)
    assert done.returncode == -15 and "last words" not in done.stdout, done
