"""Placement of sites onto servers, without root: `--servers`/`--place` parsing and its one-line refusals, the plan's
server per host, switch and link, the crossing links' MTU and underlay-delay refusals, `servers.json`, and the
record's per-object server (old records still read; another server's entries never touched here; an unreachable
server named while this machine's entries are still removed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.agent import Server
from testbed.errors import PreflightError
from testbed.placement import (
    LOCAL,
    Underlay,
    check_crossing,
    crossing_links,
    everything_local,
    parse_place,
    parse_servers,
    read_servers,
    write_servers,
)
from testbed.plan import build_plan
from testbed.record import Created, CreationRecord, process_start_ticks, remove_on_servers
from topologies import load_topology

ROOT = Path(__file__).resolve().parents[1]
SITES = ["ant1", "dc1", "cloud"]
TWO = "a=root@192.168.77.1,b=root@192.168.77.2:2222"


def test_servers_default_to_the_driver_alone_and_keep_their_order_and_ssh_options():
    assert parse_servers(None) == ((LOCAL, None),)
    got = parse_servers(f"local,{TWO}", ["-i", "k"])
    assert [n for n, _ in got] == ["local", "a", "b"]
    assert got[0][1] is None
    assert got[2][1] == Server("b", "root@192.168.77.2", 2222, ssh_options=("-i", "k"))


@pytest.mark.parametrize(("text", "message"), [
    ("a=root@h,a=root@k", "--servers: server 'a' named twice"),
    ("local,local", "--servers: server 'local' named twice"),
    ("gpu", "--servers: 'gpu' is neither `local` nor NAME=USER@HOST"),
    ("local=root@h", "--servers: 'local=root@h': the name `local` is the driver"),
    ("a=root@h:x", "--servers: bad server 'a=root@h:x'"),
    ("a=root@h,,b=root@k", "--servers: an empty item in .a=root@h,,b=root@k."),
])
def test_bad_servers_are_refused_naming_the_item(text, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_servers(text)


def test_sites_not_placed_go_to_the_first_server():
    servers = parse_servers(TWO)
    p = parse_place("cloud=b", SITES, servers)
    assert p.sites == (("ant1", "a"), ("dc1", "a"), ("cloud", "b"))
    assert [s.name for s in p.remote] == ["a", "b"] and not p.is_local
    assert parse_place(None, SITES, parse_servers(None)).is_local
    assert parse_place("cloud=a", SITES, servers).remote == [servers[0][1]]  # b holds nothing: not used


@pytest.mark.parametrize(("text", "message"), [
    ("ant2=a", "--place: 'ant2=a': no site 'ant2' in the topology (sites: ant1, dc1, cloud)"),
    ("cloud=c", "--place: 'cloud=c': no server 'c' in --servers (a, b)"),
    ("cloud=a,cloud=b", "--place: site 'cloud' placed twice"),
    ("cloud", "--place: 'cloud' is not SITE=SERVER"),
])
def test_bad_placements_are_refused_naming_the_item(text, message):
    with pytest.raises(ValueError) as e:
        parse_place(text, SITES, parse_servers(TWO))
    assert str(e.value) == message


def test_the_plan_puts_a_sites_switch_hosts_and_links_on_its_server():
    topo = load_topology("tiny")
    plan = build_plan(topo, "t1", sites_on={"ant1": "a", "dc1": "a", "cloud": "b"})
    assert {h.name: h.server for h in plan.hosts} == {"worker-ant1": "a", "scheduler-ant1": "a",
                                                       "sources-ant1": "a", "worker-dc1": "a", "worker-cloud": "b"}
    assert [s.server for s in plan.switches] == ["a", "a", "b"]
    assert [lk.name for lk in plan.crossing_links] == ["dc1-cloud"]
    assert plan.servers == ["a", "b"]
    assert all(not lk.crosses for lk in plan.links if lk.kind != "trunk")
    local = build_plan(topo, "t1")
    assert local.crossing_links == () and local.servers == [LOCAL]
    with pytest.raises(ValueError, match="placement names sites not in topology tiny: ant9"):
        build_plan(topo, "t1", sites_on={"ant9": "a"})


UNDERLAY = {"a": Underlay("192.168.77.1", "eth0", 1500, "c0"), "b": Underlay("192.168.77.2", "eth0", 1500, "c0")}
TRUNKS = [("ant1-dc1", "ant1", "dc1"), ("dc1-cloud", "dc1", "cloud")]


def test_crossing_links_get_the_link_delay_less_the_underlays_one_way():
    p = parse_place("cloud=b", SITES, parse_servers(TWO))
    crossing = crossing_links(p, TRUNKS, UNDERLAY)
    assert [(c.name, c.index, c.server_a, c.server_b, c.addr_b) for c in crossing] == [
        ("dc1-cloud", 0, "a", "b", "192.168.77.2")]
    got = check_crossing(crossing, {"dc1-cloud": 20.0}, 1450, UNDERLAY, {("a", "b"): 0.4})
    assert got == {"dc1-cloud": pytest.approx(19.8)}
    assert check_crossing(crossing, {"dc1-cloud": 20.0}, 1450, UNDERLAY, {("b", "a"): 0.4}) == got  # either order


def test_a_crossing_link_above_the_underlays_mtu_or_shorter_than_it_is_refused_in_one_line():
    crossing = crossing_links(parse_place("cloud=b", SITES, parse_servers(TWO)), TRUNKS, UNDERLAY)
    with pytest.raises(PreflightError) as e:
        check_crossing(crossing, {"dc1-cloud": 20.0}, 1500, UNDERLAY, {("a", "b"): 0.4})
    assert str(e.value) == ("link dc1-cloud crosses servers a and b over an underlay of MTU 1500: --mtu 1500 needs an "
                            "underlay of 1550; use --mtu 1450 or raise the underlay MTU")
    with pytest.raises(PreflightError, match=r"^link dc1-cloud \(0.1 ms\) is shorter than the underlay between servers "
                                             r"a and b \(0.200 ms one way"):
        check_crossing(crossing, {"dc1-cloud": 0.1}, 1450, UNDERLAY, {("a", "b"): 0.4})


def test_servers_json_records_each_servers_destination_underlay_mtu_and_commit(tmp_path):
    p = parse_place("cloud=b", SITES, parse_servers(f"local,{TWO}", ["-i", "k"]))
    doc = json.loads(write_servers(tmp_path, p, UNDERLAY).read_text())
    assert doc["local"]["dest"] == "local" and doc["local"]["sites"] == ["ant1", "dc1"]
    assert doc["b"] == {"dest": "root@192.168.77.2", "port": 2222, "ssh_options": ["-i", "k"],
                        "repo": str(ROOT), "underlay_addr": "192.168.77.2", "underlay_dev": "eth0", "mtu": 1500,
                        "commit": "c0", "sites": ["cloud"]}
    assert read_servers(tmp_path)["b"].ssh_argv()[-1] == "root@192.168.77.2"
    assert set(read_servers(tmp_path)) == {"a", "b"}
    (tmp_path / "servers.json").write_text("{")
    with pytest.raises(ValueError, match="servers.json: unreadable"):
        read_servers(tmp_path)


def test_everything_local_is_the_default_placement():
    assert everything_local(SITES).sites == tuple((s, LOCAL) for s in SITES)


def test_the_record_names_each_objects_server_and_still_reads_old_records(tmp_path):
    rec = CreationRecord(tmp_path)
    rec.path.write_text('{"kind": "netns", "name": "old"}\n')  # a record written before servers existed
    rec.add(Created("netns", "h1", server="b"))
    assert rec.entries() == [Created("netns", "old"), Created("netns", "h1", server="b")]
    assert json.loads(rec.path.read_text().splitlines()[1]) == {"kind": "netns", "name": "h1", "server": "b"}


def test_an_unreachable_server_is_named_and_this_machines_entries_still_go(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = process_start_ticks(sleeper.pid)
        p = parse_place("cloud=b", SITES, parse_servers("local,b=root@127.0.0.1:9", ["-o", "ConnectTimeout=3"]))
        write_servers(tmp_path, p, {})
        rec = CreationRecord(tmp_path)
        rec.add(Created("process", "here", pid=sleeper.pid, start_ticks=ticks))
        # the same pid and ticks recorded for server b: must never be signalled here
        rec.add(Created("process", "there", pid=sleeper.pid, start_ticks=ticks, server="b"))
        assert rec.entries()[1].server == "b"
        other = [Created("process", "there", pid=os.getpid(), start_ticks=process_start_ticks(os.getpid()),
                         server="b")]
        problems = remove_on_servers(tmp_path, other, {})
        assert len(problems) == 1 and problems[0].startswith("server b unreachable, 1 things recorded there not "
                                                             "removed: server b (root@127.0.0.1)"), problems
        problems = rec.remove_all()
        assert len(problems) == 1 and problems[0].startswith("server b unreachable"), problems
        deadline = time.monotonic() + 10
        while sleeper.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleeper.poll() is not None  # the driver's own entry was removed all the same
        assert not rec.is_torn_down()  # b's share is still to clean
        assert remove_on_servers(tmp_path, [Created("netns", "x", server="c")], {}) == [
            f"server c: 1 things recorded there, but {tmp_path}/servers.json does not say how to reach it"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_net_refuses_bad_placement_options_with_exit_2_in_one_line():
    for extra, message in ((["--servers", "gpu"], "--servers: 'gpu' is neither"),
                           (["--servers", "a=root@h", "--place", "ant9=a"], "--place: 'ant9=a': no site 'ant9'")):
        done = subprocess.run([sys.executable, "run_testbed.py", "net", "--topo", "tiny", "--check", *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
        assert message in done.stderr


def test_under_time_dilation_the_wire_gets_the_dilated_link_less_the_underlay_over_k():
    crossing = crossing_links(parse_place("cloud=b", SITES, parse_servers(TWO)), TRUNKS, UNDERLAY)
    got = check_crossing(crossing, {"dc1-cloud": 20.0}, 1450, UNDERLAY, {("a", "b"): 0.6}, tdf=3.0)
    assert got == {"dc1-cloud": pytest.approx((60.0 - 0.3) / 3)}  # the wire dilates x3, the underlay does not
    # 0.1 ms is shorter than a 0.3 ms underlay, but not once dilated x4 (0.4 ms real)
    assert check_crossing(crossing, {"dc1-cloud": 0.1}, 1450, UNDERLAY, {("a", "b"): 0.6}, tdf=4.0) == {
        "dc1-cloud": pytest.approx((0.4 - 0.3) / 4)}


def test_the_live_runs_placement_comes_from_its_spec_with_or_without_events():
    from live.placed import placement_of
    from live.spec import RunSpec

    sites = ["ant1", "dc1", "cloud"]
    assert placement_of(RunSpec(topo="tiny"), sites).is_local
    spec = RunSpec(topo="tiny", servers="local,b=root@10.0.0.2:2222", place="cloud=b", ssh_options="-i /k -o A=1")
    placement = placement_of(spec, sites)
    assert placement.site_server("cloud") == "b" and placement.site_server("ant1") == LOCAL
    assert placement.server("b").port == 2222 and placement.server("b").ssh_options == ("-i", "/k", "-o", "A=1")
    with pytest.raises(ValueError, match=r"^--ssh-options: No closing quotation$"):
        placement_of(RunSpec(topo="tiny", ssh_options="-i 'k"), sites)
    with pytest.raises(ValueError, match=r"^--place: 'edge=b': no site 'edge'"):
        placement_of(RunSpec(topo="tiny", servers="local,b=root@h", place="edge=b"), sites)
    events = Path(__file__).resolve().parents[1] / "examples" / "network-events-tiny.yaml"
    assert placement_of(RunSpec(topo="tiny", events=events), sites).is_local
    across = placement_of(RunSpec(topo="tiny", events=events, servers="local,b=root@h", place="cloud=b"), sites)
    assert across.site_server("cloud") == "b"  # events across servers: their wires reshaped through the agents


def test_a_remote_workers_options_are_set_in_place_or_appended():
    from live.placed import _with_option, _without_option

    argv = ["python", "-m", "workers.serve", "--threads", "1", "--cpus", "1", "--tdf-anchor-s", "5.0"]
    assert _with_option(argv, "--cpus", "7") == [*argv[:6], "7", *argv[7:]]
    assert _with_option(argv, "--tdf-anchor-s", "5.25")[-2:] == ["--tdf-anchor-s", "5.25"]
    assert _with_option(argv[:5], "--cpus", "3") == [*argv[:5], "--cpus", "3"]
    here = ["python", "-m", "workers.serve", "--inference-cgroup", "/proc/9/root/sys/fs/cgroup/cpuset/x", "--threads", "1"]
    assert _without_option(here, "--inference-cgroup") == ["python", "-m", "workers.serve", "--threads", "1"]


def test_a_scheduler_reads_each_workers_clock_offset(tmp_path: Path) -> None:
    from live.scheduler import read_worker_clocks
    from scheduler.profiles import load_profiles
    from scheduler.system import build_system
    from topologies import load_topology

    system = build_system(load_topology("tiny"), load_profiles())
    names = [r.name for r in system.resources]
    (tmp_path / "workers.json").write_text(json.dumps({
        names[0]: {"url": "http://10.0.0.1:8002", "model": "m", "clock_offset_ms": -3.5},
        names[2]: {"url": "http://10.0.0.2:8002", "model": "m"},  # a file without offsets: 0
        "gone@nowhere": {"url": "http://10.0.0.3:8002", "model": "m", "clock_offset_ms": 9.0},
    }))
    assert read_worker_clocks(tmp_path / "workers.json", system) == {0: -3.5, 2: 0.0}


def test_each_server_reads_the_workers_clocks_from_its_own():
    from live.placed import workers_seen_from

    # workers on a server 7 ms ahead of the driver and on the driver; servers a (+2 ms) and b (+7 ms) read the table
    table = {"x@cloud": {"url": "u1", "model": "m", "clock_offset_ms": 7.0}, "y@dc1": {"url": "u2", "model": "m"}}
    assert workers_seen_from(table, 2.0) == {"x@cloud": {"url": "u1", "model": "m", "clock_offset_ms": 5.0},
                                             "y@dc1": {"url": "u2", "model": "m", "clock_offset_ms": -2.0}}
    assert [w["clock_offset_ms"] for w in workers_seen_from(table, 7.0).values()] == [0.0, -7.0]
    assert "clock_offset_ms" not in table["y@dc1"]  # the driver's own table stays as it was
