"""The file formats: published JSON Schemas current and agreeing with the loaders on shipped and broken files,
and a bad topology, profile or trace ending the command line with one line and exit status 2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from scheduler.profiles import PROFILE_DIR, ProfileDocument, read_profile
from topologies.loader import TOPOLOGY_DIR, TopologyFile
from topologies.strict import NonNegative, StrictModel, load_yaml, validate
from workload.arrivals import RateSchedule, generate_trace
from workload.scenario import SCENARIO_DIR, ScenarioFile
from workload.trace import TraceRow, read_trace, write_trace

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "docs" / "schemas"
TOPOLOGIES = sorted(TOPOLOGY_DIR.glob("*.yaml"))
PROFILES = sorted(PROFILE_DIR.glob("*.yaml"))


def _generator():
    spec = importlib.util.spec_from_file_location("schema_generator", SCHEMAS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_json(doc):
    """Returns a YAML document as an editor's YAML language server sees it: JSON, mapping keys as strings."""
    return json.loads(json.dumps(doc))


def _validator(name: str):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency (pyproject.toml)")
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_published_schemas_are_those_the_models_give() -> None:
    generator = _generator()
    assert set(generator.FORMATS) == {"topology.schema.json", "profile.schema.json", "trace-row.schema.json",
                                      "run-spec.schema.json", "network-events.schema.json", "scenario.schema.json"}
    assert generator.stale() == [], "run: .venv/bin/python docs/schemas/generate.py --write"


def test_a_changed_model_makes_its_schema_stale(tmp_path: Path) -> None:
    generator = _generator()
    for name, text in generator.rendered().items():
        (tmp_path / name).write_text(text)
    assert generator.stale(tmp_path) == []
    (tmp_path / "profile.schema.json").write_text("{}\n")
    assert generator.stale(tmp_path) == ["profile.schema.json"]


@pytest.mark.parametrize("path", TOPOLOGIES + PROFILES, ids=lambda p: p.name)
def test_every_shipped_file_passes_its_model_and_its_published_schema(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    is_topology = path.parent == TOPOLOGY_DIR
    (TopologyFile if is_topology else ProfileDocument).model_validate(doc)
    errors = list(_validator("topology.schema.json" if is_topology else "profile.schema.json")
                  .iter_errors(_as_json(doc)))
    assert errors == [], [e.message for e in errors]


def test_the_example_events_file_passes_its_model_and_published_schema() -> None:
    from topologies.events import NetworkEventsFile

    doc = yaml.safe_load((TOPOLOGY_DIR.parent / "examples" / "network-events-tiny.yaml").read_text())
    NetworkEventsFile.model_validate(doc)
    assert list(_validator("network-events.schema.json").iter_errors(_as_json(doc))) == []
    doc["events"][0]["delay"] = 3  # a key without its unit: refused by both
    assert list(_validator("network-events.schema.json").iter_errors(_as_json(doc))) != []


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_passes_its_model_and_published_schema(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    ScenarioFile.model_validate(doc)
    assert list(_validator("scenario.schema.json").iter_errors(_as_json(doc))) == []
    for broken in ({"lambda": 20}, {"lambda_per_min": "20"}, {"mix": {"nope": 1}}):  # refused by both
        bad = {**doc, "phases": [{**doc["phases"][0], **broken}]}
        assert list(_validator("scenario.schema.json").iter_errors(_as_json(bad))) != []
        with pytest.raises(ValueError):
            ScenarioFile.model_validate(bad)


def test_generated_trace_rows_pass_the_row_model_and_schema(tmp_path: Path) -> None:
    trace = generate_trace(("ant1", "ant2"), RateSchedule.constant(20), 60, np.random.default_rng(4))
    write_trace(trace, tmp_path / "t.csv")
    back = read_trace(tmp_path / "t.csv")
    rows = [{k: getattr(back, k)[i].item() if hasattr(getattr(back, k)[i], "item") else getattr(back, k)[i]
             for k in TraceRow.model_fields} for i in range(len(back))]
    assert len(rows) > 5
    validator = _validator("trace-row.schema.json")
    for row in rows:
        TraceRow.model_validate(row)
        assert list(validator.iter_errors(row)) == []


@pytest.mark.parametrize(("edit", "key"), [
    (lambda d: d["links"][0].update(jitter=1), "jitter"),                   # unknown key
    (lambda d: d["links"][0].update(delay_ms="5ms"), "delay_ms"),            # wrong type
    (lambda d: d["links"][0].update(loss_pct=150), "loss_pct"),              # out of range
    (lambda d: d["links"][0].update(bw_mbps=0), "bw_mbps"),                  # a link of 0 Mbit/s
    (lambda d: d["sites"][0].update(layer="edge"), "layer"),                 # not a layer
    (lambda d: d["sites"][1]["compute"].update(gpus=1.5), "gpus"),           # not a whole number
    (lambda d: d.pop("links"), "links"),                                     # missing
])
def test_schema_and_loader_refuse_the_same_broken_topology(write_yaml, edit, key: str) -> None:
    from topologies import TopologyError, load_topology

    doc = yaml.safe_load((TOPOLOGY_DIR / "tiny.yaml").read_text())
    edit(doc)
    assert list(_validator("topology.schema.json").iter_errors(_as_json(doc))) != []
    path = write_yaml("broken.yaml", yaml.safe_dump(doc))
    with pytest.raises(TopologyError, match=key) as err:
        load_topology(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_schema_and_reader_refuse_the_same_broken_profile(tmp_path: Path) -> None:
    from scheduler.profiles import ProfileError

    doc = yaml.safe_load((PROFILE_DIR / "provisional.yaml").read_text())
    doc["runtimes"][0]["batch_latency_ms"][0] = 5.0
    assert list(_validator("profile.schema.json").iter_errors(_as_json(doc))) != []
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileError, match=r"runtimes\[0\]\.batch_latency_ms\.0: 0 is not a batch size"):
        read_profile(tmp_path / "p.yaml")


class _Inner(StrictModel):
    delay_ms: NonNegative
    table: dict[int, NonNegative] = {}


class _Outer(StrictModel):
    name: str
    items: list[_Inner]


@pytest.mark.parametrize(("data", "expected"), [
    ({"name": "x", "items": [{"delay_ms": 1}, {"delay": 2}]},            # unknown key before the missing one
     "f.yaml: items[1].delay: unknown key (did you mean 'delay_ms'? units are part of the key); "
     "allowed: delay_ms, table"),
    ({"name": "x", "items": [{}]}, "f.yaml: items[0]: missing required key 'delay_ms'"),
    ({"name": "x", "items": [{"delay_ms": "5ms"}]},
     "f.yaml: items[0].delay_ms: '5ms' is not a number (a plain number in ms; the unit is in the key)"),
    ({"name": "x", "items": [{"delay_ms": 1, "table": {4: -1}}]}, "f.yaml: items[0].table.4: -1 must be >= 0"),
    ({"name": "x", "items": [{"delay_ms": float("inf")}]}, "f.yaml: items[0].delay_ms: inf must be a finite number"),
    ({"name": "x", "items": "none"}, "f.yaml: items: expected a list, got 'none'"),
    (["x"], "f.yaml: (top level): expected a mapping, got ['x']"),
])
def test_one_line_names_file_key_path_and_value(data, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        validate(_Outer, data, "f.yaml")
    assert str(err.value) == expected


def test_yaml_errors_are_one_line_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ValueError, match=r"f\.yaml: line 3, column 2: invalid YAML: expected ',' or ']'") as err:
        load_yaml(path, ValueError)
    assert "\n" not in str(err.value)
    path.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(ValueError, match=r"f\.yaml: line 3, column 1: invalid YAML: duplicate key 'a'"):
        load_yaml(path, ValueError)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_testbed.py"), *args], capture_output=True, text=True,
                          timeout=300)


def test_bad_files_end_the_command_with_one_line_and_status_2(tmp_path: Path) -> None:
    """One subprocess per format (a topology with a YAML syntax error, a profile with a bad value, a trace
    with a bad row): each prints one line naming the file and the place, and exits 2."""
    tiny = (TOPOLOGY_DIR / "tiny.yaml").read_text()
    topo = tmp_path / "syntax.yaml"
    topo.write_text(tiny.replace("bw_mbps: 100}\n  - {a: dc1", "bw_mbps: 100\n  - {a: dc1"))
    bad_line = 1 + next(i for i, line in enumerate(topo.read_text().splitlines()) if line.startswith("  - {a: dc1"))
    profile = tmp_path / "profile.yaml"
    profile.write_text((PROFILE_DIR / "provisional.yaml").read_text().replace("accuracy: 0.34", "accuracy: 1.34"))
    trace = tmp_path / "trace.csv"
    trace.write_text("stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy\n"
                     "1,ant1,0.5,10,ar-vr,thirty,30000,80,0.2\n")
    out = str(tmp_path / "out")
    cases = [
        (("simulate", "--topo", str(topo), "--out", out), f"{topo}: line {bad_line}, column 5: invalid YAML: expected ','"),
        (("simulate", "--topo", "tiny", "--profiles", str(profile), "--out", out),
         f"{profile}: models.mobilenet-ssd.accuracy: 1.34 must be between 0 and 1"),
        (("simulate", "--topo", "tiny", "--trace", str(trace), "--out", out),
         f"{trace}: line 2, column 'fps': 'thirty' is not a number"),
    ]
    for args, expected in cases:
        done = _run(*args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {expected}"), done.stderr


def test_a_written_run_spec_passes_its_published_schema(tmp_path: Path) -> None:
    from live.spec import RunSpec, write_spec

    write_spec(RunSpec(topo="tiny", kill_worker=(("yolov3-gpu-b8@cloud", 3.0),)), tmp_path / "spec.json")
    validator = _validator("run-spec.schema.json")
    validator.validate(json.loads((tmp_path / "spec.json").read_text()))
    assert not validator.is_valid({**json.loads((tmp_path / "spec.json").read_text()), "speed": 2})
