"""Layers shared by the nets: TensorFlow 'SAME' padding computed for a fixed input size, conversion of
TensorFlow filter layouts (HWIO, depthwise HWC1) to PyTorch's (OIHW), and the seeded random
initialisation of the nets built without trained weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Returns TF 'SAME' (before, after) padding for one spatial axis; TF puts the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_weight(hwio: np.ndarray) -> torch.Tensor:
    """Returns a TF conv filter [kh, kw, in, out] as a PyTorch weight [out, in, kh, kw]."""
    return torch.from_numpy(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1))).float()


def depthwise_weight(hwc1: np.ndarray) -> torch.Tensor:
    """Returns a TF depthwise filter [kh, kw, ch, 1] as a PyTorch grouped weight [ch, 1, kh, kw]."""
    return torch.from_numpy(np.ascontiguousarray(hwc1.transpose(2, 3, 0, 1))).float()


class SameConv2d(nn.Module):
    """A Conv2d with TensorFlow 'SAME' padding for a known input size (odd pixel padded after)."""

    def __init__(self, size: int, cin: int, cout: int, kernel: int, stride: int, groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        before, after = same_padding(size, kernel, stride)
        self.pad = nn.ZeroPad2d((before, after, before, after)) if before or after else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=bias)
        self.out_size = -(-size // stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


OBJECTNESS_PRIOR = -4.59
"""log(0.01 / 0.99): the scored logits of a random head start there, so random nets report almost nothing."""


def init_random(net: nn.Module, heads: tuple[nn.Conv2d, ...], gen: torch.Generator, input_size: int,
                per_anchor: int, scored_from: int = 4) -> None:
    """Seeded He initialisation (biases zero), batch-norm statistics calibrated on one seeded random batch of
    `input_size` frames (so that activations stay finite through the layers), and each head's
    outputs (`per_anchor` per anchor, scored logits from `scored_from` on) at the objectness prior."""
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            fan_in = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            std = (2.0 / (1.01 * fan_in)) ** 0.5
            with torch.no_grad():
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * std)
                if mod.bias is not None:  # torch drew it from the global generator: not reproducible
                    mod.bias.zero_()
    for head in heads:
        with torch.no_grad():
            head.weight.mul_(0.01)
            bias = torch.zeros(head.out_channels // per_anchor, per_anchor)
            bias[:, scored_from:] = OBJECTNESS_PRIOR
            head.bias.copy_(bias.flatten())
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None  # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():
        net(torch.rand((2, 3, input_size, input_size), generator=gen) * 255.0)
    net.eval()
