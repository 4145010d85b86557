"""The chaos checker: reads what the topics hold and says what was lost, doubled or reordered.

It shares no code with the worker, the SDK or streamlattice's codec, so a bug there cannot hide
itself here: it reads with confluent-kafka (librdkafka, `read_committed`), decodes with fastavro
straight from the schema files, and judges only by event ids, offsets and timestamps.
- published: distinct events in the events topics (and events the load generator had
  acknowledged that are not there: a broker lost them);
- answered: events with a result; dead-lettered: events in the dead-letter topics;
- lost: events with neither; duplicated: results beyond the first per event;
- order violations (per key): within a results partition, a key's results must follow its
  events' offsets (exactly-once promises it; at-least-once redelivers, so it is only counted);
- recovery per fault: from the fault until the events waiting for an answer (published, not yet
  answered) are back under a bound, from the events' and results' own timestamps.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastavro import parse_schema, schemaless_reader

HEADER = 10  # Avro single-object encoding: 2 magic bytes and an 8-byte fingerprint
MAGIC = b"\xc3\x01"


def schemas(schema_dir: Path) -> dict[str, Any]:
    """The Event, Result and DeadLetter schemas, parsed from the .avsc files."""
    named: dict[str, Any] = {}
    parse_schema(json.loads((schema_dir / "tensor.avsc").read_text()), named_schemas=named)
    return {
        name: parse_schema(json.loads((schema_dir / f"{name}.avsc").read_text()), named_schemas=named)
        for name in ("event", "result", "dead_letter")
    }


def decode(schema: Any, value: bytes | None) -> dict[str, Any] | None:
    """One single-object Avro record, or None if it is not one (the checker counts, never fails)."""
    if value is None or len(value) < HEADER or value[:2] != MAGIC:
        return None
    try:
        return schemaless_reader(io.BytesIO(value[HEADER:]), schema, None)  # type: ignore[return-value]
    except Exception:
        return None


def read_topic(bootstrap: str, topic: str, idle_s: float = 10.0) -> list[tuple[int, int, bytes | None]]:
    """Every committed record of `topic` from the start to its end: (partition, offset, value)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "streamlattice-chaos-checker",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=30)
        partitions = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        out: list[tuple[int, int, bytes | None]] = []
        idle = 0.0
        while len(at_end) < len(partitions) and idle < idle_s:
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 0.5
                continue
            idle = 0.0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise RuntimeError(f"reading {topic}: {error}")
            at_end.discard(msg.partition())
            out.append((msg.partition(), msg.offset(), msg.value()))
        return out
    finally:
        consumer.close()


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute; 0 for fewer than two."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points) or 1.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 60


LAG_STEP_S = 10.0  # the waiting events are sampled this often for the lag's trend
TREND_S = 1200.0  # the trend is taken over the last 20 minutes (or all there is)


@dataclass
class Timeline:
    """When each event was published and first answered (µs), to count what waits at any moment."""

    published_us: np.ndarray
    answered_us: np.ndarray  # sorted; events never answered are absent

    def waiting(self, at_us: np.ndarray) -> np.ndarray:
        """Events published by each moment and not answered by it."""
        return np.searchsorted(self.published_us, at_us, side="right") - np.searchsorted(
            self.answered_us, at_us, side="right"
        )

    def trend(self, end_us: int) -> dict[str, float]:
        """The waiting events every LAG_STEP_S from the first event to `end_us`: max, last, and the
        slope (per minute) over the last TREND_S; empty when nothing was published before `end_us`."""
        if len(self.published_us) == 0 or end_us <= self.published_us[0]:
            return {}
        grid = np.arange(int(self.published_us[0]), end_us, int(LAG_STEP_S * 1e6))
        waiting = self.waiting(grid)
        t = (grid - grid[0]) / 1e6
        tail = [(float(a), float(b)) for a, b in zip(t, waiting, strict=True) if a >= t[-1] - TREND_S]
        return {
            "max": int(waiting.max()),
            "last": int(waiting[-1]),
            "slope_per_min": round(slope_per_min(tail), 2),
            "step_s": LAG_STEP_S,
        }

    def recoveries(self, faults: Sequence[tuple[int, int]], end_us: int, bound: int) -> list[dict[str, Any]]:
        """Each fault's recovery (see recovery_s); a fault's window runs to the next fault's start,
        the last one's to the last event or answer."""
        last = max([end_us, *self.answered_us[-1:].tolist(), *self.published_us[-1:].tolist()])
        ends = [start for start, _ in faults[1:]] + [int(last)]
        out = []
        for (start, stop), until in zip(faults, ends, strict=False):  # no end for no fault
            seconds, recovered = self.recovery_s(start, max(until, start), bound)
            out.append({"started_us": start, "ended_us": stop, "recovery_s": round(seconds, 2), "recovered": recovered})
        return out

    def recovery_s(self, start_us: int, until_us: int, bound: int, step_s: float = 0.1) -> tuple[float, bool]:
        """(seconds from `start_us` until the waiting events are back under `bound` for good before
        `until_us`, whether they were under it by then); 0 when they never went over."""
        grid = np.arange(start_us, until_us, int(step_s * 1e6))
        if len(grid) == 0:
            return 0.0, True
        over = np.flatnonzero(self.waiting(grid) > bound)
        if len(over) == 0:
            return 0.0, True
        last = over[-1]
        return float((grid[last] - start_us) / 1e6 + step_s), bool(last < len(grid) - 1)


@dataclass
class Verdict:
    """What the checker found in one run's topics."""

    published: int = 0
    acknowledged_missing: int = 0  # acknowledged to the load generator, absent from the topic
    answered: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    order_violations: int = 0
    undecodable: int = 0
    lost_ids: list[str] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    # partitions whose last stable offset is below their end: a transaction holds them open, and
    # nothing past it can be read with read_committed ("topic[partition]" -> stable, end)
    held_open: dict[str, tuple[int, int]] = field(default_factory=dict)
    # waiting events (published, not yet answered) every LAG_STEP_S: max, last, and the slope
    # over the last TREND_S; a lattice that keeps up has a slope near 0
    lag: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The verdict as JSON-able data (at most 20 lost ids)."""
        return {**self.__dict__, "lost_ids": self.lost_ids[:20]}


def held_open(bootstrap: str, topics: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The partitions of `topics` whose last stable offset is below their end offset."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=30)
    tps = [TopicPartition(t, p) for t in topics for p in sorted(meta.topics[t].partitions)]

    def ends(level: IsolationLevel) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=level, request_timeout=30)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    stable, end = ends(IsolationLevel.READ_COMMITTED), ends(IsolationLevel.READ_UNCOMMITTED)
    return {f"{t}[{p}]": (stable[t, p], end[t, p]) for t, p in sorted(end) if stable[t, p] < end[t, p]}


def check(
    bootstrap: str,
    tasks: Sequence[tuple[str, str, str]],
    schema_dir: Path,
    acknowledged: Iterable[str] = (),
    faults: Sequence[tuple[int, int]] = (),
    end_us: int = 0,
    bound: int = 100,
) -> Verdict:
    """Judge a run from its topics: `tasks` are (events, results, dead letters) topic names;
    `faults` the (start µs, end µs) of each fault, in order; `bound` the waiting events that count
    as recovered."""
    parsed = schemas(schema_dir)
    verdict = Verdict()
    events: dict[str, tuple[int, int, str, int]] = {}  # id -> partition, offset, key, event time
    first_answer: dict[str, int] = {}
    for events_topic, results_topic, dlq_topic in tasks:
        for partition, offset, value in read_topic(bootstrap, events_topic):
            ev = decode(parsed["event"], value)
            if ev is None:
                verdict.undecodable += 1
                continue
            events.setdefault(ev["event_id"], (partition, offset, ev["source_id"], ev["event_time_us"]))
        last_by_key: dict[tuple[int, str], int] = {}
        answered_here: defaultdict[str, int] = defaultdict(int)
        for partition, _, value in sorted(read_topic(bootstrap, results_topic), key=lambda r: (r[0], r[1])):
            res = decode(parsed["result"], value)
            if res is None:
                verdict.undecodable += 1
                continue
            event_id = res["event_id"]
            answered_here[event_id] += 1
            if answered_here[event_id] == 1:
                first_answer[event_id] = min(first_answer.get(event_id, res["produced_us"]), res["produced_us"])
            source = events.get(event_id)
            if source is not None:
                key = (partition, res["source_id"])
                if source[1] < last_by_key.get(key, -1):
                    verdict.order_violations += 1
                last_by_key[key] = max(last_by_key.get(key, -1), source[1])
        verdict.duplicated += sum(n - 1 for n in answered_here.values())
        for _, _, value in read_topic(bootstrap, dlq_topic):
            letter = decode(parsed["dead_letter"], value)
            original = decode(parsed["event"], letter["original"]) if letter else None
            if original is not None and original["event_id"] not in first_answer:
                first_answer[original["event_id"]] = letter["time_us"]  # type: ignore[index]
                verdict.dead_lettered += 1
    verdict.held_open = held_open(bootstrap, [topic for names in tasks for topic in names])
    verdict.published = len(events)
    verdict.acknowledged_missing = len(set(acknowledged) - events.keys())
    verdict.answered = sum(1 for e in events if e in first_answer) - verdict.dead_lettered
    lost = [e for e in events if e not in first_answer]
    verdict.lost, verdict.lost_ids = len(lost), sorted(lost)
    timeline = Timeline(
        np.sort(np.array([t for *_, t in events.values()], dtype=np.int64)),
        np.sort(np.array([first_answer[e] for e in events if e in first_answer], dtype=np.int64)),
    )
    verdict.lag = timeline.trend(end_us)
    verdict.recoveries = timeline.recoveries(faults, end_us, bound)
    return verdict
