"""Exactly-once delivery: one transactional producer per input partition the node owns.

A batch's results and dead letters for one input partition are written in one Kafka
transaction together with that partition's next offset, so they become visible to
`read_committed` subscribers, and the events count as consumed, at once or not at all.

Why a producer per partition: aiokafka 0.14 adds offsets to a transaction with
TxnOffsetCommit v0, which carries no consumer-group generation (KIP-447), so the group
coordinator cannot fence a node that lost its partitions. Fencing comes from the
transactional id instead, as in Kafka Streams' first exactly-once mode: the id names the
input partition, so the partition's next owner initialises a producer with the same id,
which aborts the previous owner's open transaction and fences its producer for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from streamlattice.kafka.clients import KafkaSettings, Message, make_producer, send_batches, start_client

log = logging.getLogger(__name__)

# A transaction is short (one batch), so a node that dies with one open is cleaned up soon
# even when no one takes over its partition.
TRANSACTION_TIMEOUT_MS = 30_000


class PartitionLost(Exception):
    """This node cannot commit for the partition: not open (yet), or fenced by its next owner."""

    def __init__(self, message: str, fenced: bool) -> None:
        super().__init__(message)
        self.fenced = fenced


def transactional_id(group_id: str, tp: TopicPartition) -> str:
    """The transactional id of an input partition: the same on whichever node serves it."""
    return f"{group_id}.{tp.topic}.{tp.partition}"


class PartitionTransactions:
    """The transactional producers of the partitions a node owns, opened and closed with them."""

    def __init__(self, settings: KafkaSettings, group_id: str) -> None:
        self.settings = settings
        self.group_id = group_id
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._opening: dict[TopicPartition, asyncio.Future[None]] = {}
        # The next offset this node committed, per partition it has owned since. The group's
        # answer can lag it: the broker acknowledges a commit before it writes the offsets' markers.
        self.next_offsets: dict[TopicPartition, int] = {}

    async def assign(
        self, partitions: Iterable[TopicPartition], on_opened: Callable[[list[TopicPartition]], None]
    ) -> None:
        """Close the producers of partitions no longer owned and open those of new ones.

        Call it first thing in the assignment callback: until `on_opened(partitions)` has run,
        `ready` holds every commit for these partitions back. It runs once the new partitions'
        producers are open, which is when their committed offsets are final.
        """
        wanted = sorted(set(partitions))
        new = [tp for tp in wanted if tp not in self._producers]
        gate = asyncio.get_running_loop().create_future()
        for tp in wanted:
            self._opening[tp] = gate
        try:
            gone = [tp for tp in self._producers if tp not in wanted]
            for tp in gone:
                self.next_offsets.pop(tp, None)
            await self._close(gone)
            await asyncio.gather(*(self._open(tp) for tp in new))
            on_opened(wanted)
        finally:
            for tp in wanted:
                self._opening.pop(tp, None)
            gate.set_result(None)

    async def ready(self, tp: TopicPartition) -> None:
        """Wait while the producer of `tp` is being opened."""
        gate = self._opening.get(tp)
        if gate is not None:
            await gate

    async def close(self) -> None:
        """Close every producer (their open transactions, if any, are aborted by the broker)."""
        await self._close(list(self._producers))

    async def commit(
        self, tp: TopicPartition, messages: Sequence[Message], next_offset: int, singly: bool = False
    ) -> None:
        """Write `messages` and move the group's offset of `tp` to `next_offset`, atomically.

        `singly` sends each record in a batch of its own (a topic may refuse a batch for its size).

        Raises PartitionLost when another node has taken `tp`, and re-raises any other failure
        after making sure nothing of this transaction is visible (its producer is reopened,
        which aborts it), so the caller can redo the batch from the last committed offset.
        """
        producer = self._producers.get(tp)
        if producer is None:
            raise PartitionLost(f"no transactional producer for {tp.topic}[{tp.partition}]", fenced=False)
        try:
            async with producer.transaction():
                if singly:
                    sent = [d for message in messages for d in await send_batches(producer, [message])]
                else:
                    sent = await send_batches(producer, messages)
                # aiokafka 0.14 commits a transaction whose batches the broker refused (the records
                # are gone, the offsets move on): wait for each, so that a refusal aborts it instead.
                await asyncio.gather(*(future for future, _ in sent))
                await producer.send_offsets_to_transaction({tp: next_offset}, self.group_id)
        except ProducerFenced:
            self.next_offsets.pop(tp, None)
            await self._close([tp])
            raise PartitionLost(f"{tp.topic}[{tp.partition}] was taken over by another node", fenced=True) from None
        except (KafkaError, OSError):
            # Reopening fences this producer and aborts whatever it left open, and it waits
            # until the broker has resolved that transaction, so the committed offset is final.
            # The failure may have come after the broker took the commit (a lost answer): the
            # group knows, not this node, so it is asked (see Transactional.reposition).
            self.next_offsets.pop(tp, None)
            await self._close([tp])
            await self._open(tp)
            raise
        self.next_offsets[tp] = next_offset

    async def _open(self, tp: TopicPartition) -> None:
        producer = make_producer(
            self.settings.with_client_id(f"{self.settings.client_id}-txn-{tp.partition}"),
            transactional_id=transactional_id(self.group_id, tp),
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            linger_ms=1,
        )
        await start_client(producer, self.settings)
        # An empty transaction waits for the producer id: the moment the previous owner's
        # producer is fenced and its open transaction resolved.
        await producer.begin_transaction()
        await producer.abort_transaction()
        self._producers[tp] = producer

    async def _close(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            producer = self._producers.pop(tp, None)
            if producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
