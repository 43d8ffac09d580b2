"""Counts a model's compute from its ONNX graph: the multiply-accumulates of every convolution and
matrix product for one frame, with each tensor's shape as ONNX Runtime computes it on one frame (ONNX
shape inference loses the spatial sizes after the exporter's computed paddings). GFLOP = 2 x MACs / 1e9,
as Darknet and the MobileNet paper count (convolutions and products only; activations, pooling and
decoding excluded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COUNTED = ("Conv", "Gemm", "MatMul")


def _shapes(model, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Returns the shape of every initializer and of every input and output of the counted nodes, on
    one frame of height x width through ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    shapes = {t.name: tuple(numpy_helper.to_array(t).shape) for t in model.graph.initializer}
    wanted = sorted({name for node in model.graph.node if node.op_type in _COUNTED
                     for name in (*node.input[:2], node.output[0])} - set(shapes))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node as exported
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    frame = np.zeros((1, 3, height, width), np.float32)
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, session.run(names, {session.get_inputs()[0].name: frame}), strict=True):
        shapes[name] = tuple(np.shape(value))
    return shapes


def count_macs(onnx_path: Path, height: int, width: int) -> int:
    """Returns the multiply-accumulates of one height x width frame through the Conv, Gemm and MatMul nodes."""
    import onnx
    model = onnx.load(str(onnx_path))
    shapes = _shapes(model, height, width)
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]  # [1, C_out, *spatial]
            weight = shapes[node.input[1]]  # [C_out, C_in / groups, *kernel]
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            k = a[0] if node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute) else a[-1]
            total += int(np.prod(out)) * k
    return total


def count_gflop(onnx_path: Path, height: int, width: int) -> float:
    """Returns one frame's GFLOP (2 x MACs / 1e9), rounded to 0.01."""
    return round(2 * count_macs(onnx_path, height, width) / 1e9, 2)
