"""The sweep layer: cases come back in their order whatever finishes first, and evaluate, the oracle and
training give bit-identical results serially, on local worker processes and on Ray (when installed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from aset_agents import constant_agent

from experiments import aset_oracle
from scheduler.core import policy_index
from scheduler.profiles import PROVISIONAL_PROFILE, load_profiles
from scheduler.system import build_system
from topologies import load_topology
from training.evaluate import AgentFile, Evaluation, evaluate
from training.sweep import SERIAL, CaseRunner, Engine, add_engine_arguments, engine_from_args, run_cases

ROOT = Path(__file__).resolve().parents[1]


def slow_square(delay_s: float, x: int) -> int:
    """A case whose first items finish last: x * x after (3 - x) * delay_s."""
    time.sleep((3 - x) * delay_s)
    return x * x


def fail_on_two(_: None, x: int) -> int:
    if x == 2:
        raise ValueError(f"case {x} failed")
    return x


@pytest.fixture(scope="module")
def full_edge():
    return build_system(load_topology("full-edge"), load_profiles(PROVISIONAL_PROFILE))


def assert_same_evaluation(a: Evaluation, b: Evaluation) -> None:
    assert list(a.results) == list(b.results)
    for lam, by_policy in a.results.items():
        assert list(by_policy) == list(b.results[lam])
        for name, r in by_policy.items():
            other = b.results[lam][name]
            assert r.counts.dtype == other.counts.dtype and np.array_equal(r.counts, other.counts), (lam, name)
            assert r.actions == other.actions and r.apps == other.apps


def test_results_keep_the_cases_order_while_finishing_out_of_order():
    finished = []
    out = run_cases(slow_square, [0, 1, 2, 3], 0.3, Engine(workers=2), on_result=lambda i, r: finished.append(i))
    assert out == [0, 1, 4, 9]
    assert sorted(finished) == [0, 1, 2, 3] and finished != [0, 1, 2, 3]  # 3 (no wait) ends before 0 (0.9 s)
    assert run_cases(slow_square, [0, 1, 2, 3], 0.1, Engine(workers=2), cost=lambda x: x) == [0, 1, 4, 9]


def test_a_failing_case_stops_the_sweep_with_its_exception():
    with pytest.raises(ValueError, match="case 2 failed"):
        run_cases(fail_on_two, [0, 1, 2, 3], None, Engine(workers=2))
    with pytest.raises(ValueError, match="case 2 failed"):
        run_cases(fail_on_two, [0, 1, 2, 3], None, SERIAL)


def test_engine_options_and_defaults():
    ap = argparse.ArgumentParser()
    add_engine_arguments(ap)
    default = engine_from_args(ap.parse_args([]))
    assert default.workers is None and default.ray_address is None and default.local_workers >= 1
    assert engine_from_args(ap.parse_args(["--workers", "1"])).describe() == "serially in this process"
    assert engine_from_args(ap.parse_args(["--ray", "local", "--workers", "2"])) == Engine(2, "local")
    with pytest.raises(SystemExit):
        ap.parse_args(["--workers", "0"])
    with pytest.raises(ValueError):
        Engine(workers=0)


def test_evaluate_on_two_workers_equals_the_serial_run(full_edge, tmp_path):
    agent = AgentFile.read(constant_agent(tmp_path / "agent.onnx", full_edge, "cheaper", window_s=5.0))
    args = (full_edge, agent, [40.0, 90.0], [1, 2], 40.0)
    serial = evaluate(*args)
    with CaseRunner(Engine(workers=2)) as runner:  # one pool, reused by the second evaluation
        parallel = evaluate(*args, engine=runner)
        again = evaluate(*args, engine=runner)
    assert_same_evaluation(serial, parallel)
    assert_same_evaluation(serial, again)
    assert set(serial.results[90.0]["aset"].actions[0]) == {policy_index("cheaper")}  # the agent ran


def test_oracle_cases_on_two_workers_equal_the_serial_run(tmp_path):
    def run(workers: str) -> list[dict]:
        out = tmp_path / f"w{workers}"
        assert aset_oracle.main(["--lambdas", "100", "--seeds", "1,2", "--duration", "20", "--horizon", "1",
                                 "--no-check", "--workers", workers, "--out", str(out)]) == 0
        cases = []
        for p in sorted(out.glob("case_*.json")):
            c = json.loads(p.read_text())
            for timing in ("case_wall_s", "static_wall_s"):
                c.pop(timing)
            c["oracle"].pop("wall_s")
            cases.append(c)
        return cases

    serial, parallel = run("1"), run("2")
    assert len(serial) == 2 and serial == parallel


@pytest.mark.slow
def test_training_depends_on_n_envs_and_seed_not_on_workers(tmp_path):
    from test_aset_agent import TOY, toy_config

    from training.train import train

    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    system = build_system(load_topology(path), load_profiles(PROVISIONAL_PROFILE))
    cfg = toy_config(path, total_steps=250, learning_starts=100, n_envs=2, guard_margins=(0.0, float("inf")),
                     validation_seeds=(1001,), validation_duration_s=30.0)
    here = train(cfg, system, SERIAL)
    spread = train(cfg, system, Engine(workers=2))
    assert here.losses == spread.losses and here.episode_returns == spread.episode_returns
    assert here.guard is not None and spread.guard is not None
    assert here.guard.static_success == spread.guard.static_success
    assert here.guard.agent_success == spread.guard.agent_success
    single = train(replace(cfg, n_envs=1, guard_margins=()), system)
    assert single.losses != here.losses  # two environments are another algorithm, as SB3's n_envs


@pytest.mark.slow
def test_evaluate_on_a_local_ray_cluster_equals_the_serial_run(full_edge, tmp_path):
    """Through the command line, in a child process (Ray starts threads and services that should not outlive
    the test in pytest's process): `evaluate --ray local` writes the serial run's evaluation."""
    pytest.importorskip("ray", reason="Ray is the optional extra `.[ray]`")
    agent = constant_agent(tmp_path / "agent.onnx", full_edge, "farthest", window_s=5.0)

    def run(*engine: str) -> dict:
        out = tmp_path / "-".join(engine)
        cmd = [sys.executable, str(ROOT / "run_testbed.py"), "evaluate", "--agent", str(agent), "--topo", "full-edge",
               "--profiles", str(PROVISIONAL_PROFILE), "--lambdas", "60", "--seeds", "1,2", "--duration", "30",
               "--out", str(out), *engine]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads((out / "full-edge_evaluation.json").read_text())

    assert run("--workers", "1") == run("--ray", "local", "--workers", "2")
