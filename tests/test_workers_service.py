"""The worker service over HTTP, real (tiny-yolov2 in ONNX Runtime) and profile-driven: routes,
timestamps, batches formed under load, explicit overload with a bounded queue, every bad input
answered with a 4xx JSON error while the worker keeps serving, load report and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from worker_profile import write_worker_profile

from workers.deployment import WorkerSettings, resolve
from workers.service import ENGINE, create_app

MODEL = "tiny-yolov2"
FRAMES = f"/v2/models/{MODEL}/frames"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    return write_worker_profile(tmp_path / "profile.yaml", MODEL, {1: 40.0, 4: 100.0})


def run_with_worker(settings: WorkerSettings, scenario: Callable[[TestClient], Awaitable[None]]) -> None:
    """Starts the worker app on a loopback port, waits until ready, runs the scenario, cleans up."""
    async def main() -> None:
        app = create_app(resolve(settings))
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(app[ENGINE].ready.wait(), 60)
            await scenario(client)
    asyncio.run(main())


async def post_frame(client: TestClient, body: bytes, stream: str = "s1", query: str = "1",
                     content_type: str = "image/jpeg", path: str = FRAMES) -> tuple[int, dict]:
    resp = await client.post(path, data=body, params={"stream": stream, "query": query},
                             headers={"Content-Type": content_type})
    return resp.status, await resp.json()


def binary_infer_body(images: np.ndarray, datatype: str = "FP32", name: str = "images",
                      size: int | None = None, **request) -> tuple[bytes, dict]:
    raw = images.astype(np.uint8 if datatype == "UINT8" else np.float32).tobytes()
    header = json.dumps({"id": "r1", "inputs": [{"name": name, "datatype": datatype, "shape": list(images.shape),
                                                "parameters": {"binary_data_size": size or len(raw)}}],
                         **request}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def split_binary_answer(body: bytes, header_len: str) -> tuple[dict, bytes]:
    """Returns a binary-data v2 answer's JSON header and the bytes after it."""
    return json.loads(body[: int(header_len)]), body[int(header_len):]


def test_jpeg_route_answers_detections_and_timestamps(astronaut_jpeg: bytes) -> None:
    async def scenario(client: TestClient) -> None:
        assert (await client.get("/v2/health/live")).status == 200
        assert (await (await client.get("/v2/health/ready")).json()) == {"ready": True}
        assert (await (await client.get(f"/v2/models/{MODEL}/ready")).json())["ready"] is True
        assert "binary_tensor_data" in (await (await client.get("/v2")).json())["extensions"]
        meta = await (await client.get(f"/v2/models/{MODEL}")).json()
        assert meta["inputs"][0]["shape"] == [-1, 3, 416, 416]
        assert meta["deployment"]["variant"] == f"{MODEL}-cpu-b2" and meta["card"]["weights"] == "trained"
        status, body = await post_frame(client, astronaut_jpeg, stream="cam-7", query="42")
        assert status == 200, body
        assert (body["stream"], body["query"], body["batch_size"], body["queue_len_at_arrival"]) == ("cam-7", "42", 1, 0)
        assert body["t_arrival_ms"] <= body["t_infer_start_ms"] <= body["t_infer_end_ms"]
        # decoding and the network's run are parts of the batch's time
        assert body["input_ms"] > 0 and body["compute_ms"] > 0
        assert body["input_ms"] + body["compute_ms"] <= body["t_infer_end_ms"] - body["t_infer_start_ms"] + 1e-6
        (face,) = body["detections"]
        assert face["label"] == "face" and face["score"] > 0.9
        x1, y1, x2, y2 = face["box"]
        assert 150 < (x1 + x2) / 2 < 260 and 80 < (y1 + y2) / 2 < 180

    run_with_worker(WorkerSettings(MODEL, max_batch_size=2, max_batch_delay_ms=1), scenario)


def test_v2_binary_infer_matches_the_network(astronaut_jpeg: bytes) -> None:
    from workers.modelconfig import load_model
    from workers.prepost import prepare_jpeg
    prepared = prepare_jpeg(astronaut_jpeg, load_model(MODEL)).tensor

    async def scenario(client: TestClient) -> None:
        body, headers = binary_infer_body(np.stack([prepared, np.zeros_like(prepared)]))
        resp = await client.post(INFER, data=body, headers=headers)
        answer = await resp.json()
        assert resp.status == 200, answer
        assert answer["model_name"] == MODEL and answer["id"] == "r1"
        (out,) = answer["outputs"]
        assert out["name"] == "detections" and out["shape"] == [1, 7]  # one face, in image 0 only
        image, x1, y1, x2, y2, score, label = out["data"]
        assert (image, label) == (0, 0) and score > 0.9
        assert 150 < (x1 + x2) / 2 < 260  # network-input pixels: the astronaut is 512 -> 416
        assert answer["batch_sizes"] == [2, 2]
        assert 0 < answer["compute_ms"] <= answer["t_infer_end_ms"] - answer["t_infer_start_ms"] + 1e-6
        assert answer["detections"][0]["image"] == 0
        # The same pixels as UINT8 (4x smaller on the wire) give the same answer.
        body8, headers8 = binary_infer_body(np.round(prepared)[None].astype(np.uint8), datatype="UINT8")
        answer8 = await (await client.post(INFER, data=body8, headers=headers8)).json()
        assert answer8["outputs"][0]["shape"] == [1, 7]
        np.testing.assert_allclose(answer8["outputs"][0]["data"], out["data"], atol=2.0)

    run_with_worker(WorkerSettings(MODEL, max_batch_size=4, max_batch_delay_ms=1), scenario)


def test_v2_binary_output_when_asked_and_json_data_otherwise(astronaut_jpeg: bytes) -> None:
    from workers.modelconfig import load_model
    from workers.prepost import prepare_jpeg
    prepared = prepare_jpeg(astronaut_jpeg, load_model(MODEL)).tensor
    images = np.stack([np.zeros_like(prepared), prepared])

    async def scenario(client: TestClient) -> None:
        body, headers = binary_infer_body(images)
        as_json = await (await client.post(INFER, data=body, headers=headers)).json()
        (out_json,) = as_json["outputs"]
        assert out_json["shape"] == [1, 7] and as_json["detections"][0]["image"] == 1
        # Asked for with the request parameter, or with the output's own binary_data parameter.
        for request in ({"parameters": {"binary_data_output": True}},
                        {"outputs": [{"name": "detections", "parameters": {"binary_data": True}}]}):
            body, headers = binary_infer_body(images, **request)
            resp = await client.post(INFER, data=body, headers=headers)
            assert resp.status == 200 and resp.content_type == "application/octet-stream"
            header, data = split_binary_answer(await resp.read(), resp.headers["Inference-Header-Content-Length"])
            (out,) = header["outputs"]
            assert out["name"] == "detections" and out["datatype"] == "FP32" and out["shape"] == [1, 7]
            assert "data" not in out and out["parameters"] == {"binary_data_size": len(data)} and len(data) == 28
            assert header["id"] == "r1" and header["batch_sizes"] == [2, 2]
            np.testing.assert_allclose(np.frombuffer(data, "<f4"), out_json["data"], rtol=1e-6)
        # A JSON request may ask for binary output too; binary_data false keeps JSON data.
        json_request = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 3, 416, 416],
                                    "data": np.zeros(3 * 416 * 416, np.uint8).tolist()}],
                        "outputs": [{"name": "detections", "parameters": {"binary_data": False}}]}
        resp = await client.post(INFER, json=json_request)
        assert resp.content_type == "application/json"
        assert (await resp.json())["outputs"][0] == {"name": "detections", "datatype": "FP32", "shape": [0, 7],
                                                     "data": []}
        json_request["parameters"] = {"binary_data_output": True}
        del json_request["outputs"]
        resp = await client.post(INFER, json=json_request)
        header, data = split_binary_answer(await resp.read(), resp.headers["Inference-Header-Content-Length"])
        assert header["outputs"][0]["parameters"] == {"binary_data_size": 0} and data == b""

    run_with_worker(WorkerSettings(MODEL, max_batch_size=2, max_batch_delay_ms=1), scenario)


def test_bad_binary_tensor_requests_name_the_problem() -> None:
    zeros = np.zeros((1, 3, 416, 416), np.uint8)

    async def scenario(client: TestClient) -> None:
        async def detail(body: bytes, headers: dict) -> str:
            resp = await client.post(INFER, data=body, headers=headers)
            answer = await resp.json()
            assert (resp.status, answer["error"]) == (400, "bad_tensor"), answer
            return answer["detail"]

        body, headers = binary_infer_body(zeros, datatype="UINT8")
        header_len = int(headers["Inference-Header-Content-Length"])
        for bad in ("abc", "-5", "0", str(len(body) + 1), "1.5"):
            text = await detail(body, {**headers, "Inference-Header-Content-Length": bad})
            assert "Inference-Header-Content-Length" in text and repr(bad) in text
        # Too few or too many bytes after the header, and a binary_data_size that disagrees with the shape.
        text = await detail(body[:-10], headers)
        assert f"{zeros.size - 10} bytes after the JSON header" in text and f"needs {zeros.size}" in text
        text = await detail(body + b"xx", headers)
        assert f"{zeros.size + 2} bytes after the JSON header" in text
        wrong_size, h = binary_infer_body(zeros, datatype="UINT8", size=zeros.size * 4)
        text = await detail(wrong_size[: header_len + 3] + bytes(zeros.size * 4 - 3), h)
        assert f"binary_data_size {zeros.size * 4}" in text and f"needs {zeros.size}" in text
        fp32_as_u8, h = binary_infer_body(zeros.astype(np.float32), datatype="FP32", size=zeros.size)
        assert "needs" in await detail(fp32_as_u8, h)
        not_int, h = binary_infer_body(zeros, datatype="UINT8", size="519168")
        assert "binary_data_size '519168'" in await detail(not_int, h)
        # Bytes after a header whose input carries its data as JSON; an unknown output.
        json_header = json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 3, 416, 416],
                                              "data": [0] * zeros.size}]}).encode()
        text = await detail(json_header + b"\0" * 8, {"Inference-Header-Content-Length": str(len(json_header))})
        assert "8 bytes after the JSON header" in text and "binary_data_size" in text
        unknown, h = binary_infer_body(zeros, datatype="UINT8", outputs=[{"name": "boxes"}])
        assert "unknown output 'boxes'" in await detail(unknown, h)
        # The worker keeps serving binary requests.
        resp = await client.post(INFER, data=body, headers=headers)
        assert resp.status == 200 and (await resp.json())["outputs"][0]["shape"] == [0, 7]

    run_with_worker(WorkerSettings(MODEL, max_batch_size=1, max_batch_delay_ms=0), scenario)


def test_batches_form_under_load(astronaut_jpeg: bytes) -> None:
    async def scenario(client: TestClient) -> None:
        answers = await asyncio.gather(*(post_frame(client, astronaut_jpeg, stream=f"s{i % 3}", query=str(i))
                                         for i in range(8)))
        assert all(status == 200 for status, _ in answers)
        # A long W with 8 queries arriving together: two full batches of 4, none smaller.
        assert sorted(body["batch_size"] for _, body in answers) == [4] * 8
        assert all(len(body["detections"]) == 1 for _, body in answers)
        load = await (await client.get("/v2/load", params={"window_s": "10"})).json()
        assert load["totals"] == {"arrivals": 8, "bytes_in": 8 * len(astronaut_jpeg), "served": 8, "served_real": 8,
                                  "bad_input": 0, "overloads": 0, "batches": 2, "batches_real": 2}
        assert load["streams_bound"] == 3 and load["mean_batch_size_10s"] == 4.0
        assert load["queries_in_per_s"] == pytest.approx(0.8) and load["queries_served_per_s"] == pytest.approx(0.8)
        metrics = await (await client.get("/metrics")).text()
        labels = f'model="{MODEL}",variant="{MODEL}-cpu-b4"'
        # two batches of 4: none at or under 3, both at or under 4 (tests/test_workers_metrics.py: the format)
        assert f'worker_batch_size_bucket{{{labels},le="3.0"}} 0' in metrics
        assert f'worker_batch_size_bucket{{{labels},le="4.0"}} 2' in metrics
        assert f"worker_queue_duration_seconds_count{{{labels}}} 8" in metrics
        assert f"worker_compute_duration_seconds_total{{{labels}}} " in metrics

    run_with_worker(WorkerSettings(MODEL, max_batch_size=4, max_batch_delay_ms=2000, queue_limit=16), scenario)


def test_overload_is_explicit_and_the_queue_stays_bounded(profile_file: Path, astronaut_jpeg: bytes) -> None:
    async def scenario(client: TestClient) -> None:
        answers = await asyncio.gather(*(post_frame(client, astronaut_jpeg, query=str(i)) for i in range(8)))
        refused = [body for status, body in answers if status == 503]
        served = [body for status, body in answers if status == 200]
        assert len(refused) + len(served) == 8
        assert len(refused) >= 8 - 1 - 2  # one in the replica, at most two queued
        assert all(b["error"] == "overload" and b["queue_limit"] == 2 and b["queue_len"] <= 2 for b in refused)
        assert all(b["queue_len_at_arrival"] <= 2 and b["batch_size"] == 1 for b in served)
        load = await (await client.get("/v2/load")).json()
        assert load["totals"]["overloads"] == len(refused) and load["queue_len"] == 0
        # The worker recovers: the next query is served.
        status, _ = await post_frame(client, astronaut_jpeg)
        assert status == 200

    run_with_worker(WorkerSettings(MODEL, max_batch_size=1, max_batch_delay_ms=0, queue_limit=2,
                                   profile_driven=profile_file), scenario)


def test_profile_driven_worker_sleeps_the_profiled_batch_latency(profile_file: Path, astronaut_jpeg: bytes) -> None:
    async def scenario(client: TestClient) -> None:
        answers = await asyncio.gather(*(post_frame(client, astronaut_jpeg, query=str(i)) for i in range(4)))
        assert all(status == 200 for status, _ in answers)
        assert sorted(b["batch_size"] for _, b in answers) == [4, 4, 4, 4]
        for _, b in answers:
            assert b["detections"] == []
            assert b["t_infer_end_ms"] - b["t_infer_start_ms"] >= 100.0 - 1.0  # batch_latency_ms[4]
        meta = await (await client.get(f"/v2/models/{MODEL}")).json()
        assert meta["deployment"]["mode"] == "profile-driven"
        status, body = await post_frame(client, astronaut_jpeg[:5000])
        assert status == 400 and "truncated" in body["detail"]

    run_with_worker(WorkerSettings(MODEL, max_batch_size=4, max_batch_delay_ms=2000, profile_driven=profile_file),
                    scenario)


def test_bad_inputs_get_4xx_json_errors_and_the_worker_keeps_serving(astronaut_jpeg: bytes) -> None:
    zeros = np.zeros((1, 3, 416, 416), np.float32)

    async def scenario(client: TestClient) -> None:
        cases: list[tuple[int, str, dict]] = []

        async def expect(status: int, code: str, resp_coro) -> None:
            resp = await resp_coro
            body = await resp.json()
            cases.append((resp.status, body.get("error"), body))
            assert (resp.status, body.get("error")) == (status, code), body

        await expect(400, "bad_frame", client.post(FRAMES, data=b"\xff\xd8\xff\xe0corrupt" * 10,
                                                   headers={"Content-Type": "image/jpeg"}))
        await expect(400, "bad_frame", client.post(FRAMES, data=astronaut_jpeg[: len(astronaut_jpeg) // 2],
                                                   headers={"Content-Type": "image/jpeg"}))
        await expect(400, "bad_frame", client.post(FRAMES, data=b"", headers={"Content-Type": "image/jpeg"}))
        await expect(415, "unsupported_media_type", client.post(FRAMES, data=astronaut_jpeg,
                                                                headers={"Content-Type": "text/plain"}))
        await expect(413, "body_too_large", client.post(FRAMES, data=b"\xff\xd8" + bytes(5_000_000),
                                                        headers={"Content-Type": "image/jpeg"}))
        await expect(404, "unknown_model", client.post("/v2/models/resnet/frames", data=astronaut_jpeg,
                                                       headers={"Content-Type": "image/jpeg"}))
        await expect(404, "unknown_model", client.get("/v2/models/resnet"))
        await expect(404, "not_found", client.get("/v2/nothing-here"))
        await expect(405, "method_not_allowed", client.get(FRAMES))
        bad_shape, h1 = binary_infer_body(np.zeros((1, 3, 32, 32), np.float32))
        await expect(400, "bad_tensor", client.post(INFER, data=bad_shape, headers=h1))
        bad_type, h2 = binary_infer_body(zeros, datatype="INT64")
        await expect(400, "bad_tensor", client.post(INFER, data=bad_type, headers=h2))
        bad_name, h3 = binary_infer_body(zeros, name="input_1")
        await expect(400, "bad_tensor", client.post(INFER, data=bad_name, headers=h3))
        short, h4 = binary_infer_body(zeros, size=100)
        await expect(400, "bad_tensor", client.post(INFER, data=short, headers=h4))
        await expect(400, "bad_tensor", client.post(INFER, data=b"{not json", headers={"Content-Type": "application/json"}))
        few = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 416, 416], "data": [1.0, 2.0]}]}
        await expect(400, "bad_tensor", client.post(INFER, json=few))
        await expect(415, "unsupported_media_type", client.post(INFER, data=b"x", headers={"Content-Type": "text/csv"}))
        await expect(400, "bad_request", client.get("/v2/load", params={"window_s": "-1"}))
        for status, _, body in cases:
            assert 400 <= status < 500 and body["detail"], body
        # Every error named its problem, and the worker still serves good queries.
        assert "INT64" in cases[10][2]["detail"] and "input_1" in cases[11][2]["detail"]
        assert "[n, 3, 416, 416]" in cases[9][2]["detail"]
        status, body = await post_frame(client, astronaut_jpeg)
        assert status == 200 and len(body["detections"]) == 1
        load = await (await client.get("/v2/load")).json()
        assert load["totals"]["bad_input"] == 2  # the two frames that reached a replica and failed to decode

    run_with_worker(WorkerSettings(MODEL, max_batch_size=2, max_batch_delay_ms=1, max_body_bytes=4_000_000), scenario)


def test_a_failing_batch_answers_500_json_and_the_worker_carries_on(monkeypatch, profile_file: Path,
                                                                     astronaut_jpeg: bytes) -> None:
    import workers.service as service
    from workers.engine import ProfileProcessor

    class FailsOnce(ProfileProcessor):
        failed = False

        async def run(self, batch):
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("simulated ONNX Runtime failure")
            return await super().run(batch)

    monkeypatch.setattr(service, "_make_processors", lambda dep: [FailsOnce(dep.profile)])

    async def scenario(client: TestClient) -> None:
        status, body = await post_frame(client, astronaut_jpeg)
        assert (status, body["error"]) == (500, "internal") and "simulated" in body["detail"]
        status, body = await post_frame(client, astronaut_jpeg)
        assert status == 200 and body["batch_size"] == 1

    run_with_worker(WorkerSettings(MODEL, max_batch_size=1, max_batch_delay_ms=0, profile_driven=profile_file),
                    scenario)


def test_ready_only_after_warm_up(monkeypatch, profile_file: Path, astronaut_jpeg: bytes) -> None:
    import threading

    import workers.service as service
    from workers.engine import ProfileProcessor

    release = threading.Event()

    class SlowWarmUp(ProfileProcessor):
        def warm_up(self, max_batch: int) -> None:
            release.wait(30)

    monkeypatch.setattr(service, "_make_processors", lambda dep: [SlowWarmUp(dep.profile)])

    async def main() -> None:
        app = create_app(resolve(WorkerSettings(MODEL, profile_driven=profile_file)))
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/v2/health/live")).status == 200
            resp = await client.get("/v2/health/ready")
            assert resp.status == 503 and (await resp.json())["ready"] is False
            status, body = await post_frame(client, astronaut_jpeg)
            assert (status, body["error"]) == (503, "not_ready")
            release.set()
            await asyncio.wait_for(app[ENGINE].ready.wait(), 30)
            assert (await client.get("/v2/health/ready")).status == 200
            status, _ = await post_frame(client, astronaut_jpeg)
            assert status == 200

    asyncio.run(main())
