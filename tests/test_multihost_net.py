"""`net` with its sites placed on two fixture servers (tests/servers.py: each its own namespaces, Open vSwitch and
sshd): tiny split as ant1, dc1 on a and cloud on b checks like the single-server run, the crossing link's measured
delay within that run's tolerance of its figure; a run MTU the underlay cannot carry is refused in one line; and
nothing is left on either server after teardown, or after kill -9 of the driver mid-bring-up or mid-check and
`run_testbed.py clean`."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import ServerSpec, running

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

ROOT = Path(__file__).resolve().parents[1]
PLACE = "ant1=a,dc1=a,cloud=b"
CROSSING = "dc1-cloud"


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with running([ServerSpec("a"), ServerSpec("b")], tmp_path_factory.mktemp("farm")) as f:
        yield f


def placed(farm) -> list[str]:
    a, b = farm.get("a").addr, farm.get("b").addr
    return ["--servers", f"a=root@{a},b=root@{b}", "--place", PLACE, "--ssh-options", shlex.join(farm.ssh_options())]


def net(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "run_testbed.py", "net", "--topo", "tiny", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def medians(run_dir: Path) -> dict[tuple[str, str], dict]:
    doc = json.loads((run_dir / "link_measurements.json").read_text())
    return {(m["link"], m["direction"]): m for m in doc["links"]}


def local_leftovers(run_dir: Path) -> list[str]:
    """Returns the namespaces of this run still in the driver's namespace list, and its ssh control directory."""
    run_id = json.loads((run_dir / "created.jsonl").read_text().splitlines()[0])["name"]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    found = [n for n in names if n.startswith(f"tb{run_id}-")]
    return found + [str(p) for p in Path("/tmp").glob(f"tb{run_id}-ssh")]


def test_tiny_across_two_servers_checks_as_on_one_and_leaves_nothing(farm, tmp_path):
    one = net("--mtu", "1450", "--check", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stdout + one.stderr
    two = net("--mtu", "1450", "--check", "--out", str(tmp_path / "two"), *placed(farm))
    assert two.returncode == 0, two.stdout + two.stderr
    assert "servers a (ant1, dc1), b (cloud)" in two.stdout
    single, split = medians(tmp_path / "one"), medians(tmp_path / "two")
    assert set(single) == set(split) and all(m["ok"] for m in split.values()), split
    for direction in ("a->b", "b->a"):
        s, m = single[(CROSSING, direction)], split[(CROSSING, direction)]
        print(f"{CROSSING} {direction}: one server {s['median_delay_ms']:.3f} ms, two {m['median_delay_ms']:.3f} ms "
              f"(tolerance {s['tolerance_delay_ms']:.3f})")
        assert abs(m["median_delay_ms"] - s["median_delay_ms"]) <= s["tolerance_delay_ms"]
    doc = json.loads((tmp_path / "two" / "servers.json").read_text())
    assert doc["b"]["dest"] == f"root@{farm.get('b').addr}" and doc["b"]["sites"] == ["cloud"]
    assert doc["a"]["underlay_addr"] == farm.get("a").addr and doc["a"]["mtu"] == 1500 and doc["a"]["commit"]
    entries = [json.loads(line) for line in (tmp_path / "two" / "created.jsonl").read_text().splitlines()]
    assert {e.get("server") for e in entries} == {None, "a", "b"}
    assert any(e["kind"] == "ovs-bridge" and e.get("server") == "b" for e in entries)
    for rel in ("wire-dc1-cloud.stats.json", "measure-a.report.json", "measure-b.report.json"):  # the servers' shares, back
        assert (tmp_path / "two" / rel).stat().st_size > 0, rel
    assert not (tmp_path / "two" / "servers").exists()
    assert farm.leftovers_on("a") == [] and farm.leftovers_on("b") == []
    assert local_leftovers(tmp_path / "two") == []


def test_a_run_mtu_the_underlay_cannot_carry_is_refused_naming_the_link(farm, tmp_path):
    done = net("--mtu", "1500", "--check", "--out", str(tmp_path / "r"), *placed(farm), timeout_s=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == ("error: link dc1-cloud crosses servers a and b over an underlay of MTU 1500: --mtu "
                                   "1500 needs an underlay of 1550; use --mtu 1450 or raise the underlay MTU")
    assert farm.leftovers_on("a") == [] and farm.leftovers_on("b") == []


def _wait_for(pred, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("stage", ["bring-up", "check"])
def test_kill_9_of_the_driver_then_clean_leaves_nothing_on_either_server(farm, tmp_path, stage):
    run_dir = tmp_path / "run"
    out = tmp_path / "stdout"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "run_testbed.py", "net", "--topo", "tiny", "--mtu", "1450",
                                 "--check", "--probes", "2000", "--out", str(run_dir), *placed(farm)], cwd=ROOT,
                                stdout=sink, stderr=subprocess.STDOUT)
    record = run_dir / "created.jsonl"
    try:
        if stage == "bring-up":  # as soon as something exists on server b, before the network is up
            _wait_for(lambda: record.exists() and '"server": "b"' in record.read_text(), "b's first record entry")
            _wait_for(lambda: farm.leftovers_on("b") != [], "b's first object")
            assert "worker-cloud" not in out.read_text()
        else:  # the network is up and measuring (2000 probes per direction: about 20 s of it)
            _wait_for(lambda: "worker-cloud" in out.read_text(), "the network up")
            time.sleep(3)
        assert proc.poll() is None, out.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert farm.leftovers_on("b") != []  # what the killed run made is still there
        done = subprocess.run([sys.executable, "run_testbed.py", "clean", "--run-dir", str(run_dir)], cwd=ROOT,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert ": cleaned (" in done.stdout
        _wait_for(lambda: farm.leftovers_on("a") == [] and farm.leftovers_on("b") == [], "nothing left", 20)
        assert local_leftovers(run_dir) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
