"""DQNConfig: every hyperparameter of ASET's training in one dataclass, one line of doc per field.

Owns the validation of option combinations too (refused at construction, as Stable-Baselines3 does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from simulator.gym_env import EnvConfig


@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of `training.train.train`."""

    topology: str = "full-edge"
    """Topology name or YAML path the agent is trained on (its state shape depends on it)."""
    lambda_per_min: float = 60.0
    """Nominal lambda; episodes draw lambda in [lambda_low_factor, lambda_high_factor] times it."""
    lambda_low_factor: float = 0.5
    """Lower end of the episodes' lambda range, as a multiple of lambda_per_min."""
    lambda_high_factor: float = 1.8
    """Upper end of the episodes' lambda range, as a multiple of lambda_per_min."""
    env: EnvConfig = field(default_factory=lambda: EnvConfig(theta=0.0, baseline_policy="load-balancing"))
    """Episode and state settings (its lambda range is replaced by the one above). Default: reward relative
    to a shadow load-balancing run (it cut the agent's shortfall against load-balancing on held-out
    full-edge traces from 3.7 to 0.3 points at equal training time), hence theta = 0."""
    seed: int = 1
    """Seeds numpy (episodes, exploration) and torch (weights, minibatches)."""
    total_steps: int = 40_000
    """Decisions (environment steps, all environments together) to train for."""
    n_envs: int = 1
    """Environments collecting episodes side by side (as SB3's n_envs): each step takes one action per
    environment from the current network, then learns from the n transitions one after another. They step
    in worker processes when the engine has several (`train --workers`); the result depends on n_envs, never
    on where they step. 1: the plain one-environment DQN loop."""
    time_budget_s: float | None = None
    """Stops once this many wall-clock seconds have passed, epsilon decaying with the time used (None: no limit;
    with a budget the run depends on the machine's speed, not only on the seed)."""
    learning_rate: float = 3e-4
    """Adam step size."""
    buffer_size: int = 30_000
    """Transitions kept in the replay buffer."""
    batch_size: int = 64
    """Transitions per gradient step."""
    gamma: float = 0.9
    """Discount per decision window; 0.9 at T = 5 s looks ~50 s ahead, about one stream lifetime."""
    target_update_every: int = 500
    """Steps between copies of the online network into the target network."""
    learning_starts: int = 1_000
    """Steps of pure exploration before the first gradient step."""
    train_every: int = 1
    """Steps between gradient steps."""
    epsilon_start: float = 1.0
    """Exploration probability at the start."""
    epsilon_end: float = 0.05
    """Exploration probability after the decay."""
    exploration_fraction: float = 0.4
    """Fraction of total_steps over which epsilon decays linearly."""
    prior_policy: str | None = "load-balancing"
    """Exploration draws this static policy with probability prior_share instead of a uniform action."""
    prior_share: float = 0.5
    """Share of exploratory actions that follow prior_policy (a warm start towards a strong static)."""
    channels: int = 64
    """Channels of the two 1-D convolutions over the time axis."""
    kernel_size: int = 2
    """Temporal kernel of both convolutions; needs history >= 2 * kernel_size - 1."""
    hidden: int = 128
    """Width of the fully connected layer after the convolutions."""
    dueling: bool = True
    """Dueling head (V + A - mean A): action effects are small next to the load's effect on the value."""
    double_dqn: bool = True
    """Target action chosen by the online network, valued by the target network."""
    max_grad_norm: float = 10.0
    """Gradient norm clip."""
    validation_seeds: tuple[int, ...] = (1001, 1002)
    """Held-out trace seeds on which the fallback guard is calibrated after training."""
    validation_duration_s: float = 600.0
    """Length of each validation run: `evaluate`'s run length. On full-edge a guard calibrated on 300-s runs let
    through an agent within 0.15 points of load-balancing there but 1.85 points below it on 600-s runs at lambda 60
    (the system keeps filling after 300 s)."""
    guard_margins: tuple[float, ...] = (0.0, 0.02, 0.05, float("inf"))
    """Candidate Q-margins the agent's choice must beat the fallback policy's by (inf: always fallback)."""
    out_dir: str | None = None
    """Where the checkpoint, the ONNX file and the logs go (None: nothing written)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        if self.env.history < 2 * self.kernel_size - 1:
            raise ValueError(f"history={self.env.history} is too short for two convolutions of kernel "
                             f"{self.kernel_size}: need history >= {2 * self.kernel_size - 1}")
        if not 0 < self.lambda_low_factor <= self.lambda_high_factor:
            raise ValueError("need 0 < lambda_low_factor <= lambda_high_factor")
        if self.learning_starts < self.batch_size:
            raise ValueError(f"learning_starts={self.learning_starts} < batch_size={self.batch_size}")
        if not 0 <= self.epsilon_end <= self.epsilon_start <= 1:
            raise ValueError("need 0 <= epsilon_end <= epsilon_start <= 1")
        if self.n_envs < 1:
            raise ValueError(f"n_envs={self.n_envs}: need at least 1")
        if self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size={self.buffer_size} < batch_size={self.batch_size}")

    @property
    def lambda_range_per_min(self) -> tuple[float, float]:
        return (self.lambda_per_min * self.lambda_low_factor, self.lambda_per_min * self.lambda_high_factor)

    def to_dict(self) -> dict:
        """Returns the configuration as plain JSON values (a scenario as its file, or its name)."""
        sc = self.env.scenario
        d = asdict(replace(self, env=replace(self.env, scenario=None)))
        d["env"]["scenario"] = None if sc is None else (sc.source or sc.name)
        d["guard_margins"] = [m if m != float("inf") else "inf" for m in self.guard_margins]
        return d
