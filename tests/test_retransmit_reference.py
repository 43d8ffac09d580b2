"""The simulator's retransmissions taken together (simulator/crossing.py `_retransmitted`) against the one-message-
at-a-time rule they implement, bit for bit, on links with jitter and loss that go down and come back many times."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from live.spec import RunSpec
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.crossing import MAX_RETRANSMIT_MS
from simulator.engine import SimConfig, Simulation
from topologies import load_topology
from topologies.events import load_events


def _one_at_a_time(sim: Simulation, ant: int, res: int, nbytes: float, t_ms: float, z: np.ndarray,
                   lost: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """The rule for one message: tries after rto, 2 rto, 4 rto ... of waiting, each on the network state it meets;
    returns its legs (radio, path, wait before the radio, before the path, before it is sent again, the radio's
    transmission)."""
    waited, wait = 0.0, sim.config.rto_ms
    while waited < MAX_RETRANSMIT_MS:
        waited, wait = waited + wait, wait * 2
        radio, path, radio_wait, path_wait, _, radio_tx = sim._legs(sim.physics_timeline.at((t_ms + waited) / 1000.0),
                                                             np.array([ant]), np.array([res]), np.array([nbytes]), z, lost)
        if np.isfinite(radio[0]) and np.isfinite(path[0]):
            return (float(radio[0]), float(path[0]), float(radio_wait[0]), float(path_wait[0]), waited,
                    float(radio_tx[0]))
    return np.inf, np.inf, np.inf, np.inf, np.inf, np.inf


def test_retransmissions_together_equal_one_message_at_a_time(tmp_path: Path) -> None:
    topo = load_topology("full-edge")
    system = build_system(topo, load_profiles())
    lines = ["events:"]
    for k in range(12):  # the WAN to the cloud flapping, a radio lossy and jittery, a metro link down once for good
        lines += [f"  - {{at_s: {2 * k}, link: dc1-cloud, state: down}}",
                  f"  - {{at_s: {2 * k + 0.7}, link: dc1-cloud, state: up}}",
                  f"  - {{at_s: {2 * k + 0.3}, link: radio-ant1, loss_pct: {5 * (k % 3)}, delay_dev_ms: {k % 4}}}"]
        lines += [f"  - {{at_s: {2 * k + 1.1}, link: dc2-cloud, state: {'down' if k % 2 else 'up'}}}"] if k else []
    lines += ["  - {at_s: 20, link: co1-dc1, state: down}"]
    (tmp_path / "events.yaml").write_text("\n".join(lines) + "\n")
    events = load_events(tmp_path / "events.yaml", topo)
    trace, _ = RunSpec(lambda_per_min="3", duration_s=30.0).workload().build(system.antennas)
    sim = Simulation(system, trace, SimConfig(duration_s=30.0), seed=1, events=events)
    rng = np.random.default_rng(7)
    n = 1500
    ant = rng.integers(0, len(system.antennas), n)
    res = rng.integers(0, system.n_resources, n)
    nbytes = rng.uniform(1e3, 2e5, n)
    t_ms = rng.uniform(0.0, 26_000.0, n)
    z, lost = rng.standard_normal((2, n)), rng.uniform(0.0, 1.0, (2, n))
    legs = np.array(sim._retransmitted(ant, res, nbytes, t_ms, z, lost))
    want = np.array([_one_at_a_time(sim, ant[i], res[i], nbytes[i], t_ms[i], z[:, i:i + 1], lost[:, i:i + 1])
                     for i in range(n)]).T
    assert np.array_equal(legs, want)
    resend = legs[4]
    assert 0 < np.isinf(resend).sum() < n and (np.isfinite(resend) & (resend > sim.config.rto_ms)).sum() > n // 10
