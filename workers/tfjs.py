"""Reads TensorFlow.js weight files (a weights manifest plus its .bin shards) into NumPy arrays,
undoing TF.js's uint8/uint16/float16 weight quantization exactly as tfjs-core's io module does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_DTYPE_BYTES = {"float32": 4, "int32": 4, "uint8": 1, "uint16": 2, "float16": 2, "bool": 1}


def _decode_entry(raw: bytes, spec: dict) -> np.ndarray:
    """Returns one weight as an array of its declared dtype and shape, dequantized if stored so."""
    shape = tuple(spec["shape"])
    quant = spec.get("quantization")
    if quant is None:
        values = np.frombuffer(raw, dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
    elif quant["dtype"] == "float16":
        values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        stored = np.frombuffer(raw, dtype=np.dtype(quant["dtype"]).newbyteorder("<"))
        # tfjs: value = q * scale + min (affine quantization per tensor).
        values = stored.astype(np.float64) * quant["scale"] + quant["min"]
    return values.astype(np.dtype(spec["dtype"])).reshape(shape)


def _stored_nbytes(spec: dict) -> int:
    """Returns how many bytes one weight occupies in the shard stream."""
    count = int(np.prod(spec["shape"], dtype=np.int64)) if spec["shape"] else 1
    stored = spec.get("quantization", {}).get("dtype", spec["dtype"])
    return count * _DTYPE_BYTES[stored]


def read_weights(manifest_path: Path) -> dict[str, np.ndarray]:
    """Returns every weight of a TF.js weights manifest, by name, in TensorFlow layout (HWIO)."""
    manifest = json.loads(Path(manifest_path).read_text())
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((Path(manifest_path).parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            nbytes = _stored_nbytes(spec)
            if offset + nbytes > len(data):
                raise ValueError(f"{manifest_path}: weight {spec['name']} runs past the end of its shards")
            weights[spec["name"]] = _decode_entry(data[offset : offset + nbytes], spec)
            offset += nbytes
        if offset != len(data):
            raise ValueError(f"{manifest_path}: {len(data) - offset} bytes left over after the last weight")
    return weights
