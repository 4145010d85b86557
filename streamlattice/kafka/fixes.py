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

Nor does any of its clients ask who leads a partition now when a request to a node goes
unanswered: a produce or fetch request that times out is sent again to the same node, over a new
connection that a blackholing network accepts (only a refused connection makes aiokafka ask), so
until its metadata ages out (5 minutes) it never finds the partition's new leader. In a region
cut (CI, the region cut test) the cut region's users published nothing anywhere, and the workers
that took its partitions over read nothing, until the links returned 60 s later, though other
brokers had led those partitions since 10 s after the cut. Java's client asks for metadata on
every request timeout and disconnect; `apply()` makes aiokafka's do the same, and passes over
the silent node for a few seconds (SILENT_S) so that the update asks a broker that answers. A
fetch gets its own bound (FETCH_SILENCE_S past its wait), as a heartbeat does: a rebalance
cancels a fetch in flight and sends a new one, so the 30 s request timeout may never run out.

aiokafka 0.14's producer can also take a record batch it will never send. `send_batch` waits
while the partition's previous batch is in flight, then appends without looking again whether
the producer was stopped meanwhile: `stop()` waits only for the batches it found when it began,
then stops the sender, so a batch appended during that wait is never sent, and its delivery
future never completes. The worker's outbox stops a producer whenever the broker refuses a
batch (worker.outbox), with the next batches of the same partition often waiting behind it: in a
fresh-clone CI run (test_poison, at-least-once, one-record batches) one result waited for ever
and its event was neither answered nor dead-lettered. `apply()` makes such a batch fail with
ProducerClosed, which the outbox already sends again on the producer that replaced it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka import errors as Errors
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.conn import CloseReason
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.fetch import FetchRequest

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
    """Install the fixes on aiokafka's group coordinator and client (once; later calls do nothing)."""
    _bound_heartbeats()
    _refresh_leaders_on_silence()
    _no_batch_after_stop()
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
            # the node is as silent as one that let a request time out: pass it over too, so that
            # finding the coordinator again asks a broker that answers
            _silent(self._client)[self.coordinator_id] = time.monotonic() + SILENT_S
            self._client.force_metadata_update()
            log.warning(
                "heartbeat of group %s unanswered for the session timeout (%.0f s): the coordinator is lost",
                self.group_id,
                session_s,
            )
            return False  # the heartbeat routine now finds the session expired: coordinator dead

    _do_heartbeat._streamlattice_bounded = True  # type: ignore[attr-defined]
    GroupCoordinator._do_heartbeat = _do_heartbeat


# How long a client passes over a node that let a request time out (no new connection, no
# metadata request): the metadata update a timeout starts then asks another broker, instead of
# waiting a second request timeout on the silent one (it picks a node at random). Java's client
# likewise backs off reconnecting to a node it lost.
SILENT_S = 10.0
# How long past its own wait (fetch_max_wait_ms) a fetch may go unanswered before its node counts as
# silent. A fetch to a cut-off leader otherwise waits the whole request timeout (30 s), and every
# rebalance cancels it and sends a new one to the same node: in a region cut (the regions test on
# CI) the plan that handed the cut region's partitions to another node came 25 s after the first
# rebalance, and that node read nothing from them until the links returned. The session timeout,
# the same bound a heartbeat gets: a broker that answers no fetch for that long has lost its
# followers' fetches too, and the controller moves its leadership.
FETCH_SILENCE_S = 10.0


def _silent(client: AIOKafkaClient) -> dict[Any, float]:
    """Node id -> until when (monotonic) `client` passes it over."""
    return client.__dict__.setdefault("_streamlattice_silent", {})


def _refresh_leaders_on_silence() -> None:
    original_send = AIOKafkaClient.send
    if getattr(original_send, "_streamlattice_refreshing", False):
        return
    original_get_conn = AIOKafkaClient._get_conn

    async def send(self: AIOKafkaClient, node_id: Any, request: Any, **kwargs: Any) -> Any:
        try:
            if not isinstance(request, FetchRequest):
                return await original_send(self, node_id, request, **kwargs)
            try:
                async with asyncio.timeout(request._max_wait_ms / 1000 + FETCH_SILENCE_S):
                    return await original_send(self, node_id, request, **kwargs)
            except TimeoutError:
                conn = self._conns.get((node_id, kwargs.get("group", ConnectionGroup.DEFAULT)))
                if conn is not None:  # as aiokafka does at its own timeout: renewed on the next request
                    conn.close(reason=CloseReason.CONNECTION_TIMEOUT)
                raise Errors.RequestTimedOutError() from None
        except Errors.RequestTimedOutError:
            # raised here only by the client's own timeout (a broker's answer carries its error);
            # a sender or fetcher that retries waits for this update first
            _silent(self)[node_id] = time.monotonic() + SILENT_S
            self.force_metadata_update()
            raise

    async def _get_conn(self: AIOKafkaClient, node_id: Any, **kwargs: Any) -> Any:
        if _silent(self).get(node_id, 0.0) > time.monotonic():
            return None  # callers take it as "not ready" (and the metadata update asks another node)
        return await original_get_conn(self, node_id, **kwargs)

    send._streamlattice_refreshing = True  # type: ignore[attr-defined]
    AIOKafkaClient.send = send
    AIOKafkaClient._get_conn = _get_conn


def _no_batch_after_stop() -> None:
    """MessageAccumulator.add_batch as in aiokafka 0.14, but looking again after each wait whether
    the producer was stopped meanwhile (see the module)."""
    if getattr(MessageAccumulator.add_batch, "_streamlattice_checked", False):
        return

    async def add_batch(self: MessageAccumulator, builder: Any, tp: TopicPartition, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self._closed:
                raise Errors.ProducerClosed()
            if self._exception is not None:
                raise copy.copy(self._exception)
            pending = self._batches.get(tp)
            if not pending:
                return asyncio.shield(self._append_batch(builder, tp).future)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Errors.KafkaTimeoutError()
            await pending[-1].wait_drain(timeout=left)

    add_batch._streamlattice_checked = True  # type: ignore[attr-defined]
    MessageAccumulator.add_batch = add_batch
