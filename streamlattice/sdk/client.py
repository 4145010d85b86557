"""The producer SDK and result subscribers: publish events, read results, or ask and await an answer.

Usable from any asyncio program:

    async with LatticeProducer() as producer:
        event_id = await producer.publish("sensor", "eu-west", "machine-7", window)
    async with ResultSubscriber("sensor", regions=["eu-west"]) as results:
        async for result in results:
            print(result.event_id, result.label, result.score)
    async with LatticeClient() as client:
        result = await client.infer("sensor", "eu-west", window, timeout=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Self

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry.trace import SpanKind, TracerProvider

from streamlattice import tracing
from streamlattice.config import Lattice, load_lattice
from streamlattice.errors import DeadLettered, InferenceTimeout, InvalidEvent, ProducerBackpressure
from streamlattice.inference.validation import check_size, check_tensor_header
from streamlattice.kafka.clients import KafkaSettings, make_consumer, make_producer, start_client
from streamlattice.kafka.partitioning import partition_for
from streamlattice.kafka.registry import RegistryCodec
from streamlattice.kafka.topics import require_topics
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import Codec, Record, codecs, tensor_record
from streamlattice.wire.records import Result

Payload = np.ndarray | str


def encode_event(
    lattice: Lattice,
    task: str,
    region: str,
    source_id: str,
    payload: Payload,
    event_time_us: int | None = None,
    codec: Codec | None = None,
) -> tuple[str, int, bytes]:
    """(event id, partition, record bytes) of one event; InvalidEvent if it does not fit the task.

    `codec` frames it (a schema registry's wire format, see kafka.registry) [single-object encoding].
    """
    spec = lattice.task(task)
    reg = lattice.region(region)
    event_id = uuid.uuid4().hex
    record: Record = {
        "event_id": event_id,
        "event_time_us": event_time_us or now_us(),
        "region": region,
        "task": task,
        "source_id": source_id,
        "tensor": None,
        "text": None,
    }
    if isinstance(payload, str):
        if spec.input != "text":
            raise InvalidEvent("shape", f"task {task!r} takes a {spec.dtype} tensor, not text")
        if not payload.strip():
            raise InvalidEvent("empty", f"task {task!r} got empty text")
        record["text"] = payload
    else:
        if spec.input != "tensor":
            raise InvalidEvent("shape", f"task {task!r} takes text, not a tensor")
        array = np.asarray(payload)
        check_size(spec, array.nbytes)  # before the shape: a huge array is refused as what it is
        check_tensor_header(spec, array.dtype.name, array.shape)
        record["tensor"] = tensor_record(array)
    value = (codec or codecs().event).encode(record)
    check_size(spec, len(value))
    return event_id, partition_for(reg, source_id.encode()), value


class _AsyncService:
    """`async with` support for classes with `start` and `stop`."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class LatticeProducer(_AsyncService):
    """Publishes events into their region's block of `sl.events.<task>` (idempotent, acks=all).

    At most `max_pending` events are in flight (submitted, not yet acknowledged by the
    cluster): `submit` waits for room, so a producer faster than the cluster slows down to its
    pace instead of buffering without bound. If no room frees up within `pending_timeout_s`,
    it raises ProducerBackpressure.
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        lattice: Lattice | None = None,
        settings: KafkaSettings | None = None,
        max_pending: int = 10_000,
        pending_timeout_s: float = 30.0,
        tracer_provider: TracerProvider | None = None,
        **producer_options: Any,
    ) -> None:
        self.lattice = lattice or load_lattice()
        # tracing (see streamlattice.tracing): a PRODUCER span per event, its traceparent on the event
        self._tracing = tracing.recording(tracer_provider)
        self._tracer = tracing.tracer(tracer_provider)
        self.settings = settings or KafkaSettings.from_env(bootstrap, client_id="streamlattice-producer")
        self._producer: AIOKafkaProducer = make_producer(self.settings, **producer_options)
        # each task's events framed as its topic wants them
        topics = {t: self.lattice.events_topic(t) for t in self.lattice.tasks}
        self._codecs = {t: self.settings.codec(codecs().event, topic) for t, topic in topics.items()}
        self._checked_topics: set[str] = set()
        self.max_pending = max_pending
        self.pending_timeout_s = pending_timeout_s
        self._room = asyncio.Semaphore(max_pending)
        self._pending = 0

    async def start(self) -> None:
        """Connect to the cluster (and register the events' schema, with a schema registry)."""
        for codec in self._codecs.values():
            if isinstance(codec, RegistryCodec):
                await asyncio.to_thread(codec.prepare)
        await start_client(self._producer, self.settings)

    async def stop(self) -> None:
        """Deliver what is buffered and disconnect."""
        await self._producer.stop()

    def encode(
        self, task: str, region: str, source_id: str, payload: Payload, event_time_us: int | None = None
    ) -> tuple[str, int, bytes]:
        """(event id, partition, record bytes) of one event; InvalidEvent if it does not fit the task."""
        return encode_event(self.lattice, task, region, source_id, payload, event_time_us, self._codecs.get(task))

    async def submit(
        self, task: str, region: str, source_id: str, payload: Payload, event_time_us: int | None = None
    ) -> tuple[str, asyncio.Future[Any]]:
        """Enqueue one event; returns its id and a future that resolves when the cluster has it.

        Awaiting this waits only while the producer's buffer is full: that is the back-pressure.
        """
        event_id, partition, value = self.encode(task, region, source_id, payload, event_time_us)
        topic = self.lattice.events_topic(task)
        if not self._tracing:
            return event_id, await self.send_encoded(topic, source_id, partition, value)
        with self._tracer.start_as_current_span(f"publish {task}", kind=SpanKind.PRODUCER) as span:
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.destination.name": topic,
                    "messaging.destination.partition.id": str(partition),
                    "messaging.message.id": event_id,
                    "streamlattice.region": region,
                }
            )
            headers = tracing.inject([])
            return event_id, await self.send_encoded(topic, source_id, partition, value, headers)

    @property
    def pending(self) -> int:
        """Events submitted and not yet acknowledged."""
        return self._pending

    async def send_encoded(
        self, topic: str, source_id: str, partition: int, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[Any]:
        """Enqueue an event `encode` made, once there is room; returns its delivery future."""
        if topic not in self._checked_topics:
            await require_topics(self.settings, [topic])
            self._checked_topics.add(topic)
        if not self._room.locked():
            await self._room.acquire()  # room now: returns at once (no timer, no task per event)
        else:
            await self._wait_for_room()
        self._pending += 1
        try:
            delivery = await self._producer.send(
                topic, value, key=source_id.encode(), partition=partition, headers=headers
            )
        except BaseException:
            self._delivered(None)
            raise
        delivery.add_done_callback(self._delivered)
        return delivery

    async def _wait_for_room(self) -> None:
        try:
            await asyncio.wait_for(self._room.acquire(), self.pending_timeout_s)
        except TimeoutError:
            raise ProducerBackpressure(
                f"{self.max_pending} events have waited {self.pending_timeout_s:g}s for the cluster to acknowledge "
                f"them: the brokers at {self.settings.bootstrap} are not keeping up (or are unreachable); "
                "publish more slowly, or raise max_pending / pending_timeout_s"
            ) from None

    def _delivered(self, _: object) -> None:
        self._pending -= 1
        self._room.release()

    async def publish(
        self, task: str, region: str, source_id: str, payload: Payload, event_time_us: int | None = None
    ) -> str:
        """Publish one event and wait until every in-sync replica has it; returns the event id."""
        event_id, delivery = await self.submit(task, region, source_id, payload, event_time_us)
        await delivery
        return event_id

    async def flush(self) -> None:
        """Wait until every submitted event is delivered."""
        await self._producer.flush()


def result_partitions(lattice: Lattice, task: str, regions: Iterable[str] | None) -> list[TopicPartition]:
    """The results-topic partitions of `regions`' blocks (all regions when None)."""
    topic = lattice.results_topic(task)
    chosen = [lattice.region(r) for r in regions] if regions else list(lattice.regions)
    return [TopicPartition(topic, p) for r in chosen for p in r.block]


class ResultSubscriber(_AsyncService):
    """An async iterator over the results of a task, from some or all regions' blocks."""

    def __init__(
        self,
        task: str,
        regions: Iterable[str] | None = None,
        bootstrap: str | None = None,
        lattice: Lattice | None = None,
        settings: KafkaSettings | None = None,
        from_beginning: bool = False,
    ) -> None:
        self.lattice = lattice or load_lattice()
        self.lattice.task(task)
        self.settings = settings or KafkaSettings.from_env(bootstrap, client_id="streamlattice-subscriber")
        self.partitions = result_partitions(self.lattice, task, regions)
        self.from_beginning = from_beginning
        self._consumer: AIOKafkaConsumer = make_consumer(self.settings)
        self._codec = self.settings.codec(codecs().result, self.lattice.results_topic(task))

    async def start(self) -> None:
        """Connect and position at the end (or the beginning) of the chosen blocks."""
        await require_topics(self.settings, [self.partitions[0].topic])
        await start_client(self._consumer, self.settings)
        self._consumer.assign(self.partitions)
        if self.from_beginning:
            await self._consumer.seek_to_beginning(*self.partitions)
        else:
            await self._consumer.seek_to_end(*self.partitions)
        for tp in self.partitions:  # resolve the positions now, before anything is published
            await self._consumer.position(tp)

    async def stop(self) -> None:
        """Disconnect."""
        await self._consumer.stop()

    async def batches(self, timeout_ms: int = 200) -> AsyncIterator[list[Result]]:
        """Results as they arrive, a fetch at a time; an empty list when `timeout_ms` passes quietly."""
        while True:
            fetched = await self._consumer.getmany(timeout_ms=timeout_ms)
            received = now_us()
            yield [
                Result.from_record(self._codec.decode(m.value), m.partition, received)
                for msgs in fetched.values()
                for m in msgs
            ]

    async def __aiter__(self) -> AsyncIterator[Result]:
        async for batch in self.batches():
            for result in batch:
                yield result


class LatticeClient(_AsyncService):
    """Request/response over Kafka: publish an event, await the result with the same event id."""

    def __init__(
        self, bootstrap: str | None = None, lattice: Lattice | None = None, settings: KafkaSettings | None = None
    ) -> None:
        self.lattice = lattice or load_lattice()
        self.settings = settings or KafkaSettings.from_env(bootstrap, client_id="streamlattice-client")
        self.producer = LatticeProducer(lattice=self.lattice, settings=self.settings)
        self._consumer: AIOKafkaConsumer = make_consumer(self.settings)
        self._codec = self.settings.codec(codecs().result)
        self._dead_letter_codec = self.settings.codec(codecs().dead_letter)
        self._event_codec = self.settings.codec(codecs().event)
        self._dlq_topics = {self.lattice.dlq_topic(t) for t in self.lattice.tasks}
        self._assigned: set[TopicPartition] = set()
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect the producer and the result reader."""
        await self.producer.start()
        await start_client(self._consumer, self.settings)
        self._reader = asyncio.create_task(self._read(), name="lattice-client-results")

    async def stop(self) -> None:
        """Stop reading and disconnect; pending requests fail."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for fut in self._waiting.values():
            fut.cancel()
        await self._consumer.stop()
        await self.producer.stop()

    async def infer(
        self, task: str, region: str, payload: Payload, timeout: float = 10.0, source_id: str | None = None
    ) -> Result:
        """The result of one event; DeadLettered if the worker dead-lettered it, InferenceTimeout
        if neither arrives within `timeout` seconds."""
        source = source_id or f"client-{uuid.uuid4().hex[:8]}"
        event_id, partition, value = self.producer.encode(task, region, source, payload)
        # The result lands in the same partition number of the results topic, a dead letter in the
        # same number of the dead-letter topic: read both from their current end, fixed before
        # the event is published so the answer cannot slip past.
        await self._follow(TopicPartition(self.lattice.results_topic(task), partition))
        await self._follow(TopicPartition(self.lattice.dlq_topic(task), partition))
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = fut
        try:
            topic = self.lattice.events_topic(task)
            delivery = await self.producer.send_encoded(topic, source, partition, value)
            await asyncio.wait_for(delivery, timeout)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise InferenceTimeout(
                f"no result for event {event_id} of task {task!r} in region {region!r} within {timeout:g}s "
                f"(is a worker running? `streamlattice worker --task {task} --region {region}`)"
            ) from None
        finally:
            self._waiting.pop(event_id, None)

    async def _follow(self, tp: TopicPartition) -> None:
        if tp in self._assigned:
            return
        async with self._lock:
            if tp in self._assigned:
                return
            await require_topics(self.settings, [tp.topic])
            positions = {old: await self._consumer.position(old) for old in self._assigned}
            self._assigned.add(tp)
            self._consumer.assign(list(self._assigned))
            for old, offset in positions.items():
                self._consumer.seek(old, offset)
            await self._consumer.seek_to_end(tp)
            await self._consumer.position(tp)

    def _dead_letters(self, msgs: list[Any]) -> None:
        for m in msgs:
            try:
                letter = self._dead_letter_codec.decode(m.value)
                event_id = self._event_codec.decode(letter["original"])["event_id"]
            except InvalidEvent:  # a cut original, or someone else's bytes: nothing to match
                continue
            fut = self._waiting.get(event_id)
            if fut is not None and not fut.done():
                fut.set_exception(DeadLettered(event_id, letter["kind"], letter["reason"]))

    async def _read(self) -> None:
        while True:
            if not self._assigned:
                await asyncio.sleep(0.02)
                continue
            async with self._lock:
                fetched = await self._consumer.getmany(timeout_ms=50)
            received = now_us()
            for tp, msgs in fetched.items():
                if tp.topic in self._dlq_topics:
                    self._dead_letters(msgs)
                    continue
                for m in msgs:
                    rec = self._codec.decode(m.value)
                    fut = self._waiting.get(rec["event_id"])
                    if fut is not None and not fut.done():
                        fut.set_result(Result.from_record(rec, m.partition, received))
