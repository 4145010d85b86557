"""The benchmark's contenders other than the streamlattice worker, each a process of its own.

    python -m streamlattice.bench.contenders NAME --config LATTICE --task TASK --bootstrap HOST:PORT

Every Kafka contender reads the task's events topic of the lattice and writes to its results
topic, under a consumer group of its own, with the same durability (acks=all) and the same
guarantee (at-least-once: an offset is committed only after its result is written). The
per-event contenders do what a user would write first around the same pieces the worker
uses: decode one event (fastavro), check it, run the task's model on a batch of one, encode
one result (fastavro), produce it.

- `transport_limit`: aiokafka alone, consuming the same records and producing one as large as
  a result for each, as fast as it can (batches from `getmany`, one `send` per record without
  waiting, commits off the read path);
- `naive`: aiokafka, one event at a time, `send_and_wait`, commit;
- `batched`: the aiokafka loop a user who cares about throughput writes in an afternoon:
  `getmany` up to the task's batch size, one inference for the whole fetch, every result sent
  without waiting, one commit once the fetch's sends are acknowledged;
- `faust`: a faust-streaming agent, one event at a time;
- `quixstreams`: a Quix Streams application, `.apply` per event;
- `compute_limit`: no Kafka: the task's preprocessing and ONNX Runtime on pre-decoded batches
  across batch sizes, one thread; prints its measurements as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamlattice.config import Lattice, load_lattice
from streamlattice.inference.models import load_model
from streamlattice.inference.tasks import TaskRuntime
from streamlattice.inference.validation import check_event
from streamlattice.kafka.clients import KafkaSettings, make_consumer, make_producer
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import Record, codecs, tensor_record, tensor_view

Handler = Callable[[bytes], bytes]
NAMES = ("transport_limit", "naive", "batched", "faust", "quixstreams", "compute_limit")
# batch sizes the compute limit sweeps
COMPUTE_BATCHES = (1, 8, 32, 128, 256, 512, 1024)


class Answers:
    """Events' bytes in, their results' bytes out: decode and check each, infer once for them all,
    encode each result."""

    def __init__(self, lattice: Lattice, task: str, node_id: str, batch_sizes: tuple[int, ...] = (1,)) -> None:
        self.task = lattice.task(task)
        self.node_id = node_id
        self.codecs = codecs()
        self.runtime = TaskRuntime(self.task, load_model(self.task, threads=1))
        self.runtime.warm_up(batch_sizes)

    def many(self, values: list[bytes]) -> list[bytes]:
        consumed = now_us()
        events = [self.codecs.event.decode(v) for v in values]
        for event in events:
            check_event(self.task, event)
        if self.task.input == "text":
            x = np.array([e["text"] for e in events], dtype=object)
        else:
            x = np.stack([tensor_view(e["tensor"]) for e in events])
        inferred = self.runtime.run(x)
        inferred_us = now_us()
        labels, scores = inferred.annotations.labels, inferred.annotations.scores
        model = self.runtime.model
        out = []
        for i, event in enumerate(events):
            record: Record = {
                "event_id": event["event_id"],
                "task": self.task.name,
                "region": event["region"],
                "source_id": event["source_id"],
                "node_id": self.node_id,
                "model_name": model.name,
                "model_version": model.version,
                "label": None if labels is None else labels[i],
                "score": None if scores is None else float(scores[i]),
                "flags": [] if inferred.flags is None else inferred.flags[i],
                "outputs": {name: tensor_record(o[i]) for name, o in inferred.outputs.items()},
                "event_time_us": event["event_time_us"],
                "consumed_us": consumed,
                "inferred_us": inferred_us,
                "produced_us": now_us(),
                "energy_j": 0.0,
                "carbon_g": 0.0,
            }
            out.append(self.codecs.result.encode(record))
        return out


class OneEvent(Answers):
    """Event bytes in, result bytes out: decode, check, infer on a batch of one, encode."""

    def __call__(self, value: bytes) -> bytes:
        return self.many([value])[0]


def result_size(lattice: Lattice, task: str) -> int:
    """Bytes of the result of one sample event of `task`."""
    from streamlattice.sdk.client import encode_event
    from streamlattice.sdk.loadgen import sample_payloads

    payloads, _ = sample_payloads(lattice.task(task), 1, seed=1)
    _, _, value = encode_event(lattice, task, lattice.regions[0].name, "sample", payloads[0])
    return len(OneEvent(lattice, task, "transport")(value))


def peak_rss_mb(pid: int | str) -> float:
    """A process's peak resident memory (VmHWM) in MB; `pid` "self" for this one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop_on_sigterm() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (in the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _aiokafka_clients(bootstrap: str, topic: str, group: str, **producer_options: Any) -> tuple[Any, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    c = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **producer_options)
    await c.start()
    await p.start()
    return c, p


async def run_transport(lattice: Lattice, task: str, bootstrap: str, group: str) -> None:
    """The same records through aiokafka as fast as it goes: batched reads, sends that are not
    waited for one by one, and a commit once a batch's sends are acknowledged, off the read path.

    For each event it writes as many bytes as the event's result would have (the event's first
    bytes: its id and time come first), so the limit moves what an inference pipeline moves.
    """
    size = result_size(lattice, task)
    settings = KafkaSettings(bootstrap=bootstrap)  # the same tuned clients as the worker's
    consumer = make_consumer(settings, lattice.events_topic(task), group_id=group, max_poll_records=1000)
    producer = make_producer(settings, linger_ms=1)
    await consumer.start()
    await producer.start()
    out = lattice.results_topic(task)
    acks: asyncio.Queue[tuple[list[asyncio.Future[Any]], dict[Any, int]]] = asyncio.Queue(maxsize=8)

    async def commit() -> None:
        done: dict[Any, int] = {}  # acknowledged, not yet committed: coalesced while batches queue
        while True:
            sent, offsets = await acks.get()
            await asyncio.gather(*sent)
            done.update(offsets)
            if acks.empty():
                await consumer.commit(done)
                done = {}

    committer = asyncio.create_task(commit())
    stop = stop_on_sigterm()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100)
            sent = [
                await producer.send(out, m.value[:size], key=m.key, partition=m.partition)
                for msgs in fetched.values()
                for m in msgs
            ]
            if sent:
                await acks.put((sent, {tp: msgs[-1].offset + 1 for tp, msgs in fetched.items() if msgs}))
    finally:
        committer.cancel()
        await consumer.stop()
        await producer.stop()


async def run_naive(lattice: Lattice, task: str, bootstrap: str, group: str) -> None:
    """The loop a user writes first: one event, one inference, send_and_wait, commit."""
    handle = OneEvent(lattice, task, "naive")
    consumer, producer = await _aiokafka_clients(bootstrap, lattice.events_topic(task), group)
    out = lattice.results_topic(task)
    stop = stop_on_sigterm()
    try:
        while not stop.is_set():
            msg = await consumer.getone()
            await producer.send_and_wait(out, handle(msg.value), key=msg.key)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def run_batched(lattice: Lattice, task: str, bootstrap: str, group: str) -> None:
    """The aiokafka loop written for throughput: a fetch of up to the task's batch size, one
    inference, every result sent without waiting, one commit once they are acknowledged."""
    spec = lattice.task(task)
    answers = Answers(lattice, task, "batched", (1, spec.max_batch))
    consumer, producer = await _aiokafka_clients(bootstrap, lattice.events_topic(task), group, linger_ms=5)
    out = lattice.results_topic(task)
    stop = stop_on_sigterm()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=spec.max_batch)
            msgs = [m for batch in fetched.values() for m in batch]
            if not msgs:
                continue
            results = answers.many([m.value for m in msgs])
            sent = [
                await producer.send(out, r, key=m.key, partition=m.partition)
                for m, r in zip(msgs, results, strict=True)
            ]
            await asyncio.gather(*sent)
            await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch})
    finally:
        await consumer.stop()
        await producer.stop()


def run_faust(lattice: Lattice, task: str, bootstrap: str, group: str) -> None:
    """A faust-streaming agent that answers each event as it comes."""
    import faust

    handle = OneEvent(lattice, task, "faust")
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="sl-bench-faust-"),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        topic_partitions=1,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(lattice.events_topic(task), key_type=bytes, value_type=bytes)
    sink = app.topic(lattice.results_topic(task), key_type=bytes, value_type=bytes)

    @app.agent(source)
    async def answer(stream: Any) -> Any:
        async for key, value in stream.items():
            await sink.send(key=key, value=handle(value))

    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


def run_quix(lattice: Lattice, task: str, bootstrap: str, group: str) -> None:
    """A Quix Streams application: the events topic, `.apply` per event, to the results topic."""
    from quixstreams import Application

    handle = OneEvent(lattice, task, "quixstreams")
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        loglevel="WARNING",
        use_changelog_topics=False,
        state_dir=tempfile.mkdtemp(prefix="sl-bench-quix-"),
    )
    source = app.topic(lattice.events_topic(task), value_deserializer="bytes", key_deserializer="bytes")
    sink = app.topic(lattice.results_topic(task), value_serializer="bytes", key_serializer="bytes")
    app.dataframe(source).apply(handle).to_topic(sink)
    app.run()


def compute_limit(lattice: Lattice, task: str, seconds: float = 1.0) -> dict[str, Any]:
    """Events/s of the task's preprocessing and model alone on pre-decoded batches, per batch size."""
    from streamlattice.sdk.loadgen import sample_payloads

    spec = lattice.task(task)
    runtime = TaskRuntime(spec, load_model(spec, threads=1))
    payloads, _ = sample_payloads(spec, max(COMPUTE_BATCHES) * 4, seed=1)
    sweep: dict[int, dict[str, float]] = {}
    for size in COMPUTE_BATCHES:
        batches = [payloads[i : i + size] for i in range(0, len(payloads) - size + 1, size)]
        runtime.run(batches[0])
        times: list[float] = []
        cpu0, started = time.process_time(), time.perf_counter()
        while time.perf_counter() - started < seconds:
            for b in batches:
                t = time.perf_counter()
                runtime.run(b)
                times.append(time.perf_counter() - t)
        events = len(times) * size
        lat = np.array(times) * 1000
        sweep[size] = {
            "throughput_eps": events / (time.perf_counter() - started),
            "cpu_s_per_1k": (time.process_time() - cpu0) / events * 1000,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }
    best = max(sweep, key=lambda s: sweep[s]["throughput_eps"])
    # VmHWM, not getrusage's ru_maxrss: that one starts from the parent's size at fork
    return {**sweep[best], "best_batch": best, "rss_mb": peak_rss_mb("self"), "by_batch": sweep}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=NAMES)
    ap.add_argument("--config", type=Path, required=True, help="the lattice TOML whose topics to use")
    ap.add_argument("--task", required=True)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--group", help="consumer group (default: <namespace>.bench.<name>)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    lattice = load_lattice(args.config)
    group = args.group or f"{lattice.namespace}.bench.{args.name}"
    if args.name == "compute_limit":
        print(json.dumps(compute_limit(lattice, args.task)), flush=True)
    elif args.name == "transport_limit":
        asyncio.run(run_transport(lattice, args.task, args.bootstrap, group))
    elif args.name == "naive":
        asyncio.run(run_naive(lattice, args.task, args.bootstrap, group))
    elif args.name == "batched":
        asyncio.run(run_batched(lattice, args.task, args.bootstrap, group))
    elif args.name == "faust":
        run_faust(lattice, args.task, args.bootstrap, group)
    else:
        run_quix(lattice, args.task, args.bootstrap, group)


if __name__ == "__main__":
    main()
