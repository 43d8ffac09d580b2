"""The model zoo: fetches face-api.js's trained face detectors from the npm registry, ports them
(and builds the paper's published architectures, SSD300-MobileNetV1, Tiny-YOLOv2 and YOLOv3, with
seeded random weights), exports each to ONNX with a dynamic batch axis, checks ONNX Runtime against
PyTorch, counts its FLOPs, and writes the model folders. `python -m workers.zoo build`.

`PROFILE_MODELS` says which zoo model the profiler times for each model of the profiles (like for like
with the paper's architectures); the face detectors keep the profile's names for the live demo's real
workers, which detect real faces."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .flops import count_gflop
from .modelconfig import ModelCard, ModelConfig, default_models_dir, file_sha256, read_config, write_config

BUILDER_VERSION = 4  # 4: FLOPs on the card
FACE_API_PACKAGE = "@vladmandic/face-api"
FACE_API_VERSION = "1.7.15"
FACE_API_FILES = ("ssd_mobilenetv1_model-weights_manifest.json", "ssd_mobilenetv1_model.bin",
                  "tiny_face_detector_model-weights_manifest.json", "tiny_face_detector_model.bin",
                  "LICENSE", "face-api.esm.js")
# face-api.js itself (bundled with TF.js) is kept to check the ports against it (tests/test_workers_faceapi.py).
_TARBALL_PATHS = {"LICENSE": "package/LICENSE", "face-api.esm.js": "package/dist/face-api.esm.js"}
OPSET = 17
PROFILE_MODELS = {"mobilenet-ssd": "ssd300-mobilenetv1", "tiny-yolov2": "tiny-yolov2-voc", "yolov3": "yolov3"}
"""Profile model (variants `{model}-{device}-b{n}`) -> the zoo model timed for it: the published architecture."""
_RANDOM = "seeded random weights (torch seed 0); no trained weights are downloadable here"
_FACE_API_SOURCE = (f"npm {FACE_API_PACKAGE}@{FACE_API_VERSION} (TF.js weights, ported to PyTorch by "
                    "workers/nets, exported to ONNX)")


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model: its network, its config (card included), its weights file."""

    config: ModelConfig
    make_net: Callable[[Path], object]  # cache folder -> torch.nn.Module in eval mode


def _ssd(cache: Path):
    from .nets.ssd_mobilenet import SsdMobilenetV1
    from .tfjs import read_weights
    net = SsdMobilenetV1()
    net.load_tfjs(read_weights(cache / "ssd_mobilenetv1_model-weights_manifest.json"))
    return net.eval()


def _tiny(cache: Path):
    from .nets.tiny_face import TinyFaceDetector
    from .tfjs import read_weights
    net = TinyFaceDetector()
    net.load_tfjs(read_weights(cache / "tiny_face_detector_model-weights_manifest.json"))
    return net.eval()


def _ssd300(cache: Path):
    from .nets.ssd_mobilenet import COCO_CLASS_CHANNELS, SSD300_SIZE, SsdMobilenetV1
    return SsdMobilenetV1(SSD300_SIZE, COCO_CLASS_CHANNELS, seed=0).eval()


def _tiny_yolov2_voc(cache: Path):
    from .nets.tiny_yolov2 import TinyYoloV2
    return TinyYoloV2(seed=0).eval()


def _yolov3(cache: Path):
    from .nets.yolov3 import YoloV3
    return YoloV3(seed=0).eval()


def _yolov3_tiny(cache: Path):
    from .nets.yolov3 import YoloV3Tiny
    return YoloV3Tiny(seed=0).eval()


def zoo_entries() -> list[ZooEntry]:
    """Returns the zoo: the paper's three detectors as published (random weights) and the trained face
    detectors of the live demo."""
    face = dict(task="object-detection", onnx="model.onnx", input_name="images", pre="rgb255",
                post="boxes-scores", labels=("face",), builder_version=BUILDER_VERSION)
    return [
        ZooEntry(ModelConfig(
            name="mobilenet-ssd", input_height=512, input_width=512, score_threshold=0.5, iou_threshold=0.5,
            card=ModelCard(
                architecture="SSD with a MobileNetV1 backbone (face-api.js SsdMobilenetv1: 512x512 input, "
                             "6 box predictors, 5118 anchors)",
                weights="trained", weights_source=f"face detector, {_FACE_API_SOURCE}", licence="MIT",
                accuracy=0.34,
                accuracy_source="COCO AP50 estimate for SSD-MobileNetV1: AP 19.3 (Howard et al. 2017, Table 13) "
                                "x the AP50/AP ratio 1.78 of SSD300 (Liu et al. 2016: 41.2/23.2); these "
                                "face-detector weights were not evaluated on COCO",
                notes="one class (face); raw scores and boxes equal face-api.js's own (TF.js) within 1e-4 on the "
                      "astronaut photograph (tests/test_workers_faceapi.py); runs in the live demo's real "
                      "'mobilenet-ssd' workers; the profile's 'mobilenet-ssd' is timed on ssd300-mobilenetv1"),
            **face), _ssd),
        ZooEntry(ModelConfig(
            name="tiny-yolov2", input_height=416, input_width=416, score_threshold=0.5, iou_threshold=0.4,
            card=ModelCard(
                architecture="Tiny-YOLOv2 with depthwise-separable convolutions (face-api.js TinyFaceDetector: "
                             "416x416 input, 13x13 grid, 5 anchors)",
                weights="trained", weights_source=f"face detector, {_FACE_API_SOURCE}", licence="MIT",
                accuracy=0.237,
                accuracy_source="COCO AP50 23.7 of Tiny YOLOv2 (416), Darknet project page (Redmon); these "
                                "face-detector weights were not evaluated on COCO",
                notes="one class (face); lighter than the original Tiny-YOLOv2 (separable convolutions); raw "
                      "outputs equal face-api.js's own (TF.js) within 1e-4 (tests/test_workers_faceapi.py); runs "
                      "in the live demo's real 'tiny-yolov2' workers; the profile's 'tiny-yolov2' is timed on "
                      "tiny-yolov2-voc"),
            **face), _tiny),
        ZooEntry(ModelConfig(
            name="yolov3", task="object-detection", onnx="model.onnx", input_name="images", input_height=416,
            input_width=416, pre="rgb255", post="boxes-scores", labels=(), score_threshold=0.5,
            iou_threshold=0.45, builder_version=BUILDER_VERSION,
            card=ModelCard(
                architecture="YOLOv3-416 (Darknet-53 backbone, 3 detection scales, 80 classes, 10647 boxes)",
                weights="random", weights_source=_RANDOM,
                licence="n/a (architecture from the YOLOv3 paper; weights generated locally)",
                accuracy=0.553,
                accuracy_source="COCO AP50 55.3 of YOLOv3-416 (Redmon and Farhadi 2018, Table 3); "
                                "THIS model's weights are random: its timing is real, its detections are not",
                notes="RANDOM WEIGHTS: use for timing only; detections are meaningless; the profiler times it for "
                      "the profile's 'yolov3' (PROFILE_MODELS), and a live 'yolov3' worker runs it"),
            ), _yolov3),
        ZooEntry(ModelConfig(
            name="ssd300-mobilenetv1", task="object-detection", onnx="model.onnx", input_name="images",
            input_height=300, input_width=300, pre="rgb255", post="boxes-scores", labels=(), score_threshold=0.5,
            iou_threshold=0.6, builder_version=BUILDER_VERSION,
            card=ModelCard(
                architecture="SSD300 with a MobileNetV1 backbone as published (Howard et al. 2017, Table 13; the "
                             "TF Object Detection API's ssd_mobilenet_v1_coco: 300x300 input, 6 box predictors, "
                             "1917 anchors, 90 COCO classes; 1.2 G mult-adds and 6.8 M parameters published)",
                weights="random", weights_source=_RANDOM,
                licence="n/a (architecture from the MobileNet and SSD papers; weights generated locally)",
                accuracy=0.34,
                accuracy_source="COCO AP50 estimate for SSD300-MobileNetV1: AP 19.3 (Howard et al. 2017, Table 13) "
                                "x the AP50/AP ratio 1.78 of SSD300 (Liu et al. 2016: 41.2/23.2); THIS model's "
                                "weights are random: its timing is real, its detections are not",
                notes="RANDOM WEIGHTS: use for timing only; the profiler times it for the profile's "
                      "'mobilenet-ssd' (PROFILE_MODELS); the live demo's real 'mobilenet-ssd' worker runs the "
                      "trained 512x512 face detector"),
            ), _ssd300),
        ZooEntry(ModelConfig(
            name="tiny-yolov2-voc", task="object-detection", onnx="model.onnx", input_name="images",
            input_height=416, input_width=416, pre="rgb255", post="boxes-scores", labels=(), score_threshold=0.5,
            iou_threshold=0.4, builder_version=BUILDER_VERSION,
            card=ModelCard(
                architecture="Tiny-YOLOv2 as published (Darknet's yolov2-tiny-voc.cfg: 416x416 input, 9 "
                             "convolutions, 13x13 grid, 5 anchors, 20 VOC classes; 6.97 GFLOP published)",
                weights="random", weights_source=_RANDOM,
                licence="n/a (architecture from yolov2-tiny-voc.cfg; weights generated locally)",
                accuracy=0.237,
                accuracy_source="COCO AP50 23.7 of Tiny YOLOv2 (416), Darknet project page (Redmon), measured on "
                                "its COCO sibling (yolov2-tiny.cfg, 5.41 GFLOP, same layers up to the last two); "
                                "THIS model's weights are random: its timing is real, its detections are not",
                notes="RANDOM WEIGHTS: use for timing only; the profiler times it for the profile's 'tiny-yolov2' "
                      "(PROFILE_MODELS); the live demo's real 'tiny-yolov2' worker runs the trained face detector"),
            ), _tiny_yolov2_voc),
        ZooEntry(ModelConfig(
            name="yolov3-tiny", task="object-detection", onnx="model.onnx", input_name="images", input_height=416,
            input_width=416, pre="rgb255", post="boxes-scores", labels=(), score_threshold=0.5,
            iou_threshold=0.45, builder_version=BUILDER_VERSION,
            card=ModelCard(
                architecture="YOLOv3-tiny-416 (7 conv + max-pool backbone, 2 detection scales, 80 classes, "
                             "2535 boxes)",
                weights="random", weights_source=_RANDOM,
                licence="n/a (architecture from yolov3-tiny.cfg; weights generated locally)",
                accuracy=0.331,
                accuracy_source="COCO AP50 33.1 of YOLOv3-tiny, Darknet project page (Redmon); THIS model's "
                                "weights are random: its timing is real, its detections are not",
                notes="RANDOM WEIGHTS: use for timing only; detections are meaningless (optional, not in the paper)"),
            ), _yolov3_tiny),
    ]


def fetch_face_api(cache_root: Path) -> Path:
    """Returns the folder holding face-api.js's detector weights, downloading the npm tarball once."""
    folder = cache_root / f"face-api-{FACE_API_VERSION}"
    if all((folder / f).is_file() for f in FACE_API_FILES):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: it fetches the face detector weights "
                           f"({FACE_API_PACKAGE}@{FACE_API_VERSION}); install nodejs and npm (scripts/setup.sh)")
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
        subprocess.run([npm, "pack", f"{FACE_API_PACKAGE}@{FACE_API_VERSION}", "--silent"], cwd=tmp,
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise RuntimeError(f"npm pack left {len(tarballs)} tarballs in {tmp}")
        staging = Path(tmp) / "out"
        staging.mkdir()
        with tarfile.open(tarballs[0]) as tar:
            for name in FACE_API_FILES:
                member = tar.getmember(_TARBALL_PATHS.get(name, f"package/model/{name}"))
                (staging / name).write_bytes(tar.extractfile(member).read())
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    return folder


def export_onnx(net, path: Path, size_hw: tuple[int, int]) -> None:
    """Exports a net to ONNX (legacy exporter, opset 17) with a dynamic batch axis."""
    import torch
    example = torch.zeros(1, 3, *size_hw)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=["detections"],
                          dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}})


def parity(net, path: Path, size_hw: tuple[int, int], batch: int = 2) -> float:
    """Returns the largest |ONNX Runtime - PyTorch| over one seeded random batch of `batch` frames."""
    import onnxruntime as ort
    import torch
    images = np.random.default_rng(0).uniform(0, 255, (batch, 3, *size_hw)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images})[0]
    if got.shape != expected.shape:
        raise RuntimeError(f"{path}: ONNX output {got.shape} differs from PyTorch {expected.shape}")
    return float(np.max(np.abs(got - expected)))


def _up_to_date(folder: Path) -> bool:
    try:
        config = read_config(folder)
    except (OSError, ValueError):
        return False
    return (config.builder_version == BUILDER_VERSION and config.onnx_path.is_file()
            and file_sha256(config.onnx_path) == config.card.onnx_sha256)


def build_one(entry: ZooEntry, models_dir: Path, cache: Path, log: Callable[[str], None]) -> ModelConfig:
    """Builds one model folder (export, parity check, config) atomically and returns its config."""
    config = entry.config
    folder = models_dir / config.name
    started = time.monotonic()
    net = entry.make_net(cache)
    size_hw = (config.input_height, config.input_width)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(net, onnx_path, size_hw)
        diff = parity(net, onnx_path, size_hw)
        if diff > 1e-3:
            raise RuntimeError(f"{config.name}: ONNX Runtime differs from PyTorch by {diff:.2e} (limit 1e-3)")
        card = replace(config.card, onnx_sha256=file_sha256(onnx_path), parity_max_abs_diff=diff,
                       gflop=count_gflop(onnx_path, *size_hw))
        built = replace(config, card=card, folder=Path(tmp))
        write_config(built)
        if folder.exists():
            shutil.rmtree(folder)
        Path(tmp).chmod(0o755)
        Path(tmp).rename(folder)
        Path(tmp).mkdir()  # TemporaryDirectory removes it on exit
    log(f"[zoo] built {config.name} in {time.monotonic() - started:.1f} s (ONNX vs PyTorch max |diff| {diff:.1e})")
    return read_config(folder)


def build(models_dir: Path | None = None, names: list[str] | None = None, force: bool = False,
          log: Callable[[str], None] = print) -> list[ModelConfig]:
    """Builds (or keeps, when up to date) the zoo's models and returns their configs."""
    root = Path(models_dir or default_models_dir())
    root.mkdir(parents=True, exist_ok=True)
    entries = [e for e in zoo_entries() if names is None or e.config.name in names]
    if names is not None and len(entries) != len(set(names)):
        known = [e.config.name for e in zoo_entries()]
        raise KeyError(f"unknown zoo model(s) {sorted(set(names) - {e.config.name for e in entries})}; known {known}")
    todo = [e for e in entries if force or not _up_to_date(root / e.config.name)]
    if not todo:
        log(f"[zoo] {len(entries)} models up to date in {root}")
        return [read_config(root / e.config.name) for e in entries]
    cache = fetch_face_api(root / ".cache")
    for entry in todo:
        build_one(entry, root, cache, log)
    return [read_config(root / e.config.name) for e in entries]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the zoo (idempotent, cached)")
    b.add_argument("--models-dir", type=Path, default=None)
    b.add_argument("--only", nargs="*", default=None, help="model names (default: all)")
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        build(args.models_dir, args.only, args.force)
    except (RuntimeError, KeyError, subprocess.CalledProcessError) as exc:
        print(f"[zoo] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
