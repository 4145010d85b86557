"""A micro-batch on its way through the worker, and the worker's running totals."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streamlattice.errors import InvalidEvent
from streamlattice.inference.tasks import Isolated
from streamlattice.wire.codec import Record


@dataclass
class Batch:
    """One micro-batch: its records, split into accepted events and rejected ones, and its offsets."""

    generation: int  # the group generation it was taken in (see worker.membership)
    offsets: dict[TopicPartition, int]  # next offset to commit, per partition
    consumed_us: int
    accepted: list[tuple[ConsumerRecord[bytes, bytes], Record]]
    rejected: list[tuple[ConsumerRecord[bytes, bytes], InvalidEvent]]
    inference: asyncio.Future[Isolated] | None = None
    infer_started: float = 0.0
    epochs: dict[TopicPartition, int] = field(default_factory=dict)  # see worker.checkpoint.Transactional
    python_s: float = 0.0  # time the event loop spent on this batch (validation, encoding)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the events of `partitions` (they were not committed and will be read again)."""
        self.accepted = [a for a in self.accepted if a[0].partition not in partitions]
        self.rejected = [r for r in self.rejected if r[0].partition not in partitions]


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
