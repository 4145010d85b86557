"""The simulator: a day of power and load, five policies side by side. Pure: a Scenario in, results out.

Each step (5 simulated minutes) every policy places the partitions on the nodes, knowing the
step's load and power (streamlattice.sim.policies, streamlattice.sim.oracle). Each node is an
M/M/1 queue at its capacity (a node above it serves at `SATURATED_MS`); an event also waits
the one-way latency between its home region and its node's region, and, in a step whose plan
moved partitions, the rebalance pause if it arrived during it. Energy and carbon are counted
as streamlattice.sim.energy says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamlattice.placement.plan import NodeState, PartitionState, Weights, make_plan
from streamlattice.power.energy import grams
from streamlattice.sim.energy import DEFAULT_ENERGY, EnergyModel
from streamlattice.sim.oracle import StepCosts, oracle_shares
from streamlattice.sim.policies import (
    Shares,
    least_loaded_weights,
    range_assignment,
    region_local_assignment,
    whole,
)
from streamlattice.sim.scenario import Scenario, SimNode, partition_loads

POLICIES = ("range", "region_local", "least_loaded", "lattice", "oracle")
SATURATED_MS = 2000.0  # service latency charged while a node runs above its capacity


@dataclass
class PolicyResult:
    """One policy's day, summed, and its carbon per step."""

    events: float = 0.0
    carbon_g: float = 0.0  # operational, average intensity
    carbon_marginal_g: float = 0.0  # operational, marginal intensity
    busy_carbon_g: float = 0.0  # the part that placement decides: busy power and warm-ups, average intensity
    embodied_g: float = 0.0
    energy_j: float = 0.0
    idle_j: float = 0.0
    renewable_j: float = 0.0
    overload_s: float = 0.0
    moves: int = 0
    rebalances: int = 0
    remote_events: float = 0.0
    carbon_rate: list[float] = field(default_factory=list)  # gCO2 per 1k inferences, per step (SCI, average)
    region_share: list[dict[str, float]] = field(default_factory=list)  # share of events served per region
    latency: list[tuple[float, float, float, float]] = field(default_factory=list)
    # (events, network ms, mean queueing ms, rebalance pause ms they may wait)

    def summary(self, rng: np.random.Generator) -> dict[str, float]:
        """The day's figures: carbon per 1,000 inferences (SCI), latency quantiles, overload and moves."""
        p50, p99 = self.quantiles(rng)
        per_1k = 1000.0 / max(self.events, 1e-9)
        return {
            "carbon_g_per_1k": float(f"{(self.carbon_g + self.embodied_g) * per_1k:.6g}"),
            "carbon_marginal_g_per_1k": float(f"{(self.carbon_marginal_g + self.embodied_g) * per_1k:.6g}"),
            "busy_carbon_g_per_1k": float(f"{self.busy_carbon_g * per_1k:.6g}"),
            "embodied_g_per_1k": float(f"{self.embodied_g * per_1k:.6g}"),
            "energy_j_per_1k": round(self.energy_j * per_1k, 2),
            "idle_share": round(self.idle_j / max(self.energy_j, 1e-9), 4),
            "renewable_share": round(self.renewable_j / max(self.energy_j, 1e-9), 4),
            "remote_share": round(self.remote_events / max(self.events, 1e-9), 4),
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "overload_s": round(self.overload_s, 1),
            "moves": self.moves,
            "rebalances": self.rebalances,
        }

    def quantiles(self, rng: np.random.Generator, samples: int = 200_000) -> tuple[float, float]:
        """p50 and p99 of event latency, sampled from the mixture of the steps' latencies."""
        if not self.latency:
            return 0.0, 0.0
        arr = np.array(self.latency)
        w = arr[:, 0]
        if w.sum() <= 0:
            return 0.0, 0.0
        pick = rng.choice(len(w), size=samples, p=w / w.sum())
        lat = arr[pick, 1] + rng.exponential(1.0, samples) * arr[pick, 2] + rng.uniform(0, 1, samples) * arr[pick, 3]
        return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


@dataclass(frozen=True)
class Step:
    """One step of one policy: where events went and what they cost."""

    busy_g_per_s: float
    over_budget_eps: float  # weighted by 1 + latency / the worst
    tail_excess_eps: float
    within_limits: bool  # within every node's hard limit


def simulate(
    scenario: Scenario,
    weights: Weights,
    energy: EnergyModel = DEFAULT_ENERGY,
    policies: Sequence[str] = POLICIES,
    steps: list[dict[str, Step]] | None = None,
) -> dict[str, PolicyResult]:
    """Run the policies through the day; `steps`, if given, collects each step's costs per policy."""
    s = scenario
    home = {p: r.name for r in s.regions for p in r.partitions}
    power = {r.name: r.power for r in s.regions}
    node_ids = [n.node_id for n in s.nodes]
    by_id = {n.node_id: n for n in s.nodes}
    plan_weights = {"least_loaded": least_loaded_weights(weights), "lattice": weights}
    static_range = whole(range_assignment(sorted(home), node_ids))
    results = {p: PolicyResult() for p in policies}
    previous: dict[str, Shares] = {}
    for k in range(int(s.hours * 3600 / s.step_s)):
        t = s.start + k * s.step_s
        load = partition_loads(s, t)
        avg = {n.node_id: power[n.region].average_g(t) for n in s.nodes}
        marginal = {n.node_id: power[n.region].marginal_g_at(t) for n in s.nodes}
        renewable = {n.node_id: power[n.region].renewable(t) for n in s.nodes}
        parts = [PartitionState(p, home[p], load[p]) for p in sorted(load)]
        costs = StepCosts.of(parts, s.nodes, avg, s.latency_ms, weights)
        record: dict[str, Step] = {}
        for policy in policies:
            before = previous.get(policy)
            if policy == "range":
                shares = static_range
            elif policy == "region_local":
                prev = {p: max(f, key=f.__getitem__) for p, f in before.items()} if before else None
                shares = whole(region_local_assignment(parts, s.nodes, s.latency_ms, weights.headroom, prev))
            elif policy == "oracle":
                shares = oracle_shares(costs)
            else:
                states = [
                    NodeState(
                        n.node_id, n.region, n.capacity_eps, renewable[n.node_id], avg[n.node_id], n.joules_per_event
                    )
                    for n in s.nodes
                ]
                prev = {p: max(f, key=f.__getitem__) for p, f in before.items()} if before else None
                shares = whole(make_plan(parts, states, s.latency_ms, plan_weights[policy], prev).assignment)
            previous[policy] = shares
            moved = _moved(before, shares)
            _account(results[policy], s, energy, shares, load, avg, marginal, renewable, by_id, home, moved, policy)
            record[policy] = Step(
                costs.carbon_g_per_s(shares),
                costs.over_budget_eps(shares),
                costs.tail_excess_eps(shares),
                costs.within_limits(shares),
            )
        if steps is not None:
            steps.append(record)
    return results


def _moved(before: Shares | None, after: Shares) -> list[tuple[int, str]]:
    """(partition, new node) of the partitions whose main node changed."""
    if before is None:
        return []
    out = []
    for p, f in after.items():
        now = max(f, key=f.__getitem__)
        was = before.get(p)
        if was is not None and max(was, key=was.__getitem__) != now:
            out.append((p, now))
    return out


def _account(
    r: PolicyResult,
    s: Scenario,
    energy: EnergyModel,
    shares: Shares,
    load: Mapping[int, float],
    avg: Mapping[str, float],
    marginal: Mapping[str, float],
    renewable: Mapping[str, float],
    by_id: Mapping[str, SimNode],
    home: Mapping[int, str],
    moved: list[tuple[int, str]],
    policy: str,
) -> None:
    node_load = {n.node_id: 0.0 for n in s.nodes}
    for p, f in shares.items():
        for n, x in f.items():
            node_load[n] += load[p] * x
    rebalance = bool(moved)
    pause_ms = energy.pause_s * 1000.0 if rebalance and policy != "oracle" else 0.0
    paused_share = min(energy.pause_s / s.step_s, 1.0) if pause_ms else 0.0
    step_events = 0.0
    served: dict[str, float] = {}
    for p, f in shares.items():
        for n, x in f.items():
            node = by_id[n]
            lam, mu = node_load[n], node.capacity_eps
            events = load[p] * x * s.step_s
            mean_ms = 1000.0 / (mu - lam) if lam < mu else SATURATED_MS
            net_ms = s.latency_ms.get((home[p], node.region), 0.0)
            if paused_share:
                r.latency.append((events * paused_share, net_ms, mean_ms, pause_ms))
            r.latency.append((events * (1 - paused_share), net_ms, mean_ms, 0.0))
            if node.region != home[p]:
                r.remote_events += events
            step_events += events
            served[node.region] = served.get(node.region, 0.0) + events
    step_op = 0.0
    for node in s.nodes:
        util = node_load[node.node_id] / node.capacity_eps
        idle = node.idle_w * s.step_s
        busy = node.busy_w * util * s.step_s  # events beyond capacity wait, and are then served all the same
        i = node.node_id
        r.idle_j += idle
        r.energy_j += idle + busy
        r.renewable_j += (idle + busy) * renewable[i]
        r.carbon_g += grams(idle + busy, avg[i])
        r.carbon_marginal_g += grams(idle + busy, marginal[i])
        r.busy_carbon_g += grams(busy, avg[i])
        r.embodied_g += energy.embodied_g(node.embodied_kg, s.step_s)
        step_op += grams(idle + busy, avg[i]) + energy.embodied_g(node.embodied_kg, s.step_s)
    if policy != "oracle":
        for _, n in moved:
            node = by_id[n]
            warm = node.busy_w * energy.warmup_s
            r.energy_j += warm
            r.renewable_j += warm * renewable[n]
            r.carbon_g += grams(warm, avg[n])
            r.carbon_marginal_g += grams(warm, marginal[n])
            r.busy_carbon_g += grams(warm, avg[n])
            step_op += grams(warm, avg[n])
    r.moves += len(moved)
    r.rebalances += rebalance
    r.events += step_events
    if any(node_load[n.node_id] > n.capacity_eps for n in s.nodes):
        r.overload_s += s.step_s
    r.carbon_rate.append(1000.0 * step_op / max(step_events, 1e-9))
    r.region_share.append({k: v / max(step_events, 1e-9) for k, v in served.items()})
