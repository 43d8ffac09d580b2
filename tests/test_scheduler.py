"""Feasibility's four constraints at their edges, each policy's choice on hand-built cases, placement."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.core import POLICY_NAMES, LoadState, Scheduler, StreamRequest, policy_index
from scheduler.placement import greedy_placement
from scheduler.profiles import ProfileError, load_profiles
from scheduler.system import build_system
from topologies import load_topology

# One antenna (radio 2 ms) with a near cluster (5 ms) and a far one (20 ms), each running `fast`;
# the far one is cheaper (cloud layer) and has three replicas.
TOPO = """
name: hand
sites:
  - {name: a1, layer: antenna, radio: {delay_ms: 2, bw_mbps: 8}}
  - {name: near, layer: co, compute: {cpu_cores: 2, core_cost: 2}}
  - {name: far, layer: cloud, compute: {cpu_cores: 4, core_cost: 1}}
links:
  - {a: a1, b: near, delay_ms: 5, delay_dev_ms: 1, bw_mbps: 8}
  - {a: near, b: far, delay_ms: 15, bw_mbps: 8}
deployments:
  - {site: near, variant: fast-cpu-b1, replicas: 1}
  - {site: far, variant: fast-cpu-b1, replicas: 3}
  - {site: far, variant: slow-cpu-b1, replicas: 1}
"""


@pytest.fixture
def system(write_yaml, test_profile):
    return build_system(load_topology(write_yaml("hand.yaml", TOPO)), load_profiles(test_profile))


def req(**kw) -> StreamRequest:
    base = dict(antenna=0, fps=10.0, frame_bytes=1000.0, max_delay_ms=1000.0, min_accuracy=0.0, task=0)
    base.update(kw)
    return StreamRequest(**base)


def test_expected_latency_is_the_delay_constraint_by_hand(system) -> None:
    # near: 2*(2 + 5 + 2*1) + 1000 B * 8 bit / 8 Mbit/s on radio and one link (1 ms each) + 10 ms = 30 ms.
    # far:  2*(2 + 20 + 2*1) + 3 ms transmission (radio + two links) + 10 ms = 61 ms.
    near, far, slow = (r.index for r in system.resources)
    e = system.expected_ms(0, 1000.0)
    assert e[near] == pytest.approx(30.0)
    assert e[far] == pytest.approx(61.0)
    assert e[slow] == pytest.approx(151.0)


def test_budget_exactly_met_is_feasible_and_a_hair_less_is_not(system) -> None:
    s = Scheduler(system, np.random.default_rng(0))
    load = np.zeros(system.n_resources)
    assert s.decide(req(max_delay_ms=30.0), policy_index("closest"), load).resource == 0
    d = s.decide(req(max_delay_ms=29.999), policy_index("closest"), load)
    assert d.rejected and d.reason == "delay"


def test_capacity_constraint_at_the_limit_and_zero_capacity(system) -> None:
    s = Scheduler(system, np.random.default_rng(0))
    near_cap = system.capacity_qps[0]
    assert near_cap == pytest.approx(100.0)
    load = np.zeros(system.n_resources)
    load[0] = near_cap - 10.0
    assert s.decide(req(max_delay_ms=40), policy_index("closest"), load).resource == 0   # L + rho == C
    load[0] = near_cap - 9.0
    d = s.decide(req(max_delay_ms=40), policy_index("closest"), load)
    assert d.rejected and d.reason == "capacity"
    headroom = Scheduler(system, np.random.default_rng(0), capacity_headroom=2.0)
    load[0] = near_cap - 19.0
    assert headroom.decide(req(max_delay_ms=40), policy_index("closest"), load).rejected


def test_accuracy_and_task_constraints(system) -> None:
    s = Scheduler(system, np.random.default_rng(0))
    load = np.zeros(system.n_resources)
    d = s.decide(req(min_accuracy=0.5), policy_index("closest"), load)
    assert d.resource == 2  # only `slow` (0.6) is accurate enough
    d = s.decide(req(min_accuracy=0.7), policy_index("closest"), load)
    assert d.rejected and d.reason == "accuracy"
    d = s.decide(req(task=5), policy_index("closest"), load)
    assert d.rejected and d.reason == "task"


@pytest.mark.parametrize(("policy", "load0", "expected"), [
    ("closest", 0.0, 0),
    ("farthest", 0.0, 1),            # both far resources are 20 ms away: the faster one
    ("least-impedance", 0.0, 0),
    ("cheaper", 0.0, 1),             # far has core_cost 1 and 3 replicas of the cheap model
    ("load-balancing", 50.0, 1),     # near at 60% after binding, far fast at 10/300
])
def test_each_policy_choice_by_hand(system, policy: str, load0: float, expected: int) -> None:
    s = Scheduler(system, np.random.default_rng(0))
    load = np.zeros(system.n_resources)
    load[0] = load0
    assert s.decide(req(), policy_index(policy), load).resource == expected


def test_farthest_prefers_the_faster_variant_among_equally_far_ones(system) -> None:
    # fast@far (61 ms) and slow@far (151 ms) are equally far: farthest breaks the tie by latency.
    s = Scheduler(system, np.random.default_rng(0))
    assert s.decide(req(), policy_index("farthest"), np.zeros(3)).resource == 1


def test_random_policies_follow_their_weights(system) -> None:
    s = Scheduler(system, np.random.default_rng(1))
    load = np.zeros(system.n_resources)
    picks = np.bincount([s.decide(req(), policy_index("random-proportional-latency"), load).resource
                         for _ in range(6000)], minlength=3) / 6000
    w = 1 / np.array([30.0, 61.0, 151.0])
    assert picks == pytest.approx(w / w.sum(), abs=0.03)
    # near would be full after binding ((90+10)/100) and so would slow@far (10/10): both get the 1e-3 floor.
    load = np.array([90.0, 0.0, 0.0])
    picks = np.bincount([s.decide(req(), policy_index("random-proportional-load"), load).resource
                         for _ in range(3000)], minlength=3)
    assert picks[0] <= 15 and picks[2] <= 15 and picks[1] >= 2970


def test_policy_names_and_unknown_policy() -> None:
    assert len(POLICY_NAMES) == 7
    with pytest.raises(ValueError, match="least-impedance"):
        policy_index("fastest")


def test_load_state_binds_and_releases() -> None:
    s = LoadState.empty(2)
    s.bind(1, 12.5)
    s.bind(1, 2.5)
    s.release(1, 12.5)
    assert s.load_qps.tolist() == [0.0, 2.5] and s.streams.tolist() == [0, 1]


def test_profile_variants_capacity_and_interpolation(test_profile) -> None:
    p = load_profiles(test_profile)
    v = p.variant("fast-cpu-b4")
    assert v.batch_ms == pytest.approx((0.0, 10.0, 12.0, 14.0, 16.0))
    assert v.capacity_qps == pytest.approx(4 / 16 * 1000)
    assert p.variant("fast-cpu-b1").capacity_qps == pytest.approx(100.0)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("accuracy: 0.3,", "accuracy: 1.3,", "models.fast.accuracy: 1.3 must be between 0 and 1"),
    ("{1: 10.0, 4: 16.0}", "{1: 10.0, 4: 6.0}", "cannot take less than a batch of 1"),
    ("device: cpu, cpu_cores: 1, batch_latency_ms: {1: 100.0}", "device: tpu, batch_latency_ms: {1: 100.0}",
     "runtimes[1].device: 'tpu' is not one of cpu, gpu"),
    ("input_ms_per_mb: 0, source: test}\n  - {model: slow",
     "input_ms_per_mb: 0, source: test, speed: 3}\n  - {model: slow", "runtimes[0].speed: unknown key"),
    ("{model: slow,", "{model: missing,", "runtimes[1].model: 'missing' is not in 'models'"),
])
def test_bad_profiles_name_file_and_key(write_yaml, old: str, new: str, expected: str) -> None:
    from tests.conftest import TEST_PROFILE
    assert old in TEST_PROFILE
    path = write_yaml("bad-profile.yaml", TEST_PROFILE.replace(old, new))
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_shipped_profile_has_the_three_models_on_cpu_and_gpu_at_four_batch_sizes() -> None:
    from scheduler.profiles import PROVISIONAL_PROFILE
    p = load_profiles(PROVISIONAL_PROFILE)
    for model in ("mobilenet-ssd", "tiny-yolov2", "yolov3"):
        for device in ("cpu", "gpu"):
            for b in (1, 2, 4, 8):
                assert p.variant(f"{model}-{device}-b{b}").source
        assert p.models[model].accuracy_source


def test_greedy_placement_fits_every_site_and_offers_several_models() -> None:
    p = load_profiles()
    topo = load_topology("full-edge")
    deps = greedy_placement(topo, p)
    for site in topo.clusters:
        mine = [d for d in deps if d.site == site.name]
        cores = sum(p.variant(d.variant).cpu_cores * d.replicas for d in mine)
        gpus = sum(p.variant(d.variant).gpus * d.replicas for d in mine)
        assert cores <= site.compute.cpu_cores and gpus <= site.compute.gpus
        assert len({p.variant(d.variant).model for d in mine}) >= 2


def test_capacity_frame_kb_counts_the_input_time_everywhere_the_profile_is_read(tmp_path) -> None:
    """`capacity_frame_kb` in a profile file: each variant's declared capacity counts that frame's input time
    (by hand for the cloud's YOLOv3 GPU: 5 replicas x 8 / (70 + 8 x 8 ms/MB x 0.06 MB) ms); both profile
    readers keep it and the workers' writer writes it back; a bad value names the file and the key."""
    import yaml

    from scheduler.profiles import PROVISIONAL_PROFILE, read_profile, write_profile
    from scheduler.system import build_system
    from topologies import load_topology

    doc = yaml.safe_load(PROVISIONAL_PROFILE.read_text())
    doc["capacity_frame_kb"] = 60
    path = tmp_path / "p60.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    plain, counted = load_profiles(PROVISIONAL_PROFILE), load_profiles(path)
    assert plain.capacity_frame_kb == 0 and counted.capacity_frame_kb == 60
    v0, v = plain.variant("yolov3-gpu-b8"), counted.variant("yolov3-gpu-b8")
    assert v0.capacity_qps == pytest.approx(8 / 70 * 1000)
    assert v.capacity_qps == pytest.approx(8 / (70 + 8 * 8.0 * 0.06) * 1000)
    topo = load_topology("full-edge")
    s0, s = build_system(topo, plain), build_system(topo, counted)
    cloud = next(r.index for r in s.resources if r.site == "cloud" and r.variant.name == "yolov3-gpu-b8")
    assert s.capacity_qps[cloud] == pytest.approx(5 * 8 / 0.07384)
    assert [r.name for r in s.resources] == [r.name for r in s0.resources]  # placement does not move
    assert all(s.capacity_qps <= s0.capacity_qps) and any(s.capacity_qps < s0.capacity_qps)
    pf = read_profile(path)
    assert pf.capacity_frame_kb == 60
    write_profile(pf, tmp_path / "copy.yaml")
    assert load_profiles(tmp_path / "copy.yaml").variant("yolov3-gpu-b8").capacity_qps == pytest.approx(v.capacity_qps)
    write_profile(read_profile(PROVISIONAL_PROFILE), tmp_path / "plain.yaml")
    assert "capacity_frame_kb" not in (tmp_path / "plain.yaml").read_text()
    doc["capacity_frame_kb"] = -1
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ProfileError, match=r"p60.yaml: capacity_frame_kb: -1 must be >= 0"):
        load_profiles(path)
