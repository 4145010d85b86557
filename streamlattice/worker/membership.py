"""Membership: the node's side of the lattice's group protocol.

What the node tells the assignor (its region, measured capacity and partitions), the plan
it follows (it asks for a rebalance when a newer plan moves its partitions), and what it does
when partitions move: before they go, every batch taken from them is finished and committed
(drained); when they come, the checkpoint decides where reading starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.placement.assignment import AssignmentInfo, Member
from streamlattice.router.assignor import lattice_assignor, request_rebalance
from streamlattice.router.plans import PlanFollower
from streamlattice.wire.records import PublishedPlan
from streamlattice.worker.checkpoint import Checkpoint

log = logging.getLogger(__name__)

PLAN_WAIT_S = 5.0  # how long a starting node waits for the newest plan before joining


class Membership:
    """A node's membership of its task's group."""

    def __init__(self, lattice: Lattice, task: str, node_id: str, region: str, capacity: Callable[[], float]) -> None:
        self.lattice = lattice
        self.task = task
        self.node_id = node_id
        self.region = region
        self.capacity = capacity
        self.generation = 0  # bumped when partitions are revoked: batches of an older one are stale
        self.assigned = AssignmentInfo(0, "sticky")
        self.plans: PlanFollower | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._rejoin_epoch = 0  # newest plan epoch a rebalance was asked for

    async def start(self, settings: KafkaSettings) -> None:
        """Follow the task's plans, and read the newest before joining, so the first assignment follows it."""
        self.plans = PlanFollower(self.lattice, self.task, settings, self._on_plan)
        await self.plans.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.plans.caught_up.wait(), PLAN_WAIT_S)

    async def stop(self) -> None:
        """Stop following plans."""
        if self.plans is not None:
            await self.plans.stop()

    def assignor(self) -> type[AbstractPartitionAssignor]:
        """The partition assignor this node brings to the group."""
        return lattice_assignor(self.lattice, self.member, self.plan_for_assignment, self.on_assigned)

    def listener(self, drain: Callable[[], Awaitable[None]], checkpoint: Checkpoint) -> ConsumerRebalanceListener:
        """The rebalance listener: drain before partitions go, let the checkpoint place new ones."""
        return _Rebalance(self, drain, checkpoint)

    def owned(self) -> list[TopicPartition]:
        """The partitions this node holds now."""
        return sorted(self.consumer.assignment()) if self.consumer else []

    def member(self) -> Member:
        """This node as the assignor sees it."""
        return Member(self.node_id, self.region, self.capacity(), tuple(tp.partition for tp in self.owned()))

    def plan_for_assignment(self) -> PublishedPlan | None:
        """The newest plan, unless it is stale (then the assignor falls back to sticky)."""
        return self.plans.current(self.lattice.settings.plan_stale_s) if self.plans else None

    def on_assigned(self, info: AssignmentInfo) -> None:
        """The assignor's answer for this generation: by plan (which epoch) or sticky."""
        self.assigned = info
        # The leader may not have read the newest plan yet: ask again shortly.
        latest = self.plan_for_assignment()
        if latest is not None and latest.epoch > info.epoch:
            self._rejoin_epoch = 0  # the request for this epoch did not land: allow another
            asyncio.get_running_loop().call_later(1.0, self.maybe_rebalance)

    def _on_plan(self, plan: PublishedPlan) -> None:
        self.maybe_rebalance()

    def maybe_rebalance(self) -> None:
        """Ask for a rebalance if the newest plan moves this node's partitions."""
        latest = self.plan_for_assignment()
        if self.consumer is None or latest is None or latest.epoch <= self.assigned.epoch:
            return
        if latest.epoch == self._rejoin_epoch and self.assigned.epoch != 0:
            return  # asked already for this epoch; on_assigned re-arms if the answer predates it
        mine = {p for p, n in latest.assignment.items() if n == self.node_id}
        held = {tp.partition for tp in self.consumer.assignment()}
        if mine != held or self.assigned.mode != "plan":
            log.info("node %s: plan epoch %d changes the assignment; rebalancing", self.node_id, latest.epoch)
            self._rejoin_epoch = latest.epoch
            request_rebalance(self.consumer)


class _Rebalance(ConsumerRebalanceListener):
    """Before partitions move, finish and commit what was taken from them."""

    def __init__(self, membership: Membership, drain: Callable[[], Awaitable[None]], checkpoint: Checkpoint) -> None:
        self.membership = membership
        self.drain = drain
        self.checkpoint = checkpoint

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.membership.generation += 1
        started = time.monotonic()
        await self.drain()
        drained_s = time.monotonic() - started
        log.info("node %s: rebalance: in-flight batches drained in %.2fs", self.membership.node_id, drained_s)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        started = time.monotonic()
        await self.checkpoint.assigned(list(assigned))
        log.info(
            "node %s assigned partitions %s (ready in %.2fs)",
            self.membership.node_id,
            sorted(tp.partition for tp in assigned),
            time.monotonic() - started,
        )
