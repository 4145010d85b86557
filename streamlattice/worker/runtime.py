"""The worker loop: consume a micro-batch, validate, infer in a thread, produce, then commit.

Two stages overlap: while ONNX Runtime works on batch k in a thread, the event loop
collects and validates batch k+1; a second task publishes each batch's results (and dead
letters) in order and commits its offsets only once every one of them is acknowledged.
Nothing is committed before its result is durable, so a crash loses nothing (at-least-once).

With `exactly_once`, the publishing stage writes each batch's results and dead letters per
input partition in one Kafka transaction together with that partition's offsets (see
streamlattice.worker.transactions); a transaction that fails is redone from the last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from aiokafka.structs import ConsumerRecord

from streamlattice.config import Lattice, Task
from streamlattice.errors import ConfigError, InvalidEvent, StreamLatticeError
from streamlattice.inference.batching import BatchPolicy
from streamlattice.inference.models import load_model
from streamlattice.inference.tasks import Inferred, Isolated, TaskRuntime
from streamlattice.inference.validation import check_event, check_size, non_finite_rows
from streamlattice.kafka.clients import KafkaSettings, Message, make_consumer, start_client
from streamlattice.kafka.lag import consumer_lag
from streamlattice.kafka.partitioning import partition_for
from streamlattice.kafka.topics import require_topics
from streamlattice.metrics import WorkerMetrics
from streamlattice.placement.assignment import AssignmentInfo, Member
from streamlattice.power.profiles import Clock, PowerSource
from streamlattice.power.sources import PowerMeter, parse_power
from streamlattice.router.assignor import lattice_assignor, request_rebalance
from streamlattice.router.plans import PlanFollower
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import Record, codecs, stack_tensors, tensor_rows
from streamlattice.wire.records import PublishedPlan
from streamlattice.worker.agent import Meter, heartbeat_record
from streamlattice.worker.outbox import RECORD_ERRORS, Delivery, Outbox, Outgoing
from streamlattice.worker.transactions import PartitionLost, PartitionTransactions

log = logging.getLogger(__name__)

ERROR_HEADER = "sl.error.reason"
KIND_HEADER = "sl.error.kind"
# Batches in flight between the collecting and publishing stages: enough to overlap
# inference with Kafka I/O, few enough that a rebalance drains quickly.
PIPELINE_DEPTH = 2
# A fetch returns once it has this much, or after FETCH_WAIT_MS: under load, fewer and fuller
# fetches for a broker that shares the machine (in one sweep at 11k events/s, sensor p99 73 ms
# against 137 with Kafka's 1 byte); at low rates it can add up to FETCH_WAIT_MS per event.
FETCH_MIN_BYTES = 64 * 1024
FETCH_WAIT_MS = 10
# A dead letter holds the original whole up to this size (or the task's max_event_bytes, if
# larger), and beyond it a prefix with the original's size and SHA-256: a whole original can be
# larger than the broker takes (message.max.bytes, 1 MiB by default), and a dead letter the
# broker refuses would stop the partition.
DEAD_LETTER_ORIGINAL_BYTES = 64 * 1024
# What a refused dead letter keeps of its original in its fallback forms (see worker.outbox).
DEAD_LETTER_CUTS = (1024, 0)


def default_node_id(region: str) -> str:
    """A node id unique on this machine: region, host and process."""
    return f"{region}-{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerStats:
    """Running totals a worker logs and reports."""

    consumed: int = 0
    produced: int = 0
    dead_lettered: int = 0
    batches: int = 0
    infer_s: float = 0.0
    started: float = field(default_factory=time.monotonic)

    set_aside: int = 0  # records Kafka refused in every form (logged one by one)

    def line(self) -> str:
        """One log line of the totals."""
        up = max(time.monotonic() - self.started, 1e-9)
        mean = self.consumed / self.batches if self.batches else 0.0
        return (
            f"consumed={self.consumed} produced={self.produced} dead_lettered={self.dead_lettered} "
            f"set_aside={self.set_aside} rate={self.produced / up:.0f}/s mean_batch={mean:.1f}"
        )


@dataclass
class Batch:
    """One micro-batch on its way through the pipeline."""

    generation: int
    offsets: dict[TopicPartition, int]  # next offset to commit, per partition
    consumed_us: int
    accepted: list[tuple[ConsumerRecord[bytes, bytes], Record]]
    rejected: list[tuple[ConsumerRecord[bytes, bytes], InvalidEvent]]
    inference: asyncio.Future[Isolated] | None = None
    infer_started: float = 0.0
    epochs: dict[TopicPartition, int] = field(default_factory=dict)  # exactly-once: see Worker._read_again
    python_s: float = 0.0  # time the event loop spent on this batch (validation, encoding)


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
    ) -> None:
        self.lattice = lattice
        self.task: Task = lattice.task(task)
        self.region = lattice.region(region)
        self.node_id = node_id or default_node_id(region)
        self.settings = (settings or KafkaSettings.from_env()).with_client_id(f"sl-worker-{self.node_id}")
        self.policy = BatchPolicy(self.task.max_batch, self.task.max_wait_ms)
        self.threads = threads
        self.providers = providers
        self.stats = WorkerStats()
        self.generation = 0
        self.runtime: TaskRuntime | None = None
        self._codecs = codecs()
        self._regions = {r.name: r for r in lattice.regions}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{self.task.name}")
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=PIPELINE_DEPTH)
        self._inferring = 0  # batches handed to the inference thread and not finished
        # Published batches awaiting acknowledgement, in consumption order.
        self._acks: asyncio.Queue[tuple[Batch, list[Delivery]] | None] = asyncio.Queue(maxsize=4 * PIPELINE_DEPTH)
        self._finished: dict[TopicPartition, int] = {}  # acknowledged, not yet committed
        self._consumer: AIOKafkaConsumer | None = None
        self._outbox: Outbox | None = None
        self._dead_letter_cap = max(DEAD_LETTER_ORIGINAL_BYTES, self.task.max_event_bytes)
        ls = lattice.settings
        clock = Clock.accelerated(ls.time_factor) if ls.time_factor != 1 else Clock()
        self.power = PowerMeter(power or parse_power(self.region.power, self.region.tz_hours), clock)
        self.meter = Meter()
        self.metrics = WorkerMetrics(self.task.name, self.region.name, self.node_id)
        self.plans: PlanFollower | None = None
        self.assigned = AssignmentInfo(0, "sticky")
        self._rejoin_epoch = 0  # newest plan epoch a rebalance was asked for
        # exactly-once: the transactional producers of the partitions this node owns
        self.transactions = PartitionTransactions(self.settings, lattice.group_id(task)) if exactly_once else None
        # Exactly-once: a partition whose transaction failed is read again from its last commit;
        # its epoch tells batches taken before that apart, and they are dropped unpublished.
        self._epochs: dict[TopicPartition, int] = {}
        self._reseek: set[TopicPartition] = set()

    # ---- set-up --------------------------------------------------------------------------

    def load(self) -> TaskRuntime:
        """Load the model with its hooks and warm it up, so the first real batch is not an outlier."""
        runtime = TaskRuntime(self.task, load_model(self.task, self.threads, self.providers))
        runtime.warm_up(tuple(sorted({1, self.task.max_batch})))
        self.runtime = runtime
        return runtime

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then drain in-flight batches, commit and leave the group."""
        lt = self.lattice
        topics = [lt.events_topic(self.task.name), lt.results_topic(self.task.name), lt.dlq_topic(self.task.name)]
        await require_topics(self.settings, topics)
        runtime = self.runtime
        if runtime is None:
            runtime = await asyncio.get_running_loop().run_in_executor(self._executor, self.load)
        model = runtime.model
        log.info("node %s: model %s@%s on %s", self.node_id, model.name, model.version, ",".join(model.providers))
        self.meter.capacity_eps = runtime.warm_capacity_eps
        # Read the newest plan before joining, so the first assignment already follows it.
        self.plans = PlanFollower(lt, self.task.name, self.settings, self._on_plan)
        await self.plans.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.plans.caught_up.wait(), 5)
        # At-least-once: results, dead letters and heartbeats. Exactly-once: heartbeats only.
        outbox = self._outbox = Outbox(self.settings, self._fallback, self._set_aside)
        assignor = lattice_assignor(lt, self._member, self._plan_for_assignment, self._on_assigned)
        consumer = make_consumer(
            self.settings,
            group_id=lt.group_id(self.task.name),
            partition_assignment_strategy=(assignor,),
            max_poll_records=self.task.max_batch,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        await outbox.start()
        try:
            await start_client(consumer, self.settings)
        except BaseException:
            await outbox.stop()
            await self.plans.stop()
            raise
        consumer.subscribe([topics[0]], listener=_DrainOnRevoke(self))
        self._consumer = consumer
        publisher = asyncio.create_task(self._publish_loop(outbox), name="publish")
        committer = asyncio.create_task(self._commit_loop(consumer, outbox), name="commit")
        reporter = asyncio.create_task(self._heartbeat_loop(outbox, consumer), name="heartbeat")
        try:
            await self._consume_loop(consumer, stop, publisher, committer)
            await self._queue.put(None)
            await publisher
            await self._acks.put(None)
            await committer
        finally:
            for task in (publisher, committer, reporter):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(Exception):
                await self._send_heartbeat(outbox.producer, consumer, stopping=True)
            await consumer.stop()
            if self.transactions is not None:
                await self.transactions.close()
            await outbox.stop()
            await self.plans.stop()
            self._executor.shutdown(wait=False)
            log.info("node %s stopped: %s", self.node_id, self.stats.line())

    # ---- the lattice: membership facts, plans, heartbeats ----------------------------------

    def _member(self) -> Member:
        owned = tuple(tp.partition for tp in self._consumer.assignment()) if self._consumer else ()
        return Member(self.node_id, self.region.name, self.meter.capacity_eps, owned)

    def _plan_for_assignment(self) -> PublishedPlan | None:
        return self.plans.current(self.lattice.settings.plan_stale_s) if self.plans else None

    def _on_assigned(self, info: AssignmentInfo) -> None:
        self.assigned = info
        # The leader may not have read the newest plan yet: ask again shortly.
        latest = self._plan_for_assignment()
        if latest is not None and latest.epoch > info.epoch:
            self._rejoin_epoch = 0  # the request for this epoch did not land: allow another
            asyncio.get_running_loop().call_later(1.0, self._maybe_rebalance)

    def _on_plan(self, plan: PublishedPlan) -> None:
        self._maybe_rebalance()

    def _maybe_rebalance(self) -> None:
        latest = self._plan_for_assignment()
        if self._consumer is None or latest is None or latest.epoch <= self.assigned.epoch:
            return
        if latest.epoch == self._rejoin_epoch and self.assigned.epoch != 0:
            return  # asked already for this epoch; _on_assigned re-arms if the answer predates it
        mine = {p for p, n in latest.assignment.items() if n == self.node_id}
        held = {tp.partition for tp in self._consumer.assignment()}
        if mine != held or self.assigned.mode != "plan":
            log.info("node %s: plan epoch %d changes the assignment; rebalancing", self.node_id, latest.epoch)
            self._rejoin_epoch = latest.epoch
            request_rebalance(self._consumer)

    async def _heartbeat_loop(self, outbox: Outbox, consumer: AIOKafkaConsumer) -> None:
        while True:
            await asyncio.sleep(self.lattice.settings.heartbeat_s)
            try:
                await self._send_heartbeat(outbox.producer, consumer)
            except KafkaError as e:
                log.warning("node %s: heartbeat not sent (%s)", self.node_id, e)

    async def _send_heartbeat(self, producer: Any, consumer: AIOKafkaConsumer, stopping: bool = False) -> None:
        owned = consumer.assignment()
        lag, highwater = await consumer_lag(consumer)
        self.meter.roll(highwater)
        # a feed may answer slowly: read it off the event loop (not on the inference thread either)
        reading = await asyncio.get_running_loop().run_in_executor(None, self.power.refresh)
        m = self.metrics
        m.lag.set(lag)
        m.capacity.set(self.meter.capacity_eps)
        m.partitions.set(len(owned))
        m.renewable.set(reading.renewable_fraction)
        m.carbon_intensity.set(reading.carbon_intensity)
        assert self.runtime is not None
        record = heartbeat_record(
            node_id=self.node_id,
            task=self.task.name,
            region=self.region.name,
            meter=self.meter,
            lag=lag,
            partitions=[tp.partition for tp in owned],
            mean_batch=self.stats.consumed / max(self.stats.batches, 1),
            providers=self.runtime.model.providers,
            model_version=self.runtime.model.version,
            power=self.power,
            stopping=stopping,
        )
        value = self._codecs.heartbeat.encode(record)
        await producer.send_and_wait(self.lattice.heartbeats_topic, value, key=self.node_id.encode())

    # ---- stage 1: collect, validate, start inference ---------------------------------------

    async def _consume_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event, *stages: asyncio.Task[None]) -> None:
        pending: list[ConsumerRecord[bytes, bytes]] = []
        first_at = 0.0
        generation = self.generation
        last_log = time.monotonic()
        while not stop.is_set():
            for stage in stages:
                if stage.done():  # a later stage failed: surface its error
                    stage.result()
                    return
            age_ms = (time.monotonic() - first_at) * 1000 if pending else 0.0
            timeout_ms, room = self.policy.next_poll(len(pending), age_ms)
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=room)
            for msgs in fetched.values():
                if msgs and not pending:
                    first_at = time.monotonic()
                pending.extend(msgs)
            if generation != self.generation:
                # A rebalance ran meanwhile: what was collected is not committed and may now be
                # another node's. Rewind what we still own, so nothing is skipped.
                self._rewind(consumer, pending)
                pending, generation = [], self.generation
                continue
            if self._reseek:
                pending = await self._seek_back(consumer, pending)
            age_ms = (time.monotonic() - first_at) * 1000 if pending else 0.0
            if self.policy.is_ready(len(pending), age_ms, self._model_free()):
                await self._dispatch(pending, generation)
                pending = []
            if time.monotonic() - last_log > 10:
                log.info("node %s: %s", self.node_id, self.stats.line())
                last_log = time.monotonic()
        if pending and generation == self.generation:
            await self._dispatch(pending, generation)

    async def _seek_back(
        self, consumer: AIOKafkaConsumer, pending: list[ConsumerRecord[bytes, bytes]]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Read partitions again from their last committed offset (exactly-once: after a failed
        transaction, and after an assignment)."""
        while self._reseek:  # no await between the last check and the next batch's epochs
            partitions = set(self._reseek)
            self._reseek.clear()
            pending = [m for m in pending if TopicPartition(m.topic, m.partition) not in partitions]
            for tp in partitions:
                # a rebalance may take a partition away meanwhile: its next owner reads it
                with contextlib.suppress(IllegalStateError):
                    known = self.transactions.next_offsets.get(tp) if self.transactions else None
                    committed = known if known is not None else await consumer.committed(tp)
                    if committed is None:
                        await consumer.seek_to_beginning(tp)
                    else:
                        consumer.seek(tp, committed)
                    log.debug("node %s: partition %d read from offset %s", self.node_id, tp.partition, committed)
        return pending

    def _read_again(self, partitions: list[TopicPartition]) -> None:
        """Drop what was taken from `partitions` and read them again from their last commit."""
        for tp in partitions:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self._reseek.add(tp)

    def _model_free(self) -> bool:
        # Free: nothing is inferring and the publisher has room for another batch.
        return self._inferring == 0 and self._queue.qsize() < PIPELINE_DEPTH

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        first: dict[TopicPartition, int] = {}
        for m in records:
            tp = TopicPartition(m.topic, m.partition)
            first[tp] = min(first.get(tp, m.offset), m.offset)
        owned = consumer.assignment()
        for tp, offset in first.items():
            if tp in owned:
                consumer.seek(tp, offset)

    def validate(self, records: list[ConsumerRecord[bytes, bytes]]) -> Batch:
        """Decode and check one batch of records; those that fail become dead letters."""
        batch = Batch(self.generation, {}, now_us(), [], [])
        event_codec = self._codecs.event
        for m in records:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in batch.offsets:
                batch.epochs[tp] = self._epochs.get(tp, 0)
            batch.offsets[tp] = max(batch.offsets.get(tp, 0), m.offset + 1)
            try:
                if m.value is None:
                    raise InvalidEvent("undecodable", "record has no value")
                check_size(self.task, len(m.value))
                event = event_codec.decode(m.value)
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

    async def _dispatch(self, records: list[ConsumerRecord[bytes, bytes]], generation: int) -> None:
        started = time.perf_counter()
        self.meter.consumed(len(records))
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        batch = self.validate(records)
        batch.generation = generation
        if batch.accepted:
            x = self.model_input(batch)
            if batch.accepted:
                assert self.runtime is not None
                batch.infer_started = time.perf_counter()
                loop = asyncio.get_running_loop()
                batch.inference = loop.run_in_executor(self._executor, self.runtime.run_isolating, x)
                self._inferring += 1
                batch.inference.add_done_callback(self._inference_done)
        self.stats.consumed += len(records)
        self.stats.batches += 1
        batch.python_s += time.perf_counter() - started
        await self._queue.put(batch)

    def _inference_done(self, _: asyncio.Future[Isolated]) -> None:
        self._inferring -= 1

    # ---- stage 2: publish results and dead letters, then commit ----------------------------

    async def _publish_loop(self, outbox: Outbox) -> None:
        while True:
            batch = await self._queue.get()
            try:
                if batch is None:
                    return
                await self._acks.put((batch, await self._publish(batch, outbox)))
            finally:
                self._queue.task_done()

    async def _publish(self, batch: Batch, outbox: Outbox) -> list[Delivery]:
        """Hand a batch's results and dead letters to Kafka; returns the deliveries to await.

        Exactly-once: each input partition's share is committed in a transaction here, so there
        is nothing left to await.
        """
        infer_s = 0.0
        outgoing: list[Outgoing] = []
        if batch.inference is not None:
            try:
                isolated = await batch.inference
            except Exception as e:  # not the model (it is isolated per event): dead-letter the batch, keep serving
                log.warning("node %s: inference failed on a batch of %d: %s", self.node_id, len(batch.accepted), e)
                batch.rejected += [(m, InvalidEvent("inference", f"model failed: {e!r}")) for m, _ in batch.accepted]
                batch.accepted = []
            else:
                infer_s = time.perf_counter() - batch.infer_started
                self.stats.infer_s += infer_s
                self.metrics.inference_s.observe(infer_s)
                if isolated.failures:
                    self._reject_failed_rows(batch, isolated)
                started = time.perf_counter()
                if isolated.inferred is not None:
                    outgoing = self._results(batch, isolated.inferred, infer_s)
                batch.python_s += time.perf_counter() - started
        started = time.perf_counter()
        outgoing += self._dead_letters(batch)
        deliveries: list[Delivery] = []
        if self.transactions is None:
            deliveries = await outbox.send(outgoing)
        else:
            await self._commit_transactions(batch, outgoing)
        batch.python_s += time.perf_counter() - started
        self.meter.batch(len(batch.accepted) + len(batch.rejected), batch.python_s + infer_s)
        return deliveries

    def _reject_failed_rows(self, batch: Batch, isolated: Isolated) -> None:
        """Move the events the model raised on to the dead letters, each with its own exception."""
        failed = dict(isolated.failures)
        log.warning(
            "node %s: the model raised on %d of %d events (first: %r); dead-lettering only those",
            self.node_id,
            len(failed),
            len(batch.accepted),
            next(iter(failed.values())),
        )
        batch.rejected += [
            (batch.accepted[i][0], InvalidEvent("inference", f"model failed on this event: {e!r}"))
            for i, e in failed.items()
        ]
        batch.accepted = [batch.accepted[i] for i in isolated.kept]

    async def _commit_transactions(self, batch: Batch, outgoing: list[Outgoing]) -> None:
        assert self.transactions is not None
        shares: dict[int, list[Outgoing]] = {tp.partition: [] for tp in batch.offsets}
        for item in outgoing:
            shares[item.source.partition].append(item)

        async def commit(tp: TopicPartition, offset: int) -> bool:
            assert self.transactions is not None
            await self.transactions.ready(tp)
            if batch.epochs[tp] != self._epochs.get(tp, 0):
                return False  # taken before this partition was last read again: it is read again
            share = shares[tp.partition]
            attempt = 0
            aside = False
            while True:
                try:
                    await self.transactions.commit(tp, [item.message for item in share], offset, singly=attempt > 0)
                except PartitionLost as e:
                    # Not open yet (fetched before the assignment callback ran: it reads the
                    # partition again once open), or fenced: another node owns it; rejoin.
                    self._read_again([tp])
                    if e.fenced and self._consumer is not None:
                        log.warning("node %s: %s; rejoining the group", self.node_id, e)
                        request_rebalance(self._consumer)
                    return False
                except RECORD_ERRORS as e:
                    # The broker refused a record for what it is: the same transaction would be
                    # refused again. Retry it in the smaller forms a refused record falls back to,
                    # and set the share aside when none is left, so that the partition goes on.
                    attempt += 1
                    fallback = self._share_fallback(shares[tp.partition], e, attempt)
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
                            len(shares[tp.partition]),
                            tp.topic,
                            tp.partition,
                            offset,
                        )
                        self._set_aside(len(shares[tp.partition]))
                    return True

        done = await asyncio.gather(*(commit(tp, offset) for tp, offset in batch.offsets.items()))
        dropped = {tp.partition for tp, ok in zip(batch.offsets, done, strict=True) if not ok}
        if dropped:  # count only what was committed
            batch.accepted = [a for a in batch.accepted if a[0].partition not in dropped]
            batch.rejected = [r for r in batch.rejected if r[0].partition not in dropped]

    def _set_aside(self, n: int) -> None:
        self.stats.set_aside += n
        self.metrics.set_aside.inc(n)

    def _share_fallback(self, share: list[Outgoing], error: BaseException, attempt: int) -> list[Outgoing] | None:
        """A refused transaction's records in their next form: the first retry sends them as they
        are, one record batch each (a topic can refuse a batch for its total size); later ones
        use every record's fallback form (None once a record has none left)."""
        if attempt == 1:
            return share
        forms = [self._fallback(item, error, attempt - 1) for item in share]
        return None if any(f is None for f in forms) else [f for f in forms if f is not None]

    # ---- stage 3: once a batch's records are acknowledged, commit its offsets ------------

    async def _commit_loop(self, consumer: AIOKafkaConsumer, outbox: Outbox) -> None:
        # Batches are acknowledged in the order they were consumed, so an offset is never
        # committed while an earlier record of its partition is still unacknowledged.
        # Commits are coalesced: while one is in flight, later batches' offsets accumulate.
        while True:
            item = await self._acks.get()
            try:
                if item is None:
                    await self._commit(consumer)
                    return
                batch, deliveries = item
                await outbox.settle(deliveries)
                self.stats.produced += len(batch.accepted)
                self.stats.dead_lettered += len(batch.rejected)
                self._observe_acknowledged(batch)
                if self.transactions is None:  # exactly-once committed them in its transactions
                    for tp, offset in batch.offsets.items():
                        self._finished[tp] = max(self._finished.get(tp, 0), offset)
                if self._acks.empty():
                    await self._commit(consumer)
            finally:
                self._acks.task_done()

    def _observe_acknowledged(self, batch: Batch) -> None:
        self.metrics.produced.inc(len(batch.accepted))
        self.metrics.dead_lettered.inc(len(batch.rejected))
        now = now_us()
        observe = self.metrics.latency_s.observe
        for _, ev in batch.accepted:
            observe((now - ev["event_time_us"]) / 1e6)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        if not self._finished:
            return
        offsets, self._finished = self._finished, {}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as e:
            # The partitions moved on; their new owner re-reads from the last commit (duplicates, no loss).
            log.warning("node %s: commit of finished batches refused (%s)", self.node_id, e)

    def _results(self, batch: Batch, inferred: Inferred, infer_s: float) -> list[Outgoing]:
        """The result records of a batch, each with the input partition it answers."""
        assert self.runtime is not None
        model = self.runtime.model
        inferred_us = now_us()
        n = len(batch.accepted)
        outputs, flags = inferred.outputs, inferred.flags
        labels, scores = inferred.annotations.labels, inferred.annotations.scores
        energy_j = self.task.watts * infer_s / n
        carbon_g = energy_j / 3.6e6 * self.power.reading.carbon_intensity
        self.metrics.energy_j.inc(energy_j * n)
        self.metrics.carbon_g.inc(carbon_g * n)
        topic = self.lattice.results_topic(self.task.name)
        encode = self._codecs.result.encode
        # per batch, not per event: each output's rows, the scores as floats, the clock
        columns = [(name, tensor_rows(out)) for name, out in outputs.items()]
        score_list = None if scores is None else np.asarray(scores, dtype=np.float64).tolist()
        regions = self._regions
        produced_us = now_us()
        messages: list[Outgoing] = []
        for i, (m, ev) in enumerate(batch.accepted):
            record = {
                "event_id": ev["event_id"],
                "task": self.task.name,
                "region": ev["region"],
                "source_id": ev["source_id"],
                "node_id": self.node_id,
                "model_name": model.name,
                "model_version": model.version,
                "label": None if labels is None else labels[i],
                "score": None if score_list is None else score_list[i],
                "flags": [] if flags is None else flags[i],
                "outputs": {name: rows[i] for name, rows in columns},
                "event_time_us": ev["event_time_us"],
                "consumed_us": batch.consumed_us,
                "inferred_us": inferred_us,
                "produced_us": produced_us,
                "energy_j": energy_j,
                "carbon_g": carbon_g,
            }
            partition = partition_for(regions[ev["region"]], ev["source_id"].encode())
            messages.append(Outgoing(m, (topic, encode(record), m.key, partition, None), None))
        return messages

    def _dead_letters(self, batch: Batch) -> list[Outgoing]:
        """The dead-letter records of a batch: the original bytes, the reason in headers and record."""
        return [self._dead_letter(m, err, self._dead_letter_cap) for m, err in batch.rejected]

    def _dead_letter(self, m: ConsumerRecord[bytes, bytes], err: InvalidEvent, keep: int) -> Outgoing:
        """The dead letter of one record, holding at most `keep` bytes of its original."""
        original = m.value or b""
        record = {
            "original": original[:keep],
            "original_key": m.key,
            "original_size": len(original),
            "original_sha256": hashlib.sha256(original).hexdigest(),
            "reason": err.reason,
            "kind": err.kind,
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "node_id": self.node_id,
            "time_us": now_us(),
        }
        headers = [(ERROR_HEADER, err.reason.encode()), (KIND_HEADER, err.kind.encode())]
        message: Message = (
            self.lattice.dlq_topic(self.task.name),
            self._codecs.dead_letter.encode(record),
            m.key,
            m.partition,
            headers,
        )
        return Outgoing(m, message, err)

    def _fallback(self, item: Outgoing, error: BaseException, attempt: int) -> Outgoing | None:
        """The form a record Kafka refused is tried in next (see worker.outbox): a result becomes
        its event's dead letter, a dead letter keeps less of its original; None when none is left."""
        refused = f"{type(error).__name__}: {error}"
        if item.error is None:
            cuts: tuple[int, ...] = (self._dead_letter_cap, *DEAD_LETTER_CUTS)
            err = InvalidEvent("produce", f"its result was refused by Kafka ({refused})")
        else:
            cuts = DEAD_LETTER_CUTS
            err = InvalidEvent(
                item.error.kind, f"{item.error.reason}; its dead letter was refused by Kafka ({refused})"
            )
        if attempt > len(cuts):
            return None
        return self._dead_letter(item.source, err, cuts[attempt - 1])

    async def drain(self) -> None:
        """Wait until every dispatched batch is published, acknowledged and committed."""
        await self._queue.join()
        await self._acks.join()
        if self._consumer is not None:
            await self._commit(self._consumer)


class _DrainOnRevoke(ConsumerRebalanceListener):
    """Before partitions move, finish and commit what was taken from them."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.worker.generation += 1
        await self.worker.drain()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        w = self.worker
        if w.transactions is not None:
            # Opening a partition's producer fences its previous owner and settles that owner's
            # last transaction; only then is the committed offset final, so read from there.
            try:
                await w.transactions.assign(assigned, on_opened=w._read_again)
            except (StreamLatticeError, KafkaError, OSError) as e:
                log.warning("node %s: transactional producers not ready (%s); rejoining", w.node_id, e)
                if w._consumer is not None:
                    request_rebalance(w._consumer)
        log.info(
            "node %s assigned partitions %s",
            self.worker.node_id,
            sorted(tp.partition for tp in assigned),
        )
