"""The worker's /metrics page in Prometheus' conventions, read with prometheus_client's own parser:
counters end in `_total`, durations are in seconds, and request latency, queue wait, batch run time and
batch size are histograms whose counts match what the worker did."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from worker_profile import write_worker_profile

from workers import zoo
from workers.deployment import WorkerSettings, resolve
from workers.metrics import Histogram, batch_size_buckets
from workers.service import ENGINE, create_app

MODEL = "tiny-yolov2"


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    zoo.build(names=[MODEL], log=lambda _: None)
    return write_worker_profile(tmp_path / "profile.yaml", MODEL, {1: 30.0, 4: 120.0})


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def scrape(profile_file: Path) -> tuple[str, str]:
    """Runs 8 frames through a profile-driven worker (B 4, a long W: two batches of 4); returns the
    /metrics content type and text."""
    async def main() -> tuple[str, str]:
        app = create_app(resolve(WorkerSettings(MODEL, max_batch_size=4, max_batch_delay_ms=2000,
                                                queue_limit=16, profile_driven=profile_file)))
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(app[ENGINE].ready.wait(), 30)
            frame = jpeg()
            answers = await asyncio.gather(*(client.post(f"/v2/models/{MODEL}/frames", data=frame,
                                                         params={"stream": "s", "query": str(i)},
                                                         headers={"Content-Type": "image/jpeg"}) for i in range(8)))
            assert [a.status for a in answers] == [200] * 8
            resp = await client.get("/metrics")
            return resp.headers["Content-Type"], await resp.text()
    return asyncio.run(main())


def test_metrics_parse_with_prometheus_client_and_follow_its_conventions(profile_file: Path) -> None:
    content_type, text = scrape(profile_file)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    for name, kind in declared.items():
        assert kind != "counter" or name.endswith("_total"), f"counter {name} does not end in _total"
        assert not re.search(r"_(us|ms|microseconds|milliseconds)(_|$)", name), f"{name}: not a base unit"
        if "duration" in name:
            assert name.endswith(("_seconds", "_seconds_total")), f"{name}: a duration not in seconds"
    for name in ("worker_request_duration_seconds", "worker_queue_duration_seconds",
                 "worker_batch_duration_seconds", "worker_batch_size"):
        assert families[name].type == "histogram", name

    def samples(family: str) -> dict[str, float]:
        return {s.labels.get("le", s.name): s.value for s in families[family].samples
                if s.name.endswith(("_bucket", "_count", "_sum"))}

    size = samples("worker_batch_size")
    assert (size["3.0"], size["4.0"], size["+Inf"]) == (0, 2, 2)  # two batches of 4
    assert size["worker_batch_size_sum"] == 8 and size["worker_batch_size_count"] == 2
    batch = samples("worker_batch_duration_seconds")  # each batch of 4 sleeps 120 ms
    assert (batch["0.1"], batch["0.25"]) == (0, 2) and 0.24 <= batch["worker_batch_duration_seconds_sum"] < 0.5
    queue = samples("worker_queue_duration_seconds")
    assert queue["worker_queue_duration_seconds_count"] == 8
    assert queue["0.05"] == 4  # the first batch took its 4 at once; the next 4 waited for the first to run
    request = samples("worker_request_duration_seconds")
    assert request["worker_request_duration_seconds_count"] == 8 and request["0.1"] == 0
    served = next(s for s in families["worker_success"].samples if s.name == "worker_success_total")
    assert served.value == 8 and served.labels == {"model": MODEL, "variant": f"{MODEL}-cpu-b4"}


def test_histogram_buckets_count_values_at_or_under_each_bound() -> None:
    h = Histogram((0.5, 1.0, 2.0))
    for v in (0.1, 0.5, 0.7, 2.0, 3.0):
        h.observe(v)
    assert h.cumulative() == [("0.5", 2), ("1.0", 3), ("2.0", 4), ("+Inf", 5)]
    assert (h.count, h.sum) == (5, pytest.approx(6.3))
    assert batch_size_buckets(4) == (1.0, 2.0, 3.0, 4.0)
    assert batch_size_buckets(64) == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
