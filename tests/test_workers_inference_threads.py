"""A real replica's inference thread: it loads and warms its ONNX Runtime session itself, under a kernel name
(`ort-...`) that ONNX Runtime's intra-op threads inherit, so that they can be told from the worker's event loop
(and moved into a cgroup of their own: tests/test_live_cores.py); a blocking call on it gives its result or
raises; a cgroup the worker cannot use is refused, naming it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from workers.deployment import WorkerSettings, resolve
from workers.engine import OnnxProcessor, ReplicaThread
from workers.modelconfig import load_model
from workers.runtime import join_cgroup


def _comm(tid: str) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().strip()


def test_a_replica_loads_and_warms_up_on_its_own_named_thread(astronaut_jpeg: bytes) -> None:
    before = set(os.listdir("/proc/self/task"))
    replica = OnnxProcessor(load_model("tiny-yolov2"), "cpu", threads=2)
    try:
        replica.warm_up(2)
        new = sorted(_comm(t) for t in set(os.listdir("/proc/self/task")) - before)
        # the replica's thread, and the one intra-op thread ONNX Runtime made from it (the caller is the other)
        assert new == ["ort-tiny-yolov2", "ort-tiny-yolov2"]
    finally:
        replica.close()


def test_a_call_on_the_replica_thread_gives_its_result_or_raises() -> None:
    thread = ReplicaThread("ort-test")
    try:
        assert thread.call(threading.get_native_id) != threading.get_native_id()
        assert _comm(str(thread.call(threading.get_native_id))) == "ort-test"
        with pytest.raises(ZeroDivisionError):
            thread.call(lambda: 1 / 0)
        assert thread.call(lambda: "still serving") == "still serving"
    finally:
        thread.close()


def test_an_inference_cgroup_the_worker_cannot_use_is_refused(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    with pytest.raises(ValueError, match="no such cgroup directory"):
        resolve(WorkerSettings(model="tiny-yolov2", inference_cgroup=tmp_path / "absent"))
    with pytest.raises(OSError, match=f"cannot move inference thread .* into cgroup {tmp_path}"):
        join_cgroup(tmp_path)  # a directory, but no cgroup
    assert list(tmp_path.iterdir()) == []  # nothing written there
