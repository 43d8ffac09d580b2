"""Calibration of the profiles from a testbed run: each variant's processing delay as the run measured it.

For every variant that answered queries in the run's log, the observed batch durations
(t_infer_end - t_infer_start) are compared with the profile's for the same batch size; the variant's
whole batch table is scaled by the median ratio. Variants the run did not use keep their figures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from scheduler.profiles import ProfileSet


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
