"""The oracle: the least-carbon placement of one step, knowing that step's load and power exactly.

A linear program (a min-cost flow: partitions' events to nodes) solved with scipy's HiGHS:

    minimise   Σ x[p,n] · load[p] · joules_per_event[n] · intensity[n]        (busy carbon)
             + BIG · Σ x[p,n] · load[p] over pairs beyond the latency budget
    subject to Σ_n x[p,n] = 1                  every partition served in full
               Σ_p x[p,n] · load[p] ≤ limit[n] the placement code's capacity headroom
               0 ≤ x[p,n] ≤ 1

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

from streamlattice.placement.plan import PartitionState, Weights, capacity_limits, latency_budget
from streamlattice.sim.policies import Shares
from streamlattice.sim.scenario import SimNode

METHOD = "LP relaxation (fractional partitions), scipy.optimize.linprog HiGHS: a lower bound"


@dataclass(frozen=True)
class StepCosts:
    """What a step's placement is judged on: busy gCO2 per event on each node, capacity limits, latency."""

    partitions: Sequence[PartitionState]
    nodes: Sequence[SimNode]
    g_per_event: np.ndarray  # per node
    limit: np.ndarray  # per node, events/s
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
        g = np.array([n.joules_per_event / 3.6e6 * intensity[n.node_id] for n in nodes])
        cap = np.array([n.capacity_eps for n in nodes])
        load = np.array([p.load_eps for p in partitions])
        regions = {r: i for i, r in enumerate(sorted({n.region for n in nodes} | {p.home_region for p in partitions}))}
        node_region = np.array([regions[n.region] for n in nodes])
        home = np.array([regions[p.home_region] for p in partitions])
        limit = capacity_limits(cap, node_region, load, home, weights)
        lat = np.array([[latency_ms.get((p.home_region, n.region), 0.0) for n in nodes] for p in partitions])
        return cls(partitions, nodes, g, limit, lat, latency_budget(cap, node_region, load, home, weights))

    def carbon_g_per_s(self, shares: Shares) -> float:
        """Busy gCO2 per second of a placement."""
        col = {n.node_id: k for k, n in enumerate(self.nodes)}
        return sum(
            p.load_eps * f * self.g_per_event[col[n]] for p in self.partitions for n, f in shares[p.partition].items()
        )

    def over_budget_eps(self, shares: Shares) -> float:
        """Events/s a placement serves beyond the latency budget."""
        col = {n.node_id: k for k, n in enumerate(self.nodes)}
        return sum(
            p.load_eps * f
            for i, p in enumerate(self.partitions)
            for n, f in shares[p.partition].items()
            if self.latency[i, col[n]] > self.budget_ms
        )

    def within_limits(self, shares: Shares) -> bool:
        """Whether no node gets more than its limit."""
        used = np.zeros(len(self.nodes))
        col = {n.node_id: k for k, n in enumerate(self.nodes)}
        for p in self.partitions:
            for n, f in shares[p.partition].items():
                used[col[n]] += p.load_eps * f
        return bool(np.all(used <= self.limit * (1 + 1e-6) + 1e-6))


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
    """x[partition, node] over the allowed pairs, or None if infeasible."""
    n_p, n_n = allowed.shape
    load = np.array([max(p.load_eps, 1e-9) for p in costs.partitions])
    pi, ni = np.nonzero(allowed)
    c = load[pi] * costs.g_per_event[ni]
    if penalise:
        big = 1e3 * max(float(costs.g_per_event.max()), 1e-12)
        c = c + load[pi] * big * (costs.latency[pi, ni] > costs.budget_ms)
    k = np.arange(len(pi))
    a_eq = csr_matrix((np.ones(len(pi)), (pi, k)), shape=(n_p, len(pi)))
    a_ub = csr_matrix((load[pi], (ni, k)), shape=(n_n, len(pi)))
    res = linprog(c, A_ub=a_ub, b_ub=costs.limit, A_eq=a_eq, b_eq=np.ones(n_p), bounds=(0, 1), method="highs")
    if res.status != 0:
        return None
    x = np.zeros((n_p, n_n))
    x[pi, ni] = res.x
    return x


def _shares(costs: StepCosts, x: np.ndarray) -> Shares:
    out: Shares = {}
    for i, p in enumerate(costs.partitions):
        keep = {costs.nodes[int(k)].node_id: float(x[i, k]) for k in np.flatnonzero(x[i] > 1e-7)}
        total = sum(keep.values())
        out[p.partition] = {n: f / total for n, f in keep.items()}
    return out
