"""The oracle: the least-carbon placement of one step, knowing that step's load and power exactly.

A linear program (a min-cost flow: partitions' events to nodes) solved with scipy's HiGHS:

    minimise   Σ x[p,n] · load[p] · joules_per_event[n] · intensity[n]        (busy carbon)
             + BIG · Σ x[p,n] · load[p] · (1 + latency[p,n] / worst) over pairs beyond the latency budget
             + MID · Σ s[n]                                  load above the nodes' limits
    subject to Σ_n x[p,n] = 1                         every partition served in full
               Σ_p x[p,n] · load[p] ≤ limit[n] + s[n]  the placement code's headroom and tail limits
               0 ≤ x[p,n] ≤ 1,  0 ≤ s[n] ≤ hard[n] - limit[n]  (`hard_limits`)

It is the fractional relaxation (a partition may be split over nodes), so its carbon is a true
lower bound on any whole-partition placement under the same constraints: capacity headroom
and the latency objective (no event served beyond the placement code's `latency_budget` while a
node within it has room; no node's queue tail beyond its `tail_limits`). Moves cost it nothing.
Idle and embodied carbon do not depend on placement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

from streamlattice.placement.plan import PartitionState, Weights, capacity_limits, hard_limits, latency_budget
from streamlattice.power.energy import grams
from streamlattice.sim.policies import Shares
from streamlattice.sim.scenario import SimNode

METHOD = "LP relaxation (fractional partitions), scipy.optimize.linprog HiGHS: a lower bound"


@dataclass(frozen=True)
class StepCosts:
    """What a step's placement is judged on: busy gCO2 per event on each node, capacity limits, latency."""

    partitions: Sequence[PartitionState]
    nodes: Sequence[SimNode]
    g_per_event: np.ndarray  # per node
    limit: np.ndarray  # per node, events/s: headroom and the tail limits
    hard: np.ndarray  # per node, events/s: the placement code's hard limits (before the latency budget yields)
    latency: np.ndarray  # [partition, node] ms
    budget_ms: float

    @classmethod
    def of(
        cls,
        partitions: Sequence[PartitionState],
        nodes: Sequence[SimNode],
        intensity: Mapping[str, float],
        latency_ms: Mapping[tuple[str, str], float],
        weights: Weights,
    ) -> StepCosts:
        """The costs of a step: `intensity` is gCO2/kWh per node id; limits as the placement code sets them."""
        g = np.array([grams(n.joules_per_event, intensity[n.node_id]) for n in nodes])
        cap = np.array([n.capacity_eps for n in nodes])
        load = np.array([p.load_eps for p in partitions])
        regions = {r: i for i, r in enumerate(sorted({n.region for n in nodes} | {p.home_region for p in partitions}))}
        node_region = np.array([regions[n.region] for n in nodes])
        home = np.array([regions[p.home_region] for p in partitions])
        limit = capacity_limits(cap, node_region, load, home, weights)
        hard = np.maximum(hard_limits(cap, float(load.sum()), weights.headroom), limit)
        lat = np.array([[latency_ms.get((p.home_region, n.region), 0.0) for n in nodes] for p in partitions])
        return cls(partitions, nodes, g, limit, hard, lat, latency_budget(cap, node_region, load, home, weights))

    def carbon_g_per_s(self, shares: Shares) -> float:
        """Busy gCO2 per second of a placement."""
        col = {n.node_id: k for k, n in enumerate(self.nodes)}
        return sum(
            p.load_eps * f * self.g_per_event[col[n]] for p in self.partitions for n, f in shares[p.partition].items()
        )

    @property
    def over_budget_weight(self) -> np.ndarray:
        """[partition, node]: 0 within the latency budget, else 1 + latency / the worst latency."""
        worst = max(float(self.latency.max()), 1e-9)
        return (self.latency > self.budget_ms) * (1 + self.latency / worst)

    def over_budget_eps(self, shares: Shares) -> float:
        """Events/s a placement serves beyond the latency budget, each weighted by 1 + latency / the worst."""
        col = {n.node_id: k for k, n in enumerate(self.nodes)}
        weight = self.over_budget_weight
        return sum(
            p.load_eps * f * weight[i, col[n]]
            for i, p in enumerate(self.partitions)
            for n, f in shares[p.partition].items()
        )

    def used(self, shares: Shares) -> np.ndarray:
        """Events/s per node of a placement."""
        used = np.zeros(len(self.nodes))
        col = {n.node_id: k for k, n in enumerate(self.nodes)}
        for p in self.partitions:
            for n, f in shares[p.partition].items():
                used[col[n]] += p.load_eps * f
        return used

    def tail_excess_eps(self, shares: Shares) -> float:
        """Events/s a placement puts on nodes above their limits (headroom and tail)."""
        return float(np.maximum(self.used(shares) - self.limit, 0.0).sum())

    def within_limits(self, shares: Shares) -> bool:
        """Whether no node gets more than its hard limit."""
        return bool(np.all(self.used(shares) <= self.hard * (1 + 1e-6) + 1e-6))


def oracle_shares(costs: StepCosts) -> Shares:
    """The least-carbon fractional placement of the step."""
    within = costs.latency <= costs.budget_ms
    if not within.all():  # most steps fit within the budget: a smaller program first
        x = _solve(costs, within, penalise=False)
        if x is not None:
            return _shares(costs, x)
    x = _solve(costs, np.ones_like(within), penalise=True)
    if x is None:  # cannot happen while limits sum above the load; a clear failure if it does
        raise RuntimeError("the oracle's linear program has no solution")
    return _shares(costs, x)


def _solve(costs: StepCosts, allowed: np.ndarray, penalise: bool) -> np.ndarray | None:
    """x[partition, node] over the allowed pairs, or None if infeasible. A node may go above its tail limit
    up to its headroom at a price below the latency budget's and above any carbon."""
    n_p, n_n = allowed.shape
    load = np.array([max(p.load_eps, 1e-9) for p in costs.partitions])
    pi, ni = np.nonzero(allowed)
    top = max(float(costs.g_per_event.max()), 1e-12)
    c = load[pi] * costs.g_per_event[ni]
    if penalise:
        c = c + 1e3 * top * load[pi] * costs.over_budget_weight[pi, ni]
    c = np.concatenate([c, np.full(n_n, 10 * top)])  # then one slack per node: its load above the tail limit
    k = np.arange(len(pi))
    a_eq = csr_matrix((np.ones(len(pi)), (pi, k)), shape=(n_p, len(pi) + n_n))
    a_ub = csr_matrix(
        (np.concatenate([load[pi], -np.ones(n_n)]), (np.concatenate([ni, np.arange(n_n)]), np.arange(len(pi) + n_n))),
        shape=(n_n, len(pi) + n_n),
    )
    bounds = [(0.0, 1.0)] * len(pi) + [(0.0, float(h - t)) for h, t in zip(costs.hard, costs.limit, strict=True)]
    res = linprog(c, A_ub=a_ub, b_ub=costs.limit, A_eq=a_eq, b_eq=np.ones(n_p), bounds=bounds, method="highs")
    if res.status != 0:
        return None
    x = np.zeros((n_p, n_n))
    x[pi, ni] = res.x[: len(pi)]
    return x


def _shares(costs: StepCosts, x: np.ndarray) -> Shares:
    out: Shares = {}
    for i, p in enumerate(costs.partitions):
        keep = {costs.nodes[int(k)].node_id: float(x[i, k]) for k in np.flatnonzero(x[i] > 1e-7)}
        total = sum(keep.values())
        out[p.partition] = {n: f / total for n, f in keep.items()}
    return out
