"""Test helper: ONNX 'agents' with constant Q-values, that always pick one policy (no torch needed)."""

from __future__ import annotations

import numpy as np

from scheduler.core import POLICY_NAMES, policy_index


def constant_agent(path, system, best: str, window_s: float = 0.2, topology: str | None = None):
    """Writes an ONNX 'agent' whose Q-values are constant: it always prefers `best`."""
    import onnx
    from onnx import TensorProto, helper

    from scheduler.aset.meta import ONNX_META_KEY, AgentMeta
    from scheduler.aset.state import StateSpec

    shape = StateSpec.of(system, history=2).shape
    q = np.zeros((1, len(POLICY_NAMES)), np.float32)
    q[0, policy_index(best)] = 1.0
    nodes = [
        helper.make_node("ReduceSum", ["state", "axes"], ["s"], keepdims=0),
        helper.make_node("Unsqueeze", ["s", "one"], ["s1"]),
        helper.make_node("Mul", ["s1", "zero"], ["z"]),
        helper.make_node("Add", ["z", "q"], ["q_values"]),
    ]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("q", TensorProto.FLOAT, list(q.shape), q.ravel().tolist()),
    ]
    graph = helper.make_graph(
        nodes,
        "constant-agent",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["batch", len(POLICY_NAMES)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = AgentMeta(
        topology=topology or system.topology.name,
        state_shape=shape,
        n_resources=system.n_resources,
        policy_names=POLICY_NAMES,
        decision_window_s=window_s,
        channels=1,
        kernel_size=1,
        hidden=1,
        dueling=False,
        fallback_policy=policy_index("least-impedance"),
        guard_margin=0.0,
        load_accounting=system.profiles.load_accounting,
    )
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, meta.to_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
