"""`streamlattice bench`: each contender in turn on the same events, one broker, repeats.

For each task and contender, two runs, each in topics of a fresh namespace:

- throughput: the same pre-published backlog of events; the contender starts, and from its
  first result on the harness counts results for a time box (or until the backlog is done).
  Events/s and CPU seconds per 1,000 events come from that window; startup is not in it.
- latency-throughput curve: a fresh contender warms up, then takes the same absolute offered
  loads as every other contender (the plan's, per task), lowest first, open loop (each event is
  handed to the producer at its due time, so a slow contender cannot slow its own load down).
  An event's latency is the harness reading its result minus the harness handing it to its
  producer. An event with no result within the plan's deadline is a failure at that load: it
  counts in the percentiles as an infinitely late answer, so a load where more than 1% fail
  has no p99 (and is the last load offered: the contender is saturated). The streamlattice
  worker also takes 50% of its own maximum, for the target that speaks of it.

The contenders are the files of the repository's `bench/contenders/`, one per contender (the
transport limit is the faster of two clients). Peak RSS is the contender's high-water mark
over both runs. With pinning (the default on a machine of two or more cores), the contender
runs alone on the last core and the broker and the harness share the others, so no contender
is slowed by the load generator.

The harness publishes and reads with confluent-kafka (librdkafka, C): a Python load
generator would take CPU that the contender under test should have.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamlattice import paths
from streamlattice.bench import CONTENDERS, FILES
from streamlattice.bench.answers import peak_rss_mb
from streamlattice.config import DEFAULT_CONFIG, Lattice, load_lattice
from streamlattice.devbroker import broker as dev
from streamlattice.errors import StreamLatticeError
from streamlattice.inference.models import build_model, load_model
from streamlattice.inference.tasks import TaskRuntime
from streamlattice.kafka.clients import KafkaSettings, make_admin, start_client
from streamlattice.kafka.topics import ensure_topics
from streamlattice.sdk.client import encode_event
from streamlattice.sdk.loadgen import sample_payloads
from streamlattice.wire.codec import HEADER_LEN, codecs

# offered loads (events/s), per task: the sensor and vision models are light (a Python pipeline
# is bound by its Kafka and Avro work), the language model is heavy (hundreds of sentences/s)
FULL_LOADS = {
    "sensor": (500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 40000.0),
    "vision": (500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 40000.0),
    "language": (25.0, 50.0, 100.0, 200.0, 400.0),
}
QUICK_LOADS = {"sensor": (1000.0, 4000.0, 16000.0), "vision": (1000.0, 4000.0, 16000.0), "language": (50.0, 200.0)}


class BenchError(StreamLatticeError):
    """A contender could not be measured."""


@dataclass(frozen=True)
class Plan:
    """How long and how much: the quick plan fits in a few minutes, the full one is repeated."""

    repeats: int
    backlog: dict[str, int]  # events pre-published for the throughput run, per task
    window_s: float  # the throughput run's time box
    load_s: float  # each offered load lasts this long
    loads: dict[str, tuple[float, ...]]  # offered events/s, per task, lowest first
    deadline_s: float  # an event with no result this long after it was handed over is a failure
    other_backlog: int = 20_000  # for a task not named in `backlog` (a task of your own)
    # the transport limit drains a heavy task's small backlog in one read: it gets this many, any task
    transport_backlog: int = 30_000
    other_loads: tuple[float, ...] = (50.0, 200.0, 1000.0)
    compute_s: float = 1.0  # the compute limit's time per batch size and thread count

    @classmethod
    def quick(cls) -> Plan:
        # the language task is compute-bound (MiniLM: hundreds of sentences/s on two cores)
        backlog = {"sensor": 30_000, "vision": 24_000, "language": 1_000}
        return cls(
            repeats=1, backlog=backlog, window_s=2.0, load_s=1.5, loads=QUICK_LOADS, deadline_s=2.0, compute_s=0.3
        )

    @classmethod
    def full(cls) -> Plan:
        backlog = {"sensor": 150_000, "vision": 100_000, "language": 8_000}
        return cls(
            repeats=3,
            backlog=backlog,
            window_s=8.0,
            load_s=5.0,
            loads=FULL_LOADS,
            deadline_s=5.0,
            other_backlog=50_000,
            transport_backlog=150_000,
        )

    def backlog_of(self, task: str) -> int:
        """Events to pre-publish for `task`'s throughput run."""
        return self.backlog.get(task, self.other_backlog)

    def loads_of(self, task: str) -> tuple[float, ...]:
        """The offered loads of `task`'s curves, lowest first."""
        return tuple(sorted(self.loads.get(task, self.other_loads)))


# more than this fraction of a load's events unanswered within the deadline: the contender is saturated
SATURATED = 0.01


@dataclass
class Measurement:
    """One contender on one task in one repeat."""

    throughput_eps: float
    cpu_s_per_1k: float
    rss_mb: float
    curve: list[dict[str, Any]] = field(default_factory=list)  # one point per offered load
    wrong: int = 0  # results whose label or score differs from the model's on the same event
    duplicates: int = 0
    variants: dict[str, float] = field(default_factory=dict)  # the transport limit's clients, events/s each
    detail: dict[str, Any] = field(default_factory=dict)  # the compute limit's best batch and threads


# ---- the harness's own Kafka I/O (confluent-kafka) ---------------------------------------------


def _confluent(bootstrap: str) -> dict[str, Any]:
    # log_level 3: errors only (a young broker's "coordinator load in progress" is retried anyway)
    return {"bootstrap.servers": bootstrap, "client.id": "sl-bench", "log_level": 3}


@dataclass(frozen=True)
class Row:
    received_s: float
    event_time_us: int
    label: str | None
    score: float | None
    stamps: tuple[int, int, int] | None = None  # a worker's consumed, inferred, produced times (us)


def _long(value: bytes, i: int) -> tuple[int, int]:
    """Avro's zig-zag varint at `i`: (the number, where the next field starts)."""
    n, shift = 0, 0
    while True:
        byte = value[i]
        n |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return (n >> 1) ^ -(n & 1), i
        shift += 7


def event_id_of(value: bytes) -> str:
    """The event id of an event or result record: the first field of both, read without decoding the rest."""
    length, i = _long(value, HEADER_LEN)
    return value[i : i + length].decode()


def event_head(value: bytes) -> dict[str, Any]:
    """The id and time of an event from its first bytes (what the transport limit forwards)."""
    length, i = _long(value, HEADER_LEN)
    return {"event_id": value[i : i + length].decode(), "event_time_us": _long(value, i + length)[0]}


class Reader(threading.Thread):
    """Reads a results topic from its beginning, keeping when each event's first result was read.

    The time is taken as the read returns, not after a wait for more: `poll` returns with the
    first record there is, then `consume` takes, without waiting, what librdkafka already holds.
    Records are decoded only when asked for (`row`), after the clock stops: the harness shares a
    core with the broker and should take as little of it as it can while a contender runs.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, decode: Callable[[bytes], dict[str, Any]]):
        super().__init__(daemon=True, name=f"read-{topic}")
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(
            {
                **_confluent(bootstrap),
                "group.id": f"sl-bench-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self._decode = decode
        self.received: dict[str, tuple[float, bytes]] = {}
        self.duplicates = 0
        self._stopping = threading.Event()

    def _keep(self, messages: list[Any], received: float) -> None:
        for m in messages:
            if m.error() is not None:
                continue
            value = m.value()
            event_id = event_id_of(value)
            if event_id in self.received:
                self.duplicates += 1
            else:
                self.received[event_id] = (received, value)

    def run(self) -> None:
        poll, consume = self._consumer.poll, self._consumer.consume
        try:
            while not self._stopping.is_set():
                first = poll(0.05)
                if first is None:
                    continue
                self._keep([first], time.time())
                rest = consume(num_messages=5000, timeout=0)
                self._keep(rest, time.time())
        finally:
            self._consumer.close()

    def row(self, event_id: str) -> Row:
        received, value = self.received[event_id]
        rec = self._decode(value)
        stamps = (rec["consumed_us"], rec["inferred_us"], rec["produced_us"]) if "consumed_us" in rec else None
        return Row(received, rec["event_time_us"], rec.get("label"), rec.get("score"), stamps)

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)


class Progress:
    """How many of some events have a result: results come roughly in order, so it checks from the
    first one still missing on, instead of every event every time."""

    def __init__(self, reader: Reader, events: Sequence[Encoded]) -> None:
        self._received, self._events, self._next = reader.received, events, 0

    def done(self) -> bool:
        received, events, i = self._received, self._events, self._next
        while i < len(events) and events[i].event_id in received:
            i += 1
        self._next = i
        return i == len(events) or all(e.event_id in received for e in events[i:])


class Sender:
    """Publishes encoded events, all at once or each at its due time (open loop)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({**_confluent(bootstrap), "acks": "all", "linger.ms": 1, "enable.idempotence": True})

    def send(self, topic: str, events: Sequence[Encoded], due_s: Sequence[float] | None = None) -> list[float]:
        """Hand `events` to the producer (each at its due time if given); when each was handed over."""
        produce, poll, clock = self._producer.produce, self._producer.poll, time.time
        handed = [0.0] * len(events)
        i, n = 0, len(events)
        while i < n:
            limit = n if due_s is None else bisect.bisect_right(due_s, clock(), lo=i)
            while i < limit:
                e = events[i]
                try:
                    produce(topic, e.value, e.key, e.partition)
                except BufferError:
                    poll(0.05)
                    continue
                handed[i] = clock()
                i += 1
            poll(0)
            if due_s is not None and i < n:
                time.sleep(0.0005)
        self._producer.flush(60)
        return handed


@dataclass(frozen=True)
class Encoded:
    event_id: str
    partition: int
    key: bytes
    value: bytes


def encode_events(
    lattice: Lattice, task: str, payloads: np.ndarray, times_us: Sequence[int] | None = None
) -> list[Encoded]:
    """Events of `payloads` round-robin over the regions, stamped with `times_us` if given."""
    regions = [r.name for r in lattice.regions]
    out = []
    for i in range(len(payloads)):
        source = f"bench-{i % 64}"
        t = None if times_us is None else times_us[i]
        event_id, partition, value = encode_event(lattice, task, regions[i % len(regions)], source, payloads[i], t)
        out.append(Encoded(event_id, partition, source.encode(), value))
    return out


def nearest_rank(latencies_ms: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank: an actual latency, or inf when it lands on a failure."""
    ordered = sorted(latencies_ms)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def curve_point(
    offered_eps: float, handed: Sequence[float], received: Sequence[float | None], deadline_s: float
) -> dict[str, Any]:
    """One load's figures: every event handed over counts; one read later than the deadline, or
    never, is a failure, an infinite latency in the percentiles (so p99 is None past 1% failed)."""
    lat = [
        math.inf if r is None or r - h > deadline_s else (r - h) * 1000 for h, r in zip(handed, received, strict=True)
    ]
    answered = sum(1 for v in lat if v != math.inf)
    p50, p99 = nearest_rank(lat, 50), nearest_rank(lat, 99)
    span = handed[-1] - handed[0] if len(handed) > 1 else 0.0
    return {
        "offered_eps": offered_eps,
        "sent_eps": round((len(handed) - 1) / span, 1) if span > 0 else None,  # what the harness managed to offer
        "sent": len(handed),
        "answered": answered,
        "p50_ms": None if p50 == math.inf else round(p50, 2),
        "p99_ms": None if p99 == math.inf else round(p99, 2),
    }


def saturated(point: dict[str, Any]) -> bool:
    """More than 1% of the load's events had no answer within the deadline."""
    return bool(point["answered"] < point["sent"] * (1 - SATURATED))


# ---- contender processes ----------------------------------------------------------------------


def contenders_dir() -> Path:
    """The repository's bench/contenders/, where each contender's code is."""
    root = paths.checkout()
    if root is None or not (root / "bench" / "contenders").is_dir():
        raise BenchError(
            "the contenders' code is in the repository's bench/contenders/: run the benchmark from a checkout"
        )
    return root / "bench" / "contenders"


def contender_command(file: str, lattice: Lattice, task: str, bootstrap: str) -> list[str]:
    """The command line that runs one contender's file on `lattice`'s topics of `task`."""
    assert lattice.source is not None
    path = contenders_dir() / file
    return [sys.executable, str(path), "--config", str(lattice.source), "--task", task, "--bootstrap", bootstrap]


def _contender_env() -> dict[str, str]:
    # the contenders import the same streamlattice as the harness, installed or not
    root = str(paths.PACKAGE_DIR.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def _cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of `pid` onto `cores`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cores)


class Contender:
    """One contender process (a file of bench/contenders/), pinned, with its log in the work dir."""

    def __init__(
        self, name: str, file: str, lattice: Lattice, task: str, bootstrap: str, workdir: Path, cores: set[int] | None
    ):
        cmd = contender_command(file, lattice, task, bootstrap)
        self.name = name
        self.log = workdir / f"{Path(file).stem}-{task}-{uuid.uuid4().hex[:6]}.log"
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=_contender_env())
        if cores:
            pin(self.proc.pid, cores)

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def cpu_s(self) -> float:
        return _cpu_s(self.proc.pid)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def fresh_lattice(base: Lattice, task: str, workdir: Path) -> Lattice:
    """`base`'s layout under a new namespace, written to `workdir` with absolute model paths;
    only `task`'s topics (its file keeps every task, for the processes that load it)."""
    assert base.source is not None
    namespace = f"b{uuid.uuid4().hex[:8]}"
    text = base.source.read_text().replace(f'namespace = "{base.namespace}"', f'namespace = "{namespace}"')
    text = text.replace('model = "models/', f'model = "{base.source.parent}/models/')
    path = workdir / f"{namespace}.toml"
    path.write_text(text)
    lattice = load_lattice(path)
    return dataclasses.replace(lattice, tasks={task: lattice.task(task)})


# ---- one task ---------------------------------------------------------------------------------


@dataclass
class TaskBench:
    """The fixed parts of one task's runs: its events, the model's answers to them."""

    name: str
    base: Lattice
    bootstrap: str
    workdir: Path
    plan: Plan
    cores: set[int] | None
    backlog: list[Encoded]
    transport_backlog: list[Encoded]  # more events of the same payloads, for the transport limit
    reference: dict[str, tuple[str | None, float | None]]  # event id -> label, score
    pool: np.ndarray  # payloads the curves draw from
    progress: Callable[[str], None]
    profile: Path | None = None  # py-spy profiles of each throughput window go here

    def lattice(self) -> Lattice:
        """The base layout in a fresh namespace, with its topics created."""
        lattice = fresh_lattice(self.base, self.name, self.workdir)
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=self.bootstrap), lattice))
        return lattice

    def reader(self, file: str, lattice: Lattice) -> Reader:
        decode = event_head if file.startswith("transport") else codecs().result.decode
        r = Reader(self.bootstrap, lattice.results_topic(self.name), lattice.total_partitions, decode)
        r.start()
        return r

    def _in_fresh_topics(self, run: Callable[[Lattice], Any]) -> Any:
        lattice = self.lattice()
        try:
            return run(lattice)
        finally:  # a run's topics go, whatever happened, so a long benchmark does not fill the disk
            asyncio.run(_delete_namespace(self.bootstrap, lattice))

    def measure(self, name: str, previous: Measurement | None) -> Measurement:
        """One repeat of `name`: its throughput (the faster client's, for the transport limit), then its curve."""
        if name == "compute_limit":
            return self._compute_limit()
        by_file: dict[str, Measurement] = {}
        for file in FILES[name]:
            by_file[file] = self._in_fresh_topics(functools.partial(self._throughput, name, file, previous=previous))
        file = max(by_file, key=lambda f: by_file[f].throughput_eps)
        m = by_file[file]
        if len(by_file) > 1:
            m.variants = {Path(f).stem: round(v.throughput_eps, 1) for f, v in by_file.items()}
        m.curve, rss = self._in_fresh_topics(lambda lat: self._curve(name, file, lat, m.throughput_eps))
        m.rss_mb = max(m.rss_mb, rss)
        return m

    def _compute_limit(self) -> Measurement:
        assert self.base.source is not None
        cmd = contender_command("compute_limit.py", self.base, self.name, self.bootstrap)
        cmd += ["--seconds", str(self.plan.compute_s)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_contender_env())
        if self.cores:
            pin(proc.pid, self.cores)
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise BenchError(f"compute_limit failed: {err[-2000:]}")
        r = json.loads(out.strip().splitlines()[-1])
        detail = {k: r[k] for k in ("batch", "threads", "p50_ms", "p99_ms")}
        return Measurement(r["throughput_eps"], r["cpu_s_per_1k"], r["rss_mb"], detail=detail)

    def _throughput(self, name: str, file: str, lattice: Lattice, previous: Measurement | None = None) -> Measurement:
        backlog = self.transport_backlog if name == "transport_limit" else self.backlog
        if previous is not None:  # enough for the time box at the rate seen before, with room
            backlog = backlog[: max(2000, int(previous.throughput_eps * self.plan.window_s * 1.5))]
        Sender(self.bootstrap).send(lattice.events_topic(self.name), backlog)
        reader = self.reader(file, lattice)
        contender = Contender(name, file, lattice, self.name, self.bootstrap, self.workdir, self.cores)
        try:
            _wait(lambda: len(reader.received) > 0, 180, contender, f"{name}'s first result")
            spy = self._spy(contender, file) if self.profile else None
            started, cpu0, n0 = time.monotonic(), contender.cpu_s(), len(reader.received)
            deadline = started + self.plan.window_s
            # the time box, and at least 100 results for a slow contender on a busy machine
            while len(reader.received) < len(backlog) and (
                time.monotonic() < deadline or (len(reader.received) < n0 + 101 and time.monotonic() < deadline + 60)
            ):
                contender.check()
                time.sleep(0.02)
            cpu, n = contender.cpu_s() - cpu0, len(reader.received) - n0
            arrivals = [received for received, _ in list(reader.received.values())]
            rss = contender.peak_rss_mb()
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                spy.wait(30)
        finally:
            contender.stop()
            reader.stop()
        if n < 100 or max(arrivals) <= min(arrivals):
            raise BenchError(f"{name} gave {n} results in {self.plan.window_s + 60:g} s of a backlog of {len(backlog)}")
        # events/s between the first and the last result to arrive (startup is before the first;
        # not the records' own timestamps: Quix Streams copies the event's to its result); CPU
        # per event over the window the harness watched
        eps = (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
        wrong = self._wrong(reader) if name != "transport_limit" else 0
        return Measurement(eps, cpu / n * 1000, rss, wrong=wrong, duplicates=reader.duplicates)

    def _spy(self, contender: Contender, file: str) -> subprocess.Popen[bytes]:
        """py-spy sampling the contender into a flame graph for speedscope."""
        assert self.profile is not None
        self.profile.mkdir(parents=True, exist_ok=True)
        out = self.profile / f"{Path(file).stem}-{self.name}.speedscope.json"
        exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if exe is None:
            raise BenchError("--profile needs py-spy: pip install py-spy (the bench extra has it)")
        cmd = [exe, "record", "--pid", str(contender.proc.pid), "--rate", "200"]
        cmd += ["--format", "speedscope", "--output", str(out)]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return spy

    def _wrong(self, reader: Reader) -> int:
        wrong = 0
        for event_id in reader.received:
            row = reader.row(event_id)
            label, score = self.reference[event_id]
            if row.label != label or (score is not None and abs((row.score or 0.0) - score) > 1e-3 * max(1, score)):
                wrong += 1
        return wrong

    def _curve(self, name: str, file: str, lattice: Lattice, max_eps: float) -> tuple[list[dict[str, Any]], float]:
        """The contender's latency at each offered load, lowest first, up to the first it cannot sustain."""
        topic = lattice.events_topic(self.name)
        sender = Sender(self.bootstrap)
        reader = self.reader(file, lattice)
        contender = Contender(name, file, lattice, self.name, self.bootstrap, self.workdir, self.cores)
        loads = [(rate, False) for rate in self.plan.loads_of(self.name)]
        if name == "streamlattice":  # the target speaks of 50% of our own maximum
            loads = sorted([*loads, (round(max_eps / 2, -1), True)])
        curve: list[dict[str, Any]] = []
        try:
            # warm up at the lowest load: wait for the group to form (a first answer), then for the rest
            events, due = self._scheduled(lattice, loads[0][0], 1.0)
            sender.send(topic, events, due)
            _wait(lambda: any(e.event_id in reader.received for e in events), 180, contender, f"{name}'s warm-up")
            _wait_until(Progress(reader, events).done, time.time() + self.plan.deadline_s, contender)
            for rate, own_half in loads:
                events, due = self._scheduled(lattice, rate, self.plan.load_s)
                handed = sender.send(topic, events, due)
                _wait_until(Progress(reader, events).done, handed[-1] + self.plan.deadline_s, contender)
                got = [reader.received.get(e.event_id) for e in events]
                point = curve_point(rate, handed, [None if g is None else g[0] for g in got], self.plan.deadline_s)
                if own_half:
                    point["own_half"] = True
                if name == "streamlattice" and point["answered"]:  # where the time goes, stage by stage
                    rows = [reader.row(e.event_id) for e, g in zip(events, got, strict=True) if g]
                    point["stages_p99_ms"] = _stages(rows)
                curve.append(point)
                self.progress(
                    f"  {name:>15} {self.name}: {rate:9.0f}/s offered -> p50 {_ms(point['p50_ms'])}, "
                    f"p99 {_ms(point['p99_ms'])} ({point['answered']}/{point['sent']} answered within "
                    f"{self.plan.deadline_s:g} s)"
                )
                if saturated(point):
                    break  # higher loads would only fail too
            rss = contender.peak_rss_mb()
        finally:
            contender.stop()
            reader.stop()
        return curve, rss

    def _scheduled(self, lattice: Lattice, rate: float, seconds: float) -> tuple[list[Encoded], list[float]]:
        n = max(int(rate * seconds), 10)
        start = time.time() + 0.2 + n * 50e-6  # after encoding them (about 25 us each, more on a busy machine)
        due = [start + i / rate for i in range(n)]
        payloads = self.pool[np.arange(n) % len(self.pool)]
        events = encode_events(lattice, self.name, payloads, [int(d * 1e6) for d in due])
        return events, due


def _ms(v: float | None) -> str:
    return "  failed" if v is None else f"{v:7.1f} ms"


def stamps_us(rows: list[Row]) -> np.ndarray:
    """One row per result: when its event was handed over, consumed, inferred, produced and read (us)."""
    return np.array([(r.event_time_us, *(r.stamps or (0, 0, 0)), r.received_s * 1e6) for r in rows], dtype=np.float64)


def _stages(rows: list[Row]) -> dict[str, float]:
    """p99 of each stage of the worker's results: to the worker, batching and inference, to Kafka, to us."""
    t = stamps_us(rows)
    names = ("to_worker", "batch_and_infer", "to_result_topic", "to_reader")
    return {n: round(float(np.percentile(t[:, i + 1] - t[:, i], 99)) / 1000, 1) for i, n in enumerate(names)}


def _wait(done: Callable[[], bool], timeout_s: float, contender: Contender, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        contender.check()
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} within {timeout_s:g}s (log: {contender.log})")
        time.sleep(0.02)


def _wait_until(done: Callable[[], bool], until: float, contender: Contender) -> None:
    """Until `done` or the wall clock reaches `until`, whichever comes first."""
    while not done() and time.time() < until:
        contender.check()
        time.sleep(0.02)


async def _delete_namespace(bootstrap: str, lattice: Lattice) -> None:
    """Drop a run's topics, so a long benchmark does not fill the broker's disk."""
    settings = KafkaSettings(bootstrap=bootstrap)
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(f"{lattice.namespace}.")]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


# ---- the whole run -------------------------------------------------------------------------------


def prepare_task(
    name: str, base: Lattice, plan: Plan, progress: Callable[[str], None]
) -> tuple[list[Encoded], dict[str, tuple[str | None, float | None]], np.ndarray]:
    """The task's backlog events and the model's answers to them."""
    spec = base.task(name)
    build_model(spec)
    n = plan.backlog_of(name)
    progress(f"{name}: encoding {n} events and the model's answers to them")
    payloads, _ = sample_payloads(spec, n, seed=1)
    backlog = encode_events(base, name, payloads)
    runtime = TaskRuntime(spec, load_model(spec))
    reference: dict[str, tuple[str | None, float | None]] = {}
    for start in range(0, n, 1024):
        inferred = runtime.run(payloads[start : start + 1024])
        labels, scores = inferred.annotations.labels, inferred.annotations.scores
        for i, e in enumerate(backlog[start : start + 1024]):
            reference[e.event_id] = (
                None if labels is None else labels[i],
                None if scores is None else float(scores[i]),
            )
    return backlog, reference, payloads[:4096]


def _inf(v: float | None) -> float:
    return math.inf if v is None else v


def _finite(v: float) -> float | None:
    return None if v == math.inf else round(v, 2)


def merge_curves(curves: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One curve from the repeats' curves: per offered load, the median p50 and p99 and the spread of
    p99 (min, max), a repeat that stopped below the load counting as failed there; answered and sent
    summed over the repeats that offered it. The points at 50% of a contender's own maximum (its
    rate differs a little between repeats) are merged into one."""
    own = [[p for p in c if p.get("own_half")] for c in curves]
    loads = sorted({p["offered_eps"] for c in curves for p in c if not p.get("own_half")})
    merged: list[dict[str, Any]] = []
    for load in loads:
        at = [next((p for p in c if p["offered_eps"] == load and not p.get("own_half")), None) for c in curves]
        merged.append(_merge_points(load, at))
    if any(own):
        points = [o[0] if o else None for o in own]
        merged.append(_merge_points(statistics.median(p["offered_eps"] for p in points if p), points))
        merged[-1]["own_half"] = True
        merged.sort(key=lambda p: p["offered_eps"])
    return merged


def _merge_points(load: float, at: list[dict[str, Any] | None]) -> dict[str, Any]:
    ran = [p for p in at if p is not None]
    p99s = [_inf(p["p99_ms"]) if p else math.inf for p in at]
    out: dict[str, Any] = {
        "offered_eps": load,
        "p50_ms": _finite(statistics.median(_inf(p["p50_ms"]) if p else math.inf for p in at)),
        "p99_ms": _finite(statistics.median(p99s)),
        "p99_min_ms": _finite(min(p99s)),
        "p99_max_ms": _finite(max(p99s)),
        "answered": sum(p["answered"] for p in ran),
        "sent": sum(p["sent"] for p in ran),
        "repeats": len(ran),
    }
    stages = [p["stages_p99_ms"] for p in ran if "stages_p99_ms" in p]
    if stages:
        out["stages_p99_ms"] = {k: round(statistics.median(s[k] for s in stages), 1) for k in stages[0]}
    return out


def summarise(runs: list[Measurement]) -> dict[str, Any]:
    """Medians over repeats, the repeats' throughputs, and the merged curve."""
    med = statistics.median
    out: dict[str, Any] = {
        "throughput_eps": round(med(r.throughput_eps for r in runs), 1),
        "cpu_s_per_1k": round(med(r.cpu_s_per_1k for r in runs), 4),
        "rss_mb": round(max(r.rss_mb for r in runs), 1),
        "wrong": sum(r.wrong for r in runs),
        "duplicates": sum(r.duplicates for r in runs),
        "repeats": [round(r.throughput_eps, 1) for r in runs],
        "curve": merge_curves([r.curve for r in runs]),
    }
    if runs[0].variants:  # the transport limit: each client's median, and which one is the limit
        out["variants"] = {k: round(med(r.variants[k] for r in runs), 1) for k in runs[0].variants}
        out["via"] = max(out["variants"], key=out["variants"].get)
    if runs[0].detail:  # the compute limit's best batch and threads, in the median repeat
        out.update(sorted(runs, key=lambda r: r.throughput_eps)[len(runs) // 2].detail)
    return out


def with_limits(contenders: dict[str, Any]) -> dict[str, Any]:
    """Each contender's throughput as a fraction of min(compute limit, transport limit), when both were measured."""
    limits = [contenders[k]["throughput_eps"] for k in ("compute_limit", "transport_limit") if k in contenders]
    for c in contenders.values():
        c["of_limit"] = round(c["throughput_eps"] / min(limits), 3) if len(limits) == 2 else None
    return contenders


def _require_extra(contenders: Sequence[str]) -> None:
    """A one-line error, not a traceback half-way, when the bench extra is not installed."""
    import importlib.util

    needed = ["confluent_kafka"] + (["quixstreams"] if "quixstreams" in contenders else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(f"the benchmark needs {', '.join(missing)}: run `./dev bench`, or `pip install -e '.[bench]'`")


def default_cores() -> tuple[set[int], set[int]] | None:
    """(contender cores, broker and harness cores), or None on a single core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return {cores[-1]}, set(cores[:-1])


def run(
    plan: Plan,
    tasks: Sequence[str],
    contenders: Sequence[str] = CONTENDERS,
    bootstrap: str | None = None,
    pinning: bool = True,
    config: Path | None = None,
    progress: Callable[[str], None] = print,
    profile: Path | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; returns the results object."""
    _require_extra(contenders)
    contenders_dir()
    clock0, say = time.monotonic(), progress
    progress = lambda line: say(f"[{time.monotonic() - clock0:4.0f} s] {line}")  # noqa: E731
    base = load_lattice(config or DEFAULT_CONFIG)
    split = default_cores() if pinning else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sl-bench-") as tmp:
        workdir = Path(tmp)
        state = None
        if bootstrap is None:
            progress("starting a dev broker for the run")
            state = dev.start(workdir / "broker", port=dev.free_port(), progress=lambda _: None)
            bootstrap = state.bootstrap
        try:
            if split:
                for node in state.nodes if state else []:
                    if node.pid:
                        pin(node.pid, split[1])
                pin(os.getpid(), split[1])
            results: dict[str, Any] = {}
            failures: dict[str, dict[str, list[str]]] = {}  # task -> contender -> what went wrong
            for task in tasks:
                backlog, reference, pool = prepare_task(task, base, plan, progress)
                transport_backlog = backlog
                if "transport_limit" in contenders and plan.transport_backlog > len(backlog):
                    tiled = pool[np.arange(plan.transport_backlog) % len(pool)]
                    transport_backlog = encode_events(base, task, tiled)
                cores = split[0] if split else None
                bench = TaskBench(
                    task,
                    base,
                    bootstrap,
                    workdir,
                    plan,
                    cores,
                    backlog,
                    transport_backlog,
                    reference,
                    pool,
                    progress,
                    profile,
                )
                runs: dict[str, list[Measurement]] = {c: [] for c in contenders}
                for repeat in range(plan.repeats):
                    order = contenders if repeat % 2 == 0 else list(reversed(contenders))
                    for name in order:
                        m = None
                        for attempt in (1, 2):  # a contender that stalls once gets one fresh start
                            try:
                                m = bench.measure(name, runs[name][-1] if runs[name] else None)
                                break
                            except BenchError as e:  # reported; a bad run does not void the others
                                failures.setdefault(task, {}).setdefault(name, []).append(str(e).splitlines()[0])
                                progress(f"{task} #{repeat + 1} {name:>15}: FAILED (try {attempt}): {e}")
                        if m is None:
                            continue
                        runs[name].append(m)
                        progress(
                            f"{task} #{repeat + 1} {name:>15}: {m.throughput_eps:9.0f} events/s, "
                            f"{m.cpu_s_per_1k:.3f} CPU s/1k, {m.rss_mb:.0f} MB"
                            + (f" ({m.variants})" if m.variants else "")
                            + (f", {m.wrong} WRONG" if m.wrong else "")
                        )
                results[task] = with_limits({name: summarise(r) for name, r in runs.items() if r})
        finally:
            if state is not None:
                dev.stop(workdir / "broker", progress=lambda _: None)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "quick": quick,
        "plan": dataclasses.asdict(plan),
        "pinning": f"contender on cores {sorted(split[0])}, broker and harness on {sorted(split[1])}"
        if split
        else "none",
        "seconds": round(time.monotonic() - started),
        "tasks": {t: {"contenders": r, "failures": failures.get(t, {})} for t, r in results.items()},
    }
