"""When to close a micro-batch: as soon as it is full, or when its oldest event has waited long enough.

At low load the wait bound keeps latency down; at high load batches fill before the
wait runs out and throughput grows with batch size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPolicy:
    """Close a batch at `max_batch` events or `max_wait_ms` after its first event arrived."""

    max_batch: int
    max_wait_ms: float
    poll_floor_ms: float = 1.0  # never ask the consumer to wait less than this

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")

    def is_ready(self, size: int, age_ms: float) -> bool:
        """Whether a batch of `size` events whose oldest arrived `age_ms` ago should go now."""
        return size >= self.max_batch or (size > 0 and age_ms >= self.max_wait_ms)

    def next_poll(self, size: int, age_ms: float, idle_ms: float = 100.0) -> tuple[int, int]:
        """(timeout_ms, max_records) for the next fetch while a batch of `size` is open.

        An empty batch waits up to `idle_ms` for its first event; an open one waits at most
        until its deadline and asks for no more events than still fit.
        """
        room = self.max_batch - size
        if size == 0:
            return int(idle_ms), room
        remaining = max(self.max_wait_ms - age_ms, self.poll_floor_ms)
        return max(int(remaining), int(self.poll_floor_ms)), room
