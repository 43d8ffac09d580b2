"""The profile file (YAML) that the profiler writes and the scheduler, the simulator and the
profile-driven worker read: per model its input size and accuracy, per (model, device) runtime its
measured batch latencies and per-MB input cost. Variants are runtime x batch size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROFILE_VERSION = 1


@dataclass(frozen=True)
class ModelProfile:
    task: str
    input_size: tuple[int, int] | None  # [height, width]
    accuracy: float
    accuracy_source: str


@dataclass(frozen=True)
class RuntimeProfile:
    model: str
    device: str
    threads: int
    cpu_cores: float
    gpus: int
    memory_mib: float
    batch_latency_ms: dict[int, float]
    batch_latency_p99_ms: dict[int, float]
    batch_latency_spread_ms: dict[int, float]
    input_ms_per_mb: float
    source: str

    def latency_ms(self, batch: int) -> float:
        """Returns the median delay of a batch of `batch` frames, linear between profiled sizes."""
        sizes = sorted(self.batch_latency_ms)
        if batch in self.batch_latency_ms:
            return self.batch_latency_ms[batch]
        lo = max([s for s in sizes if s < batch], default=sizes[0])
        hi = min([s for s in sizes if s > batch], default=sizes[-1])
        if lo == hi:  # outside the profiled range: scale the nearest size per frame
            return self.batch_latency_ms[lo] * batch / lo
        frac = (batch - lo) / (hi - lo)
        return self.batch_latency_ms[lo] + frac * (self.batch_latency_ms[hi] - self.batch_latency_ms[lo])

    def variant(self, batch: int) -> str:
        return f"{self.model}-{self.device}-b{batch}"


@dataclass(frozen=True)
class ProfileFile:
    version: int
    origin: str
    models: dict[str, ModelProfile]
    runtimes: tuple[RuntimeProfile, ...] = field(default=())
    capacity_frame_kb: float = 0.0
    """Nominal frame size whose input time the scheduler's declared capacities count (0: none; written only
    when set, see scheduler/profiles.py)."""

    def runtime(self, model: str, device: str) -> RuntimeProfile:
        for rt in self.runtimes:
            if rt.model == model and rt.device == device:
                return rt
        have = [(rt.model, rt.device) for rt in self.runtimes]
        raise KeyError(f"no runtime profile for model {model!r} on {device!r}; the file has {have}")


def _check_keys(cls: type, raw: dict, where: str) -> None:
    unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")


def read_profile(path: Path) -> ProfileFile:
    """Returns a profile file's content; unknown keys and bad versions are errors naming the file."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    _check_keys(ProfileFile, raw, str(path))
    if raw.get("version") != PROFILE_VERSION:
        raise ValueError(f"{path}: version {raw.get('version')!r}, expected {PROFILE_VERSION}")
    models = {}
    for name, m in (raw.get("models") or {}).items():
        _check_keys(ModelProfile, m, f"{path} models.{name}")
        size = tuple(m["input_size"]) if m.get("input_size") else None
        models[name] = ModelProfile(m["task"], size, float(m["accuracy"]), m.get("accuracy_source", ""))
    runtimes = []
    for i, r in enumerate(raw.get("runtimes") or []):
        _check_keys(RuntimeProfile, r, f"{path} runtimes[{i}]")
        tables = {k: {int(n): float(v) for n, v in (r.get(k) or {}).items()}
                  for k in ("batch_latency_ms", "batch_latency_p99_ms", "batch_latency_spread_ms")}
        runtimes.append(RuntimeProfile(
            model=r["model"], device=r["device"], threads=int(r.get("threads", 1)),
            cpu_cores=float(r.get("cpu_cores", 1.0)), gpus=int(r.get("gpus", 0)),
            memory_mib=float(r.get("memory_mib", 0.0)), input_ms_per_mb=float(r.get("input_ms_per_mb", 0.0)),
            source=r.get("source", ""), **tables))
    return ProfileFile(raw["version"], raw.get("origin", ""), models, tuple(runtimes),
                       float(raw.get("capacity_frame_kb", 0.0)))


def _runtime_dict(rt: RuntimeProfile) -> dict:
    """Returns one runtime entry, latency tables rounded to µs; an empty optional table is left out."""
    data = dataclasses.asdict(rt)
    for key in ("batch_latency_ms", "batch_latency_p99_ms", "batch_latency_spread_ms"):
        data[key] = {int(n): round(float(v), 3) for n, v in getattr(rt, key).items()}
        if not data[key] and key != "batch_latency_ms":
            del data[key]
    return data


def write_profile(profile: ProfileFile, path: Path) -> None:
    """Writes the profile file in the schema above (flow-style latency tables, one runtime a block)."""
    data = {
        "version": profile.version,
        "origin": profile.origin,
        "models": {name: {"task": m.task, "input_size": list(m.input_size), "accuracy": m.accuracy,
                          "accuracy_source": m.accuracy_source} for name, m in profile.models.items()},
        "runtimes": [_runtime_dict(rt) for rt in profile.runtimes],
    }
    if profile.capacity_frame_kb:
        data["capacity_frame_kb"] = profile.capacity_frame_kb
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=200)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
