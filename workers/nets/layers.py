"""Layers shared by the ports: TensorFlow 'SAME' padding computed for a fixed input size, and
conversion of TensorFlow filter layouts (HWIO, depthwise HWC1) to PyTorch's (OIHW)."""

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
