"""Schema-registry framing, with confluent-kafka's own serializers on the other side.

No registry server can be installed here, so the registry is confluent-kafka's in-memory one
(`mock://`), which lives in its client: the worker runs in this process and shares it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaReference
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import worker_in_process

from streamlattice.config import Lattice, load_lattice
from streamlattice.errors import InvalidEvent, RegistryUnavailable
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.kafka.registry import HEADER, Registry, RegistryCodec, registry_client, subject
from streamlattice.sdk.client import LatticeProducer
from streamlattice.wire.codec import codecs, tensor_record
from streamlattice.worker.intake import Intake
from streamlattice.worker.runtime import Worker
from workers.sensor.signals import generate

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"
TENSOR = "streamlattice.Tensor"


def schema_json(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.avsc").read_text())


def newer(schema: dict[str, Any], field: str) -> dict[str, Any]:
    """`schema` with one more optional field: a compatible newer version."""
    return {**schema, "fields": [*schema["fields"], {"name": field, "type": ["null", "string"], "default": None}]}


def older(schema: dict[str, Any], without: str) -> dict[str, Any]:
    """`schema` without a field that has a default: a compatible older version."""
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] != without]}


def with_tensor(client: Any, schema: dict[str, Any]) -> Schema:
    """`schema` as a registry schema that refers to the registered Tensor type."""
    version = client.get_latest_version(TENSOR).version
    return Schema(json.dumps(schema), "AVRO", [SchemaReference(TENSOR, TENSOR, version)])


def event(window: np.ndarray, source: str, region: str = "eu-west") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "event_time_us": int(time.time() * 1e6),
        "region": region,
        "task": "sensor",
        "source_id": source,
        "tensor": tensor_record(window),
        "text": None,
    }


# ---- no Kafka: the framing itself ---------------------------------------------------------------


def test_records_round_trip_in_the_registry_framing_and_single_object_records_still_read() -> None:
    registry = Registry.connect(f"mock://unit-{uuid.uuid4().hex}")
    codec = RegistryCodec(codecs().event, registry, "sl.events.sensor")
    record = event(np.zeros((3, 64), np.float32), "m-1")

    framed = codec.encode(record)

    schema_id = registry.client.get_latest_version(subject("sl.events.sensor")).schema_id
    assert framed[:5] == b"\x00" + schema_id.to_bytes(4, "big")
    assert codec.decode(framed)["event_id"] == record["event_id"]
    assert codec.decode(codecs().event.encode(record))["event_id"] == record["event_id"]  # in flight before
    registered = registry.client.get_latest_version(subject("sl.events.sensor")).schema
    assert [(r.name, r.subject) for r in registered.references] == [(TENSOR, TENSOR)]


def test_a_registry_record_without_a_registry_and_an_unknown_schema_id_are_clear_dead_letter_reasons() -> None:
    registry = Registry.connect(f"mock://unit-{uuid.uuid4().hex}")
    framed = RegistryCodec(codecs().event, registry, "t").encode(event(np.zeros((3, 64), np.float32), "m"))

    with pytest.raises(InvalidEvent, match=r"framed for a schema registry .* no registry is configured") as e:
        codecs().event.decode(framed)
    assert e.value.kind == "schema"
    with pytest.raises(InvalidEvent, match="schema id 999 is not in the registry") as e:
        RegistryCodec(codecs().event, registry).decode(b"\x00\x00\x00\x03\xe7" + framed[5:])
    assert e.value.kind == "schema"


def test_a_registry_that_does_not_answer_is_not_the_records_fault() -> None:
    """Unreachable: an error that stops the batch (at-least-once serves it again), never a dead letter."""
    down = RegistryCodec(codecs().event, Registry(registry_client("http://127.0.0.1:9"), "http://127.0.0.1:9"))
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        down.decode(b"\x00\x00\x00\x00\x07" + b"\x02")
    assert not isinstance(RegistryUnavailable("x"), InvalidEvent)


def records(*values: bytes) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord("t", 0, i, 0, 0, b"k", v, None, 1, len(v), ()) for i, v in enumerate(values)]


def test_the_intake_asks_the_registry_once_per_schema_id_and_off_the_event_loop() -> None:
    lattice = load_lattice(REPO / "lattice.toml")
    registry = Registry.connect(f"mock://unit-{uuid.uuid4().hex}")
    codec = RegistryCodec(codecs().event, registry, lattice.events_topic("sensor"))
    good = codec.encode(event(np.zeros((3, 64), np.float32), "m"))
    unknown = b"\x00\x00\x00\x03\xe7" + good[5:]  # schema id 999
    asked: list[int] = []
    fetch = registry.client.get_schema
    registry.client.get_schema = lambda schema_id, *a, **kw: asked.append(schema_id) or fetch(schema_id, *a, **kw)  # type: ignore[method-assign]
    intake = Intake(lattice, lattice.task("sensor"), codec)

    for _ in range(3):
        batch = records(good, unknown, unknown)
        asyncio.run(intake.learn_schemas(batch))
        validated = intake.validate(batch)
        assert len(validated.accepted) == 1
        assert [e.kind for _, e in validated.rejected] == ["schema", "schema"]
        assert "schema id 999 is not in the registry" in validated.rejected[0][1].reason

    assert sorted(asked) == sorted({HEADER.unpack_from(good)[1], 999}), "asked the registry again"


def test_an_intake_whose_registry_does_not_answer_raises_rather_than_reject_the_batch() -> None:
    lattice = load_lattice(REPO / "lattice.toml")
    framed = RegistryCodec(codecs().event, Registry.connect(f"mock://unit-{uuid.uuid4().hex}"), "t").encode(
        event(np.zeros((3, 64), np.float32), "m")
    )
    down = Registry(registry_client("http://127.0.0.1:9"), "http://127.0.0.1:9")
    intake = Intake(lattice, lattice.task("sensor"), RegistryCodec(codecs().event, down))
    with pytest.raises(RegistryUnavailable):
        asyncio.run(intake.learn_schemas(records(framed)))


# ---- with Kafka: foreign producers and consumers through the registry -----------------------------


def foreign_publish(bootstrap: str, lattice: Lattice, client: Any, records: list[tuple[Schema, dict]]) -> None:
    """Events serialized by confluent-kafka's AvroSerializer, each with the schema given, as a
    producer with `auto.register.schemas` writes them, into eu-west's partition block."""
    topic = lattice.events_topic("sensor")
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    partition = lattice.region("eu-west").block.start
    for schema, record in records:
        serialize = AvroSerializer(client, schema, conf={"auto.register.schemas": True})
        value = serialize(record, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, value, key=record["source_id"].encode(), partition=partition)
    assert producer.flush(30) == 0, "the foreign producer could not deliver"


def foreign_read(
    bootstrap: str, lattice: Lattice, client: Any, reader: Schema | None, want: set[str], timeout: float
) -> dict[str, tuple[dict, bytes]]:
    """Results read with confluent-kafka's AvroDeserializer (reader schema `reader`, or the writer's):
    event id -> (record, raw value)."""
    topic = lattice.results_topic("sensor")
    deserialize = AvroDeserializer(client, reader)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "isolation.level": "read_committed"}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(lattice.total_partitions)])
    found: dict[str, tuple[dict, bytes]] = {}
    deadline = time.monotonic() + timeout
    try:
        while not want <= found.keys() and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            record = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
            found[record["event_id"]] = (record, msg.value())
    finally:
        consumer.close()
    return found


@pytest.mark.kafka
@pytest.mark.timeout(240)
def test_foreign_serializers_feed_a_worker_and_read_its_results_across_schema_versions(
    kafka: str, lattice: Lattice
) -> None:
    url = f"mock://lattice-{uuid.uuid4().hex}"
    client = registry_client(url)
    settings = KafkaSettings(bootstrap=kafka, schema_registry=url)
    windows = generate(5, seed=11).x
    reference = {}

    async def main() -> tuple[dict, dict, dict]:
        async with worker_in_process(Worker(lattice, "sensor", "eu-west", "registry-0", settings)):
            # the worker registered what it writes: the Tensor type, results and dead letters
            written = {subject(lattice.results_topic("sensor")), subject(lattice.dlq_topic("sensor"))}
            assert {TENSOR, *written} <= set(client.get_subjects())
            assert subject(lattice.events_topic("sensor")) not in client.get_subjects()  # the producers' to register
            event_schema = schema_json("event")
            sent = {
                "same": event(windows[0], "m-same"),
                "newer": {**event(windows[1], "m-newer"), "trace_note": "from a newer producer"},
                "older": {k: v for k, v in event(windows[2], "m-older").items() if k != "text"},
            }
            schemas = {
                "same": with_tensor(client, event_schema),
                "newer": with_tensor(client, newer(event_schema, "trace_note")),
                "older": with_tensor(client, older(event_schema, "text")),
            }
            await asyncio.to_thread(foreign_publish, kafka, lattice, client, [(schemas[k], sent[k]) for k in sent])
            for k, record in sent.items():
                reference[k] = record["event_id"]
            # our own SDK through the registry, and a producer still on single-object encoding
            async with LatticeProducer(lattice=lattice, settings=settings) as producer:
                reference["sdk"] = await producer.publish("sensor", "eu-west", "m-sdk", windows[3])
            plain = KafkaSettings(bootstrap=kafka)
            async with LatticeProducer(lattice=lattice, settings=plain) as producer:
                reference["single_object"] = await producer.publish("sensor", "eu-west", "m-plain", windows[4])
            want = set(reference.values())
            result_schema = schema_json("result")
            as_written = await asyncio.to_thread(foreign_read, kafka, lattice, client, None, want, 60)
            as_newer = await asyncio.to_thread(
                foreign_read, kafka, lattice, client, with_tensor(client, newer(result_schema, "site")), want, 30
            )
            as_older = await asyncio.to_thread(
                foreign_read, kafka, lattice, client, with_tensor(client, older(result_schema, "flags")), want, 30
            )
        return as_written, as_newer, as_older

    as_written, as_newer, as_older = asyncio.run(main())

    want = set(reference.values())
    assert want <= as_written.keys(), f"unanswered: {sorted(k for k, v in reference.items() if v not in as_written)}"
    results_id = client.get_latest_version(subject(lattice.results_topic("sensor"))).schema_id
    expected = codecs().result  # the label the model gives each window, as our own reader sees it
    for name, event_id in reference.items():
        record, raw = as_written[event_id]
        assert raw[:5] == b"\x00" + results_id.to_bytes(4, "big"), f"{name}: result not in the registry framing"
        assert record["region"] == "eu-west" and record["task"] == "sensor", name
        assert record["label"] is not None and record["outputs"], name
        assert RegistryCodec(expected, Registry.connect(url)).decode(raw)["label"] == record["label"]
    assert want <= as_newer.keys() and all(as_newer[e][0]["site"] is None for e in want)
    assert want <= as_older.keys() and all("flags" not in as_older[e][0] for e in want)
    assert all(as_older[e][0]["label"] == as_written[e][0]["label"] for e in want)
