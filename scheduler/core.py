"""Feasibility (the four constraints of docs/concepts.md) and the seven static policies behind one interface, with the
policy names every command accepts (the seven, `aset`, `all`) and the check of a command's choice.

`Scheduler.decide` is the only place a stream is bound: the simulator, the live schedulers and ASET call
it with the policy of the moment and the current load; it never reads the clock or a global RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from scheduler.names import (  # defined there (no heavy import), read from here by most callers
    ALL,
    ASET,
    POLICY_NAMES,
)
from scheduler.system import SystemModel

REJECT_REASONS = ("task", "accuracy", "delay", "capacity")
"""Why a stream found no binding: the first constraint, in this order, that left no resource."""

@dataclass(frozen=True)
class StreamRequest:
    """What a scheduler knows of a new stream when it binds it."""

    antenna: int
    fps: float
    """rho_i: the stream's query rate."""
    frame_bytes: float
    """zeta_i: the size of one query."""
    max_delay_ms: float
    """D_i: the end-to-end delay budget of each query."""
    min_accuracy: float
    task: int = 0
    """Index into SystemModel.tasks (-1: a task no resource implements)."""


@dataclass(frozen=True)
class Decision:
    """A binding, or a reject (`resource == -1`) with the constraint that caused it."""

    resource: int
    reason: str
    expected_ms: float
    load_qps: float = 0.0
    """eta_v^i x rho_i: the load the stream declares on the resource (what `LoadState.bind` adds; 0 if rejected)."""

    @property
    def rejected(self) -> bool:
        return self.resource < 0


class Candidates:
    """The feasible resources of one decision; the figures policies rank them by are computed on demand."""

    __slots__ = ("_load", "_system", "antenna", "expected_ms", "index", "stream_load")

    def __init__(self, system: SystemModel, antenna: int, index: np.ndarray, expected_ms: np.ndarray,
                 load_qps: np.ndarray, stream_load: np.ndarray) -> None:
        self._system, self.antenna, self.index, self.expected_ms = system, antenna, index, expected_ms
        self._load = load_qps
        self.stream_load = stream_load
        """eta_v^i x rho_i for each candidate: the load the stream would declare on it."""

    @property
    def net_ms(self) -> np.ndarray:
        return self._system.net_ms[self.antenna, self.index]

    @property
    def load_after(self) -> np.ndarray:
        """(L + eta x rho) / C for each candidate, after binding the stream."""
        return (self._load[self.index] + self.stream_load) / self._system.capacity_qps[self.index]

    @property
    def cost(self) -> np.ndarray:
        """Hardware cost of the stream's queries per second on each candidate: the resource's cost per (nominal)
        query x eta_v^i x rho_i. Under input-time accounting a query's share of the hardware is its eta, so the
        ranking does not depend on the profile's nominal frame; under rate accounting it is the cost per query
        x rho_i, the same ranking as the cost per query."""
        return self._system.cost_per_query[self.index] * self.stream_load


@njit(cache=True)
def _feasible(static_ms: np.ndarray, ms_per_byte: np.ndarray, task: np.ndarray, accuracy: np.ndarray,
              capacity_qps: np.ndarray, load_qps: np.ndarray, eta_weights: np.ndarray, req_task: int,
              min_accuracy: float, max_delay_ms: float, frame_bytes: float, fps: float,
              headroom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Returns (feasible resources, their expected latency, the stream's load on each, index of the constraint
    that removed the last).

    The four constraints are checked in the order of REJECT_REASONS; when no resource passes them all,
    the fourth value names the first constraint after which none was left. Capacity, with
    eta_r = eta_weights[0, r] + eta_weights[1, r] x frame_bytes: L_r + headroom x fps x eta_r <= C_r; the
    stream's load is fps x eta_r.
    """
    n = len(static_ms)
    idx = np.empty(n, dtype=np.int64)
    exp = np.empty(n)
    add = np.empty(n)
    reserved = headroom * fps
    survivors = np.zeros(4, dtype=np.int64)
    k = 0
    for r in range(n):
        e = static_ms[r] + ms_per_byte[r] * frame_bytes
        if task[r] != req_task:
            continue
        survivors[0] += 1
        if accuracy[r] < min_accuracy:
            continue
        survivors[1] += 1
        if e > max_delay_ms:
            continue
        survivors[2] += 1
        eta = eta_weights[0, r] + eta_weights[1, r] * frame_bytes
        if load_qps[r] + reserved * eta > capacity_qps[r]:
            continue
        survivors[3] += 1
        idx[k] = r
        exp[k] = e
        add[k] = fps * eta
        k += 1
    failed_at = 0
    while failed_at < 3 and survivors[failed_at] > 0:
        failed_at += 1
    return idx[:k], exp[:k], add[:k], failed_at


PolicyFn = Callable[[Candidates, np.random.Generator], int]


def _weighted_pick(weights: np.ndarray, rng: np.random.Generator) -> int:
    cum = np.cumsum(weights)
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right").clip(0, len(cum) - 1))


def _first(primary: np.ndarray, expected_ms: np.ndarray) -> int:
    """Returns the position of the smallest primary key; ties go to the smaller expected latency."""
    return int(np.lexsort((expected_ms, primary))[0])


POLICIES: dict[str, PolicyFn] = {
    # Smallest network delay to the cluster; among a cluster's variants the fastest.
    "closest": lambda c, rng: _first(c.net_ms, c.expected_ms),
    # Least loaded relative to capacity once the stream is added.
    "load-balancing": lambda c, rng: _first(c.load_after, c.expected_ms),
    # Largest network delay that still meets the budget: keeps the edge free for tight streams.
    "farthest": lambda c, rng: _first(-c.net_ms, c.expected_ms),
    # Lowest hardware cost of the stream's queries.
    "cheaper": lambda c, rng: _first(c.cost, c.expected_ms),
    # Random, with probability proportional to 1 / expected end-to-end latency.
    "random-proportional-latency": lambda c, rng: _weighted_pick(1.0 / np.maximum(c.expected_ms, 1e-3), rng),
    # Random, with probability proportional to the fraction of capacity left free after binding.
    "random-proportional-load": lambda c, rng: _weighted_pick(np.maximum(1.0 - c.load_after, 1e-3), rng),
    # Smallest expected end-to-end latency (network, transmission and processing).
    "least-impedance": lambda c, rng: int(np.argmin(c.expected_ms)),
}


def policy_index(name: str) -> int:
    """Returns the action index of a policy name; raises ValueError naming the known ones."""
    try:
        return POLICY_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}") from None


def check_policy(policy: str | None, agent: object | None, default: str, *, allow_all: bool = False) -> str:
    """Returns the effective policy name of a command: `aset` with an agent (alone, an agent implies it),
    `default` with neither; refuses `aset` without an agent, an agent with a static policy and unknown names.
    With `allow_all`, `all` (every static policy, then the agent if any) is accepted too."""
    if agent is not None:
        if policy in (ASET, None) or (allow_all and policy == ALL):
            return ASET if policy is None else policy
        also = " or all" if allow_all else " (or leave --policy out)"
        raise ValueError(f"--agent {agent} picks the policy of every window: use --policy aset{also}, "
                         f"not --policy {policy}")
    if policy == ASET:
        raise ValueError("--policy aset needs --agent FILE.onnx (an agent exported by `run_testbed.py train`)")
    policy = default if policy is None else policy
    if not (allow_all and policy == ALL):
        policy_index(policy)
    return policy


class Scheduler:
    """Binds streams to resources of one system model with any static policy."""

    def __init__(self, system: SystemModel, rng: np.random.Generator, capacity_headroom: float = 1.0) -> None:
        self.system = system
        self.rng = rng
        self.capacity_headroom = capacity_headroom
        """Factor on a stream's load in the capacity check only (>= 1 over-reserves; not the paper's eta,
        which is the profile's per-variant weight, `SystemModel.eta_weights`)."""

    def candidates(self, req: StreamRequest, load_qps: np.ndarray) -> tuple[Candidates, str]:
        """Returns the feasible resources and, when there are none, the constraint that removed the last."""
        s = self.system
        idx, expected, add, failed_at = _feasible(s.static_ms[req.antenna], s.ms_per_byte[req.antenna], s.task,
                                                  s.accuracy, s.capacity_qps, load_qps, s.eta_weights, req.task,
                                                  req.min_accuracy, req.max_delay_ms, req.frame_bytes, req.fps,
                                                  self.capacity_headroom)
        reason = REJECT_REASONS[failed_at] if len(idx) == 0 else ""
        return Candidates(s, req.antenna, idx, expected, load_qps, add), reason

    def decide(self, req: StreamRequest, policy: int, load_qps: np.ndarray) -> Decision:
        """Returns the binding the policy (an index into POLICY_NAMES) picks, or a reject."""
        cands, reason = self.candidates(req, load_qps)
        if reason:
            return Decision(resource=-1, reason=reason, expected_ms=float("nan"))
        pick = POLICIES[POLICY_NAMES[policy]](cands, self.rng)
        return Decision(resource=int(cands.index[pick]), reason="", expected_ms=float(cands.expected_ms[pick]),
                        load_qps=float(cands.stream_load[pick]))


@dataclass
class LoadState:
    """Declared load per resource, L_vn: the sum of eta x rho (`Decision.load_qps`) and the count of the streams
    bound to it."""

    load_qps: np.ndarray
    streams: np.ndarray

    @staticmethod
    def empty(n_resources: int) -> LoadState:
        return LoadState(load_qps=np.zeros(n_resources), streams=np.zeros(n_resources, dtype=np.int64))

    def bind(self, resource: int, load_qps: float) -> None:
        self.load_qps[resource] += load_qps
        self.streams[resource] += 1

    def release(self, resource: int, load_qps: float) -> None:
        self.load_qps[resource] = max(0.0, self.load_qps[resource] - load_qps)
        self.streams[resource] -= 1
