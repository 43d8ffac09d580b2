"""Port statistics: polls every switch's ports and writes per-link bytes and utilisation over time.

`port_stats.jsonl` gets the raw counters per poll; `link_utilisation.jsonl` the rate out of and into
each switch port that belongs to a link, in Mbit/s and as a fraction of the link's bandwidth. Under time
dilation (factor K, `tdf` in each record) the network polls every K real seconds and the rates are per virtual
second (bytes over the real interval x K), against the topology's bandwidth; `t_s` stays real epoch seconds.
"""

from __future__ import annotations

import json

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from testbed.controller import settings
from topologies import wallclock

PORT_STATS_FILE = "port_stats.jsonl"
UTILISATION_FILE = "link_utilisation.jsonl"


class PortStatsPoller(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        conf = settings.current()
        self.ports: dict[str, dict[str, dict]] = conf.plan["ports"]
        self.interval_s = conf.stats_interval_s
        self.tdf = conf.tdf
        self.stats_file = (conf.out_dir / PORT_STATS_FILE).open("a")
        self.util_file = (conf.out_dir / UTILISATION_FILE).open("a")
        self.datapaths: dict[int, object] = {}
        self.previous: dict[tuple[int, int], tuple[float, int, int]] = {}
        self.poller = hub.spawn(self._poll)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def on_state_change(self, ev) -> None:
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            self.datapaths[dp.id] = dp
        else:
            self.datapaths.pop(dp.id, None)

    def _poll(self) -> None:
        while True:
            for dp in list(self.datapaths.values()):
                dp.send_msg(dp.ofproto_parser.OFPPortStatsRequest(dp, 0, dp.ofproto.OFPP_ANY))
            hub.sleep(self.interval_s)

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def on_port_stats(self, ev) -> None:
        t_s = wallclock.time_s()
        dpid = ev.msg.datapath.id
        owners = self.ports.get(str(dpid), {})
        for st in ev.msg.body:
            owner = owners.get(str(st.port_no))
            if owner is None:
                continue  # the bridge's own local port
            self.stats_file.write(json.dumps({
                "t_s": t_s, "dpid": dpid, "port_no": st.port_no, "link": owner["link"],
                "rx_bytes": st.rx_bytes, "tx_bytes": st.tx_bytes, "rx_packets": st.rx_packets,
                "tx_packets": st.tx_packets, "rx_dropped": st.rx_dropped, "tx_dropped": st.tx_dropped}) + "\n")
            key = (dpid, st.port_no)
            prev = self.previous.get(key)
            self.previous[key] = (t_s, st.tx_bytes, st.rx_bytes)
            if prev is None or t_s <= prev[0]:
                continue
            dt = (t_s - prev[0]) / self.tdf  # virtual seconds
            out_mbps = (st.tx_bytes - prev[1]) * 8 / dt / 1e6
            in_mbps = (st.rx_bytes - prev[2]) * 8 / dt / 1e6
            bw = owner["bw_mbps"]
            self.util_file.write(json.dumps({
                "t_s": t_s, "link": owner["link"], "kind": owner["kind"], "dpid": dpid, "port_no": st.port_no,
                "peer": owner["peer"], "tdf": self.tdf, "out_mbps": round(out_mbps, 4), "in_mbps": round(in_mbps, 4),
                "bw_mbps": bw, "out_utilisation": round(out_mbps / bw, 5) if bw else None,
                "in_utilisation": round(in_mbps / bw, 5) if bw else None}) + "\n")
        self.stats_file.flush()
        self.util_file.flush()
