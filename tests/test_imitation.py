"""Behaviour cloning of the oracle (training/imitation.py): the replay of an oracle case gives its states and
choices and its count, a case from another trace is refused, and the network can fit the choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.aset_oracle import run_case
from experiments.oracle_search import env_config
from scheduler.core import policy_index
from scheduler.profiles import load_profiles
from scheduler.system import build_system
from topologies import load_topology
from training.config import DQNConfig
from training.imitation import fit, oracle_pairs
from training.imitation import main as imitation_main
from training.rollout import EvalCase


@pytest.fixture(scope="module")
def oracle_case():
    system = build_system(load_topology("full-edge"), load_profiles(None))
    cfg, _ = env_config(None)
    case = run_case(system, EvalCase(100.0, 1, 60.0), cfg, None, False, False, False)
    return system, case


def test_the_replay_gives_one_state_per_oracle_choice_and_its_count(oracle_case):
    system, case = oracle_case
    x, y = oracle_pairs(system, case, DQNConfig())
    assert list(y) == case["oracle"]["actions"] and x.shape[0] == len(y) == 12
    assert any(a != policy_index("load-balancing") for a in y)  # the case leaves load-balancing somewhere
    assert not np.array_equal(x[0], x[-1])


def test_a_case_that_does_not_replay_to_its_count_is_refused(oracle_case):
    system, case = oracle_case
    bad = {**case, "seed": 2}
    with pytest.raises(ValueError, match="another code, profile or trace"):
        oracle_pairs(system, bad, DQNConfig())


def test_the_network_fits_the_oracle_choices(oracle_case):
    system, case = oracle_case
    x, y = oracle_pairs(system, case, DQNConfig())
    net, losses = fit(x, y, DQNConfig(), epochs=300)
    with torch.no_grad():
        pred = net(torch.from_numpy(x)).argmax(dim=1).numpy()
    assert losses[-1] < losses[0] and (pred == y).mean() >= 0.9


@pytest.mark.parametrize(("make", "named"), [
    (lambda d: d / "nonexist", "--cases {d}/nonexist: no such folder"),
    (lambda d: (d / "case_x.json").write_text("{") and d, "{d}/case_x.json: not an oracle case file"),
    (lambda d: (d / "case_x.json").write_text('{"topology": "tiny"}') and d, "{d}/case_x.json: not an oracle"),
    (lambda d: d, "--cases: no oracle case of topology full-edge in {d}"),
])
def test_the_command_refuses_bad_case_folders_with_one_line_and_status_2(tmp_path, capsys, make, named):
    folder = make(tmp_path)
    assert imitation_main(["--cases", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named.format(d=tmp_path) in err
    assert not (tmp_path / "out").exists()
