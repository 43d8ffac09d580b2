"""Mininet's own network spread over two fixture servers through testbed/remote.py: a host and an Open vSwitch
switch on each server, reached through the project's ssh without sudo, the switches joined by the VXLAN tunnel
testbed.crossserver plans; the servers hold everything, the driver nothing, and nothing is left after stop."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest
from servers import ServerSpec, running

from testbed.crossserver import CrossLink, vxlan_add_lines
from testbed.remote import RemoteLink, ServerHost, ServerOVSSwitch

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def test_a_mininet_network_across_two_servers_pings_and_leaves_nothing(tmp_path):
    from mininet.net import Mininet

    control_dir = tempfile.mkdtemp(prefix="mhcm", dir="/tmp")  # short: a ControlPath must fit in 108 bytes
    with running([ServerSpec("a"), ServerSpec("b")], tmp_path) as farm:
        a, b = farm.record("a"), farm.record("b")
        net = Mininet(topo=None, build=False, controller=None, host=ServerHost, switch=ServerOVSSwitch,
                      link=RemoteLink)
        h1 = net.addHost("h1", on=a, control_dir=control_dir, ip="10.8.0.1/24")
        h2 = net.addHost("h2", on=b, control_dir=control_dir, ip="10.8.0.2/24")
        s1 = net.addSwitch("s1", on=a, control_dir=control_dir, datapath="user", failMode="standalone")
        s2 = net.addSwitch("s2", on=b, control_dir=control_dir, datapath="user", failMode="standalone")
        net.addLink(h1, s1)
        net.addLink(h2, s2)
        try:
            net.build()
            net.start()
            link = CrossLink("s1-s2", 0, "a", "b", farm.get("a").addr, farm.get("b").addr, "eth0", "eth0")
            lines = vxlan_add_lines(link, "test-multihost-mininet")
            for sw, server in ((s1, "a"), (s2, "b")):
                dev = lines[server].split()[2]
                assert sw.rcmd(f"ip {lines[server]} && ip link set {dev} up && ovs-vsctl add-port {sw.name} {dev}"
                               f" && echo done").strip() == "done"
            for h in (h1, h2):
                h.cmd(f"ip link set {h.name}-eth0 mtu 1450")
            out = h1.cmd("ping -c 3 -i 0.2 -W 2 10.8.0.2")
            assert " 0% packet loss" in out, out
            # h1's shell is a process of server a (its own PID numbering), s1 a bridge of a's Open vSwitch only
            assert farm.inside("a", ["cat", f"/proc/{h1.pid}/comm"]).stdout.strip() == "bash"
            assert re.search(r"dpid:0+1\b", s1.dpctl("show"))
            assert farm.inside("a", ["ovs-vsctl", "list-br"]).stdout.split() == ["s1"]
            assert farm.inside("b", ["ovs-vsctl", "list-br"]).stdout.split() == ["s2"]
            assert subprocess.run(["ovs-vsctl", "br-exists", "s1"]).returncode == 2  # the system's OVS
        finally:
            net.stop()
            for sw, server in ((s1, "a"), (s2, "b")):
                sw.rcmd(f"ip link del {lines[server].split()[2]}")
        assert farm.leftovers_on("a") == [] and farm.leftovers_on("b") == []
    shutil.rmtree(control_dir)
