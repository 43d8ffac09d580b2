"""The radio-load check (experiments/radio_load.py): the mean-field load against a hand computation, the load it
counts against the frames the trace sends, and a radio too narrow for its load seen failing only with its queue."""

from pathlib import Path

import numpy as np
import pytest

from experiments import radio_load
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from topologies import load_topology
from training.rollout import EvalCase
from workload.apps import APPS, MIN_DURATION_S

ROOT = Path(__file__).resolve().parents[1]


def test_the_mean_field_load_is_the_app_mix_by_hand():
    """lambda / 60 x sum over apps of share x E[lifetime] x E[fps] x E[frame bits] (independent draws; fps an
    integer uniform over its range, frame kB uniform, lifetime MIN_DURATION_S + exponential)."""
    by_hand = sum(a.share * (MIN_DURATION_S + a.mean_duration_s) * (a.fps_range[0] + a.fps_range[1]) / 2
                  * (a.frame_kb_range[0] + a.frame_kb_range[1]) / 2 * 1000 * 8 for a in APPS) / sum(a.share for a in APPS)
    assert radio_load.mean_field_mbps(60.0) == pytest.approx(60 / 60 * by_hand / 1e6, rel=0.01)
    assert radio_load.mean_field_mbps(20.0) == pytest.approx(radio_load.mean_field_mbps(60.0) / 3, rel=1e-12)


def _tiny(tmp_path: Path, radio_mbps: float):
    text = (ROOT / "topologies" / "tiny.yaml").read_text().replace("bw_mbps: 100}", f"bw_mbps: {radio_mbps:g}}}", 1)
    path = tmp_path / f"tiny-{radio_mbps:g}.yaml"
    path.write_text(text)
    return build_system(load_topology(str(path)), load_profiles())


def test_the_radio_carries_every_admitted_frame_once(tmp_path):
    system = _tiny(tmp_path, 100)
    case = EvalCase(2.0, 1, 60.0)
    run = radio_load.simulate(system, case, "closest", radio_queueing=True)
    trace = case.trace(system)
    frames = np.ceil((np.minimum(trace.end_s, case.duration_s) - trace.start_s) * trace.fps - 1e-9)
    assert run.success > 0.9  # light: nothing is rejected, so every frame of the trace crosses the radio
    assert run.load_mbps.sum() == pytest.approx(float((frames * trace.frame_bytes).sum()) * 8 / 1e6, rel=1e-9)
    assert radio_load.radio_rates_mbps(system).tolist() == [100.0]


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
    assert radio_load.main(["--settled", "700"]) == 2
    assert "--settled 700" in capsys.readouterr().err
