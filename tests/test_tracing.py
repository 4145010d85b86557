"""Traces: one event followed from the SDK's publish, through a worker's batch, to its result."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from conftest import worker_in_process
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings, make_consumer
from streamlattice.sdk.client import LatticeProducer
from streamlattice.wire.codec import codecs
from streamlattice.worker.runtime import Worker
from workers.sensor.signals import generate

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def first_results(bootstrap: str, lattice: Lattice, want: set[str], timeout: float) -> dict[str, dict]:
    """event id -> the result's Kafka headers, read from the results topic's start."""
    consumer = make_consumer(KafkaSettings(bootstrap=bootstrap))
    await consumer.start()
    found: dict[str, dict] = {}
    try:
        tps = [TopicPartition(lattice.results_topic("sensor"), p) for p in range(lattice.total_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while not want <= found.keys() and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    found[codecs().result.decode(m.value)["event_id"]] = dict(m.headers)
    finally:
        await consumer.stop()
    return found


def test_one_event_is_followed_from_publish_through_its_batch_to_its_result(kafka: str, lattice: Lattice) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = KafkaSettings(bootstrap=kafka)

    async def main() -> tuple[set[str], dict[str, dict]]:
        async with worker_in_process(
            Worker(lattice, "sensor", "eu-west", "traced-0", settings, tracer_provider=provider)
        ):
            windows = generate(3, seed=5).x
            async with LatticeProducer(lattice=lattice, settings=settings, tracer_provider=provider) as producer:
                ids = {await producer.publish("sensor", "eu-west", f"machine-{i}", windows[i]) for i in range(3)}
            results = await first_results(kafka, lattice, ids, timeout=60)
        return ids, results

    ids, results = asyncio.run(main())

    assert ids <= results.keys(), f"no result for {ids - results.keys()}"
    spans = exporter.get_finished_spans()
    published = {s.attributes["messaging.message.id"]: s for s in spans if s.name == "publish sensor"}
    assert published.keys() == ids and all(s.kind == SpanKind.PRODUCER for s in published.values())
    batches = [s for s in spans if s.name == "process sensor"]
    linked = {link.context.span_id for s in batches for link in s.links}
    for event_id in ids:
        publish = published[event_id].context
        # the result carries the event's trace context: a subscriber continues the same trace
        traceparent = results[event_id]["traceparent"].decode()
        assert traceparent == f"00-{publish.trace_id:032x}-{publish.span_id:016x}-{publish.trace_flags:02x}"
        assert publish.span_id in linked, "the batch that served the event does not link its trace"
    batch = next(s for s in batches if s.links)
    children = {s.name for s in spans if s.parent is not None and s.parent.span_id == batch.context.span_id}
    assert {"infer", "produce"} <= children
