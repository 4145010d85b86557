"""The simulator: a day of power and load through the same placement code, four policies compared.

Pure: a Scenario in, a SimResult out. Each step (simulated minutes) every policy assigns
the partitions to nodes; each node is an M/M/1 queue at its measured capacity, each event
also pays the latency between its home region and its node's region, and uses the energy
of its share of its node's busy time at that node's grid carbon intensity. Policies:

- range, roundrobin: Kafka's assignors (region- and power-blind, never move);
- capacity: the placement code with no carbon weight (sticky, spreads by spare capacity);
- lattice: the placement code with lattice.toml's weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from streamlattice.placement.plan import NodeState, PartitionState, Weights, make_plan
from streamlattice.power.profiles import PowerSource

POLICIES = ("range", "roundrobin", "capacity", "lattice")
SATURATED_MS = 2000.0  # service latency charged while a node runs above its capacity


@dataclass(frozen=True)
class SimNode:
    """A node: where it is, how fast it serves, what it draws and from which grid."""

    node_id: str
    region: str
    capacity_eps: float
    watts: float
    power: PowerSource


@dataclass(frozen=True)
class SimRegion:
    """A region: its partitions, its time zone (for the shape of its demand)."""

    name: str
    partitions: Sequence[int]
    tz_hours: float
    peak_eps: float  # events/s a partition of this region sees at its local peak


@dataclass(frozen=True)
class Scenario:
    """Everything a simulated day needs."""

    regions: Sequence[SimRegion]
    nodes: Sequence[SimNode]
    latency_ms: Mapping[tuple[str, str], float]
    weights: Weights
    start: float  # simulated epoch seconds of the first step
    hours: float = 24.0
    step_s: float = 300.0


@dataclass
class PolicyResult:
    """One policy's day, summed and as series per step."""

    events: float = 0.0
    carbon_g: float = 0.0
    energy_j: float = 0.0
    renewable_j: float = 0.0
    overload_s: float = 0.0
    moves: int = 0
    carbon_rate: list[float] = field(default_factory=list)  # gCO2 per 1k inferences, per step
    region_share: list[dict[str, float]] = field(default_factory=list)  # partitions served per region
    _latency: list[tuple[float, float, float]] = field(default_factory=list)  # (events, network ms, mean ms)

    def summary(self, rng: np.random.Generator) -> dict[str, float]:
        """carbon_g_per_1k, renewable_share, p50_ms, p99_ms, overload_s, moves."""
        p50, p99 = self._quantiles(rng)
        return {
            "carbon_g_per_1k": float(f"{1000 * self.carbon_g / max(self.events, 1e-9):.5g}"),
            "renewable_share": round(self.renewable_j / max(self.energy_j, 1e-9), 4),
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "overload_s": round(self.overload_s, 1),
            "moves": self.moves,
        }

    def _quantiles(self, rng: np.random.Generator, samples: int = 400_000) -> tuple[float, float]:
        # events of a (partition, step) wait network + Exp(mean) in an M/M/1 queue; sample the mixture
        w = np.array([e for e, _, _ in self._latency])
        if not len(w) or w.sum() <= 0:
            return 0.0, 0.0
        pick = rng.choice(len(w), size=samples, p=w / w.sum())
        net = np.array([n for _, n, _ in self._latency])[pick]
        mean = np.array([m for _, _, m in self._latency])[pick]
        lat = net + rng.exponential(1.0, samples) * mean
        return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def demand(region: SimRegion, t: float) -> float:
    """Events/s per partition of `region` at `t`: a daytime hump over a night floor."""
    hour = ((t / 3600.0) + region.tz_hours) % 24.0
    return region.peak_eps * (0.3 + 0.7 * max(0.0, math.sin(math.pi * (hour - 7.0) / 14.0)) ** 2)


def range_assignment(partitions: Sequence[int], node_ids: Sequence[str]) -> dict[int, str]:
    """Kafka's RangeAssignor for one topic: contiguous ranges over members sorted by id."""
    members = sorted(node_ids)
    per, extra = divmod(len(partitions), len(members))
    out: dict[int, str] = {}
    i = 0
    for k, m in enumerate(members):
        n = per + (1 if k < extra else 0)
        for p in sorted(partitions)[i : i + n]:
            out[p] = m
        i += n
    return out


def roundrobin_assignment(partitions: Sequence[int], node_ids: Sequence[str]) -> dict[int, str]:
    """Kafka's RoundRobinAssignor for one topic."""
    members = sorted(node_ids)
    return {p: members[i % len(members)] for i, p in enumerate(sorted(partitions))}


def simulate(scenario: Scenario, seed: int = 0) -> dict[str, PolicyResult]:
    """Run every policy through the day."""
    s = scenario
    parts_home = {p: r for r in s.regions for p in r.partitions}
    all_parts = sorted(parts_home)
    node_ids = [n.node_id for n in s.nodes]
    by_id = {n.node_id: n for n in s.nodes}
    static = {"range": range_assignment(all_parts, node_ids), "roundrobin": roundrobin_assignment(all_parts, node_ids)}
    weights = {"capacity": replace(s.weights, carbon=0.0), "lattice": s.weights}
    results = {p: PolicyResult() for p in POLICIES}
    previous: dict[str, dict[int, str]] = {}
    steps = int(s.hours * 3600 / s.step_s)
    for k in range(steps):
        t = s.start + k * s.step_s
        load = {p: demand(parts_home[p], t) for p in all_parts}
        readings = {n.node_id: n.power.read(t) for n in s.nodes}
        states = [
            NodeState(
                n.node_id,
                n.region,
                n.capacity_eps,
                readings[n.node_id].renewable_fraction,
                readings[n.node_id].carbon_intensity,
            )
            for n in s.nodes
        ]
        parts = [PartitionState(p, parts_home[p].name, load[p]) for p in all_parts]
        for policy in POLICIES:
            if policy in static:
                assignment = static[policy]
            else:
                plan = make_plan(parts, states, s.latency_ms, weights[policy], previous.get(policy))
                assignment = plan.assignment
                if policy in previous:
                    results[policy].moves += plan.moves
                previous[policy] = assignment
            _account(results[policy], s, assignment, load, readings, by_id, parts_home)
    return results


def _account(
    r: PolicyResult,
    s: Scenario,
    assignment: Mapping[int, str],
    load: Mapping[int, float],
    readings: Mapping[str, object],
    by_id: Mapping[str, SimNode],
    parts_home: Mapping[int, SimRegion],
) -> None:
    node_load: dict[str, float] = {}
    for p, n in assignment.items():
        node_load[n] = node_load.get(n, 0.0) + load[p]
    step_events = step_carbon = 0.0
    share: dict[str, float] = {}
    for p, n in assignment.items():
        node = by_id[n]
        lam, mu = node_load[n], node.capacity_eps
        events = load[p] * s.step_s
        mean_ms = 1000.0 / (mu - lam) if lam < mu else SATURATED_MS
        net_ms = s.latency_ms.get((parts_home[p].name, node.region), 0.0)
        r._latency.append((events, net_ms, mean_ms))
        joules = events * node.watts / mu  # each event's share of the node's busy time
        reading = readings[n]
        carbon = joules / 3.6e6 * reading.carbon_intensity  # type: ignore[attr-defined]
        r.events += events
        r.energy_j += joules
        r.renewable_j += joules * reading.renewable_fraction  # type: ignore[attr-defined]
        r.carbon_g += carbon
        step_events += events
        step_carbon += carbon
        share[node.region] = share.get(node.region, 0.0) + 1
    if any(node_load[n] > by_id[n].capacity_eps for n in node_load):
        r.overload_s += s.step_s
    r.carbon_rate.append(1000 * step_carbon / max(step_events, 1e-9))
    total = sum(share.values())
    r.region_share.append({k: v / total for k, v in share.items()})


def synthetic(
    regions: int,
    nodes: int,
    power_of: Callable[[int, float], PowerSource],
    weights: Weights,
    start: float,
    hours: float = 24.0,
    capacity_eps: float = 1000.0,
    utilisation: float = 0.45,
) -> Scenario:
    """A lattice of `regions` regions spread over the time zones and `nodes` nodes among them."""
    tz = [round(-8 + 16 * i / max(regions - 1, 1), 1) for i in range(regions)]
    names = [f"r{i}" for i in range(regions)]
    latency = {
        (a, b): 0.0 if i == j else 20.0 + 30.0 * abs(i - j) for i, a in enumerate(names) for j, b in enumerate(names)
    }
    parts_per = 4
    # demand at peak sized so that the day's mean load is `utilisation` of the lattice
    mean_factor = 0.3 + 0.7 * 0.375  # the mean of demand()'s shape over a day
    peak = utilisation * nodes * capacity_eps / (regions * parts_per * mean_factor)
    sim_regions = [SimRegion(n, range(i * parts_per, (i + 1) * parts_per), tz[i], peak) for i, n in enumerate(names)]
    sim_nodes = [
        SimNode(
            f"{names[k % regions]}-{k // regions}",
            names[k % regions],
            capacity_eps,
            15.0,
            power_of(k % regions, tz[k % regions]),
        )
        for k in range(nodes)
    ]
    return Scenario(sim_regions, sim_nodes, latency, weights, start, hours)
