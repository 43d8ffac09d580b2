"""The system model: resources (a variant's replicas on a cluster) and per-antenna network figures.

Built once from a topology, the profiles and the placement; the simulator and the live schedulers both
read it as arrays indexed [antenna, resource] (scheduler/pathfigures.py: dense when small, a row computed on
demand when the product of antennas and resources is large), so that decisions are vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from scheduler.pathfigures import FIGURES, AntennaResourceArray, PathFigures
from scheduler.placement import placement_for
from scheduler.profiles import ProfileSet, Variant
from topologies.model import Topology

RESPONSE_BYTES = 1000
"""Size of an inference answer (detections as JSON), used for the downlink transmission delay."""


@dataclass(frozen=True)
class Resource:
    """Replicas of one variant on one cluster: what a stream is bound to."""

    index: int
    site: str
    layer: str
    variant: Variant
    replicas: int
    capacity_qps: float
    """C_v: the replicas' combined capacity."""
    cost_per_query: float
    """Relative cost of the hardware the replicas occupy, per query served at capacity."""

    @property
    def name(self) -> str:
        return f"{self.variant.name}@{self.site}"


@dataclass(frozen=True)
class SystemModel:
    """Resources and the static part of every antenna-to-resource binding (arrays [antenna, resource])."""

    topology: Topology
    profiles: ProfileSet
    resources: tuple[Resource, ...]
    antennas: tuple[str, ...]
    radio_ms: np.ndarray
    """delta_i per antenna: one-way radio delay."""
    radio_dev_ms: np.ndarray
    radio_loss: np.ndarray
    radio_ms_per_byte: np.ndarray
    """Transmission delay per byte on the radio link, per antenna."""
    net_ms: AntennaResourceArray
    """d_ns [antenna, resource]: one-way delay from the antenna's scheduler to the resource's cluster."""
    net_dev_ms: AntennaResourceArray
    """sigma_ns [antenna, resource]."""
    path_loss: AntennaResourceArray
    """Probability [antenna, resource] that a packet is lost one way between scheduler and cluster."""
    path_ms_per_byte: AntennaResourceArray
    """Transmission delay per byte summed over the links from scheduler to cluster."""
    static_ms: AntennaResourceArray
    """2*(delta_i + d_ns + 2*sigma_ns) + D_v without its input-size term, [antenna, resource]."""
    ms_per_byte: AntennaResourceArray
    """b_i (radio + path transmission per byte) + D_v's per-byte input term, [antenna, resource]."""
    accuracy: np.ndarray
    capacity_qps: np.ndarray
    """C_v per resource, in the profile's load unit (nominal queries per second under input-time accounting)."""
    eta_weights: np.ndarray
    """[2, resource]: eta_v(zeta) = eta_weights[0] + eta_weights[1] x zeta, the load one query of zeta bytes puts
    on the resource (`Variant.load_weights`; 1 and 0 under rate accounting)."""
    cost_per_query: np.ndarray
    task: np.ndarray
    """Task of each resource as an index into `tasks`."""
    tasks: tuple[str, ...]

    @property
    def n_resources(self) -> int:
        return len(self.resources)

    @cached_property
    def _antenna_index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.antennas)}

    def antenna_index(self, name: str) -> int:
        try:
            return self._antenna_index[name]
        except KeyError:
            raise KeyError(f"{self.topology.source}: no antenna named {name!r}; "
                           f"antennas: {', '.join(self.antennas)}") from None

    def task_index(self, task: str) -> int:
        """Returns the index of a task, or -1 when no resource implements it."""
        return self.tasks.index(task) if task in self.tasks else -1

    def stream_load(self, resource: int, fps: float, frame_bytes: float) -> float:
        """Returns eta_v^i x rho_i: the load a stream of `fps` frames of `frame_bytes` puts on a resource."""
        return fps * (float(self.eta_weights[0, resource]) + float(self.eta_weights[1, resource]) * frame_bytes)

    def expected_ms(self, antenna: int, frame_bytes: float) -> np.ndarray:
        """Returns the left side of the delay constraint for every resource, for one stream."""
        return self.static_ms[antenna] + self.ms_per_byte[antenna] * frame_bytes


def build_system(topo: Topology, profiles: ProfileSet) -> SystemModel:
    """Returns the system model of a topology under its placement."""
    resources: list[Resource] = []
    for d in placement_for(topo, profiles):
        v = profiles.variant(d.variant)
        site = topo.site(d.site)
        assert site.compute is not None
        hourly = (v.cpu_cores * site.compute.core_cost + v.gpus * site.compute.gpu_cost) * d.replicas
        capacity = v.capacity_qps * d.replicas
        resources.append(Resource(index=len(resources), site=d.site, layer=site.layer, variant=v,
                                  replicas=d.replicas, capacity_qps=capacity, cost_per_query=hourly / capacity))
    antennas = tuple(a.name for a in topo.antennas)
    radio = [topo.site(a).radio for a in antennas]
    radio_ms = np.array([r.delay_ms for r in radio])
    radio_dev = np.array([r.delay_dev_ms for r in radio])
    radio_bpb = np.array([8.0 / (r.bw_mbps * 1000.0) for r in radio])
    proc_full = np.array([r.variant.batch_ms[r.variant.batch_size] for r in resources])
    input_bpb = np.array([r.variant.batch_size * r.variant.input_ms_per_mb / 1e6 for r in resources])
    paths = PathFigures.of(topo, antennas, tuple(r.site for r in resources))
    m = dict(paths=paths, radio_ms=radio_ms, radio_bpb=radio_bpb, proc_ms=proc_full, input_bpb=input_bpb)
    tasks = tuple(sorted({r.variant.task for r in resources}))
    return SystemModel(
        topology=topo, profiles=profiles, resources=tuple(resources), antennas=antennas,
        radio_ms=radio_ms, radio_dev_ms=radio_dev,
        radio_loss=np.array([r.loss_pct / 100.0 for r in radio]), radio_ms_per_byte=radio_bpb,
        **{name: AntennaResourceArray(name, **m) for name in FIGURES},  # type: ignore[arg-type]
        accuracy=np.array([r.variant.accuracy for r in resources]),
        capacity_qps=np.array([r.capacity_qps for r in resources]),
        eta_weights=np.array([r.variant.load_weights for r in resources]).reshape(-1, 2).T.copy(),
        cost_per_query=np.array([r.cost_per_query for r in resources]),
        task=np.array([tasks.index(r.variant.task) for r in resources], dtype=np.int64),
        tasks=tasks,
    )
