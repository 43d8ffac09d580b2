"""Network events on a network split over two fixture servers (tests/servers.py: each its own namespaces, Open
vSwitch and sshd): tiny with ant1 and dc1 on server a and the cloud on b, the driver holding none, so every wire runs
on another server and is reshaped through that server's agent. A new delay on ant1-dc1 (its wire on a) and on the
crossing link dc1-cloud (a wire plus the underlay) is measured by ping, the crossing link's new rate is read back
from its ends' TBF on both servers, it goes down and comes back; a wire that does not answer its SIGHUP gives one
error naming it, its server and its log's tail, and the old shape is put back (the wire runs it once woken); an event
below the crossing link's underlay is refused, by the check right after bring-up too."""

from __future__ import annotations

import json
import os
import re
import statistics
import time

import pytest
from servers import ServerSpec, running
from test_multihost_net import PLACE

from testbed import links
from testbed.errors import NetworkError, PreflightError
from testbed.events import apply_link_event, check_events, link_states
from testbed.network import EmulatedNetwork, Host
from testbed.placement import parse_place, parse_servers
from topologies.events import LinkEvent, NetworkEvents

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

RTT_TOLERANCE_MS = 2.5
"""|median ping RTT - twice the configured one-way delay| allowed (as tests/test_net_events.py on one server)."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with running([ServerSpec("a"), ServerSpec("b")], tmp_path_factory.mktemp("farm")) as f:
        yield f


@pytest.fixture(scope="module")
def split(farm, tmp_path_factory):
    servers = parse_servers(f"a=root@{farm.get('a').addr},b=root@{farm.get('b').addr}", farm.ssh_options())
    placement = parse_place(PLACE, ["ant1", "dc1", "cloud"], servers)
    run_dir = tmp_path_factory.mktemp("split-events") / "run"
    with EmulatedNetwork("tiny", run_dir=run_dir, log=lambda _: None, controller="none", mtu=1450,
                         placement=placement) as net:
        yield net
    assert farm.leftovers_on("a") == [] and farm.leftovers_on("b") == []


def rtts_ms(farm, src: Host, dst: Host, count: int = 10) -> list[float]:
    """Returns the round-trip times ping measured from src's namespace on its server (none: nothing came back)."""
    out = farm.inside(src.plan.server, ["ip", "netns", "exec", src.netns, "ping", "-n", "-c", str(count), "-i", "0.05",
                                        "-W", "1", dst.ip], check=False).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def median_rtt_ms(farm, src: Host, dst: Host) -> float:
    got = rtts_ms(farm, src, dst)
    assert got, f"no answer from {dst.name}"
    return statistics.median(got)


def wire_of(net: EmulatedNetwork, name: str) -> links.WireLink:
    link = next(lk for lk in net.mn.links if getattr(lk, "link_name", None) == name)
    assert isinstance(link, links.WireLink) and link.proc is not None and link.proc.stdout is None  # on a server
    return link


def test_events_reshape_wires_on_other_servers_and_the_change_is_measured(farm, split) -> None:
    ant, dc, cloud = (split.host_for("worker", s) for s in ("ant1", "dc1", "cloud"))
    assert (ant.plan.server, dc.plan.server, cloud.plan.server) == ("a", "a", "b")
    assert isinstance(wire_of(split, "dc1-cloud"), links.CrossServerLink)
    before = {"ant1-dc1": median_rtt_ms(farm, ant, dc), "dc1-cloud": median_rtt_ms(farm, dc, cloud)}
    assert abs(before["ant1-dc1"] - 2 * 5.0) < RTT_TOLERANCE_MS and abs(before["dc1-cloud"] - 2 * 20.0) < RTT_TOLERANCE_MS

    done = apply_link_event(split, LinkEvent(at_s=0.0, link="ant1-dc1", key="events[0]", delay_ms=25.0))
    assert set(done) == {"link", "delay_ms", "apply_ms"} and done["delay_ms"] == 25.0  # as on one server
    crossing = apply_link_event(split, LinkEvent(at_s=1.0, link="dc1-cloud", key="events[1]", delay_ms=35.0,
                                                 bw_mbps=50.0))
    after = {"ant1-dc1": median_rtt_ms(farm, ant, dc), "dc1-cloud": median_rtt_ms(farm, dc, cloud)}
    print(f"ping RTT before -> after: ant1-dc1 {before['ant1-dc1']:.2f} -> {after['ant1-dc1']:.2f} ms (5 -> 25 ms "
          f"one way), dc1-cloud {before['dc1-cloud']:.2f} -> {after['dc1-cloud']:.2f} ms (20 -> 35); applied in "
          f"{done['apply_ms']} and {crossing['apply_ms']} ms")
    # the change against the link's own before: what every round trip pays beside the links' delays (two userspace
    # switches each way, the underlay, ping) is in both and cancels; the assertion on `before` above bounds it
    assert abs(after["ant1-dc1"] - before["ant1-dc1"] - 2 * (25.0 - 5.0)) < RTT_TOLERANCE_MS, (before, after)
    assert abs(after["dc1-cloud"] - before["dc1-cloud"] - 2 * (35.0 - 20.0)) < RTT_TOLERANCE_MS, (before, after)
    assert split.mn.shaping_problems() == []  # the ends' TBF on a and b at 50 Mbit/s, as the link's shape now says
    assert wire_of(split, "dc1-cloud").shape.bw_mbps == 50.0

    apply_link_event(split, LinkEvent(at_s=2.0, link="dc1-cloud", key="events[2]", state="down"))
    assert link_states(split, "dc1-cloud") == ["DOWN", "DOWN"]  # a's switch port, b's VXLAN port
    assert rtts_ms(farm, dc, cloud, count=5) == []
    apply_link_event(split, LinkEvent(at_s=3.0, link="dc1-cloud", key="events[3]", state="up"))
    assert link_states(split, "dc1-cloud") == ["UP", "UNKNOWN"]  # a VXLAN device has no carrier: up is UNKNOWN
    assert abs(median_rtt_ms(farm, dc, cloud) - after["dc1-cloud"]) < RTT_TOLERANCE_MS  # back with the shape it had


def test_a_wire_that_does_not_answer_its_sighup_gives_an_error_naming_it_its_server_and_its_log(
        farm, split, monkeypatch) -> None:
    wire = wire_of(split, "ant1-dc1")
    apply_link_event(split, LinkEvent(at_s=0.0, link="ant1-dc1", key="events[0]", delay_ms=15.0))  # its log: reshaped
    proc, client, taken = wire.proc, wire.client, wire.generation  # its config's generation: it said so
    assert client is not None and proc is not None
    monkeypatch.setattr(links, "WIRE_RESHAPE_S", 1.0)
    assert client.kill(proc.pid, proc.start_ticks, "SIGSTOP")  # type: ignore[attr-defined]
    try:
        with pytest.raises(NetworkError) as err:  # the earlier `reshaped` lines in its log do not answer this one
            apply_link_event(split, LinkEvent(at_s=1.0, link="ant1-dc1", key="events[1]", delay_ms=8.0, bw_mbps=7.0))
    finally:
        client.kill(proc.pid, proc.start_ticks, "SIGCONT")  # type: ignore[attr-defined]
    lines = str(err.value).splitlines()
    assert lines[0] == (f"wire-ant1-dc1 on server a did not take its new shape: it did not say reshaped within 1 s; "
                        f"see {wire.log_path} there:")
    assert lines[1] == "ready" and lines[-2] == f"reshaped {taken}"  # the log's tail, from server a
    assert lines[-1] == "ant1-dc1 is back to its old shape (its ends' TBF and its wire's config)"
    # the old shape put back on server a: the wire's config there, the ends' TBF, the link's record
    config = json.loads(client.read_all(str(wire.config_path)))
    assert config[0]["shape"]["delay_ms"] == 15.0 and wire.shape.delay_ms == 15.0
    assert split.mn.shaping_problems() == []
    # woken up, it takes the SIGHUP it missed, with the old config: the link runs at 15 ms, not the refused 8
    deadline = time.monotonic() + 10
    while not links.said_reshaped(client.read_all(str(wire.log_path)), taken + 2):  # the restore's (+1: refused)
        assert time.monotonic() < deadline, "the woken wire never took its SIGHUP"
        time.sleep(0.05)
    ant, dc = split.host_for("worker", "ant1"), split.host_for("worker", "dc1")
    woken = median_rtt_ms(farm, ant, dc)
    print(f"ping RTT over ant1-dc1 once the stopped wire is woken: {woken:.2f} ms (old shape 15 ms one way)")
    assert abs(woken - 2 * 15.0) < RTT_TOLERANCE_MS
    # the next event is answered by its own line
    apply_link_event(split, LinkEvent(at_s=2.0, link="ant1-dc1", key="events[2]", delay_ms=5.0))
    assert abs(median_rtt_ms(farm, ant, dc) - 2 * 5.0) < RTT_TOLERANCE_MS


def test_a_crossing_link_cannot_be_made_shorter_than_its_underlay(split) -> None:
    wire = wire_of(split, "dc1-cloud")
    assert isinstance(wire, links.CrossServerLink) and 0 < wire.underlay_ms < 1.0  # the fixture's bridge: ~0.05 ms
    shape = wire.shape
    with pytest.raises(NetworkError, match=r"^link dc1-cloud: 0 ms is shorter than the underlay between its servers"):
        apply_link_event(split, LinkEvent(at_s=0.0, link="dc1-cloud", key="events[0]", delay_ms=0.0))
    assert wire.shape == shape and split.mn.shaping_problems() == []  # nothing changed
    # and the check right after bring-up (live run, `net --events`) refuses it before any event applies
    events = NetworkEvents("ev.yaml", "", (LinkEvent(at_s=1.0, link="dc1-cloud", key="events[0]", bw_mbps=50.0),
                                           LinkEvent(at_s=2.0, link="dc1-cloud", key="events[1]", delay_ms=0.0)))
    with pytest.raises(PreflightError, match=r"^ev\.yaml: events\[1\] \(at 2 s\): link dc1-cloud: 0 ms is shorter "):
        check_events(split, events)
    check_events(split, NetworkEvents("ev.yaml", "", events.events[:1]))
    assert wire.shape == shape and split.mn.shaping_problems() == []
