"""The radio-load check (experiments/radio_load.py): the mean-field load against the streams the traces draw, the
load it counts against the frames of the admitted streams, and a radio too narrow for its load seen failing only with its queue."""

from pathlib import Path

import numpy as np
import pytest

from experiments import radio_load
from scheduler.core import REJECT_REASONS, policy_index
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from simulator.engine import SimConfig, Simulation
from topologies import load_topology
from training.rollout import SIM_WINDOW_S, EvalCase
from workload.apps import mean_bits_per_stream, sample_streams

ROOT = Path(__file__).resolve().parents[1]


def test_the_mean_field_load_is_what_the_mix_sends():
    """mean_bits_per_stream (lifetime x fps x frame bits, the app mix's means) against 400,000 streams drawn as the
    traces draw them; the radio's mean-field load is lambda / 60 of it per second."""
    s = sample_streams(400_000, np.random.default_rng(7))
    drawn = float((s["duration_s"] * s["fps"] * s["frame_bytes"] * 8.0).mean())
    assert mean_bits_per_stream() == pytest.approx(drawn, rel=0.01)
    assert radio_load.mean_field_mbps(60.0) == pytest.approx(mean_bits_per_stream() / 1e6, rel=1e-12)
    assert radio_load.mean_field_mbps(20.0) == pytest.approx(radio_load.mean_field_mbps(60.0) / 3, rel=1e-12)


def _tiny(tmp_path: Path, radio_mbps: float):
    before = (ROOT / "topologies" / "tiny.yaml").read_text()
    text = before.replace("bw_mbps: 100}", f"bw_mbps: {radio_mbps:g}}}", 1)
    assert text != before or radio_mbps == 100  # the radio's rate is the first bw_mbps of tiny.yaml
    path = tmp_path / f"tiny-{radio_mbps:g}.yaml"
    path.write_text(text)
    system = build_system(load_topology(str(path)), load_profiles())
    assert radio_load.radio_rates_mbps(system).tolist() == [radio_mbps]
    return system


def test_the_radio_load_is_the_frames_of_the_admitted_streams_per_second(tmp_path):
    """Counted from the trace alone: each frame of a stream that found a binding, at start + k / fps, in its second;
    a stream refused when it opens sends nothing up the radio."""
    system = _tiny(tmp_path, 100)
    case = EvalCase(10.0, 1, 60.5)  # a last half second: its load is over the half second it covers
    run = radio_load.simulate(system, case, "closest", radio_queueing=True)
    batches = []
    config = SimConfig(window_s=SIM_WINDOW_S, duration_s=case.duration_s)
    Simulation(system, case.trace(system), config, seed=case.seed, record_sink=batches.append).run(policy_index("closest"))
    stream = np.concatenate([b["stream_id"] for b in batches]).astype(np.int64)
    reason = np.concatenate([b["reason"] for b in batches])
    outcome = np.concatenate([b["outcome"] for b in batches])
    refused = set(stream[np.isin(reason, REJECT_REASONS)].tolist())
    assert refused and len(refused) < len(np.unique(stream))  # some streams refused, some admitted
    tr = case.trace(system)
    expected = np.zeros(61)
    for i in range(len(tr.stream_id)):
        if int(tr.stream_id[i]) in refused:
            continue
        n = int(np.ceil((min(tr.end_s[i], case.duration_s) - tr.start_s[i]) * tr.fps[i] - 1e-9))
        send_ms = (tr.start_s[i] + np.arange(max(n, 0)) / tr.fps[i]) * 1000.0
        np.add.at(expected, np.minimum((send_ms // 1000.0).astype(np.int64), 60), tr.frame_bytes[i] * 8 / 1e6)
    expected[60] /= 0.5
    assert run.load_mbps.shape == (1, 61) and expected[60] > 0
    np.testing.assert_allclose(run.load_mbps[0], expected, rtol=1e-9, atol=1e-9)
    assert run.success == pytest.approx(float((outcome == "ontime").mean()), rel=1e-12)
    send_s = np.concatenate([b["t_send_ms"] for b in batches]) / 1000.0
    assert run.success_per_period == pytest.approx([float((outcome[send_s < 60] == "ontime").mean()),
                                                    float((outcome[send_s >= 60] == "ontime").mean())], rel=1e-12)


def test_a_radio_too_narrow_for_its_load_fails_only_with_its_queue(tmp_path):
    """At 4 Mbit/s a 40 kB frame takes 80 ms to send: without the queue each frame pays that alone, with it the
    frames wait for each other and far fewer are answered in time."""
    system = _tiny(tmp_path, 4)
    case = EvalCase(6.0, 1, 60.0)
    on = radio_load.simulate(system, case, "closest", radio_queueing=True)
    off = radio_load.simulate(system, case, "closest", radio_queueing=False)
    assert (on.load_mbps > 4).any()
    assert on.success < off.success - 0.2


def test_bad_arguments_are_refused_naming_them(capsys):
    assert radio_load.main(["--policies", "nearest"]) == 2
    assert "--policies" in capsys.readouterr().err
    assert radio_load.main(["--policies", ","]) == 2
    assert "names no policy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        radio_load.main(["--duration", "0"])
    assert stop.value.code == 2 and "argument --duration: '0'" in capsys.readouterr().err
    assert radio_load.main(["--settled", "700"]) == 2
    assert "--settled 700" in capsys.readouterr().err
