"""Queueing and dynamic batching at the workers, compiled with numba: the simulator's inner loop.

Model (the same the real worker implements): one batch forms at a time. The earliest-free replica takes
the oldest queued query at s0 = max(replica free, its arrival, previous batch closed); the batch takes
queued queries, then arrivals, until it holds B or W ms have passed since s0, and closes at s1; it runs
for batch_ms[n] + input_ms_per_byte * bytes. A query arriving when `queue_limit` queries wait is rejected.
tests/test_batching_agreement.py checks that the worker's batcher (workers/batching.py) forms the same batches
at the same times, and names the two exact ties where the two differ.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simulator.links import entry_order

PENDING_NEW, PENDING_ADMITTED, DONE, REJECTED_FULL = 0, 1, 2, 3


@njit(cache=True)
def serve_window(seg: np.ndarray, t_arr: np.ndarray, nbytes: np.ndarray, admitted: np.ndarray,
                 replicas: np.ndarray, batch: np.ndarray, batch_ms: np.ndarray, input_ms_per_byte: np.ndarray,
                 max_wait_ms: float, queue_limit: np.ndarray, free: np.ndarray, last_close: np.ndarray,
                 horizon_ms: float, out_start: np.ndarray, out_end: np.ndarray, out_batch: np.ndarray,
                 status: np.ndarray) -> None:
    """Serves the queries of every resource up to `horizon_ms`, in place.

    Queries are sorted by resource, then arrival; resource r owns [seg[r], seg[r+1]). `free` [R, K] and
    `last_close` [R] carry each worker's state between calls. Queries that cannot be decided before the
    horizon keep status PENDING_NEW (not yet admitted) or PENDING_ADMITTED (waiting in the queue).
    """
    n_res = len(seg) - 1
    acc = np.empty(len(t_arr), dtype=np.int64)
    for r in range(n_res):
        a, b = seg[r], seg[r + 1]
        if a == b:
            continue
        big_b, k_rep = batch[r], replicas[r]
        qh = a
        qt = a
        i = a
        while i < b and admitted[i]:
            acc[qt] = i
            qt += 1
            i += 1
        while True:
            if qh == qt:
                if i >= b:
                    break
                acc[qt] = i
                qt += 1
                i += 1
            head_t = t_arr[acc[qh]]
            k = 0
            for j in range(1, k_rep):
                if free[r, j] < free[r, k]:
                    k = j
            s0 = max(free[r, k], head_t, last_close[r])
            while i < b and t_arr[i] <= s0:
                if qt - qh >= queue_limit[r]:
                    status[i] = REJECTED_FULL
                else:
                    acc[qt] = i
                    qt += 1
                i += 1
            if s0 >= horizon_ms:
                break
            n = min(big_b, qt - qh)
            save_i, save_qt = i, qt
            s1 = s0
            if n < big_b and max_wait_ms > 0:
                deadline = s0 + max_wait_ms
                while n < big_b and i < b and t_arr[i] <= deadline:
                    acc[qt] = i
                    qt += 1
                    i += 1
                    n += 1
                if n == big_b:
                    s1 = t_arr[acc[qt - 1]]
                else:
                    s1 = deadline
                    if i >= b and deadline >= horizon_ms:
                        i, qt = save_i, save_qt  # more arrivals may still join: decide next window
                        break
            total_bytes = 0.0
            for j in range(qh, qh + n):
                total_bytes += nbytes[acc[j]]
            end = s1 + batch_ms[r, n] + input_ms_per_byte[r] * total_bytes
            for j in range(qh, qh + n):
                q = acc[j]
                out_start[q] = s1
                out_end[q] = end
                out_batch[q] = n
                status[q] = DONE
            qh += n
            free[r, k] = end
            last_close[r] = s1
        for j in range(qh, qt):
            status[acc[j]] = PENDING_ADMITTED
        for j in range(i, b):
            if status[j] != REJECTED_FULL:
                status[j] = PENDING_NEW


@njit(cache=True)
def serve_order(res: np.ndarray, t_arr: np.ndarray, admitted: np.ndarray, n_res: int) -> np.ndarray:
    """Returns the order `serve_window` takes a window's queries in: by resource, then arrival, then admitted
    before new (`np.lexsort((~admitted, t_arr, res))`, ties in the order given), in linear time: the admitted
    first, a stable bucket sort on arrival (`entry_order`), a stable counting sort on the resource. Arrivals
    finite, resources in [0, n_res)."""
    n = len(res)
    first = np.empty(n, np.int64)
    j = 0
    for pass_admitted in (True, False):
        for i in range(n):
            if admitted[i] == pass_admitted:
                first[j] = i
                j += 1
    by_time = first[entry_order(t_arr[first])]
    fill = np.zeros(n_res + 1, np.int64)
    for i in range(n):
        fill[res[i] + 1] += 1
    for r in range(n_res):
        fill[r + 1] += fill[r]
    out = np.empty(n, np.int64)
    for i in by_time:
        out[fill[res[i]]] = i
        fill[res[i]] += 1
    return out
