"""A topology file as a Mininet `Topo`: the plan's hosts, switches and links with their names, addresses,
ports and shapes, and nothing that runs (Mininet's split: a Topo describes, `Mininet` builds).

Hosts are the plan's (`worker-<site>`, `scheduler-<site>`, `sources-<site>`, `probe-<site>`) with `eth0`;
switches are named by their bridge (`t<run id>s<k>`) with the plan's datapath id and port numbers; every
link carries its plan name and shape, and its class: a plain veth pair, a wire where delay is shaped in
userspace, or a VXLAN tunnel with a wire in front between sites on different servers. Hosts and switches carry
their site's server (`on_server`).
"""

from __future__ import annotations

from mininet.topo import Topo

from testbed.links import CrossServerLink, PlainLink, WireLink
from testbed.plan import NetworkPlan
from testbed.stp import StpPlan


class TestbedTopo(Topo):
    """The Mininet description of a network plan. backend: 'netem' or 'wire' (how delay is shaped);
    switch: 'ovs' or 'lxbr'; datapath: Mininet's 'user' or 'kernel' (OVS); controller: whether an
    OpenFlow controller programs the switches; stp: the Linux bridges' spanning tree (a cyclic topology
    without a controller)."""

    __test__ = False  # not a pytest test class

    def build(self, plan: NetworkPlan, backend: str = "wire", switch: str = "ovs",  # type: ignore[override]
              datapath: str = "user", controller: bool = True, stp: StpPlan | None = None) -> None:
        self.plan = plan
        for h in plan.hosts:
            self.addHost(h.name, netns=h.netns, ip=h.ip, mac=h.mac, prefix_len=h.prefix_len, subnet=plan.subnet,
                         on_server=h.server)
        for sw in plan.switches:
            if switch == "ovs":
                self.addSwitch(sw.bridge, site=sw.site, dpid=f"{sw.dpid:016x}", datapath=datapath,
                               failMode="secure" if controller else "standalone", protocols="OpenFlow13",
                               on_server=sw.server)
            else:
                self.addSwitch(sw.bridge, site=sw.site, dpid=f"{sw.dpid:016x}", stp=stp)
        for lk in plan.links:
            wired = (backend == "wire" and lk.shape is not None) or lk.crosses
            ends = [lk.a, lk.b]
            nodes = [e.host if e.host else plan.switch(e.switch).bridge for e in ends]  # type: ignore[arg-type]
            opts = dict(cls=CrossServerLink if lk.crosses else WireLink if wired else PlainLink, link_name=lk.name, shape=lk.shape,
                        intfName1=lk.a.ifname, intfName2=lk.b.ifname, port1=lk.a.port_no, port2=lk.b.port_no)
            if wired:
                opts["index"] = lk.index
            if lk.a.host:
                opts["addr1"] = plan.host(lk.a.host).mac
            self.addLink(nodes[0], nodes[1], **opts)

    def link_names(self) -> list[str]:
        return [info["link_name"] for _, _, info in self.links(withInfo=True)]


__all__ = ["TestbedTopo"]
