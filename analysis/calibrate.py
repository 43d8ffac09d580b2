"""Calibration from a testbed run: processing delays per variant and the software stack's own delay.

For every variant that answered queries in the run's log, the observed batch durations
(t_infer_end - t_infer_start) are compared with what the profile plans for the same batch (its size's latency
and its frames' input time); the variant's processing is scaled by the median ratio. Variants the run did not
use keep their figures. The stack overhead is what the testbed's network stages took beyond the simulator's
for the same queries, the simulator run with the measured links and processing times: HTTP and the
scheduler's relay, one constant per direction (medians).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis.pairing import query_keys
from scheduler.profiles import ProfileSet
from workload.trace import Trace


def processing_scale(records: pa.Table, profiles: ProfileSet, trace: Trace) -> dict[str, float]:
    """Returns measured/planned processing time per variant name, from a run's per-query log: each whole batch
    (the queries one worker started and ended together, as many as its logged size) against what the profile plans
    for it, its size's batch latency plus its frames' input time (their bytes from `trace`); the median ratio.
    A batch's rows carry the same start and end only where one clock stamped them: on a run across servers,
    a batch holding frames relayed by schedulers on different servers does not group, and is left out."""
    served = np.asarray(records.column("outcome").to_pylist(), dtype=object) != "rejected"
    variant = np.asarray(records.column("variant").to_pylist(), dtype=str)[served]
    cluster = np.asarray(records.column("cluster").to_pylist(), dtype=str)[served]
    batch = np.asarray(records.column("batch_size"))[served]
    start = np.asarray(records.column("t_infer_start_ms").to_numpy(zero_copy_only=False), dtype=float)[served]
    end = np.asarray(records.column("t_infer_end_ms").to_numpy(zero_copy_only=False), dtype=float)[served]
    by_stream = dict(zip(trace.stream_id.tolist(), trace.frame_bytes.tolist(), strict=True))
    nbytes = np.array([by_stream.get(s, np.nan) for s in np.asarray(records.column("stream_id"))[served].tolist()],
                      dtype=float)
    ok = np.isfinite(start) & np.isfinite(end)
    _, first, which, size = np.unique(np.char.add(np.char.add(variant, "@"), np.char.add(np.char.add(cluster, "@"),
                                      np.char.add(start.astype(str), np.char.add("@", end.astype(str))))),
                                      return_index=True, return_inverse=True, return_counts=True)
    batch_bytes = np.bincount(which, weights=np.where(ok, nbytes, np.nan))[which]
    scale: dict[str, float] = {}
    for name in sorted(set(variant.tolist())):
        v = profiles.variants.get(name)
        if v is None:
            continue
        whole = np.zeros(len(variant), dtype=bool)
        whole[first] = True  # one row per batch
        m = (whole & (variant == name) & ok & (batch >= 1) & (batch <= v.batch_size) & (size[which] == batch)
             & np.isfinite(batch_bytes))
        if m.sum() == 0:
            continue
        planned = np.asarray(v.batch_ms)[batch[m]] + v.input_ms_per_mb * batch_bytes[m] / 1e6
        scale[name] = float(np.median((end[m] - start[m]) / planned))
    return scale


def calibrated_profiles(profiles: ProfileSet, scale: dict[str, float]) -> ProfileSet:
    """Returns the profiles with each measured variant's processing (batch table and input time) scaled by its
    ratio."""
    variants = dict(profiles.variants)
    for name, k in scale.items():
        v = variants[name]
        variants[name] = dataclasses.replace(
            v, batch_ms=tuple(x * k for x in v.batch_ms), input_ms_per_mb=v.input_ms_per_mb * k,
            capacity_input_ms=v.capacity_input_ms * k,
            source=f"{v.source}; calibrated x{k:.3f} from a testbed run's processing times")
    return dataclasses.replace(profiles, variants=variants, origin=f"{profiles.origin} (calibrated)")


@dataclass(frozen=True)
class StackOverhead:
    """The software stack's own delay per direction (ms) and how many queries it was taken over."""

    up_ms: float
    down_ms: float
    queries: int
    """Queries served by the same worker in both logs (0: none, and both delays 0)."""


def stack_overhead(records: pa.Table, simulated: pa.Table) -> StackOverhead:
    """Returns the stack overhead: for each query served by the same worker in the testbed run (`records`) and
    in the simulator's run of the same trace with the measured links and processing times and no overhead
    (`simulated`), what the testbed's network stage (send to worker; inference end to answer) took beyond the
    simulator's; the median per direction, at least 0. The waits the simulator models (a frame behind a slower
    draw on a FIFO link, behind other frames' bytes on a radio) are on both sides and cancel: what remains is
    the software stack's own delay."""
    tb, sim = _network_stages(records), _network_stages(simulated)
    _, i, j = np.intersect1d(tb[0], sim[0], return_indices=True)  # a key logged twice: its first row
    same = tb[1][i] == sim[1][j]
    medians = []
    for k in (2, 3):
        gap = tb[k][i][same] - sim[k][j][same]
        gap = gap[np.isfinite(gap)]
        medians.append(max(0.0, float(np.median(gap))) if len(gap) else 0.0)
    return StackOverhead(medians[0], medians[1], int(same.sum()))


def _network_stages(records: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (key, worker, up, down) of a log's served queries: query_keys, "variant@cluster", the time from
    send to the worker having the frame and from the inference's end to the answer (ms; NaN where missing)."""
    served = np.asarray(records.column("outcome").to_pylist(), dtype=object) != "rejected"
    col = {c: np.asarray(records.column(c).to_numpy(zero_copy_only=False), dtype=float)[served] for c in
           ("t_send_ms", "t_worker_ms", "t_infer_end_ms", "t_response_ms")}
    worker = np.char.add(np.char.add(np.asarray(records.column("variant").to_pylist(), dtype=str)[served], "@"),
                         np.asarray(records.column("cluster").to_pylist(), dtype=str)[served])
    keys = query_keys(np.asarray(records.column("stream_id"))[served], np.asarray(records.column("query"))[served])
    return (keys, worker, col["t_worker_ms"] - col["t_send_ms"], col["t_response_ms"] - col["t_infer_end_ms"])
