"""What an ASET agent file says about itself: the topology and state shape it was trained for, and its guard.

Pure Python (no torch): the checkpoint stores it as JSON, the ONNX export as a metadata property, and both
loaders refuse a file whose topology or state shape differs from the system they are asked to drive.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from scheduler.aset.state import StateSpec
from scheduler.core import POLICY_NAMES

ONNX_META_KEY = "aset_meta"


def agent_path(text: str | Path) -> Path:
    """Returns the ONNX agent file `text` names: the file itself, `agent.onnx` in a folder `train --out` wrote,
    or the .onnx beside a .pt checkpoint; raises ValueError when there is none."""
    p = Path(text)
    if p.is_dir():
        p = p / "agent.onnx"
    if p.suffix == ".pt":
        p = p.with_suffix(".onnx")
    if not p.is_file():
        raise ValueError(f"{text}: no ONNX agent there (expected agent.onnx, as `train --out` writes)")
    return p


class AgentMismatchError(ValueError):
    """An agent file was trained for another topology or state shape than the one it is asked to drive."""


@dataclass(frozen=True)
class AgentMeta:
    """The facts a loader needs to check and run an agent file."""

    topology: str
    state_shape: tuple[int, int]
    """(K windows, features per window)."""
    n_resources: int
    policy_names: tuple[str, ...]
    decision_window_s: float
    channels: int
    kernel_size: int
    hidden: int
    dueling: bool
    fallback_policy: int
    """Index of the static policy the guard falls back to (the best static in held-out validation)."""
    guard_margin: float
    """The agent's choice is taken only when its Q-value beats the fallback's by more than this (inf: never)."""
    lambda_per_min: float = 0.0
    trained_steps: int = 0
    train_s: float = 0.0
    resource_names: tuple[str, ...] = ()
    capacity_qps: tuple[float, ...] = ()
    """Capacities the state was normalised with: another profile file gives another state."""
    profiles: str = ""
    load_accounting: str = "rate"
    """The profile's load accounting the state was built with (files from before it existed: rate)."""

    def to_json(self) -> str:
        d = asdict(self)
        d["guard_margin"] = "inf" if self.guard_margin == float("inf") else self.guard_margin
        return json.dumps(d)

    @staticmethod
    def from_json(text: str) -> AgentMeta:
        d = json.loads(text)
        d["state_shape"] = tuple(d["state_shape"])
        d["policy_names"] = tuple(d["policy_names"])
        d["resource_names"] = tuple(d.get("resource_names", ()))
        d["capacity_qps"] = tuple(d.get("capacity_qps", ()))
        d["guard_margin"] = float(d["guard_margin"])
        return AgentMeta(**d)

    def _remedy(self) -> str:
        """What to do about a mismatch of profiles: name the agent's profile file where it recorded one."""
        return f"pass --profiles {self.profiles} or retrain" if self.profiles else "retrain it on this profile"

    def check_compatible(self, spec: StateSpec, source: str) -> None:
        """Raises AgentMismatchError unless the agent was trained for this topology and state shape."""
        if self.topology != spec.topology or tuple(self.state_shape) != spec.shape \
                or self.n_resources != spec.n_resources:
            raise AgentMismatchError(
                f"{source}: agent trained on topology {self.topology!r} (state {self.state_shape[0]}x"
                f"{self.state_shape[1]}, {self.n_resources} resources) cannot drive topology {spec.topology!r} "
                f"(state {spec.shape[0]}x{spec.shape[1]}, {spec.n_resources} resources); "
                f"train an agent for {spec.topology!r}")
        if self.resource_names and spec.resource_names and tuple(self.resource_names) != spec.resource_names:
            raise AgentMismatchError(f"{source}: agent trained on another placement of {self.topology!r} "
                                     f"(resources {', '.join(self.resource_names[:3])}, ...); retrain it")
        if self.capacity_qps and spec.capacity_qps and not _close(self.capacity_qps, spec.capacity_qps):
            raise AgentMismatchError(f"{source}: agent trained with the capacities of profile file {self.profiles!r}, "
                                     f"the system uses {spec.profiles!r}; {self._remedy()}")
        if self.load_accounting != spec.load_accounting:
            raise AgentMismatchError(f"{source}: agent trained with {self.load_accounting} load accounting, the system's "
                                     f"profile {spec.profiles!r} uses {spec.load_accounting}: its load feature means "
                                     f"another thing; {self._remedy()}")
        if tuple(self.policy_names) != POLICY_NAMES:
            raise AgentMismatchError(f"{source}: agent's actions {self.policy_names} differ from the "
                                     f"scheduler's policies {POLICY_NAMES}")


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))
