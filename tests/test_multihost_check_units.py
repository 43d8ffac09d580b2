"""Checks of a multi-host run without a network or a server: an events file whose event a crossing link cannot take
(a delay below its underlay's) is refused in one line naming the file, the event and the link, before any event
applies; a failed key login's hint names the fix for what ssh said (an unknown host key, or no key it takes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from testbed.agent import Server
from testbed.errors import PreflightError
from testbed.events import check_events
from testbed.links import CrossServerLink, WireLink
from testbed.serverchecks import login_hint
from topologies import LinkShape
from topologies.events import LinkEvent, NetworkEvents


def _net(underlay_ms: float = 0.5):  # noqa: ANN202 (what check_events reads of an EmulatedNetwork)
    """Returns a stand-in network: dc1-cloud crossing servers over an underlay of `underlay_ms` one way (20 ms in
    all), ant1-dc1 a wire on one server (5 ms)."""
    cross = CrossServerLink.__new__(CrossServerLink)  # what the check reads of a link built at bring-up
    cross.link_name, cross.shape, cross.underlay_ms = "dc1-cloud", LinkShape(20.0, bw_mbps=100.0), underlay_ms
    wire = WireLink.__new__(WireLink)
    wire.link_name, wire.shape = "ant1-dc1", LinkShape(5.0)
    return SimpleNamespace(mn=SimpleNamespace(links=[wire, cross]))


def _events(*events: LinkEvent) -> NetworkEvents:
    return NetworkEvents("ev.yaml", "", events)


def test_an_event_below_a_crossing_links_underlay_is_refused_naming_file_event_and_link() -> None:
    events = _events(LinkEvent(1.0, "ant1-dc1", "events[0]", delay_ms=0.0),  # one server: the wire can give 0 ms
                     LinkEvent(2.0, "dc1-cloud", "events[1]", bw_mbps=50.0),
                     LinkEvent(3.0, "dc1-cloud", "events[2]", state="down"),
                     LinkEvent(4.0, "dc1-cloud", "events[3]", state="up"),
                     LinkEvent(5.0, "dc1-cloud", "events[4]", delay_ms=0.5),  # the underlay's own: the wire adds 0
                     LinkEvent(6.0, "dc1-cloud", "events[5]", delay_ms=0.2, loss_pct=1.0))
    check_events(_net(), _events(*events.events[:5]))  # every event up to the underlay's delay is fine
    with pytest.raises(PreflightError) as err:
        check_events(_net(), events)
    assert str(err.value) == ("ev.yaml: events[5] (at 6 s): link dc1-cloud: 0.2 ms is shorter than the underlay "
                              "between its servers (0.500 ms one way); keep its delay above that")


def test_a_links_shape_is_stepped_through_its_events_as_they_will_apply() -> None:
    # the first event lowers the delay to 0.8 ms; a jitter-only event keeps it: fine at an underlay of 0.5 ms,
    # refused at 1 ms on the first event, which is where the network would have refused it
    events = _events(LinkEvent(1.0, "dc1-cloud", "events[0]", delay_ms=0.8),
                     LinkEvent(2.0, "dc1-cloud", "events[1]", delay_dev_ms=0.1))
    check_events(_net(0.5), events)
    with pytest.raises(PreflightError, match=r"^ev\.yaml: events\[0\] \(at 1 s\): link dc1-cloud: 0\.8 ms is "):
        check_events(_net(1.0), events)


def test_a_failed_key_logins_hint_names_the_fix_for_what_ssh_said() -> None:
    b = Server.parse("b=root@10.0.0.2")
    unknown = login_hint("Host key verification failed.", b, "root", "/root")
    assert unknown == ("ssh here runs as root and /root/.ssh/known_hosts lacks the server's host key: accept it once "
                       "as root (`ssh -p 22 root@10.0.0.2 true`, under sudo `sudo ssh -p 22 root@10.0.0.2 true`), "
                       "or pass --ssh-options '-o UserKnownHostsFile=FILE' (docs/multihost.md)")
    denied = login_hint("root@10.0.0.2: Permission denied (publickey).", b, "root", "/root")
    assert denied == ("the server takes none of root's keys (/root/.ssh; root's under sudo): add that public key to "
                      "root@10.0.0.2's authorized_keys, or pass --ssh-options '-i KEY' (docs/multihost.md)")
    other = login_hint("ssh: connect to host 10.0.0.2 port 22: Connection refused", b, "alice", "/home/alice")
    assert other == "`ssh -p 22 root@10.0.0.2 true` must work as alice without a password or a question " \
                    "(docs/multihost.md)"
