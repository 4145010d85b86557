"""Results and dead letters on their way out (at-least-once): sent in batches, each seen delivered.

What Kafka refuses must not stop a task. A record the broker refuses for what it is (too large
for the topic, say) is sent again on its own, then in the smaller forms the worker offers (a
result becomes a dead letter, a dead letter's original is cut), and set aside with its
partition and offset in the log when every form is refused. Records refused because the
cluster is busy or moving (retriable errors, timeouts) are sent again as they are, however
long it takes: setting them aside would lose them.

aiokafka's idempotent producer is left broken for a partition once the broker refuses one of
its batches there (every later batch: OutOfOrderSequenceNumber), so the outbox then replaces
its producer and sends again the batches that were in flight behind the refused one. Records
tried on their own go through a second, plain producer (acks=all, not idempotent), where one
refusal cannot break the records after it; at-least-once allows the duplicates a plain
producer may write when it retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    DuplicateSequenceNumber,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
)

from streamlattice.kafka.clients import KafkaSettings, make_producer, send_batches, start_client
from streamlattice.worker.outgoing import Outgoing

log = logging.getLogger(__name__)

# Refusals of a record for what it is: the same bytes will be refused again.
RECORD_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)
# The producer's sequence broke (a batch before these was refused, or the producer was replaced):
# these records did nothing wrong.
SEQUENCE_ERRORS: tuple[type[Exception], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    DuplicateSequenceNumber,
    ProducerClosed,
)
RESEND_PAUSE_S = 0.5


class Delivery(NamedTuple):
    """A record batch handed to a producer: its delivery future and the records it holds."""

    future: asyncio.Future[Any]
    items: list[Outgoing]
    producer: AIOKafkaProducer


# (a refused record, what Kafka said, the how-manieth fallback, from 1) -> its next form, or None
Fallback = Callable[[Outgoing, BaseException, int], Outgoing | None]


def is_resendable(error: BaseException) -> bool:
    """Whether sending the same records again can succeed: the cluster's state, not the records."""
    return isinstance(error, KafkaTimeoutError) or (isinstance(error, KafkaError) and error.retriable)


def where(item: Outgoing) -> str:
    """The event a record answers, as topic[partition]@offset."""
    return f"{item.source.topic}[{item.source.partition}]@{item.source.offset}"


class Outbox:
    """The worker's at-least-once producer: sends records in batches and sees each one delivered."""

    def __init__(
        self, settings: KafkaSettings, fallback: Fallback, on_set_aside: Callable[[int], None], linger_ms: int = 1
    ) -> None:
        self.settings = settings
        self.fallback = fallback
        self.on_set_aside = on_set_aside
        self.linger_ms = linger_ms
        self.producer: AIOKafkaProducer = make_producer(settings, linger_ms=linger_ms)
        self._plain: AIOKafkaProducer | None = None
        self._renewing = asyncio.Lock()

    async def start(self) -> None:
        """Connect the producer."""
        await start_client(self.producer, self.settings)

    async def stop(self) -> None:
        """Flush and close the producers."""
        for producer in (self.producer, self._plain):
            if producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()

    async def send(self, items: Sequence[Outgoing]) -> list[Delivery]:
        """Hand records to the producer, one batch per topic partition; `settle` waits for them.

        The producer holds one batch per partition until that partition's leader takes it; with
        no leader (a broker died, a region is cut) handing over the next one times out after the
        request timeout. With no replica of the partition alive, the cluster's metadata may not
        know the topic at all (UnknownTopicOrPartitionError, also after the request timeout).
        The outbox then hands over what is left, however long it takes: giving up would stop the
        worker (and its task) for what is only the cluster moving. A result topic that was
        deleted is waited out the same way, loudly, until it is made again: its events stay
        uncommitted, so none is lost."""
        deliveries: list[Delivery] = []
        left = items
        while True:
            producer = self.producer
            handed: list[tuple[asyncio.Future[Any], list[int]]] = []
            waiting: BaseException | None = None
            try:
                await send_batches(producer, [item.message for item in left], handed)
            except KafkaError as e:
                if not (is_resendable(e) or isinstance(e, ProducerClosed)):  # closed: `settle` just replaced it
                    raise
                waiting = e
            deliveries += [Delivery(future, [left[i] for i in held], producer) for future, held in handed]
            if waiting is None:
                return deliveries
            taken = {i for _, held in handed for i in held}
            left = [item for i, item in enumerate(left) if i not in taken]
            why = (
                f"topic {left[0].message[0]} is not in the cluster's metadata: its replicas are down, or it was "
                "deleted (`streamlattice topics init` makes it again)"
                if isinstance(waiting, UnknownTopicOrPartitionError)
                else "they wait for their partition's leader"
            )
            log.warning("%d records for %s: %s (%r); handing them over again", len(left), where(left[0]), why, waiting)
            if not isinstance(waiting, (KafkaTimeoutError, UnknownTopicOrPartitionError, ProducerClosed)):
                await asyncio.sleep(RESEND_PAUSE_S)  # the others waited a request timeout already

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Return once every record of `deliveries` is delivered, in some form, or set aside."""
        queue = list(deliveries)
        while queue:
            future, items, producer = queue.pop(0)
            try:
                await future
                continue
            except RECORD_ERRORS as e:
                await self._renew(producer)
                for item in items:
                    await self._deliver_alone(item, e)
                continue
            except SEQUENCE_ERRORS as e:
                await self._renew(producer)
                error: BaseException = e
            except KafkaError as e:
                if not is_resendable(e):
                    raise
                error = e
                await asyncio.sleep(RESEND_PAUSE_S)
            log.warning("%d records for %s not delivered (%r); sending them again", len(items), where(items[0]), error)
            queue[:0] = await self.send(items)

    async def _renew(self, broken: AIOKafkaProducer) -> None:
        """Replace the producer, unless it has been replaced since it sent `broken`'s batches."""
        async with self._renewing:
            if broken is not self.producer:
                return
            fresh = make_producer(self.settings, linger_ms=self.linger_ms)
            await start_client(fresh, self.settings)
            self.producer = fresh
        # Its batches behind the refused one fail with OutOfOrderSequenceNumber; `settle` resends them.
        with contextlib.suppress(KafkaError, OSError):
            await broken.stop()

    async def _deliver_alone(self, item: Outgoing, error: BaseException) -> None:
        """Send one refused record on its own, then in its fallback forms, until one is delivered."""
        producer = await self._plain_producer()
        form: Outgoing | None = item
        attempt = 0
        while form is not None:
            try:
                ((future, _),) = await send_batches(producer, [form.message])
                await future
                if attempt:
                    log.warning(
                        "record for %s refused by Kafka (%r); delivered in fallback form %d",
                        where(item),
                        error,
                        attempt,
                    )
                return
            except KafkaError as e:
                if is_resendable(e):
                    await asyncio.sleep(RESEND_PAUSE_S)
                    continue
                if not isinstance(e, RECORD_ERRORS):
                    raise
                error = e
            attempt += 1
            form = self.fallback(item, error, attempt)
        self.on_set_aside(1)
        log.error(
            "record for %s (topic %s) refused by Kafka in every form (%r): set aside, not delivered",
            where(item),
            item.message[0],
            error,
        )

    async def _plain_producer(self) -> AIOKafkaProducer:
        if self._plain is None:
            plain = make_producer(
                self.settings.with_client_id(f"{self.settings.client_id}-plain"),
                enable_idempotence=False,
                linger_ms=0,
            )
            await start_client(plain, self.settings)
            self._plain = plain
        return self._plain
