"""Typed records: what a subscriber, the router and the workers read off the wire.

Events, results and dead letters stay plain dicts on the worker's per-event path (a
dataclass per event would cost the worker time for nothing it uses); the records that
cross into the SDK, the router and `status` are typed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamlattice.placement.plan import Placement, Plan
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import Record, codecs, tensor_view


@dataclass(frozen=True)
class Result:
    """A decoded result record, with when it reached this subscriber."""

    event_id: str
    task: str
    region: str
    source_id: str
    node_id: str
    model_name: str
    model_version: str
    label: str | None
    score: float | None
    flags: list[str]
    outputs: dict[str, np.ndarray]
    event_time_us: int
    consumed_us: int
    inferred_us: int
    produced_us: int
    energy_j: float
    carbon_g: float
    received_us: int
    partition: int

    @classmethod
    def from_record(cls, rec: Record, partition: int, received_us: int) -> Result:
        """A Result of a decoded Avro record."""
        outputs = {name: tensor_view(t) for name, t in rec.pop("outputs").items()}
        return cls(outputs=outputs, received_us=received_us, partition=partition, **rec)

    @property
    def latency_ms(self) -> float:
        """End to end: from the event's time to this subscriber receiving the result."""
        return (self.received_us - self.event_time_us) / 1000


@dataclass(frozen=True)
class Recommendation:
    """How many workers a region of a task needs now, and the numbers behind it."""

    region: str
    replicas: int
    arrival_eps: float
    lag: int
    capacity_eps: float


@dataclass(frozen=True)
class PublishedPlan:
    """A plan as the router published it for one task."""

    task: str
    epoch: int
    created_us: int
    moves: int
    placements: tuple[Placement, ...]
    recommendations: tuple[Recommendation, ...] = ()

    @property
    def assignment(self) -> dict[int, str]:
        """Partition -> node id."""
        return {p.partition: p.node_id for p in self.placements}

    def age_s(self, now: int | None = None) -> float:
        """Seconds since the router (re)published it."""
        return ((now or now_us()) - self.created_us) / 1e6

    def encode(self) -> bytes:
        """The PlacementPlan record."""
        return codecs().placement.encode(
            {
                "task": self.task,
                "epoch": self.epoch,
                "created_us": self.created_us,
                "moves": self.moves,
                "assignments": [asdict(p) for p in self.placements],
                "recommendations": [asdict(r) for r in self.recommendations],
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> PublishedPlan:
        """A plan of a PlacementPlan record."""
        rec: Record = codecs().placement.decode(value)
        return cls(
            rec["task"],
            rec["epoch"],
            rec["created_us"],
            rec["moves"],
            tuple(Placement(**a) for a in rec["assignments"]),
            tuple(Recommendation(**r) for r in rec["recommendations"]),
        )

    @classmethod
    def of(cls, task: str, epoch: int, plan: Plan, recommendations: tuple[Recommendation, ...] = ()) -> PublishedPlan:
        """A plan to publish now."""
        return cls(task, epoch, now_us(), plan.moves, plan.placements, recommendations)


@dataclass(frozen=True)
class Heartbeat:
    """A worker node's state as it reports it every few seconds (heartbeat.avsc)."""

    node_id: str
    task: str
    region: str
    capacity_eps: float  # events/s it sustains at its current batch size
    load_eps: float  # events/s it consumed over the last interval
    lag: int  # events waiting in its partitions
    partitions: tuple[int, ...]
    partition_load_eps: dict[int, float]  # events/s arriving per partition it owns
    mean_batch: float
    providers: tuple[str, ...]
    model_version: str
    renewable_fraction: float
    carbon_intensity: float  # gCO2/kWh of its grid now
    power_source: str
    time_us: int
    stopping: bool = False  # the node is draining and leaving

    def age_s(self, now: int | None = None) -> float:
        """Seconds since the node sent it."""
        return ((now or now_us()) - self.time_us) / 1e6

    def as_json(self) -> dict[str, Any]:
        """The record as JSON-able values (partition numbers as strings, as on the wire)."""
        out = asdict(self)
        out["partitions"] = list(self.partitions)
        out["providers"] = list(self.providers)
        out["partition_load_eps"] = {str(p): v for p, v in self.partition_load_eps.items()}
        return out

    def encode(self) -> bytes:
        """The Heartbeat record."""
        return codecs().heartbeat.encode(self.as_json())

    @classmethod
    def decode(cls, value: bytes) -> Heartbeat:
        """A Heartbeat of a record's bytes."""
        rec: Record = codecs().heartbeat.decode(value)
        rec["partitions"] = tuple(rec["partitions"])
        rec["providers"] = tuple(rec["providers"])
        rec["partition_load_eps"] = {int(p): v for p, v in rec["partition_load_eps"].items()}
        return cls(**rec)


def decode_heartbeats(values: Iterable[bytes]) -> list[Heartbeat]:
    """Heartbeats of raw values; bytes that are not a heartbeat are skipped, not fatal."""
    out = []
    for value in values:
        try:
            out.append(Heartbeat.decode(value))
        except Exception:  # someone else's bytes on the topic
            continue
    return out
