"""The model repository's records: a model folder (Triton-like) holds `model.onnx` beside a
`config.yaml` that this module reads and writes strictly into frozen dataclasses (batching
defaults, pre/post-processing, and the model card)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from topologies.strict import Fraction, load_yaml, one_line

PreKind = Literal["rgb255", "rgb01"]
PostKind = Literal["boxes-scores"]
PRE_KINDS: tuple[str, ...] = get_args(PreKind)
POST_KINDS: tuple[str, ...] = get_args(PostKind)
REPO_ROOT = Path(__file__).resolve().parents[1]


def default_models_dir() -> Path:
    """Returns the model repository folder: $TESTBED_MODELS, else `models/` at the repository root."""
    return Path(os.environ.get("TESTBED_MODELS", REPO_ROOT / "models"))


_STRICT = ConfigDict(extra="forbid", strict=True)


@with_config(_STRICT)
@dataclass(frozen=True)
class ModelCard:
    """What a user must know before trusting a model's output."""

    architecture: str
    weights: str  # "trained" or "random"
    weights_source: str
    licence: str
    accuracy: Fraction  # the accuracy the scheduler uses (0..1)
    accuracy_source: str
    notes: str = ""
    onnx_sha256: str = ""
    parity_max_abs_diff: float | None = None  # ONNX Runtime vs PyTorch on the same batch
    gflop: float | None = None  # one frame's compute, counted on the ONNX graph (workers/flops.py)


@with_config(_STRICT)
@dataclass(frozen=True)
class ModelConfig:
    """One model folder's config: the ONNX file, its input, its processing, its batching defaults."""

    name: str
    task: str
    onnx: str  # path, relative to the model folder or absolute
    input_name: str
    input_height: int
    input_width: int
    pre: PreKind
    post: PostKind
    labels: tuple[str, ...]
    score_threshold: float
    iou_threshold: float
    card: ModelCard
    max_detections: int = 100
    max_batch_size: int = 8
    max_batch_delay_ms: float = 5.0
    instances: int = 1
    queue_limit: int = 32
    builder_version: int = 0
    folder: Path = field(default=Path("."), compare=False)

    def __post_init__(self) -> None:
        if self.pre not in PRE_KINDS:
            raise ValueError(f"model {self.name}: pre {self.pre!r} is not one of {PRE_KINDS}")
        if self.post not in POST_KINDS:
            raise ValueError(f"model {self.name}: post {self.post!r} is not one of {POST_KINDS}")
        if not 0.0 <= self.card.accuracy <= 1.0:
            raise ValueError(f"model {self.name}: accuracy {self.card.accuracy} is outside 0..1")

    @property
    def onnx_path(self) -> Path:
        return (self.folder / self.onnx).resolve()


def file_sha256(path: Path) -> str:
    """Returns the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_config(folder: Path) -> ModelConfig:
    """Returns the config of one model folder; a bad file is a ValueError of one line naming the file and key."""
    path = Path(folder) / "config.yaml"
    raw = load_yaml(path, ValueError)
    if isinstance(raw, dict) and "folder" in raw:  # where the folder is, is where the file is
        raise ValueError(f"{path}: folder: unknown key")
    try:  # as JSON: lists may stand for tuples, and nothing else is coerced
        config = _adapter().validate_json(json.dumps(raw))
    except ValidationError as exc:
        raise ValueError(one_line(path, exc)) from None
    return dataclasses.replace(config, folder=Path(folder))


@functools.cache
def _adapter() -> TypeAdapter[ModelConfig]:
    return TypeAdapter(ModelConfig)


def write_config(config: ModelConfig) -> Path:
    """Writes `config.yaml` in the model's folder and returns its path."""
    data = dataclasses.asdict(config)
    data.pop("folder")
    data["labels"] = list(config.labels)
    path = config.folder / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path


def list_models(models_dir: Path | None = None) -> list[ModelConfig]:
    """Returns every model folder's config under the repository, sorted by name."""
    root = Path(models_dir or default_models_dir())
    if not root.is_dir():
        return []
    return [read_config(p.parent) for p in sorted(root.glob("*/config.yaml"))]


def load_model(name: str, models_dir: Path | None = None) -> ModelConfig:
    """Returns one model's config, or raises KeyError naming the models that exist."""
    folder = Path(models_dir or default_models_dir()) / name
    if not (folder / "config.yaml").is_file():
        known = [m.name for m in list_models(models_dir)]
        raise KeyError(f"unknown model {name!r}; the zoo at {folder.parent} has {known} "
                       "(build it with: python -m workers.zoo build)")
    return read_config(folder)
