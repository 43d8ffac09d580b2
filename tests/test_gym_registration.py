"""The environment as Gymnasium users reach it: registered as EdgeInference-v0, passing Gymnasium's checker,
and trained by Stable-Baselines3's DQN as it is, with no wrapper of ours."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import DQN  # a dev dependency (pyproject.toml), installed by scripts/setup.sh


def test_registered_id_makes_the_environment_of_a_topology() -> None:
    env = gym.make("simulator.gym_env:EdgeInference-v0", topo="dc-cloud", episode_s=30.0)
    assert "EdgeInference-v0" in gym.registry  # and the plain id works from now on
    assert env.unwrapped.system.topology.name == "dc-cloud"
    plain = gym.make("EdgeInference-v0", topo="tiny", episode_s=20.0, history=3)
    assert plain.observation_space.shape[0] == 3 and plain.unwrapped.system.topology.name == "tiny"
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs) and info["streams"] > 0


def test_stable_baselines3_dqn_learns_on_it_unmodified() -> None:
    env = gym.make("simulator.gym_env:EdgeInference-v0", topo="dc-cloud", episode_s=60.0,
                   lambda_range_per_min=(40.0, 80.0))
    model = DQN("MlpPolicy", env, learning_starts=50, train_freq=4, buffer_size=1000, batch_size=32, seed=0,
                device="cpu", verbose=0)
    model.learn(total_timesteps=300)
    assert model.num_timesteps == 300 and model.replay_buffer.size() == 300
    assert model._n_updates > 0  # gradient steps ran on the environment's transitions
    obs, _ = env.reset(seed=5)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    _, reward, *_ = env.step(int(action))
    assert np.isfinite(reward)
