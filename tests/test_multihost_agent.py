"""Servers of a multi-host run, on one machine (tests/servers.py): each its own namespaces, sshd and Open
vSwitch; the agent over one ssh per server; the remote preflight naming what each server lacks."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from servers import ServerSpec, running, start, stop

from testbed import sh
from testbed.agent import REPO, AgentClient, AgentError, Server
from testbed.errors import CommandError, PreflightError
from testbed.serverchecks import check_servers, local_commit, require_servers

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

SPECS = [ServerSpec("a"), ServerSpec("b"),
         ServerSpec("c", ovs=False, hide=("/usr/bin/mnexec",)),  # no Open vSwitch, no Mininet's mnexec
         ServerSpec("d", authorized=False),  # the driver's key is not authorized
         ServerSpec("e", hide=(str(REPO),)),  # the repository is not there
         ServerSpec("f", users=("edge",))]  # a user other than root, and no sudo on this machine


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with running(SPECS, tmp_path_factory.mktemp("servers")) as f:
        yield f


@pytest.fixture(scope="module")
def agents(farm):
    clients = {n: AgentClient(farm.record(n)) for n in ("a", "b")}
    yield clients
    for c in clients.values():
        c.close()


def test_each_server_has_its_own_ovs_namespaces_and_pids(farm, agents):
    a, b = agents["a"], agents["b"]
    assert a.run(["sh", "-c", "echo $TESTBED_FIXTURE_SERVER"]).stdout == "a\n"
    assert b.run(["sh", "-c", "echo $TESTBED_FIXTURE_SERVER"]).stdout == "b\n"
    assert a.hello["uid"] == 0 and a.hello["cwd"] == str(REPO)
    a.run(["ovs-vsctl", "add-br", "mhtest", "--", "set", "bridge", "mhtest", "datapath_type=netdev"])
    for c in (a, b):
        c.run(["ip", "netns", "add", "h1"])  # the same name on both servers
    try:
        assert a.run(["ovs-vsctl", "list-br"]).stdout.split() == ["mhtest"]
        assert b.run(["ovs-vsctl", "list-br"]).stdout.split() == []
        assert subprocess.run(["ovs-vsctl", "br-exists", "mhtest"]).returncode == 2  # the system's OVS
        assert "h1" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        assert farm.leftovers_on("a") == ["a: netns h1", "a: OVS bridge mhtest", "a: link mhtest"]
        assert "servers.py\0_init" in a.run(["cat", "/proc/1/cmdline"]).stdout  # pid 1: the server's init
        assert a.hello["pid"] != farm.get("a").init_pid  # the agent's pid is the server's own numbering
    finally:
        a.run(["ovs-vsctl", "del-br", "mhtest"])
        for c in (a, b):
            c.run(["ip", "netns", "del", "h1"])
    assert farm.leftovers_on("a") == [] and farm.leftovers_on("b") == []


def test_a_failing_command_raises_naming_the_server(agents):
    a = agents["b"]
    with pytest.raises(CommandError, match=r"^server b: `ip link show nosuchdev` failed \(exit 1\): .*nosuchdev"):
        a.run(["ip", "link", "show", "nosuchdev"])
    assert a.run(["false"], check=False).returncode == 1
    with pytest.raises(CommandError, match="^server b: `no-such-program` failed .*command not found"):
        a.run(["no-such-program"])
    with pytest.raises(CommandError, match=r"^server b: command timed out after 0.2 s: sleep 5"):
        a.run(["sleep", "5"], timeout_s=0.2)
    assert a.run(["cat"], input_text="x\ny").stdout == "x\ny"  # the agent still answers, input passes
    with pytest.raises(AgentError, match="^server b: frobnicate failed: unknown op 'frobnicate'"):
        a.call("frobnicate")
    # sh.run, which builds the network, runs on a server through its agent and fails the same way
    assert sh.run(["sh", "-c", "echo $TESTBED_FIXTURE_SERVER"], server=a).stdout == "b\n"
    with pytest.raises(CommandError) as e:
        sh.run(["ip", "-batch", "-"], input_text="link show nosuchdev\n", server=a)
    assert str(e.value).startswith("server b: `ip -batch -` failed (exit 1): ")
    assert str(e.value).endswith("input was:\n    link show nosuchdev")


def test_spawn_runs_detached_with_env_cwd_netns_and_log_and_kill_checks_start_ticks(farm, agents):
    a = agents["a"]
    log = str(Path(farm.dir) / "a" / "spawn.log")
    a.run(["ip", "netns", "add", "h9"])
    try:
        pid, ticks = a.spawn(["sh", "-c", "echo $GREETING; pwd; ip -br link; echo READY; exec sleep 60"], log=log,
                             env={"GREETING": "hello"}, cwd="/tmp", netns="h9")
        for _ in range(100):
            text = a.read(log).decode()
            if "READY" in text:
                break
            time.sleep(0.05)
        lines = text.splitlines()
        assert lines[:2] == ["hello", "/tmp"] and lines[2].split()[0] == "lo" and lines[3] == "READY"
        assert a.poll(pid) is None
        assert not a.kill(pid, ticks + 1)  # another process' start time: left alone
        assert a.poll(pid) is None
        assert a.kill(pid, ticks)
        for _ in range(100):
            if a.poll(pid) is not None:
                break
            time.sleep(0.05)
        assert a.poll(pid) == -15
    finally:
        a.run(["ip", "netns", "del", "h9"])
    a.write(str(Path(farm.dir) / "a" / "blob"), bytes(range(256)))
    assert a.read(str(Path(farm.dir) / "a" / "blob"), offset=250) == bytes(range(250, 256))
    assert farm.leftovers_on("a") == []


def test_an_agent_that_cannot_start_says_why_naming_the_server(farm):
    with pytest.raises(AgentError, match=r"^server d \(root@192\.168\.\d+\.4\): starting the agent: "
                                         r".*Permission denied \(publickey\)"):
        AgentClient(farm.record("d"))
    with pytest.raises(AgentError, match=f"^server e .*: starting the agent: no repository with a .venv at {REPO}$"):
        AgentClient(farm.record("e"))
    edge = dataclasses.replace(farm.record("f"), dest=f"edge@{farm.get('f').addr}")
    with pytest.raises(AgentError, match=r"^server f \(edge@[\d.]+\): starting the agent: .*sudo: not found"):
        AgentClient(edge)  # a user other than root starts the agent through sudo -n


def test_preflight_passes_a_complete_server_and_names_each_missing_thing(farm):
    commit = local_commit()
    found = check_servers([farm.record(n) for n in ("a", "b", "c", "d", "e")], mtu=1450)
    f = farm.record("f")
    edge = check_servers([dataclasses.replace(f, dest=f"edge@{f.underlay_addr}")]).reports[0]
    no_sudo = subprocess.run(["sh", "-c", "command -v sudo || echo sudo: not found"], capture_output=True,
                             text=True).stdout
    by = {r.server: r for r in found.reports}
    assert by["a"].problems == [] and by["b"].problems == []
    assert (by["a"].underlay_dev, by["a"].underlay_mtu, by["a"].commit) == ("eth0", 1500, commit)
    # every pair whose first server has an agent (d: no key login, e: no repository) pinged the other
    assert set(found.rtt_ms) == {("a", "b"), ("a", "c"), ("a", "d"), ("a", "e"), ("b", "c"), ("b", "d"),
                                 ("b", "e"), ("c", "d"), ("c", "e")}
    assert set(found.clocks) == {"a", "b", "c"}  # the servers whose agent started
    clock = found.clocks["a"]  # one machine, one clock: the true offset is 0, inside the measured bound
    assert clock.probes == 50 and clock.bound_ms > 0 and abs(clock.offset_ms) <= clock.bound_ms
    assert clock.chrony_offset_ms is None  # no chrony here
    c = by["c"].problems
    assert len(c) == 2
    assert c[0] == "server c: missing programs mnexec; apt-get install mininet (scripts/setup.sh does)"
    assert c[1].startswith("server c: Open vSwitch does not answer (ovs-vsctl show: ")
    assert c[1].endswith("); start it: scripts/setup.sh")
    d_addr = farm.get("d").addr
    assert by["d"].problems == [f"server d (root@{d_addr}): key login in BatchMode failed (root@{d_addr}: "
                                f"Permission denied (publickey).); the server takes none of root's keys (/root/.ssh; "
                                f"root's under sudo): add that public key to root@{d_addr}'s authorized_keys, or pass "
                                "--ssh-options '-i KEY' (docs/multihost.md)"]
    f_addr = farm.get("f").addr
    assert len(edge.problems) == 1 and "sudo" in no_sudo  # this machine has no sudo: "sudo: not found"
    assert edge.problems[0].startswith(f"server f (edge@{f_addr}): edge is not root and `sudo -n true` fails (")
    assert edge.problems[0].endswith("sudo: not found); log in as root or allow this user sudo without a password")
    implicit = Server("f", f_addr, ssh_options=(*farm.ssh_options(), "-l", "edge"))  # ssh's user, not named
    first = check_servers([implicit]).problems[0]  # (and what a user cannot do follows)
    assert first == ("server f: the agent runs as uid 4200, not root; name the user: root@host, or user@host for a "
                     "user allowed sudo without a password")
    assert by["e"].problems == [f"server e (root@{farm.get('e').addr}): starting the agent: no repository with a "
                                f".venv at {REPO}; clone the repository there at the driver's path and run "
                                "scripts/setup.sh"]


def test_preflight_refuses_an_mtu_the_underlay_cannot_carry_and_another_commit(farm):
    with pytest.raises(PreflightError) as e:
        require_servers([farm.record("a"), farm.record("b")], mtu=1451)
    assert str(e.value).splitlines() == [
        "servers not ready:",
        "  server a: underlay eth0 has MTU 1500: --mtu 1451 needs an underlay of 1501; use --mtu 1450 or raise "
        "the underlay MTU",
        "  server b: underlay eth0 has MTU 1500: --mtu 1451 needs an underlay of 1501; use --mtu 1450 or raise "
        "the underlay MTU"]
    found = check_servers([farm.record("a")], commit="0" * 40)
    assert found.problems == [f"server a: the repository at {REPO} is at {local_commit()}, the driver's at "
                              f"{'0' * 40}; check out the same commit"]
    slow = check_servers([farm.record("a")], clock_bound_ms=0.0).problems
    assert len(slow) == 1 and re.fullmatch(r"server a: its clock offset is known only within \+-\d+\.\d{3} ms "
                                           r"\(half the best round trip of 50 probes\), above 0 ms", slow[0])
    wrong = Server("a", farm.record("a").dest, underlay_addr="10.99.0.1", ssh_options=farm.ssh_options())
    assert check_servers([wrong]).problems == ["server a: no interface holds the underlay address 10.99.0.1; "
                                               "give the server's address on the network between the servers"]


def test_stopping_the_servers_leaves_nothing_even_with_processes_and_namespaces_inside(tmp_path):
    farm = start([ServerSpec("x")], tmp_path, mtu=9000)
    try:
        with AgentClient(farm.record("x")) as x:
            assert json.loads(x.run(["ip", "-j", "link", "show", "eth0"]).stdout)[0]["mtu"] == 9000
            x.run(["ip", "netns", "add", "inner"])
            x.run(["ovs-vsctl", "add-br", "left", "--", "set", "bridge", "left", "datapath_type=netdev"])
            x.spawn(["sleep", "3017"], log="/dev/null", netns="inner")  # in a namespace inside the server
            x.spawn(["setsid", "-f", "sleep", "3019"], log="/dev/null")  # a daemon, reparented to the server's init
        left = farm.leftovers_on("x")
        assert left[:3] == ["x: netns inner", "x: OVS bridge left", "x: link left"]
        assert sorted(line.split(None, 3)[3] for line in left[3:]) == ["sleep 3017", "sleep 3019"]
    finally:
        left = stop(farm)
    assert left == []
    assert subprocess.run(["pgrep", "-f", "^sleep 301[79]$"], capture_output=True).returncode == 1


def test_the_preflight_command_finds_the_underlay_from_ssh_and_exits_2_naming_problems(farm):
    a, d = farm.get("a"), farm.get("d")
    argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "testbed.serverchecks", f"a=root@{a.addr}",
            f"d=root@{d.addr}:22", "--mtu", "1450", "--ssh-options", " ".join(farm.ssh_options())]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    out = done.stdout.splitlines()
    assert out[:2] == [f"a: underlay {a.addr} on eth0 (MTU 1500), commit {local_commit()}", "d: 1 problem(s)"]
    assert len(out) == 3 and re.fullmatch(r"clock a: [+-]\d+\.\d{3} ms \+- \d+\.\d{3} ms from the driver's", out[2])
    assert done.stderr.startswith(f"server d (root@{d.addr}): key login in BatchMode failed")
    bad = subprocess.run(argv[:3] + ["root@host"], capture_output=True, text=True, cwd=REPO)
    assert (bad.returncode, bad.stderr) == (2, "serverchecks: bad server 'root@host': expected name=user@host[:port], "
                                               "e.g. gpu=root@10.1.0.7:22\n")


def test_gather_share_brings_a_servers_files_back_leaves_out_what_was_pushed_and_removes_them(agents, tmp_path):
    from testbed.multihost import PUSHED_FILE, gather_share, share_dir

    a, run_dir = agents["a"], tmp_path / "run"
    share = share_dir(run_dir, "a")
    big = bytes(range(256)) * 10_000  # 2.56 MB: more than one read
    a.write(str(share / "logs" / "w.log"), b"worker\n")
    a.write(str(share / "wire-x.stats.json"), big)
    a.write(str(share / "spec.json"), b"{}\n")
    a.write(str(share / PUSHED_FILE), b"spec.json\n")
    assert gather_share(a, run_dir, ("logs",)) == 1  # a folder of it: only that folder goes
    assert (run_dir / "logs" / "w.log").read_bytes() == b"worker\n"
    assert a.run(["test", "-e", str(share / "logs")], check=False).returncode == 1
    assert gather_share(a, run_dir) == 1  # the rest, without the pushed spec
    assert (run_dir / "wire-x.stats.json").read_bytes() == big
    assert not (run_dir / "spec.json").exists()
    assert a.run(["test", "-e", str(run_dir / "servers")], check=False).returncode == 1
