"""The Ray engine of training/sweep.py: one Ray task per case, results gathered as they finish.

Joins a cluster (`ray.init(address=...)`) or starts one here (`local`), shipping the project's code as the
job's working directory so that nodes without a checkout run the same code; the nodes need the project's
Python dependencies. Imported only when `--ray` is given: Ray is an optional extra (`pip install -e .[ray]`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.sweep import RAY_LOCAL, CaseFn, Engine, _Backend, warm_simulator

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIP_EXCLUDES = ["runs", "models", "build", "docs", "**/__pycache__", "*.egg-info",
                 ".pytest_cache", ".ruff_cache"]
"""What the job's working directory leaves out besides Ray's own defaults (.git, .venv): outputs, model files,
caches (numba's cache is per machine). An agent travels inside its case (its ONNX bytes), never as a path."""


def _call(fn: CaseFn, shared: Any, case: Any) -> Any:
    warm_simulator()
    return fn(shared, case)


class RayBackend(_Backend):
    """Cases as Ray tasks of one CPU each; `shared` put once in the object store per sweep."""

    def __init__(self, engine: Engine) -> None:
        try:
            import ray
        except ImportError as e:
            raise SystemExit(f"--ray: Ray is not installed ({e}); install the extra: pip install -e '.[ray]'") \
                from None
        self.ray = ray
        local = engine.ray_address == RAY_LOCAL
        runtime_env = {"working_dir": str(REPO_ROOT), "excludes": SHIP_EXCLUDES}
        ray.init(address=None if local else engine.ray_address, num_cpus=engine.local_workers if local else None,
                 include_dashboard=False, runtime_env=runtime_env, log_to_driver=True,
                 configure_logging=True, logging_level="warning")
        self.task = ray.remote(num_cpus=1, max_retries=0)(_call)

    def run(self, fn: CaseFn, items: list[tuple[int, Any]], shared: Any) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        shared_ref = ray.put(shared)
        pending = {self.task.remote(fn, shared_ref, c): i for i, c in items}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        self.ray.shutdown()
