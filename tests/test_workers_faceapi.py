"""The ports hold to the original: face-api.js itself (its TF.js bundle, run by Node on the CPU
backend) and the zoo's ONNX files give the same raw outputs on the astronaut photograph."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from skimage import data

from workers import zoo
from workers.nets.tiny_face import ANCHORS

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run face-api.js")]


def tf_resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """Returns TF.js's resizeBilinear (alignCorners and halfPixelCenters false) of an HxWx3 image."""
    h, w = img.shape[:2]
    ys, xs = np.arange(size) * (h / size), np.arange(size) * (w / size)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, dict]:
    configs = {c.name: c for c in zoo.build(names=["mobilenet-ssd", "tiny-yolov2"], log=lambda _: None)}
    cache = zoo.fetch_face_api(configs["tiny-yolov2"].folder.parent / ".cache")
    tmp = tmp_path_factory.mktemp("faceapi")
    data.astronaut().astype(np.uint8).tofile(tmp / "frame.rgb")
    script = Path(zoo.__file__).with_name("faceapi_reference.mjs")
    subprocess.run(["node", str(script), str(cache), str(tmp / "frame.rgb"), "512", "512", str(tmp / "out.json")],
                   check=True, capture_output=True, timeout=600)
    return json.loads((tmp / "out.json").read_text()), configs


def test_ssd_mobilenet_matches_face_api_js(reference) -> None:
    js, configs = reference
    session = ort.InferenceSession(str(configs["mobilenet-ssd"].onnx_path), providers=["CPUExecutionProvider"])
    frame = data.astronaut().astype(np.float32).transpose(2, 0, 1)[None].copy()  # already 512x512: no resize
    out = session.run(None, {"images": frame})[0][0]
    np.testing.assert_allclose(out[:, 4], js["ssd_scores"], atol=1e-4)
    ymin_xmin_ymax_xmax = np.array(js["ssd_boxes"])
    np.testing.assert_allclose(out[:, :4], ymin_xmin_ymax_xmax[:, [1, 0, 3, 2]], atol=1e-4)
    assert max(js["ssd_scores"]) > 0.9  # the face is there, so the comparison is not between empty outputs


def test_tiny_face_detector_matches_face_api_js(reference) -> None:
    js, configs = reference
    session = ort.InferenceSession(str(configs["tiny-yolov2"].onnx_path), providers=["CPUExecutionProvider"])
    frame = tf_resize_bilinear(data.astronaut().astype(np.float32), 416).transpose(2, 0, 1)[None]
    out = session.run(None, {"images": frame.astype(np.float32)})[0][0].reshape(13, 13, 5, 5)
    grid = np.array(js["tiny_grid"])[0].reshape(13, 13, 5, 5)  # row, col, anchor, (tx, ty, tw, th, score)
    sigmoid = 1 / (1 + np.exp(-grid))
    np.testing.assert_allclose(out[..., 4], sigmoid[..., 4], atol=1e-4)
    cols = np.arange(13).reshape(1, 13, 1)
    width = np.exp(grid[..., 2]) * np.array(ANCHORS)[:, 0] / 13
    np.testing.assert_allclose(out[..., 0], (cols + sigmoid[..., 0]) / 13 - width / 2, atol=1e-4)
    assert sigmoid[..., 4].max() > 0.9
