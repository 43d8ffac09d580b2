"""The main job's demonstration: `run_testbed.py --topo full-edge` with no other option runs it (lambda 6, 45 s,
examples/demo-full-edge.yaml's network events, K 4), and in the simulator its policies and applications differ
on every seed; a live run's report simulates the seven policies on its trace and draws them with it."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from analysis.plots import plot_success_over_time
from live.beside import beside_record, format_beside, simulate_beside
from live.spec import (
    DEMO_CONTROLLER,
    DEMO_EVENTS,
    DEMO_SWITCH,
    DEMO_TDF,
    RunSpec,
    add_run_arguments,
    spec_from_args,
)
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from testbed.switches import controller_for
from topologies import load_topology


def _parse(argv: list[str]) -> RunSpec:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return spec_from_args(parser.parse_args(argv))


def test_the_default_run_is_the_demo() -> None:
    spec = _parse([])
    assert (spec.topo, spec.lambda_per_min, spec.duration_s, spec.events, spec.tdf) == (
        "full-edge", "6", 45.0, DEMO_EVENTS, DEMO_TDF)
    assert DEMO_EVENTS.is_file() and DEMO_TDF == 4.0
    assert _parse(["--topo", "full-edge"]) == spec
    assert _parse(["--topo", "tiny"]).events is None and _parse(["--topo", "tiny"]).tdf == 1.0
    assert _parse(["--events", "none"]).events is None
    assert _parse(["--tdf", "5"]).tdf == 5.0 and _parse(["--tdf", "auto"]).tdf is None
    assert _parse(["--lambda", "20"]).events == DEMO_EVENTS  # each option on its own: the others stay the demo's


def test_the_demo_runs_on_linux_bridges_unless_told_otherwise() -> None:
    def net(*argv: str) -> tuple[str, str]:
        spec = _parse(list(argv))
        return spec.switch, spec.controller

    assert (DEMO_SWITCH, DEMO_CONTROLLER) == ("lxbr", "none") == net() == net("--lambda", "20")
    assert net("--switch", "ovs") == ("ovs", "osken")  # the controller goes with the switches given
    assert net("--controller", "osken") == ("ovs", "osken")
    assert net("--switch", "ovs", "--controller", "none") == ("ovs", "none")
    assert net("--topo", "tiny") == ("ovs", "osken")  # elsewhere Open vSwitch and os-ken
    assert net("--topo", "tiny", "--switch", "lxbr") == ("lxbr", "none")
    assert net("--topo", "tiny", "--controller", "none") == ("ovs", "none")
    assert net("--servers", "local,b=root@10.9.0.2", "--place", "cloud=b") == ("ovs", "osken")  # across servers
    # the rule `net` and `compare` follow too
    assert (controller_for("lxbr"), controller_for("ovs"), controller_for("ovs", "none")) == ("none", "osken", "none")


SEEDS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> dict:
    """{seed: the seven policies' simulated summaries of the demo}, written under a temporary run dir each."""
    out = {}
    for seed in SEEDS:
        spec = _parse(["--seed", str(seed)])
        system = build_system(load_topology(spec.topo), load_profiles(None))
        trace, duration_s = spec.workload().build(system.antennas)
        where = tmp_path_factory.mktemp(f"s{seed}")
        out[seed] = (where, simulate_beside(where, spec.topo, load_profiles(None).source, trace, duration_s, seed,
                                            spec.events, spec.window_s))
    return out


def _spreads(runs: list) -> tuple[float, float]:
    success = [s.overall.success for s in runs]
    apps = [max(r.success for r in s.per_app.values()) - min(r.success for r in s.per_app.values()) for s in runs]
    return max(success) - min(success), max(apps)


@pytest.mark.parametrize("seed", SEEDS)
def test_demo_policies_or_applications_differ_in_the_simulator(seed, demo_runs) -> None:
    """The demo's criterion on each seed: 10 points between policies, or 15 between applications."""
    where, runs = demo_runs[seed]
    policies, apps = _spreads(runs)
    assert policies >= 0.10 or apps >= 0.15, (seed, policies, apps)
    assert (where / "simulated" / "closest" / "summary.json").is_file()
    record = beside_record(runs)
    assert set(record) == {s.policy for s in runs} and format_beside(record)[0].startswith("the simulator's")


def test_demo_policy_spread_over_seeds(demo_runs) -> None:
    """Over the seeds the policies differ by 10 points or more on average, and closest beats farthest on each."""
    spreads = [_spreads(runs)[0] for _, runs in demo_runs.values()]
    by = [{s.policy: s.overall.success for s in runs} for _, runs in demo_runs.values()]
    assert np.mean(spreads) >= 0.10 and all(b["closest"] > b["farthest"] for b in by), spreads


def test_plot_draws_the_live_run_with_the_simulated_policies(demo_runs, tmp_path) -> None:
    _, runs = demo_runs[1]
    live = dataclasses.replace(runs[0], environment="testbed")
    path = tmp_path / "success.png"
    plot_success_over_time([live, *runs], path, events=[(10.0, "co1-dc1 20 Mbit/s"), (20.0, "dc1-cloud down")])
    assert path.stat().st_size > 10_000
