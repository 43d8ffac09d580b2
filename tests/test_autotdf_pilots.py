"""`--tdf auto`'s pilots measure what the host carries of the trace's load, nothing else: each pilot replays the
busiest second's streams without the run's network events or faults (a radio slowed, a link cut, a worker killed
would change what the pilot offers and what the monitor sees), while the run that follows keeps them all. The live
runs are the callable `run_auto` is given; here it records the specs and answers a verdict per K."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from live.autotdf import PILOT_S, PILOT_WARMUP_S, choose_tdf, run_auto, search
from live.spec import DEMO_EVENTS, RunSpec, add_run_arguments, spec_from_args
from workload.trace import read_trace


@dataclass
class _Summary:
    extra: dict


@dataclass
class _Result:
    out: Path
    summary: _Summary


@dataclass
class _Runs:
    """Writes each run's config.json as a run would and says faithful from K `passes` up."""

    passes: float
    specs: list[RunSpec] = field(default_factory=list)

    def __call__(self, spec: RunSpec, log) -> _Result:
        self.specs.append(spec)
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"time_dilation": {"factor": spec.tdf}}))
        ok = spec.tdf >= self.passes
        return _Result(out, _Summary({"fidelity": {"verdict": "faithful" if ok else "not faithful"}}))


def test_the_pilots_replay_the_trace_without_the_runs_events_and_faults(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    spec = spec_from_args(parser.parse_args(["--tdf", "auto", "--out", str(tmp_path / "run"), "--duration", "20",
                                             "--kill-worker", "mobilenet-ssd-cpu-b1@ant1=5",
                                             "--restart-scheduler", "ant2=6"]))
    assert spec.events == DEMO_EVENTS and spec.tdf is None and spec.kill_worker and spec.restart_scheduler
    runs = _Runs(passes=0.0)  # every pilot passes: the search walks down from its estimate
    result = run_auto(spec, lambda _: None, runs)
    *pilots, final = runs.specs
    assert pilots and [p.tdf for p in pilots] == sorted((p.tdf for p in pilots), reverse=True)
    pilot_trace = tmp_path / "run-pilots" / "trace.csv"
    for p in pilots:
        assert p.events is None and p.kill_worker == () and p.restart_scheduler == ()
        assert p.trace == pilot_trace.resolve() and p.duration_s == PILOT_WARMUP_S + PILOT_S and p.pcap == "none"
        assert p.judged_from_s == PILOT_WARMUP_S
        assert Path(p.out).parent == tmp_path / "run-pilots"
    starts = read_trace(pilot_trace).start_s  # the busiest second's streams, starting over the warm-up
    assert starts.min() == 0.0 and 0.0 < starts.max() < PILOT_WARMUP_S and len(set(starts)) == len(starts)
    assert final.tdf == pilots[-1].tdf and final.events == DEMO_EVENTS and final.trace is None
    assert final.judged_from_s == 0.0  # the run itself is judged whole
    assert final.kill_worker == spec.kill_worker and final.restart_scheduler == spec.restart_scheduler
    assert result.out == tmp_path / "run"


@dataclass
class _PolicyRuns(_Runs):
    """Says faithful from K `passes` up for the policy `strict`, always for the others."""

    strict: str = "least-impedance"

    def __call__(self, spec: RunSpec, log) -> _Result:
        result = super().__call__(spec, log)
        ok = spec.policy != self.strict or spec.tdf >= self.passes
        return _Result(result.out, _Summary({"fidelity": {"verdict": "faithful" if ok else "not faithful"}}))


@pytest.mark.parametrize("passes", [1.0, 3.0, 64.0])
def test_compares_search_pilots_every_policy_and_a_k_passes_when_each_does(tmp_path: Path, passes: float) -> None:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    spec = spec_from_args(parser.parse_args(["--tdf", "auto", "--duration", "20", "--events", "none"]))
    runs = _PolicyRuns(passes=passes)
    policies = ("closest", "least-impedance", "load-balancing")
    found, peak = choose_tdf(spec, lambda _: None, runs, tmp_path / "pilots", policies)
    expected = search(found.estimate, lambda k: k >= passes)  # the strict policy alone decides
    assert found == expected and peak.queries_per_s > 0
    by_k: dict[float, list[str]] = {}
    for s in runs.specs:
        by_k.setdefault(s.tdf, []).append(s.policy)
        assert Path(s.out) == tmp_path / "pilots" / f"k{s.tdf:g}" / s.policy and s.duration_s == PILOT_WARMUP_S + PILOT_S
    assert list(by_k) == [k for k, _ in found.pilots]
    for k, ok in found.pilots:  # in order; the first policy judged not faithful ends the K's pilots
        assert by_k[k] == (list(policies) if ok else ["closest", "least-impedance"])


def test_without_out_the_run_and_its_pilots_share_one_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    spec = spec_from_args(parser.parse_args(["--tdf", "auto", "--duration", "20", "--events", "none"]))
    runs = _Runs(passes=0.0)
    result = run_auto(spec, lambda _: None, runs)
    *pilots, final = runs.specs
    assert result.out.parent == Path("runs") and Path(final.out) == result.out
    assert all(Path(p.out).parent == Path("runs") / f"{result.out.name}-pilots" for p in pilots)
