"""The plan follower: a worker's view of the router's newest plan for its task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka.errors import KafkaError

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.kafka.compacted import CompactedReader
from streamlattice.wire.records import PublishedPlan

log = logging.getLogger(__name__)


class PlanFollower:
    """Reads the compacted placement topic from its start and keeps the newest plan of one task.

    `on_plan` is called (in the event loop) with every plan at least as new as the newest: a
    router republishes an unchanged plan to show it lives, and such a refresh is what makes a
    stale plan fresh again, so a group that fell back to sticky must hear of it too.
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
        self._reader = CompactedReader(self.settings, lattice.placement_topic)
        self._task: asyncio.Task[None] | None = None

    def current(self, stale_s: float) -> PublishedPlan | None:
        """The newest plan unless it is older than `stale_s`."""
        plan = self.latest
        return plan if plan is not None and plan.age_s() <= stale_s else None

    async def start(self) -> None:
        """Connect and start following."""
        await self._reader.start()
        self._task = asyncio.create_task(self._follow(), name="plan-follower")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reader.stop()

    async def _follow(self) -> None:
        while True:
            if not self.caught_up.is_set() and await self._reader.caught_up():
                self.caught_up.set()
            try:
                fetched = await self._reader.fetch(timeout_ms=500)
            except KafkaError as e:
                log.warning("reading plans failed (%s); retrying", e)
                await asyncio.sleep(1)
                continue
            for m in fetched:
                if m.key != self.task.encode() or m.value is None:
                    continue
                try:
                    plan = PublishedPlan.decode(m.value)
                except Exception as e:  # a plan we cannot read must not stop the worker
                    log.warning("ignoring unreadable plan at offset %d: %s", m.offset, e)
                    continue
                if self.latest is None or plan.epoch >= self.latest.epoch:
                    self.latest = plan
                    if self.on_plan is not None:
                        self.on_plan(plan)
