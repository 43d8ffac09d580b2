"""Pre-processing (JPEG bytes to the network's letterboxed NCHW tensor) and post-processing (the
network's decoded boxes to thresholded, non-max-suppressed detections in frame pixels)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .modelconfig import ModelConfig

MAX_FRAME_PIXELS = 40_000_000
_PRE_NMS_TOP_K = 1000


class FrameError(ValueError):
    """A frame that cannot be decoded: the client gets a 400 naming the problem."""


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the input frame
    score: float
    label: str

    def to_json(self) -> dict:
        return {"box": [round(v, 2) for v in self.box], "score": round(self.score, 4), "label": self.label}


@dataclass(frozen=True)
class Prepared:
    """One frame ready for the network, with the factor from network-input pixels to frame pixels."""

    tensor: np.ndarray  # [3, H, W] float32
    frame_height: int
    frame_width: int
    frame_per_input_px: float


def decode_jpeg(data: bytes, target: int) -> tuple[Image.Image, tuple[int, int]]:
    """Returns the decoded RGB image and the frame's (width, height); libjpeg's DCT scaling (draft) decodes near `target` pixels."""
    if not data.startswith(b"\xff\xd8"):
        raise FrameError("body is not a JPEG (no SOI marker)")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format != "JPEG":
            raise FrameError(f"body is a {img.format}, not a JPEG")
        if img.width * img.height > MAX_FRAME_PIXELS:
            raise FrameError(f"frame of {img.width}x{img.height} exceeds {MAX_FRAME_PIXELS} pixels")
        size = (img.width, img.height)
        img.draft("RGB", (target, target))
        img.load()
        return img.convert("RGB"), size
    except FrameError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FrameError(f"corrupt or truncated JPEG: {exc}") from exc


def prepare_jpeg(data: bytes, config: ModelConfig, out: np.ndarray | None = None) -> Prepared:
    """Returns a frame letterboxed into the network's square input: scaled to fit, padded bottom/right.
    `out` ([3, H, W] float32, e.g. a slot of a replica's batch buffer) receives the tensor if given."""
    side = max(config.input_height, config.input_width)
    img, (width, height) = decode_jpeg(data, side)
    scale = min(config.input_width / width, config.input_height / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(img.resize((new_w, new_h), Image.BILINEAR))  # uint8 HWC
    tensor = np.empty((3, config.input_height, config.input_width), np.float32) if out is None else out
    tensor[:, new_h:, :] = 0.0
    tensor[:, :new_h, new_w:] = 0.0
    tensor[:, :new_h, :new_w] = resized.transpose(2, 0, 1)  # one pass: uint8 -> float32
    if config.pre == "rgb01":
        tensor /= np.float32(255.0)
    return Prepared(tensor, height, width, 1.0 / scale)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Returns the indices kept by greedy non-max suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(raw: np.ndarray, config: ModelConfig, frame_per_input_px: float,
                frame_hw: tuple[int, int]) -> list[Detection]:
    """Returns detections from one image's [A, 5+C] output (relative x1 y1 x2 y2, score, class scores).

    Relative coordinates are scaled to network-input pixels, then by `frame_per_input_px` to frame
    pixels; boxes are clipped to the frame.
    """
    scores = raw[:, 4]
    labels = np.zeros(len(raw), dtype=np.int64)
    if raw.shape[1] > 5:
        labels = raw[:, 5:].argmax(axis=1)
        scores = scores * raw[np.arange(len(raw)), 5 + labels]
    candidates = np.flatnonzero(scores > config.score_threshold)
    if candidates.size > _PRE_NMS_TOP_K:
        candidates = candidates[np.argsort(-scores[candidates])[:_PRE_NMS_TOP_K]]
    in_w, in_h = config.input_width, config.input_height
    boxes = raw[candidates, :4] * (np.array([in_w, in_h, in_w, in_h], np.float32) * frame_per_input_px)
    height, width = frame_hw
    np.clip(boxes, 0.0, [width, height, width, height], out=boxes)
    kept = nms(boxes, scores[candidates], config.iou_threshold, config.max_detections)
    names = config.labels
    return [Detection(tuple(float(v) for v in boxes[k]), float(scores[candidates[k]]),
                      names[labels[candidates[k]]] if labels[candidates[k]] < len(names)
                      else f"class{labels[candidates[k]]}")
            for k in kept]
