"""Scenarios: workloads whose load and application mix change over time in a repeating cycle (a scenario file).

A scenario is a cycle of phases; each phase opens streams at its own `lambda_per_min` (new streams per minute
per antenna) with its own application mix (relative weights of the application classes, missing classes 0).
The cycle repeats for the whole run, shifted by `offset_s`. A trace is drawn phase by phase with Poisson
thinning of the nominal mix (`mixed_trace`), so arrivals stay Poisson at each phase's lambda. Files live in
workload/scenarios/ (a name there, or a path), read strictly (`ScenarioFile`, published as
docs/schemas/scenario.schema.json; docs/file-formats.md#scenario); docs/aset.md#scenarios has the shipped ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from topologies.strict import Name, NonNegative, Positive, StrictModel, at_key, derived, load_yaml, validate
from workload.apps import APP_NAMES, APPS
from workload.arrivals import RateSchedule, generate_trace
from workload.trace import Trace

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


def mixed_trace(antennas: tuple[str, ...], schedule: RateSchedule, duration_s: float,
                app_weight: np.ndarray, rng: np.random.Generator) -> Trace:
    """Returns a trace whose applications' shares are scaled by `app_weight` at the same total rate.

    Poisson thinning: streams are generated at lambda / E[weight] with the nominal mix and each is kept with
    probability weight[app] / max(weight), so arrivals stay Poisson with the schedule's total rate.
    """
    shares = np.array([a.share for a in APPS])
    keep = np.asarray(app_weight, dtype=np.float64) / np.max(app_weight)
    boost = 1.0 / float(np.dot(shares / shares.sum(), keep))
    scaled = RateSchedule(tuple((s, lam * boost) for s, lam in schedule.segments))
    full = generate_trace(antennas, scaled, duration_s, rng)
    app_idx = np.array([APP_NAMES.index(a) for a in full.app], dtype=np.int64)
    mask = rng.random(len(full)) < keep[app_idx]
    return Trace(**{k: getattr(full, k)[mask] for k in full.__dataclass_fields__})


def concat(traces: list[Trace]) -> Trace:
    """Returns the traces' streams as one trace sorted by start time, numbered 0..n-1 in that order."""
    cols = {k: np.concatenate([getattr(t, k) for t in traces]) for k in Trace.__dataclass_fields__}
    order = np.argsort(cols["start_s"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    cols["stream_id"] = np.arange(len(order), dtype=np.int64)
    return Trace(**cols)


@dataclass(frozen=True)
class Phase:
    """One phase of the cycle: how long, at which lambda, with which application weights."""

    duration_s: float
    lambda_per_min: float
    app_weight: tuple[float, ...]
    """Weight per application class, in APP_NAMES order (relative shares of the phase's new streams)."""


@dataclass(frozen=True)
class Scenario:
    """A repeating cycle of phases (see the module's docstring)."""

    name: str
    description: str
    phases: tuple[Phase, ...]

    @property
    def period_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    def phase_at(self, t_s: float, offset_s: float = 0.0) -> int:
        """Returns the index of the phase in force at time t_s of a run whose cycle is shifted by offset_s."""
        x = (t_s + offset_s) % self.period_s
        for i, p in enumerate(self.phases):
            if x < p.duration_s:
                return i
            x -= p.duration_s
        return len(self.phases) - 1

    def trace(self, antennas: tuple[str, ...], duration_s: float, rng: np.random.Generator,
              lambda_scale: float = 1.0, offset_s: float = 0.0, mix_noise: np.ndarray | None = None) -> Trace:
        """Returns the streams opening in [0, duration_s): every phase occurrence drawn with its own lambda
        (times `lambda_scale`) and mix (times `mix_noise`, one factor per application), cycle shifted by
        `offset_s` seconds."""
        parts = []
        t = -(offset_s % self.period_s)
        i = 0
        while t < duration_s:
            p = self.phases[i % len(self.phases)]
            start, end = max(t, 0.0), min(t + p.duration_s, duration_s)
            if end > start and p.lambda_per_min > 0:
                weight = np.asarray(p.app_weight, dtype=np.float64)
                if mix_noise is not None:
                    weight = weight * mix_noise
                if weight.max() > 0:
                    sched = RateSchedule(((0.0, 0.0), (start, p.lambda_per_min * lambda_scale)) if start > 0
                                         else ((0.0, p.lambda_per_min * lambda_scale),))
                    parts.append(mixed_trace(antennas, sched, end, weight, rng))
            t += p.duration_s
            i += 1
        return concat(parts) if parts else generate_trace(antennas, RateSchedule.constant(0.0), duration_s, rng)


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the file, the key and the value."""


SCHEMA_FILE = "scenario.schema.json"
"""Its JSON Schema, under docs/schemas/."""
AppName = Literal[APP_NAMES]  # type: ignore[valid-type]


class PhaseEntry(StrictModel):
    """One phase of the cycle as a scenario file writes it."""

    duration_s: Positive = Field(description="how long the phase lasts, seconds")
    lambda_per_min: NonNegative = Field(description="new streams per minute per antenna during the phase")
    mix: Annotated[dict[AppName, NonNegative], Field(min_length=1)] | None = derived(
        "relative weights of the application classes' new streams (a class left out gets none); "
        "absent: the nominal mix")


class ScenarioFile(StrictModel):
    """A scenario file: a cycle of phases that repeats for the whole run."""

    name: Name | None = derived("the scenario's name (absent: the file's name without .yaml)")
    description: str = Field("", description="what the scenario stands for, one line")
    phases: list[PhaseEntry] = Field(min_length=1, description="the cycle's phases, in order")


def load_scenario(text: str | Path) -> Scenario:
    """Returns the scenario in a file (a path, or a name in workload/scenarios/); one-line errors name the key."""
    path = Path(text)
    if not path.is_file():
        path = SCENARIO_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
        raise ScenarioError(f"scenario {text!r}: no such file or shipped scenario (shipped: {known})")
    doc = validate(ScenarioFile, load_yaml(path, ScenarioError), path, ScenarioError)
    nominal = {a.name: a.share for a in APPS}
    phases = []
    for i, ph in enumerate(doc.phases):
        mix = nominal if ph.mix is None else ph.mix
        if not sum(mix.values()) > 0:
            raise ScenarioError(at_key(path, f"phases[{i}].mix", "every weight is 0 (no stream would open)"))
        phases.append(Phase(ph.duration_s, ph.lambda_per_min, tuple(float(mix.get(a, 0.0)) for a in APP_NAMES)))
    return Scenario(doc.name or path.stem, doc.description, tuple(phases))
