"""The fault-injection suite: faults injected into a three-node KRaft cluster and real workers.

Every scenario runs two lanes side by side on the same cluster, one per delivery mode: each
lane is a lattice of its own (topics, worker group) with its own workers and load, and the
fault hits both. Afterwards every result is counted by event id: nothing may be lost in
either mode, and the exactly-once lane may not hold a duplicate. The suite prints a table of
scenario, mode, events, lost, duplicates and recovery time (the worst end-to-end latency of
an event published after the fault: how long the lattice stalled).

Run just this suite with `pytest -m faults`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError
from conftest import FAST_TIMINGS, FAULT_ROW, WorkerProcess, collect_results, outcome, write_lattice

from streamlattice.chaos.run import leader_of_most
from streamlattice.config import Lattice
from streamlattice.devbroker import broker as dev
from streamlattice.kafka import fixes
from streamlattice.kafka.clients import KafkaSettings, make_admin, make_consumer
from streamlattice.kafka.fixes import OffsetsUnavailable, ask_coordinator, missing_offsets
from streamlattice.kafka.lag import group_offsets
from streamlattice.sdk.client import LatticeProducer
from streamlattice.wire.clock import now_us
from streamlattice.wire.records import Result
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(300)]

MODES = {"at-least-once": (), "exactly-once": ("--exactly-once",)}
RATE = 120.0  # events/s per lane


@dataclass
class Cluster:
    """The suite's three-node cluster and its data dir."""

    data_dir: Path
    bootstrap: str

    def pids(self) -> dict[int, int | None]:
        """Node id -> pid of the running JVM (None if down)."""
        return {s.node_id: s.pid if s.running else None for s in dev.status(self.data_dir)}

    def kill(self, node_id: int) -> None:
        """SIGKILL one node."""
        pid = self.pids()[node_id]
        assert pid is not None, f"node {node_id} is not running"
        os.kill(pid, signal.SIGKILL)

    def restart_missing(self) -> None:
        """Start the nodes that are down; the others keep running."""
        dev.start(self.data_dir, nodes=3, progress=lambda _: None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("kafka3")
    state = dev.start(data_dir, port=dev.free_port_block(3), nodes=3, progress=lambda _: None)
    try:
        yield Cluster(data_dir, state.bootstrap)
    finally:
        dev.stop(data_dir, progress=lambda _: None)


@pytest.fixture(scope="module")
def kafka(cluster: Cluster) -> str:
    """This module's workers, routers and clients use the three-node cluster."""
    return cluster.bootstrap


@dataclass
class Lane:
    """One delivery mode's lattice, workers and load within a scenario."""

    mode: str
    lattice: Lattice
    bootstrap: str
    start_worker: Callable[..., WorkerProcess]
    procs: list[WorkerProcess] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _failure: BaseException | None = None

    def worker(self, region: str = "eu-west", lattice: Lattice | None = None) -> WorkerProcess:
        """Start one more worker of this lane."""
        node = f"{self.mode[:2]}-{len(self.procs)}"
        w = self.start_worker(lattice or self.lattice, region, node_id=node, args=MODES[self.mode])
        self.procs.append(w)
        return w

    def alive(self) -> list[WorkerProcess]:
        """The lane's workers still running."""
        return [w for w in self.procs if w.alive()]

    def start_load(self, rate: float = RATE) -> None:
        """Publish sensor windows over all regions at `rate` until `stop_load`."""
        self._thread = threading.Thread(target=self._run_publisher, args=(rate,), daemon=True)
        self._thread.start()

    def _run_publisher(self, rate: float) -> None:
        try:
            asyncio.run(self._publish(rate))
        except BaseException as e:  # surfaces in stop_load: a load generator that died fails the test
            self._failure = e

    async def _publish(self, rate: float) -> None:
        windows = signals.generate(4096, seed=len(self.mode))
        regions = [r.name for r in self.lattice.regions]
        pending = []
        settings = KafkaSettings(bootstrap=self.bootstrap)
        async with LatticeProducer(lattice=self.lattice, settings=settings) as producer:
            started, i = time.monotonic(), 0
            while not self._stop.is_set():
                k = i % len(windows.x)
                event_id, delivery = await producer.submit("sensor", regions[i % 3], windows.source_id[k], windows.x[k])
                self.sent.append(event_id)
                pending.append(delivery)
                i += 1
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            await asyncio.gather(*pending)

    def stop_load(self) -> None:
        """Stop publishing once everything published is acknowledged."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)
        assert not self._thread.is_alive(), "the load generator did not finish"
        if self._failure is not None:
            raise AssertionError(f"the load generator failed after {len(self.sent)} events") from self._failure


class Scenario:
    """A lane per delivery mode, a fault and the count afterwards."""

    def __init__(
        self,
        name: str,
        kafka: str,
        models: dict[str, Path],
        tmp: Path,
        workers: Callable,
        record: Callable[[str, object], None],
    ) -> None:
        self.name = name
        self.record = record
        self.kafka = kafka
        self.tmp = tmp
        self.lanes = [Lane(mode, self.lattice(models["sensor"]), kafka, workers) for mode in MODES]
        self.fault_us = 0

    def lattice(self, model: Path, namespace: str | None = None) -> Lattice:
        """A lane's lattice (a fresh namespace unless given), topics created."""
        settings = KafkaSettings(bootstrap=self.kafka)
        return write_lattice(
            settings, self.tmp, {"sensor": model}, ("sensor",), namespace, max_batch=64, settings_toml=FAST_TIMINGS
        )

    def workers(self, n: int) -> None:
        """Start n workers per lane and wait until each holds partitions."""
        for lane in self.lanes:
            for _ in range(n):
                lane.worker()
        for lane in self.lanes:
            for w in lane.procs:
                w.wait_assigned()

    def load(self) -> None:
        for lane in self.lanes:
            lane.start_load()

    def fault(self) -> None:
        """Mark the moment of the fault (recovery is measured from here)."""
        self.fault_us = now_us()

    def finish(self) -> dict[str, dict[str, list[Result]]]:
        """Stop the load, count every lane's results, record the table row and check the promises."""
        for lane in self.lanes:
            lane.stop_load()

        async def collect_all() -> list[dict[str, list[Result]]]:
            expected = [(lane.lattice, set(lane.sent)) for lane in self.lanes]
            return await asyncio.gather(*(collect_results(self.kafka, lt, "sensor", ids, 120) for lt, ids in expected))

        collected = asyncio.run(collect_all())
        out = {}
        for lane, results in zip(self.lanes, collected, strict=True):
            missing, duplicates = outcome(lane.sent, results)
            first = [rs[0] for rs in results.values()]
            after = [r.produced_us - r.event_time_us for r in first if r.event_time_us >= self.fault_us]
            recovery_s = max(after, default=float("nan")) / 1e6
            self.record(FAULT_ROW, (self.name, lane.mode, len(lane.sent), len(missing), duplicates, recovery_s))
            assert after, f"{self.name} ({lane.mode}): no event published after the fault was answered"
            out[lane.mode] = results
        for lane, results in zip(self.lanes, collected, strict=True):
            missing, duplicates = outcome(lane.sent, results)
            logs = "\n".join(w.text()[-1500:] for w in lane.procs)
            assert len(lane.sent) > 500, "the scenario ran too briefly to mean anything"
            assert not missing, f"{self.name} ({lane.mode}): {len(missing)} of {len(lane.sent)} lost\n{logs}"
            if lane.mode == "exactly-once":
                twice = [[(r.node_id, r.partition) for r in rs] for rs in results.values() if len(rs) > 1]
                assert duplicates == 0, f"{self.name}: {duplicates} duplicates (exactly-once): {twice[:5]}\n{logs}"
        return out


@pytest.fixture
def scenario(
    kafka: str, models: dict[str, Path], tmp_path: Path, workers: Callable, record_property: Callable
) -> Callable[[str], Scenario]:
    return lambda name: Scenario(name, kafka, models, tmp_path, workers, record_property)


def sigkill(w: WorkerProcess) -> None:
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()


def test_a_worker_killed_mid_batch_three_times_in_a_row(scenario: Callable[[str], Scenario]) -> None:
    s = scenario("worker SIGKILL x3")
    s.workers(2)
    s.load()
    time.sleep(3)
    s.fault()
    for _ in range(3):
        for lane in s.lanes:
            sigkill(lane.alive()[0])  # the oldest: it holds partitions and is mid-batch under load
            lane.worker()
        time.sleep(4)
    time.sleep(12)  # the group drops the dead after its 10 s session timeout
    s.finish()


def test_the_broker_leading_the_event_partitions_is_killed(
    scenario: Callable[[str], Scenario], cluster: Cluster
) -> None:
    s = scenario("broker leader SIGKILL")
    s.workers(2)
    s.load()
    time.sleep(3)
    leader = leader_of_most(cluster.bootstrap, [lane.lattice.events_topic("sensor") for lane in s.lanes])
    s.fault()
    cluster.kill(leader)
    try:
        time.sleep(15)
    finally:
        cluster.restart_missing()
    time.sleep(3)
    s.finish()
    assert all(w.alive() for lane in s.lanes for w in lane.procs), "a worker died with the broker"


def rolling_restart(s: Scenario, replacement: Callable[[Lane], Lattice] | None = None) -> None:
    """Restart each lane's workers one by one (each waits until its successor holds partitions)."""
    for _ in range(len(s.lanes[0].alive())):
        for lane in s.lanes:
            old = lane.alive()[0]
            assert old.terminate(timeout=60) == 0, old.text()[-2000:]
            lane.worker(lattice=replacement(lane) if replacement else None)
        for lane in s.lanes:
            lane.procs[-1].wait_assigned()
        time.sleep(1)


def test_a_model_version_swap_by_rolling_restart(scenario: Callable[[str], Scenario], tmp_path: Path) -> None:
    """Every worker restarted one by one, each on a new model version: the rolling restart an
    operator does (a plain restart of every worker is this with the same model)."""
    import onnx

    s = scenario("model swap (rolling)")
    v1 = s.lanes[0].lattice.task("sensor").model
    model = onnx.load(v1)
    onnx.helper.set_model_props(model, {"release": "2"})
    v2 = tmp_path / "sensor-v2.onnx"
    onnx.save(model, v2)
    next_version = {lane.mode: s.lattice(v2, namespace=lane.lattice.namespace) for lane in s.lanes}
    s.workers(2)
    s.load()
    time.sleep(3)
    s.fault()
    rolling_restart(s, replacement=lambda lane: next_version[lane.mode])
    time.sleep(3)
    results = s.finish()
    for lane in s.lanes:
        by_version = {r.model_version for rs in results[lane.mode].values() for r in rs}
        assert len(by_version) == 2, f"{lane.mode}: both versions should have served, got {by_version}"
        last = results[lane.mode][lane.sent[-1]][0]
        assert last.model_version != results[lane.mode][lane.sent[0]][0].model_version


@pytest.mark.timeout(120)
def test_committed_offsets_survive_a_coordinator_that_refuses_the_fetch(cluster: Cluster) -> None:
    """OffsetFetch refused at the top level (here NOT_COORDINATOR: asked of a broker that is not
    the group's coordinator; after a broker restart, COORDINATOR_LOAD_IN_PROGRESS) must be asked
    again, not read as "never committed", which sends a consumer back to the partition's start."""

    async def main() -> None:
        settings = KafkaSettings(bootstrap=cluster.bootstrap)
        topic, group = f"offsets-{uuid.uuid4().hex[:8]}", f"offsets-{uuid.uuid4().hex[:8]}"
        admin = make_admin(settings)
        await admin.start()
        consumer = make_consumer(settings, group_id=group)
        try:
            await admin.create_topics([NewTopic(topic, 1, 3)])
            await consumer.start()
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.commit({tp: 42})
            coordinator = consumer._coordinator
            others = [b.nodeId for b in consumer._client.cluster.brokers() if b.nodeId != coordinator.coordinator_id]
            coordinator.coordinator_id = others[0]  # the request goes to a broker that refuses it
            assert await consumer.committed(tp) == 42

            answer = await admin.list_consumer_group_offsets(group, partitions=[tp], group_coordinator_id=others[0])
            with pytest.raises(OffsetsUnavailable):
                missing_offsets(group, [tp], answer)
            offsets = await group_offsets(admin, consumer, group, [tp])  # asks the coordinator itself
            assert offsets[tp].committed == 42
        finally:
            await consumer.stop()
            await admin.close()

    asyncio.run(main())


def test_a_coordinator_that_is_not_ready_is_asked_again_for_a_while_then_its_refusal_is_raised() -> None:
    """A fresh cluster answers COORDINATOR_NOT_AVAILABLE until it has made __consumer_offsets:
    `streamlattice status` on a cluster that just started waits for it instead of failing."""
    calls = []

    async def ready_on_third_call() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise GroupCoordinatorNotAvailableError("not yet")
        return "answer"

    assert asyncio.run(ask_coordinator(ready_on_third_call, wait_s=5)) == "answer"
    assert len(calls) == 3

    async def never_ready() -> str:
        raise OffsetsUnavailable("still loading")

    started = time.monotonic()
    with pytest.raises(OffsetsUnavailable):
        asyncio.run(ask_coordinator(never_ready, wait_s=1.0))
    assert 1.0 <= time.monotonic() - started < 3.0
    with pytest.raises(GroupCoordinatorNotAvailableError):  # wait_s=0: asked once
        calls.clear()
        asyncio.run(ask_coordinator(ready_on_third_call, wait_s=0))
    assert len(calls) == 1


def test_a_heartbeat_to_a_silent_coordinator_gives_up_after_the_session_timeout() -> None:
    """A coordinator cut off by a network partition never answers: the member must look for
    another one after its session timeout, not after the 30 s request timeout (fixes.py)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    fixes.apply()

    class SilentCoordinator:
        group_id, generation, member_id = "g", 1, "m"
        _session_timeout_ms = 300
        coordinator_id = 1
        _client = SimpleNamespace(force_metadata_update=lambda: None)

        async def _send_req(self, request: object) -> object:
            await asyncio.sleep(3600)  # a blackhole
            raise AssertionError("unreachable")

    started = time.monotonic()
    assert asyncio.run(GroupCoordinator._do_heartbeat(SilentCoordinator())) is False  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 2.0


async def read_keys(
    settings: KafkaSettings, topic: str, partitions: int, count: int, within_s: float
) -> dict[int, list[bytes]]:
    """The keys of `topic`'s records by partition, in offset order, once `count` are read or `within_s` is up."""
    consumer = make_consumer(settings, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        keys: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + within_s
        while sum(map(len, keys.values())) < count and time.monotonic() < deadline:
            for tp, msgs in (await consumer.getmany(timeout_ms=1000)).items():
                keys[tp.partition] += [m.key for m in msgs if m.key is not None]
        return keys
    finally:
        await consumer.stop()


@pytest.mark.timeout(180)
def test_the_outbox_waits_out_a_partition_without_a_leader(cluster: Cluster) -> None:
    """Results for a partition whose only replica is down: the producer holds one batch for it and
    times out handing over the next (request timeout). The outbox must keep handing them over
    until the broker is back, not fail the worker, and deliver each record once."""
    from aiokafka.structs import ConsumerRecord

    from streamlattice.worker.outbox import Outbox
    from streamlattice.worker.outgoing import Outgoing

    settings = KafkaSettings(bootstrap=cluster.bootstrap, request_timeout_ms=2_000)
    topic = f"outbox-{uuid.uuid4().hex[:8]}"
    node = 1 + uuid.uuid4().int % 3

    def item(i: int) -> Outgoing:
        source = ConsumerRecord(topic, 0, i, 0, 0, None, b"", None, 0, 0, [])
        return Outgoing(source, (topic, f"{i:06d}".encode() * 1700, str(i).encode(), 0, None), None)

    async def main() -> list[bytes]:
        admin = make_admin(settings)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, -1, -1, replica_assignments={0: [node]})])
        finally:
            await admin.close()
        outbox = Outbox(settings, lambda item, error, attempt: None, lambda n: None)
        await outbox.start()
        try:
            await (await outbox.send([item(0)]))[0].future  # the producer knows the leader
            cluster.kill(node)
            await asyncio.sleep(1)

            def restart_later() -> None:
                time.sleep(12)
                cluster.restart_missing()

            back = asyncio.get_running_loop().run_in_executor(None, restart_later)
            items = [item(i) for i in range(1, 201)]  # 10 KB each: eight batches of 256 KB
            deliveries = await outbox.send(items)  # before: KafkaTimeoutError after 2 s
            await back
            await asyncio.wait_for(outbox.settle(deliveries), 120)
            assert sorted(x.source.offset for d in deliveries for x in d.items) == list(range(1, 201))
        finally:
            await outbox.stop()
        return (await read_keys(settings, topic, 1, 201, within_s=60))[0]

    keys = asyncio.run(main())
    assert sorted(keys, key=int) == [str(i).encode() for i in range(201)], "lost, duplicated or out of order"
    assert keys == sorted(keys, key=int), "out of order"


@pytest.mark.timeout(120)
def test_the_outbox_waits_out_a_topic_missing_from_the_metadata(kafka: str) -> None:
    """A result topic the cluster's metadata does not know (its only replica down, or deleted and
    not yet made again): handing records over raises UnknownTopicOrPartitionError after the
    request timeout. The outbox must wait it out, not fail the worker, and deliver each record
    once the topic is there, in order per partition."""
    from aiokafka.structs import ConsumerRecord

    from streamlattice.worker.outbox import Outbox
    from streamlattice.worker.outgoing import Outgoing

    settings = KafkaSettings(bootstrap=kafka, request_timeout_ms=1_500)
    topic = f"outbox-missing-{uuid.uuid4().hex[:8]}"
    partitions = 4
    items = [
        Outgoing(
            ConsumerRecord(topic, i % partitions, i, 0, 0, None, b"", None, 0, 0, []),
            (topic, b"x", str(i).encode(), i % partitions, None),
            None,
        )
        for i in range(200)
    ]

    async def main() -> dict[int, list[bytes]]:
        outbox = Outbox(settings, lambda item, error, attempt: None, lambda n: None)
        await outbox.start()
        admin = make_admin(settings)
        await admin.start()
        try:

            async def make_topic_later() -> None:
                await asyncio.sleep(4)  # past two request timeouts: two refusals waited out
                await admin.create_topics([NewTopic(topic, partitions, 1)])

            later = asyncio.ensure_future(make_topic_later())
            deliveries = await asyncio.wait_for(outbox.send(items), 60)  # before: UnknownTopicOrPartitionError
            await later
            await asyncio.wait_for(outbox.settle(deliveries), 60)
        finally:
            await outbox.stop()
            await admin.close()
        return await read_keys(settings, topic, partitions, len(items), within_s=30)

    expected = {p: [str(i).encode() for i in range(p, len(items), partitions)] for p in range(partitions)}
    assert asyncio.run(main()) == expected, "lost, duplicated or out of order"


def test_a_request_that_times_out_asks_for_metadata_and_passes_the_silent_node_over() -> None:
    """aiokafka retried a timed-out request on the same node without asking who leads now (a
    region cut kept users and workers on the cut-off broker until it came back, fixes.py)."""
    from aiokafka.client import AIOKafkaClient, ConnectionGroup
    from aiokafka.errors import RequestTimedOutError
    from aiokafka.protocol.metadata import MetadataRequest

    fixes.apply()

    class SilentConnection:
        def send(self, request: object, expect_response: bool = True) -> asyncio.Future[object]:
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            future.set_exception(TimeoutError())  # what the connection raises at its timeout
            return future

        def connected(self) -> bool:
            return True

        def close(self, reason: object = None) -> None:
            pass

    async def main() -> tuple[int, object]:
        client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9")
        asked: list[int] = []
        client.force_metadata_update = lambda: asked.append(1)  # type: ignore[method-assign]
        client._conns[(7, ConnectionGroup.DEFAULT)] = SilentConnection()
        with pytest.raises(RequestTimedOutError):
            await client.send(7, MetadataRequest([]))
        del client._conns[(7, ConnectionGroup.DEFAULT)]
        return len(asked), await client._get_conn(7)  # passed over: no connection attempted

    assert asyncio.run(main()) == (1, None)


def test_a_fetch_a_silent_leader_never_answers_times_out_past_its_wait_not_after_the_request_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetch in flight to a cut-off leader is cancelled by every rebalance and sent again to the
    same node, so the 30 s request timeout may never run out (the regions test on CI read nothing
    from a cut region's partitions for the whole cut): a fetch gets its own bound (fixes.py)."""
    from aiokafka.client import AIOKafkaClient, ConnectionGroup
    from aiokafka.errors import RequestTimedOutError
    from aiokafka.protocol.fetch import FetchRequest

    fixes.apply()
    monkeypatch.setattr(fixes, "FETCH_SILENCE_S", 0.3)
    closed: list[object] = []

    class BlackholedConnection:
        def send(self, request: object, expect_response: bool = True) -> asyncio.Future[object]:
            return asyncio.get_running_loop().create_future()  # never answered

        def connected(self) -> bool:
            return True

        def close(self, reason: object = None) -> None:
            closed.append(reason)

    async def main() -> tuple[float, int, object]:
        client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", request_timeout_ms=30_000)
        asked: list[int] = []
        client.force_metadata_update = lambda: asked.append(1)  # type: ignore[method-assign]
        client._conns[(7, ConnectionGroup.DEFAULT)] = BlackholedConnection()
        started = time.monotonic()
        with pytest.raises(RequestTimedOutError):
            await client.send(7, FetchRequest(100, 1, 1 << 20, 1, [("t", [(0, 0, 1 << 20)])]))
        took = time.monotonic() - started
        del client._conns[(7, ConnectionGroup.DEFAULT)]
        return took, len(asked), await client._get_conn(7)

    took, asked, conn = asyncio.run(main())
    assert 0.4 <= took < 2.0  # its wait (0.1 s) and the bound, not the 30 s request timeout
    assert (asked, conn, len(closed)) == (1, None, 1)  # metadata asked, the node passed over, its connection closed
