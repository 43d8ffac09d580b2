"""Clean start and clean end: teardown, SIGTERM, a killed run's `clean`, a dying helper, preflight errors."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testbed import EmulatedNetwork, HelperDiedError
from testbed.cli import cmd_clean
from testbed.leftovers import leftovers
from testbed.record import CreationRecord

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
REPO = Path(__file__).resolve().parents[1]
HOLD_SCRIPT = """
import sys, time
from pathlib import Path
from testbed import EmulatedNetwork
net = EmulatedNetwork("tiny", run_dir=Path(sys.argv[1]), log=lambda _: None)
with net:
    print("up", net.run_id, flush=True)
    while True:
        time.sleep(1)
"""


def _recorded_processes(run_dir: Path) -> list[tuple[int, int | None]]:
    return [(e.pid, e.start_ticks) for e in CreationRecord(run_dir).entries() if e.kind == "process"]


def _scratch(run_dir: Path) -> str:
    return next(e.name for e in CreationRecord(run_dir).entries() if e.kind == "netns" and e.name.endswith("-netem-probe"))


def _start_held_run(run_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    line = proc.stdout.readline().split() if proc.stdout else []
    assert line and line[0] == "up", f"the run did not come up (exit {proc.poll()})"
    return proc, line[1]


def test_normal_teardown_leaves_nothing(tmp_path: Path) -> None:
    with EmulatedNetwork("tiny", run_dir=tmp_path / "run", log=lambda _: None) as net:
        procs = _recorded_processes(net.run_dir)
        present = leftovers(net.run_id, procs)
        assert any(p.startswith("netns") for p in present) and any(p.startswith("ovs bridge") for p in present)
        assert any(p.startswith("qdisc") for p in present) and any(p.startswith("process") for p in present)
    assert leftovers(net.run_id, procs, _scratch(net.run_dir)) == []
    assert CreationRecord(net.run_dir).is_torn_down()


def test_killed_run_is_cleaned_by_what_it_recorded(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc, run_id = _start_held_run(run_dir)
    proc.kill()
    proc.wait()
    assert any(p.startswith("netns") for p in leftovers(run_id))  # a SIGKILLed run cannot tear down
    assert cmd_clean(argparse.Namespace(run_dir=run_dir)) == 0
    assert leftovers(run_id, _recorded_processes(run_dir), _scratch(run_dir)) == []
    assert CreationRecord(run_dir).is_torn_down()
    assert cmd_clean(argparse.Namespace(run_dir=run_dir)) == 0  # a second clean finds nothing to do


def test_sigterm_ends_in_teardown(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc, run_id = _start_held_run(run_dir)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    assert leftovers(run_id, _recorded_processes(run_dir)) == []
    assert CreationRecord(run_dir).is_torn_down()


@pytest.mark.timeout(120)  # pytest-timeout's SIGALRM fails the test (and the with-block tears down) if nothing else ends it
def test_a_dying_wire_interrupts_the_with_block_and_tears_the_network_down(tmp_path: Path) -> None:
    """The watchdog wakes the main thread out of a 600 s sleep, even in a process started with SIGINT ignored (`cmd &`
    from a script, nohup): a SIGINT never reaches it there, which is why the watchdog does not use that signal."""
    net = EmulatedNetwork("tiny", run_dir=tmp_path / "run", shaping="wire", log=lambda _: None)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(HelperDiedError, match="wire"), net:
            os.kill(net.wire_pids()[0], signal.SIGKILL)
            time.sleep(600)  # only the watchdog's interruption ends this before the test's timeout
    finally:
        signal.signal(signal.SIGINT, old)
    assert leftovers(net.run_id, _recorded_processes(net.run_dir)) == []
    assert CreationRecord(net.run_dir).is_torn_down()


def test_not_root_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")
    script = ("import sys; from testbed.cli import cmd_net; import argparse; "
              "sys.exit(cmd_net(argparse.Namespace(topo='tiny', shaping='auto', switch='ovs', controller='osken', "
              "out=None, seed=0, mtu=1500, check=True, probes=10, tolerance_ms=0.5)))")
    work = Path(tempfile.mkdtemp(prefix="tb-nobody-"))  # under /tmp, which nobody can reach
    work.chmod(0o777)
    try:
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                               script], capture_output=True, text=True, cwd=work,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
        built = (work / "runs").exists()
    finally:
        shutil.rmtree(work)
    assert done.returncode == 2, done.stderr
    assert "needs root" in done.stderr
    assert not built


def test_malformed_topology_is_one_clear_message(tmp_path: Path, capsys) -> None:
    from testbed.cli import cmd_net

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsites:\n  - {name: a, layer: antenna, radio: {delay: 3}}\nlinks: []\n")
    args = argparse.Namespace(topo=str(bad), shaping="auto", switch="ovs", controller="osken", out=tmp_path / "run",
                              seed=0, mtu=1500, check=True, probes=10, tolerance_ms=0.5)
    assert cmd_net(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "delay_ms" in err
    assert not (tmp_path / "run").exists()


def test_cyclic_topology_without_controller_is_refused(tmp_path: Path) -> None:
    from testbed.errors import PreflightError

    cyc = tmp_path / "cycle.yaml"
    cyc.write_text("name: cyc\nsites:\n  - {name: a, layer: antenna, radio: {delay_ms: 1}, compute: {cpu_cores: 1}}\n"
                   "  - {name: b, layer: co}\n  - {name: c, layer: dc}\n"
                   "links:\n  - {a: a, b: b, delay_ms: 1}\n  - {a: b, b: c, delay_ms: 2}\n  - {a: a, b: c, delay_ms: 4}\n")
    net = EmulatedNetwork(cyc, controller="none", run_dir=tmp_path / "run", log=lambda _: None)
    with pytest.raises(PreflightError, match="cycle"):
        net.start()
    assert not (tmp_path / "run").exists()


def test_net_check_command_measures_and_tears_down(tmp_path: Path, capsys) -> None:
    from testbed.cli import cmd_net

    args = argparse.Namespace(topo="tiny", shaping="wire", switch="lxbr", controller="none", out=tmp_path / "run",
                              seed=0, mtu=1500, check=True, probes=50, tolerance_ms=1.0)
    assert cmd_net(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("radio-ant1", "ant1-dc1", "dc1-cloud"))]
    assert len(rows) == 6 and all(line.endswith("ok") for line in rows)
    run_id = next(e.name for e in CreationRecord(tmp_path / "run").entries() if e.kind == "run")
    assert leftovers(run_id, _recorded_processes(tmp_path / "run")) == []
