"""Links that keep order and send one message at a time: no message overtakes one that entered the same link
direction before it, and, given each message's transmission time, none starts sending before the one ahead of it
is sent.

A real link, and the testbed's wire (testbed/wire.py), is FIFO per direction: a message whose jitter draw is
small still leaves after the one ahead of it, so on a busy link with jitter most messages wait for a slower
draw ahead. Independent draws per message (the simulator's legs) miss that wait: at lambda 60 on full-edge each
radio carries about 800 messages/s, several within one jitter deviation. A link also sends at its rate: a message
that enters while the link is still sending earlier ones waits for them (`start = max(enter, free)`,
`free = start + transmission`), then takes its delay and jitter. At lambda 60 a 400 Mbit/s radio is over half
busy, and a 40 kB frame takes 0.8 ms to send.

`FifoLinks` holds one set of link directions (ids: any int64, e.g. an antenna's radio uplink) across the
simulator's windows. `order(link, enter, due, horizon, tx)` returns each message's due time shifted by its wait
for the link and made FIFO: the latest of its own and of every message that entered the same link before it,
this window's or an earlier one's. It keeps only what a later call can still meet: messages that entered at or
after `horizon` (the earliest time a later call's messages can enter), and per link when it is free again and the
latest due of those before it, while either is still after it.

The order is exact for every message that entered before its call's horizon. One that entered after it (an
answer still on its path at the end of a window, a message resent after a loss) is decided in its own call, so
a later call's message that entered the same link before it does not hold it back: it may leave earlier than a
strict FIFO would let it, by up to the transmissions of such messages and the latest of their draws
(tests/test_sim_fifo_links.py bounds it). On the uplink without losses this never happens (a later window's
messages are sent after the window's end).
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_SHIFTS_PER_ENTRY = 8
"""`entry_order` falls back to a merge sort past this many insertion shifts per entry."""


@njit(cache=True)
def entry_order(enter: np.ndarray) -> np.ndarray:
    """Returns the indices of `enter` in ascending order (ties in index order): a bucket sort over n buckets of
    equal width, then insertion within each (O(n) for the spread a window's messages have; -inf first), or, where
    the insertions pass MAX_SHIFTS_PER_ENTRY x n shifts (most keys in a few buckets, out of order), numba's merge
    sort (O(n log n)). `enter` must be finite or -inf. simulator.paths and
    simulator.batching call it from functions numba caches on disk, which do not see an edit here: after one,
    delete simulator/__pycache__/*.nbi and *.nbc."""
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
    shifts, budget = 0, MAX_SHIFTS_PER_ENTRY * n + 64
    for i in range(n):
        k = bucket[i]
        j = fill[k]
        fill[k] += 1
        # insertion within the bucket: shift later entries right
        while j > start[k] and enter[order[j - 1]] > enter[i]:
            order[j] = order[j - 1]
            j -= 1
            shifts += 1
        order[j] = i
        if shifts > budget:
            return np.argsort(enter, kind="mergesort")
    return order


@njit(cache=True)
def _fifo(link: np.ndarray, enter: np.ndarray, due: np.ndarray, tx: np.ndarray, order: np.ndarray,
          horizon_ms: float, in_link: np.ndarray, in_free: np.ndarray, in_due: np.ndarray, out: np.ndarray,
          base_link: np.ndarray, base_free: np.ndarray, base_due: np.ndarray) -> int:
    """Walks the entries in entry order (`order`), keeping per link (a hash table on the link id, starting from
    `in_*`) when it is free to send again and the latest due so far: each entry waits until the link is free,
    sends for its `tx`, and `out` gets its due shifted by that wait and made FIFO. `base_*` get, per link, those
    two as they stood when the walk reached the horizon, where either is after it. Returns how many those are."""
    n = len(order)
    size = 16
    while size < 2 * (n + len(in_link)) + 2:
        size *= 2
    mask = size - 1
    used = np.zeros(size, dtype=np.bool_)
    keys = np.empty(size, dtype=np.int64)
    frees = np.empty(size)
    dues = np.empty(size)
    for b in range(len(in_link) + n):
        j = b - len(in_link)
        key = in_link[b] if j < 0 else link[order[j]]
        h = ((key ^ (key >> 16)) * 0x45D9F3B) & mask
        while used[h] and keys[h] != key:
            h = (h + 1) & mask
        if not used[h]:
            used[h] = True
            keys[h] = key
            frees[h] = -np.inf
            dues[h] = -np.inf
        if j < 0:
            frees[h] = in_free[b]
            dues[h] = in_due[b]
    n_base = -1
    for j in range(n + 1):
        if n_base < 0 and (j == n or enter[order[j]] >= horizon_ms):
            n_base = 0
            for h in range(size):
                if used[h] and (dues[h] > horizon_ms or frees[h] > horizon_ms):
                    base_link[n_base] = keys[h]
                    base_free[n_base] = frees[h]
                    base_due[n_base] = dues[h]
                    n_base += 1
        if j == n:
            break
        i = order[j]
        key = link[i]
        h = ((key ^ (key >> 16)) * 0x45D9F3B) & mask
        while keys[h] != key:
            h = (h + 1) & mask
        wait = frees[h] - enter[i]
        if not wait > 0.0:  # nan too: an entry at -inf on a link still -inf
            wait = 0.0
        frees[h] = enter[i] + wait + tx[i]
        d = due[i] + wait
        if d > dues[h]:
            dues[h] = d
        out[i] = dues[h]
    return n_base


class FifoLinks:
    """The order kept by a set of link directions between calls (see the module docstring)."""

    def __init__(self) -> None:
        self.base_link = np.zeros(0, dtype=np.int64)
        """Links still sending or holding a message when the last call's walk reached its horizon: their ids,"""
        self.base_free_ms = np.zeros(0)
        """when each is free to send again,"""
        self.base_due_ms = np.zeros(0)
        """and the latest due on each."""
        self.link = np.zeros(0, dtype=np.int64)
        """Messages of earlier calls that entered at or after their horizon (walked again with the next call's)."""
        self.enter_ms = np.zeros(0)
        self.due_ms = np.zeros(0)
        self.tx_ms = np.zeros(0)

    def order(self, link: np.ndarray, enter_ms: np.ndarray, due_ms: np.ndarray, horizon_ms: float,
              tx_ms: np.ndarray | None = None) -> np.ndarray:
        """Returns `due_ms` (each message's due on an idle link: its entry, transmission, delay and jitter) made
        FIFO per link, each message first waiting while its link sends the ones before it for their `tx_ms`
        (None: no transmission queueing). Messages that entered at the same time go in the order given, carried
        ones first. A message with an infinite due (it met a link that is down) takes no part and keeps it. Every
        due must be at or after its entry plus its transmission, and every later call must give messages entering
        at or after `horizon_ms`."""
        given = due_ms
        ok = np.isfinite(due_ms)
        every = bool(ok.all())
        link = np.asarray(link, dtype=np.int64)
        tx_ms = np.zeros(len(link)) if tx_ms is None else np.broadcast_to(np.asarray(tx_ms, dtype=np.float64),
                                                                         (len(link),))
        if not every:
            link, enter_ms, due_ms, tx_ms = link[ok], enter_ms[ok], due_ms[ok], tx_ms[ok]
        n_old = len(self.link)
        if n_old:
            link = np.concatenate([self.link, link])
            enter_ms = np.concatenate([self.enter_ms, enter_ms])
            due_ms = np.concatenate([self.due_ms, due_ms])
            tx_ms = np.concatenate([self.tx_ms, tx_ms])
        n = len(link)
        fifo = np.empty(n)
        m = n + len(self.base_link)
        base_link, base_free, base_due = np.empty(m, dtype=np.int64), np.empty(m), np.empty(m)
        n_base = _fifo(link, enter_ms, due_ms, tx_ms, entry_order(enter_ms), horizon_ms, self.base_link,
                       self.base_free_ms, self.base_due_ms, fifo, base_link, base_free, base_due)
        if every:
            out = fifo[n_old:]
        else:
            out = np.array(given, dtype=np.float64, copy=True)
            out[ok] = fifo[n_old:]
        if np.isfinite(horizon_ms):  # else no later call
            keep = enter_ms >= horizon_ms
            self.base_link, self.base_free_ms, self.base_due_ms = base_link[:n_base], base_free[:n_base], \
                base_due[:n_base]
            self.link, self.enter_ms, self.due_ms, self.tx_ms = link[keep], enter_ms[keep], due_ms[keep], \
                tx_ms[keep]
        return out
