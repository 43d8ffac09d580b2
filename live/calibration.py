"""`compare --calibrate RUN_DIR`: the simulator's inputs taken from one testbed run: its links as measured, each
variant's processing time as logged, and the software stack's own delay per direction.

The stack's delay is what the testbed's network stages took beyond the simulator's for the same queries: the
simulator first runs the testbed run again (its trace, seed, policy or agent, network events and worker
settings, with the topology and profiles its schedulers decided with), its links and workers behaving as
measured and no overhead, written to `OUT/calibration/`; analysis.calibrate pairs the two logs. Faults
(`--kill-worker`, `--restart-scheduler`) are not replayed: queries they moved pair on fewer workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.calibrate import StackOverhead, processing_scale, stack_overhead
from analysis.records import read_records
from live.spec import RunSpec, read_spec
from scheduler.profiles import ProfileSet, load_profiles
from scheduler.system import SystemModel, build_system
from simulator.run import simulate_aset, simulate_policy
from topologies import Topology, load_topology
from topologies.calibrate import calibrated_topology, read_link_figures
from topologies.events import load_events
from workload.trace import read_trace

if TYPE_CHECKING:
    import pyarrow as pa

    from workload.trace import Trace


@dataclass(frozen=True)
class Calibration:
    """What compare's simulator takes from a testbed run."""

    physics: SystemModel
    """The topology with the run's measured link figures, on compare's profiles: how the links behave."""
    processing_scale: dict[str, float]
    """Measured / planned processing time per variant, against compare's profiles."""
    overhead: StackOverhead
    label: str
    """The report's line on the simulator's inputs."""


def calibrate_from_run(run_dir: Path, topo: Topology, profiles: ProfileSet, out: Path) -> Calibration:
    """Returns compare's calibration from the testbed run in `run_dir` for `topo` and `profiles` (compare's);
    writes the simulator's run of that testbed run under `out`. Raises ValueError (one line, naming the run) where
    the run is of another topology, and the readers' errors where one of its files is missing or bad."""
    spec = read_spec(run_dir / "spec.json")
    run_topo, note = topo, ""
    if spec.topo and Path(spec.topo).is_file():
        run_topo = load_topology(spec.topo)
        if run_topo.name != topo.name:
            raise ValueError(f"--calibrate {run_dir}: that run is of topology {run_topo.name!r}, not --topo "
                             f"{topo.name!r}")
    else:
        note += f"; its topology file {spec.topo} is gone: --topo's used"
    run_profiles = profiles
    if spec.profiles is not None and Path(spec.profiles).is_file():
        run_profiles = load_profiles(spec.profiles)
    else:
        note += f"; its profiles {spec.profiles} are gone: compare's used"
    antennas = tuple(a.name for a in run_topo.antennas)
    trace = read_trace(run_dir / "trace.csv", antennas)
    records = read_records(run_dir / "records.csv")
    links = read_link_figures(run_dir)
    scale = processing_scale(records, profiles, trace)
    run_scale = scale if run_profiles is profiles else processing_scale(records, run_profiles, trace)
    simulated = simulate_run_again(spec, build_system(run_topo, run_profiles),
                                   build_system(calibrated_topology(run_topo, links), run_profiles),
                                   run_scale, run_topo, trace, out)
    overhead = stack_overhead(records, simulated)
    label = (f"calibrated from {run_dir} (schedulers decide with the nominal figures, as the testbed's do): "
             f"measured link figures; stack overhead {overhead.up_ms:.2f} ms up, {overhead.down_ms:.2f} ms down "
             f"beyond the simulator's run of it ({out.name}/), over {overhead.queries} queries served by the same "
             f"worker on both sides; processing x" + ", ".join(f"{k:.2f} ({v})" for v, k in scale.items())
             + f"; profiles {Path(profiles.source).name}" + note)
    return Calibration(build_system(calibrated_topology(topo, links), profiles), scale, overhead, label)


def simulate_run_again(spec: RunSpec, system: SystemModel, physics: SystemModel, scale: dict[str, float],
                       topo: Topology, trace: Trace, out: Path) -> pa.Table:
    """Returns the records of the simulator's run of a testbed run (`spec`, its spec.json: seed, policy or agent,
    network events, worker settings; `trace`: its trace) deciding with `system`, its links and workers behaving
    as `physics` and `scale` say, with no stack overhead; writes them under `out`."""
    duration_s = spec.duration_s if spec.duration_s is not None else float(trace.end_s.max(initial=0.0))
    config = spec.sim_config(duration_s, processing_scale=tuple(scale.items()))
    events = load_events(spec.events, topo) if spec.events is not None else None
    if spec.agent is not None:
        run = simulate_aset(system, trace, spec.agent, config, spec.seed, "", out, events=events, physics=physics)
    else:
        run = simulate_policy(system, trace, spec.effective_policy, config, spec.seed, "", out, physics=physics,
                              events=events)
    return read_records(run.records_path)
