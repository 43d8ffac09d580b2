"""GPU profiles measured with PyTorch's CUDA backend, for hosts whose ONNX Runtime lacks the CUDA
provider: the zoo's own network definitions (workers/nets) timed per batch size with the profiler's
method, input copied from host memory and outputs copied back, written as a profile file whose GPU
entries `run_testbed.py profile --gpu-profile FILE` then merges with the CPU entries it measures.
Each profile model is timed on the zoo model that stands for it (`workers.zoo.PROFILE_MODELS`, or
`--models NAME=ZOO_MODEL`), as the CPU profiler does.

`python -m workers.gpu_profile --out FILE` (needs torch with CUDA; weights do not change timing, so
the trained networks are timed with their architecture's initial weights)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from scheduler.profiles import PROFILE_VERSION, ModelProfile, ProfileFile, RuntimeProfile, write_profile

from .profiler import ProfileRequest, ProfileTarget, time_batches
from .zoo import PROFILE_MODELS


def _net(zoo_model: str):
    """Returns the zoo network `zoo_model` (architecture only), its input (height, width) and its config."""
    from .nets.ssd_mobilenet import COCO_CLASS_CHANNELS, SSD300_SIZE, SsdMobilenetV1
    from .nets.tiny_face import TinyFaceDetector
    from .nets.tiny_yolov2 import TinyYoloV2
    from .nets.yolov3 import YoloV3, YoloV3Tiny
    from .zoo import zoo_entries

    make = {"mobilenet-ssd": SsdMobilenetV1, "tiny-yolov2": TinyFaceDetector,
            "ssd300-mobilenetv1": lambda: SsdMobilenetV1(SSD300_SIZE, COCO_CLASS_CHANNELS, seed=0),
            "tiny-yolov2-voc": lambda: TinyYoloV2(seed=0),
            "yolov3": lambda: YoloV3(seed=0), "yolov3-tiny": lambda: YoloV3Tiny(seed=0)}
    configs = {e.config.name: e.config for e in zoo_entries()}
    if zoo_model not in make or zoo_model not in configs:
        raise KeyError(f"gpu_profile: unknown zoo model {zoo_model!r} (known: {sorted(make)})")
    c = configs[zoo_model]
    return make[zoo_model]().eval(), (c.input_height, c.input_width), c


def profile_gpu_torch(req: ProfileRequest, log=print) -> ProfileFile:
    """Times every target of `req` on the first CUDA device with PyTorch; returns a profile of GPU entries."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("gpu_profile: torch sees no CUDA device")
    torch.backends.cudnn.benchmark = True  # ONNX Runtime's CUDA provider also searches conv algorithms
    gpu = torch.cuda.get_device_name(0)
    runtimes, model_profiles = [], {}
    for target in req.targets:
        name = target.model
        net, (h, w), config = _net(target.zoo_model)
        net = net.cuda()
        inputs = {b: torch.from_numpy(np.random.default_rng(b).uniform(0, 255, (b, 3, h, w)).astype(np.float32))
                  for b in req.batches}
        torch.cuda.reset_peak_memory_stats()

        def run_once(b: int, net=net, inputs=inputs) -> None:
            with torch.inference_mode():
                out = net(inputs[b].cuda())
            for t in out if isinstance(out, (tuple, list)) else (out,):
                t.cpu()  # blocks until the batch is done, as a worker's answer does

        started = time.monotonic()
        timings = time_batches(run_once, req)
        memory = torch.cuda.max_memory_allocated() / 2**20
        rt = RuntimeProfile(
            model=name, device="gpu", threads=1, cpu_cores=1.0, gpus=1, memory_mib=round(memory, 1),
            batch_latency_ms={b: round(t.median_ms, 3) for b, t in timings.items()},
            batch_latency_p99_ms={b: round(t.p99_ms, 3) for b, t in timings.items()},
            batch_latency_spread_ms={b: round(t.spread_ms, 3) for b, t in timings.items()},
            input_ms_per_mb=0.0,
            source=(f"measured: zoo model {config.name} ({config.card.weights} weights), PyTorch "
                    f"{torch.__version__} CUDA FP32 eager (cudnn.benchmark) on {gpu}, "
                    f"{req.runs} runs, >= {req.min_iterations} batches per run and size, host->device input "
                    "copy and device->host output copy included, JPEG preparation excluded (taken from the "
                    "CPU entry when merged); stands in for ONNX Runtime's CUDA provider, absent there"))
        runtimes.append(rt)
        model_profiles[name] = ModelProfile(config.task, (h, w), config.card.accuracy, config.card.accuracy_source)
        table = ", ".join(f"b{b}: {rt.batch_latency_ms[b]:.2f} ms" for b in req.batches)
        log(f"[gpu-profile] {name}: {table} (memory {memory:.0f} MiB, {time.monotonic() - started:.0f} s)")
        del net
        torch.cuda.empty_cache()
    stamp = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    return ProfileFile(PROFILE_VERSION, f"GPU entries measured on {gpu} {stamp} by workers.gpu_profile",
                       model_profiles, tuple(runtimes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.gpu_profile", description=__doc__)
    parser.add_argument("--models", nargs="+", default=[*PROFILE_MODELS, "yolov3-tiny"],
                        help="profile models, each NAME or NAME=ZOO_MODEL (default: workers.zoo.PROFILE_MODELS)")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        req = ProfileRequest(targets=tuple(ProfileTarget.parse(m, 1) for m in args.models),
                             batches=tuple(int(b) for b in args.batches.split(",")), runs=args.runs,
                             budget_s=args.budget_s, out=args.out)
        profile = profile_gpu_torch(req)
    except (KeyError, RuntimeError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    write_profile(profile, args.out)
    print(f"[gpu-profile] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
