"""aiokafka 0.14 reads a coordinator's refusal of OffsetFetch as "this group never committed".

From version 2 of OffsetFetch (KIP-88), a broker that cannot answer for the group puts its
error at the top of the response and lists no partitions: COORDINATOR_LOAD_IN_PROGRESS while
a broker that just took the group over still loads `__consumer_offsets` (every broker restart),
NOT_COORDINATOR when the group moved. aiokafka 0.14 reads only per-partition errors, so it
takes the empty answer for "no committed offset" and the consumer starts from
`auto_offset_reset`. Seen in chaos seed 13 (exactly-once, a rolling restart of the brokers):
a node that took partition 4 over read it again from offset 0, and 509 events were answered
twice. With `latest` it would skip the partition's backlog instead. pykafka (#958) and sarama
(#3574) had the same bug.

`apply()` makes the consumer's coordinator raise that top-level error, which aiokafka already
retries (after finding the coordinator again when it moved); `missing_offsets` is the check for
the admin client's `list_consumer_group_offsets`, which has the same blind spot.

aiokafka 0.14 also checks a member's session only between heartbeats: a heartbeat to a
coordinator that went silent (a network partition, not a refused connection) waits the whole
request timeout (30 s) before the member looks for another coordinator, where Java's consumer
gives up after the session timeout. In an emulated region cut (docs/regions) the surviving
workers kept heartbeating into the cut region's broker for 30 s; `apply()` bounds each
heartbeat by the session timeout, after which aiokafka's own check marks the coordinator dead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka import errors as Errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.commit import OffsetFetchRequest

log = logging.getLogger(__name__)

_MOVED = (Errors.NotCoordinatorForGroupError, Errors.GroupCoordinatorNotAvailableError)
T = TypeVar("T")


class OffsetsUnavailable(Errors.KafkaError):
    """The group coordinator answered without the offsets asked for (it is loading or moved)."""

    retriable = True


# What a group coordinator answers while it cannot answer yet: moved, not there yet (a fresh
# cluster creates __consumer_offsets on the first FindCoordinator), loading its groups after a
# restart, or an OffsetFetch refused at the top level.
COORDINATOR_NOT_READY = (*_MOVED, Errors.CoordinatorLoadInProgressError, OffsetsUnavailable)
COORDINATOR_WAIT_S = 10.0


async def ask_coordinator(call: Callable[[], Awaitable[T]], wait_s: float = COORDINATOR_WAIT_S) -> T:
    """`call()`, asked again every half second for up to `wait_s` while the group's coordinator is
    not ready (then its last refusal is raised)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            return await call()
        except COORDINATOR_NOT_READY:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.5)


def apply() -> None:
    """Install the fixes on aiokafka's group coordinator (once; later calls do nothing)."""
    _bound_heartbeats()
    original = GroupCoordinator._send_req
    if getattr(original, "_streamlattice_checked", False):
        return

    async def _send_req(self: GroupCoordinator, request: Any) -> Any:
        response = await original(self, request)
        if isinstance(request, OffsetFetchRequest):
            code = getattr(response, "error_code", 0)  # absent before version 2
            if code:
                error = Errors.for_code(code)
                if issubclass(error, _MOVED):
                    self.coordinator_dead()
                raise error(f"OffsetFetch for group {self.group_id} refused at the top level")
        return response

    _send_req._streamlattice_checked = True  # type: ignore[attr-defined]
    GroupCoordinator._send_req = _send_req


def missing_offsets(group_id: str, asked: Collection[TopicPartition], answer: Mapping[TopicPartition, Any]) -> None:
    """Raise OffsetsUnavailable if the admin client's answer for `group_id` lacks a partition asked for.

    The broker lists every partition asked for (offset -1 when never committed), so a missing one
    means the coordinator refused the whole request.
    """
    missing = [tp for tp in asked if tp not in answer]
    if missing:
        raise OffsetsUnavailable(
            f"the coordinator of group {group_id} answered without the offsets of {len(missing)} partition(s) "
            "(it is loading or moved); ask again"
        )


def _bound_heartbeats() -> None:
    original = GroupCoordinator._do_heartbeat
    if getattr(original, "_streamlattice_bounded", False):
        return

    async def _do_heartbeat(self: GroupCoordinator) -> bool:
        session_s = self._session_timeout_ms / 1000
        try:
            async with asyncio.timeout(session_s):  # in the heartbeat's own task, not a new one
                return bool(await original(self))
        except TimeoutError:
            log.warning(
                "heartbeat of group %s unanswered for the session timeout (%.0f s): the coordinator is lost",
                self.group_id,
                session_s,
            )
            return False  # the heartbeat routine now finds the session expired: coordinator dead

    _do_heartbeat._streamlattice_bounded = True  # type: ignore[attr-defined]
    GroupCoordinator._do_heartbeat = _do_heartbeat
