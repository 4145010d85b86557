"""The worker: one node of a task's group, from fetched events to committed results.

An event's path through a node, top to bottom, one module each:

1. intake (worker.intake): records fetched in micro-batches sized by the batching policy
   (inference.batching), decoded and checked; a record that fails gets a reason;
2. inference hand-off (worker.handoff): the batch's model input runs on a thread of its own
   while the event loop collects the next batch;
3. outgoing (worker.outgoing): the batch's results and dead letters;
4. checkpoint (worker.checkpoint): written, settled and committed, in the order batches were
   taken, at-least-once (the default) or exactly-once (one transaction per input partition).

Beside the path, membership (worker.membership) follows the router's plans and drains
in-flight batches before partitions move, and the heartbeat (worker.heartbeat) reports what
the node measures. Three asyncio tasks overlap: collect (1, 2), publish (3, write), and
settle-and-commit. Nothing is committed before its records are durable, so a crash loses
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import SpanKind, TracerProvider

from streamlattice import tracing
from streamlattice.config import Lattice, Task
from streamlattice.errors import RegistryUnavailable
from streamlattice.inference.batching import BatchPolicy
from streamlattice.inference.tasks import Inferred, TaskRuntime
from streamlattice.kafka.clients import KafkaSettings, make_consumer, start_client
from streamlattice.kafka.registry import RegistryCodec
from streamlattice.kafka.topics import require_topics
from streamlattice.metrics import WorkerMetrics
from streamlattice.power.energy import EnergyMeter, PowerModel
from streamlattice.power.profiles import Clock, PowerSource
from streamlattice.power.sources import PowerMeter, parse_power
from streamlattice.router.assignor import request_rebalance
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import codecs
from streamlattice.worker.batch import Batch, WorkerStats
from streamlattice.worker.checkpoint import AtLeastOnce, Checkpoint, Transactional
from streamlattice.worker.handoff import Inference
from streamlattice.worker.heartbeat import Heartbeats, Meter
from streamlattice.worker.intake import FETCH_MIN_BYTES, FETCH_PARTITION_BYTES, FETCH_WAIT_MS, Intake
from streamlattice.worker.membership import Membership
from streamlattice.worker.outbox import Delivery, Outbox
from streamlattice.worker.outgoing import Answers

log = logging.getLogger(__name__)

# Batches in flight between the collecting and publishing stages: enough to overlap
# inference with Kafka I/O, few enough that a rebalance drains quickly.
PIPELINE_DEPTH = 2
SESSION_TIMEOUT_MS = 10_000
# How often the event loop notes that it runs: a longer gap than the session timeout means
# the node stood still (worker.runtime._stood_still).
STALL_TICK_S = 0.5
# Whether the objects alive when serving starts are frozen out of the garbage collector's
# passes (gc.freeze): a full pass over a started vision worker's objects took 66-355 ms here,
# and frozen, p99 at 10,000 events/s fell from 57 to 25 ms (vision) and 47 to 27 ms (sensor),
# side by side (bench/gc-freeze.md).
FREEZE_AT_START = True
LOG_EVERY_S = 10.0
# A schema registry that did not answer: how long before the batch is read again.
REGISTRY_RETRY_S = 2.0


def default_node_id(region: str) -> str:
    """A node id unique on this machine: region, host and process."""
    return f"{region}-{socket.gethostname()}-{os.getpid()}"


class Worker:
    """A node of a task's worker group in one region."""

    def __init__(
        self,
        lattice: Lattice,
        task: str,
        region: str,
        node_id: str | None = None,
        settings: KafkaSettings | None = None,
        threads: int = 1,
        providers: tuple[str, ...] | None = None,
        power: PowerSource | None = None,
        exactly_once: bool = False,
        tracer_provider: TracerProvider | None = None,
        power_model: PowerModel | None = None,
    ) -> None:
        self.lattice = lattice
        self.task: Task = lattice.task(task)
        self.region = lattice.region(region)
        self.node_id = node_id or default_node_id(region)
        # Not given its region as client.rack (KIP-392): with aiokafka 0.14's rack-aware fetching on,
        # worker groups stalled in PreparingRebalance in the suite (docs/regions): workers read
        # from partition leaders, which the lattice's topics place at home.
        settings = settings or KafkaSettings.from_env()
        self.settings = settings.with_client_id(f"sl-worker-{self.node_id}")
        self.exactly_once = exactly_once
        self.policy = BatchPolicy(self.task.max_batch, self.task.max_wait_ms)
        self.stats = WorkerStats()
        ls = lattice.settings
        clock = Clock.accelerated(ls.time_factor) if ls.time_factor != 1 else Clock()
        self.power = PowerMeter(power or parse_power(self.region.power, self.region.tz_hours), clock)
        node_power = power_model or lattice.power_model
        if self.task.watts is not None:  # the task's own busy draw (an accelerator)
            node_power = dataclasses.replace(node_power, busy_watts=max(self.task.watts, node_power.idle_watts))
        self.energy = EnergyMeter(node_power)
        self.meter = Meter()
        self.metrics = WorkerMetrics(self.task.name, self.region.name, self.node_id)
        # the wire format of the task's topics: a schema registry's, if the settings name one
        frame = self.settings.codec
        self.intake = Intake(lattice, self.task, frame(codecs().event, lattice.events_topic(task)))
        self.inference = Inference(self.task, self.node_id, threads, providers)
        self.answers = Answers(
            lattice,
            self.task,
            self.node_id,
            self.power,
            self.energy,
            self.metrics,
            frame(codecs().result, lattice.results_topic(task)),
            frame(codecs().dead_letter, lattice.dlq_topic(task)),
        )
        self.membership = Membership(lattice, task, self.node_id, self.region.name, lambda: self.meter.capacity_eps)
        self.heartbeats = Heartbeats(
            lattice, task, self.region.name, self.node_id, self.meter, self.power, self.metrics, self._mean_batch
        )
        self.checkpoint: Checkpoint | None = None  # made in `run`, with the clients it needs
        self._tracing = tracing.recording(tracer_provider)
        self._tracer = tracing.tracer(tracer_provider)
        # When the event loop last ran its stall watch, and the generation during which the
        # node stood still past its session timeout (None: it did not)
        self._last_tick = time.monotonic()
        self._stalled_in: int | None = None
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=PIPELINE_DEPTH)
        # Published batches awaiting acknowledgement, in consumption order.
        self._acks: asyncio.Queue[tuple[Batch, list[Delivery]] | None] = asyncio.Queue(maxsize=4 * PIPELINE_DEPTH)

    @property
    def runtime(self) -> TaskRuntime | None:
        """The task's model with its hooks, once loaded."""
        return self.inference.runtime

    def load(self) -> TaskRuntime:
        """Load and warm up the model now (otherwise `run` does)."""
        return self.inference.load()

    # ---- the node's life ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then drain in-flight batches, commit and leave the group."""
        lt = self.lattice
        topics = [lt.events_topic(self.task.name), lt.results_topic(self.task.name), lt.dlq_topic(self.task.name)]
        await require_topics(self.settings, topics)
        await asyncio.to_thread(self._register_schemas)
        runtime = await self.inference.loaded()
        model = runtime.model
        log.info("node %s: model %s@%s on %s", self.node_id, model.name, model.version, ",".join(model.providers))
        self.meter.capacity_eps = runtime.warm_capacity_eps
        self.energy.restart()  # results pay for serving, not for loading the model
        await self.membership.start(self.settings)
        # At-least-once: results, dead letters and heartbeats. Exactly-once: heartbeats only.
        # Its requests give a silent broker (a network partition) the session timeout, not 30 s:
        # a record is sent again, to the partition's new leader, instead of the heartbeats
        # stopping long enough for the router to count this node gone (it retries for ever).
        outbox = Outbox(
            dataclasses.replace(
                self.settings, request_timeout_ms=min(self.settings.request_timeout_ms, SESSION_TIMEOUT_MS)
            ),
            self.answers.fallback,
            self._set_aside,
        )
        group_id = lt.group_id(self.task.name)
        checkpoint: Checkpoint = (
            Transactional(self.settings, group_id, self.answers.fallback, self.node_id, self._set_aside)
            if self.exactly_once
            else AtLeastOnce(outbox, self.node_id, self._set_aside)
        )
        self.checkpoint = checkpoint
        consumer = make_consumer(
            self.settings,
            group_id=group_id,
            partition_assignment_strategy=(self.membership.assignor(),),
            max_poll_records=self.task.max_batch,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
        )
        await outbox.start()
        try:
            await start_client(consumer, self.settings)
        except BaseException:
            await outbox.stop()
            await self.membership.stop()
            raise
        self.membership.consumer = consumer
        checkpoint.bind(consumer)
        consumer.subscribe([topics[0]], listener=self.membership.listener(self.drain, checkpoint))
        if FREEZE_AT_START:
            # what is alive now (the model, its session, the modules, the clients) lives as long
            # as the node: out of the collector's sight, so that its full passes stop walking it
            gc.collect()
            gc.freeze()
        publisher = asyncio.create_task(self._publish_loop(checkpoint), name="publish")
        committer = asyncio.create_task(self._commit_loop(checkpoint), name="commit")
        reporter = asyncio.create_task(self.heartbeats.run(lambda: outbox.producer, consumer, model), name="heartbeat")
        self._last_tick = time.monotonic()  # loading the model took the time it took
        watch = asyncio.create_task(self._watch_stalls(), name="stall-watch")
        try:
            await self._collect_loop(consumer, checkpoint, stop, publisher, committer)
            await self._queue.put(None)
            await publisher
            await self._acks.put(None)
            await committer
        finally:
            for task in (publisher, committer, reporter, watch):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(Exception):
                await self.heartbeats.send(outbox.producer, consumer, model, stopping=True)
            await consumer.stop()
            await checkpoint.close()
            await outbox.stop()
            await self.membership.stop()
            self.inference.shutdown()
            log.info("node %s stopped: %s", self.node_id, self.stats.line())

    async def drain(self) -> None:
        """Wait until every dispatched batch is published, settled and committed."""
        await self._queue.join()
        await self._acks.join()
        if self.checkpoint is not None:
            await self.checkpoint.commit()

    # ---- stage 1: collect, validate, hand to inference -------------------------------------

    async def _collect_loop(
        self, consumer: AIOKafkaConsumer, checkpoint: Checkpoint, stop: asyncio.Event, *stages: asyncio.Task[None]
    ) -> None:
        pending: list[ConsumerRecord[bytes, bytes]] = []
        first_at = 0.0
        generation = self.membership.generation
        last_log = time.monotonic()
        while not stop.is_set():
            for stage in stages:
                if stage.done():  # a later stage failed: surface its error
                    stage.result()
                    return
            age_ms = (time.monotonic() - first_at) * 1000 if pending else 0.0
            timeout_ms, room = self.policy.next_poll(len(pending), age_ms)
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=room)
            if self._stood_still():
                # Its partitions have moved on (or will, at the rebalance asked for): what it
                # fetched is its successors' to answer, and answering it too only doubles it.
                self.intake.rewind(consumer, pending + [m for msgs in fetched.values() for m in msgs])
                pending = []
                continue
            for msgs in fetched.values():
                if msgs and not pending:
                    first_at = time.monotonic()
                pending.extend(msgs)
            if generation != self.membership.generation:
                # A rebalance ran meanwhile: what was collected is not committed and may now be
                # another node's. Rewind what we still own, so nothing is skipped.
                self.intake.rewind(consumer, pending)
                pending, generation = [], self.membership.generation
                continue
            pending = await checkpoint.reposition(pending)
            age_ms = (time.monotonic() - first_at) * 1000 if pending else 0.0
            if self.policy.is_ready(len(pending), age_ms, self._model_free()):
                try:
                    await self.intake.learn_schemas(pending)
                except RegistryUnavailable as e:  # not the records' fault: read them again
                    log.warning("node %s: %s; the batch is read again in %g s", self.node_id, e, REGISTRY_RETRY_S)
                    self.intake.rewind(consumer, pending)
                    pending = []
                    await asyncio.sleep(REGISTRY_RETRY_S)
                    continue
                await self._dispatch(pending, generation, checkpoint)
                pending = []
            if time.monotonic() - last_log > LOG_EVERY_S:
                log.info("node %s: %s", self.node_id, self.stats.line())
                last_log = time.monotonic()
        if pending and generation == self.membership.generation:
            with contextlib.suppress(RegistryUnavailable):  # stopping: what is not dispatched is read again
                await self.intake.learn_schemas(pending)
                await self._dispatch(pending, generation, checkpoint)

    async def _watch_stalls(self) -> None:
        while True:
            await asyncio.sleep(STALL_TICK_S)
            self._stood_still()

    def _stood_still(self) -> bool:
        """Whether the node stood still past its session timeout (SIGSTOP, a frozen host, a
        blocked event loop) and the group has not rebalanced since.

        The group counted it gone after the session timeout, so its partitions may already be
        served elsewhere, and the records it fetched before, or fetches as it wakes (aiokafka
        fetches for the old assignment until a heartbeat learns otherwise), would be answered
        twice. It rejoins at once and takes nothing until the rebalance: a zombie's at-least-once
        duplicates are then only the batches it had in flight (its exactly-once writes are fenced).
        """
        now = time.monotonic()
        if now - self._last_tick > SESSION_TIMEOUT_MS / 1000 and self._stalled_in is None:
            self._stalled_in = self.membership.generation
            log.warning(
                "node %s stood still for %.1f s, past its session timeout: it takes nothing until the group "
                "has rebalanced",
                self.node_id,
                now - self._last_tick,
            )
            if self.membership.consumer is not None:
                request_rebalance(self.membership.consumer)
        self._last_tick = now
        if self._stalled_in is not None and self._stalled_in != self.membership.generation:
            self._stalled_in = None
        return self._stalled_in is not None

    def _model_free(self) -> bool:
        # Free: nothing is inferring and the publisher has room for another batch.
        return self.inference.in_flight == 0 and self._queue.qsize() < PIPELINE_DEPTH

    async def _dispatch(
        self, records: list[ConsumerRecord[bytes, bytes]], generation: int, checkpoint: Checkpoint
    ) -> None:
        started = time.perf_counter()
        self.meter.consumed(len(records))
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        batch = self.intake.validate(records, generation, checkpoint.epoch)
        if batch.accepted:
            x = self.intake.model_input(batch)
            if batch.accepted:
                self.inference.start(batch, x)
        self.stats.consumed += len(records)
        self.stats.batches += 1
        batch.python_s += time.perf_counter() - started
        await self._queue.put(batch)

    # ---- stage 2: results and dead letters, written -----------------------------------------

    async def _publish_loop(self, checkpoint: Checkpoint) -> None:
        while True:
            batch = await self._queue.get()
            try:
                if batch is None:
                    return
                await self._acks.put((batch, await self._publish(batch, checkpoint)))
            finally:
                self._queue.task_done()

    async def _publish(self, batch: Batch, checkpoint: Checkpoint) -> list[Delivery]:
        inferred, infer_s = await self.inference.finish(batch)
        if infer_s:
            self.stats.infer_s += infer_s
            self.metrics.inference_s.observe(infer_s)
        if not self._tracing:
            return await self._answer(batch, checkpoint, inferred, infer_s)
        # one span per batch, linking every event's trace context (see streamlattice.tracing)
        records = [m for m, _ in batch.accepted] + [m for m, _ in batch.rejected]
        with self._tracer.start_as_current_span(
            f"process {self.task.name}",
            kind=SpanKind.CONSUMER,
            links=tracing.links(m.headers for m in records),
            start_time=batch.consumed_us * 1000,
        ) as span:
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.batch.message_count": len(records),
                    "streamlattice.node": self.node_id,
                    "streamlattice.dead_lettered": len(batch.rejected),
                }
            )
            if infer_s:
                ended = time.time_ns() - int((time.perf_counter() - batch.infer_started - infer_s) * 1e9)
                self._tracer.start_span("infer", start_time=ended - int(infer_s * 1e9)).end(end_time=ended)
            with self._tracer.start_as_current_span("produce"):
                return await self._answer(batch, checkpoint, inferred, infer_s)

    async def _answer(
        self, batch: Batch, checkpoint: Checkpoint, inferred: Inferred | None, infer_s: float
    ) -> list[Delivery]:
        """Build the batch's results and dead letters and hand them to the checkpoint."""
        started = time.perf_counter()
        outgoing = []
        if inferred is not None:
            assert self.runtime is not None
            outgoing = self.answers.results(batch, inferred, self.runtime.model)
        outgoing += self.answers.dead_letters(batch)
        built = time.perf_counter()
        deliveries = await checkpoint.write(batch, outgoing)
        batch.python_s += (time.perf_counter() if checkpoint.write_is_work else built) - started
        self.meter.batch(len(batch.accepted) + len(batch.rejected), batch.python_s + infer_s)
        return deliveries

    # ---- stage 3: settled, then committed ------------------------------------------------------

    async def _commit_loop(self, checkpoint: Checkpoint) -> None:
        # Batches are settled in the order they were consumed, so an offset is never committed
        # while an earlier record of its partition is still unacknowledged. Commits are
        # coalesced: while one is in flight, later batches' offsets accumulate.
        while True:
            item = await self._acks.get()
            try:
                if item is None:
                    await checkpoint.commit()
                    return
                batch, deliveries = item
                await checkpoint.settle(batch, deliveries)
                self.stats.produced += len(batch.accepted)
                self.stats.dead_lettered += len(batch.rejected)
                self._observe_settled(batch)
                if self._acks.empty():
                    await checkpoint.commit()
            finally:
                self._acks.task_done()

    def _observe_settled(self, batch: Batch) -> None:
        self.metrics.produced.inc(len(batch.accepted))
        self.metrics.dead_lettered.inc(len(batch.rejected))
        now = now_us()
        observe = self.metrics.latency_s.observe
        for _, ev in batch.accepted:
            observe((now - ev["event_time_us"]) / 1e6)

    def _register_schemas(self) -> None:
        """With a schema registry: the schemas of what this node writes (results, dead letters)
        registered under their topics' subjects (blocking I/O). Events are their producers' to
        register: a reader only looks writer schemas up."""
        for codec in (self.answers.result_codec, self.answers.dead_letter_codec):
            if isinstance(codec, RegistryCodec):
                schema_id = codec.prepare()
                log.info("node %s: %s records on %s as schema id %d", self.node_id, codec.name, codec.topic, schema_id)

    def _set_aside(self, n: int) -> None:
        self.stats.set_aside += n
        self.metrics.set_aside.inc(n)

    def _mean_batch(self) -> float:
        return self.stats.consumed / max(self.stats.batches, 1)
