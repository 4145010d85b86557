"""The simulated policies: who serves which partition in a step. Pure functions.

- range: Kafka's RangeAssignor over the members in their natural order (region by region, as listed);
- region_local: sticky and region-local, as Kafka's rack-aware assignment (KIP-881) with
  client.rack set; a partition leaves home only when its region's nodes have no room, to the
  nearest region that has;
- least_loaded and lattice: the placement code (streamlattice.placement.plan.make_plan), the
  first with no latency or carbon weight (capacity only), the second with lattice.toml's weights;
- oracle: streamlattice.sim.oracle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from streamlattice.placement.plan import PartitionState, Weights, node_limits
from streamlattice.sim.scenario import SimNode

Shares = dict[int, dict[str, float]]  # partition -> node id -> share of its events (1.0 for a whole partition)


def whole(assignment: Mapping[int, str]) -> Shares:
    """An assignment of whole partitions as shares."""
    return {p: {n: 1.0} for p, n in assignment.items()}


def range_assignment(partitions: Sequence[int], node_ids: Sequence[str]) -> dict[int, str]:
    """Kafka's RangeAssignor for one topic: contiguous ranges of partitions over the members in the given order."""
    per, extra = divmod(len(partitions), len(node_ids))
    out: dict[int, str] = {}
    ordered = sorted(partitions)
    i = 0
    for k, m in enumerate(node_ids):
        n = per + (1 if k < extra else 0)
        for p in ordered[i : i + n]:
            out[p] = m
        i += n
    return out


def region_local_assignment(
    partitions: Sequence[PartitionState],
    nodes: Sequence[SimNode],
    latency_ms: Mapping[tuple[str, str], float],
    headroom: float,
    previous: Mapping[int, str] | None = None,
) -> dict[int, str]:
    """Region-local and sticky: a partition stays on its home node while that node has room; the others
    go, heaviest first, to the home node with the most room, else to the nearest region with room,
    else to the least utilised node. Room is the placement code's limit (`node_limits`)."""
    cap = np.array([n.capacity_eps for n in nodes])
    index = {n.node_id: i for i, n in enumerate(nodes)}
    limit = node_limits(cap, sum(p.load_eps for p in partitions), headroom)
    used = np.zeros(len(nodes))
    out: dict[int, str] = {}
    previous = previous or {}
    waiting = []
    for p in sorted(partitions, key=lambda p: (-p.load_eps, p.partition)):
        i = index.get(previous.get(p.partition, ""), -1)
        if i >= 0 and nodes[i].region == p.home_region and used[i] + p.load_eps <= limit[i] + 1e-9:
            used[i] += p.load_eps
            out[p.partition] = nodes[i].node_id
        else:
            waiting.append(p)
    regions = sorted({n.region for n in nodes})
    for p in waiting:
        room = used + p.load_eps <= limit + 1e-9
        by_distance = sorted(regions, key=lambda r: (latency_ms.get((p.home_region, r), 0.0), r != p.home_region, r))
        choice = -1
        for r in by_distance:
            here = [i for i, n in enumerate(nodes) if n.region == r and room[i]]
            if here:
                choice = min(here, key=lambda i: ((used[i] + p.load_eps) / cap[i], i))
                break
        if choice < 0:
            choice = int(np.argmin((used + p.load_eps) / cap))
        used[choice] += p.load_eps
        out[p.partition] = nodes[choice].node_id
    return out


def least_loaded_weights(lattice: Weights) -> Weights:
    """Capacity only: the lattice's stickiness and headroom, no latency or carbon weight."""
    return Weights(
        latency=0.0,
        carbon=0.0,
        spare=1.0,
        headroom=lattice.headroom,
        hysteresis=lattice.hysteresis,
        max_moves=lattice.max_moves,
    )
