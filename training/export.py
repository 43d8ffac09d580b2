"""ONNX export of the Q-network, with AgentMeta embedded as a metadata property of the model.

Uses the legacy TorchScript exporter (opset 17) with a dynamic batch axis: small, fast, no onnxscript needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from scheduler.aset.meta import ONNX_META_KEY, AgentMeta
from training.network import QNetwork

INPUT_NAME, OUTPUT_NAME = "state", "q_values"


def export_onnx(net: QNetwork, meta: AgentMeta, path: str | Path) -> Path:
    """Writes the network as ONNX (input 'state' [batch, K, F], output 'q_values' [batch, actions])."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    dummy = torch.zeros((1, *meta.state_shape), dtype=torch.float32)
    with warnings.catch_warnings():  # the legacy exporter is deprecated but exact and quick for this small net
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=17,
                          dynamo=False)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, meta.to_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
