"""Intake: events as they come off the consumer, decoded and checked, as a micro-batch.

A record that fails decoding or a check becomes a rejection with its reason (a dead letter
later); the others are the batch's accepted events. Nothing here talks to Kafka except
`rewind`, which moves the consumer back over records taken but not used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streamlattice.config import Lattice, Task
from streamlattice.errors import ConfigError, InvalidEvent
from streamlattice.inference.validation import check_event, check_size, non_finite_rows
from streamlattice.kafka.registry import RegistryCodec
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import Codec, codecs, stack_tensors
from streamlattice.worker.batch import Batch

# A fetch returns as soon as the broker holds any record for it (Kafka's default), or after
# FETCH_WAIT_MS. Side by side at 500-5,000 events/s, 1 byte had the lower p99 in 7 of 8 cells
# against 64 KiB (which made an event wait up to FETCH_WAIT_MS for a fuller fetch), and at
# 8,000-14,000/s the two were mixed (bench/fetch-min-bytes.md). It was reverted once, for two
# losses since explained and mended: an aiokafka race its one-record batches exposed
# (kafka.fixes) and a broker's forgotten transactions (kafka.hanging).
FETCH_MIN_BYTES = 1
FETCH_WAIT_MS = 10
# aiokafka keeps up to one fetched response per assigned partition, each up to this size, so a
# worker that owns many partitions of a backlog holds partitions x this before decoding any of
# it: at 4 MB (~4,900 sensor events) a worker draining 12 partitions peaked at 246 MB, at 1 MiB
# at 135 MB with the same drain rate (bench/readahead.md); 256 KiB cost 40% of sensor
# throughput. A larger record still arrives (the broker returns a partition's first batch
# whole, KIP-74; tests/test_poison.py).
FETCH_PARTITION_BYTES = 1024 * 1024


class Intake:
    """Decodes and checks a task's events."""

    def __init__(self, lattice: Lattice, task: Task, codec: Codec | None = None) -> None:
        self.lattice = lattice
        self.task = task
        self.codec = codec or codecs().event
        self._regions = {r.name for r in lattice.regions}

    async def learn_schemas(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """With a schema registry: fetch the writer schemas of `records` not seen before, off the
        event loop (a slow registry must not stall heartbeats); RegistryUnavailable if it does not answer."""
        if isinstance(self.codec, RegistryCodec):
            for schema_id in self.codec.unknown_ids(m.value for m in records):
                await asyncio.to_thread(self.codec.learn, schema_id)

    def validate(
        self,
        records: list[ConsumerRecord[bytes, bytes]],
        generation: int = 0,
        epoch: Callable[[TopicPartition], int] = lambda _: 0,
    ) -> Batch:
        """Decode and check one batch of records; those that fail are rejected with their reason.

        `epoch(tp)` stamps the batch with each partition's read epoch (see worker.checkpoint).
        """
        batch = Batch(generation, {}, now_us(), [], [])
        for m in records:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in batch.offsets:
                batch.epochs[tp] = epoch(tp)
            batch.offsets[tp] = max(batch.offsets.get(tp, 0), m.offset + 1)
            try:
                if m.value is None:
                    raise InvalidEvent("undecodable", "record has no value")
                check_size(self.task, len(m.value))
                event = self.codec.decode(m.value)
                check_event(self.task, event)
                if event["region"] not in self._regions:
                    self.lattice.region(event["region"])  # a ConfigError that names the known regions
            except InvalidEvent as e:
                batch.rejected.append((m, e))
                continue
            except ConfigError as e:  # an unknown region
                batch.rejected.append((m, InvalidEvent("region", str(e))))
                continue
            batch.accepted.append((m, event))
        return batch

    def model_input(self, batch: Batch) -> np.ndarray:
        """The accepted events as one array ([n, *shape], or [n] texts); rows with NaN or Inf are rejected."""
        events = [e for _, e in batch.accepted]
        if self.task.input == "text":
            return np.array([e["text"] for e in events], dtype=object)
        x = stack_tensors([e["tensor"] for e in events], self.task.np_dtype, self.task.shape)
        bad = non_finite_rows(x)
        if len(bad):
            for i in bad:
                batch.rejected.append((batch.accepted[i][0], InvalidEvent("non_finite", "tensor holds NaN or Inf")))
            keep = np.ones(len(x), dtype=bool)
            keep[bad] = False
            batch.accepted = [a for a, k in zip(batch.accepted, keep, strict=True) if k]
            x = x[keep]
        return x

    @staticmethod
    def rewind(consumer: AIOKafkaConsumer, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Move the consumer back to the first of `records` in each partition it still owns."""
        first: dict[TopicPartition, int] = {}
        for m in records:
            tp = TopicPartition(m.topic, m.partition)
            first[tp] = min(first.get(tp, m.offset), m.offset)
        owned = consumer.assignment()
        for tp, offset in first.items():
            if tp in owned:
                consumer.seek(tp, offset)
