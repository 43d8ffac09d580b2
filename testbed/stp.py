"""The spanning tree Linux bridges build on a cyclic topology without a controller, worked out before building.

Kernel STP makes each bridge forward towards the root along its cheapest path (port costs: the links'
delays) and blocks every other trunk, so frames follow one tree, not every shortest path. `plan_stp` picks
bridge priorities (one root) such that this tree carries every antenna-to-cluster path the topology loader
computed, or refuses the topology; `tree_from_states` reads the tree the bridges actually built.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from testbed.errors import PreflightError
from testbed.plan import LinkPlan, NetworkPlan

COST_PER_MS = 100
"""STP port cost per millisecond of one-way link delay (10 us resolution; costs must be whole numbers)."""
MAX_COST = 65535
"""The largest port cost every kernel takes."""
ROOT_PRIORITY = 4096
OTHER_PRIORITY = 32768
"""Other bridges get this plus their site index: distinct priorities decide every tie (802.1D compares the
designated bridge id after the root path cost), so the tree is known in advance."""
FORWARD_DELAY_S = 2.0
"""The least the kernel takes with STP on; a port listens, then learns, for this long each."""
HELLO_S = 1.0
MAX_AGE_S = 6.0
"""The least the kernel takes."""


@dataclass(frozen=True)
class StpPlan:
    """Priorities and port costs for the bridges, and the tree they will build."""

    root: str
    """The site whose bridge is the root."""
    priority: dict[str, int]
    """Bridge priority per site."""
    port_cost: dict[str, int]
    """STP cost per trunk port (interface name)."""
    tree: frozenset[str]
    """Names of the trunks that forward; every other trunk is blocked at one end."""

    @property
    def convergence_s(self) -> float:
        """Returns how long after the bridges come up every port has left listening and learning."""
        return 2 * FORWARD_DELAY_S


def is_cyclic(plan: NetworkPlan) -> bool:
    """Returns whether the trunks form a cycle (more trunks than a tree of the sites has)."""
    trunks = [lk for lk in plan.links if lk.kind == "trunk"]
    return len(trunks) > len(plan.switches) - 1


def port_cost(link: LinkPlan) -> int:
    """Returns a trunk's STP cost, from its one-way delay."""
    delay_ms = link.shape.delay_ms if link.shape is not None else 0.0
    return max(1, min(MAX_COST, round(delay_ms * COST_PER_MS)))


def spanning_tree(plan: NetworkPlan, root: str, priority: dict[str, int]) -> frozenset[str]:
    """Returns the trunks 802.1D puts in the tree: each bridge's root port is on its cheapest path to the root,
    ties going to the lower designated (neighbour) bridge id, as the standard breaks them."""
    trunks = [lk for lk in plan.links if lk.kind == "trunk"]
    best: dict[str, tuple[int, int]] = {root: (0, 0)}
    via: dict[str, str] = {}
    heap = [(0, 0, root)]
    done: set[str] = set()
    while heap:
        cost, _, site = heapq.heappop(heap)
        if site in done:
            continue
        done.add(site)
        for lk in trunks:
            if site not in (lk.site_a, lk.site_b):
                continue
            other = lk.site_b if lk.site_a == site else lk.site_a
            if other in done:
                continue
            vector = (cost + port_cost(lk), priority[site])
            if other not in best or vector < best[other]:
                best[other] = vector
                via[other] = lk.name
                heapq.heappush(heap, (vector[0], vector[1], other))
    return frozenset(via.values())


def _missing_paths(plan: NetworkPlan, tree: frozenset[str]) -> list[str]:
    """Returns 'antenna -> cluster' for every path of the loader that leaves the tree."""
    topo = plan.topology
    missing = []
    for ant in topo.antennas:
        for cluster in topo.clusters:
            if ant.name == cluster.name:
                continue
            links = {f"{lk.a}-{lk.b}" for lk in topo.path(ant.name, cluster.name).links}
            if not links <= tree:
                missing.append(f"{ant.name} -> {cluster.name}")
    return missing


def plan_stp(plan: NetworkPlan) -> StpPlan:
    """Returns the STP settings whose tree carries every antenna-to-cluster shortest path; raises
    PreflightError (one line) when no choice of root bridge gives such a tree."""
    sites = [s.site for s in plan.switches]
    costs = {end.ifname: port_cost(lk) for lk in plan.links if lk.kind == "trunk" for end in (lk.a, lk.b)}
    fewest: list[str] | None = None
    for root in sites:  # file order: the first root that works
        priority = {s: ROOT_PRIORITY if s == root else OTHER_PRIORITY + k for k, s in enumerate(sites)}
        tree = spanning_tree(plan, root, priority)
        missing = _missing_paths(plan, tree)
        if not missing:
            return StpPlan(root=root, priority=priority, port_cost=costs, tree=tree)
        if fewest is None or len(missing) < len(fewest):
            fewest = missing
    assert fewest is not None
    raise PreflightError(
        f"{plan.topology.source}: the links form a cycle, and without a controller the Linux bridges forward "
        f"along one spanning tree (STP, port costs from the links' delays); no such tree carries every "
        f"antenna-to-cluster shortest path (at best {', '.join(fewest[:3])}"
        f"{' and more' if len(fewest) > 3 else ''} would take a longer way): use --controller osken "
        "(shortest-path forwarding on Open vSwitch)")


STATE_NAMES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}


def tree_from_states(plan: NetworkPlan, states: dict[str, str]) -> frozenset[str]:
    """Returns the trunks whose ports forward at both ends, given {port interface: STP state name}."""
    return frozenset(lk.name for lk in plan.links if lk.kind == "trunk"
                     and states.get(lk.a.ifname) == "forwarding" and states.get(lk.b.ifname) == "forwarding")
