#!/usr/bin/env python3
"""Writes (or checks) the JSON Schemas of the project's file formats in this folder, from the pydantic
models the loaders validate with, so that the published schemas and the loaders never disagree.

    .venv/bin/python docs/schemas/generate.py --write    # regenerate after changing a format's model
    .venv/bin/python docs/schemas/generate.py --check    # exit 1 if a committed schema is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from live import spec  # noqa: E402
from scheduler import profiles  # noqa: E402
from topologies import events, loader  # noqa: E402
from topologies.strict import json_schema  # noqa: E402
from workload import scenario, trace  # noqa: E402

FORMATS: dict[str, type] = {
    loader.SCHEMA_FILE: loader.TopologyFile,
    profiles.SCHEMA_FILE: profiles.ProfileDocument,
    trace.SCHEMA_FILE: trace.TraceRow,
    "run-spec.schema.json": spec.RunSpec,
    events.SCHEMA_FILE: events.NetworkEventsFile,
    scenario.SCHEMA_FILE: scenario.ScenarioFile,
}
"""Schema file name -> the model of its format (add a format here, then run --write)."""


def rendered() -> dict[str, str]:
    """Returns the text of every schema file, as --write writes it."""
    return {name: json.dumps(json_schema(model), indent=2, ensure_ascii=False) + "\n"
            for name, model in FORMATS.items()}


def stale(folder: Path = HERE) -> list[str]:
    """Returns the schema files in `folder` that are missing or differ from what the models give."""
    return [name for name, text in rendered().items()
            if not (folder / name).is_file() or (folder / name).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write every schema file")
    mode.add_argument("--check", action="store_true", help="exit 1 if a schema file is missing or stale")
    args = parser.parse_args(argv)
    if args.write:
        for name, text in rendered().items():
            (HERE / name).write_text(text)
            print(f"wrote {HERE / name}")
        return 0
    wrong = stale()
    for name in wrong:
        print(f"{HERE / name} is stale: run {Path(__file__).name} --write", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
