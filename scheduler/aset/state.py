"""ASET's state: the features of one decision window and the stack of the last K windows.

Owns the encoding only: it is pure numpy (no torch), so the simulator's Gymnasium environment and the live
schedulers build the very same observation from their own measurements of a window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from scheduler.system import SystemModel
from scheduler.window import N_CLASSES, WindowMeasurement, as_vector

FEATURE_CLIP = 10.0
"""Every feature is clipped to [0, FEATURE_CLIP]: the observation space is a bounded Box."""
NOMINAL_FRAME_BYTES = 50_000.0
"""Scale of the input-size load: bytes per second are divided by capacity_qps * this."""
NOMINAL_FPS = 15.0
"""Scale of the streams served: streams are divided by capacity_qps / this (streams at capacity)."""
NEW_STREAMS_PER_MIN_SCALE = 100.0
"""Scale of the stream-arrival rate feature, per antenna (lambda = 100 clients/min reads 1.0)."""
PER_RESOURCE = ("streams", "responses_per_s", "input_load", "declared_load")
GLOBAL = ("success", "failed", "rejected", "streams_rejected_share", "new_streams_rate")


@dataclass(frozen=True)
class StateSpec:
    """The shape and the normalisation of the state for one system: what a checkpoint must match."""

    topology: str
    n_resources: int
    n_classes: int
    n_antennas: int
    history: int
    capacity_qps: tuple[float, ...]
    resource_names: tuple[str, ...] = ()
    """`variant@site` of each resource, in state order."""
    profiles: str = ""
    """The profile file the capacities come from."""
    load_accounting: str = "rate"
    """The profile's `load_accounting`: what `declared_load` (load over capacity) means; `rate`, each stream
    weighs its frame rate; `input-time`, its frame rate times its input-size weight eta (the busy fraction)."""

    @property
    def n_features(self) -> int:
        return len(PER_RESOURCE) * self.n_resources + self.n_classes + len(GLOBAL)

    @property
    def shape(self) -> tuple[int, int]:
        """(K windows, features per window)."""
        return (self.history, self.n_features)

    @staticmethod
    def of(system: SystemModel, history: int, n_classes: int = N_CLASSES) -> StateSpec:
        return StateSpec(topology=system.topology.name, n_resources=system.n_resources, n_classes=n_classes,
                         n_antennas=len(system.antennas), history=history,
                         capacity_qps=tuple(float(c) for c in system.capacity_qps),
                         resource_names=tuple(r.name for r in system.resources), profiles=str(system.profiles.source),
                         load_accounting=system.profiles.load_accounting)

    def feature_names(self) -> list[str]:
        names = [f"{f}[{r}]" for f in PER_RESOURCE for r in range(self.n_resources)]
        names += [f"incoming_qps_class[{c}]" for c in range(self.n_classes)]
        return names + list(GLOBAL)


def encode_window(spec: StateSpec, m: WindowMeasurement) -> np.ndarray:
    """Returns the features of one window (float32, clipped to [0, FEATURE_CLIP])."""
    cap = np.asarray(spec.capacity_qps)
    dur = max(m.duration_s, 1e-9)
    n = spec.n_resources
    decided = max(m.decided, 1)
    parts = [
        as_vector(m.streams, n) / np.maximum(cap / NOMINAL_FPS, 1.0),
        as_vector(m.responses, n) / dur / cap,
        as_vector(m.bytes_in, n) / dur / (cap * NOMINAL_FRAME_BYTES),
        as_vector(m.load_qps, n) / cap,
        np.asarray(m.sent_per_class, dtype=np.float64) / dur / cap.sum(),
        np.array([m.ontime / decided if m.decided else 1.0, m.failed / decided, m.rejected / decided,
                  m.streams_rejected / max(m.streams_new, 1),
                  m.streams_new / dur * 60.0 / max(spec.n_antennas, 1) / NEW_STREAMS_PER_MIN_SCALE]),
    ]
    out = np.concatenate(parts)
    if out.shape != (spec.n_features,):
        raise ValueError(f"window features have shape {out.shape}, the state spec expects ({spec.n_features},): "
                         f"{n} resources and {spec.n_classes} stream classes")
    return np.clip(out, 0.0, FEATURE_CLIP).astype(np.float32)


@dataclass
class StateBuilder:
    """Keeps the last K encoded windows; `observation()` is the [K, features] stack, oldest first.

    Before K windows have been pushed, the missing older rows are zeros (the system was idle before it
    started), so the agent decides from the first window on.
    """

    spec: StateSpec
    _rows: deque = field(init=False)

    def __post_init__(self) -> None:
        self._rows = deque(maxlen=self.spec.history)
        self.reset()

    def reset(self) -> None:
        self._rows.clear()

    def push(self, m: WindowMeasurement) -> np.ndarray:
        """Adds one decision window's measurement and returns the new observation."""
        self._rows.append(encode_window(self.spec, m))
        return self.observation()

    def observation(self) -> np.ndarray:
        k, f = self.spec.shape
        if not self._rows:
            return np.zeros((k, f), dtype=np.float32)
        out = np.zeros((k, f), dtype=np.float32)
        out[k - len(self._rows):] = np.stack(list(self._rows))
        return out
