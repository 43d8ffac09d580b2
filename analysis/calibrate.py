"""Calibration from a testbed run: processing delays per variant and the software stack's own delay.

For every variant that answered queries in the run's log, the observed batch durations
(t_infer_end - t_infer_start) are compared with the profile's for the same batch size; the variant's
whole batch table is scaled by the median ratio. Variants the run did not use keep their figures.
The stack overhead is what the network stages took beyond the links' (measured) delays and
transmission: HTTP and the scheduler's relay, one constant per direction (medians).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from scheduler.profiles import ProfileSet
from scheduler.system import RESPONSE_BYTES, SystemModel
from workload.trace import Trace


def processing_scale(records: pa.Table, profiles: ProfileSet) -> dict[str, float]:
    """Returns measured/profiled processing time per variant name, from a run's per-query log."""
    served = np.asarray(records.column("outcome").to_pylist(), dtype=object) != "rejected"
    variant = np.asarray(records.column("variant").to_pylist(), dtype=object)[served]
    batch = np.asarray(records.column("batch_size"))[served]
    took = (np.asarray(records.column("t_infer_end_ms")) - np.asarray(records.column("t_infer_start_ms")))[served]
    scale: dict[str, float] = {}
    for name in sorted(set(variant.tolist())):
        v = profiles.variants.get(name)
        if v is None:
            continue
        m = (variant == name) & np.isfinite(took) & (batch >= 1) & (batch <= v.batch_size)
        if m.sum() == 0:
            continue
        predicted = np.asarray(v.batch_ms)[batch[m]]
        scale[name] = float(np.median(took[m] / predicted))
    return scale


def calibrated_profiles(profiles: ProfileSet, scale: dict[str, float]) -> ProfileSet:
    """Returns the profiles with each measured variant's batch table scaled by its ratio."""
    variants = dict(profiles.variants)
    for name, k in scale.items():
        v = variants[name]
        variants[name] = dataclasses.replace(
            v, batch_ms=tuple(x * k for x in v.batch_ms),
            source=f"{v.source}; calibrated x{k:.3f} from a testbed run's processing times")
    return dataclasses.replace(profiles, variants=variants, origin=f"{profiles.origin} (calibrated)")


def stack_overhead_ms(records: pa.Table, trace: Trace, system: SystemModel) -> tuple[float, float]:
    """Returns (up, down): median network-stage time beyond the system's link delays and transmission."""
    outcome = np.asarray(records.column("outcome").to_pylist(), dtype=object)
    served = outcome != "rejected"
    names = {r.name: r.index for r in system.resources}
    cluster = np.asarray(records.column("cluster").to_pylist(), dtype=object)[served]
    variant = np.asarray(records.column("variant").to_pylist(), dtype=object)[served]
    res = np.array([names.get(f"{v}@{c}", -1) for v, c in zip(variant, cluster, strict=True)], dtype=np.int64)
    ant = np.array([system.antenna_index(a) for a in
                    np.asarray(records.column("antenna").to_pylist(), dtype=object)[served]], dtype=np.int64)
    by_stream = dict(zip(trace.stream_id.tolist(), trace.frame_bytes.tolist(), strict=True))
    nbytes = np.array([by_stream.get(s, 0) for s in np.asarray(records.column("stream_id"))[served]], dtype=float)
    ok = res >= 0
    if not ok.any():
        return 0.0, 0.0
    res, ant, nbytes = res[ok], ant[ok], nbytes[ok]
    col = {c: np.asarray(records.column(c))[served][ok] for c in
           ("t_send_ms", "t_worker_ms", "t_infer_end_ms", "t_response_ms")}
    one_way = system.radio_ms[ant] + system.net_ms[ant, res]
    per_byte = system.radio_ms_per_byte[ant] + system.path_ms_per_byte[ant, res]
    up = (col["t_worker_ms"] - col["t_send_ms"]) - (one_way + per_byte * nbytes)
    down = (col["t_response_ms"] - col["t_infer_end_ms"]) - (one_way + per_byte * RESPONSE_BYTES)
    up, down = up[np.isfinite(up)], down[np.isfinite(down)]
    return (max(0.0, float(np.median(up))) if len(up) else 0.0,
            max(0.0, float(np.median(down))) if len(down) else 0.0)
