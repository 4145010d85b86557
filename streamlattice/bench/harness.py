"""`streamlattice bench`: each contender in turn on the same events, one broker, medians of repeats.

For each task and contender, two runs, each in topics of a fresh namespace:

- throughput: the same pre-published backlog of events; the contender starts, and from its
  first result on the harness counts results for a time box (or until the backlog is done).
  Events/s and CPU seconds per 1,000 events come from that window; startup is not in it.
- latency: a fresh contender warms up, then takes events at 25%, 50% and 75% of its own
  measured maximum, each stamped with the time it was due to be sent (an open-loop load, so
  a slow contender cannot slow its own load down); latency is the harness receiving the
  result minus that time.

Peak RSS is the contender's high-water mark over both runs. With pinning (the default on a
machine of two or more cores), the contender runs alone on the last core and the broker and
the harness share the others, so no contender is slowed by the load generator.

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

from streamlattice.bench import CONTENDERS
from streamlattice.bench.contenders import peak_rss_mb
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

LOADS = (0.25, 0.5, 0.75)


class BenchError(StreamLatticeError):
    """A contender could not be measured."""


@dataclass(frozen=True)
class Plan:
    """How long and how much: the quick plan fits in a few minutes, the full one is repeated."""

    repeats: int
    backlog: dict[str, int]  # events pre-published for the throughput run, per task
    window_s: float  # the throughput run's time box
    load_s: float  # each latency step
    loads: tuple[float, ...] = LOADS
    # and one step at the same rate for every contender that can sustain it, so latency is also
    # compared at equal load (50% of each one's own maximum is 10x apart between contenders)
    same_eps: float = 1000.0
    other_backlog: int = 20_000  # for a task not named in `backlog` (a task of your own)

    @classmethod
    def quick(cls) -> Plan:
        # the language task is compute-bound (MiniLM: hundreds of sentences/s on two cores)
        backlog = {"sensor": 60_000, "vision": 40_000, "language": 3_000}
        return cls(repeats=1, backlog=backlog, window_s=3.0, load_s=2.5, loads=(0.5,))

    @classmethod
    def full(cls) -> Plan:
        backlog = {"sensor": 150_000, "vision": 100_000, "language": 8_000}
        return cls(repeats=3, backlog=backlog, window_s=8.0, load_s=6.0, other_backlog=50_000)

    def backlog_of(self, task: str) -> int:
        """Events to pre-publish for `task`'s throughput run."""
        return self.backlog.get(task, self.other_backlog)


@dataclass
class Measurement:
    """One contender on one task in one repeat."""

    throughput_eps: float
    cpu_s_per_1k: float
    rss_mb: float
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # load fraction -> rate, p50, p99
    wrong: int = 0  # results whose label or score differs from the model's on the same event
    duplicates: int = 0


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
    """Reads a results topic from its beginning, keeping when each event's first result came.

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

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                # consume() waits out its timeout unless num_messages came: keep the wait short
                messages = self._consumer.consume(num_messages=5000, timeout=0.002)
                received = time.time()
                for m in messages:
                    if m.error() is not None:
                        continue
                    value = m.value()
                    event_id = event_id_of(value)
                    if event_id in self.received:
                        self.duplicates += 1
                    else:
                        self.received[event_id] = (received, value)
        finally:
            self._consumer.close()

    def row(self, event_id: str) -> Row:
        received, value = self.received[event_id]
        rec = self._decode(value)
        stamps = (rec["consumed_us"], rec["inferred_us"], rec["produced_us"]) if "consumed_us" in rec else None
        return Row(received, rec["event_time_us"], rec.get("label"), rec.get("score"), stamps)

    def has_all(self, events: Sequence[Encoded]) -> bool:
        return all(e.event_id in self.received for e in events)

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)


class Sender:
    """Publishes encoded events, all at once or each at its due time (open loop)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({**_confluent(bootstrap), "acks": "all", "linger.ms": 1, "enable.idempotence": True})

    def send(self, topic: str, events: Sequence[Encoded], due_s: Sequence[float] | None = None) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        i, n = 0, len(events)
        while i < n:
            limit = n if due_s is None else bisect.bisect_right(due_s, time.time(), lo=i)
            while i < limit:
                e = events[i]
                try:
                    produce(topic, e.value, e.key, e.partition)
                except BufferError:
                    poll(0.05)
                    continue
                i += 1
            poll(0)
            if due_s is not None and i < n:
                time.sleep(0.0005)
        self._producer.flush(60)


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


# ---- contender processes ----------------------------------------------------------------------


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
    """One contender process, pinned, with its log in the work dir."""

    def __init__(self, name: str, lattice: Lattice, task: str, bootstrap: str, workdir: Path, cores: set[int] | None):
        assert lattice.source is not None
        if name == "streamlattice":
            cmd = [sys.executable, "-m", "streamlattice", "--bootstrap", bootstrap, "--config", str(lattice.source)]
            cmd += ["--log-level", "WARNING", "worker", "--task", task, "--region", lattice.regions[0].name]
            cmd += ["--node-id", "bench"]
        else:
            cmd = [sys.executable, "-m", "streamlattice.bench.contenders", name, "--config", str(lattice.source)]
            cmd += ["--task", task, "--bootstrap", bootstrap]
        self.name = name
        self.log = workdir / f"{name}-{task}-{uuid.uuid4().hex[:6]}.log"
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
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
    reference: dict[str, tuple[str | None, float | None]]  # event id -> label, score
    pool: np.ndarray  # payloads the latency runs draw from
    progress: Callable[[str], None]
    profile: Path | None = None  # py-spy profiles of each throughput window go here

    def lattice(self) -> Lattice:
        """The base layout in a fresh namespace, with its topics created."""
        lattice = fresh_lattice(self.base, self.name, self.workdir)
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=self.bootstrap), lattice))
        return lattice

    def reader(self, name: str, lattice: Lattice) -> Reader:
        decode = event_head if name == "transport_limit" else codecs().result.decode
        r = Reader(self.bootstrap, lattice.results_topic(self.name), lattice.total_partitions, decode)
        r.start()
        return r

    def measure(self, name: str, previous: Measurement | None) -> Measurement:
        if name == "compute_limit":
            return self._compute_limit()
        lattice = self.lattice()
        try:
            m = self._throughput(name, lattice, previous)
        finally:  # a run's topics go, whatever happened, so a long benchmark does not fill the disk
            asyncio.run(_delete_namespace(self.bootstrap, lattice))
        lattice = self.lattice()
        try:
            m.latency, rss = self._latency(name, lattice, m.throughput_eps)
        finally:
            asyncio.run(_delete_namespace(self.bootstrap, lattice))
        m.rss_mb = max(m.rss_mb, rss)
        return m

    def _compute_limit(self) -> Measurement:
        assert self.base.source is not None
        cmd = [sys.executable, "-m", "streamlattice.bench.contenders", "compute_limit"]
        cmd += ["--config", str(self.base.source), "--task", self.name]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.cores:
            pin(proc.pid, self.cores)
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise BenchError(f"compute_limit failed: {err[-2000:]}")
        r = json.loads(out.strip().splitlines()[-1])
        lat = {"batch": {"batch": r["best_batch"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}}
        return Measurement(r["throughput_eps"], r["cpu_s_per_1k"], r["rss_mb"], lat)

    def _throughput(self, name: str, lattice: Lattice, previous: Measurement | None) -> Measurement:
        backlog = self.backlog
        if previous is not None:  # enough for the time box at the rate seen before, with room
            backlog = backlog[: max(2000, int(previous.throughput_eps * self.plan.window_s * 1.5))]
        Sender(self.bootstrap).send(lattice.events_topic(self.name), backlog)
        reader = self.reader(name, lattice)
        contender = Contender(name, lattice, self.name, self.bootstrap, self.workdir, self.cores)
        try:
            _wait(lambda: len(reader.received) > 0, 180, contender, f"{name}'s first result")
            spy = self._spy(contender) if self.profile else None
            started, cpu0, n0 = time.monotonic(), contender.cpu_s(), len(reader.received)
            deadline = started + self.plan.window_s
            while len(reader.received) < len(backlog) and time.monotonic() < deadline:
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
            raise BenchError(f"{name} answered the whole backlog of {len(backlog)} at once: give it a larger backlog")
        # events/s between the first and the last result to arrive (startup is before the first;
        # not the records' own timestamps: Quix Streams copies the event's to its result); CPU
        # per event over the window the harness watched
        eps = (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
        wrong = self._wrong(reader) if name != "transport_limit" else 0
        return Measurement(eps, cpu / n * 1000, rss, wrong=wrong, duplicates=reader.duplicates)

    def _spy(self, contender: Contender) -> subprocess.Popen[bytes]:
        """py-spy sampling the contender into a flame graph for speedscope."""
        assert self.profile is not None
        self.profile.mkdir(parents=True, exist_ok=True)
        out = self.profile / f"{contender.name}-{self.name}.speedscope.json"
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

    def _latency(self, name: str, lattice: Lattice, max_eps: float) -> tuple[dict[str, dict[str, Any]], float]:
        topic = lattice.events_topic(self.name)
        sender = Sender(self.bootstrap)
        reader = self.reader(name, lattice)
        contender = Contender(name, lattice, self.name, self.bootstrap, self.workdir, self.cores)
        out: dict[str, dict[str, Any]] = {}
        try:
            # warm up (and wait for the group to form) at the lowest load
            warm = self._scheduled(lattice, max_eps * self.plan.loads[0], 1.0)
            sender.send(topic, warm[0], warm[1])
            _wait(functools.partial(reader.has_all, warm[0]), 180, contender, f"{name}'s warm-up")
            steps = [(str(load), max_eps * load) for load in self.plan.loads]
            if max_eps >= 1.25 * self.plan.same_eps:
                steps.append(("same", self.plan.same_eps))
            for key, rate in steps:
                events, due = self._scheduled(lattice, rate, self.plan.load_s)
                sender.send(topic, events, due)
                with contextlib.suppress(BenchError):  # what did not come back within the time is counted
                    _wait(functools.partial(reader.has_all, events), 30, contender, "latency step")
                rows = [reader.row(e.event_id) for e in events if e.event_id in reader.received]
                lat = np.array([r.received_s * 1000 - r.event_time_us / 1000 for r in rows])
                out[key] = {
                    "rate_eps": round(rate, 1),
                    "sent": len(events),
                    "answered": len(rows),
                    "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                    "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
                }
                if name == "streamlattice" and rows:  # where the time goes, stage by stage
                    out[key]["stages_p99_ms"] = _stages(rows)
                    self.progress(f"  stages, p99 ms: {out[key]['stages_p99_ms']}")
                self.progress(
                    f"  {name:>15} {self.name}: {rate:9.0f}/s -> p50 {out[key]['p50_ms']:7.1f} ms, "
                    f"p99 {out[key]['p99_ms']:7.1f} ms ({len(rows)}/{len(events)} answered)"
                )
            rss = contender.peak_rss_mb()
        finally:
            contender.stop()
            reader.stop()
        return out, rss

    def _scheduled(self, lattice: Lattice, rate: float, seconds: float) -> tuple[list[Encoded], list[float]]:
        n = max(int(rate * seconds), 10)
        start = time.time() + 0.2 + n * 25e-6  # after encoding them
        due = [start + i / rate for i in range(n)]
        payloads = self.pool[np.arange(n) % len(self.pool)]
        events = encode_events(lattice, self.name, payloads, [int(d * 1e6) for d in due])
        return events, due


def _stages(rows: list[Row]) -> dict[str, float]:
    """p99 of each stage of the worker's results: to the worker, batching and inference, to Kafka, to us."""
    t = np.array([(r.event_time_us, *(r.stamps or (0, 0, 0)), r.received_s * 1e6) for r in rows], dtype=np.float64)
    names = ("to_worker", "batch_and_infer", "to_result_topic", "to_reader")
    return {n: round(float(np.percentile(t[:, i + 1] - t[:, i], 99)) / 1000, 1) for i, n in enumerate(names)}


def _wait(done: Callable[[], bool], timeout_s: float, contender: Contender, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        contender.check()
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} within {timeout_s:g}s (log: {contender.log})")
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


def summarise(runs: list[Measurement]) -> dict[str, Any]:
    """Medians over repeats."""
    med = statistics.median
    out: dict[str, Any] = {
        "throughput_eps": round(med(r.throughput_eps for r in runs), 1),
        "cpu_s_per_1k": round(med(r.cpu_s_per_1k for r in runs), 4),
        "rss_mb": round(max(r.rss_mb for r in runs), 1),
        "wrong": sum(r.wrong for r in runs),
        "duplicates": sum(r.duplicates for r in runs),
        "repeats": [round(r.throughput_eps, 1) for r in runs],
    }
    latency: dict[str, dict[str, float]] = {}
    for load in runs[0].latency:
        steps = [r.latency[load] for r in runs if load in r.latency]
        latency[load] = {k: _median(s[k] for s in steps) for k in steps[0]}
    out["latency"] = latency
    at_half = latency.get("0.5") or latency.get("batch") or {}
    out["p50_ms"] = at_half.get("p50_ms")
    out["p99_ms"] = at_half.get("p99_ms")
    return out


def _median(values: Any) -> Any:
    """The median of numbers, or per key of dicts of numbers."""
    values = list(values)
    if isinstance(values[0], dict):
        return {k: _median(v[k] for v in values) for k in values[0]}
    return round(statistics.median(values), 2)


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
) -> dict[str, Any]:
    """Run the benchmark; returns the results object."""
    _require_extra(contenders)
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
                cores = split[0] if split else None
                bench = TaskBench(
                    task, base, bootstrap, workdir, plan, cores, backlog, reference, pool, progress, profile
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
                            + (f", {m.wrong} WRONG" if m.wrong else "")
                        )
                results[task] = {name: summarise(r) for name, r in runs.items() if r}
        finally:
            if state is not None:
                dev.stop(workdir / "broker", progress=lambda _: None)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "plan": dataclasses.asdict(plan),
        "pinning": f"contender on cores {sorted(split[0])}, broker and harness on {sorted(split[1])}"
        if split
        else "none",
        "seconds": round(time.monotonic() - started),
        # the sensor model's figures: the one the targets speak of; every task's under `tasks`
        "contenders": results.get("sensor") or next(iter(results.values())),
        "tasks": {t: {"contenders": r, "failures": failures.get(t, {})} for t, r in results.items()},
    }
