"""YOLOv3 (Redmon & Farhadi 2018) at 416x416: the full net (Darknet-53, three scales) and YOLOv3-tiny
(two scales), built from the published definitions (yolov3.cfg, yolov3-tiny.cfg) with seeded random
weights; their compute and timing are real, their detections are not. Decoded in-graph to
[x1, y1, x2, y2, objectness, 80 class scores]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import init_random

INPUT_SIZE = 416
NUM_CLASSES = 80
# yolov3.cfg anchors in input pixels, per scale: stride 32 (13x13), 16 (26x26), 8 (52x52).
ANCHORS = (((116, 90), (156, 198), (373, 326)), ((30, 61), (62, 45), (59, 119)), ((10, 13), (16, 30), (33, 23)))
TINY_ANCHORS = (((81, 82), (135, 169), (344, 319)), ((10, 14), (23, 27), (37, 58)))


class ConvBN(nn.Module):
    """Darknet's convolutional block: conv (no bias), batch norm, leaky ReLU 0.1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), 0.1)


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a = ConvBN(ch, ch // 2, 1)
        self.b = ConvBN(ch // 2, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(ConvBN(cin, cout, 3, 2), *[_Residual(cout) for _ in range(blocks)])


class Darknet53(nn.Module):
    """Returns the stride-8, stride-16 and stride-32 feature maps (256, 512, 1024 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 32, 3)
        self.s1, self.s2 = _stage(32, 64, 1), _stage(64, 128, 2)
        self.s3, self.s4, self.s5 = _stage(128, 256, 8), _stage(256, 512, 8), _stage(512, 1024, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.s3(self.s2(self.s1(self.stem(x))))
        c4 = self.s4(c3)
        return c3, c4, self.s5(c4)


def _conv_set(cin: int, mid: int) -> nn.Sequential:
    """The five alternating 1x1/3x3 convolutions before each YOLO output."""
    return nn.Sequential(ConvBN(cin, mid, 1), ConvBN(mid, mid * 2, 3), ConvBN(mid * 2, mid, 1),
                         ConvBN(mid, mid * 2, 3), ConvBN(mid * 2, mid, 1))


class YoloV3(nn.Module):
    """The network; `forward` maps [N, 3, 416, 416] RGB 0..255 to [N, 10647, 85]."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.backbone = Darknet53()
        outputs = 3 * (5 + NUM_CLASSES)
        self.set5, self.set4, self.set3 = _conv_set(1024, 512), _conv_set(768, 256), _conv_set(384, 128)
        self.out5 = nn.Sequential(ConvBN(512, 1024, 3), nn.Conv2d(1024, outputs, 1))
        self.out4 = nn.Sequential(ConvBN(256, 512, 3), nn.Conv2d(512, outputs, 1))
        self.out3 = nn.Sequential(ConvBN(128, 256, 3), nn.Conv2d(256, outputs, 1))
        self.lat5, self.lat4 = ConvBN(512, 256, 1), ConvBN(256, 128, 1)
        init_random(self, (self.out5[1], self.out4[1], self.out3[1]), gen, INPUT_SIZE, 5 + NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c3, c4, c5 = self.backbone(images / 255.0)
        p5 = self.set5(c5)
        p4 = self.set4(torch.cat([F.interpolate(self.lat5(p5), scale_factor=2.0, mode="nearest"), c4], 1))
        p3 = self.set3(torch.cat([F.interpolate(self.lat4(p4), scale_factor=2.0, mode="nearest"), c3], 1))
        raw = (self.out5(p5), self.out4(p4), self.out3(p3))
        return torch.cat([_decode(r, a) for r, a in zip(raw, ANCHORS, strict=True)], dim=1)


def _decode(raw: torch.Tensor, anchors: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Returns one scale's [N, S*S*3, 85] boxes (relative x1, y1, x2, y2), objectness, class scores."""
    n, _, cells, _ = raw.shape
    g = raw.view(n, 3, 5 + NUM_CLASSES, cells, cells).permute(0, 3, 4, 1, 2)  # N, row, col, anchor, 85
    steps = torch.arange(cells, dtype=raw.dtype, device=raw.device)
    col, row = steps.view(1, 1, cells, 1), steps.view(1, cells, 1, 1)
    anchor = torch.tensor(anchors, dtype=raw.dtype, device=raw.device) / INPUT_SIZE
    cx = (col + torch.sigmoid(g[..., 0])) / cells
    cy = (row + torch.sigmoid(g[..., 1])) / cells
    w = torch.exp(g[..., 2]) * anchor[:, 0]
    h = torch.exp(g[..., 3]) * anchor[:, 1]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=4)
    return torch.cat([boxes, torch.sigmoid(g[..., 4:])], dim=4).reshape(n, -1, 5 + NUM_CLASSES)


class YoloV3Tiny(nn.Module):
    """YOLOv3-tiny; `forward` maps [N, 3, 416, 416] RGB 0..255 to [N, 2535, 85]."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        chans = [3, 16, 32, 64, 128, 256]
        self.early = nn.ModuleList(ConvBN(a, b, 3) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.conv512 = ConvBN(256, 512, 3)
        self.conv1024 = ConvBN(512, 1024, 3)
        self.neck = ConvBN(1024, 256, 1)
        outputs = 3 * (5 + NUM_CLASSES)
        self.out13 = nn.Sequential(ConvBN(256, 512, 3), nn.Conv2d(512, outputs, 1))
        self.lat = ConvBN(256, 128, 1)
        self.out26 = nn.Sequential(ConvBN(384, 256, 3), nn.Conv2d(256, outputs, 1))
        init_random(self, (self.out13[1], self.out26[1]), torch.Generator().manual_seed(seed), INPUT_SIZE,
                    5 + NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 255.0
        for i, conv in enumerate(self.early):
            x = conv(x)
            if i < 4:
                x = F.max_pool2d(x, 2, 2)
        route = x  # 26x26x256
        x = self.conv512(F.max_pool2d(route, 2, 2))
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)  # darknet maxpool size 2 stride 1
        p13 = self.neck(self.conv1024(x))
        p26 = torch.cat([F.interpolate(self.lat(p13), scale_factor=2.0, mode="nearest"), route], 1)
        raw = (self.out13(p13), self.out26(p26))
        return torch.cat([_decode(r, a) for r, a in zip(raw, TINY_ANCHORS, strict=True)], dim=1)
