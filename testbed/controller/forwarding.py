"""Planned shortest-path forwarding (OpenFlow 1.3) with ARP answered by the controller.

The plan gives, per datapath, the port towards every host's MAC (the topology's unique shortest
paths); flows are installed proactively when a switch connects, so nothing floods and cycles are
safe. ARP requests come to the controller, which answers from the plan's address table.
"""

from __future__ import annotations

import json

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import arp, ethernet, packet
from os_ken.ofproto import ofproto_v1_3

from testbed.controller import settings

READY_FILE = "controller_ready.jsonl"
PRIORITY_ARP = 200
PRIORITY_HOST = 100


class PlannedForwarding(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        conf = settings.current()
        self.next_port: dict[str, dict[str, int]] = conf.plan["next_port"]
        self.mac_of_ip = {h["ip"]: h["mac"] for h in conf.plan["hosts"]}
        self.ready_path = conf.out_dir / READY_FILE

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_switch_features(self, ev) -> None:
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        table = self.next_port.get(str(dp.id))
        if table is None:
            self.logger.error("unknown datapath %016x connected; not programming it", dp.id)
            return
        dp.send_msg(parser.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                                      out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        to_controller = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self._add_flow(dp, PRIORITY_ARP, parser.OFPMatch(eth_type=0x0806), to_controller)
        for mac, port_no in table.items():
            self._add_flow(dp, PRIORITY_HOST, parser.OFPMatch(eth_dst=mac), [parser.OFPActionOutput(port_no)])
        # No table-miss flow: anything else (IPv6 chatter, unknown MACs) is dropped.
        dp.send_msg(parser.OFPBarrierRequest(dp))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def on_barrier(self, ev) -> None:
        with self.ready_path.open("a") as f:
            f.write(json.dumps({"dpid": ev.msg.datapath.id, "flows": len(self.next_port[str(ev.msg.datapath.id)])})
                    + "\n")

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def on_packet_in(self, ev) -> None:
        msg = ev.msg
        dp = msg.datapath
        pkt = packet.Packet(msg.data)
        req = pkt.get_protocol(arp.arp)
        if req is None or req.opcode != arp.ARP_REQUEST:
            return
        mac = self.mac_of_ip.get(req.dst_ip)
        if mac is None:
            return
        reply = packet.Packet()
        reply.add_protocol(ethernet.ethernet(dst=req.src_mac, src=mac, ethertype=0x0806))
        reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=mac, src_ip=req.dst_ip,
                                   dst_mac=req.src_mac, dst_ip=req.src_ip))
        reply.serialize()
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                        actions=[parser.OFPActionOutput(in_port)], data=reply.data))

    @staticmethod
    def _add_flow(dp, priority: int, match, actions) -> None:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=priority, match=match, instructions=inst))
