"""The router's decisions, without I/O: which nodes are live, what partitions weigh, when to publish.

`Router` in streamlattice.router.app is only the stream plumbing around this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from streamlattice.config import Lattice
from streamlattice.placement.plan import NodeState, PartitionState, Weights, make_plan
from streamlattice.wire.clock import now_us
from streamlattice.wire.records import Heartbeat, PublishedPlan, Recommendation


def weights(lattice: Lattice) -> Weights:
    """Placement weights from lattice.toml's [placement]."""
    s = lattice.settings
    return Weights(
        latency=s.latency,
        carbon=s.carbon,
        spare=s.spare,
        headroom=s.headroom,
        hysteresis=s.hysteresis,
        max_moves=s.max_moves,
        latency_budget_ms=s.latency_budget_ms,
    )


def live_nodes(
    heartbeats: Iterable[Heartbeat],
    task: str,
    now_us: int,
    timeout_s: float,
    members: frozenset[str] | None = None,
) -> list[NodeState]:
    """Nodes of `task` that are live and do not say they are leaving, each as its newest heartbeat
    describes it.

    Live: its heartbeat is recent, or the worker group's coordinator still counts it among the
    group's `members` (node ids; None when the group could not be asked). Heartbeats travel
    through a topic, and when the broker that leads a node's heartbeat partition dies they stop
    for as long as Kafka takes to elect another leader (the broker's session timeout, ~10 s):
    the node is fine, and moving its partitions away, then back, would cost two rebalances.
    The group's own session is the authority on whether a worker is alive.
    """
    return [
        NodeState(hb.node_id, hb.region, hb.capacity_eps, hb.renewable_fraction, hb.carbon_intensity)
        for hb in heartbeats
        if hb.task == task
        and not hb.stopping
        and (hb.age_s(now_us) <= timeout_s or (members is not None and hb.node_id in members))
    ]


def overloaded(
    assignment: Mapping[int, str], nodes: Iterable[NodeState], loads: Mapping[int, float], headroom: float
) -> list[str]:
    """The live nodes that carry more than `headroom` of their measured capacity under `assignment`
    (a node that has not measured itself yet is not judged)."""
    carried: dict[str, float] = {}
    for partition, node in assignment.items():
        carried[node] = carried.get(node, 0.0) + loads.get(partition, 0.0)
    return [
        f"{n.node_id} ({carried[n.node_id]:.0f}/{n.capacity_eps:.0f} events/s)"
        for n in sorted(nodes, key=lambda n: n.node_id)
        if n.capacity_eps > 0 and carried.get(n.node_id, 0.0) > headroom * n.capacity_eps
    ]


DRAIN_S = 60.0  # a backlog should be gone within this long


def recommend_replicas(
    arrival_eps: float, lag: int, capacity_eps: float, headroom: float, drain_s: float = DRAIN_S
) -> int:
    """Workers needed to keep up with `arrival_eps` and drain `lag` within `drain_s`, each
    filled to `headroom` of `capacity_eps`; 0 for a region with no traffic at all."""
    if arrival_eps <= 0 and lag <= 0:
        return 0
    need = (arrival_eps + lag / drain_s) / max(capacity_eps * headroom, 1e-9)
    return max(1, math.ceil(need - 1e-9))


def recommendations(
    lattice: Lattice, nodes: list[NodeState], rates: Mapping[int, float], lag: Mapping[int, int]
) -> tuple[Recommendation, ...]:
    """Per region of a task: the workers it needs, from its partitions' arrival rate and lag and
    the capacity its nodes measure (the task's other nodes', or a default, while it has none)."""
    default = Weights().default_capacity_eps
    everyone = [n.capacity_eps for n in nodes if n.capacity_eps > 0]
    out = []
    for r in lattice.regions:
        local = [n.capacity_eps for n in nodes if n.region == r.name and n.capacity_eps > 0]
        pool = local or everyone
        capacity = sum(pool) / len(pool) if pool else default
        arrival = sum(rates.get(p, 0.0) for p in r.block)
        backlog = sum(lag.get(p, 0) for p in r.block)
        replicas = recommend_replicas(arrival, backlog, capacity, lattice.settings.headroom)
        out.append(Recommendation(r.name, replicas, round(arrival, 3), backlog, round(capacity, 1)))
    return tuple(out)


@dataclass
class OffsetRates:
    """Arrival rate per partition from successive end offsets (smoothed)."""

    smoothing: float = 0.5
    rates: dict[int, float] = field(default_factory=dict)
    _last: dict[int, tuple[float, int]] = field(default_factory=dict)

    def observe(self, end_offsets: Mapping[int, int], at: float | None = None) -> None:
        """Record end offsets seen at monotonic time `at`."""
        now = time.monotonic() if at is None else at
        for p, end in end_offsets.items():
            if p in self._last:
                t0, e0 = self._last[p]
                if now > t0:
                    rate = max(end - e0, 0) / (now - t0)
                    old = self.rates.get(p)
                    self.rates[p] = rate if old is None else self.smoothing * rate + (1 - self.smoothing) * old
            self._last[p] = (now, end)


@dataclass
class TaskRouting:
    """The router's memory of one task's plans."""

    task: str
    epoch: int = 0
    assignment: dict[int, str] = field(default_factory=dict)
    last: PublishedPlan | None = None
    published_at: float = 0.0  # monotonic
    changed_at: float = -math.inf  # monotonic: when the assignment last changed
    nodes: frozenset[str] = frozenset()  # the live nodes the current assignment was made for
    held: int = 0  # changes held back so far (see decide)
    why: str = ""  # why the last change was published when it was

    def recover(self, plan: PublishedPlan) -> None:
        """Take up where a published plan left off (after a restart)."""
        if plan.epoch >= self.epoch:
            self.epoch, self.assignment, self.last = plan.epoch, plan.assignment, plan
            self.nodes = frozenset(plan.assignment.values())

    def decide(
        self,
        lattice: Lattice,
        nodes: list[NodeState],
        loads: Mapping[int, float],
        refresh_s: float,
        now: float | None = None,
        lag: Mapping[int, int] | None = None,
    ) -> PublishedPlan | None:
        """The plan to publish now, if any: a changed plan with the next epoch, or the same one
        again once `refresh_s` has passed (its age tells workers the router lives).

        Every change is a rebalance of the group, which pauses it (in exactly-once mode each
        moved partition also fences its transactional producer), and the measurements a plan is
        made from (capacity, arrival rates) swing while the cluster is in trouble. So a change
        that only improves placement waits until `plan_hold_s` has passed since the last change.
        Published at once: a change because a node went (its partitions have no one), and one
        because a node came while another carries more than its capacity allows (a scale-out).
        Otherwise a node that came back after a crash would take its partitions from the nodes
        still draining the crash's backlog: one more rebalance in the middle of it.
        """
        now = time.monotonic() if now is None else now
        if not nodes:
            return None
        recommended = recommendations(lattice, nodes, loads, lag or {})
        parts = [PartitionState(p, r.name, loads.get(p, 0.0)) for r in lattice.regions for p in r.block]
        plan = make_plan(parts, nodes, lattice.latency_ms, weights(lattice), previous=self.assignment or None)
        live = frozenset(n.node_id for n in nodes)
        due = self.last is None or now - self.published_at >= refresh_s
        if plan.assignment != self.assignment:
            gone, came = sorted(self.nodes - live), sorted(live - self.nodes)
            over = overloaded(self.assignment, nodes, loads, lattice.settings.headroom) if came else []
            urgent = bool(gone or over)
            if self.last is not None and not urgent and now - self.changed_at < lattice.settings.plan_hold_s:
                self.held += 1
                if not due:
                    return None
                self.last = replace(self.last, created_us=now_us(), moves=0, recommendations=recommended)
                self.published_at = now
                return self.last
            self.epoch += 1
            self.changed_at = now
            if gone:
                self.why = f"{', '.join(gone)} gone"
            elif over:
                self.why = f"{', '.join(came)} came while {', '.join(over)} ran over capacity"
            else:
                self.why = "placement improved" if self.last is not None else "first plan"
        elif not due:
            return None
        self.assignment = plan.assignment
        self.nodes = live
        self.last = PublishedPlan.of(self.task, self.epoch, plan, recommended)
        self.published_at = now
        return self.last
