"""The tc commands of the netem backend, run for real: applied where netem exists, parsed where not."""

from __future__ import annotations

import os

import pytest

from testbed import sh
from testbed.shaping import netem_commands, probe_netem, rate_commands
from topologies import LinkShape

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture
def scratch_veth():
    ns = f"tbtest-shaping-{os.getpid()}"
    sh.run(["ip", "netns", "add", ns])
    try:
        sh.run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        yield ns
    finally:
        sh.run(["ip", "netns", "delete", ns])


def test_netem_commands_apply_or_fail_only_for_the_missing_qdisc(scratch_veth) -> None:
    netem_ok, _ = probe_netem(f"tbtest-probe-{os.getpid()}")
    tbf, netem = netem_commands("p0", LinkShape(delay_ms=5, delay_dev_ms=1, bw_mbps=100, loss_pct=2))
    sh.run(sh.in_netns(scratch_veth, tbf))
    done = sh.run(sh.in_netns(scratch_veth, netem), check=False)
    shown = sh.run(sh.in_netns(scratch_veth, ["tc", "qdisc", "show", "dev", "p0"])).stdout
    assert "tbf 1: root" in shown and "rate 100Mbit" in shown
    if netem_ok:
        assert done.returncode == 0 and "netem 10: parent 1:1" in shown and "loss 2%" in shown
    else:  # tc parsed every option and only the kernel refused: the syntax is right
        assert done.returncode != 0 and "Specified qdisc kind is unknown" in done.stderr


def test_rate_commands_shape_a_veth(scratch_veth) -> None:
    for cmd in rate_commands("p1", LinkShape(delay_ms=1, bw_mbps=40)):
        sh.run(sh.in_netns(scratch_veth, cmd))
    shown = sh.run(sh.in_netns(scratch_veth, ["tc", "qdisc", "show", "dev", "p1"])).stdout
    assert "rate 40Mbit" in shown and "lat 50ms" in shown
