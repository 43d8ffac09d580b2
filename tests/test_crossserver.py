"""The cross-server link's arithmetic, worked out by hand: VNIs, the exact vxlan lines, MTU and delay refusals;
and the server record's parser."""

from __future__ import annotations

import pytest

from testbed.agent import Server
from testbed.crossserver import (
    CrossLink,
    check_mtu,
    device_name,
    max_emulated_mtu,
    vni,
    vxlan_add_lines,
    wire_delay_ms,
)
from testbed.errors import PreflightError

RUN = "20261202-065100-tiny"
# sha256(RUN) begins be 4b 8b: the run's base is 0xbe4b8b = 12471179, its first VNI 1 + 12471179.
BASE = 0xBE4B8B
LINK = CrossLink(name="ant1-dc1", index=3, server_a="a", server_b="b", addr_a="192.168.77.1",
                 addr_b="192.168.77.2", dev_a="eth0", dev_b="enp1s0")


def test_vni_is_the_runs_base_plus_the_link_index_wrapped_into_24_bits():
    assert vni(RUN, 0) == 1 + BASE == 12471180
    assert vni(RUN, 3) == 12471183
    assert vni(RUN, (1 << 24) - 1 - BASE) == 1  # (base + index) = 2^24 - 1 wraps to 0: VNI 1, never 0
    assert vni(RUN, (1 << 24) - 2 - BASE) == (1 << 24) - 1  # the largest VNI
    assert vni("x", 0) == 1 + 0x2D7116  # sha256("x") begins 2d 71 16
    assert len({vni(RUN, i) for i in range(1000)}) == 1000
    with pytest.raises(ValueError, match="link index -1"):
        vni(RUN, -1)


def test_each_side_names_the_other_as_remote_with_the_same_vni_and_port():
    lines = vxlan_add_lines(LINK, RUN)
    assert lines == {
        "a": "link add vx12471183 type vxlan id 12471183 local 192.168.77.1 remote 192.168.77.2 dstport 4789 dev eth0",
        "b": "link add vx12471183 type vxlan id 12471183 local 192.168.77.2 remote 192.168.77.1 dstport 4789 "
             "dev enp1s0",
    }
    assert len(device_name((1 << 24) - 1)) <= 15  # Linux's limit on interface names


def test_mixed_address_families_are_refused_and_one_server_needs_no_tunnel():
    mixed = CrossLink("x-y", 0, "a", "b", "192.168.77.1", "fd00::2", "eth0", "eth0")
    with pytest.raises(PreflightError, match=r"link x-y: servers a \(192.168.77.1\) and b \(fd00::2\)"):
        vxlan_add_lines(mixed, RUN)
    with pytest.raises(ValueError, match="both ends on server a"):
        vxlan_add_lines(CrossLink("x-y", 0, "a", "a", "10.0.0.1", "10.0.0.1", "eth0", "eth0"), RUN)


def test_emulated_mtu_is_the_underlays_less_50_over_ipv4_and_70_over_ipv6():
    assert max_emulated_mtu(1500, "192.168.77.1") == 1450
    assert max_emulated_mtu(9000, "10.0.0.1") == 8950
    assert max_emulated_mtu(1500, "fd00::1") == 1430
    assert max_emulated_mtu(9000, "fd00::1") == 8930


def test_an_mtu_above_the_underlays_is_refused_naming_link_servers_and_the_fix():
    check_mtu(LINK, 1450, 1500, 1500)  # fits exactly
    check_mtu(LINK, 8950, 9000, 9000)
    with pytest.raises(PreflightError) as e:
        check_mtu(LINK, 9000, 9000, 1500)  # the smaller underlay decides
    assert str(e.value) == ("link ant1-dc1 crosses servers a and b over an underlay of MTU 1500: --mtu 9000 needs "
                            "an underlay of 9050; use --mtu 1450 or raise the underlay MTU")
    with pytest.raises(PreflightError, match="--mtu 1451 needs an underlay of 1501; use --mtu 1450"):
        check_mtu(LINK, 1451, 1500, 1500)


def test_the_wire_gets_the_links_delay_less_the_underlays_and_a_shorter_link_is_refused():
    assert wire_delay_ms(LINK, 5.0, 0.25) == 4.75
    assert wire_delay_ms(LINK, 0.25, 0.25) == 0.0
    with pytest.raises(PreflightError) as e:
        wire_delay_ms(LINK, 0.1, 0.4)
    assert str(e.value) == ("link ant1-dc1 (0.1 ms) is shorter than the underlay between servers a and b "
                            "(0.400 ms one way, RTT/2); place both ends on one server or lengthen the link")


def test_a_server_is_written_name_equals_ssh_destination():
    assert Server.parse("gpu=root@10.1.0.7:2222") == Server(name="gpu", dest="root@10.1.0.7", port=2222)
    assert Server.parse("b=edge@host-b") == Server(name="b", dest="edge@host-b", port=22)
    for bad in ("root@10.1.0.7", "gpu=", "1x=root@h", "gpu=root@h:port"):
        with pytest.raises(ValueError, match="expected name=user@host"):
            Server.parse(bad)
    argv = Server("b", "root@h", 2222, ssh_options=("-i", "k")).ssh_argv("true")
    assert argv == ["ssh", "-T", "-p", "2222", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
                    "-o", "ServerAliveCountMax=3", "-i", "k", "root@h", "true"]
