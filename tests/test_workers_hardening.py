"""The worker against clients it did not write: tritonclient on every Open Inference Protocol route, and
clients that misbehave: slow headers, slow bodies announcing megabytes, bodies over the budget, JSON
nested 100,000 deep, a client that drops its connection. The worker bounds its memory, closes the slow
connections after their deadline, answers the others and logs one line per dropped client."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil
import pytest
from aiohttp.test_utils import TestClient, TestServer
from worker_profile import write_worker_profile

from workers.deployment import WorkerSettings, resolve
from workers.lifecycle import serving
from workers.limits import MIB, RequestGuard, RequestLimits, json_depth_error
from workers.modelconfig import REPO_ROOT
from workers.service import ENGINE, create_app

MODEL = "tiny-yolov2"
FRAMES = f"/v2/models/{MODEL}/frames"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    return write_worker_profile(tmp_path / "profile.yaml", MODEL, {1: 5.0})


class WorkerProcess:
    """`python -m workers.serve` on a loopback port, stopped with SIGTERM."""

    def __init__(self, *options: str) -> None:
        cmd = [sys.executable, "-m", "workers.serve", "--model", MODEL, "--port", "0", *options]
        # A file, not a pipe: one nobody reads would fill and stop the worker. Closed by stop().
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"worker did not start: {line!r} {self.stop()[-2000:]}")
        self.url = line.split()[1]
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def rss_mib(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / MIB

    def stop(self) -> str:
        """Stops the worker and returns what it logged."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text


# --- Open Inference Protocol clients, unmodified -------------------------------------------------

def test_tritonclient_drives_every_route_json_and_binary_versioned_or_not(astronaut_jpeg: bytes) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from workers.modelconfig import load_model
    from workers.prepost import prepare_jpeg
    image = prepare_jpeg(astronaut_jpeg, load_model(MODEL)).tensor[None]
    worker = WorkerProcess("--batch", "2", "--max-batch-delay-ms", "1")
    try:
        client = triton.InferenceServerClient(f"{worker.host}:{worker.port}")
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "edge-testbed-worker"
        for version in ("", "1"):
            assert client.is_model_ready(MODEL, version)
            meta = client.get_model_metadata(MODEL, version)
            assert meta["versions"] == ["1"] and meta["inputs"][0]["name"] == "images"
        assert not client.is_model_ready(MODEL, "2")
        with pytest.raises(InferenceServerException, match="version"):
            client.get_model_metadata(MODEL, "2")
        answers = []
        for binary in (False, True):  # JSON tensors come with no Content-Type from this client
            for version in ("", "1"):
                tensor = triton.InferInput("images", list(image.shape), "FP32")
                tensor.set_data_from_numpy(image, binary_data=binary)
                result = client.infer(MODEL, [tensor], model_version=version, request_id="r7",
                                      outputs=[triton.InferRequestedOutput("detections", binary_data=binary)])
                assert result.get_response()["id"] == "r7" and result.get_response()["model_version"] == "1"
                answers.append(result.as_numpy("detections"))
        for detections in answers:
            assert detections.shape == (1, 7) and detections[0, 5] > 0.9  # the astronaut's face
            np.testing.assert_allclose(detections, answers[0], rtol=1e-5)
    finally:
        worker.stop()


# --- slow clients ---------------------------------------------------------------------------------

async def slow_client(host: str, port: int, head: bytes, trickle: bytes, every_s: float, give_up_s: float) -> float | None:
    """Sends `head`, then `trickle` every `every_s`; returns when the worker closed the connection (s from
    the start), or None if it was still open after `give_up_s`."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head)
        while time.monotonic() - started < give_up_s:
            writer.write(trickle)
            await writer.drain()
            try:
                if not await asyncio.wait_for(reader.read(4096), every_s) or reader.at_eof():
                    return time.monotonic() - started
            except asyncio.TimeoutError:
                continue
        return None
    except (ConnectionError, OSError):
        return time.monotonic() - started
    finally:
        writer.close()


def test_slow_clients_are_closed_after_their_deadline_and_cannot_grow_the_worker(profile_file: Path,
                                                                                 astronaut_jpeg: bytes) -> None:
    """20 slow bodies (half announcing 8 MiB, half 3 MiB, 16 bytes/s) and 20 slow headers against a
    worker with a 16 MiB body budget: before the limits each body's buffer was allocated whole (+110 MiB)
    and no slow connection was ever closed."""
    worker = WorkerProcess("--profile-driven", str(profile_file), "--batch", "1", "--max-batch-delay-ms", "0",
                           "--body-budget-mb", "16", "--header-timeout-s", "1.5", "--body-timeout-s", "2")

    async def attack() -> tuple[list, list, list[int], float]:
        def body_head(mib: int) -> bytes:
            return (f"POST {FRAMES} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {mib * MIB}\r\n\r\n").encode() + b"\xff\xd8"
        slow = [slow_client(worker.host, worker.port, body_head(8 if i % 2 else 3), b"\0" * 16, 1.0, 8.0)
                for i in range(20)]
        slow += [slow_client(worker.host, worker.port, b"GET /v2/health/live HTTP/1.1\r\nX-Slow: ", b"a", 0.5, 8.0)
                 for _ in range(20)]
        tasks = [asyncio.create_task(c) for c in slow]
        await asyncio.sleep(0.8)
        peak = worker.rss_mib()
        statuses = []
        async with aiohttp.ClientSession(base_url=worker.url) as session:  # normal requests meanwhile
            for _ in range(10):
                async with session.post(FRAMES, data=astronaut_jpeg, headers={"Content-Type": "image/jpeg"}) as r:
                    statuses.append(r.status)
                peak = max(peak, worker.rss_mib())
        closed = await asyncio.gather(*tasks)
        return closed[:20], closed[20:], statuses, peak

    try:
        before = worker.rss_mib()
        bodies, headers, statuses, peak = asyncio.run(attack())
    finally:
        log = worker.stop()
    assert statuses == [200] * 10
    assert peak - before < 30, f"RSS grew from {before:.0f} to {peak:.0f} MiB"
    assert all(t is not None and 1.8 <= t <= 5 for t in bodies), bodies  # body deadline 2 s
    assert all(t is not None and 1.3 <= t <= 5 for t in headers), headers  # header deadline 1.5 s
    assert "Traceback" not in log


# --- the budget, JSON nesting, dropped clients (in process) -----------------------------------------

def run_app(settings: WorkerSettings, limits: RequestLimits | None, scenario) -> None:
    async def main() -> None:
        app = create_app(resolve(settings), limits)
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(app[ENGINE].ready.wait(), 60)
            await scenario(client, app)
    asyncio.run(main())


def test_bodies_over_the_budget_get_503_and_the_budget_is_released(profile_file: Path, astronaut_jpeg: bytes) -> None:
    limits = RequestLimits(body_budget_bytes=1 * MIB, prealloc_max_bytes=256 * 1024)

    async def scenario(client: TestClient, app) -> None:
        # A sender that announced 900 kB and stalls after 600 kB holds 600 kB of the 1 MiB budget.
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write((f"POST {FRAMES} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      f"Content-Length: {900_000}\r\n\r\n").encode() + b"\xff\xd8" + bytes(600_000))
        await writer.drain()
        await asyncio.sleep(0.3)
        resp = await client.post(FRAMES, data=b"\xff\xd8" + bytes(500_000), headers={"Content-Type": "image/jpeg"})
        answer = await resp.json()
        assert (resp.status, answer["error"]) == (503, "body_budget"), answer
        assert answer["budget_bytes"] == MIB and answer["in_flight_bytes"] >= 600_000
        resp = await client.post(FRAMES, data=astronaut_jpeg, headers={"Content-Type": "image/jpeg"})
        assert resp.status == 200  # a small body still fits
        writer.close()  # the stalled sender leaves: its bytes are released
        await asyncio.sleep(0.2)
        metrics = await (await client.get("/metrics")).text()
        assert "worker_body_budget_refused_total{" in metrics and "worker_body_in_flight_bytes{" in metrics
        resp = await client.post(FRAMES, data=b"\xff\xd8" + bytes(500_000) + b"\xff\xd9",
                                 headers={"Content-Type": "image/jpeg"})
        assert resp.status == 200

    run_app(WorkerSettings(MODEL, max_batch_size=1, max_batch_delay_ms=0, profile_driven=profile_file), limits,
            scenario)


def test_json_nested_100000_deep_is_a_400_naming_the_limit(profile_file: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000

    async def scenario(client: TestClient, app) -> None:
        for body, headers in ((deep, {"Content-Type": "application/json"}),
                              (b'{"inputs": ' + deep + b"}", {"Inference-Header-Content-Length": str(len(deep) + 12)})):
            resp = await client.post(INFER, data=body, headers=headers)
            answer = await resp.json()
            assert (resp.status, answer["error"]) == (400, "bad_tensor"), answer
            assert re.search(r"nested 10000[01] deep; at most 64", answer["detail"]), answer

    run_app(WorkerSettings(MODEL, max_batch_size=1, max_batch_delay_ms=0, profile_driven=profile_file), None, scenario)


def test_a_dropped_client_logs_one_line_and_no_traceback(profile_file: Path, caplog) -> None:
    """Served as serve.py serves it (lifecycle.serving: aiohttp does not cancel the handler of a client
    that left, so its read of the body fails)."""
    async def main() -> None:
        app = create_app(resolve(WorkerSettings(MODEL, max_batch_size=1, max_batch_delay_ms=0,
                                                profile_driven=profile_file)))
        async with serving(app, "127.0.0.1", 0, header_timeout_s=5.0) as service:
            await asyncio.wait_for(app[ENGINE].ready.wait(), 30)
            host, port = service.url.removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write((f"POST {FRAMES} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                          "Content-Length: 100000\r\n\r\n").encode() + b"\xff\xd8" + bytes(1000))
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as session, session.get(f"{service.url}/v2/health/ready") as resp:
                assert resp.status == 200

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    records = [r for r in caplog.records if r.name.startswith(("workers", "aiohttp"))]
    assert len(records) == 1 and "dropped the connection" in records[0].getMessage(), records
    assert records[0].exc_info is None and "\n" not in records[0].getMessage()


def test_unknown_model_version_is_404_and_json_without_content_type_is_taken(profile_file: Path) -> None:
    async def scenario(client: TestClient, app) -> None:
        resp = await client.get(f"/v2/models/{MODEL}/versions/2")
        assert (resp.status, (await resp.json())["error"]) == (404, "unknown_model_version")
        resp = await client.get(f"/v2/models/{MODEL}/versions/1/ready")
        assert (await resp.json()) == {"name": MODEL, "version": "1", "ready": True}
        request = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 3, 416, 416],
                               "data": [0] * (3 * 416 * 416)}]}
        resp = await client.post(f"/v2/models/{MODEL}/versions/1/infer", data=json.dumps(request).encode(),
                                 skip_auto_headers=["Content-Type"])
        assert resp.status == 200, await resp.text()
        resp = await client.post(INFER, data=b"x", headers={"Content-Type": "text/csv"})
        assert resp.status == 415

    run_app(WorkerSettings(MODEL, max_batch_size=1, max_batch_delay_ms=0, profile_driven=profile_file), None, scenario)


# --- units ------------------------------------------------------------------------------------------

def test_json_depth_counts_arrays_and_objects_but_not_brackets_in_strings() -> None:
    assert json_depth_error(b'{"a": [[1], {"b": [2]}]}', 4) is None
    assert "nested 4 deep" in json_depth_error(b'{"a": [[1], {"b": [2]}]}', 3)
    assert json_depth_error(b'{"id": "[[[[[[\\"{{{{"}', 1) is None
    assert json_depth_error(b"[" * 10 + b"]" * 10, 10) is None


def test_preallocated_buffers_hold_at_most_their_share_of_the_budget() -> None:
    guard = RequestGuard(RequestLimits(body_budget_bytes=1000, prealloc_share=0.5), max_body_bytes=1000)
    a, b, c = {}, {}, {}
    assert guard.reserve(a, 400, preallocate=True)
    assert not guard.reserve(b, 200, preallocate=True)  # 600 > the 500 of preallocations' share
    assert guard.reserve(b, 200) and guard.reserve(b, 300)  # as it arrives: up to the whole budget
    assert not guard.reserve(c, 101)
    assert (guard.in_flight_bytes, guard.preallocated_bytes) == (900, 400)
    guard.release(b, 200)
    guard.release(a)
    assert (guard.in_flight_bytes, guard.preallocated_bytes) == (300, 0)
    guard.release(b)
    assert guard.in_flight_bytes == 0
