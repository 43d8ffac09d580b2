"""Files given as an ASET agent that are not one: every command that takes `--agent` ends with exit 2 and one
line naming the file (simulate, evaluate, and the live run before it builds anything)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.aset.policy import AgentFileError, OnnxPolicy

ROOT = Path(__file__).resolve().parents[1]
BAD_FILES = {
    "empty.onnx": b"",
    "random.onnx": bytes(range(256)) * 3,
    "pickle.onnx": pickle.dumps({"weights": [1.0, 2.0], "topology": "tiny"}),
    "text.onnx": b"this is not a model\n",
}


@pytest.fixture
def bad_files(tmp_path: Path) -> list[Path]:
    paths = []
    for name, data in BAD_FILES.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_testbed.py"), *args], capture_output=True, text=True,
                          timeout=300)


def test_loader_refuses_each_bad_file_with_one_line_naming_it(bad_files: list[Path]) -> None:
    for path in bad_files:
        with pytest.raises(AgentFileError) as err:
            OnnxPolicy(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
        with pytest.raises(AgentFileError, match=f"^{path}: "):  # from bytes a sweep ships: still the file's name
            OnnxPolicy(path, model=path.read_bytes())


@pytest.mark.parametrize("command", ["simulate", "evaluate"])
def test_commands_end_with_status_2_and_one_line_naming_the_file(command: str, bad_files: list[Path],
                                                                 tmp_path: Path) -> None:
    for path in bad_files:
        extra = ("--duration", "5", "--out", str(tmp_path / "out")) if command == "simulate" else ("--seeds", "1")
        done = _run(command, "--topo", "tiny", "--agent", str(path), *extra)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {path}: "), done.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the live run refuses a non-root user first")
def test_live_run_refuses_a_bad_agent_before_building_anything(bad_files: list[Path], tmp_path: Path) -> None:
    for path in bad_files:
        out = tmp_path / "run"
        done = _run("run", "--topo", "tiny", "--agent", str(path), "--duration", "5", "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {path}: "), done.stderr
        assert not out.exists()  # no run dir, so no network, worker or capture was started
