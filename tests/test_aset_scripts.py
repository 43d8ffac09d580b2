"""The ASET scripts of experiments/: the shipped agents' rebuild (train_agents.py) and the side-by-side comparison
on a scenario with the oracle (aset_compare.py), end to end on the tiny topology."""

from __future__ import annotations

import pytest

from experiments import aset_compare, aset_oracle, train_agents
from training.evaluate import AgentFile


def test_train_agents_ships_the_onnx_and_logs_and_keeps_the_checkpoint_aside(tmp_path, capsys):
    out, ckpt = tmp_path / "agents", tmp_path / "ckpt"
    assert train_agents.main(["--topos", "tiny", "--steps", "1100", "--out", str(out), "--checkpoints", str(ckpt),
                              "--lambdas", "20", "--seeds", "1", "--duration", "30", "--validation-duration", "30",
                              "--workers", "1"]) == 0
    assert sorted(p.name for p in (out / "tiny").iterdir()) == sorted(train_agents.SHIPPED)
    assert (ckpt / "tiny" / "agent.pt").is_file()
    assert AgentFile.read(out / "tiny").policy().meta.topology == "tiny"
    assert "| tiny | 20 |" in capsys.readouterr().out


def test_compare_on_a_scenario_runs_statics_agent_and_oracle_on_the_same_traces(tmp_path, capsys):
    out = tmp_path / "agents"
    train_agents.main(["--topos", "tiny", "--steps", "1100", "--out", str(out), "--checkpoints", str(tmp_path / "c"),
                       "--lambdas", "20", "--seeds", "1", "--duration", "30", "--validation-duration", "30",
                       "--workers", "1"])
    capsys.readouterr()
    assert aset_compare.main(["--scenario", "day-cycle", "--topo", "tiny", "--seeds", "1,2", "--duration", "40",
                              "--agent", f"dqn={out / 'tiny'}", "--oracle-seeds", "1", "--oracle-out",
                              str(tmp_path / "oracle"), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "Seeds 1,2 pooled:" in text and "| aset (dqn) |" in text
    assert "- aset (dqn): " in text and " decisions in " in text and "held-out runs (lambda, seed)" in text
    assert "Seeds 1 (the oracle's) pooled:" in text and "| oracle |" in text
    assert [p.name for p in (tmp_path / "oracle").iterdir()] == ["case_day-cycle_tiny_seed1_d40.json"]


@pytest.mark.parametrize(("args", "named"), [
    (["--scenario", "{bad}"], "{bad}: phases[0].duration_s"),
    (["--scenario", "{unknown}"], "{unknown}: phases[0].colour: unknown key"),
    (["--scenario", "nosuch"], "'nosuch'"),
    (["--lambda", "100", "--agent", "x=/nonexist"], "--agent x=/nonexist: /nonexist"),
    (["--lambda", "100", "--topo", "tiny", "--raw-agent", "fe=agents/full-edge"], "agents/full-edge/agent.onnx"),
    (["--lambda", "100", "--oracle-cases", "/nonexist"], "--oracle-cases /nonexist"),
])
def test_compare_refuses_bad_input_with_one_line_naming_it_and_status_2(tmp_path, capsys, args, named):
    bad, unknown = tmp_path / "bad.yaml", tmp_path / "unknown.yaml"
    bad.write_text("name: x\nphases:\n  - {duration_s: -5, lambda_per_min: 20}\n")
    unknown.write_text("name: x\nphases:\n  - {duration_s: 5, lambda_per_min: 20, colour: red}\n")
    args = [a.format(bad=bad, unknown=unknown) for a in args]
    assert aset_compare.main([*args, "--seeds", "1", "--duration", "5", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and named.format(bad=bad, unknown=unknown) in err


@pytest.mark.parametrize(("args", "named"), [
    (["--agent", "/nonexist"], "/nonexist: no ONNX agent there"),
    (["--topo", "nosuch"], "unknown topology 'nosuch'"),
    (["--merge", "/nonexist"], "/nonexist: no case_*.json files"),
    (["--refine", "{tmp}", "--out", "{tmp}/out"], "--refine: {tmp}/case_tiny_lam100_seed1"),
])
def test_the_oracle_refuses_bad_input_with_one_line_naming_it_and_status_2(tmp_path, capsys, args, named):
    args = [a.format(tmp=tmp_path) for a in args]
    base = ["--topo", "tiny"] if "--topo" not in args else []
    assert aset_oracle.main([*base, *args, "--lambdas", "100", "--seeds", "1", "--duration", "5",
                             "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and named.format(tmp=tmp_path) in err
