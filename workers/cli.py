"""The workers' subcommands of `run_testbed.py`: `worker` (one worker on loopback), `models` (the
zoo's cards; `models add` registers any ONNX file) and `profile` (measure and write a profile file, never the
committed default). `register(subparsers)` adds them; each sets `func` to a handler taking the namespace."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from .modelconfig import (
    POST_KINDS,
    PRE_KINDS,
    ModelCard,
    ModelConfig,
    default_models_dir,
    file_sha256,
    read_config,
    write_config,
)
from .serve import add_worker_arguments, limits_from_args, serve, settings_from_args
from .zoo import PROFILE_MODELS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `worker`, `models` and `profile` to a parser's subcommands."""
    worker = subparsers.add_parser("worker", help="run one inference worker on loopback",
                                   description="Run one inference worker (model variant) outside any emulated network.")
    add_worker_arguments(worker)
    worker.set_defaults(func=cmd_worker)

    models = subparsers.add_parser("models", help="list the model zoo with its cards; `models add` registers an ONNX",
                                   description="List every model with its card, or register an ONNX file.")
    models.add_argument("--models-dir", type=Path, default=None)
    models.set_defaults(func=cmd_models)
    models_sub = models.add_subparsers(dest="models_command")
    add = models_sub.add_parser("add", help="register any ONNX detector by path")
    add.add_argument("--name", required=True)
    add.add_argument("--onnx", type=Path, required=True)
    add.add_argument("--pre", choices=PRE_KINDS, required=True,
                     help="rgb255: float RGB 0..255 NCHW, letterboxed top-left; rgb01: the same / 255")
    add.add_argument("--post", choices=POST_KINDS, required=True,
                     help="boxes-scores: one output [N, A, 5+C]: relative x1 y1 x2 y2, score, C class scores")
    add.add_argument("--labels", nargs="*", default=[])
    add.add_argument("--score-threshold", type=float, default=0.5)
    add.add_argument("--iou-threshold", type=float, default=0.5)
    add.add_argument("--accuracy", type=float, required=True, help="the accuracy the scheduler uses (0..1)")
    add.add_argument("--accuracy-source", required=True)
    add.add_argument("--architecture", default="unknown (registered by path)")
    add.add_argument("--weights", default="trained")
    add.add_argument("--weights-source", default="user-supplied ONNX file")
    add.add_argument("--licence", default="unknown")
    add.set_defaults(func=cmd_models_add)

    profile = subparsers.add_parser(
        "profile", help="measure the models on this host and write a profile file (never the committed default)",
        description="Measure batch latency, input cost and memory of each profile model, timing the zoo model "
                    "that stands for it with the threads one replica is given, and write a profile file with its "
                    "provenance. It never overwrites a committed profile (default.yaml, provisional.yaml, "
                    "gpu-h100.yaml); read what it writes with --profiles measured-local (or the --out path).")
    profile.add_argument("--models", nargs="+", default=list(PROFILE_MODELS),
                         help="profile models, each NAME or NAME=ZOO_MODEL (the zoo model timed for it; default "
                              f"{', '.join(f'{k}={v}' for k, v in PROFILE_MODELS.items())})")
    profile.add_argument("--batches", default="1,2,4,8", help="comma-separated batch sizes")
    profile.add_argument("--runs", type=int, default=5)
    profile.add_argument("--threads", default=None,
                         help="intra-op threads per replica (its cores in the placement): N for every model, or "
                              "NAME=N,... (default: mobilenet-ssd=1, tiny-yolov2=2, yolov3=2, others 1)")
    profile.add_argument("--budget-s", type=float, default=1.0, help="seconds per run and batch size")
    profile.add_argument("--out", type=Path, default=None,
                         help="default: scheduler/profiles/measured-local.yaml (never a committed profile)")
    profile.add_argument("--models-dir", type=Path, default=None)
    profile.add_argument("--gpu-profile", default=None,
                         help="where this host has no usable GPU: take the GPU entries from this profile file "
                              "(default: measured on an NVIDIA H100 by workers.gpu_profile; 'provisional' keeps "
                              "the provisional estimates)")
    profile.set_defaults(func=cmd_profile)


def cmd_worker(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(settings_from_args(args), args.host, args.port, limits=limits_from_args(args)))
    except (KeyError, ValueError, OSError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2


def format_card(config: ModelConfig, check_hash: bool = True) -> str:
    """Returns a model's card as indented text lines."""
    c = config.card
    sha = file_sha256(config.onnx_path) if check_hash and config.onnx_path.is_file() else None
    hash_note = "" if sha is None or not c.onnx_sha256 or sha == c.onnx_sha256 else "  (DIFFERS from the card!)"
    weights = f"{c.weights}: {c.weights_source} (licence: {c.licence})"
    return "\n".join([
        f"{config.name}  [{config.task}]",
        f"  architecture: {c.architecture}",
        f"  input:        {config.input_height}x{config.input_width} ({config.pre}), post {config.post}, "
        f"labels {list(config.labels) or 'class ids'}",
        f"  weights:      {weights}",
        *([f"  compute:      {c.gflop:g} GFLOP a frame (2 x MACs of the ONNX graph's convolutions)"]
          if c.gflop is not None else []),
        f"  onnx:         {config.onnx_path}",
        f"  sha256:       {sha or 'FILE MISSING'}{hash_note}",
        f"  accuracy:     {c.accuracy} ({c.accuracy_source})",
        f"  batching:     max batch {config.max_batch_size}, delay {config.max_batch_delay_ms} ms, "
        f"instances {config.instances}, queue limit {config.queue_limit}",
        *([f"  notes:        {c.notes}"] if c.notes else []),
        *([f"  parity:       ONNX Runtime vs PyTorch max |diff| {c.parity_max_abs_diff:.1e}"]
          if c.parity_max_abs_diff is not None else []),
    ])


def cmd_models(args: argparse.Namespace) -> int:
    root = Path(args.models_dir or default_models_dir())
    folders = sorted(p.parent for p in root.glob("*/config.yaml"))
    if not folders:
        print(f"no models in {root}; build the zoo: python -m workers.zoo build")
        return 1
    cards, status = [], 0
    for folder in folders:
        try:
            cards.append(format_card(read_config(folder)))
        except (OSError, ValueError) as exc:
            print(f"models: skipping {folder}: {exc}", file=sys.stderr)
            status = 1
    print("\n\n".join(cards))
    return status


def cmd_models_add(args: argparse.Namespace) -> int:
    import onnx
    path = args.onnx.resolve()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several types for unreadable files
        print(f"models add: cannot read {path} as ONNX: {exc}", file=sys.stderr)
        return 2
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or not dims[2] or not dims[3]:
        print(f"models add: input {model.graph.input[0].name} has shape {dims}; expected [N, 3, H, W] "
              "with fixed H and W", file=sys.stderr)
        return 2
    card = ModelCard(architecture=args.architecture, weights=args.weights, weights_source=args.weights_source,
                     licence=args.licence, accuracy=args.accuracy, accuracy_source=args.accuracy_source,
                     onnx_sha256=file_sha256(path))
    folder = Path(args.models_dir or default_models_dir()) / args.name
    config = ModelConfig(name=args.name, task="object-detection", onnx=str(path),
                         input_name=model.graph.input[0].name, input_height=dims[2], input_width=dims[3],
                         pre=args.pre, post=args.post, labels=tuple(args.labels),
                         score_threshold=args.score_threshold, iou_threshold=args.iou_threshold, card=card,
                         folder=folder)
    if folder.exists() and not (folder / "config.yaml").is_file():
        print(f"models add: {folder} exists and is not a model folder", file=sys.stderr)
        return 2
    write_config(replace(config))
    print(format_card(config))
    return 0


def profile_targets(models: list[str], threads: str | None) -> tuple:
    """Returns the profiler's targets from `--models` and `--threads`; raises ValueError on a bad value."""
    from .profiler import ProfileTarget
    if threads is None or threads.isdigit():
        every = None if threads is None else int(threads)
        return tuple(ProfileTarget.parse(m, every) for m in models)
    per_model: dict[str, int] = {}
    for item in threads.split(","):
        name, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--threads {threads!r}: expected N or NAME=N,... with N >= 1")
        per_model[name] = int(n)
    targets = tuple(ProfileTarget.parse(m, per_model.get(m.partition("=")[0])) for m in models)
    unknown = set(per_model) - {t.model for t in targets}
    if unknown:
        raise ValueError(f"--threads names models not profiled: {', '.join(sorted(unknown))}")
    return targets


def cmd_profile(args: argparse.Namespace) -> int:
    from .profiler import DEFAULT_OUT, SHIPPED_GPU, ProfileRequest, run_profile
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
        targets = profile_targets(args.models, args.threads)
    except ValueError as exc:
        print(f"profile: {exc} (--batches: comma-separated integers)", file=sys.stderr)
        return 2
    req = ProfileRequest(targets=targets, batches=batches, runs=args.runs, budget_s=args.budget_s,
                         out=args.out or DEFAULT_OUT, models_dir=args.models_dir,
                         gpu_profile=SHIPPED_GPU if args.gpu_profile is None else
                         None if args.gpu_profile == "provisional" else Path(args.gpu_profile),
                         command=" ".join(["run_testbed.py", *sys.argv[1:]]) if sys.argv[0].endswith(
                             "run_testbed.py") else "run_testbed.py profile (in-process)")
    try:
        run_profile(req)
    except (KeyError, ValueError, OSError) as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 2
    return 0
