"""The replay buffer: a ring of transitions in numpy, sampled into a typed batch of tensors.

Stores `terminated` only: a truncated episode (horizon reached) still bootstraps from its next state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class ReplayBatch(NamedTuple):
    """A minibatch of transitions as tensors."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    """1.0 where the episode ended in the next state (no bootstrap), 0.0 otherwise (truncation included)."""


class ReplayBuffer:
    """Fixed-size ring buffer of (obs, action, reward, next_obs, terminated)."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rng = rng
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.pos = 0
        self.full = False

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.pos
        self.obs[i], self.next_obs[i] = obs, next_obs
        self.actions[i], self.rewards[i], self.terminated[i] = action, reward, float(terminated)
        self.pos = (i + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int) -> ReplayBatch:
        """Returns batch_size transitions drawn uniformly with replacement."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self.rng.integers(0, len(self), size=batch_size)
        return ReplayBatch(obs=torch.from_numpy(self.obs[idx]), actions=torch.from_numpy(self.actions[idx]),
                           rewards=torch.from_numpy(self.rewards[idx]), next_obs=torch.from_numpy(self.next_obs[idx]),
                           terminated=torch.from_numpy(self.terminated[idx]))
