"""A worker's deployment: which model, with which batching, replicas, device and threads, real
or profile-driven; resolved once from the command line, the model folder and the profile file."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from scheduler.profiles import RuntimeProfile, read_profile
from topologies.timescale import TimeScale

from .modelconfig import ModelCard, ModelConfig, load_model


def parse_tdf(text: str) -> float:
    """Returns a time dilation factor given as text (--tdf of a worker and of a live run): a number >= 1."""
    try:
        k = float(text)
    except ValueError:
        k = float("nan")
    if not 1.0 <= k < float("inf"):
        raise argparse.ArgumentTypeError(f"--tdf {text!r}: expected a number >= 1 (real seconds per virtual second)")
    return k


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

    @property
    def variant(self) -> str:
        return f"{self.config.name}-{self.device}-b{self.max_batch_size}"

    def describe(self) -> dict:
        return {"variant": self.variant, "max_batch_size": self.max_batch_size,
                "max_batch_delay_ms": self.max_batch_delay_ms, "instances": self.instances,
                "queue_limit": self.queue_limit, "device": self.device, "threads": self.threads,
                "cpus": list(self.cpus) if self.cpus else None, "max_body_bytes": self.max_body_bytes,
                "mode": "profile-driven" if self.profile else "onnxruntime",
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
        if settings.profile_driven is None:
            raise
        config = _config_from_profile(settings.model, settings.profile_driven)
    profile = None
    if settings.profile_driven is not None:
        profile = read_profile(settings.profile_driven).runtime(settings.model, settings.device)
    instances = settings.instances or config.instances
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
        inference_cgroup=settings.inference_cgroup)
    if dep.inference_cgroup is not None and (profile is not None or not dep.inference_cgroup.is_dir()):
        raise ValueError(f"--inference-cgroup {dep.inference_cgroup}: " + (
            "a profile-driven worker runs no inference" if profile is not None else "no such cgroup directory"))
    if dep.max_batch_size < 1 or dep.instances < 1 or dep.queue_limit < 1 or dep.max_batch_delay_ms < 0:
        raise ValueError(f"bad deployment {dataclasses.asdict(settings)}: batch, instances and queue limit "
                         "must be >= 1 and the batching delay >= 0")
    return dep
