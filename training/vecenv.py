"""Several training environments stepped together: in this process, or spread over worker processes as
Stable-Baselines3's SubprocVecEnv spreads them, with the same observations and rewards either way.

Owns the vector of `AsetEnv`s that DQN training collects episodes from (`DQNConfig.n_envs`) and the worker
processes that step them. Each environment has its own generator, seeded by the learner at its first reset,
so where an environment steps changes nothing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from scheduler.system import SystemModel
from simulator.gym_env import AsetEnv, EnvConfig

StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]
"""What `AsetEnv.step` returns: (observation, reward, terminated, truncated, info)."""


class VecEnv:
    """`n_envs` environments on one system; with `workers` > 1 they step in that many spawned processes
    (environment i in process i mod workers), else here."""

    def __init__(self, system: SystemModel, config: EnvConfig, n_envs: int, workers: int = 1) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs={n_envs}: need at least 1")
        self.n_envs = n_envs
        self.workers = max(1, min(workers, n_envs))
        self.local: list[AsetEnv] = []
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        if self.workers == 1:
            self.local = [AsetEnv(system, config) for _ in range(n_envs)]
            return
        ctx = multiprocessing.get_context("spawn")
        for w in range(self.workers):
            parent, child = ctx.Pipe()
            ids = list(range(w, n_envs, self.workers))
            proc = ctx.Process(target=_serve, args=(child, system, config, ids), daemon=True,
                               name=f"aset-env-{w}")
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def reset(self, i: int, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Resets environment i (seeding its generator when `seed` is given); returns its first observation."""
        if self.local:
            return self.local[i].reset(seed=seed)
        pipe = self.pipes[i % self.workers]
        pipe.send(("reset", (i, seed)))
        return _answer(pipe)

    def step(self, actions: list[int]) -> list[StepResult]:
        """Steps environments 0..len(actions)-1 with these actions, all at once; returns their results in order."""
        if self.local:
            return [self.local[i].step(a) for i, a in enumerate(actions)]
        busy = []
        for w, pipe in enumerate(self.pipes):
            mine = {i: a for i, a in enumerate(actions) if i % self.workers == w}
            if mine:
                pipe.send(("step", mine))
                busy.append(pipe)
        out: dict[int, StepResult] = {}
        for pipe in busy:
            out.update(_answer(pipe))
        return [out[i] for i in range(len(actions))]

    def close(self) -> None:
        """Stops the worker processes."""
        for pipe in self.pipes:
            with contextlib.suppress(BrokenPipeError, OSError):  # a worker that died has nothing to close
                pipe.send(("close", None))
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.pipes, self.procs = [], []


def _answer(pipe: Connection) -> Any:
    kind, value = pipe.recv()
    if kind == "error":
        raise RuntimeError(f"environment worker failed: {value}")
    return value


def _serve(pipe: Connection, system: SystemModel, config: EnvConfig, ids: list[int]) -> None:
    """A worker process: holds environments `ids` and answers reset and step commands until `close`."""
    envs = {i: AsetEnv(system, config) for i in ids}
    while True:
        cmd, arg = pipe.recv()
        try:
            if cmd == "close":
                return
            if cmd == "reset":
                i, seed = arg
                pipe.send(("ok", envs[i].reset(seed=seed)))
            elif cmd == "step":
                pipe.send(("ok", {i: envs[i].step(a) for i, a in arg.items()}))
        except Exception as e:  # noqa: BLE001 - reported to the learner, which raises it
            pipe.send(("error", f"{type(e).__name__}: {e}"))
