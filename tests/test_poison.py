"""Poison pills: no record the broker accepts can stop a task.

Records at and just over every size limit, sent by a plain Kafka client; results and dead letters
that Kafka refuses; a model that raises on some events. Each must end as a result or a dead
letter (or, refused in every form, be set aside with its place in the log), and the worker goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError
from conftest import WorkerProcess, collect_results, read_dlq, write_lattice
from poison_hooks import POISON

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings, make_consumer
from streamlattice.kafka.partitioning import partition_for
from streamlattice.sdk.client import LatticeProducer
from streamlattice.worker.outgoing import DEAD_LETTER_ORIGINAL_BYTES, KIND_HEADER
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

MiB = 1024 * 1024
BROKER_MAX = 1_048_588  # Kafka's default message.max.bytes: the results and DLQ topics keep it
WORKER_MAX_REQUEST = 4 * MiB  # the worker producer's max_request_size (streamlattice.kafka.make_producer)
TASK_MAX = 8192  # the test sensor task's max_event_bytes
EVENTS_TOPIC_MAX = 6 * MiB  # raised on the events topic so that a foreign client can send all of the above
MODES = {"at-least-once": (), "exactly-once": ("--exactly-once",)}


async def set_topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        await admin.close()
    await asyncio.sleep(1.0)  # brokers apply a topic's new config asynchronously


def plain_producer(bootstrap: str) -> AIOKafkaProducer:
    """A client that is not ours, with limits raised so that only the broker decides."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * MiB, max_batch_size=16 * MiB)


async def publish_valid(bootstrap: str, lattice: Lattice, count: int, seed: int, source: str) -> set[str]:
    windows = signals.generate(count, seed=seed)
    async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=bootstrap)) as producer:
        return {await producer.publish("sensor", "eu-west", source, x) for x in windows.x}


async def committed_to_end(bootstrap: str, lattice: Lattice, timeout: float) -> bool:
    """Whether the worker group's committed offsets reach the end of every events partition."""
    consumer = make_consumer(KafkaSettings(bootstrap=bootstrap), group_id=lattice.group_id("sensor"))
    await consumer.start()
    try:
        tps = [TopicPartition(lattice.events_topic("sensor"), p) for p in range(lattice.total_partitions)]
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = {tp: await consumer.committed(tp) or 0 for tp in tps}
            if all(committed[tp] >= ends[tp] for tp in tps):
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await consumer.stop()


@pytest.mark.parametrize("mode", MODES)
def test_records_at_and_over_every_size_limit_end_as_results_or_dead_letters(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess], mode: str
) -> None:
    asyncio.run(set_topic_config(kafka, lattice.events_topic("sensor"), {"max.message.bytes": str(EVENTS_TOPIC_MAX)}))
    worker = workers(lattice, "eu-west", args=MODES[mode])
    worker.wait_assigned()
    source = b"machine-foreign"
    partition = partition_for(lattice.region("eu-west"), source)
    sizes = [TASK_MAX, TASK_MAX + 1, 1_048_399, BROKER_MAX, BROKER_MAX + 1, WORKER_MAX_REQUEST, WORKER_MAX_REQUEST + 1]
    rng = np.random.default_rng(3)

    async def go() -> tuple[set[str], dict[tuple[int, int], bytes]]:
        valid = await publish_valid(kafka, lattice, 50, seed=1, source="machine-a")
        bad: dict[tuple[int, int], bytes] = {}
        producer = plain_producer(kafka)
        await producer.start()
        try:
            for size in sizes:
                value = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
                meta = await producer.send_and_wait(
                    lattice.events_topic("sensor"), value, key=source, partition=partition
                )
                bad[(meta.partition, meta.offset)] = value
            # Over the topic's own limit the broker refuses it: that record never reaches a worker.
            with pytest.raises(MessageSizeTooLargeError):
                too_big = b"\0" * (EVENTS_TOPIC_MAX + 1)
                await producer.send_and_wait(lattice.events_topic("sensor"), too_big, key=source, partition=partition)
        finally:
            await producer.stop()
        valid |= await publish_valid(kafka, lattice, 50, seed=2, source="machine-a")
        return valid, bad

    valid, bad = asyncio.run(go())
    results = asyncio.run(collect_results(kafka, lattice, "sensor", valid, timeout=90))
    dead = asyncio.run(read_dlq(kafka, lattice, "sensor", len(bad), timeout=60))

    assert valid <= results.keys(), f"{len(valid - results.keys())} valid events lost behind the big ones"
    letters = {(letter["partition"], letter["offset"]): (m, letter) for m, letter in dead}
    assert letters.keys() == bad.keys(), worker.text()[-3000:]
    cap = max(DEAD_LETTER_ORIGINAL_BYTES, TASK_MAX)
    for where, value in bad.items():
        m, letter = letters[where]
        assert letter["original_size"] == len(value)
        assert letter["original_sha256"] == hashlib.sha256(value).hexdigest()
        assert letter["original"] == value[:cap]  # whole up to the cap, a prefix beyond it
        expected_kind = "undecodable" if len(value) <= TASK_MAX else "oversize"
        assert letter["kind"] == expected_kind and dict(m.headers)[KIND_HEADER] == expected_kind.encode()
        assert len(m.value) < len(value) + 4096 and len(m.value) < cap + 4096
    assert worker.alive(), worker.text()[-3000:]
    assert asyncio.run(committed_to_end(kafka, lattice, timeout=30)), "the group did not commit past the big records"


@pytest.mark.parametrize("mode", MODES)
def test_records_kafka_refuses_fall_back_to_dead_letters_then_are_set_aside_and_the_task_goes_on(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess], mode: str
) -> None:
    worker = workers(lattice, "eu-west", args=MODES[mode])
    worker.wait_assigned()
    results_topic, dlq_topic = lattice.results_topic("sensor"), lattice.dlq_topic("sensor")

    # 1. Every result is larger than the results topic takes: each event ends as a dead letter.
    asyncio.run(set_topic_config(kafka, results_topic, {"max.message.bytes": "100"}))
    refused = asyncio.run(publish_valid(kafka, lattice, 40, seed=4, source="machine-b"))
    dead = asyncio.run(read_dlq(kafka, lattice, "sensor", len(refused), timeout=60))
    assert len(dead) == len(refused), worker.text()[-3000:]
    assert {letter["kind"] for _, letter in dead} == {"produce"}
    assert all("MessageSizeTooLarge" in letter["reason"] for _, letter in dead)
    assert all(letter["original_size"] == len(letter["original"]) > 0 for _, letter in dead)

    # 2. The dead-letter topic refuses everything too: the records are set aside, logged, committed.
    asyncio.run(set_topic_config(kafka, dlq_topic, {"max.message.bytes": "100"}))
    asyncio.run(publish_valid(kafka, lattice, 10, seed=5, source="machine-b"))
    assert asyncio.run(committed_to_end(kafka, lattice, timeout=60)), worker.text()[-3000:]
    assert "set aside" in worker.text() and f"{lattice.events_topic('sensor')}[" in worker.text()
    assert worker.alive(), worker.text()[-3000:]

    # 3. With the topics back to normal, the same worker answers again.
    asyncio.run(set_topic_config(kafka, results_topic, {"max.message.bytes": str(BROKER_MAX)}))
    asyncio.run(set_topic_config(kafka, dlq_topic, {"max.message.bytes": str(BROKER_MAX)}))
    served = asyncio.run(publish_valid(kafka, lattice, 40, seed=6, source="machine-b"))
    results = asyncio.run(collect_results(kafka, lattice, "sensor", served, timeout=60))
    assert served <= results.keys(), f"{len(served - results.keys())} not answered after the topics recovered"
    assert not refused & results.keys()  # those were dead-lettered, not answered late
    assert worker.alive(), worker.text()[-3000:]


@pytest.mark.timeout(60)
def test_a_batch_handed_to_a_producer_that_is_stopping_fails_instead_of_waiting_for_ever(kafka: str) -> None:
    """The outbox stops its producer when the broker refuses a batch, while the next batches of the
    same partition wait behind it (kafka.fixes). aiokafka 0.14 appended such a batch after `stop()`
    had taken stock, and never sent it: one result of a fresh-clone CI run of the test above waited
    for ever. It must be refused (ProducerClosed, which the outbox sends again) or delivered."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import ProducerClosed

    from streamlattice.kafka.clients import make_admin, make_producer, send_batches, start_client

    settings = KafkaSettings(bootstrap=kafka)
    topic = f"stopping-{os.urandom(4).hex()}"

    async def main() -> str:
        admin = make_admin(settings)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        producer = make_producer(settings, linger_ms=300)
        await start_client(producer, settings)
        await (await send_batches(producer, [(topic, b"warm", None, 0, None)]))[0][0]  # metadata known
        ((first, _),) = await send_batches(producer, [(topic, b"first", None, 0, None)])  # lingers 300 ms
        second = asyncio.create_task(send_batches(producer, [(topic, b"second", None, 0, None)]))
        await asyncio.sleep(0.05)
        assert not second.done(), "the second batch should wait for the first to leave"
        await producer.stop()
        await first
        try:
            ((future, _),) = await asyncio.wait_for(second, 5)
        except ProducerClosed:
            return "refused"
        await asyncio.wait_for(future, 5)  # before the fix: never completes (TimeoutError)
        return "delivered"

    assert asyncio.run(main()) in {"refused", "delivered"}


@pytest.mark.parametrize("mode", MODES)
def test_a_model_that_raises_on_some_events_dead_letters_only_those(
    kafka: str,
    models: dict[str, Path],
    tmp_path: Path,
    workers: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    lattice = write_lattice(
        KafkaSettings(bootstrap=kafka),
        tmp_path,
        models,
        tasks=["sensor"],
        sensor_hooks='preprocess = "poison_hooks:preprocess"',
    )
    worker = workers(lattice, "eu-west", args=MODES[mode])
    worker.wait_assigned()
    windows = signals.generate(300, seed=8)
    poisoned_at = set(range(7, 300, 37))

    async def go() -> tuple[set[str], set[str]]:
        good: set[str] = set()
        bad: set[str] = set()
        async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=kafka)) as producer:
            pending = []
            for i, x in enumerate(windows.x):
                x = x.copy()
                if i in poisoned_at:
                    x[0, 0] = POISON
                event_id, delivery = await producer.submit("sensor", "eu-west", windows.source_id[i], x)
                (bad if i in poisoned_at else good).add(event_id)
                pending.append(delivery)
            await asyncio.gather(*pending)
        return good, bad

    good, bad = asyncio.run(go())
    results = asyncio.run(collect_results(kafka, lattice, "sensor", good, timeout=90))
    dead = asyncio.run(read_dlq(kafka, lattice, "sensor", len(bad), timeout=30))

    assert good <= results.keys(), f"{len(good - results.keys())} good events lost with their poisoned neighbours"
    assert not bad & results.keys()
    assert len(dead) == len(bad), f"{len(dead)} dead letters for {len(bad)} poisoned events"
    for _, letter in dead:
        assert letter["kind"] == "inference"
        assert "poisoned input: 1 of 1 rows" in letter["reason"]  # isolated down to the one event
    assert worker.alive(), worker.text()[-3000:]
