"""How a simulated message crosses the network, a mixin of `simulator.engine.Simulation`: its legs drawn on the
links as they are when it is sent (radio and path: delay, jitter, transmission, a loss as a TCP retransmission, a
link that is down as tries resent until it is back), its antenna's radio (FIFO, one message at a time) and its path
(the queues of simulator.paths, then FIFO as a whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from scheduler.system import SystemModel

if TYPE_CHECKING:
    from scheduler.timeline import SystemTimeline
    from simulator.engine import SimConfig
    from simulator.links import FifoLinks
    from simulator.paths import PathQueues

MAX_RETRANSMIT_MS = 120_000.0
"""A message whose link is not back after this long is lost (Linux's largest RTO)."""


class Legs(NamedTuple):
    """One-way delays in ms of messages: each leg's delay, jitter and transmission, the wait before it enters the
    leg (a try lost on that leg: the retransmission timeout), the wait before the message is sent at all (tries
    that met a link that was down, resent by the sender; infinite legs: a link that stays down), and the radio
    leg's transmission alone."""

    radio_ms: np.ndarray
    path_ms: np.ndarray
    radio_wait_ms: np.ndarray
    path_wait_ms: np.ndarray
    resend_wait_ms: np.ndarray
    radio_tx_ms: np.ndarray
    """The radio leg's transmission at the radio's rate (part of radio_ms)."""


class Crossing:
    """The network part of a simulation (its attributes are the simulation's, set by its constructor)."""

    config: SimConfig
    rng_net: np.random.Generator
    physics_timeline: SystemTimeline
    system: SystemModel
    radio_up: FifoLinks
    radio_down: FifoLinks
    path_up: FifoLinks
    path_down: FifoLinks
    path_queues: dict[bool, PathQueues | None]

    def _one_way(self, ant: np.ndarray, res: np.ndarray, nbytes: np.ndarray | float,
                 t_ms: np.ndarray) -> Legs:
        """Returns the radio and path legs of messages of `nbytes` payload leaving at t_ms, with jitter, transmission
        (of `SimConfig.wire_ratio` x the payload) and losses, over the links as they are then (infinite across a link
        that is down)."""
        rng, n = self.rng_net, len(ant)
        nbytes = np.asarray(nbytes, dtype=np.float64) * self.config.wire_ratio  # the links carry the headers too
        z = rng.standard_normal((2, n))
        lost = rng.random((2, n))
        timeline = self.physics_timeline
        if timeline.static:
            return self._legs(timeline.systems[0], ant, res, nbytes, z, lost)
        state = timeline.indices_at(np.asarray(t_ms) / 1000.0)
        legs = np.empty((len(Legs._fields), n))
        nbytes = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), (n,))
        for k in np.unique(state):
            m = state == k
            legs[:, m] = self._legs(timeline.systems[k], ant[m], res[m], nbytes[m], z[:, m], lost[:, m])
        cut = np.flatnonzero(~(np.isfinite(legs[0]) & np.isfinite(legs[1])))  # met a link that is down
        if len(cut):
            legs[:, cut] = self._retransmitted(ant[cut], res[cut], nbytes[cut], np.asarray(t_ms)[cut],
                                               z[:, cut], lost[:, cut])
        return Legs(*legs)

    def _retransmitted(self, ant: np.ndarray, res: np.ndarray, nbytes: np.ndarray, t_ms: np.ndarray, z: np.ndarray,
                       lost: np.ndarray) -> Legs:
        """Returns the legs of messages that met a link that was down, with their draws (normal, uniform) [2, n]:
        TCP sends each again after rto_ms, then after twice that, and so on, until a try finds every link of its
        way up (the wait is `resend_wait_ms`); infinite if none does up to the first try whose total wait passes
        MAX_RETRANSMIT_MS (that try included). Every message's tries are taken together, grouped by the network
        state they meet."""
        timeline, waited, wait = self.physics_timeline, 0.0, self.config.rto_ms
        legs = np.full((len(Legs._fields), len(ant)), np.inf)
        waiting = np.arange(len(ant))
        while waited < MAX_RETRANSMIT_MS and len(waiting):
            waited, wait = waited + wait, wait * 2
            state = timeline.indices_at((t_ms[waiting] + waited) / 1000.0)
            for k in np.unique(state):
                m = waiting[state == k]
                r, p, r_wait, p_wait, _, r_tx = self._legs(timeline.systems[k], ant[m], res[m], nbytes[m],
                                                           z[:, m], lost[:, m])
                up = np.isfinite(r) & np.isfinite(p)
                legs[:, m[up]] = r[up], p[up], r_wait[up], p_wait[up], np.full(int(up.sum()), waited), r_tx[up]
            waiting = waiting[~np.isfinite(legs[0, waiting])]
        return Legs(*legs)

    def _legs(self, s: SystemModel, ant: np.ndarray, res: np.ndarray, nbytes: np.ndarray | float, z: np.ndarray,
              lost: np.ndarray) -> Legs:
        """Returns the legs on one system's links, given the draws (normal, uniform) [2, n]."""
        radio_tx = s.radio_ms_per_byte[ant] * nbytes
        with np.errstate(invalid="ignore"):  # inf + 0 x jitter: a link that is down
            radio = np.maximum(s.radio_ms[ant] + s.radio_dev_ms[ant] * z[0], 0.0) + radio_tx
            path = np.maximum(s.net_ms[ant, res] + s.net_dev_ms[ant, res] * z[1], 0.0) + s.path_ms_per_byte[ant, res] * nbytes
        return Legs(radio, path, np.where(lost[0] < s.radio_loss[ant], self.config.rto_ms, 0.0),
                    np.where(lost[1] < s.path_loss[ant, res], self.config.rto_ms, 0.0), np.zeros(len(radio)),
                    radio_tx)

    def _radio(self, ant: np.ndarray, t_ms: np.ndarray, wait_ms: np.ndarray, leg_ms: np.ndarray, tx_ms: np.ndarray,
               up: bool, horizon_ms: float) -> np.ndarray:
        """Returns when messages reaching their antenna's radio at t_ms get through it: after that leg's own wait and
        the leg, and, with `fifo_links`, no earlier than the messages that entered it before (`horizon_ms`: later
        calls' messages enter from then on), with `radio_queueing` waiting while it sends those (`tx_ms` each)."""
        enter = t_ms + wait_ms
        out = enter + leg_ms
        if self.config.fifo_links:
            fifo = self.radio_up if up else self.radio_down
            out = fifo.order(ant, enter, out, horizon_ms, tx_ms if self.config.radio_queueing else None)
        return out

    def _path(self, flights: dict[str, np.ndarray], up: bool, horizon_ms: float) -> dict[str, np.ndarray]:
        """Takes messages entering their paths (`flights`: `ant`, `res`, `nbytes`, `enter`, `leg` (the path leg),
        `state` and what the caller carries) and returns those through their paths by now with `out`, when each
        gets through: with `path_queueing` after its waits at the paths' links (simulator.paths; one that enters a
        link after `horizon_ms` comes back from a later call), and, with `fifo_links`, no earlier than the messages
        that left the path's last link before it."""
        queues = self.path_queues[up]
        if queues is not None:
            f = queues.advance(flights, horizon_ms)
        else:
            f = {**flights, "wait": np.zeros(len(flights["enter"])), "left": flights["enter"]}
        out = np.maximum(f["enter"] + f["leg"] + f["wait"], f["left"])
        if self.config.fifo_links:
            fifo = self.path_up if up else self.path_down
            out = fifo.order(f["ant"] * self.system.n_resources + f["res"], f["left"], out, horizon_ms)
        f["out"] = out
        return f
