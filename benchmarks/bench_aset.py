"""ASET's decision cost per window on CPU: state encoding plus ONNX Runtime Q-values, against the 1 ms goal.

Times, per decision window on full-edge: `StateBuilder.push` (encode one window), `OnnxPolicy.act` (ONNX
Runtime, one thread, with the guard) and the same network in PyTorch as the in-process baseline; prints
p50/p99 in microseconds and the ratios. An untrained network has the trained one's cost.
Run: .venv/bin/python benchmarks/bench_aset.py [--agent runs/aset/agent.onnx] [--n 5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.aset.meta import AgentMeta  # noqa: E402
from scheduler.aset.policy import AsetController, OnnxPolicy  # noqa: E402
from scheduler.aset.state import StateBuilder, StateSpec  # noqa: E402
from scheduler.core import POLICY_NAMES  # noqa: E402
from scheduler.profiles import load_profiles  # noqa: E402
from scheduler.system import build_system  # noqa: E402
from scheduler.window import WindowMeasurement  # noqa: E402
from topologies import load_topology  # noqa: E402

GOAL_US = 1000.0


def timed_us(fn, n: int) -> np.ndarray:
    for _ in range(min(100, n)):  # warm-up
        fn()
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t) / 1000.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topo", default="full-edge")
    ap.add_argument("--agent", default=None, help="an exported agent.onnx (default: export an untrained one)")
    ap.add_argument("--n", type=int, default=5000, help="decisions timed (default 5000)")
    args = ap.parse_args()
    import torch

    from training.checkpoint import network_for
    from training.export import export_onnx

    torch.set_num_threads(1)
    system = build_system(load_topology(args.topo), load_profiles())
    spec = StateSpec.of(system, history=4)
    rng = np.random.default_rng(1)
    n_res = system.n_resources
    window = WindowMeasurement(5.0, 900, 50, 50, 20, 2, rng.random(n_res) * 100, rng.random(n_res) * 1e7,
                               rng.integers(0, 10, n_res).astype(float), rng.random(n_res) * 200, rng.random(9) * 500)
    with tempfile.TemporaryDirectory() as tmp:
        meta = AgentMeta(system.topology.name, spec.shape, n_res, POLICY_NAMES, 5.0, 64, 2, 128, True, 1, 0.02)
        net = network_for(meta).eval()
        path = Path(args.agent) if args.agent else export_onnx(net, meta, Path(tmp) / "agent.onnx")
        policy = OnnxPolicy(path, spec)
        builder = StateBuilder(spec)
        ctl = AsetController(policy, StateBuilder(spec))
        state = builder.push(window)
        x = torch.from_numpy(state[None])

        def torch_act() -> int:
            with torch.no_grad():
                return int(net(x).argmax())

        results = {
            "encode (StateBuilder.push)": timed_us(lambda: builder.push(window), args.n),
            "ONNX Runtime act": timed_us(lambda: policy.act(state), args.n),
            "PyTorch argmax (baseline)": timed_us(torch_act, args.n),
            "controller decide (encode + ONNX)": timed_us(lambda: ctl.decide(window), args.n),
        }
    print(f"{args.topo}: state {spec.shape[0]}x{spec.shape[1]}, {args.n} decisions, 1 thread; goal {GOAL_US:g} us")
    base = np.median(results["PyTorch argmax (baseline)"])
    for name, us in results.items():
        p50, p99 = np.percentile(us, [50, 99])
        print(f"  {name:<36} p50 {p50:8.1f} us  p99 {p99:8.1f} us  x{p50 / base:5.2f} of PyTorch  "
              f"{'within' if p99 < GOAL_US else 'OVER'} goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
