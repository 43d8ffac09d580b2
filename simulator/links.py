"""Links that keep order: no message overtakes one that entered the same link direction before it.

A real link, and the testbed's wire (testbed/wire.py), is FIFO per direction: a message whose jitter draw is
small still leaves after the one ahead of it, so on a busy link with jitter most messages wait for a slower
draw ahead. Independent draws per message (the simulator's legs) miss that wait: at lambda 60 on full-edge each
radio carries about 800 messages/s, several within one jitter deviation.

`FifoLinks` holds one set of link directions (ids: any int64, e.g. an antenna's radio uplink) across the
simulator's windows. `order(link, enter, due, horizon)` returns each message's due time made FIFO: the latest of
its own and of every message that entered the same link before it, this window's or an earlier one's. It keeps
only what a later call can still meet: messages that entered at or after `horizon` (the earliest time a later
call's messages can enter), and per link the latest due of those before it, while that is still after it.

The order is exact for every message that entered before its call's horizon. One that entered after it (an
answer still on its path at the end of a window, a message resent after a loss) is decided in its own call, so
a later call's message that entered the same link before it does not hold it back: it may leave up to that
message's draw earlier than a strict FIFO would let it (tests/test_sim_fifo_links.py bounds it). On the uplink
without losses this never happens (a later window's messages are sent after the window's end).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _entry_order(enter: np.ndarray) -> np.ndarray:
    """Returns the indices of `enter` in ascending order (ties in index order): a bucket sort over n buckets of
    equal width, then insertion within each (O(n) for the spread a window's messages have; -inf first)."""
    n = len(enter)
    order = np.empty(n, dtype=np.int64)
    lo, hi = np.inf, -np.inf
    for i in range(n):
        e = enter[i]
        if e > -np.inf:
            lo = min(lo, e)
            hi = max(hi, e)
    n_buckets = max(n, 1)
    width = (hi - lo) / n_buckets if hi > lo else 1.0
    bucket = np.empty(n, dtype=np.int64)
    start = np.zeros(n_buckets + 2, dtype=np.int64)
    for i in range(n):
        e = enter[i]
        k = 0 if e == -np.inf else 1 + min(int((e - lo) / width), n_buckets - 1)
        bucket[i] = k
        start[k + 1] += 1
    for k in range(n_buckets + 1):
        start[k + 1] += start[k]
    fill = start.copy()
    for i in range(n):
        k = bucket[i]
        j = fill[k]
        fill[k] += 1
        # insertion within the bucket: shift later entries right
        while j > start[k] and enter[order[j - 1]] > enter[i]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = i
    return order


@njit(cache=True)
def _fifo(link: np.ndarray, enter: np.ndarray, due: np.ndarray, order: np.ndarray, horizon_ms: float,
          out: np.ndarray, base_link: np.ndarray, base_due: np.ndarray) -> int:
    """Walks the entries in entry order (`order`), keeping per link the latest due so far (a hash table on the link
    id): `out` gets each entry's due made FIFO; `base_link`/`base_due` get, per link, the latest due of the entries
    entered before the horizon where it is after the horizon. Returns how many those are."""
    n = len(order)
    size = 16
    while size < 2 * n + 2:
        size *= 2
    mask = size - 1
    used = np.zeros(size, dtype=np.bool_)
    keys = np.empty(size, dtype=np.int64)
    vals = np.empty(size)
    n_base = -1
    for j in range(n + 1):
        if n_base < 0 and (j == n or enter[order[j]] >= horizon_ms):
            n_base = 0
            for h in range(size):
                if used[h] and vals[h] > horizon_ms:
                    base_link[n_base] = keys[h]
                    base_due[n_base] = vals[h]
                    n_base += 1
        if j == n:
            break
        i = order[j]
        key = link[i]
        h = ((key ^ (key >> 16)) * 0x45D9F3B) & mask
        while used[h] and keys[h] != key:
            h = (h + 1) & mask
        if not used[h]:
            used[h] = True
            keys[h] = key
            vals[h] = due[i]
        elif due[i] > vals[h]:
            vals[h] = due[i]
        out[i] = vals[h]
    return n_base


class FifoLinks:
    """The order kept by a set of link directions between calls (see the module docstring)."""

    def __init__(self) -> None:
        self.link = np.zeros(0, dtype=np.int64)
        self.enter_ms = np.zeros(0)
        self.due_ms = np.zeros(0)

    def order(self, link: np.ndarray, enter_ms: np.ndarray, due_ms: np.ndarray, horizon_ms: float) -> np.ndarray:
        """Returns `due_ms` made FIFO per link (messages that entered at the same time in the order given, carried
        ones first). A message with an infinite due (it met a link that is down) takes no part and keeps it. Every
        due must be at or after its entry, and every later call must give messages entering at or after
        `horizon_ms`."""
        given = due_ms
        ok = np.isfinite(due_ms)
        every = bool(ok.all())
        link = np.asarray(link, dtype=np.int64)
        if not every:
            link, enter_ms, due_ms = link[ok], enter_ms[ok], due_ms[ok]
        n_old = len(self.link)
        if n_old:
            link = np.concatenate([self.link, link])
            enter_ms = np.concatenate([self.enter_ms, enter_ms])
            due_ms = np.concatenate([self.due_ms, due_ms])
        n = len(link)
        fifo, base_link, base_due = np.empty(n), np.empty(n, dtype=np.int64), np.empty(n)
        n_base = _fifo(link, enter_ms, due_ms, _entry_order(enter_ms), horizon_ms, fifo, base_link, base_due)
        if every:
            out = fifo[n_old:]
        else:
            out = np.array(given, dtype=np.float64, copy=True)
            out[ok] = fifo[n_old:]
        if np.isfinite(horizon_ms):  # else no later call
            keep = enter_ms >= horizon_ms
            self.link = np.concatenate([base_link[:n_base], link[keep]])
            self.enter_ms = np.concatenate([np.full(n_base, -np.inf), enter_ms[keep]])
            self.due_ms = np.concatenate([base_due[:n_base], fifo[keep]])
        return out
