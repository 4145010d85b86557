"""Hanging transactions: one made on the real broker is found and aborted, one in progress is left alone.

A hanging transaction is one a partition holds open and no coordinator will complete (chaos soak
run 5: a coordinator that took over forgot two; kafka.hanging). To make one here, a
transactional producer writes to a partition without adding it to its transaction, with the
broker's partition verification (KIP-890) turned off for the test: the coordinator never learns
of the partition and never writes its marker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamlattice.chaos.checker import held_open
from streamlattice.kafka.clients import KafkaSettings, make_admin, make_consumer
from streamlattice.kafka.hanging import OpenTransaction, hanging, heal, offsets_partition, silent

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

VERIFICATION = "transaction.partition.verification.enable"


def test_only_silent_transactions_no_coordinator_holds_count_as_hanging() -> None:
    tp = TopicPartition("t", 0)
    now = 1_000_000

    def txn(pid: int, silent_s: float) -> OpenTransaction:
        return OpenTransaction(tp, pid, 0, -1, 10, int(now - silent_s * 1000))

    opened = [txn(1, 200), txn(2, 200), txn(3, 30)]
    assert hanging(silent(opened, now_ms=now, after_s=120), in_hand={2}) == [txn(1, 200)]
    assert hanging(silent(opened, now_ms=now, after_s=10), in_hand=set()) == opened


def test_a_groups_offsets_partition_is_the_one_kafka_uses() -> None:
    # from a broker's transaction log (chaos soak run 5): this group's offsets went to partition
    # 11 of 12; its Java hash code is negative, so Kafka's Utils.abs (not a bit mask) decides
    assert offsets_partition("chaos9c3a07d9.workers.sensor", 12) == 11
    assert offsets_partition("", 50) == 0


@asynccontextmanager
async def verification_off(admin: AIOKafkaAdminClient) -> AsyncIterator[None]:
    async def put(value: str | None) -> None:
        configs = {VERIFICATION: value} if value is not None else {VERIFICATION: "true"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs=configs)])
        await asyncio.sleep(1.0)  # a broker applies dynamic configs asynchronously

    await put("false")
    try:
        yield
    finally:
        await put(None)


async def read_committed(settings: KafkaSettings, tp: TopicPartition, wait_s: float) -> list[bytes]:
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        consumer.assign([tp])
        got: list[bytes] = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                got += [m.value for m in msgs if m.value is not None]
        return got
    finally:
        await consumer.stop()


def test_a_hanging_transaction_is_aborted_and_readers_read_past_it_while_a_live_one_is_left_alone(kafka: str) -> None:
    settings = KafkaSettings(bootstrap=kafka)
    topic = f"hanging-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)

    async def main() -> None:
        admin = make_admin(settings)
        await admin.start()
        producers: list[AIOKafkaProducer] = []

        async def transactional() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(bootstrap_servers=kafka, transactional_id=f"{topic}-{len(producers)}")
            producers.append(producer)
            await producer.start()
            return producer

        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
            async with verification_off(admin):
                lost = await transactional()
                await lost.begin_transaction()
                lost._txn_manager._txn_partitions.add(tp)  # written, never added: no coordinator knows
                await lost.send_and_wait(topic, b"stuck", partition=0)
                await lost.stop()
            after = await transactional()
            async with after.transaction():
                await after.send_and_wait(topic, b"after", partition=0)
            assert await read_committed(settings, tp, 2.0) == [], "the transaction should hang"
            # the chaos checker's own view (librdkafka): stable offset 0, end 3 (stuck, after, its marker)
            assert await asyncio.to_thread(held_open, kafka, [topic]) == {f"{topic}[0]": (0, 3)}

            live = await transactional()  # in progress, and its coordinator knows it
            await live.begin_transaction()
            await live.send_and_wait(topic, b"live", partition=0)

            young = await heal(admin._client, [tp], after_s=60, now_ms=int(time.time() * 1000))
            assert young == [], "a transaction silent for less than after_s is left alone"
            aborted = await heal(admin._client, [tp], after_s=0, now_ms=int(time.time() * 1000))
            assert [(t.tp, t.start_offset) for t in aborted] == [(tp, 0)], aborted
            assert await read_committed(settings, tp, 2.0) == [b"after"]  # the live one still holds the rest

            await live.commit_transaction()
            assert await read_committed(settings, tp, 2.0) == [b"after", b"live"]
            assert await heal(admin._client, [tp], after_s=0, now_ms=int(time.time() * 1000)) == []
            assert await asyncio.to_thread(held_open, kafka, [topic]) == {}
        finally:
            for producer in producers:
                await producer.stop()
            await admin.close()

    asyncio.run(main())
