"""A worker's deployment: which model, with which batching, replicas, device and threads, real,
profile-driven or mixed (the first replicas real, the others sleeping the profile); resolved once from the
command line, the model folder and the profile file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from scheduler.profiles import RuntimeProfile, read_profile
from topologies.timescale import TimeScale

from .modelconfig import ModelCard, ModelConfig, load_model


@dataclass(frozen=True)
class WorkerSettings:
    """What the command line asks for; None means the model folder's default."""

    model: str
    max_batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    instances: int | None = None
    queue_limit: int | None = None
    device: str = "cpu"
    threads: int | None = None
    cpus: tuple[int, ...] | None = None
    profile_driven: Path | None = None
    models_dir: Path | None = None
    max_body_bytes: int = 8 * 2**20
    stream_ttl_s: float = 5.0
    time_scale: TimeScale = TimeScale()
    """The run's time dilation: every time the worker reports is virtual, every delay it keeps x K."""
    inference_cgroup: Path | None = None
    """A cgroup each real replica's inference thread moves into before it loads its session (a live run's
    reserved core); the rest of the worker stays where it was started."""
    real_instances: int | None = None
    """With `profile_driven`: how many of the replicas run the real network (the first in the batcher's order);
    the others sleep the profile. None: every replica real without `profile_driven`, none with it."""
    real_batch_log: Path | None = None
    """A file each batch of a real replica is appended to as one JSON line (its virtual epoch ms, size, bytes):
    what the fidelity verdict judges real inference on and counts its frames by (live/verdict.py)."""


@dataclass(frozen=True)
class Deployment:
    """The resolved variant one worker process serves."""

    config: ModelConfig
    max_batch_size: int
    max_batch_delay_ms: float
    instances: int
    queue_limit: int
    device: str
    threads: int
    cpus: tuple[int, ...] | None
    profile: RuntimeProfile | None  # set for the profile-driven worker
    max_body_bytes: int
    stream_ttl_s: float
    time_scale: TimeScale = TimeScale()
    """The run's time dilation (WorkerSettings.time_scale); max_batch_delay_ms and the profile stay virtual."""
    inference_cgroup: Path | None = None
    """WorkerSettings.inference_cgroup (None: the replicas' threads stay in the worker's own groups)."""
    real_instances: int = 0
    """Replicas running the real network (ONNX Runtime), the first `real_instances` of the batcher's; the others
    (`instances - real_instances`) sleep `profile`."""
    real_batch_log: Path | None = None
    """WorkerSettings.real_batch_log."""

    @property
    def variant(self) -> str:
        return f"{self.config.name}-{self.device}-b{self.max_batch_size}"

    @property
    def mode(self) -> str:
        """Returns how the replicas serve: `onnxruntime` (all real), `profile-driven` (none) or `mixed`."""
        if self.real_instances == self.instances:
            return "onnxruntime"
        return "mixed" if self.real_instances else "profile-driven"

    def describe(self) -> dict:
        return {"variant": self.variant, "max_batch_size": self.max_batch_size,
                "max_batch_delay_ms": self.max_batch_delay_ms, "instances": self.instances,
                "queue_limit": self.queue_limit, "device": self.device, "threads": self.threads,
                "cpus": list(self.cpus) if self.cpus else None, "max_body_bytes": self.max_body_bytes,
                "mode": self.mode, "real_instances": self.real_instances,
                "profile_source": self.profile.source if self.profile else None,
                "time_dilation": {"factor": self.time_scale.factor, "anchor_epoch_s": self.time_scale.anchor_s},
                "inference_cgroup": str(self.inference_cgroup) if self.inference_cgroup else None}


def _config_from_profile(name: str, path: Path) -> ModelConfig:
    """Returns a stand-in model config for a profile-driven worker whose model folder is absent."""
    profile = read_profile(path)
    if name not in profile.models:
        raise KeyError(f"unknown model {name!r}: not in the zoo nor in {path} (has {sorted(profile.models)})")
    m = profile.models[name]
    card = ModelCard(architecture="profile-driven stand-in (no network is run)", weights="none",
                     weights_source="none", licence="n/a", accuracy=m.accuracy, accuracy_source=m.accuracy_source)
    height, width = m.input_size or (416, 416)
    return ModelConfig(name=name, task=m.task, onnx="", input_name="images", input_height=height,
                       input_width=width, pre="rgb255", post="boxes-scores", labels=(),
                       score_threshold=0.5, iou_threshold=0.5, card=card)


def resolve(settings: WorkerSettings) -> Deployment:
    """Returns the deployment for the settings; raises KeyError/ValueError naming what is wrong."""
    try:
        config = load_model(settings.model, settings.models_dir)
    except KeyError:
        if settings.profile_driven is None or settings.real_instances:  # a real replica runs the model's network
            raise
        config = _config_from_profile(settings.model, settings.profile_driven)
    profile = None
    if settings.profile_driven is not None:
        profile = read_profile(settings.profile_driven).runtime(settings.model, settings.device)
    instances = settings.instances or config.instances
    real_instances = _real_instances(settings, instances)
    threads = settings.threads or (max(1, len(settings.cpus) // instances) if settings.cpus else 1)
    dep = Deployment(
        config=config,
        max_batch_size=settings.max_batch_size or config.max_batch_size,
        max_batch_delay_ms=(config.max_batch_delay_ms if settings.max_batch_delay_ms is None
                            else settings.max_batch_delay_ms),
        instances=instances,
        queue_limit=settings.queue_limit or config.queue_limit,
        device=settings.device, threads=threads, cpus=settings.cpus, profile=profile,
        max_body_bytes=settings.max_body_bytes, stream_ttl_s=settings.stream_ttl_s, time_scale=settings.time_scale,
        inference_cgroup=settings.inference_cgroup, real_instances=real_instances,
        real_batch_log=settings.real_batch_log)
    if dep.inference_cgroup is not None and (not real_instances or not dep.inference_cgroup.is_dir()):
        raise ValueError(f"--inference-cgroup {dep.inference_cgroup}: " + (
            "a profile-driven worker runs no inference" if not real_instances else "no such cgroup directory"))
    if dep.max_batch_size < 1 or dep.instances < 1 or dep.queue_limit < 1 or dep.max_batch_delay_ms < 0:
        raise ValueError(f"bad deployment {dataclasses.asdict(settings)}: batch, instances and queue limit "
                         "must be >= 1 and the batching delay >= 0")
    return dep


def _real_instances(settings: WorkerSettings, instances: int) -> int:
    """Returns how many of `instances` replicas run the real network; raises ValueError naming a count that
    cannot be (more than the replicas, or a mixed worker without the profile its other replicas sleep)."""
    n = settings.real_instances
    if settings.profile_driven is None:
        if n is not None and n != instances:
            raise ValueError(f"--real-instances {n} of {instances} replicas: the others sleep a profile; "
                             "give it with --profile-driven")
        return instances
    if n is None:
        return 0
    if not 0 <= n <= instances:
        raise ValueError(f"--real-instances {n}: expected 0 to {instances} (the worker's replicas)")
    return n
