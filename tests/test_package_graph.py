"""The package graph of docs/architecture.md holds in the code: no package imports one it may not, and the
scheduler (the brain) reads no clock."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRAPH_HEADING = "## Packages and what each may import"
CLOCKS = {"time", "datetime"}
NETWORK = {"aiohttp", "asyncio", "socket", "requests"}


def allowed_graph() -> dict[str, set[str]]:
    """Returns {package: packages it may import} from the table of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split(GRAPH_HEADING, 1)[1].split("\n## ", 1)[0]  # the table under that heading only
    graph = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \|[^|]*\|([^|]*)\|\s*$", line)
        if m:
            graph[m.group(1)] = {p.strip() for p in m.group(2).split(",") if p.strip()}
    return graph


def imports_of(path: Path, package: tuple[str, ...] | None = None) -> set[str]:
    """Returns the top-level names of every module a file imports, at any depth of the file; a relative
    import is resolved against the file's own package (`from ..live import spec` in workers/x/y.py: live)."""
    names = set()
    if package is None:
        package = path.resolve().parent.relative_to(ROOT).parts if path.resolve().is_relative_to(ROOT) else ()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - (node.level - 1)] if node.level - 1 <= len(package) else ()
            parts = (*base, *(node.module.split(".") if node.module else ()))
            names.add(parts[0] if parts else "..")  # above the repository: never a package it may import
    return names


def test_the_table_names_every_package():
    graph = allowed_graph()
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"benchmarks", "experiments", "tests"}
    assert set(graph) == packages, "docs/architecture.md's table and the packages on disk differ"
    for pkg, deps in graph.items():
        assert deps <= set(graph), f"{pkg} may import unknown packages {deps - set(graph)}"


def test_no_package_imports_above_itself():
    graph = allowed_graph()
    project = set(graph) | {"benchmarks", "experiments", "tests", "run_testbed"}
    wrong = []
    for pkg, deps in graph.items():
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for name in sorted(imports_of(path) & project - {pkg} - deps):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_brain_reads_no_clock_and_opens_no_connection():
    wrong = [f"{p.relative_to(ROOT)} imports {n}"
             for p in sorted((ROOT / "scheduler").rglob("*.py")) for n in sorted(imports_of(p) & (CLOCKS | NETWORK))]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from simulator.engine import Simulation\n    import time\n")
    assert imports_of(f) == {"simulator", "time"}
    f.write_text("from ...live import spec\nfrom . import layers\nfrom .. import engine\n")
    assert imports_of(f, package=("workers", "nets")) == {"live", "workers"}  # as if in workers/nets/
