"""A live run's records on every server (docs/multihost.md): `port_counters.jsonl` holds every switch port's kernel
counters, each port naming its server, another server's read by one agent request per sample; `cpu.json` holds the
CPU seconds of every server's processes of the run (workers, schedulers, wires, agents, keeper, its ovs-vswitchd) per
server and summed, one agent request per server and reading, and `summary.json` each server's groups.

Root: tiny with ant1 on the driver, dc1 on fixture server a and the cloud on b (tests/servers.py, the fixtures of
tests/test_multihost_live.py): the cloud's port on dc1-cloud (a switch on b) counts the frames of the queries served
at the cloud, both ends of ant1-dc1 (one read here, one on a) count the same bytes, and a's and b's processes and
ovs-vswitchd are in cpu.json under their server. Without root: the shapes, from fake agents."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_multihost_live import farm, live, run, runs, trace  # noqa: F401 (fixtures)

from live.procs import (
    CpuSnapshot,
    ProcCpu,
    cpu_record,
    parse_proc_stats,
    remote_cpu,
    remote_processes,
    write_cpu,
)
from live.report import cpu_by_server
from testbed.agent import AgentClient, AgentError
from testbed.multihost import RemoteProc
from testbed.plan import build_plan
from testbed.portcounters import (
    COUNTERS,
    PORT_COUNTERS_FILE,
    PortReading,
    SwitchPort,
    counters_line,
    parse_counters,
    read_on,
    read_ports,
    switch_ports,
)
from topologies import load_topology

root_only = (pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root"))
PLACE = {"ant1": "local", "dc1": "a", "cloud": "b"}
FRAME_BYTES = 20000  # stream 3 of test_multihost_live's trace, the one served at the cloud


class FakeAgent:
    """An agent's client answering `run` as a server would (its counters, its /proc), counting the requests."""

    def __init__(self, name: str, answer, fail: bool = False) -> None:
        self.server = SimpleNamespace(name=name)
        self.hello = {"pid": 900}
        self.answer, self.fail, self.requests = answer, fail, []

    def run(self, argv, check=True, timeout_s=30.0):  # noqa: ANN001, ANN201 - AgentClient.run's interface
        self.requests.append(list(argv))
        if self.fail:
            raise AgentError(f"server {self.server.name}: agent connection closed")
        return subprocess.CompletedProcess(argv, 0, self.answer(argv), "")


def grep_answer(values: dict[str, int]):  # noqa: ANN201
    """Answers `grep -H . FILES` with each counter file of an interface in `values` (ifname -> every counter's
    value), as a server holding those interfaces; the files of other interfaces are missing there."""
    def answer(argv: list[str]) -> str:
        files = argv[argv.index(".") + 1:]
        return "".join(f"{f}:{values[f.split('/')[-3]]}\n" for f in files if f.split("/")[-3] in values)
    return answer


def placed_plan():  # noqa: ANN201
    return build_plan(load_topology("tiny"), "ab12", "10.0.0.0/16", PLACE)


# -- without root: the shapes ---------------------------------------------------------------------------------------

def test_every_switch_port_is_listed_with_its_server():
    ports = switch_ports(placed_plan())
    assert [(p.switch, p.port_no, p.server) for p in ports] == [
        ("ant1", 1, "local"), ("ant1", 2, "local"), ("ant1", 3, "local"), ("dc1", 1, "a"), ("cloud", 1, "b"),
        ("ant1", 4, "local"), ("dc1", 2, "a"), ("dc1", 3, "a"), ("cloud", 2, "b")]
    assert {p.link for p in ports if p.server == "b"} == {"local-worker-cloud", "dc1-cloud"}


def test_counters_are_parsed_from_grep_and_a_port_missing_one_is_left_out():
    text = ("/sys/class/net/vx12/statistics/rx_bytes:1500\n/sys/class/net/vx12/statistics/tx_bytes:7\n"
            "/sys/class/net/vx12/statistics/rx_packets:1\n/sys/class/net/vx12/statistics/tx_packets:0\n"
            "/sys/class/net/p2/statistics/rx_bytes:9\n")
    values = parse_counters(text)
    assert values == {("vx12", "rx_bytes"): 1500, ("vx12", "tx_bytes"): 7, ("vx12", "rx_packets"): 1,
                      ("vx12", "tx_packets"): 0, ("p2", "rx_bytes"): 9}
    from testbed.portcounters import samples_of

    got = samples_of([SwitchPort("l", "s", 1, "vx12", "b"), SwitchPort("m", "s", 2, "p2", "b")], values, 5.0)
    assert [(s.ifname, s.rx_bytes, s.tx_bytes, s.server, s.t_s) for s in got] == [("vx12", 1500, 7, "b", 5.0)]


def test_each_server_is_read_by_one_request_per_sample_whatever_its_ports():
    plan = placed_plan()
    ifnames = {p.ifname: 1000 * (i + 1) for i, p in enumerate(switch_ports(plan))}
    a, b = FakeAgent("a", grep_answer(ifnames)), FakeAgent("b", grep_answer(ifnames))
    reading = read_ports(plan, {"a": a, "b": b})
    assert len(a.requests) == len(b.requests) == 1 and a.requests[0][:3] == ["grep", "-H", "."]
    assert len(a.requests[0]) == 3 + 3 * len(COUNTERS)  # dc1's three ports, every counter, in one command
    remote = [s for s in reading.samples if s.server != "local"]
    assert [(s.link, s.switch, s.server) for s in remote] == [
        ("local-worker-dc1", "dc1", "a"), ("local-worker-cloud", "cloud", "b"), ("ant1-dc1", "dc1", "a"),
        ("dc1-cloud", "dc1", "a"), ("dc1-cloud", "cloud", "b")]
    assert all(s.rx_bytes == s.tx_packets == ifnames[s.ifname] for s in remote)
    assert reading.unread == {}


def test_a_server_that_does_not_answer_is_named_and_the_others_kept():
    plan = placed_plan()
    ifnames = {p.ifname: 5 for p in switch_ports(plan)}
    reading = read_ports(plan, {"a": FakeAgent("a", grep_answer(ifnames)), "b": FakeAgent("b", None, fail=True)})
    assert set(reading.unread) == {"b"} and "server b" in reading.unread["b"]
    assert {s.server for s in reading.samples} == {"a"}  # this machine has no such interfaces: none read here
    line = counters_line(1.25, reading)
    assert line["t_ms"] == 1250.0 and line["unread"] == reading.unread
    assert line["ports"][0]["server"] == "a" and set(COUNTERS) <= set(line["ports"][0])
    assert "unread" not in counters_line(0.0, PortReading())


STAT = ("4242 (python3) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 12345 0 0\n"
        "77 (ovs-vswitchd) S 1 77 77 0 -1 4194624 100 0 0 0 1000 300 0 0 10 -10 9 0 500 0 0\n"
        "88 (a (odd) name) R 1 88 88 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 600 0 0\n")


def test_proc_stat_lines_give_user_plus_system_seconds():
    assert parse_proc_stats("100\n" + STAT) == {4242: ("python3", 3.0), 77: ("ovs-vswitchd", 13.0),
                                               88: ("a (odd) name", 0.1)}
    with pytest.raises(ValueError):
        parse_proc_stats(STAT)  # no clock tick first: not our script's answer


def test_a_servers_cpu_is_one_request_with_its_ovs_vswitchd_found_there():
    b = FakeAgent("b", lambda argv: "100\n" + STAT)
    got = remote_cpu(b, [("workers", "worker yolov3", 4242), ("wires", "wire-x", 5555)])
    assert len(b.requests) == 1 and b.requests[0][-2:] == ["4242", "5555"]
    assert [(r.label, r.group, r.cpu_s) for r in got] == [
        ("worker yolov3 (4242@b)", "workers", 3.0), ("ovs-vswitchd (77@b)", "ovs-vswitchd", 13.0)]  # 5555: gone


def test_remote_processes_are_listed_by_server_with_agents_and_keepers():
    a, b = FakeAgent("a", None), FakeAgent("b", None)
    b.hello = {"pid": 901}
    keeper_client = FakeAgent("b", None)
    keeper_client.hello = {"pid": 902}

    def proc(name: str, popen):  # noqa: ANN001, ANN202
        return SimpleNamespace(name=name, popen=popen)

    groups = {"workers": [proc("worker dc1", RemoteProc(a, 11, 0)), proc("worker cloud", RemoteProc(b, 12, 0)),
                          proc("worker ant1", subprocess.Popen(["true"]))],
              "schedulers": [proc("scheduler ant1", None)]}
    listed = remote_processes(groups, [("wire-dc1-cloud", RemoteProc(a, 13, 0))],
                              {"b": SimpleNamespace(pid=14, client=keeper_client)}, {"a": a, "b": b})
    groups["workers"][2].popen.wait()
    assert listed == {
        "a": [("workers", "worker dc1", 11), ("wires", "wire-dc1-cloud", 13), ("agent", "agent", 900)],
        "b": [("workers", "worker cloud", 12), ("agent", "agent", 901), ("keeper", "cores keeper", 14),
              ("agent", "cores agent", 902)]}


def snapshot(readings: list[ProcCpu], servers: list[str], unread: dict | None = None) -> CpuSnapshot:
    snap = CpuSnapshot(servers=servers, unread=unread or {})
    snap.add(readings)
    return snap


def test_cpu_json_on_one_machine_keeps_its_keys_and_adds_local_alone(tmp_path):
    before = snapshot([ProcCpu("workers", "worker a", 10, 1.0), ProcCpu("ovs-vswitchd", "ovs-vswitchd", 3, 5.0)],
                      ["local"])
    after = snapshot([ProcCpu("workers", "worker a", 10, 3.5), ProcCpu("ovs-vswitchd", "ovs-vswitchd", 3, 6.25),
                      ProcCpu("schedulers", "scheduler x", 11, 0.5)], ["local"])
    groups = write_cpu(tmp_path / "cpu.json", before, after, 9.876)
    record = json.loads((tmp_path / "cpu.json").read_text())
    assert groups == record["groups_cpu_s"] == {"workers": 2.5, "ovs-vswitchd": 1.25, "schedulers": 0.5}
    assert record["traffic_wall_s"] == 9.88
    assert record["processes_cpu_s"] == {"worker a (10)": 2.5, "ovs-vswitchd (3)": 1.25, "scheduler x (11)": 0.5}
    assert record["servers"] == {"local": {"groups_cpu_s": groups, "processes_cpu_s": record["processes_cpu_s"]}}
    assert cpu_by_server(tmp_path / "cpu.json", {"ant1": {"cpu_s": 2.0}}, {}) == {}  # one server: no breakdown


def test_cpu_json_across_servers_per_server_and_summed(tmp_path):
    before = snapshot([ProcCpu("workers", "worker a", 10, 1.0), ProcCpu("workers", "worker c", 10, 2.0, "b"),
                       ProcCpu("ovs-vswitchd", "ovs-vswitchd", 77, 1.0, "b")], ["local", "a", "b"])
    after = snapshot([ProcCpu("workers", "worker a", 10, 2.0), ProcCpu("workers", "worker c", 10, 4.0, "b"),
                      ProcCpu("ovs-vswitchd", "ovs-vswitchd", 77, 1.5, "b")], ["local", "a", "b"],
                     {"a": "server a: agent connection closed"})
    record = cpu_record(before, after, 5.0)
    assert record["groups_cpu_s"] == {"workers": 3.0, "ovs-vswitchd": 0.5}
    assert record["processes_cpu_s"] == {"worker a (10)": 1.0, "worker c (10@b)": 2.0, "ovs-vswitchd (77@b)": 0.5}
    assert record["servers"] == {
        "local": {"groups_cpu_s": {"workers": 1.0}, "processes_cpu_s": {"worker a (10)": 1.0}},
        "a": {"groups_cpu_s": {}, "processes_cpu_s": {}, "unread": "server a: agent connection closed"},
        "b": {"groups_cpu_s": {"workers": 2.0, "ovs-vswitchd": 0.5},
              "processes_cpu_s": {"worker c (10)": 2.0, "ovs-vswitchd (77)": 0.5}}}
    (tmp_path / "cpu.json").write_text(json.dumps(record))
    network = {"servers": {"a": {"sites": ["ant1", "dc1"]}, "b": {"sites": ["cloud"]}}}
    assert cpu_by_server(tmp_path / "cpu.json", {"ant1": {"cpu_s": 0.75}}, network) == {
        "local": {"workers": 1.0}, "a": {"sources": 0.75}, "b": {"workers": 2.0, "ovs-vswitchd": 0.5}}


# -- root: a run across the driver and two fixture servers ----------------------------------------------------------

@pytest.fixture(scope="module")
def split(farm, trace, runs) -> Path:  # noqa: F811 (fixtures)
    """tiny with ant1 here, dc1 on server a and the cloud on b."""
    out = runs / "split"
    a, b = farm.get("a").addr, farm.get("b").addr
    done = run(live(trace, out, "--servers", f"local,a=root@{a},b=root@{b}", "--place", "dc1=a,cloud=b",
                    "--ssh-options", shlex.join(farm.ssh_options())))
    assert done.returncode == 0, done.stdout + done.stderr
    print("\n".join(line for line in done.stdout.splitlines() if "CPU seconds" in line or line.startswith("  on ")))
    return out


def _port(line: dict, link: str, switch: str) -> dict:
    return next(p for p in line["ports"] if p["link"] == link and p["switch"] == switch)


@root_only[0]
@root_only[1]
def test_port_counters_of_every_server_count_the_traffic(split):
    lines = [json.loads(x) for x in (split / PORT_COUNTERS_FILE).read_text().splitlines()]
    assert len(lines) >= 5 and not any("unread" in x for x in lines)
    network = json.loads((split / "network.json").read_text())
    where = {s["site"]: s["server"] for s in network["switches"]}
    assert where == {"ant1": "local", "dc1": "a", "cloud": "b"}
    for line in lines:  # every port of every switch in every sample, named by its switch's server
        assert sorted((p["switch"], p["port_no"], p["server"]) for p in line["ports"]) == sorted(
            [("ant1", n, "local") for n in (1, 2, 3, 4)] + [("dc1", n, "a") for n in (1, 2, 3)]
            + [("cloud", n, "b") for n in (1, 2)])
    first, last = lines[0], lines[-1]
    with (split / "records.csv").open() as f:
        cloud = sum(1 for r in csv.DictReader(f) if r["cluster"] == "cloud")
    into_cloud = _port(last, "dc1-cloud", "cloud")["rx_bytes"] - _port(first, "dc1-cloud", "cloud")["rx_bytes"]
    out_ant1 = _port(last, "ant1-dc1", "ant1")["tx_bytes"] - _port(first, "ant1-dc1", "ant1")["tx_bytes"]
    into_dc1 = _port(last, "ant1-dc1", "dc1")["rx_bytes"] - _port(first, "ant1-dc1", "dc1")["rx_bytes"]
    spread_ms = max(1000 * (max(p["t_s"] for p in x["ports"]) - min(p["t_s"] for p in x["ports"])) for x in lines)
    print(f"{cloud} queries served at the cloud; bytes into the cloud's switch (server b) on dc1-cloud {into_cloud}, "
          f"ant1-dc1 out of ant1 (here) {out_ant1}, into dc1 (server a) {into_dc1}; a sample's ports read within "
          f"{spread_ms:.1f} ms")
    assert cloud > 0 and into_cloud >= 0.5 * cloud * FRAME_BYTES  # a switch on b, its counters through b's agent
    assert abs(into_dc1 - out_ant1) <= 0.25 * out_ant1  # the two ends of one link: one read here, one on a


@root_only[0]
@root_only[1]
def test_cpu_json_holds_every_servers_processes(split):
    record = json.loads((split / "cpu.json").read_text())
    servers = record["servers"]
    assert set(servers) == {"local", "a", "b"} and not any("unread" in s for s in servers.values())
    for name in ("a", "b"):
        groups = servers[name]["groups_cpu_s"]
        assert {"workers", "agent", "keeper", "ovs-vswitchd"} <= set(groups), (name, groups)
        assert sum(groups.values()) > 0, (name, groups)
    assert "wires" in servers["a"]["groups_cpu_s"]  # dc1-cloud's wire runs on dc1's server
    assert {"controller", "orchestrator", "ovs-vswitchd", "schedulers", "wires"} <= set(servers["local"]["groups_cpu_s"])
    labels = list(record["processes_cpu_s"])
    assert any(k.startswith("worker tiny-yolov2") and k.endswith("@a)") for k in labels), labels
    assert any(k.startswith("worker yolov3") and k.endswith("@b)") for k in labels), labels
    for group, total in record["groups_cpu_s"].items():  # the top level sums every server's
        assert abs(total - sum(s["groups_cpu_s"].get(group, 0.0) for s in servers.values())) <= 0.05, group
    own = os.readlink("/proc/self/ns/pid")  # the fixture servers' ovs-vswitchd are theirs, not this machine's
    for label in servers["local"]["processes_cpu_s"]:
        if label.startswith("ovs-vswitchd ("):
            pid = label.split("(")[1].rstrip(")")
            assert not Path(f"/proc/{pid}").exists() or os.readlink(f"/proc/{pid}/ns/pid") == own, label
    summary = json.loads((split / "summary.json").read_text())["extra"]
    by_server = summary["cpu_s_by_server"]
    assert set(by_server) == {"local", "a", "b"} and by_server["local"]["sources"] == summary["cpu_s"]["sources"]
    print("cpu.json per server: " + "; ".join(f"{n}: {s['groups_cpu_s']}" for n, s in servers.items()))


@root_only[0]
@root_only[1]
def test_a_remote_read_is_the_servers_own_counters_in_one_request(farm):  # noqa: F811 (fixture)
    """Server a's eth0 (its underlay end) read through its agent lies between two reads made there directly; what
    one request costs for one port and for 32 (the command lists 4 files per port) against a request per file."""
    def direct() -> int:
        return int(farm.inside("a", ["cat", "/sys/class/net/eth0/statistics/rx_bytes"]).stdout)

    with AgentClient(farm.record("a")) as client:
        lo = direct()
        got = read_on(client, [SwitchPort("underlay", "a", 1, "eth0", "a")])
        hi = direct()
        assert len(got) == 1 and got[0].server == "a" and lo <= got[0].rx_bytes <= hi
        timings = {}
        for n in (1, 32):
            ports = [SwitchPort(f"l{i}", "a", i, "eth0", "a") for i in range(n)]
            t = time.perf_counter()
            for _i in range(10):
                read_on(client, ports)
            timings[f"one request, {n} port(s)"] = (time.perf_counter() - t) / 10 * 1000
        t = time.perf_counter()
        for _i in range(10):
            for c in COUNTERS * 32:
                client.read(f"/sys/class/net/eth0/statistics/{c}")
        timings["a request per file, 32 ports"] = (time.perf_counter() - t) / 10 * 1000
    print("; ".join(f"{k}: {v:.1f} ms" for k, v in timings.items()), file=sys.stderr)

