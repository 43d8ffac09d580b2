"""The Q-network: two 1-D convolutions over the K stacked windows, then a (dueling) fully connected head.

Owns the architecture only; input [batch, K, features], output one Q-value per static policy.
"""

from __future__ import annotations

import torch
from torch import nn


class QNetwork(nn.Module):
    """Q(s, .) for a state of K windows x F features and one action per static policy."""

    def __init__(self, history: int, n_features: int, n_actions: int, channels: int = 64,
                 kernel_size: int = 2, hidden: int = 128, dueling: bool = True) -> None:
        super().__init__()
        self.dueling = dueling
        self.conv = nn.Sequential(
            nn.Conv1d(n_features, channels, kernel_size), nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size), nn.ReLU(), nn.Flatten(),
        )
        flat = channels * (history - 2 * (kernel_size - 1))
        self.advantage = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))
        self.value = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z = self.conv(obs.transpose(1, 2))  # convolve over time: channels = features
        a = self.advantage(z)
        if self.value is None:
            return a
        return self.value(z) + a - a.mean(dim=1, keepdim=True)
