"""Running an agent without torch: ONNX Runtime Q-values, the fallback guard, and the live controller.

`OnnxPolicy` maps a state to an action; `AsetController` is what a live scheduler holds: it turns each
window's measurement into the state (scheduler.aset.state) and returns the policy for the next window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from scheduler.aset.meta import ONNX_META_KEY, AgentMeta
from scheduler.aset.state import StateBuilder, StateSpec
from scheduler.system import SystemModel
from scheduler.window import WindowMeasurement


class AgentFileError(ValueError):
    """A file given as an ASET agent is not one: unreadable, empty, not ONNX, or ONNX without the agent's metadata."""


class OnnxPolicy:
    """An exported agent: Q-values from ONNX Runtime (one CPU thread) and the guarded greedy action.

    `model` is the file's content when the caller already holds it (a sweep ships the bytes); `path` then
    only names it in errors. Anything that is not an exported agent raises AgentFileError naming the file.
    """

    def __init__(self, path: str | Path, spec: StateSpec | None = None, guard: bool = True,
                 model: bytes | None = None) -> None:
        if model is None:
            try:
                model = Path(path).read_bytes()
            except OSError as exc:
                raise AgentFileError(f"{path}: cannot read the agent file: {exc.strerror}") from None
        self.session = _session(model, str(path))
        props = self.session.get_modelmeta().custom_metadata_map
        if ONNX_META_KEY not in props:
            raise AgentFileError(f"{path}: ONNX file has no {ONNX_META_KEY!r} metadata, so it is not an ASET agent; "
                                 "export one with training.export.export_onnx")
        try:
            self.meta = AgentMeta.from_json(props[ONNX_META_KEY])
        except (ValueError, TypeError, KeyError) as exc:
            raise AgentFileError(f"{path}: the agent's {ONNX_META_KEY!r} metadata is unreadable ({exc!r})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3 or list(inputs[0].shape[1:]) != list(self.meta.state_shape):
            raise AgentFileError(f"{path}: the network's input {[i.shape for i in inputs]} is not the "
                                 f"[batch, {self.meta.state_shape[0]}, {self.meta.state_shape[1]}] state its "
                                 "metadata declares")
        if spec is not None:
            self.meta.check_compatible(spec, str(path))
        self.guard = guard
        self._input = inputs[0].name

    def q_values(self, state: np.ndarray) -> np.ndarray:
        """Returns Q-values [actions] for one state [K, F] (or [batch, actions] for [batch, K, F])."""
        x = np.asarray(state, dtype=np.float32)
        single = x.ndim == 2
        q = self.session.run(None, {self._input: x[None] if single else x})[0]
        return q[0] if single else q

    def act(self, state: np.ndarray) -> int:
        """Returns the greedy action, or the fallback policy unless the greedy one beats it by the margin."""
        q = self.q_values(state)
        return guarded_action(q, self.meta.fallback_policy, self.meta.guard_margin if self.guard else 0.0)


def guarded_action(q: np.ndarray, fallback: int, margin: float) -> int:
    """Returns argmax q if q[argmax] - q[fallback] > margin, else fallback (margin 0: plain greedy)."""
    best = int(np.argmax(q))
    if margin <= 0.0:
        return best
    return best if q[best] - q[fallback] > margin else int(fallback)


def _session(model: bytes, source: str) -> ort.InferenceSession:
    """Returns ONNX Runtime's session (one CPU thread) for a model's bytes; raises AgentFileError naming `source`."""
    if not model:
        raise AgentFileError(f"{source}: the agent file is empty")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # its own warnings about a broken file would repeat what the error says
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors derive from Exception alone
        reason = " ".join(str(exc).split(" : ")[-1].split())
        raise AgentFileError(f"{source}: not an ONNX agent file (ONNX Runtime: {reason})") from None


@dataclass
class AsetController:
    """Per scheduler: feed each decision window's measurement, get the policy index for the next window."""

    policy: OnnxPolicy
    builder: StateBuilder
    last_features: np.ndarray | None = None
    """The encoded features of the last window decided on (the newest row of the state)."""
    last_q: np.ndarray | None = None
    """The agent's Q-values at the last decision."""

    @staticmethod
    def load(path: str | Path, spec: StateSpec) -> AsetController:
        return AsetController(OnnxPolicy(path, spec), StateBuilder(spec))

    @staticmethod
    def for_system(path: str | Path, system: SystemModel) -> AsetController:
        """Returns the controller of an agent file for a system (history read from the file; mismatch refused).

        The caller's window must last `decision_window_s`: `decide` is a live.antenna PolicyChooser.
        """
        policy = OnnxPolicy(path)
        spec = StateSpec.of(system, history=policy.meta.state_shape[0])
        policy.meta.check_compatible(spec, str(path))
        return AsetController(policy, StateBuilder(spec))

    @property
    def decision_window_s(self) -> float:
        return self.policy.meta.decision_window_s

    def first_action(self) -> int:
        """Returns the policy for the first window (state of an idle system)."""
        return self.policy.act(self.builder.observation())

    def decide(self, window: WindowMeasurement) -> int:
        """Pushes the window just ended and returns the policy for the next one."""
        state = self.builder.push(window)
        self.last_features = state[-1]
        self.last_q = self.policy.q_values(state)
        meta = self.policy.meta
        return guarded_action(self.last_q, meta.fallback_policy, meta.guard_margin if self.policy.guard else 0.0)
