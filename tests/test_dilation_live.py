"""A light live run on tiny at K = 1 and at K = 4 (time dilation): the same outcomes, the same virtual
processing times, virtual latencies within a stated tolerance, the traffic K times longer in real time, and
the run's time scale recorded (config.json, pcap/time.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from analysis.records import read_records
from live.orchestrate import run_live
from live.spec import RunSpec

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

K = 4.0
DURATION_S = 8.0
# One light stream bound by closest to mobilenet@ant1 (profile-driven): 10 queries/s, a loose budget.
TRACE = """stream_id,antenna,start_s,duration_s,app,fps,frame_bytes,max_delay_ms,min_accuracy,task
1,ant1,0.0,10,video-analytics,10,20000,1000,0.2,object-detection
"""


def _run(base: Path, k: float) -> Path:
    (base / "trace.csv").write_text(TRACE)
    spec = RunSpec(topo="tiny", policy="closest", trace=base / "trace.csv", duration_s=DURATION_S,
                   out=base / "run", real_sites=(), switch="lxbr", controller="none", measure_links=False,
                   seed=1, tdf=k)
    return run_live(spec, log=lambda _: None).out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[float, Path]:
    return {k: _run(tmp_path_factory.mktemp(f"k{k:g}"), k) for k in (1.0, K)}


def _figures(run: Path) -> dict:
    t = read_records(run / "records.csv")
    col = {name: t.column(name).to_numpy(zero_copy_only=False) for name in
           ("outcome", "t_send_ms", "t_response_ms", "t_infer_start_ms", "t_infer_end_ms")}
    ok = col["outcome"] == "ontime"
    return {
        "queries": len(col["outcome"]),
        "success": float(ok.mean()),
        "latency_ms": float(np.median(col["t_response_ms"][ok] - col["t_send_ms"][ok])),
        "infer_ms": float(np.median(col["t_infer_end_ms"][ok] - col["t_infer_start_ms"][ok])),
        "traffic_wall_s": json.loads((run / "cpu.json").read_text())["traffic_wall_s"],
    }


def test_a_dilated_run_matches_the_undilated_one_in_virtual_time(runs) -> None:
    one, dilated = _figures(runs[1.0]), _figures(runs[K])
    print(f"K=1 {one}\nK={K:g} {dilated}")
    assert one["queries"] == dilated["queries"] == int(DURATION_S * 10)
    assert one["success"] == dilated["success"] == 1.0
    # the worker's batch time is the profile's in virtual time (it sleeps K x the profile in real time)
    assert abs(dilated["infer_ms"] - one["infer_ms"]) <= 1.0
    # Latency L(K) = P + X / K: P, the dilated part (the worker's profile, the links' delays and serialisation),
    # is the same at every K; X, what is not dilated (HTTP stacks, relay, switches), shrinks K times in virtual
    # time. So L(K) lies between L(1) - (1 - 1/K) X and L(1), with X bounded by the K = 1 latency less the batch
    # time; 1 ms for the clocks' and the sleeps' noise. (Measured: L(1) 28.0 ms, L(4) 25.6 ms, batch 21.0 ms:
    # X is about 3.2 ms, more than the 1.4 ms left after tiny's 5.6 ms of radio delay and serialisation.)
    x_ms = one["latency_ms"] - one["infer_ms"]
    assert dilated["latency_ms"] <= one["latency_ms"] + 1.0
    assert dilated["latency_ms"] >= one["latency_ms"] - (1 - 1 / K) * x_ms - 1.0
    # the traffic lasted about K times longer in real time (a ratio, measured in the same test)
    assert dilated["traffic_wall_s"] >= 3.0 * one["traffic_wall_s"]


def test_the_run_records_its_time_scale_and_t0(runs) -> None:
    for k, run in runs.items():
        cfg = json.loads((run / "config.json").read_text())
        t0 = float((run / "t0").read_text())
        scale = cfg["time_dilation"]
        assert scale["factor"] == k and cfg["tdf"] == k
        assert scale["t0_virtual_epoch_s"] == cfg["t0_virtual_epoch_s"] == pytest.approx(t0, abs=1e-6)
        anchor = scale["anchor_epoch_s"]
        assert cfg["t0_real_epoch_s"] == pytest.approx(anchor + (t0 - anchor) * k, abs=1e-5)  # t0 file: 6 decimals
        assert json.loads((run / "spec.json").read_text())["tdf_anchor_s"] == anchor
        assert json.loads((run / "pcap" / "time.json").read_text()) == scale
