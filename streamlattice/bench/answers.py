"""What every contender of the benchmark shares: the task's model, and an event's answer.

The contenders themselves are short files in the repository's `bench/contenders/`, one per
contender, each written the way its library's documentation recommends for throughput; the
harness runs those files. Each one reads the task's events topic and writes its results topic
under a consumer group of its own, with acks=all and at-least-once delivery (an offset is
committed only once its result is acknowledged), and answers with `Answers`: decode (fastavro),
check, one inference for the whole batch it is given, encode one result per event (fastavro).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamlattice.config import Lattice, load_lattice
from streamlattice.inference.models import load_model
from streamlattice.inference.tasks import TaskRuntime
from streamlattice.inference.validation import check_event
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import Record, codecs, tensor_record, tensor_view


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
        """The results of a batch of events, in their order."""
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

    def one(self, value: bytes) -> bytes:
        """The result of one event: a batch of one."""
        return self.many([value])[0]


async def send_batched(
    producer: Any, topic: str, by_partition: dict[int, list[tuple[bytes | None, bytes]]]
) -> list[Any]:
    """aiokafka's batched produce: (key, value) records into one `create_batch` per partition of
    `topic` (more when one fills), each handed over with `send_batch`; their delivery futures.

    `send` per record costs a coroutine, a future and a lookup each; this is how aiokafka's
    documentation says to produce many records at once.
    """
    sent = []
    for partition, records in by_partition.items():
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    return sent


def result_size(lattice: Lattice, task: str) -> int:
    """Bytes of the result of one sample event of `task` (what the transport limit moves per event)."""
    from streamlattice.sdk.client import encode_event
    from streamlattice.sdk.loadgen import sample_payloads

    payloads, _ = sample_payloads(lattice.task(task), 1, seed=1)
    _, _, value = encode_event(lattice, task, lattice.regions[0].name, "sample", payloads[0])
    return len(Answers(lattice, task, "transport").one(value))


def _status_mb(pid: int | str, field: str) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return None  # a process killed but not yet reaped has no memory lines


def peak_rss_mb(pid: int | str) -> float:
    """A process's peak resident memory (VmHWM) in MB; `pid` "self" for this one."""
    return _status_mb(pid, "VmHWM:") or 0.0


def rss_mb(pid: int | str) -> float | None:
    """A process's resident memory now (VmRSS) in MB; None once it has exited (not yet reaped).
    Raises OSError when there is no such process."""
    return _status_mb(pid, "VmRSS:")


def stop_on_sigterm() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (in the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@dataclass(frozen=True)
class Setup:
    """What the harness tells a contender: the lattice, the task, the broker, its group."""

    lattice: Lattice
    task: str
    bootstrap: str
    group: str

    @property
    def source(self) -> str:
        """The events topic to read."""
        return self.lattice.events_topic(self.task)

    @property
    def sink(self) -> str:
        """The results topic to write."""
        return self.lattice.results_topic(self.task)

    @property
    def max_batch(self) -> int:
        """The task's largest batch (lattice.toml), the batch every batching contender uses."""
        return self.lattice.task(self.task).max_batch


def setup(name: str, doc: str | None, argv: list[str] | None = None) -> Setup:
    """A contender's command line: --config LATTICE --task TASK --bootstrap HOST:PORT [--group G]."""
    ap = argparse.ArgumentParser(prog=name, description=doc)
    ap.add_argument("--config", type=Path, required=True, help="the lattice TOML whose topics to use")
    ap.add_argument("--task", required=True)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--group", help="consumer group (default: <namespace>.bench.<name>)")
    args = ap.parse_args(argv)
    lattice = load_lattice(args.config)
    lattice.task(args.task)
    return Setup(lattice, args.task, args.bootstrap, args.group or f"{lattice.namespace}.bench.{name}")
