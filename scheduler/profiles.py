"""Model-variant profiles: processing delay per batch, capacity, resources and accuracy, with sources.

Reads the profile file (see README, "Profile file"); a variant is one runtime (model on a device) at
one batch size, named `{model}-{device}-b{n}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topologies.loader import load_yaml_strict

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PROVISIONAL_PROFILE = PROFILE_DIR / "provisional.yaml"
MEASURED_PROFILE = PROFILE_DIR / "measured.yaml"

_TOP_KEYS = {"version", "origin", "models", "runtimes", "capacity_frame_kb"}
_MODEL_KEYS = {"task", "input_size", "accuracy", "accuracy_source"}
_RUNTIME_KEYS = {"model", "device", "threads", "cpu_cores", "gpus", "memory_mib", "batch_latency_ms",
                 "batch_latency_p99_ms", "batch_latency_spread_ms", "input_ms_per_mb", "source"}
DEVICES = ("cpu", "gpu")


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file, the key and the value at fault."""


@dataclass(frozen=True)
class ModelInfo:
    """What the scheduler knows of one model: its task and accuracy, and where the accuracy comes from."""

    name: str
    task: str
    input_size: tuple[int, int]
    accuracy: float
    accuracy_source: str


@dataclass(frozen=True)
class Variant:
    """One model on one device at one maximum batch size; figures are per replica."""

    name: str
    model: str
    task: str
    device: str
    batch_size: int
    threads: int
    cpu_cores: float
    gpus: int
    memory_mib: float
    batch_ms: tuple[float, ...]
    """batch_ms[n]: processing delay of a batch of n frames (n = 0..batch_size; batch_ms[0] = 0)."""
    input_ms_per_mb: float
    accuracy: float
    source: str
    capacity_input_ms: float = 0.0
    """Input time per query that the declared capacity counts: `input_ms_per_mb` x the profile file's
    `capacity_frame_kb` (0, the default: the capacity counts the batch latency alone)."""

    @property
    def capacity_qps(self) -> float:
        """C_v of one replica: full batches back to back, each with its frames' input time as the profile
        declares it (`capacity_input_ms` per query), in queries per second."""
        b = self.batch_size
        return b / (self.batch_ms[b] + b * self.capacity_input_ms) * 1000.0

    def processing_ms(self, frame_bytes: float) -> float:
        """D_v(zeta): worst-case processing delay of a query, in a full batch of frames of this size."""
        return self.batch_ms[self.batch_size] + self.batch_size * self.input_ms_per_mb * frame_bytes / 1e6


@dataclass(frozen=True)
class ProfileSet:
    """All models and variants of one profile file."""

    source: str
    origin: str
    models: dict[str, ModelInfo]
    variants: dict[str, Variant]
    capacity_frame_kb: float = 0.0
    """Nominal frame size whose input time the declared capacities count (0: none)."""

    def variant(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise ProfileError(f"{self.source}: no variant {name!r}; known: {', '.join(sorted(self.variants))}") from None


def default_profile_path() -> Path:
    """Returns the measured profile when `run_testbed.py profile` has written one, else the provisional one."""
    return MEASURED_PROFILE if MEASURED_PROFILE.exists() else PROVISIONAL_PROFILE


def write_scaled_profile(src: str | Path | None, factor: float, dst: Path) -> Path:
    """Writes a copy of profile file `src` (default: as load_profiles) whose every batch latency is
    `factor` times the original: a slower system, e.g. to reach the loads where policies differ with
    as few queries as a small testbed carries. Returns `dst`; raises ProfileError on a bad file or factor."""
    import yaml

    path = Path(src) if src is not None else default_profile_path()
    if not (np.isfinite(factor) and factor > 0):
        raise ProfileError(f"profile scale {factor!r}: must be a finite number > 0")
    load_profiles(path)  # the copy is only as good as its source
    doc = load_yaml_strict(path, ProfileError)
    doc["origin"] = f"{doc.get('origin', path.name)}; every batch latency x{factor:g} ({path.name})"
    for r in doc["runtimes"]:
        for key in ("batch_latency_ms", "batch_latency_p99_ms"):
            if key in r:
                r[key] = {b: float(ms) * factor for b, ms in r[key].items()}
        r["source"] = f"x{factor:g}: {r.get('source', '')}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def _fail(path: Path, where: str, message: str) -> ProfileError:
    return ProfileError(f"{path}: {where}: {message}")


def _check_keys(path: Path, value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected a mapping, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(path, where, f"missing required key {missing[0]!r}")
    return value


def _positive(path: Path, value: Any, where: str, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0 \
            or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise _fail(path, where, f"{value!r} must be a finite number {bound}")
    return float(value)


def _batch_table(path: Path, raw: Any, where: str) -> tuple[float, ...]:
    """Returns batch_ms[0..max n], interpolating linearly between the batch sizes the file gives."""
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, where, "expected a mapping {batch size: milliseconds}")
    points: dict[int, float] = {}
    for n, ms in raw.items():
        if not isinstance(n, int) or n < 1:
            raise _fail(path, f"{where}.{n}", "batch sizes must be whole numbers >= 1")
        points[n] = _positive(path, ms, f"{where}.{n}", allow_zero=False)
    sizes = sorted(points)
    for small, big in zip(sizes, sizes[1:], strict=False):
        if points[big] < points[small]:
            raise _fail(path, f"{where}.{big}", f"a batch of {big} ({points[big]} ms) cannot take less "
                                                 f"than a batch of {small} ({points[small]} ms)")
    table = np.interp(np.arange(1, sizes[-1] + 1), sizes, [points[n] for n in sizes])
    # Below the smallest measured size, scale down linearly towards zero frames.
    table[: sizes[0] - 1] = points[sizes[0]] * np.arange(1, sizes[0]) / sizes[0]
    return (0.0, *(float(x) for x in table))


def load_profiles(path: str | Path | None = None) -> ProfileSet:
    """Returns the profiles in a file (default: measured if present, else provisional); raises ProfileError."""
    path = Path(path) if path is not None else default_profile_path()
    doc = _check_keys(path, load_yaml_strict(path, ProfileError), "(top level)", _TOP_KEYS,
                      {"version", "models", "runtimes"})
    if doc["version"] != 1:
        raise _fail(path, "version", f"{doc['version']!r} is not a supported version (1)")
    models: dict[str, ModelInfo] = {}
    if not isinstance(doc["models"], dict) or not doc["models"]:
        raise _fail(path, "models", "expected a non-empty mapping of model name to model entry")
    for name, raw in doc["models"].items():
        where = f"models.{name}"
        m = _check_keys(path, raw, where, _MODEL_KEYS, {"task", "accuracy", "accuracy_source"})
        acc = _positive(path, m["accuracy"], f"{where}.accuracy")
        if acc > 1:
            raise _fail(path, f"{where}.accuracy", f"{acc!r} must be a fraction between 0 and 1")
        size = m.get("input_size", [0, 0])
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x >= 0 for x in size)):
            raise _fail(path, f"{where}.input_size", f"{size!r} must be [height, width] in pixels")
        models[name] = ModelInfo(name=name, task=str(m["task"]), input_size=(int(size[0]), int(size[1])),
                                 accuracy=acc, accuracy_source=str(m["accuracy_source"]))
    if not isinstance(doc["runtimes"], list) or not doc["runtimes"]:
        raise _fail(path, "runtimes", "expected a non-empty list of runtime entries")
    frame_kb = _positive(path, doc.get("capacity_frame_kb", 0.0), "capacity_frame_kb")
    variants: dict[str, Variant] = {}
    for i, raw in enumerate(doc["runtimes"]):
        where = f"runtimes[{i}]"
        r = _check_keys(path, raw, where, _RUNTIME_KEYS, {"model", "device", "batch_latency_ms", "source"})
        if r["model"] not in models:
            raise _fail(path, f"{where}.model", f"{r['model']!r} is not in 'models'")
        if r["device"] not in DEVICES:
            raise _fail(path, f"{where}.device", f"{r['device']!r} is not one of {', '.join(DEVICES)}")
        table = _batch_table(path, r["batch_latency_ms"], f"{where}.batch_latency_ms")
        model = models[r["model"]]
        for n in (int(k) for k in r["batch_latency_ms"]):
            name = f"{model.name}-{r['device']}-b{n}"
            if name in variants:
                raise _fail(path, where, f"variant {name!r} is defined twice")
            in_mb = _positive(path, r.get("input_ms_per_mb", 0.0), f"{where}.input_ms_per_mb")
            variants[name] = Variant(
                name=name, model=model.name, task=model.task, device=r["device"], batch_size=n,
                threads=int(_positive(path, r.get("threads", 1), f"{where}.threads")),
                cpu_cores=_positive(path, r.get("cpu_cores", 1.0), f"{where}.cpu_cores"),
                gpus=int(_positive(path, r.get("gpus", 1 if r["device"] == "gpu" else 0), f"{where}.gpus")),
                memory_mib=_positive(path, r.get("memory_mib", 0.0), f"{where}.memory_mib"),
                batch_ms=table[: n + 1],
                input_ms_per_mb=in_mb, accuracy=model.accuracy, source=str(r["source"]),
                capacity_input_ms=in_mb * frame_kb / 1000.0,
            )
    return ProfileSet(source=str(path), origin=str(doc.get("origin", "")), models=models, variants=variants,
                      capacity_frame_kb=frame_kb)
