"""Checkpoints: the Q-network's weights plus AgentMeta, saved with torch.save and loaded with weights_only.

A checkpoint for another topology or state shape is refused with AgentMismatchError before any weight loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scheduler.aset.meta import AgentMeta
from scheduler.aset.state import StateSpec
from training.network import QNetwork


def network_for(meta: AgentMeta) -> QNetwork:
    """Returns an untrained network of the architecture the metadata describes."""
    k, f = meta.state_shape
    return QNetwork(k, f, len(meta.policy_names), channels=meta.channels, kernel_size=meta.kernel_size,
                    hidden=meta.hidden, dueling=meta.dueling)


def save_checkpoint(path: str | Path, net: QNetwork, meta: AgentMeta) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "aset-checkpoint-1", "meta": meta.to_json(), "state_dict": net.state_dict()}, path)
    return path


def load_checkpoint(path: str | Path, spec: StateSpec | None = None) -> tuple[QNetwork, AgentMeta]:
    """Returns the network (eval mode) and its metadata; refuses a file made for another state spec."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "aset-checkpoint-1":
        raise ValueError(f"{path}: not an ASET checkpoint (no 'aset-checkpoint-1' format tag)")
    meta = AgentMeta.from_json(blob["meta"])
    if spec is not None:
        meta.check_compatible(spec, str(path))
    net = network_for(meta)
    net.load_state_dict(blob["state_dict"])
    net.eval()
    return net, meta
