"""Tiny-YOLOv2 as published (Darknet's yolov2-tiny-voc.cfg, Redmon & Farhadi 2017): 416x416 input,
nine full 3x3/1x1 convolutions with batch norm and leaky ReLU, six max-pools, a 13x13 grid of 5 anchors
and 20 VOC classes (~7 GFLOP a frame), built with seeded random weights: its compute and timing are real,
its detections are not. Decoded in-graph to [x1, y1, x2, y2, objectness, 20 class probabilities]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import init_random
from .yolov3 import ConvBN

INPUT_SIZE = 416
NUM_CLASSES = 20
# yolov2-tiny-voc.cfg [region] anchors, in grid cells (of 32 input pixels).
ANCHORS = ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52))
_CHANNELS = [3, 16, 32, 64, 128, 256, 512]


class TinyYoloV2(nn.Module):
    """The network; `forward` maps [N, 3, 416, 416] RGB 0..255 to [N, 845, 25]."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvBN(a, b, 3) for a, b in zip(_CHANNELS[:-1], _CHANNELS[1:], strict=True))
        self.conv7 = ConvBN(512, 1024, 3)
        self.conv8 = ConvBN(1024, 1024, 3)
        self.head = nn.Conv2d(1024, len(ANCHORS) * (5 + NUM_CLASSES), 1)
        self.register_buffer("anchors", torch.tensor(ANCHORS))
        init_random(self, (self.head,), torch.Generator().manual_seed(seed), INPUT_SIZE, 5 + NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 255.0
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < 5:
                x = F.max_pool2d(x, 2, 2)
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)  # darknet maxpool size 2 stride 1
        return self._decode(self.head(self.conv8(self.conv7(x))))

    def _decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Returns [N, cells*cells*anchors, 25] in (row, col, anchor) order from the raw 13x13 head."""
        n, _, cells, _ = raw.shape
        g = raw.view(n, len(ANCHORS), 5 + NUM_CLASSES, cells, cells).permute(0, 3, 4, 1, 2)
        steps = torch.arange(cells, dtype=raw.dtype, device=raw.device)
        col, row = steps.view(1, 1, cells, 1), steps.view(1, cells, 1, 1)
        cx = (col + torch.sigmoid(g[..., 0])) / cells
        cy = (row + torch.sigmoid(g[..., 1])) / cells
        w = torch.exp(g[..., 2]) * self.anchors[:, 0] / cells
        h = torch.exp(g[..., 3]) * self.anchors[:, 1] / cells
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=4)
        scores = torch.cat([torch.sigmoid(g[..., 4:5]), torch.softmax(g[..., 5:], dim=4)], dim=4)
        return torch.cat([boxes, scores], dim=4).reshape(n, -1, 5 + NUM_CLASSES)
