"""A link between two fixture servers as testbed.crossserver plans it: a VXLAN device on each server's underlay,
the wire in front of it on one side and the server's own Open vSwitch on the other; the round trip is twice the
link's delay, the devices take the underlay's MTU less 50, and a frame above that is lost."""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import pytest
from servers import ServerSpec, running

from testbed.agent import REPO, AgentClient
from testbed.crossserver import CrossLink, device_name, max_emulated_mtu, vni, vxlan_add_lines, wire_delay_ms
from testbed.serverchecks import underlay_rtt_ms

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

RUN = "test-multihost-vxlan"
DELAY_MS = 10.0
OFFLOADS = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]


def link_over(farm) -> CrossLink:
    a, b = farm.get("a"), farm.get("b")
    return CrossLink("ant1-dc1", 0, "a", "b", a.addr, b.addr, "eth0", "eth0")


def add_tunnel_end(client: AgentClient, line: str) -> str:
    client.run(["ip", "-batch", "-"], input_text=line + "\n")
    dev = line.split()[2]
    client.run(["ip", "link", "set", dev, "up"])
    return dev


def add_host(client: AgentClient, addr: str, mtu: int, outer: str) -> None:
    """A namespace `h` with eth0 (addr/24, mtu) whose veth peer `outer` stays in the server's namespace."""
    client.run(["ip", "netns", "add", "h"])
    client.run(["ip", "link", "add", outer, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0", "mtu",
                str(mtu), "netns", "h"])
    client.run(["ip", "-n", "h", "addr", "add", f"{addr}/24", "dev", "eth0"])
    for argv in (["ip", "-n", "h", "link", "set", "eth0", "up"], ["ip", "link", "set", outer, "up"],
                 ["ip", "netns", "exec", "h", "ethtool", "-K", "eth0", *OFFLOADS], ["ethtool", "-K", outer, *OFFLOADS]):
        client.run(argv)


def ping_ms(client: AgentClient, *args: str) -> tuple[list[float], str]:
    done = client.run(["ip", "netns", "exec", "h", "ping", *args, "10.9.0.2"], check=False, timeout_s=30)
    return [float(t) for t in re.findall(r"time=([\d.]+) ms", done.stdout)], done.stdout + done.stderr


def test_a_crossing_link_is_twice_its_delay_round_trip_and_drops_frames_above_its_mtu(tmp_path):
    with running([ServerSpec("a"), ServerSpec("b")], tmp_path) as farm:
        link = link_over(farm)
        lines = vxlan_add_lines(link, RUN)
        a, b = AgentClient(farm.record("a")), AgentClient(farm.record("b"))
        try:
            dev = add_tunnel_end(a, lines["a"])
            assert add_tunnel_end(b, lines["b"]) == dev == device_name(vni(RUN, 0))
            info = json.loads(b.run(["ip", "-d", "-j", "link", "show", dev]).stdout)[0]
            data = info["linkinfo"]["info_data"]
            assert (data["id"], data["local"], data["remote"], data["port"]) == (vni(RUN, 0), link.addr_b,
                                                                                  link.addr_a, 4789)
            assert info["mtu"] == max_emulated_mtu(1500, link.addr_a) == 1450  # Linux's own figure agrees
            for c in (a, b):
                c.run(["ethtool", "-K", dev, *OFFLOADS])
            # Both hosts at 1500, above what the tunnel carries: small frames cross, full-size ones cannot.
            add_host(a, "10.9.0.1", 1500, "wpi")
            add_host(b, "10.9.0.2", 1500, "hb")
            b.run(["ovs-vsctl", "add-br", "brb", "--", "set", "bridge", "brb", "datapath_type=netdev",
                   "fail_mode=standalone", "--", "add-port", "brb", dev, "--", "add-port", "brb", "hb"])
            b.run(["ip", "link", "set", "brb", "up"])
            rtt = underlay_rtt_ms(a, link.addr_b)
            assert rtt is not None
            delay_ms = wire_delay_ms(link, DELAY_MS, rtt / 2)
            cfg, stats, log = (str(Path(farm.dir) / "a" / n) for n in ("wire.json", "wire.stats.json", "wire.log"))
            shape = {"delay_ms": delay_ms, "delay_dev_ms": 0.0, "bw_mbps": 1000.0, "loss_pct": 0.0}
            a.write(cfg, json.dumps([{"name": link.name, "if_a": "wpi", "if_b": dev, "shape": shape, "seed": 1}])
                    .encode())
            pid, ticks = a.spawn([".venv/bin/python", "-m", "testbed.wire", cfg, stats], log=log, cwd=str(REPO))
            for _ in range(200):
                if b"ready" in a.read(log):
                    break
                time.sleep(0.05)
            assert b"ready" in a.read(log), a.read(log).decode()

            times, out = ping_ms(a, "-c", "21", "-i", "0.1")
            assert len(times) == 21, out
            median = statistics.median(times[1:])  # the first also waits for ARP and OVS's flow set-up
            print(f"underlay RTT {rtt:.3f} ms, wire {delay_ms:.3f} ms per way, RTT median {median:.3f} ms "
                  f"(min {min(times):.3f}, max {max(times):.3f}) for 2 x {DELAY_MS:g} ms")
            # Each direction holds frames at least the wire's delay plus the underlay's share; a busy 2-core
            # machine adds userspace OVS's forwarding on b (tenths of a ms); a missing or doubled leg is far out.
            assert 2 * DELAY_MS - 0.1 <= median <= 2 * DELAY_MS + 2.6, (times, rtt)

            # The far side's rate: a TBF on the vxlan device that is b's OVS port (after add-port, which clears
            # qdiscs) shapes what b's userspace OVS sends towards a.
            b.run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", "10mbit", "burst", "3000",
                   "latency", "50ms"])
            fits, out = ping_ms(a, "-M", "do", "-s", "1422", "-c", "2", "-i", "0.1")  # 1450-byte IP packet
            assert len(fits) == 2, out
            tbf = json.loads(b.run(["tc", "-s", "-j", "qdisc", "show", "dev", dev]).stdout)[0]
            assert tbf["kind"] == "tbf" and tbf["packets"] >= 2 and tbf["bytes"] >= 2 * 1450
            lost, out = ping_ms(a, "-M", "do", "-s", "1472", "-c", "3", "-i", "0.1", "-W", "1")  # 1500 bytes
            assert lost == [] and "100% packet loss" in out, out
            assert a.kill(pid, ticks)
            for _ in range(100):
                if a.poll(pid) is not None:
                    break
                time.sleep(0.05)
            got = {s["direction"]: s for s in json.loads(a.read(stats))}
            assert got["a->b"]["dropped_send"] == 3  # the vxlan device refused the three full-size frames
            assert got["b->a"]["dropped_send"] == 0
        finally:
            a.close()
            b.close()
        for name in ("a", "b"):  # what the test made is still there: stop() must take it
            assert farm.leftovers_on(name) != []


def test_the_tunnel_takes_a_9000_byte_underlay_less_50(tmp_path):
    with running([ServerSpec("a"), ServerSpec("b")], tmp_path, mtu=9000) as farm:
        lines = vxlan_add_lines(link_over(farm), RUN)
        with AgentClient(farm.record("a")) as a, AgentClient(farm.record("b")) as b:
            dev = add_tunnel_end(a, lines["a"])
            add_tunnel_end(b, lines["b"])
            assert json.loads(a.run(["ip", "-j", "link", "show", dev]).stdout)[0]["mtu"] == 8950
            assert max_emulated_mtu(9000, farm.get("a").addr) == 8950
            a.run(["ip", "addr", "add", "10.8.0.1/24", "dev", dev])
            b.run(["ip", "addr", "add", "10.8.0.2/24", "dev", dev])
            ok = a.run(["ping", "-M", "do", "-s", str(8950 - 28), "-c", "2", "-i", "0.1", "-W", "2", "10.8.0.2"],
                       check=False)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            big = a.run(["ping", "-M", "do", "-s", str(8950 - 27), "-c", "1", "10.8.0.2"], check=False)
            assert big.returncode != 0 and "mtu=8950" in big.stdout + big.stderr
