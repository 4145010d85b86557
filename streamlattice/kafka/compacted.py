"""Reading a compacted topic: every key's newest value from the topic's start, then what follows.

The one reader behind `status` (heartbeats and plans), `scale --auto` (the newest plan), the
router taking up its epochs after a restart, and a worker's plan follower.
"""

from __future__ import annotations

import time

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streamlattice.kafka.clients import KafkaSettings, make_consumer, start_client
from streamlattice.kafka.topics import require_topics


class CompactedReader:
    """A consumer of a compacted topic's partitions from their start; `ends` are their end offsets when it started."""

    def __init__(self, settings: KafkaSettings, topic: str, partitions: int = 1) -> None:
        self.settings = settings
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.ends: dict[TopicPartition, int] = {}
        self._consumer = make_consumer(settings)

    async def start(self) -> None:
        """Connect and seek to the start of every partition."""
        await start_client(self._consumer, self.settings)
        self._consumer.assign(self.partitions)
        await self._consumer.seek_to_beginning(*self.partitions)
        self.ends = await self._consumer.end_offsets(self.partitions)

    async def stop(self) -> None:
        """Disconnect."""
        await self._consumer.stop()

    async def fetch(self, timeout_ms: int = 500) -> list[ConsumerRecord[bytes, bytes]]:
        """The next records, in offset order per partition (empty when `timeout_ms` passes quietly)."""
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms)
        return [m for tp in self.partitions for m in fetched.get(tp, [])]

    async def caught_up(self) -> bool:
        """Whether every partition has been read up to the end it had when the reader started."""
        for tp in self.partitions:
            if self.ends.get(tp, 0) > 0 and await self._consumer.position(tp) < self.ends[tp]:
                return False
        return True

    async def read_to_end(self, timeout_s: float = 10.0) -> dict[bytes, bytes]:
        """Every key's newest value up to the ends (a tombstone removes its key); what arrived by `timeout_s`."""
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while not await self.caught_up() and time.monotonic() < deadline:
            for m in await self.fetch():
                if m.key is None:
                    continue
                if m.value is None:
                    latest.pop(m.key, None)
                else:
                    latest[m.key] = m.value
        return latest


async def read_compacted(settings: KafkaSettings, topic: str, timeout_s: float = 10.0) -> dict[bytes, bytes]:
    """The newest value of every key in a compacted topic, read from its start to its current end."""
    count = (await require_topics(settings, [topic]))[topic]
    reader = CompactedReader(settings, topic, count)
    await reader.start()
    try:
        return await reader.read_to_end(timeout_s)
    finally:
        await reader.stop()
