"""Placement: which node serves which partition. A pure function: lattice state in, plan out.

Each (partition, node) pair has a cost, lower is better:

    latency_weight * latency(home region -> node region) / worst latency
  + carbon_weight  * node's grid carbon intensity / the dirtiest possible grid
                   * node's energy per event / the lattice's least efficient node's
  + spare_weight   * node's utilisation with the partition on it
  + OVER_BUDGET * (1 + latency / worst latency)   if the node's region is beyond the latency budget
                                                  (before that, a node within it goes above its limits,
                                                  up to `hard_limits`)

so a partition prefers its own region, then green power on efficient nodes, then spare
capacity, in the proportions lattice.toml's [placement] weights give; a node whose energy per
event is unknown counts as the least efficient. A region beyond the latency budget serves a
partition only when every node within it is full, the nearest first. On top of the costs:

- every partition is assigned exactly once, to a live node (when there is one);
- a node is filled to at most `headroom` of its capacity while the lattice can carry the
  load (beyond that, load is spread in proportion to capacity);
- a partition whose node still lives stays unless moving lowers its cost by more than
  `hysteresis`, and at most `max_moves` such moves happen per plan; partitions of lost or
  overloaded nodes always move (those moves are not limited), and when staying would leave
  load above nodes' capacity or beyond the latency budget and placing afresh (heaviest first) would
  leave less, the plan starts afresh;
  a partition served beyond the latency budget comes back as soon as a node within it has room;
- the same inputs give the same plan, whatever order they come in.

The greedy passes are vectorised over nodes with numpy: a plan for 10,000 partitions over
1,000 nodes takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

DIRTIEST_G_PER_KWH = 700.0
HARD_UTILISATION = 0.9
OVER_BUDGET = 10.0  # more than any sum of the other terms: beyond the latency budget only for want of room


@dataclass(frozen=True)
class NodeState:
    """A live node as its heartbeats describe it."""

    node_id: str
    region: str
    capacity_eps: float
    renewable_fraction: float
    carbon_intensity: float
    joules_per_event: float = 0.0  # busy energy one more event costs; 0 when not measured


@dataclass(frozen=True)
class PartitionState:
    """A partition of a task topic: the region whose events it holds, and their rate."""

    partition: int
    home_region: str
    load_eps: float = 0.0


@dataclass(frozen=True)
class Weights:
    """How placement trades latency, carbon and spare capacity, and how eagerly it moves."""

    latency: float = 0.4  # 40 ms away pays off for >= ~100 gCO2/kWh less when the worst latency is ~110 ms
    carbon: float = 1.0
    spare: float = 0.1
    headroom: float = 0.8
    hysteresis: float = 0.05
    max_moves: int = 8
    latency_budget_ms: float = float("inf")  # farthest a partition is served from home while there is room
    tail_slack: float = float("inf")  # a node's queue p99, and a partition's distance from home while there is
    # room, may reach this times the p99 of the queues with the load spread region-locally
    min_load_eps: float = 1.0  # a partition with no measured load still weighs this much
    default_capacity_eps: float = 1000.0  # for a node that has not measured itself yet


@dataclass(frozen=True)
class Placement:
    """Where one partition goes, and the numbers that explain why."""

    partition: int
    node_id: str
    home_region: str
    node_region: str
    latency_ms: float
    carbon_intensity: float
    renewable_fraction: float
    utilization: float
    cost: float
    reason: str


@dataclass(frozen=True)
class Plan:
    """A complete assignment with its explanation."""

    placements: tuple[Placement, ...]
    moves: int  # partitions whose node changed from the previous plan
    overloaded: bool  # the load exceeds the lattice's capacity within headroom

    @property
    def assignment(self) -> dict[int, str]:
        """Partition -> node id."""
        return {p.partition: p.node_id for p in self.placements}


def make_plan(
    partitions: Iterable[PartitionState],
    nodes: Iterable[NodeState],
    latency_ms: Mapping[tuple[str, str], float],
    weights: Weights = Weights(),
    previous: Mapping[int, str] | None = None,
) -> Plan:
    """The plan for `partitions` over `nodes`, moving as little as pays from `previous`."""
    parts = sorted(partitions, key=lambda p: p.partition)
    live = sorted(nodes, key=lambda n: n.node_id)
    if not live or not parts:
        return Plan((), 0, False)
    w = weights
    node_index = {n.node_id: i for i, n in enumerate(live)}
    regions = sorted({n.region for n in live} | {p.home_region for p in parts})
    region_index = {r: i for i, r in enumerate(regions)}

    # ---- static costs: [home region, node] -------------------------------------------------
    lat = np.array([[latency_ms.get((a, b), 0.0 if a == b else _worst(latency_ms)) for b in regions] for a in regions])
    worst = float(lat.max()) or 1.0
    node_region = np.array([region_index[n.region] for n in live])
    carbon = np.array([n.carbon_intensity for n in live])
    dirtiest = max(DIRTIEST_G_PER_KWH, float(carbon.max()))
    joules = np.array([n.joules_per_event for n in live])
    efficiency = np.where(joules > 0, joules / joules.max(), 1.0) if joules.max() > 0 else np.ones(len(live))
    static = w.latency * lat[:, node_region] / worst + w.carbon * (carbon * efficiency)[None, :] / dirtiest
    cap = np.array([n.capacity_eps if n.capacity_eps > 0 else w.default_capacity_eps for n in live])

    load = np.array([max(p.load_eps, w.min_load_eps) for p in parts])
    home = np.array([region_index[p.home_region] for p in parts])
    total_load, total_cap = float(load.sum()), float(cap.sum())
    overloaded = total_load > w.headroom * total_cap
    limit = capacity_limits(cap, node_region, load, home, w)
    hard = hard_limits(cap, total_load, w.headroom)
    far = lat[:, node_region]
    static = static + OVER_BUDGET * (far > latency_budget(cap, node_region, load, home, w)) * (1 + far / worst)

    used = np.zeros(len(live))
    owner = np.full(len(parts), -1)
    before = np.full(len(parts), -1)
    if previous:
        for i, p in enumerate(parts):
            before[i] = node_index.get(previous.get(p.partition, ""), -1)

    def costs(i: int, exclude: int = -1) -> np.ndarray:
        c = static[home[i]] + w.spare * (used + load[i]) / cap
        c[used + load[i] > limit] = np.inf
        if exclude >= 0:
            c[exclude] = np.inf
        return c

    def place(i: int, n: int) -> None:
        owner[i] = n
        used[n] += load[i]

    def best(i: int, exclude: int = -1) -> int:
        c = costs(i, exclude)
        n = int(np.argmin(c))
        if np.isinf(c[n]) or c[n] >= OVER_BUDGET:  # nothing within the budget and the limits: the nearest
            near = static[home[i]] + w.spare * (used + load[i]) / cap  # node within its hard limit
            near[used + load[i] > hard] = np.inf
            if exclude >= 0:
                near[exclude] = np.inf
            if near.min() < c[n]:
                return int(np.argmin(near))
        if np.isinf(c[n]):  # nowhere within limits: the least utilised node after taking it
            util = (used + load[i]) / cap
            if exclude >= 0:
                util[exclude] = np.inf
            n = int(np.argmin(util))
        return n

    def first_fit(keep: bool) -> None:
        """Phases 1-3."""
        used[:] = 0.0
        owner[:] = -1
        stay = before if keep else np.full(len(parts), -1)
        # 1. partitions whose node lives stay there for now
        for i in np.flatnonzero(stay >= 0).tolist():
            place(i, int(stay[i]))
        # 2. the others (new, or their node is gone), heaviest first
        for i in sorted(np.flatnonzero(stay < 0).tolist(), key=lambda i: (-load[i], parts[i].partition)):
            place(i, best(i))
        # 3. relieve nodes above their limit, moving their cheapest-to-move partitions first; a partition that
        # fits nowhere within limits moves only if that leaves it less crowded (else it overloads another node)
        for over in np.flatnonzero(used > limit + 1e-9).tolist():
            mine = sorted(np.flatnonzero(owner == over).tolist(), key=lambda i: (load[i], parts[i].partition))
            for i in mine:
                if used[over] <= limit[over] + 1e-9 or len(live) == 1:
                    break
                used[over] -= load[i]
                target = best(i, exclude=over)
                fits = used[target] + load[i] <= limit[target] + 1e-9
                if fits or (used[target] + load[i]) / cap[target] < (used[over] + load[i]) / cap[over]:
                    place(i, target)
                else:
                    place(i, over)

    def strain() -> tuple[float, float]:
        """Load above capacity, then load beyond the latency budget."""
        return round(float(np.maximum(used - cap, 0.0).sum()), 6), round(
            float(load[static[home, owner] >= OVER_BUDGET].sum()), 6
        )

    # staying put comes first, unless placing afresh (heaviest first) leaves less load above capacity or
    # beyond the latency budget
    first_fit(keep=True)
    if strain() > (0.0, 0.0) and (before >= 0).any():
        kept = (strain(), used.copy(), owner.copy())
        first_fit(keep=False)
        if strain() >= kept[0]:
            used[:], owner[:] = kept[1], kept[2]
    # partitions served beyond the latency budget come back within it as soon as a node there has room
    away = np.flatnonzero(static[home, owner] >= OVER_BUDGET)
    for i in sorted(away.tolist(), key=lambda i: (-load[i], parts[i].partition)):
        here = int(owner[i])
        used[here] -= load[i]
        target = best(i, exclude=here)
        fits = used[target] + load[i] <= hard[target] + 1e-9
        place(i, target if fits and static[home[i], target] < static[home[i], here] else here)
    # 4. improvements that pay for themselves, biggest gain first, at most max_moves
    sticky = np.flatnonzero((before >= 0) & (owner == before))
    if len(sticky) and w.max_moves > 0:
        stay = static[home[sticky], owner[sticky]] + w.spare * used[owner[sticky]] / cap[owner[sticky]]
        alt = np.full(len(sticky), np.inf)
        for chunk in range(0, len(sticky), 2048):
            idx = sticky[chunk : chunk + 2048]
            c = static[home[idx]] + w.spare * (used[None, :] + load[idx, None]) / cap[None, :]
            c[used[None, :] + load[idx, None] > limit[None, :]] = np.inf
            c[np.arange(len(idx)), owner[idx]] = np.inf
            alt[chunk : chunk + len(idx)] = c.min(axis=1)
        gain = stay - alt
        candidates = sorted(np.flatnonzero(gain > w.hysteresis), key=lambda k: (-gain[k], parts[sticky[k]].partition))
        moved = 0
        for k in candidates:
            if moved >= w.max_moves:
                break
            i = int(sticky[k])
            here = int(owner[i])
            used[here] -= load[i]
            stay_now = static[home[i], here] + w.spare * (used[here] + load[i]) / cap[here]
            target = best(i, exclude=here)
            if stay_now - costs(i)[target] > w.hysteresis:
                place(i, target)
                moved += 1
            else:
                used[here] += load[i]

    placements = []
    moves = 0
    for i, p in enumerate(parts):
        n = int(owner[i])
        node = live[n]
        lat_ms = float(lat[home[i], node_region[n]])
        util = float(used[n] / cap[n])
        cost = float(static[home[i], n] + w.spare * util)
        was = int(before[i])
        moves += was != n
        where = "home region" if node.region == p.home_region else f"{lat_ms:.0f} ms from {p.home_region}"
        why = f"{where}, {node.carbon_intensity:.0f} gCO2/kWh, {util:.0%} used"
        if was < 0:
            why += ", newly placed" if not previous or p.partition not in previous else ", its node left"
        elif was != n:
            why += f", moved from {live[was].node_id}"
        placements.append(
            Placement(
                p.partition,
                node.node_id,
                p.home_region,
                node.region,
                lat_ms,
                node.carbon_intensity,
                node.renewable_fraction,
                util,
                cost,
                why,
            )
        )
    return Plan(tuple(placements), moves, overloaded)


def node_limits(capacity_eps: np.ndarray, total_load_eps: float, headroom: float) -> np.ndarray:
    """The most load each node is given: `headroom` of its capacity while the lattice can carry the
    load, else (a little above) the lattice's utilisation of it."""
    total = float(capacity_eps.sum())
    return capacity_eps * max(headroom, total_load_eps / total * 1.02 if total > 0 else headroom)


LN100 = float(np.log(100.0))


def capacity_limits(
    capacity_eps: np.ndarray, node_region: np.ndarray, load_eps: np.ndarray, home: np.ndarray, weights: Weights
) -> np.ndarray:
    """Each node's limit: `node_limits`, and with a finite `tail_slack` also `tail_limits` while together
    they leave room for all the load."""
    limit = node_limits(capacity_eps, float(load_eps.sum()), weights.headroom)
    if np.isfinite(weights.tail_slack):
        tight = np.minimum(limit, tail_limits(capacity_eps, node_region, load_eps, home, weights.tail_slack))
        if tight.sum() >= 1.02 * load_eps.sum():
            return tight
    return limit


def latency_budget(
    capacity_eps: np.ndarray, node_region: np.ndarray, load_eps: np.ndarray, home: np.ndarray, weights: Weights
) -> float:
    """The farthest (ms) a partition is served from home while there is room: `latency_budget_ms`, and with a
    finite `tail_slack` no farther than half the tail the region-local spread allows (`tail_target_ms`): an
    event served away also queues there."""
    if not np.isfinite(weights.tail_slack):
        return weights.latency_budget_ms
    tail = tail_target_ms(capacity_eps, node_region, load_eps, home, weights.tail_slack)
    return min(weights.latency_budget_ms, tail / 2)


def _spread(
    capacity_eps: np.ndarray, node_region: np.ndarray, load_eps: np.ndarray, home: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each node's load spread region-locally in proportion to capacity, and its spare capacity then."""
    n_regions = int(max(node_region.max(initial=0), home.max(initial=0))) + 1
    region_cap = np.bincount(node_region, weights=capacity_eps, minlength=n_regions)
    region_load = np.bincount(home, weights=load_eps, minlength=n_regions)
    rho = np.where(region_cap > 0, region_load / np.where(region_cap > 0, region_cap, 1.0), 1.0)[node_region]
    share = rho * capacity_eps
    spare = np.maximum(capacity_eps * (1 - np.minimum(rho, 0.99)), 1e-9)  # events/s: mean wait is 1 / spare
    return share, spare


def tail_target_ms(
    capacity_eps: np.ndarray, node_region: np.ndarray, load_eps: np.ndarray, home: np.ndarray, slack: float
) -> float:
    """`slack` times the p99 (ms) of the queues (M/M/1) if the load were spread region-locally in
    proportion to capacity. Regions are indices shared by `node_region` (per node) and `home` (per partition)."""
    share, spare = _spread(capacity_eps, node_region, load_eps, home)
    return 1000.0 * slack * _mixture_p99(share, 1.0 / spare)


def tail_limits(
    capacity_eps: np.ndarray, node_region: np.ndarray, load_eps: np.ndarray, home: np.ndarray, slack: float
) -> np.ndarray:
    """The most load each node takes so that its queue's p99 stays within `tail_target_ms`; never below its
    share of the region-local spread plus its share (by capacity) of its region's largest partition, so
    that whole partitions still fit at home."""
    share, _ = _spread(capacity_eps, node_region, load_eps, home)
    target_s = tail_target_ms(capacity_eps, node_region, load_eps, home, slack) / 1000.0
    n_regions = int(max(node_region.max(initial=0), home.max(initial=0))) + 1
    largest = np.zeros(n_regions)
    np.maximum.at(largest, home, load_eps)
    region_cap = np.bincount(node_region, weights=capacity_eps, minlength=n_regions)
    floor = share * 1.02 + largest[node_region] * capacity_eps / region_cap[node_region]
    return np.maximum(capacity_eps - LN100 / target_s, floor)


def _mixture_p99(weights: np.ndarray, means: np.ndarray) -> float:
    """The p99 of a mixture of exponentials with these weights and means."""
    w = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1.0 / len(weights))
    lo, hi = 0.0, float(means.max()) * LN100 * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.sum(w * np.exp(-mid / means))) > 0.01:
            lo = mid
        else:
            hi = mid
    return hi


def hard_limits(capacity_eps: np.ndarray, total_load_eps: float, headroom: float) -> np.ndarray:
    """The most load a node takes before a partition is served beyond the latency budget: `node_limits`, or
    `HARD_UTILISATION` of its capacity if more (a busier node at home beats an ocean away)."""
    return np.maximum(node_limits(capacity_eps, total_load_eps, headroom), HARD_UTILISATION * capacity_eps)


def _worst(latency_ms: Mapping[tuple[str, str], float]) -> float:
    return max(latency_ms.values(), default=0.0) or 100.0
