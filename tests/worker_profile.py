"""A profile file of one model on one CPU core, as the profile-driven worker tests write it."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_worker_profile(path: Path, model: str, batch_latency_ms: dict[int, float]) -> Path:
    """Writes a profile file of one model on one CPU core, as a profile-driven worker of `model` reads it."""
    table = ", ".join(f"{b}: {ms}" for b, ms in batch_latency_ms.items())
    path.write_text(textwrap.dedent(f"""
        version: 1
        origin: test
        models:
          {model}: {{task: object-detection, input_size: [416, 416], accuracy: 0.2, accuracy_source: test}}
        runtimes:
          - {{model: {model}, device: cpu, threads: 1, cpu_cores: 1, gpus: 0, memory_mib: 1,
             batch_latency_ms: {{{table}}}, input_ms_per_mb: 0.0, source: test}}
        """))
    return path
