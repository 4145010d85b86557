"""How far behind a consumer group, or one consumer, is: end offsets against commits or positions."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IllegalStateError

from streamlattice.kafka.fixes import COORDINATOR_WAIT_S, ask_coordinator, missing_offsets


@dataclass(frozen=True)
class PartitionOffsets:
    """A partition's end offset and its group's committed offset (None: the group never committed)."""

    end: int
    committed: int | None

    @property
    def lag(self) -> int:
        """Records the group has not committed yet (all of them when it never committed)."""
        return max(self.end - (self.committed or 0), 0)


async def group_offsets(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    group_id: str,
    partitions: list[TopicPartition],
    wait_s: float = COORDINATOR_WAIT_S,
) -> dict[TopicPartition, PartitionOffsets]:
    """End and committed offsets of `partitions` for `group_id`, through started clients.

    Raises OffsetsUnavailable (or the coordinator's own error) if the group's coordinator still
    refuses after `wait_s`: it is created on a fresh cluster's first request, and loads the group
    for a few seconds after a broker restart.
    """
    ends = await consumer.end_offsets(partitions)

    async def fetch() -> dict[TopicPartition, Any]:
        answer = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
        missing_offsets(group_id, partitions, answer)
        return answer

    committed = await ask_coordinator(fetch, wait_s)
    out = {}
    for tp in partitions:
        meta = committed.get(tp)
        out[tp] = PartitionOffsets(ends[tp], meta.offset if meta is not None and meta.offset >= 0 else None)
    return out


async def consumer_lag(consumer: AIOKafkaConsumer) -> tuple[int, dict[int, int]]:
    """A consumer's own lag over its assigned partitions (high-water mark minus position), and the
    high-water marks it knows by partition number (partitions not fetched yet are left out)."""
    owned = consumer.assignment()
    highwater = {tp.partition: hw for tp in owned if (hw := consumer.highwater(tp)) is not None}
    lag = 0
    for tp in owned:
        if tp.partition in highwater:
            with contextlib.suppress(IllegalStateError):
                lag += max(highwater[tp.partition] - await consumer.position(tp), 0)
    return lag, highwater
