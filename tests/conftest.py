"""Fixtures that start real services: a KRaft broker on free ports, lattices, worker processes.

Everything started here is stopped at teardown, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from streamlattice.config import Lattice, load_lattice
from streamlattice.devbroker import broker as dev
from streamlattice.inference.models import build_model
from streamlattice.kafka.clients import KafkaSettings, make_consumer, make_producer
from streamlattice.kafka.topics import ensure_topics
from streamlattice.sdk.client import ResultSubscriber
from streamlattice.wire.codec import codecs
from streamlattice.wire.records import Result
from streamlattice.worker.runtime import Worker

REPO = Path(__file__).resolve().parents[1]
# The user property under which the fault suite records a row of its table (scenario, mode,
# events, lost, duplicates, recovery s): properties travel with the test's report, also from
# pytest-xdist's workers.
FAULT_ROW = "fault_row"
# Tests that run multi-broker clusters with faults timed against them, or that saturate the
# CPU: `pytest -n 2 --dist loadgroup` (what ./dev test runs) keeps them on one worker, one at a
# time, while the other worker runs the rest of the suite beside them.
ONE_AT_A_TIME = frozenset(
    {"test_chaos.py", "test_faults.py", "test_bench.py", "test_backpressure.py", "test_regions.py"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the tests of ONE_AT_A_TIME's modules in one xdist group."""
    for item in items:
        if item.path.name in ONE_AT_A_TIME:
            item.add_marker(pytest.mark.xdist_group("one-at-a-time"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """After the run, the fault suite's table (if it ran)."""
    rows = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == FAULT_ROW
    ]
    if not rows:
        return
    tr = terminalreporter
    tr.section("fault injection")
    tr.write_line(f"{'scenario':<34} {'mode':<14} {'events':>7} {'lost':>5} {'dups':>5} {'recovery s':>11}")
    for name, mode, events, lost, dups, recovery in rows:
        tr.write_line(f"{name:<34} {mode:<14} {events:>7} {lost:>5} {dups:>5} {recovery:>11.1f}")


# The layout every test lattice shares: three regions of four partitions and their latencies.
REGIONS_TOML = """
[regions.eu-west]
partitions = 4
carbon_intensity = 250.0
[regions.us-east]
partitions = 4
carbon_intensity = 380.0
[regions.ap-south]
partitions = 4
carbon_intensity = 620.0

[latency_ms.eu-west]
us-east = 40.0
ap-south = 65.0
[latency_ms.us-east]
ap-south = 110.0
"""

TASKS_TOML = {
    "sensor": """
[tasks.sensor]
model = "{model}"
postprocess = "workers.sensor.model:postprocess"
generator = "workers.sensor.signals:sample"
input = "tensor"
dtype = "float32"
shape = [3, 64]
max_batch = {max_batch}
max_wait_ms = 20
max_event_bytes = 8192
{hooks}
""",
    "vision": """
[tasks.vision]
model = "{model}"
postprocess = "workers.vision.model:postprocess"
input = "tensor"
dtype = "uint8"
shape = [32, 32]
max_batch = 64
max_wait_ms = 20
max_event_bytes = 4096
""",
    "language": """
[tasks.language]
model = "{model}"
preprocess = "workers.language.model:preprocess"
postprocess = "workers.language.model:postprocess"
input = "text"
max_tokens = 32
max_batch = 16
max_wait_ms = 20
max_event_bytes = 16384
labels = ["billing question", "service outage", "password reset", "hardware failure", "feature request"]
""",
}

# [lattice] timings for tests of the lattice itself: heartbeats, plans and timeouts in seconds
FAST_TIMINGS = """heartbeat_s = 1.0
node_timeout_s = 5.0
plan_interval_s = 1.0
plan_refresh_s = 3.0
plan_hold_s = 5.0"""


def write_lattice(
    settings: KafkaSettings,
    folder: Path,
    models: dict[str, Path],
    tasks: Iterable[str] = ("sensor", "vision", "language"),
    namespace: str | None = None,
    max_batch: int = 256,
    settings_toml: str = "",
    sensor_hooks: str = "",
) -> Lattice:
    """A test lattice in a fresh namespace (unless given) with its topics created by `settings`.

    `settings_toml` goes into [lattice] (and may open tables of its own after it, e.g.
    [placement]); `sensor_hooks` into [tasks.sensor].
    """
    namespace = namespace or f"t{uuid.uuid4().hex[:10]}"
    text = f'[lattice]\nnamespace = "{namespace}"\n{settings_toml}\n{REGIONS_TOML}'
    for task in tasks:
        text += TASKS_TOML[task].format(model=models[task], max_batch=max_batch, hooks=sensor_hooks)
    path = folder / f"{namespace}-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text)
    lattice = load_lattice(path)
    asyncio.run(ensure_topics(settings, lattice))
    return lattice


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node KRaft broker on a free port for the whole session; its bootstrap address."""
    data_dir = tmp_path_factory.mktemp("kafka")
    state = dev.start(data_dir, port=dev.free_port(), progress=lambda _: None)
    try:
        yield state.bootstrap
    finally:
        dev.stop(data_dir, progress=lambda _: None)


@pytest.fixture(scope="session")
def models() -> dict[str, Path]:
    """The example models of the repo's lattice.toml, built unless up to date."""
    repo = load_lattice(REPO / "lattice.toml")
    return {name: build_model(task).path for name, task in repo.tasks.items()}


@pytest.fixture(scope="session")
def sensor_model_path(models: dict[str, Path]) -> Path:
    """The sensor model file."""
    return models["sensor"]


@pytest.fixture
def make_lattice(kafka: str, models: dict[str, Path], tmp_path: Path) -> Callable[..., Lattice]:
    """Write a lattice.toml with a fresh namespace (so tests never share topics) and create its topics."""

    def make(max_batch: int = 256) -> Lattice:
        return write_lattice(KafkaSettings(bootstrap=kafka), tmp_path, models, max_batch=max_batch)

    return make


@pytest.fixture
def lattice(make_lattice: Callable[..., Lattice]) -> Lattice:
    """A fresh lattice with its topics created."""
    return make_lattice()


class WorkerProcess:
    """A `streamlattice worker` subprocess and its log."""

    def __init__(
        self,
        bootstrap: str,
        lattice: Lattice,
        task: str,
        region: str,
        node_id: str,
        log: Path,
        args: list[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self.node_id = node_id
        cmd = [sys.executable, "-m", "streamlattice", "--bootstrap", bootstrap, "--config", str(lattice.source)]
        cmd += ["worker", "--task", task, "--region", region, "--node-id", node_id, *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def text(self) -> str:
        """What the worker logged so far."""
        return self.log.read_text(errors="replace")

    def wait_assigned(self, timeout: float = 60.0, holding: bool = True) -> None:
        """Wait until the worker has joined its group (and, if `holding`, holds partitions)."""
        deadline = time.monotonic() + timeout
        pattern = r"assigned partitions \[\d" if holding else r"assigned partitions \["
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.node_id} exited early:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker {self.node_id} not assigned within {timeout}s:\n{self.text()[-3000:]}")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workers(kafka: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; all are killed at teardown."""
    started: list[WorkerProcess] = []

    def start(
        lattice: Lattice, region: str, task: str = "sensor", node_id: str | None = None, args: tuple[str, ...] = ()
    ) -> WorkerProcess:
        nid = node_id or f"{region}-{len(started)}"
        log = tmp_path / f"worker-{nid}-{len(started)}.log"
        w = WorkerProcess(kafka, lattice, task, region, nid, log, list(args))
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


async def collect_results(
    bootstrap: str, lattice: Lattice, task: str, expected: set[str], timeout: float
) -> dict[str, list[Result]]:
    """Every result of `task` from the beginning until all `expected` event ids are seen (or timeout)."""
    seen: dict[str, list[Result]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    settings = KafkaSettings(bootstrap=bootstrap)
    async with ResultSubscriber(task, lattice=lattice, settings=settings, from_beginning=True) as sub:
        async for batch in sub.batches(timeout_ms=500):
            for r in batch:
                seen[r.event_id].append(r)
            if expected <= seen.keys() or time.monotonic() > deadline:
                break
        # a moment more, so duplicates that trail the last result are counted too
        extra_until = time.monotonic() + 1.0
        async for batch in sub.batches(timeout_ms=300):
            for r in batch:
                seen[r.event_id].append(r)
            if time.monotonic() > extra_until:
                break
    return dict(seen)


async def publish_raw(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]]) -> list[tuple[int, int]]:
    """Publish (key, value, partition) records as any Kafka client could, bypassing the SDK's checks.

    Returns each record's (partition, offset).
    """
    producer = make_producer(KafkaSettings(bootstrap=bootstrap))
    await producer.start()
    try:
        metas = [await producer.send_and_wait(topic, value, key=key, partition=p) for key, value, p in records]
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


async def read_dlq(bootstrap: str, lattice: Lattice, task: str, want: int, timeout: float) -> list[tuple[Any, dict]]:
    """Up to `want` dead letters of `task` from the beginning: (Kafka record, decoded DeadLetter)."""
    consumer = make_consumer(KafkaSettings(bootstrap=bootstrap))
    await consumer.start()
    try:
        tps = [TopicPartition(lattice.dlq_topic(task), p) for p in range(lattice.total_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[Any, dict]] = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((m, codecs().dead_letter.decode(m.value)) for m in msgs)
        return out
    finally:
        await consumer.stop()


def foreign_record() -> bytes:
    """A valid single-object Avro record of another of our schemas (a DeadLetter), not an Event."""
    return codecs().dead_letter.encode(
        {
            "original": b"x",
            "original_key": None,
            "reason": "r",
            "kind": "k",
            "topic": "t",
            "partition": 0,
            "offset": 1,
            "node_id": "n",
            "time_us": 1,
        }
    )


def outcome(sent: Iterable[str], results: dict[str, list[Result]]) -> tuple[set[str], int]:
    """(event ids with no result, results beyond the first per event)."""
    return set(sent) - results.keys(), sum(len(v) - 1 for v in results.values())


@pytest.fixture
def routers(kafka: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `streamlattice router` processes (their view at `.web`); all are killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(lattice: Lattice, port: int | None = None, args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        port = port or dev.free_port()
        cmd = [
            sys.executable,
            "-m",
            "streamlattice",
            "--bootstrap",
            kafka,
            "--config",
            str(lattice.source),
            "router",
            "--web-port",
            str(port),
            *args,
        ]
        log = (tmp_path / f"router-{len(procs)}.log").open("wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        p.web = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@contextlib.asynccontextmanager
async def worker_in_process(worker: Worker, timeout: float = 60) -> AsyncIterator[Worker]:
    """`worker` running in this event loop, once it owns partitions; drained and stopped on exit."""
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        deadline = time.monotonic() + timeout
        while not worker.membership.owned() and time.monotonic() < deadline:
            assert not running.done(), "the worker stopped before it was assigned"
            await asyncio.sleep(0.2)
        assert worker.membership.owned(), f"the worker owned no partition within {timeout:g}s"
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
