"""Unit tests of the workers' pure parts: TF.js weight decoding, NMS and post-processing, JPEG
letterboxing, the profile file, and the dynamic batcher's batch formation and queue bound."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scheduler.profiles import ModelProfile, ProfileFile, RuntimeProfile, read_profile, write_profile
from workers.batching import DynamicBatcher
from workers.engine import Outcome, Query, ReplicaThread
from workers.modelconfig import ModelCard, ModelConfig
from workers.prepost import FrameError, nms, postprocess, prepare_jpeg
from workers.tfjs import read_weights

CARD = ModelCard("test", "random", "test", "n/a", 0.5, "test")


def config(**kw) -> ModelConfig:
    base = dict(name="t", task="object-detection", onnx="m.onnx", input_name="images", input_height=100,
                input_width=100, pre="rgb255", post="boxes-scores", labels=("face",), score_threshold=0.5,
                iou_threshold=0.5, card=CARD)
    return ModelConfig(**{**base, **kw})


def jpeg(width: int, height: int, color=(200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG", quality=95)
    return buf.getvalue()


# --- TF.js weights ---------------------------------------------------------------------------------

def test_tfjs_dequantizes_uint8_and_reads_float32(tmp_path: Path) -> None:
    q = np.array([0, 1, 255, 10], np.uint8)
    f = np.array([1.5, -2.25], "<f4")
    (tmp_path / "w.bin").write_bytes(q.tobytes() + f.tobytes())
    (tmp_path / "m.json").write_text(json.dumps([{"paths": ["w.bin"], "weights": [
        {"name": "a", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1}},
        {"name": "b", "shape": [2], "dtype": "float32"}]}]))
    w = read_weights(tmp_path / "m.json")
    np.testing.assert_allclose(w["a"], [[-1.0, -0.5], [126.5, 4.0]])
    np.testing.assert_array_equal(w["b"], [1.5, -2.25])


def test_tfjs_rejects_shards_of_the_wrong_length(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\x00" * 9)
    (tmp_path / "m.json").write_text(json.dumps([{"paths": ["w.bin"], "weights": [
        {"name": "a", "shape": [2], "dtype": "float32"}]}]))
    with pytest.raises(ValueError, match="left over"):
        read_weights(tmp_path / "m.json")
    (tmp_path / "w.bin").write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError, match="runs past"):
        read_weights(tmp_path / "m.json")


# --- post-processing -------------------------------------------------------------------------------

def test_nms_keeps_best_of_overlapping_boxes_and_separate_ones() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, 0.5, 100).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99, 100).tolist() == [1, 0, 2, 3]
    assert nms(boxes, scores, 0.5, 1).tolist() == [1]


def test_postprocess_thresholds_scales_to_frame_pixels_and_clips() -> None:
    raw = np.array([[0.1, 0.2, 0.3, 0.4, 0.9],     # kept: relative to the 100x100 input
                    [0.5, 0.5, 1.5, 0.9, 0.8],     # kept, clipped at the frame's right edge
                    [0.1, 0.2, 0.3, 0.4, 0.3]], np.float32)  # below the threshold
    dets = postprocess(raw, config(), frame_per_input_px=2.0, frame_hw=(150, 200))
    assert [d.score for d in dets] == pytest.approx([0.9, 0.8])
    assert dets[0].box == pytest.approx((20, 40, 60, 80))
    assert dets[1].box == pytest.approx((100, 100, 200, 150))
    assert {d.label for d in dets} == {"face"}


def test_postprocess_multiplies_objectness_by_best_class() -> None:
    raw = np.array([[0, 0, 0.1, 0.1, 0.9, 0.1, 0.8], [0.5, 0.5, 0.6, 0.6, 0.9, 0.5, 0.1]], np.float32)
    dets = postprocess(raw, config(labels=("cat", "dog"), score_threshold=0.6), 1.0, (100, 100))
    assert len(dets) == 1 and dets[0].label == "dog" and dets[0].score == pytest.approx(0.72)


# --- pre-processing --------------------------------------------------------------------------------

def test_prepare_jpeg_letterboxes_top_left_and_reports_scale() -> None:
    p = prepare_jpeg(jpeg(200, 100), config())
    assert p.tensor.shape == (3, 100, 100) and p.tensor.dtype == np.float32
    assert (p.frame_width, p.frame_height, p.frame_per_input_px) == (200, 100, 2.0)
    assert p.tensor[0, :50].mean() == pytest.approx(200, abs=3)  # the frame, scaled to 100x50
    assert p.tensor[1, :50].mean() == pytest.approx(30, abs=3)
    assert np.all(p.tensor[:, 51:] == 0)  # padding below it


def test_prepare_jpeg_rgb01_scales_to_unit_range() -> None:
    p = prepare_jpeg(jpeg(100, 100), config(pre="rgb01"))
    assert p.tensor[0].mean() == pytest.approx(200 / 255, abs=0.02)


@pytest.mark.parametrize("data, message", [
    (b"not a jpeg at all", "no SOI"),
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt or truncated"),
    (jpeg(64, 64)[:300], "corrupt or truncated"),
])
def test_prepare_jpeg_names_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        prepare_jpeg(data, config())


def test_prepare_jpeg_rejects_png() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    with pytest.raises(FrameError, match="not a JPEG"):
        prepare_jpeg(buf.getvalue(), config())


# --- profile file ----------------------------------------------------------------------------------

def test_profile_round_trip_and_interpolation(tmp_path: Path) -> None:
    rt = RuntimeProfile("m", "cpu", 1, 1.0, 0, 10.0, {1: 10.0, 4: 25.0}, {1: 12.0, 4: 30.0}, {1: 0.1, 4: 0.2},
                        5.0, "test")
    write_profile(ProfileFile(1, "test", {"m": ModelProfile("object-detection", None, 0.5, "test")}, (rt,)),
                  tmp_path / "p.yaml")
    back = read_profile(tmp_path / "p.yaml").runtime("m", "cpu")
    assert back == rt
    assert back.latency_ms(2) == pytest.approx(15.0)  # linear between 1 and 4
    assert back.latency_ms(8) == pytest.approx(50.0)  # beyond: per frame of the largest
    assert back.variant(4) == "m-cpu-b4"
    with pytest.raises(KeyError, match="no runtime profile"):
        read_profile(tmp_path / "p.yaml").runtime("m", "gpu")


def test_profile_reader_rejects_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("version: 1\norigin: x\nmodels: {}\nruntimes: []\nextra: 1\n")
    with pytest.raises(ValueError, match="extra"):
        read_profile(tmp_path / "p.yaml")


# --- dynamic batcher -------------------------------------------------------------------------------

class GatedProcessor:
    """Records batch sizes; each run waits until the test opens the gate."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, batch: list[Query]) -> list[Outcome]:
        self.sizes.append(len(batch))
        self.started.set()
        await self.gate.wait()
        return [Outcome((), None, 0.0, 0.0, len(batch), 0.0, 0.0) for _ in batch]

    def warm_up(self, max_batch: int) -> None: ...
    def close(self) -> None: ...


def _query(loop: asyncio.AbstractEventLoop, i: int) -> Query:
    return Query("s", str(i), b"", None, 0.0, 0, loop.create_future())


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_batches_fill_to_b_then_take_the_rest_after_w() -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        proc = GatedProcessor()
        batcher = DynamicBatcher([proc], max_batch_size=4, max_batch_delay_ms=50, queue_limit=100)
        batcher.start()
        queries = [_query(loop, i) for i in range(10)]
        assert batcher.submit(queries[:5])  # 4 form a full batch at once; 1 stays queued
        await proc.started.wait()
        assert batcher.queue_len == 1
        assert batcher.submit(queries[5:])
        proc.gate.set()
        await asyncio.gather(*(q.future for q in queries))
        await batcher.stop()
        return proc.sizes, [q.future.result().batch_size for q in queries]

    sizes, reported = asyncio.run(scenario())
    assert sizes == [4, 4, 2]
    assert reported == [4] * 8 + [2] * 2


def test_zero_delay_takes_only_what_is_queued() -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        proc = GatedProcessor()
        proc.gate.set()
        batcher = DynamicBatcher([proc], max_batch_size=8, max_batch_delay_ms=0, queue_limit=100)
        batcher.start()
        first = [_query(loop, i) for i in range(3)]
        batcher.submit(first)
        await asyncio.gather(*(q.future for q in first))
        second = [_query(loop, 9)]
        batcher.submit(second)
        await second[0].future
        await batcher.stop()
        return proc.sizes

    assert asyncio.run(scenario()) == [3, 1]


def test_a_lone_query_runs_alone_after_the_delay() -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        proc = GatedProcessor()
        proc.gate.set()
        batcher = DynamicBatcher([proc], max_batch_size=4, max_batch_delay_ms=5, queue_limit=10)
        batcher.start()
        q = _query(loop, 0)
        batcher.submit([q])
        await q.future
        await batcher.stop()
        return proc.sizes

    assert asyncio.run(scenario()) == [1]


def test_queue_is_bounded_and_refuses_whole_requests() -> None:
    async def scenario() -> tuple[list[bool], int, list[int]]:
        loop = asyncio.get_running_loop()
        proc = GatedProcessor()
        batcher = DynamicBatcher([proc], max_batch_size=1, max_batch_delay_ms=0, queue_limit=3)
        batcher.start()
        first = _query(loop, 0)
        batcher.submit([first])
        await proc.started.wait()  # the replica holds query 0; the queue is empty again
        accepted = [batcher.submit([_query(loop, i)]) for i in range(1, 6)]
        too_many = batcher.submit([_query(loop, 10), _query(loop, 11)])
        queue_len = batcher.queue_len
        proc.gate.set()
        await _settle()
        await batcher.stop()
        return accepted + [too_many], queue_len, proc.sizes

    accepted, queue_len, sizes = asyncio.run(scenario())
    assert accepted == [True, True, True, False, False, False]
    assert queue_len == 3
    assert all(s == 1 for s in sizes)


def test_two_replicas_run_batches_concurrently() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        loop = asyncio.get_running_loop()
        a, b = GatedProcessor(), GatedProcessor()
        batcher = DynamicBatcher([a, b], max_batch_size=2, max_batch_delay_ms=0, queue_limit=10)
        batcher.start()
        queries = [_query(loop, i) for i in range(4)]
        batcher.submit(queries)
        await asyncio.wait_for(asyncio.gather(a.started.wait(), b.started.wait()), 5)
        a.gate.set()
        b.gate.set()
        await asyncio.gather(*(q.future for q in queries))
        await batcher.stop()
        return a.sizes, b.sizes

    a_sizes, b_sizes = asyncio.run(scenario())
    assert a_sizes == [2] and b_sizes == [2]


def test_one_batch_forms_at_a_time_so_idle_replicas_do_not_split_a_burst() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        loop = asyncio.get_running_loop()
        a, b = GatedProcessor(), GatedProcessor()
        batcher = DynamicBatcher([a, b], max_batch_size=3, max_batch_delay_ms=10_000, queue_limit=10)
        batcher.start()
        queries = [_query(loop, i) for i in range(4)]
        for q in queries[:3]:  # one at a time: the forming batch, not the idle replica, takes each
            batcher.submit([q])
            await _settle()
        await a.started.wait()
        batcher.submit([queries[3]])  # the other replica takes the turn and forms the next batch
        b.gate.set()
        a.gate.set()
        await asyncio.wait_for(queries[0].future, 5)
        await batcher.stop()
        assert queries[3].future.cancelled()  # stopped while its batch was forming: answered, not lost
        return a.sizes, b.sizes

    a_sizes, b_sizes = asyncio.run(scenario())
    assert a_sizes == [3] and b_sizes == []  # query 3's batch was still forming (W is long)


def test_keep_freed_memory_applies_on_glibc() -> None:
    import platform

    from workers.runtime import keep_freed_memory
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc is not glibc's")
    assert keep_freed_memory() is True


def test_replica_thread_runs_off_the_loop_returns_results_and_raises_the_callers_exceptions() -> None:
    replica = ReplicaThread("ort-test")

    def where(x: int) -> tuple[int, str]:
        return x * 2, threading.current_thread().name

    def boom(_: int) -> None:
        raise ValueError("bad batch")

    async def scenario() -> None:
        assert await replica.submit(where, 21) == (42, "ort-test")
        with pytest.raises(ValueError, match="bad batch"):
            await replica.submit(boom, 0)
        assert await replica.submit(where, 1) == (2, "ort-test")  # the thread survives a failed batch

    try:
        asyncio.run(scenario())
    finally:
        replica.close()
    assert not replica._thread.is_alive()


def test_replica_thread_close_cancels_batches_not_started() -> None:
    replica = ReplicaThread("ort-test")
    gate = threading.Event()
    ran: list[int] = []

    def slow(x: int) -> int:
        gate.wait(5)
        ran.append(x)
        return x

    async def scenario() -> None:
        first, second = replica.submit(slow, 1), replica.submit(slow, 2)
        await asyncio.sleep(0.05)  # the first is running, the second waits in the queue
        closer = asyncio.get_running_loop().run_in_executor(None, replica.close)
        await asyncio.sleep(0.05)
        gate.set()
        await closer
        assert await first == 1
        await asyncio.sleep(0)
        assert second.cancelled()

    asyncio.run(scenario())
    assert ran == [1]


# --- the load report ------------------------------------------------------------------------------

def _outcome(start_ms: float, end_ms: float, n: int) -> list[Outcome]:
    return [Outcome((), None, start_ms, end_ms, n, 0.0, end_ms - start_ms) for _ in range(n)]


def test_load_report_gives_the_byte_rate_and_the_busy_time_of_its_span() -> None:
    """On a manual clock: the byte rate of the arrivals in the span; busy time = the part of each batch (it ran
    up to when it was counted) inside the span, summed over replicas; the total keeps all of it."""
    from workers.stats import WorkerStats

    now = [100.0]
    stats = WorkerStats("m", "m-cpu-b2", clock=lambda: now[0])
    q = Query("s", "0", b"", None, 0.0, 0)
    for t, nbytes in ((100.1, 40_000), (100.3, 60_000), (101.0, 20_000)):
        now[0] = t
        stats.on_arrival("s", 1, nbytes)
    for counted_s, ms in ((100.3, 200.0), (100.5, 30.0), (101.0, 400.0), (101.1, 50.0)):  # two replicas
        now[0] = counted_s
        stats.on_batch([q, q], _outcome(0.0, ms, 2))
    now[0] = 101.2
    r = stats.load_report(queue_len=0, queue_limit=32, window_s=1.0)  # the span [100.2, 101.2]
    assert r["queries_in_per_s"] == pytest.approx(2.0) and r["bytes_in_per_s"] == pytest.approx(80_000)
    assert r["busy_ms_per_s"] == pytest.approx(100 + 30 + 400 + 50)  # the first batch ran [100.1, 100.3]
    assert r["bytes_in_per_s_10s"] == pytest.approx(12_000) and r["busy_ms_per_s_10s"] == pytest.approx(68)
    assert stats.totals.busy_ms == pytest.approx(680)


def test_the_profile_driven_workers_busy_time_follows_its_profile(tmp_path: Path) -> None:
    """A profile-driven replica sleeps its profile: a full batch of two 50 kB frames is 16 ms of compute and
    2 x 5 ms of input. Its busy time over the profile's nominal query time (input-time accounting, 50 kB) is the
    load those queries declare: 2 nominal queries."""
    from scheduler.profiles import load_profiles
    from workers.engine import ProfileProcessor
    from workers.stats import WorkerStats

    rt = RuntimeProfile("m", "cpu", 1, 1.0, 0, 10.0, {1: 10.0, 2: 16.0}, {}, {}, 100.0, "test")
    pf = ProfileFile(1, "test", {"m": ModelProfile("object-detection", None, 0.5, "test")}, (rt,),
                     capacity_frame_kb=50.0, load_accounting="input-time")
    write_profile(pf, tmp_path / "p.yaml")
    variant = load_profiles(tmp_path / "p.yaml").variant("m-cpu-b2")
    frame = b"\xff\xd8" + bytes(50_000 - 4) + b"\xff\xd9"
    batch = [Query("s", str(i), frame, None, 0.0, 0) for i in range(2)]
    outcomes = asyncio.run(ProfileProcessor(rt).run(batch))
    stats = WorkerStats("m", "m-cpu-b2")
    stats.on_batch(batch, outcomes)
    busy = stats.totals.busy_ms
    assert 26.0 <= busy < 26.0 + 10.0  # a sleep wakes late, never early
    assert variant.nominal_query_ms == pytest.approx(13.0) and 2 * variant.eta(50_000) == pytest.approx(26.0 / 13.0)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("pre: rgb255", "pre: bgr"), "pre: 'bgr' is not one of rgb255, rgb01"),
    (lambda t: t + "speed: 3\n", "speed: unknown key"),
    (lambda t: t + "folder: /elsewhere\n", "folder: unknown key"),
    (lambda t: t.replace("  licence: MIT\n", ""), "card: missing required key 'licence'"),
    (lambda t: t.replace("input_height: 416", "input_height: '416'"), "input_height: '416' is not a whole number"),
    (lambda t: t.replace("accuracy: 0.3", "accuracy: 1.5"), "card.accuracy: 1.5 must be between 0 and 1"),
    (lambda t: t.replace("labels:\n- face", "labels: [face"), "line "),
])
def test_a_model_config_is_read_strictly_with_one_line_naming_file_and_key(tmp_path: Path, edit, message) -> None:
    from workers.modelconfig import read_config, write_config

    card = ModelCard("test net", "random", "none", "MIT", 0.3, "test")
    config = ModelConfig("m", "object-detection", "model.onnx", "images", 416, 416, "rgb255", "boxes-scores",
                         ("face",), 0.5, 0.4, card, folder=tmp_path)
    path = write_config(config)
    assert read_config(tmp_path) == config and read_config(tmp_path).labels == ("face",)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ValueError) as refused:
        read_config(tmp_path)
    text = str(refused.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
