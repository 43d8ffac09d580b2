"""The zoo's real models: ONNX Runtime matches the PyTorch ports at batch 1 and 4, the trained
face detectors find the astronaut's face (scikit-image's photograph) where it is, boxes follow
the frame through letterboxing and mirroring, and the zoo build is idempotent; the published
architectures (random weights) have their published compute and report nothing."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from skimage import data

from workers import zoo
from workers.engine import OnnxProcessor, Query
from workers.modelconfig import file_sha256

FACE_MODELS = ["tiny-yolov2", "mobilenet-ssd"]
# The face in skimage.data.astronaut() (512x512), checked by eye on the image: x 180-266, y 72-178.
FACE_BOX = (180.0, 72.0, 266.0, 178.0)


@pytest.fixture(scope="module")
def models() -> dict:
    configs = zoo.build(names=FACE_MODELS, log=lambda _: None)
    return {c.name: c for c in configs}


@pytest.fixture(scope="module")
def processors(models) -> dict:
    return {name: OnnxProcessor(cfg, "cpu", threads=1) for name, cfg in models.items()}


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _detect(proc: OnnxProcessor, frames: list[bytes]):
    return proc.process([Query("s", str(i), f, None, 0.0, 0) for i, f in enumerate(frames)])


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("name", FACE_MODELS)
def test_onnx_matches_pytorch_at_batch_1_and_4(models, name: str) -> None:
    cfg = models[name]
    cache = zoo.fetch_face_api(cfg.folder.parent / ".cache")
    net = {"tiny-yolov2": zoo._tiny, "mobilenet-ssd": zoo._ssd}[name](cache)
    session = ort.InferenceSession(str(cfg.onnx_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).uniform(0, 255, (4, 3, cfg.input_height, cfg.input_width)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    got4 = session.run(None, {"images": images})[0]
    got1 = session.run(None, {"images": images[2:3]})[0]
    assert got4.shape == expected.shape == (4, {"tiny-yolov2": 845, "mobilenet-ssd": 5118}[name], 5)
    np.testing.assert_allclose(got4, expected, atol=1e-3)
    np.testing.assert_allclose(got1[0], got4[2], atol=1e-4)


@pytest.mark.parametrize("name", FACE_MODELS)
def test_trained_detector_finds_the_astronauts_face(processors, name: str) -> None:
    (outcome,) = _detect(processors[name], [_jpeg(data.astronaut())])
    assert outcome.error is None and outcome.batch_size == 1
    assert len(outcome.detections) == 1, outcome.detections
    face = outcome.detections[0]
    assert face.label == "face" and face.score > 0.9
    assert _iou(face.box, FACE_BOX) > 0.5, face.box


@pytest.mark.parametrize("name", FACE_MODELS)
def test_boxes_follow_the_face_through_letterbox_and_mirror(processors, name: str) -> None:
    astro = data.astronaut()
    canvas = np.full((600, 900, 3), 128, np.uint8)
    canvas[50:562, 300:812] = astro
    base, moved, mirrored = _detect(processors[name], [_jpeg(astro), _jpeg(canvas), _jpeg(astro[:, ::-1].copy())])
    assert base.batch_size == moved.batch_size == 3
    b, m, r = base.detections[0].box, moved.detections[0].box, mirrored.detections[0].box
    # The wider frame reaches the network scaled by 512/900, so the box is close, not identical.
    assert _iou(m, (b[0] + 300, b[1] + 50, b[2] + 300, b[3] + 50)) > 0.6, (m, b)
    assert _iou(r, (512 - b[2], b[1], 512 - b[0], b[3])) > 0.75, (r, b)
    assert _iou(m, FACE_BOX) == 0.0  # the shift is real: the old place is empty


@pytest.mark.parametrize("name", FACE_MODELS)
def test_a_frame_without_faces_gives_no_detections(processors, name: str) -> None:
    rocket = data.astronaut()[0:300, 350:512]  # the shuttle and the sky, no person
    (outcome,) = _detect(processors[name], [_jpeg(np.ascontiguousarray(rocket))])
    assert outcome.error is None and outcome.detections == ()


def test_a_batch_of_four_reports_four_and_keeps_bad_frames_apart(processors) -> None:
    good = _jpeg(data.astronaut())
    outcomes = _detect(processors["tiny-yolov2"], [good, b"\xff\xd8garbage", good, good])
    assert [o.batch_size for o in outcomes] == [4, 4, 4, 4]
    assert [o.error is None for o in outcomes] == [True, False, True, True]
    assert "corrupt" in outcomes[1].error
    assert [len(o.detections) for o in outcomes] == [1, 0, 1, 1]


def test_zoo_build_is_idempotent(models) -> None:
    cfg = models["tiny-yolov2"]
    mtime, sha = cfg.onnx_path.stat().st_mtime_ns, file_sha256(cfg.onnx_path)
    again = {c.name: c for c in zoo.build(names=["tiny-yolov2"], log=lambda _: None)}
    assert again["tiny-yolov2"].onnx_path.stat().st_mtime_ns == mtime
    assert again["tiny-yolov2"].card.onnx_sha256 == sha
    assert cfg.card.parity_max_abs_diff is not None and cfg.card.parity_max_abs_diff < 1e-3


def test_cards_say_which_weights_are_trained_and_which_random() -> None:
    cards = {e.config.name: e.config.card for e in zoo.zoo_entries()}
    assert set(cards) == {"mobilenet-ssd", "tiny-yolov2", "yolov3", "yolov3-tiny", "ssd300-mobilenetv1",
                          "tiny-yolov2-voc"}
    for name in ("ssd300-mobilenetv1", "tiny-yolov2-voc"):
        assert cards[name].weights == "random" and "RANDOM WEIGHTS" in cards[name].notes
    assert cards["yolov3-tiny"].weights == "random"
    assert cards["mobilenet-ssd"].weights == cards["tiny-yolov2"].weights == "trained"
    assert cards["mobilenet-ssd"].licence == "MIT" and "face-api" in cards["tiny-yolov2"].weights_source
    assert cards["yolov3"].weights == "random"
    assert "timing is real" in cards["yolov3"].accuracy_source and "not" in cards["yolov3"].accuracy_source


# Published compute (GFLOP = 2 x multiply-accumulates) and parameters: SSD300-MobileNetV1 1.2 G mult-adds and
# 6.8 M parameters (Howard et al. 2017, Table 13); Darknet's own counts for yolov2-tiny-voc.cfg (6.97),
# yolov3.cfg at 416 (65.86) and yolov3-tiny.cfg at 416 (5.56).
PUBLISHED = {"ssd300-mobilenetv1": (2.4, (1917, 95), 6.8e6), "tiny-yolov2-voc": (6.97, (845, 25), 15.86e6),
             "yolov3": (65.86, (10647, 85), 61.9e6)}


@pytest.fixture(scope="module")
def published() -> dict:
    return {c.name: c for c in zoo.build(names=list(PUBLISHED), log=lambda _: None)}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_architectures_have_their_published_compute(published, name: str) -> None:
    gflop, shape, params = PUBLISHED[name]
    cfg = published[name]
    assert cfg.card.gflop == pytest.approx(gflop, rel=0.04)
    net = {e.config.name: e for e in zoo.zoo_entries()}[name].make_net(cfg.folder.parent / ".cache")
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(params, rel=0.02)
    session = ort.InferenceSession(str(cfg.onnx_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).uniform(0, 255, (2, 3, cfg.input_height, cfg.input_width)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    got = session.run(None, {"images": images})[0]
    assert got.shape == (2, *shape)
    np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("name", ["ssd300-mobilenetv1", "tiny-yolov2-voc"])
def test_random_weight_detectors_report_nothing_on_a_photograph(published, name: str) -> None:
    (outcome,) = _detect(OnnxProcessor(published[name], "cpu", threads=1), [_jpeg(data.astronaut())])
    assert outcome.error is None and outcome.detections == ()


def test_every_profile_model_is_timed_on_a_zoo_model_of_its_architecture() -> None:
    cards = {e.config.name: e.config for e in zoo.zoo_entries()}
    assert zoo.PROFILE_MODELS == {"mobilenet-ssd": "ssd300-mobilenetv1", "tiny-yolov2": "tiny-yolov2-voc",
                                  "yolov3": "yolov3"}
    for profile_model, zoo_model in zoo.PROFILE_MODELS.items():
        assert f"'{profile_model}'" in cards[zoo_model].card.notes  # the card says what it is timed for


@pytest.mark.parametrize("name", ["ssd300-mobilenetv1", "tiny-yolov2-voc", "yolov3-tiny"])
def test_random_weights_depend_on_the_zoo_seed_alone(name: str) -> None:
    entry = {e.config.name: e for e in zoo.zoo_entries()}[name]
    torch.manual_seed(1)
    a = entry.make_net(None).state_dict()
    torch.manual_seed(2)  # torch's global generator must not reach the weights
    b = entry.make_net(None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
