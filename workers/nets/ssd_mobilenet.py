"""SSD with a MobileNetV1 backbone: face-api.js's face detector, ported layer by layer from its TF.js
graph (`src/ssdMobilenetv1/*.ts`; 512x512 input, 5118 anchors, one class), and the published SSD300
(Howard et al. 2017, Table 13; the TF Object Detection API's ssd_mobilenet_v1_coco: 300x300, 1917
anchors, 90 COCO classes) with seeded random weights. Same layers (ReLU6, six box predictors on
Conv2d_11, Conv2d_13 and four extra layers), anchors decoded in-graph to relative [x1, y1, x2, y2]."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .layers import SameConv2d, conv_weight, depthwise_weight, init_random

INPUT_SIZE = 512
SSD300_SIZE = 300
COCO_CLASS_CHANNELS = 91  # background + 90 COCO ids
_BN_EPSILON = 0.0010000000474974513
# (channels in, channels out) of MobileNetV1's 13 depthwise/pointwise pairs; stride 2 at 2, 4, 6, 12.
_PAIRS = [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512),
          (512, 512), (512, 512), (512, 512), (512, 1024), (1024, 1024)]
_STRIDE2 = {2, 4, 6, 12}
# Prediction/Conv2d_k: (in, out, kernel, stride).
_EXTRA = [(1024, 256, 1, 1), (256, 512, 3, 2), (512, 128, 1, 1), (128, 256, 3, 2), (256, 128, 1, 1),
          (128, 256, 3, 2), (256, 64, 1, 1), (64, 128, 3, 2)]
_PREDICTOR_CHANNELS = [512, 1024, 512, 256, 256, 128]
_PREDICTOR_ANCHORS = [3, 6, 6, 6, 6, 6]


class _Pointwise(nn.Module):
    """face-api's pointwiseConvLayer: conv (BN folded into an offset) + ReLU6."""

    def __init__(self, size: int, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = SameConv2d(size, cin, cout, kernel, stride)
        self.out_size = self.conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.conv(x), 0.0, 6.0)


class _Depthwise(nn.Module):
    """face-api's depthwiseConvLayer: depthwise conv + batch norm (eps 1e-3) + ReLU6."""

    def __init__(self, size: int, ch: int, stride: int) -> None:
        super().__init__()
        self.conv = SameConv2d(size, ch, ch, 3, stride, groups=ch, bias=False)
        self.bn = nn.BatchNorm2d(ch, eps=_BN_EPSILON)
        self.out_size = self.conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.bn(self.conv(x)), 0.0, 6.0)


class SsdMobilenetV1(nn.Module):
    """The network; `forward` maps [N, 3, S, S] RGB 0..255 to decoded detections: face-api's (the
    defaults) [N, 5118, 5] (box, face score); with 91 class channels [N, A, 95] (box, 1, 90 class
    scores). `seed` (not None) gives random weights and the SSD anchors of `ssd_anchors`."""

    def __init__(self, input_size: int = INPUT_SIZE, class_channels: int = 3, seed: int | None = None) -> None:
        super().__init__()
        self.class_channels = class_channels
        self.conv0 = _Pointwise(input_size, 3, 32, 3, 2)
        size = self.conv0.out_size
        layers: list[nn.Module] = []
        for idx, (cin, cout) in enumerate(_PAIRS, start=1):
            dw = _Depthwise(size, cin, 2 if idx in _STRIDE2 else 1)
            size = dw.out_size
            layers += [dw, _Pointwise(size, cin, cout, 1, 1)]
        self.backbone = nn.ModuleList(layers)
        sizes = [-(-input_size // 16), size]  # Conv2d_11 (stride 16) and Conv2d_13 (stride 32)
        extras: list[nn.Module] = []
        for cin, cout, kernel, stride in _EXTRA:
            layer = _Pointwise(size, cin, cout, kernel, stride)
            size = layer.out_size
            extras.append(layer)
            if layer.conv.conv.stride[0] == 2:
                sizes.append(size)
        self.extras = nn.ModuleList(extras)
        self.box_predictors = nn.ModuleList(nn.Conv2d(c, a * 4, 1) for c, a in
                                            zip(_PREDICTOR_CHANNELS, _PREDICTOR_ANCHORS, strict=True))
        self.class_predictors = nn.ModuleList(nn.Conv2d(c, a * class_channels, 1) for c, a in
                                              zip(_PREDICTOR_CHANNELS, _PREDICTOR_ANCHORS, strict=True))
        n_anchors = sum(s * s * a for s, a in zip(sizes, _PREDICTOR_ANCHORS, strict=True))
        self.register_buffer("anchors", torch.zeros(n_anchors, 4))  # ymin, xmin, ymax, xmax (relative)
        if seed is not None:
            self.anchors.copy_(ssd_anchors(sizes))
            init_random(self, tuple(self.class_predictors), torch.Generator().manual_seed(seed), input_size,
                        class_channels, scored_from=0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv0(images / 127.5 - 1.0)
        conv11 = x
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i == 2 * 11 - 1:  # the pointwise half of pair 11
                conv11 = x
        feats = [conv11, x]
        y = x
        for i, layer in enumerate(self.extras):
            y = layer(y)
            if i % 2 == 1:
                feats.append(y)
        boxes = torch.cat([self._flat(p(f), 4) for p, f in zip(self.box_predictors, feats, strict=True)], 1)
        classes = torch.cat([self._flat(p(f), self.class_channels)
                             for p, f in zip(self.class_predictors, feats, strict=True)], 1)
        if self.class_channels == 3:  # face-api: the face score alone
            return torch.cat([self._decode(boxes), torch.sigmoid(classes[:, :, 1:2])], dim=2)
        ones = torch.ones_like(classes[:, :, :1])  # sigmoid class scores, no objectness: score = class score
        return torch.cat([self._decode(boxes), ones, torch.sigmoid(classes[:, :, 1:])], dim=2)

    @staticmethod
    def _flat(x: torch.Tensor, width: int) -> torch.Tensor:
        """Returns NCHW predictions flattened in TF's NHWC order to [N, H*W*anchors, width]."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, width)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Returns [x1, y1, x2, y2] from box codes (ty, tx, th, tw) with face-api's scale 10/5 priors."""
        a = self.anchors
        size_y, size_x = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        ctr_y, ctr_x = a[:, 0] + size_y / 2, a[:, 1] + size_x / 2
        cy = codes[..., 0] / 10 * size_y + ctr_y
        cx = codes[..., 1] / 10 * size_x + ctr_x
        half_h = torch.exp(codes[..., 2] / 5) * size_y / 2
        half_w = torch.exp(codes[..., 3] / 5) * size_x / 2
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)

    def load_tfjs(self, w: dict[str, np.ndarray]) -> None:
        """Copies face-api's weights (`ssd_mobilenetv1_model`) into the modules."""
        def set_(param: torch.Tensor, value: torch.Tensor) -> None:
            if param.shape != value.shape:
                raise ValueError(f"shape mismatch: {tuple(param.shape)} vs {tuple(value.shape)}")
            param.data.copy_(value)

        def pointwise(mod: _Pointwise, prefix: str) -> None:
            set_(mod.conv.conv.weight, conv_weight(w[f"{prefix}/weights"]))
            set_(mod.conv.conv.bias, torch.from_numpy(w[f"{prefix}/convolution_bn_offset"]))

        pointwise(self.conv0, "MobilenetV1/Conv2d_0_pointwise")
        for idx in range(1, 14):
            dw, pw = self.backbone[2 * idx - 2], self.backbone[2 * idx - 1]
            p = f"MobilenetV1/Conv2d_{idx}_depthwise"
            set_(dw.conv.conv.weight, depthwise_weight(w[f"{p}/depthwise_weights"]))
            set_(dw.bn.weight, torch.from_numpy(w[f"{p}/BatchNorm/gamma"]))
            set_(dw.bn.bias, torch.from_numpy(w[f"{p}/BatchNorm/beta"]))
            set_(dw.bn.running_mean, torch.from_numpy(w[f"{p}/BatchNorm/moving_mean"]))
            set_(dw.bn.running_var, torch.from_numpy(w[f"{p}/BatchNorm/moving_variance"]))
            pointwise(pw, f"MobilenetV1/Conv2d_{idx}_pointwise")
        for k, mod in enumerate(self.extras):
            pointwise(mod, f"Prediction/Conv2d_{k}_pointwise")
        for k in range(6):
            for mod, kind in ((self.box_predictors[k], "BoxEncodingPredictor"),
                              (self.class_predictors[k], "ClassPredictor")):
                set_(mod.weight, conv_weight(w[f"Prediction/BoxPredictor_{k}/{kind}/weights"]))
                set_(mod.bias, torch.from_numpy(w[f"Prediction/BoxPredictor_{k}/{kind}/biases"]))
        set_(self.anchors, torch.from_numpy(w["Output/extra_dim"][0].astype(np.float32)))


def ssd_anchors(sizes: list[int], min_scale: float = 0.2, max_scale: float = 0.95) -> torch.Tensor:
    """Returns the TF Object Detection API's SSD anchors (ssd_anchor_generator of ssd_mobilenet_v1_coco)
    for square feature maps of `sizes` cells, as [ymin, xmin, ymax, xmax] relative, in (row, col, anchor)
    order: 3 on the first map (scale 0.1 at 1:1, scale 0.2 at 2:1 and 1:2), 6 on the others (1:1, 2:1,
    1:2, 3:1, 1:3 and one between this scale and the next)."""
    layers = len(sizes)
    scales = [min_scale + (max_scale - min_scale) * i / (layers - 1) for i in range(layers)] + [1.0]
    out = []
    for i, cells in enumerate(sizes):
        if i == 0:
            shapes = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            shapes = [(scales[i], r) for r in (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)]
            shapes.append(((scales[i] * scales[i + 1]) ** 0.5, 1.0))
        hw = torch.tensor([(s / r ** 0.5, s * r ** 0.5) for s, r in shapes])  # height, width
        centres = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        ctr = torch.stack([cy, cx], dim=2).view(cells, cells, 1, 2)
        out.append(torch.cat([ctr - hw / 2, ctr + hw / 2], dim=3).reshape(-1, 4))
    return torch.cat(out)
