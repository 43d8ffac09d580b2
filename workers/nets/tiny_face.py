"""face-api.js's TinyFaceDetector, a Tiny-YOLOv2 with depthwise-separable convolutions, ported from
`src/tinyYolov2/TinyYolov2Base.ts` (runMobilenet): 416x416 input, 13x13 grid, 5 anchors, one class
('face'); the grid is decoded in-graph to [x1, y1, x2, y2, score] relative to the (square) input."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_weight, depthwise_weight

INPUT_SIZE = 416
MEAN_RGB = (117.001, 114.697, 97.404)
ANCHORS = ((1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061), (4.266906, 5.178857),
           (9.041765, 10.66308))
_CHANNELS = [16, 32, 64, 128, 256, 512]


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


class _Separable(nn.Module):
    """face-api's depthwiseSeparableConv: pad 1, depthwise 3x3, pointwise 1x1, bias, leaky 0.1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _leaky(self.pointwise(self.depthwise(x)))


class TinyFaceDetector(nn.Module):
    """The network; `forward` maps [N, 3, 416, 416] RGB 0..255 to [N, 845, 5] decoded detections."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3)  # 'valid' padding, as face-api runs it
        self.convs = nn.ModuleList(_Separable(a, b) for a, b in zip(_CHANNELS[:-1], _CHANNELS[1:], strict=True))
        self.head = nn.Conv2d(512, 5 * len(ANCHORS), 1)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.register_buffer("anchors", torch.tensor(ANCHORS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _leaky(self.conv0((images - self.mean) / 255.0))
        for conv in self.convs:
            # TF maxPool 2x2/2 'SAME' pads after and ignores the pad: ceil_mode does the same.
            x = conv(F.max_pool2d(x, 2, 2, ceil_mode=True))
        # maxPool 2x2/1 'SAME': one pixel after; replicating the edge leaves every max unchanged.
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
        return self._decode(self.head(x))

    def _decode(self, grid: torch.Tensor) -> torch.Tensor:
        """Returns [N, cells*anchors, 5] in face-api's (row, col, anchor) order from the raw head."""
        n, _, cells, _ = grid.shape
        g = grid.view(n, len(ANCHORS), 5, cells, cells).permute(0, 3, 4, 1, 2)  # N, row, col, anchor, 5
        steps = torch.arange(cells, dtype=grid.dtype, device=grid.device)
        col = steps.view(1, 1, cells, 1)
        row = steps.view(1, cells, 1, 1)
        cx = (col + torch.sigmoid(g[..., 0])) / cells
        cy = (row + torch.sigmoid(g[..., 1])) / cells
        w = torch.exp(g[..., 2]) * self.anchors[:, 0] / cells
        h = torch.exp(g[..., 3]) * self.anchors[:, 1] / cells
        out = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, torch.sigmoid(g[..., 4])], dim=4)
        return out.reshape(n, -1, 5)

    def load_tfjs(self, w: dict[str, np.ndarray]) -> None:
        """Copies face-api's weights (`tiny_face_detector_model`) into the modules."""
        def set_(param: torch.Tensor, value: torch.Tensor) -> None:
            if param.shape != value.shape:
                raise ValueError(f"shape mismatch: {tuple(param.shape)} vs {tuple(value.shape)}")
            param.data.copy_(value)

        set_(self.conv0.weight, conv_weight(w["conv0/filters"]))
        set_(self.conv0.bias, torch.from_numpy(w["conv0/bias"]))
        for k, conv in enumerate(self.convs, start=1):
            set_(conv.depthwise.weight, depthwise_weight(w[f"conv{k}/depthwise_filter"]))
            set_(conv.pointwise.weight, conv_weight(w[f"conv{k}/pointwise_filter"]))
            set_(conv.pointwise.bias, torch.from_numpy(w[f"conv{k}/bias"]))
        set_(self.head.weight, conv_weight(w["conv8/filters"]))
        set_(self.head.bias, torch.from_numpy(w["conv8/bias"]))
