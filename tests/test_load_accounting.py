"""The paper's capacity constraint `L + eta x rho <= C` with load normalised on input size (a profile's
`load_accounting: input-time`): the definitions by hand, feasibility and policies, the simulator's declared load,
ASET's guard; and that `rate` (a file without the key: older profiles) keeps the old model exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from scheduler.aset.meta import AgentMeta, AgentMismatchError
from scheduler.aset.state import StateSpec
from scheduler.core import POLICY_NAMES, Scheduler, StreamRequest, policy_index
from scheduler.profiles import INPUT_TIME, RATE, ProfileError, load_profiles, read_profile, write_profile
from scheduler.system import build_system
from simulator.engine import SimConfig, Simulation
from topologies import load_topology
from workload.trace import Trace

# Two single-replica CPU variants on one cluster; `heavy` spends 100 ms per MB of frame on its input
# (0.1 ms per kB), `light` nothing. With a nominal frame of 50 kB:
#   heavy: compute 10 ms + nominal input 5 ms = 15 ms per nominal query -> C = 1000 / 15 = 66.67 q/s,
#          eta(zeta) = (10 + 0.1 x zeta_kB) / 15: 1 at 50 kB, 4/3 at 100 kB, 2/3 at 0 kB;
#   light: 20 ms per query whatever the frame -> C = 50 q/s, eta = 1.
PROFILE = """
version: 1
origin: test
models:
  heavy: {task: object-detection, accuracy: 0.5, accuracy_source: test}
  light: {task: object-detection, accuracy: 0.5, accuracy_source: test}
runtimes:
  - {model: heavy, device: cpu, cpu_cores: 1, batch_latency_ms: {1: 10.0}, input_ms_per_mb: 100, source: test}
  - {model: light, device: cpu, cpu_cores: 1, batch_latency_ms: {1: 20.0}, input_ms_per_mb: 0, source: test}
"""
TOPOLOGY = """
name: acc
sites:
  - {name: ant1, layer: antenna, radio: {delay_ms: 1, bw_mbps: 1000}}
  - {name: dc1, layer: dc, compute: {cpu_cores: 8}}
links:
  - {a: ant1, b: dc1, delay_ms: 1, bw_mbps: 10000}
deployments:
  - {site: dc1, variant: heavy-cpu-b1, replicas: 1}
  - {site: dc1, variant: light-cpu-b1, replicas: 1}
"""
HEAVY, LIGHT = 0, 1


def _profile(write_yaml, accounting: str | None, frame_kb: float | None, name: str = "p.yaml"):
    doc = yaml.safe_load(PROFILE)
    if accounting is not None:
        doc["load_accounting"] = accounting
    if frame_kb is not None:
        doc["capacity_frame_kb"] = frame_kb
    return write_yaml(name, yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def systems(write_yaml):
    """{accounting: system}: rate (the key left out, as an older file) and input-time at 50 kB."""
    topo = load_topology(write_yaml("acc.yaml", TOPOLOGY))
    return {RATE: build_system(topo, load_profiles(_profile(write_yaml, None, None, "rate.yaml"))),
            INPUT_TIME: build_system(topo, load_profiles(_profile(write_yaml, INPUT_TIME, 50, "it.yaml")))}


def _req(fps: float, kb: float) -> StreamRequest:
    return StreamRequest(antenna=0, fps=fps, frame_bytes=kb * 1000.0, max_delay_ms=1000.0, min_accuracy=0.0)


def test_the_definitions_by_hand(systems) -> None:
    heavy = systems[INPUT_TIME].resources[HEAVY].variant
    assert heavy.nominal_query_ms == pytest.approx(15.0) and heavy.capacity_qps == pytest.approx(1000 / 15)
    assert [heavy.eta(kb * 1000) for kb in (0, 50, 100)] == pytest.approx([2 / 3, 1.0, 4 / 3])
    # a flow's load from its rates is the sum of its queries' eta: 10 q/s of 100 kB and 20 q/s of 0 kB
    assert heavy.load_qps(30.0, 10 * 100_000.0) == pytest.approx(10 * 4 / 3 + 20 * 2 / 3)
    assert systems[INPUT_TIME].stream_load(HEAVY, 10.0, 100_000.0) == pytest.approx(40 / 3)
    light = systems[INPUT_TIME].resources[LIGHT].variant
    assert light.capacity_qps == pytest.approx(50.0) and light.eta(80_000) == pytest.approx(1.0)
    # rate accounting, the key left out: eta is 1 and the capacity counts the batch latency alone
    old = systems[RATE].resources[HEAVY].variant
    assert old.load_weights == (1.0, 0.0) and old.capacity_qps == pytest.approx(100.0)
    assert systems[RATE].stream_load(HEAVY, 10.0, 100_000.0) == 10.0


def test_feasibility_weighs_a_stream_by_its_eta_at_the_limit(systems) -> None:
    """Heavy's capacity 66.67 nominal q/s: 10 fps of 100 kB load it by 13.33; the constraint is met exactly at
    L + 13.33 = C and broken just above; the old model admits the same stream up to L + 10 = 100."""
    s = Scheduler(systems[INPUT_TIME], np.random.default_rng(0))
    load = np.array([1000 / 15 - 40 / 3, 50.0])  # light is full
    d = s.decide(_req(10, 100), policy_index("closest"), load)
    assert d.resource == HEAVY and d.load_qps == pytest.approx(40 / 3)
    load[HEAVY] += 0.01
    assert s.decide(_req(10, 100), policy_index("closest"), load).reason == "capacity"
    assert s.decide(_req(10, 40), policy_index("closest"), load).resource == HEAVY  # smaller frames weigh less
    headroom = Scheduler(systems[INPUT_TIME], np.random.default_rng(0), capacity_headroom=1.5)
    assert headroom.decide(_req(10, 40), policy_index("closest"), np.array([1000 / 15 - 12.0, 50.0])).rejected
    old = Scheduler(systems[RATE], np.random.default_rng(0))
    d = old.decide(_req(10, 100), policy_index("closest"), np.array([90.0, 50.0]))
    assert d.resource == HEAVY and d.load_qps == 10.0


def test_load_balancing_ranks_by_the_weighted_load(systems) -> None:
    """Both empty: load-balancing takes the smaller (eta x rho) / C. A 100 kB stream at 10 fps is 13.33/66.67
    = 0.2 of heavy and 10/50 = 0.2 of light, a tie broken by the latency (heavy: 10 + 10 ms of input < light's
    20 + 0); a 120 kB stream (0.22 of heavy) goes to light. Under rate: 10/100 < 10/50 always heavy."""
    lb = policy_index("load-balancing")
    for kb, want in ((100, HEAVY), (120, LIGHT), (20, HEAVY)):
        d = Scheduler(systems[INPUT_TIME], np.random.default_rng(0)).decide(_req(10, kb), lb, np.zeros(2))
        assert d.resource == want, kb
    assert Scheduler(systems[RATE], np.random.default_rng(0)).decide(_req(10, 120), lb, np.zeros(2)).resource == HEAVY


def test_the_nominal_frame_is_only_the_unit(write_yaml) -> None:
    """Load over capacity is the busy fraction whatever the nominal frame, so every decision is the same at
    20 kB and at 150 kB nominal frames; only the figures' unit moves. Cheaper too: per nominal query heavy is the
    cheaper at 20 kB (12 ms against light's 20) and the dearer at 150 (25 ms), but a stream's queries cost what
    they keep the hardware busy (cost per nominal query x eta)."""
    topo = load_topology(write_yaml("acc.yaml", TOPOLOGY))
    a, b = (build_system(topo, load_profiles(_profile(write_yaml, INPUT_TIME, kb, f"{kb}.yaml"))) for kb in (20, 150))
    assert (a.cost_per_query[HEAVY] < a.cost_per_query[LIGHT]) != (b.cost_per_query[HEAVY] < b.cost_per_query[LIGHT])
    assert a.capacity_qps[HEAVY] != pytest.approx(b.capacity_qps[HEAVY])
    rng = np.random.default_rng(5)
    for _ in range(200):
        req = _req(float(rng.integers(1, 30)), float(rng.uniform(0, 150)))
        frac = rng.uniform(0, 1.1, 2)
        p = int(rng.integers(len(POLICY_NAMES)))
        da = Scheduler(a, np.random.default_rng(1)).decide(req, p, frac * a.capacity_qps)
        db = Scheduler(b, np.random.default_rng(1)).decide(req, p, frac * b.capacity_qps)
        assert (da.resource, da.reason) == (db.resource, db.reason)
        if not da.rejected:
            assert da.load_qps / a.capacity_qps[da.resource] == pytest.approx(db.load_qps / b.capacity_qps[db.resource])


def test_the_profile_key(write_yaml, tmp_path) -> None:
    """Left out it is rate (older files load unchanged); written back only when not rate; input-time needs a
    nominal frame; another value names the key."""
    assert read_profile(_profile(write_yaml, None, None)).load_accounting == RATE
    pf = read_profile(_profile(write_yaml, INPUT_TIME, 50))
    write_profile(pf, tmp_path / "copy.yaml")
    assert "load_accounting: input-time" in (tmp_path / "copy.yaml").read_text()
    assert load_profiles(tmp_path / "copy.yaml").load_accounting == INPUT_TIME
    write_profile(read_profile(_profile(write_yaml, RATE, 0)), tmp_path / "plain.yaml")
    assert "load_accounting" not in (tmp_path / "plain.yaml").read_text()
    with pytest.raises(ProfileError, match=r"p.yaml: capacity_frame_kb: load_accounting input-time .* \(> 0\)"):
        load_profiles(_profile(write_yaml, INPUT_TIME, None))
    with pytest.raises(ProfileError, match=r"p.yaml: load_accounting: 'busy' is not one of rate, input-time"):
        load_profiles(_profile(write_yaml, "busy", 50))


def _trace(streams: list[tuple[float, float, float, float]], max_delay_ms: float = 1000.0) -> Trace:
    """Streams (start s, end s, fps, frame kB) at ant1."""
    n = len(streams)
    col = lambda i: np.array([s[i] for s in streams], dtype=np.float64)  # noqa: E731
    return Trace(stream_id=np.arange(n, dtype=np.int64), antenna=np.array(["ant1"] * n, dtype=object),
                 app=np.array(["a"] * n, dtype=object), task=np.array(["object-detection"] * n, dtype=object),
                 start_s=col(0), duration_s=col(1) - col(0), fps=col(2), frame_bytes=(col(3) * 1000).astype(np.int64),
                 max_delay_ms=np.full(n, max_delay_ms), min_accuracy=np.zeros(n))


def test_the_simulator_declares_eta_x_rho_and_releases_it(systems) -> None:
    """Under input-time the declared load of heavy is the sum of eta x rho of its streams while they run, zero
    after; the window's load is what ASET's state reads (over capacity: the busy fraction)."""
    trace = _trace([(0.0, 3.5, 10, 50), (0.5, 2.0, 20, 0)])  # eta 1 and 2/3
    sim = Simulation(systems[INPUT_TIME], trace, SimConfig(duration_s=4.0), seed=0)
    fastest = policy_index("least-impedance")  # heavy: 10 ms + at most 5 ms of input < light's 20 ms
    loads = np.array([sim.step(fastest).load_qps for _ in range(4)])
    np.testing.assert_allclose(loads, [[10 + 40 / 3, 0], [10, 0], [10, 0], [0, 0]], atol=1e-9)


def test_input_time_accounting_keeps_a_resource_within_what_it_serves(write_yaml) -> None:
    """One replica of heavy alone: 6 streams of 10 fps x 100 kB, 200 ms budget, arrive one a second. Rate
    accounting admits all of them (60 <= 100 q/s) although each query keeps the replica busy 20 ms (60 q/s need
    1.2 s a second): the queue fills (16 queries, 320 ms), queries fail or find it full. Input-time admits 5
    (5 x 13.33 = 66.67 = C): the replica is exactly busy, no query waits more than 100 ms, the sixth stream's
    250 queries are rejected."""
    topo = load_topology(write_yaml("one.yaml", TOPOLOGY.replace(
        "  - {site: dc1, variant: light-cpu-b1, replicas: 1}\n", "")))
    trace = _trace([(float(i), 30.0, 10, 100) for i in range(6)], max_delay_ms=200.0)
    out = {}
    for acc, kb in ((None, None), (INPUT_TIME, 50)):
        system = build_system(topo, load_profiles(_profile(write_yaml, acc, kb, f"{acc}.yaml")))
        sim = Simulation(system, trace, SimConfig(duration_s=30.0), seed=0)
        sim.run(0)
        out[acc] = sim.tally.counts.reshape(-1, 3).sum(axis=0)  # ontime, failed, rejected
    ontime, failed, rejected = out[None]
    assert failed > 0.5 * out[None].sum()  # 189 on time, 1222 failed, 239 queue-full
    ontime, failed, rejected = out[INPUT_TIME]
    assert failed == 0 and rejected == 10 * 25  # the sixth stream's 25 s of 10 fps


def test_an_agent_trained_under_another_accounting_is_refused(systems) -> None:
    """ASET's declared-load feature changes meaning with the accounting: an agent file from before the key
    (read as rate) cannot drive an input-time system, even with the same capacities."""
    spec = StateSpec.of(systems[INPUT_TIME], history=2)
    assert spec.load_accounting == INPUT_TIME and StateSpec.of(systems[RATE], history=2).load_accounting == RATE
    meta = AgentMeta("acc", spec.shape, spec.n_resources, POLICY_NAMES, 5.0, 8, 2, 16, True, 1, 0.0,
                     resource_names=spec.resource_names, capacity_qps=spec.capacity_qps, profiles="it.yaml",
                     load_accounting=INPUT_TIME)
    meta.check_compatible(spec, "agent.onnx")
    old = json.loads(meta.to_json())
    del old["load_accounting"]
    old_meta = AgentMeta.from_json(json.dumps(old))
    assert old_meta.load_accounting == RATE
    with pytest.raises(AgentMismatchError, match="agent.onnx: agent trained with rate load accounting, the system's "
                                                 "profile .* uses input-time"):
        old_meta.check_compatible(spec, "agent.onnx")
