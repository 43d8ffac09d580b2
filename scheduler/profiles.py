"""Model-variant profiles: the profile file format, read and written here only, and what the scheduler takes
from it: per variant (one runtime, a model on a device, at one batch size, named `{model}-{device}-b{n}`)
the processing delay per batch, capacity, resources and accuracy, each with its source.

The file's schema is `ProfileDocument` (pydantic, published as docs/schemas/profile.schema.json);
`read_profile`/`write_profile` give and take the file as records (`ProfileFile`), which the profiler and
the profile-driven worker use; `load_profiles` derives the scheduler's variants (`ProfileSet`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import AfterValidator, Field, WithJsonSchema

from topologies.strict import (
    Fraction,
    NonNegative,
    Positive,
    StrictModel,
    WholeNumber,
    at_key,
    derived,
    load_yaml,
    validate,
)

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = PROFILE_DIR / "default.yaml"
"""The committed measured profile every command uses unless given --profiles; only a reviewed commit changes it."""
PROVISIONAL_PROFILE = PROFILE_DIR / "provisional.yaml"
"""Literature estimates, kept for comparison: `--profiles provisional`."""
LOCAL_PROFILE = PROFILE_DIR / "measured-local.yaml"
"""Where `run_testbed.py profile` writes by default; read only when asked: `--profiles measured-local`."""
PROFILES_OPTION_HELP = ("profile file, or the name of one in scheduler/profiles/: provisional (literature estimates), "
                        "measured-local (what `run_testbed.py profile` wrote) (default: the committed measured "
                        "scheduler/profiles/default.yaml)")
"""The help of every command's --profiles option: what `resolve_profile_path` accepts."""
PROFILE_VERSION = 1
SCHEMA_FILE = "profile.schema.json"
"""Its JSON Schema, under docs/schemas/."""
DEVICES = ("cpu", "gpu")
RATE, INPUT_TIME = "rate", "input-time"
LOAD_ACCOUNTINGS = (RATE, INPUT_TIME)
"""How a profile measures load (its `load_accounting` key; docs/concepts.md#load-and-capacity):
`rate`, a stream loads any variant by its frame rate (eta = 1) and a capacity counts the batch latency plus the
input time of `capacity_frame_kb`; `input-time`, the paper's, load is in queries per second of the nominal frame
(`capacity_frame_kb`): a query weighs its full-batch busy time relative to the nominal frame's."""
_TABLES = ("batch_latency_ms", "batch_latency_p99_ms", "batch_latency_spread_ms")


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file, the key and the value at fault."""


# --- the file's schema -------------------------------------------------------------------------------------

def _version(value: int) -> int:
    if value != PROFILE_VERSION:
        raise ValueError(f"is not a supported version ({PROFILE_VERSION})")
    return value


def _batch_size(value: int) -> int:
    if value < 1:
        raise ValueError("is not a batch size (a whole number >= 1)")
    return value


def _height_width(value: list[int]) -> list[int]:
    if len(value) != 2:
        raise ValueError("must be [height, width] in pixels")
    return value


BatchSize = Annotated[int, AfterValidator(_batch_size)]
HeightWidth = Annotated[list[WholeNumber], AfterValidator(_height_width),
                        WithJsonSchema({"type": "array", "items": {"type": "integer", "minimum": 0},
                                        "minItems": 2, "maxItems": 2})]
_BATCH_KEYS = {"propertyNames": {"pattern": "^[1-9][0-9]*$"}}


class ModelEntry(StrictModel):
    """What the scheduler knows of one model: its task, input size and accuracy, with the accuracy's source."""

    task: str = Field(description="the task the model serves, e.g. object-detection")
    input_size: HeightWidth = derived("[height, width] of the network's input in pixels")
    accuracy: Fraction = Field(description="accuracy as a fraction (COCO AP50 for detectors)")
    accuracy_source: str = Field(description="where the accuracy figure comes from")


class RuntimeEntry(StrictModel):
    """One model on one device, measured at some batch sizes; figures are per replica."""

    model: str = Field(description="a key of 'models'")
    device: Literal["cpu", "gpu"]
    threads: WholeNumber = Field(1, description="intra-op threads of one replica")
    cpu_cores: NonNegative = Field(1.0, description="CPU cores one replica takes")
    gpus: WholeNumber = derived("GPUs one replica takes (default: 1 on gpu, 0 on cpu)")
    memory_mib: NonNegative = Field(0.0, description="memory one replica takes, MiB")
    batch_latency_ms: dict[BatchSize, Positive] = Field(
        min_length=1, json_schema_extra=_BATCH_KEYS,
        description="median processing delay per batch size, ms (linear between the sizes given)")
    batch_latency_p99_ms: dict[BatchSize, NonNegative] = Field(
        default_factory=dict, json_schema_extra=_BATCH_KEYS, description="99th percentile per batch size, ms")
    batch_latency_spread_ms: dict[BatchSize, NonNegative] = Field(
        default_factory=dict, json_schema_extra=_BATCH_KEYS,
        description="standard deviation of the per-run medians per batch size, ms")
    input_ms_per_mb: NonNegative = Field(0.0, description="preparing a frame's input: ms per MB of frame")
    input_ms_per_frame: NonNegative = Field(
        0.0, description="preparing a frame's input and its answer: fixed ms per frame beside input_ms_per_mb "
                         "(decoder set-up, resize, colour conversion, post-processing; 0: older profiles)")
    source: str = Field(description="where the figures come from (measured how, or estimated)")


class ProfileDocument(StrictModel):
    """A profile file: the models and their measured runtimes; variants are runtime x batch size."""

    version: Annotated[int, AfterValidator(_version), WithJsonSchema({"const": PROFILE_VERSION})]
    origin: str = Field("", description="where the file comes from")
    models: dict[str, ModelEntry] = Field(min_length=1)
    runtimes: list[RuntimeEntry] = Field(min_length=1)
    capacity_frame_kb: NonNegative = Field(
        0.0, description="nominal frame size (kB) whose input time the declared capacities count (0: none); "
                         "with load_accounting input-time, the frame load is measured in (> 0)")
    load_accounting: Literal["rate", "input-time"] = Field(
        RATE, description="rate: a stream loads a variant by its frame rate (the default; older profiles); "
                          "input-time: by its frame rate times its frames' full-batch busy time relative to the "
                          "nominal frame's (the paper's load normalised on input size)")


# --- the file as records (profiler, profile-driven worker) ------------------------------------------------

@dataclass(frozen=True)
class ModelProfile:
    """One model of a profile: its task, input size, accuracy and where the accuracy comes from."""

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
    input_ms_per_frame: float = 0.0
    """Fixed input cost of a frame, whatever its size (decoder set-up, resize, colour conversion, post-processing;
    0 in older profiles)."""

    def input_ms(self, frame_bytes: float) -> float:
        """Returns the input cost of one frame of `frame_bytes`: the fixed per-frame term plus the per-MB one."""
        return self.input_ms_per_frame + self.input_ms_per_mb * frame_bytes / 1e6

    def planned_batch_ms(self, size: int, frames_bytes: float) -> float:
        """Returns what a batch of `size` frames of `frames_bytes` together should take by this profile: the
        batch latency of its size plus its frames' input cost. The one planned time: the profile-driven worker
        sleeps it and the fidelity verdict measures real batches against it."""
        return self.latency_ms(size) + size * self.input_ms_per_frame + self.input_ms_per_mb * frames_bytes / 1e6

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
    when set)."""
    load_accounting: str = RATE
    """`rate` or `input-time` (LOAD_ACCOUNTINGS; written only when not `rate`)."""

    def runtime(self, model: str, device: str) -> RuntimeProfile:
        for rt in self.runtimes:
            if rt.model == model and rt.device == device:
                return rt
        have = [(rt.model, rt.device) for rt in self.runtimes]
        raise KeyError(f"no runtime profile for model {model!r} on {device!r}; the file has {have}")


def read_profile(path: str | Path) -> ProfileFile:
    """Returns a profile file's content; raises ProfileError naming the file, the key and the value at fault."""
    path = Path(path)
    doc: ProfileDocument = validate(ProfileDocument, load_yaml(path, ProfileError), path, ProfileError)
    models = {name: ModelProfile(m.task, None if m.input_size is None else (int(m.input_size[0]), int(m.input_size[1])),
                                 m.accuracy, m.accuracy_source) for name, m in doc.models.items()}
    runtimes = tuple(_runtime(path, f"runtimes[{i}]", r, models) for i, r in enumerate(doc.runtimes))
    names: set[str] = set()
    for i, rt in enumerate(runtimes):
        for n in sorted(rt.batch_latency_ms):
            if rt.variant(n) in names:
                raise ProfileError(at_key(path, f"runtimes[{i}]", f"variant {rt.variant(n)!r} is defined twice"))
            names.add(rt.variant(n))
    if doc.load_accounting == INPUT_TIME and doc.capacity_frame_kb <= 0:
        raise ProfileError(at_key(path, "capacity_frame_kb", "load_accounting input-time measures load in queries of "
                                                             "a nominal frame: give its size in kB (> 0)"))
    return ProfileFile(doc.version, doc.origin, models, runtimes, doc.capacity_frame_kb, doc.load_accounting)


def _runtime(path: Path, where: str, r: RuntimeEntry, models: dict[str, ModelProfile]) -> RuntimeProfile:
    if r.model not in models:
        raise ProfileError(at_key(path, f"{where}.model", f"{r.model!r} is not in 'models'"))
    table = r.batch_latency_ms
    sizes = sorted(table)
    for small, big in zip(sizes, sizes[1:], strict=False):
        if table[big] < table[small]:
            raise ProfileError(at_key(path, f"{where}.batch_latency_ms.{big}",
                                      f"a batch of {big} ({table[big]} ms) cannot take less than a batch of {small} "
                                      f"({table[small]} ms)"))
    return RuntimeProfile(
        model=r.model, device=r.device, threads=int(r.threads), cpu_cores=r.cpu_cores,
        gpus=int(r.gpus) if r.gpus is not None else (1 if r.device == "gpu" else 0), memory_mib=r.memory_mib,
        batch_latency_ms=dict(r.batch_latency_ms), batch_latency_p99_ms=dict(r.batch_latency_p99_ms),
        batch_latency_spread_ms=dict(r.batch_latency_spread_ms), input_ms_per_mb=r.input_ms_per_mb,
        source=r.source, input_ms_per_frame=r.input_ms_per_frame)


def _runtime_dict(rt: RuntimeProfile) -> dict:
    """Returns one runtime entry, latency tables rounded to µs; an empty optional table and a zero fixed input
    cost are left out (the file then reads as older profiles do)."""
    data = dataclasses.asdict(rt)
    source = data.pop("source")
    if rt.input_ms_per_frame:
        data["input_ms_per_frame"] = round(float(rt.input_ms_per_frame), 4)
    else:
        del data["input_ms_per_frame"]
    data["source"] = source
    for key in _TABLES:
        data[key] = {int(n): round(float(v), 3) for n, v in getattr(rt, key).items()}
        if not data[key] and key != "batch_latency_ms":
            del data[key]
    return data


def write_profile(profile: ProfileFile, path: str | Path) -> None:
    """Writes the profile file (flow-style latency tables, one runtime a block), atomically."""
    models = {}
    for name, m in profile.models.items():
        entry: dict = {"task": m.task}
        if m.input_size is not None:
            entry["input_size"] = list(m.input_size)
        models[name] = {**entry, "accuracy": m.accuracy, "accuracy_source": m.accuracy_source}
    data = {"version": profile.version, "origin": profile.origin, "models": models,
            "runtimes": [_runtime_dict(rt) for rt in profile.runtimes]}
    if profile.capacity_frame_kb:
        data["capacity_frame_kb"] = profile.capacity_frame_kb
    if profile.load_accounting != RATE:
        data["load_accounting"] = profile.load_accounting
    _write_atomically(Path(path), yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=200))


def _write_atomically(path: Path, text: str) -> None:
    """Writes a file so that a reader sees the old content or the new, never a part (temp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- what the scheduler takes from it ---------------------------------------------------------------------

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
    """batch_ms[n]: processing delay of a batch of n frames (n = 0..batch_size; batch_ms[0] = 0), their fixed input
    cost included (the profile's `input_ms_per_frame` x n: a cost per frame whatever its size, as the network's)."""
    input_ms_per_mb: float
    accuracy: float
    source: str
    capacity_input_ms: float = 0.0
    """Input time per query that the declared capacity counts: `input_ms_per_mb` x the profile file's
    `capacity_frame_kb` (0, the default: the capacity counts the batch latency alone)."""
    input_weighted: bool = False
    """True under `load_accounting: input-time`: a stream's load on this variant is weighted by its frames'
    input time (`eta`); False (`rate`): every stream weighs its frame rate."""

    # The load definitions, written once: the simulator's and the live schedulers' feasibility, the policies,
    # ASET's load feature and the live schedulers' reading of the workers' reports all use these.

    @property
    def compute_ms_per_query(self) -> float:
        """A query's share of a full batch's processing delay: batch_ms[B] / B."""
        return self.batch_ms[self.batch_size] / self.batch_size

    @property
    def nominal_query_ms(self) -> float:
        """Busy time of one nominal query in a full batch: its compute share plus the nominal frame's input
        time (`capacity_input_ms`); a replica serves 1000 / this nominal queries per second."""
        return self.compute_ms_per_query + self.capacity_input_ms

    @property
    def capacity_qps(self) -> float:
        """C_v of one replica: full batches back to back, each with its frames' input time as the profile
        declares it (`capacity_input_ms` per query), in (nominal) queries per second:
        B / (batch_ms[B] + B x capacity_input_ms) x 1000 = 1000 / nominal_query_ms."""
        b = self.batch_size
        return b / (self.batch_ms[b] + b * self.capacity_input_ms) * 1000.0

    def query_ms(self, frame_bytes: float) -> float:
        """Busy time of one query of `frame_bytes` in a full batch: compute share plus its own input time."""
        return self.compute_ms_per_query + self.input_ms_per_mb * frame_bytes / 1e6

    @property
    def load_weights(self) -> tuple[float, float]:
        """(a, b) of eta_v(zeta) = a + b x zeta (zeta in bytes), a query's load in nominal queries:
        query_ms(zeta) / nominal_query_ms under input-time accounting, (1, 0) under rate accounting."""
        if not self.input_weighted:
            return 1.0, 0.0
        return self.compute_ms_per_query / self.nominal_query_ms, self.input_ms_per_mb / 1e6 / self.nominal_query_ms

    def eta(self, frame_bytes: float) -> float:
        """eta_v^i: the load one query of `frame_bytes` puts on this variant, in nominal queries."""
        a, b = self.load_weights
        return a + b * frame_bytes

    def load_qps(self, queries_per_s: float, bytes_per_s: float) -> float:
        """Returns the load of a query flow, in the capacity's unit: the sum of its queries' eta per second.
        eta is affine in the frame size, so a rate and a byte rate give it exactly (a worker reports both).
        Under input-time accounting, load / capacity is the replicas' busy fraction if the flow is served in
        full batches as profiled: what a worker's reported busy time measures."""
        a, b = self.load_weights
        return a * queries_per_s + b * bytes_per_s

    def processing_ms(self, frame_bytes: float) -> float:
        """D_v(zeta): worst-case processing delay of a query, in a full batch of frames of this size."""
        return self.batch_ms[self.batch_size] + self.batch_size * self.input_ms_per_mb * frame_bytes / 1e6


@dataclass(frozen=True)
class ProfileSet:
    """All models and variants of one profile file."""

    source: str
    origin: str
    models: dict[str, ModelProfile]
    """Per model name: its task, input size, accuracy and the accuracy's source (as the file has them)."""
    variants: dict[str, Variant]
    capacity_frame_kb: float = 0.0
    """Nominal frame size whose input time the declared capacities count (0: none)."""
    load_accounting: str = RATE
    """`rate` or `input-time` (LOAD_ACCOUNTINGS)."""

    def variant(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise ProfileError(f"{self.source}: no variant {name!r}; known: {', '.join(sorted(self.variants))}") from None


def default_profile_path() -> Path:
    """Returns the committed default profile (measured; `run_testbed.py profile` never writes it)."""
    return DEFAULT_PROFILE


def resolve_profile_path(given: str | Path | None = None) -> Path:
    """Returns the profile file to read, in this order: a given path that exists; a given bare name of a file
    in scheduler/profiles/ (`provisional`, `measured-local`, `default`, with or without `.yaml`); a given
    path that does not exist (the reader then names it); nothing given: the committed default."""
    if given is None:
        return default_profile_path()
    path = Path(given)
    if path.exists() or path.parent != Path("."):
        return path
    named = PROFILE_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return named if named.is_file() else path


def _batch_table(points: dict[int, float]) -> tuple[float, ...]:
    """Returns batch_ms[0..max n], interpolating linearly between the batch sizes the file gives."""
    sizes = sorted(points)
    table = np.interp(np.arange(1, sizes[-1] + 1), sizes, [points[n] for n in sizes])
    # Below the smallest measured size, scale down linearly towards zero frames.
    table[: sizes[0] - 1] = points[sizes[0]] * np.arange(1, sizes[0]) / sizes[0]
    return (0.0, *(float(x) for x in table))


def load_profiles(path: str | Path | None = None) -> ProfileSet:
    """Returns the profiles in a file (a path or a name, as `resolve_profile_path`); raises ProfileError."""
    path = resolve_profile_path(path)
    pf = read_profile(path)
    models = pf.models
    variants: dict[str, Variant] = {}
    for rt in pf.runtimes:
        # the fixed input cost is per frame whatever its size: the batch's planned time (planned_batch_ms) has it
        table = tuple(ms + n * rt.input_ms_per_frame for n, ms in enumerate(_batch_table(rt.batch_latency_ms)))
        model = models[rt.model]
        for n in rt.batch_latency_ms:
            variants[rt.variant(n)] = Variant(
                name=rt.variant(n), model=rt.model, task=model.task, device=rt.device, batch_size=n,
                threads=rt.threads, cpu_cores=rt.cpu_cores, gpus=rt.gpus, memory_mib=rt.memory_mib,
                batch_ms=table[: n + 1], input_ms_per_mb=rt.input_ms_per_mb, accuracy=model.accuracy,
                source=rt.source, capacity_input_ms=rt.input_ms_per_mb * pf.capacity_frame_kb / 1000.0,
                input_weighted=pf.load_accounting == INPUT_TIME)
    return ProfileSet(source=str(path), origin=pf.origin, models=models, variants=variants,
                      capacity_frame_kb=pf.capacity_frame_kb, load_accounting=pf.load_accounting)


def write_scaled_profile(src: str | Path | None, factor: float, dst: Path) -> Path:
    """Writes a copy of profile file `src` (default: as load_profiles) whose every batch latency is
    `factor` times the original: a slower system, e.g. to reach the loads where policies differ with
    as few queries as a small testbed carries. Returns `dst`; raises ProfileError on a bad file or factor."""
    path = resolve_profile_path(src)
    if not (np.isfinite(factor) and factor > 0):
        raise ProfileError(f"profile scale {factor!r}: must be a finite number > 0")
    load_profiles(path)  # the copy is only as good as its source
    pf = read_profile(path)

    def scaled(table: dict[int, float]) -> dict[int, float]:
        return {b: ms * factor for b, ms in table.items()}

    runtimes = tuple(dataclasses.replace(rt, batch_latency_ms=scaled(rt.batch_latency_ms),
                                         batch_latency_p99_ms=scaled(rt.batch_latency_p99_ms),
                                         source=f"x{factor:g}: {rt.source}") for rt in pf.runtimes)
    write_profile(dataclasses.replace(pf, origin=f"{pf.origin or path.name}; every batch latency x{factor:g} "
                                                 f"({path.name})", runtimes=runtimes), dst)
    return dst
