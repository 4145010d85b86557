"""The checkpoint: the one owner of a worker's offsets and of how its records become durable.

Every batch takes the same three steps, in the order batches were consumed: `write` hands its
results and dead letters to Kafka, `settle` returns once they are durable, and `commit` moves
the group's offsets past what is settled. The delivery guarantee is the strategy:

- AtLeastOnce: records go out through the outbox (worker.outbox); offsets are committed
  through the consumer once every record of the batch, and of every batch before it, is
  acknowledged. A crash in between repeats a batch: duplicates, never loss.
- Transactional (exactly-once): each input partition's share of a batch is written in one
  Kafka transaction together with that partition's next offset (worker.transactions), so the
  records and the offsets become visible at once or not at all; `settle` and `commit` have
  nothing left to do. A partition whose transaction failed, or that was just assigned, is
  read again from its committed offset; batches taken from it before that carry an older
  epoch and are dropped unwritten.

Exactly-once drops from a batch the partitions it could not commit (`Batch.drop_partitions`),
so that only what was committed is counted; their events are read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from aiokafka.structs import ConsumerRecord

from streamlattice.errors import StreamLatticeError
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.router.assignor import request_rebalance
from streamlattice.worker.batch import Batch
from streamlattice.worker.outbox import RECORD_ERRORS, Delivery, Fallback, Outbox
from streamlattice.worker.outgoing import Outgoing
from streamlattice.worker.transactions import PartitionLost, PartitionTransactions

log = logging.getLogger(__name__)

Records = list[ConsumerRecord[bytes, bytes]]


class Checkpoint:
    """Offsets and durability of one worker's batches; see the module for the two strategies."""

    # Whether `write` is the node's own work (encoding batches) rather than waiting on the
    # cluster (a transaction's round trips): only work counts toward measured capacity.
    write_is_work = True

    def __init__(self, node_id: str, on_set_aside: Callable[[int], None]) -> None:
        self.node_id = node_id
        self.on_set_aside = on_set_aside
        self.consumer: AIOKafkaConsumer | None = None

    def bind(self, consumer: AIOKafkaConsumer) -> None:
        """The consumer whose offsets this checkpoint commits and moves."""
        self.consumer = consumer

    def epoch(self, tp: TopicPartition) -> int:
        """How many times `tp` has been read again (stamped on each batch taken from it)."""
        return 0

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        """The group gave this node `partitions` (its whole assignment)."""

    async def reposition(self, pending: Records) -> Records:
        """Move the consumer where reading must go on; returns what of `pending` is still to be used."""
        return pending

    async def write(self, batch: Batch, outgoing: list[Outgoing]) -> list[Delivery]:
        """Hand `batch`'s records to Kafka; returns the deliveries `settle` waits for."""
        raise NotImplementedError

    async def settle(self, batch: Batch, deliveries: list[Delivery]) -> None:
        """Return once `batch`'s records are durable; its offsets may then be committed."""

    async def commit(self) -> None:
        """Commit the offsets of every settled batch not committed yet."""

    async def close(self) -> None:
        """Release what the strategy holds (open transactions are aborted)."""


class AtLeastOnce(Checkpoint):
    """Records through the outbox; offsets committed after the records are acknowledged."""

    def __init__(self, outbox: Outbox, node_id: str, on_set_aside: Callable[[int], None]) -> None:
        super().__init__(node_id, on_set_aside)
        self.outbox = outbox
        self._settled: dict[TopicPartition, int] = {}  # acknowledged, not yet committed

    async def write(self, batch: Batch, outgoing: list[Outgoing]) -> list[Delivery]:
        return await self.outbox.send(outgoing)

    async def settle(self, batch: Batch, deliveries: list[Delivery]) -> None:
        await self.outbox.settle(deliveries)
        for tp, offset in batch.offsets.items():
            self._settled[tp] = max(self._settled.get(tp, 0), offset)

    async def commit(self) -> None:
        if not self._settled or self.consumer is None:
            return
        offsets, self._settled = self._settled, {}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as e:
            # The partitions moved on; their new owner re-reads from the last commit (duplicates, no loss).
            log.warning("node %s: commit of finished batches refused (%s)", self.node_id, e)


class Transactional(Checkpoint):
    """Each input partition's share of a batch and its next offset in one transaction."""

    write_is_work = False

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        fallback: Fallback,
        node_id: str,
        on_set_aside: Callable[[int], None],
    ) -> None:
        super().__init__(node_id, on_set_aside)
        self.transactions = PartitionTransactions(settings, group_id)
        self.fallback = fallback
        self._epochs: dict[TopicPartition, int] = {}
        self._reseek: set[TopicPartition] = set()

    def epoch(self, tp: TopicPartition) -> int:
        return self._epochs.get(tp, 0)

    def _read_again(self, partitions: list[TopicPartition]) -> None:
        """Drop what was taken from `partitions` and read them again from their last commit."""
        for tp in partitions:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self._reseek.add(tp)

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        # Opening a partition's producer fences its previous owner and settles that owner's
        # last transaction; only then is the committed offset final, so read from there.
        try:
            await self.transactions.assign(partitions, on_opened=self._read_again)
        except (StreamLatticeError, KafkaError, OSError) as e:
            log.warning("node %s: transactional producers not ready (%s); rejoining", self.node_id, e)
            if self.consumer is not None:
                request_rebalance(self.consumer)

    async def reposition(self, pending: Records) -> Records:
        assert self.consumer is not None
        while self._reseek:  # no await between the last check and the next batch's epochs
            partitions = set(self._reseek)
            self._reseek.clear()
            pending = [m for m in pending if TopicPartition(m.topic, m.partition) not in partitions]
            for tp in partitions:
                # a rebalance may take a partition away meanwhile: its next owner reads it
                with contextlib.suppress(IllegalStateError):
                    known = self.transactions.next_offsets.get(tp)
                    committed = known if known is not None else await self.consumer.committed(tp)
                    if committed is None:
                        await self.consumer.seek_to_beginning(tp)
                    else:
                        self.consumer.seek(tp, committed)
                    log.debug("node %s: partition %d read from offset %s", self.node_id, tp.partition, committed)
        return pending

    async def write(self, batch: Batch, outgoing: list[Outgoing]) -> list[Delivery]:
        shares: dict[int, list[Outgoing]] = {tp.partition: [] for tp in batch.offsets}
        for item in outgoing:
            shares[item.source.partition].append(item)
        done = await asyncio.gather(
            *(self._commit_share(batch, tp, offset, shares[tp.partition]) for tp, offset in batch.offsets.items())
        )
        dropped = {tp.partition for tp, ok in zip(batch.offsets, done, strict=True) if not ok}
        if dropped:  # count only what was committed
            batch.drop_partitions(dropped)
        return []

    async def _commit_share(self, batch: Batch, tp: TopicPartition, offset: int, share: list[Outgoing]) -> bool:
        """Commit one partition's share of `batch`; False if it is to be read again instead."""
        await self.transactions.ready(tp)
        if batch.epochs[tp] != self._epochs.get(tp, 0):
            return False  # taken before this partition was last read again: it is read again
        original = share
        attempt = 0
        aside = False
        while True:
            try:
                await self.transactions.commit(tp, [item.message for item in share], offset, singly=attempt > 0)
            except PartitionLost as e:
                # Not open yet (fetched before the assignment callback ran: it reads the
                # partition again once open), or fenced: another node owns it; rejoin.
                self._read_again([tp])
                if e.fenced and self.consumer is not None:
                    log.warning("node %s: %s; rejoining the group", self.node_id, e)
                    request_rebalance(self.consumer)
                return False
            except RECORD_ERRORS as e:
                # The broker refused a record for what it is: the same transaction would be
                # refused again. Retry it in the smaller forms a refused record falls back to,
                # and set the share aside when none is left, so that the partition goes on.
                attempt += 1
                fallback = self._share_fallback(original, e, attempt)
                aside = fallback is None
                share = fallback or []
                log.warning("node %s: transaction of partition %d refused (%r)", self.node_id, tp.partition, e)
            except (KafkaError, OSError) as e:
                log.warning("node %s: transaction of partition %d failed (%r); redo", self.node_id, tp.partition, e)
                self._read_again([tp])
                return False
            else:
                if aside:
                    log.error(
                        "node %s: %d records answering %s[%d] before offset %d refused by Kafka in every form: "
                        "set aside, not delivered",
                        self.node_id,
                        len(original),
                        tp.topic,
                        tp.partition,
                        offset,
                    )
                    self.on_set_aside(len(original))
                return True

    def _share_fallback(self, share: list[Outgoing], error: BaseException, attempt: int) -> list[Outgoing] | None:
        """A refused transaction's records in their next form: the first retry sends them as they
        are, one record batch each (a topic can refuse a batch for its total size); later ones
        use every record's fallback form (None once a record has none left)."""
        if attempt == 1:
            return share
        forms = [self.fallback(item, error, attempt - 1) for item in share]
        return None if any(f is None for f in forms) else [f for f in forms if f is not None]

    async def close(self) -> None:
        await self.transactions.close()
