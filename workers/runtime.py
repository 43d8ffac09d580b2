"""ONNX Runtime sessions for one worker replica: execution provider by device (CUDA when
onnxruntime-gpu is installed, otherwise a clear error), intra-op threads, CPU pinning of the process, and the
inference thread's own name and cgroup. onnxruntime is imported on first use, so that profile-driven workers
start without it."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort


class DeviceUnavailable(RuntimeError):
    """The requested device has no execution provider in this ONNX Runtime build."""


def providers_for(device: str) -> list[str]:
    """Returns the execution providers for `cpu` or `gpu`, or raises DeviceUnavailable saying why."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "gpu":
        import onnxruntime as ort
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DeviceUnavailable(
                "device gpu needs ONNX Runtime's CUDAExecutionProvider, which this build lacks "
                f"(available: {available}); install onnxruntime-gpu instead of onnxruntime")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"device must be cpu or gpu, not {device!r}")


def make_session(onnx_path: Path, device: str = "cpu", threads: int = 1) -> ort.InferenceSession:
    """Returns a session running sequentially with `threads` intra-op threads that sleep when idle."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads would burn the cores of the other workers sharing this host.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=providers_for(device))


def keep_freed_memory(mmap_threshold_mb: int = 32, trim_threshold_mb: int = 64) -> bool:
    """Makes glibc malloc serve blocks up to `mmap_threshold_mb` from its heaps and keep up to
    `trim_threshold_mb` of freed memory, instead of mapping fresh pages for every large block (the
    per-query body, the batch's tensors, ONNX Runtime's outputs, the decoder's images): on a VM each
    fresh page is a fault: ~5% of a tiny-yolov2 batch here. Returns False where malloc is not glibc's."""
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, mmap_threshold_mb << 20)) and bool(
        mallopt(m_trim_threshold, trim_threshold_mb << 20))


def pin_process(cpus: Iterable[int]) -> tuple[int, ...]:
    """Pins this process (all its threads, present and future) to `cpus`; returns the set applied."""
    wanted = tuple(sorted(set(cpus)))
    os.sched_setaffinity(0, wanted)
    return tuple(sorted(os.sched_getaffinity(0)))


INFERENCE_THREAD_PREFIX = "ort-"
"""The kernel name (comm) of a real replica's inference thread begins so; the threads ONNX Runtime makes from it
(intra-op) inherit the name, so `/proc/PID/task/*/comm` tells a worker's inference threads from its event loop's
(the fidelity monitor measures their run-queue delay by it)."""
COMM_BYTES = 15
"""The kernel keeps a thread's name to 15 bytes."""


def name_this_thread(name: str) -> str:
    """Gives the calling thread `name` as its kernel name (cut to 15 bytes); returns the name it has."""
    comm = name.encode()[:COMM_BYTES].decode(errors="ignore")
    with contextlib.suppress(OSError):  # not Linux: only the monitor reads it
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(comm)
    return comm


def join_cgroup(group: Path) -> int:
    """Moves the calling thread alone into the cgroup `group` (threads it starts later are born there); returns
    its thread id. cgroup v1 (the cpuset controller): the thread id into the group's `tasks`. v2: into
    `cgroup.threads`, which takes a thread only into a threaded cgroup of its process's own threaded subtree
    (kernel docs, admin-guide/cgroup-v2 "Threads"); untested, the development machine's cpuset is v1."""
    tid = threading.get_native_id()
    target = group / "tasks"
    if not target.exists():
        target = group / "cgroup.threads"
    try:
        fd = os.open(target, os.O_WRONLY)  # no O_CREAT: a directory that is not a cgroup is refused
        try:
            os.write(fd, str(tid).encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot move inference thread {tid} into cgroup {group} ({target.name}): "
                                 f"{exc.strerror}") from None
    return tid


def parse_cpus(text: str) -> tuple[int, ...]:
    """Returns CPU ids from a list such as '0,1' or '0-3,6'."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"bad CPU list {text!r}: expected e.g. 0,1 or 0-3")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    if not cpus:
        raise ValueError(f"empty CPU list {text!r}")
    return tuple(sorted(cpus))
