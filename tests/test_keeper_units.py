"""A live run's keeper on another server without root (live/keeper.py, docs/multihost.md): the keeper's log, its
plan, a keeper gone as the monitor and verdict say it, a real worker's argv on a server, the groups kept out of
servers.json, and the agent refusing a group that does not exist. The root tests on a fixture server:
tests/test_multihost_cores.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_multihost_cores import TRACE

from live.keeper import KEEPER_BUSY, KEEPER_PLAN, KEEPER_READY, said
from live.placed import real_worker_argv
from testbed.agent import Agent, Server
from testbed.placement import Placement, read_servers, write_servers


def test_the_keeper_says_plan_ready_or_busy_in_order():
    assert said("") == [] and said("real inference has CPU 1 to itself\n") == []
    log = f"{KEEPER_PLAN}[]\nnote\n{KEEPER_READY}{{\"reserved\": null}}\nmore\n{KEEPER_READY}{{\"reserved\": 1}}\n"
    assert said(log) == [("plan", "[]"), ("ready", '{"reserved": null}'), ("ready", '{"reserved": 1}')]
    busy = f"{KEEPER_BUSY}another live run is running (pid 7, /x, since T): wait\n"
    assert said(busy) == [("busy", "another live run is running (pid 7, /x, since T): wait")]


def test_a_keeper_plans_every_group_it_may_make_before_making_any(tmp_path):
    """What a keeper tells the driver to record first: its groups as this machine's hierarchies place them (names
    carrying the run's id and the server's), whether it reserves a core or not, and the daemons' CPUs as they are."""
    from live.cores import RunCores
    from testbed import cpuset

    planned = RunCores(tmp_path, label="b", run_id="ab12").planned()  # not entered: nothing made, no lock
    groups = [e.name for e in planned if e.kind == "cgroup"]
    kind, root = cpuset.hierarchy(), cpuset.pressure_root()
    if kind == "v1":
        want = ([f"{root}/edge-testbed-ab12-b"] if root else []) + [f"/sys/fs/cgroup/cpuset/edge-testbed-ab12-b-{x}"
                                                                     for x in ("real", "rest")]
    elif kind == "v2":
        want = ["/sys/fs/cgroup/edge-testbed-ab12-b"] + [f"/sys/fs/cgroup/edge-testbed-ab12-b/edge-testbed-ab12-b-{x}"
                                                         for x in ("real", "rest")]
    else:
        want = [f"{root}/edge-testbed-ab12-b"] if root else []
    assert groups == want and not any(Path(g).exists() for g in groups)
    assert all(e.kind == "affinity" and e.name == "ovs-vswitchd" and e.cpus for e in planned if e.kind != "cgroup")


def test_a_keeper_found_gone_stops_the_run_from_then_and_says_why(tmp_path):
    """The monitor's early stop names the server whose keeper went, from when (virtual s since t0 at K = 2), and
    why; summary.json's verdict then reads it (live/verdict.py)."""
    from types import SimpleNamespace

    from live.keeper import Keeper, lost_record
    from live.monitor import Monitor
    from live.verdict import format_fidelity, verdict
    from workload.trace import read_trace

    keeper = Keeper(SimpleNamespace(server=SimpleNamespace(name="b")), 1, 2, "log", True)  # type: ignore[arg-type]
    gone = lost_record(keeper, "exited with -9", at_epoch_s=1000.0 + 7.0)
    spec = SimpleNamespace(tdf=2.0, tdf_anchor_s=1000.0)  # virtual = anchor + (real - anchor) / 2
    t0_virtual_s = 1000.0 + 1.5
    found: list[dict | None] = [None]
    (tmp_path / "trace.csv").write_text(TRACE.format(d=5))
    monitor = Monitor(tmp_path, spec, t0_virtual_s, None, lambda: [], read_trace(tmp_path / "trace.csv"),
                      lambda: found[0])
    assert monitor.run_lost() is None
    found[0] = gone
    why = monitor.run_lost()
    assert why is not None and why["server"] == "b" and why["windows_from_s"] == 2.0  # 3.5 virtual s - 1.5
    assert "exited with -9" in why["why"] and "lock is free" in why["why"] and "at_epoch_s" not in why
    lines = format_fidelity(verdict([], 2.0, why))
    assert lines[0].endswith("NOT FAITHFUL") and lines[1].startswith("  stopped-early at 2 s: server b: the run's")


def test_a_real_worker_on_a_server_uses_its_cores_or_its_last_cpu():
    argv = ["python", "-m", "workers.serve", "--threads", "1", "--cpus", "1"]
    got = real_worker_argv(argv, "/proc/9/root/sys/fs/cgroup/cpuset/edge-testbed-x-b-real", 3)
    assert got == ["python", "-m", "workers.serve", "--threads", "1", "--inference-cgroup",
                   "/proc/9/root/sys/fs/cgroup/cpuset/edge-testbed-x-b-real"]
    here = ["python", "-m", "workers.serve", "--inference-cgroup", "/proc/5/root/sys/x-real", "--threads", "1"]
    assert real_worker_argv(here, None, 3) == ["python", "-m", "workers.serve", "--threads", "1", "--cpus", "3"]


def test_a_run_process_joins_rest_and_the_pressure_group_unless_rest_is_inside_it(tmp_path):
    from live.cores import RunCores

    cores = RunCores(tmp_path, real_inference=False, label="b")  # not entered: nothing made
    assert cores.run_groups() == []
    v1, v2 = Path("/sys/fs/cgroup/cpuset/edge-testbed-x-b-rest"), Path("/sys/fs/cgroup/unified/edge-testbed-x-b")
    cores.rest_group, cores.pressure_group = v1, v2
    assert cores.run_groups() == [v1, v2]
    cores.rest_group, cores.pressure_group = Path("/sys/fs/cgroup/edge-testbed-x-b/edge-testbed-x-b-rest"), \
        Path("/sys/fs/cgroup/edge-testbed-x-b")
    assert cores.run_groups() == [cores.rest_group]  # v2: -rest is inside the run's group, its pressure counts it


def test_the_groups_of_a_run_stay_out_of_servers_json(tmp_path):
    srv = Server("b", "root@10.0.0.2", cgroups=("/sys/fs/cgroup/cpuset/edge-testbed-x-b-rest",))
    write_servers(tmp_path, Placement((("b", srv),), (("cloud", "b"),)), {})
    back = read_servers(tmp_path)["b"]
    assert back.cgroups == () and back.dest == srv.dest and "cgroup" not in (tmp_path / "servers.json").read_text()


def test_the_agent_refuses_to_spawn_into_a_group_that_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match=r"cgroup /nonexistent/edge-testbed-x does not exist"):
        Agent().op_spawn(["true"], log=str(tmp_path / "log"), cgroups=["/nonexistent/edge-testbed-x"])
