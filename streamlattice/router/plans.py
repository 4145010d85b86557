"""Placement plans on the wire, and the follower that keeps a worker's view of the newest one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings, make_consumer, start_client
from streamlattice.placement.plan import Placement, Plan
from streamlattice.wire.codec import Record, codecs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recommendation:
    """How many workers a region of a task needs now, and the numbers behind it."""

    region: str
    replicas: int
    arrival_eps: float
    lag: int
    capacity_eps: float


@dataclass(frozen=True)
class PublishedPlan:
    """A plan as the router published it for one task."""

    task: str
    epoch: int
    created_us: int
    moves: int
    placements: tuple[Placement, ...]
    recommendations: tuple[Recommendation, ...] = ()

    @property
    def assignment(self) -> dict[int, str]:
        """Partition -> node id."""
        return {p.partition: p.node_id for p in self.placements}

    def age_s(self, now_us: int | None = None) -> float:
        """Seconds since the router (re)published it."""
        return ((now_us or time.time_ns() // 1000) - self.created_us) / 1e6

    def encode(self) -> bytes:
        """The PlacementPlan record."""
        return codecs().placement.encode(
            {
                "task": self.task,
                "epoch": self.epoch,
                "created_us": self.created_us,
                "moves": self.moves,
                "assignments": [asdict(p) for p in self.placements],
                "recommendations": [asdict(r) for r in self.recommendations],
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> PublishedPlan:
        """A plan of a PlacementPlan record."""
        rec: Record = codecs().placement.decode(value)
        return cls(
            rec["task"],
            rec["epoch"],
            rec["created_us"],
            rec["moves"],
            tuple(Placement(**a) for a in rec["assignments"]),
            tuple(Recommendation(**r) for r in rec["recommendations"]),
        )

    @classmethod
    def of(cls, task: str, epoch: int, plan: Plan, recommendations: tuple[Recommendation, ...] = ()) -> PublishedPlan:
        """A plan to publish now."""
        return cls(task, epoch, time.time_ns() // 1000, plan.moves, plan.placements, recommendations)


class PlanFollower:
    """Reads the compacted placement topic from its start and keeps the newest plan of one task.

    `on_plan` is called (in the event loop) with every plan of a newer epoch.
    """

    def __init__(
        self,
        lattice: Lattice,
        task: str,
        settings: KafkaSettings,
        on_plan: Callable[[PublishedPlan], None] | None = None,
    ) -> None:
        self.lattice = lattice
        self.task = task
        self.settings = settings.with_client_id(f"{settings.client_id}-plans")
        self.on_plan = on_plan
        self.latest: PublishedPlan | None = None
        self.caught_up = asyncio.Event()
        self._consumer = make_consumer(self.settings)
        self._task: asyncio.Task[None] | None = None

    def current(self, stale_s: float) -> PublishedPlan | None:
        """The newest plan unless it is older than `stale_s`."""
        plan = self.latest
        return plan if plan is not None and plan.age_s() <= stale_s else None

    async def start(self) -> None:
        """Connect and start following."""
        await start_client(self._consumer, self.settings)
        tp = TopicPartition(self.lattice.placement_topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        self._task = asyncio.create_task(self._follow(tp), name="plan-follower")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _follow(self, tp: TopicPartition) -> None:
        end = (await self._consumer.end_offsets([tp]))[tp]
        if end == 0:
            self.caught_up.set()
        while True:
            try:
                fetched = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as e:
                log.warning("reading plans failed (%s); retrying", e)
                await asyncio.sleep(1)
                continue
            for m in fetched.get(tp, []):
                if m.key != self.task.encode() or m.value is None:
                    continue
                try:
                    plan = PublishedPlan.decode(m.value)
                except Exception as e:  # a plan we cannot read must not stop the worker
                    log.warning("ignoring unreadable plan at offset %d: %s", m.offset, e)
                    continue
                newer = self.latest is None or plan.epoch > self.latest.epoch
                if self.latest is None or plan.epoch >= self.latest.epoch:
                    self.latest = plan
                if newer and self.on_plan is not None:
                    self.on_plan(plan)
                if m.offset + 1 >= end:
                    self.caught_up.set()
            if not self.caught_up.is_set() and await self._consumer.position(tp) >= end:
                self.caught_up.set()
