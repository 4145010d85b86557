"""When to close a micro-batch: dynamic batching bounded by a size and a wait.

A batch goes as soon as the model is free to take it, so at low load an event waits for
nothing; while the model is busy, events gather into the next batch, so at high load batches
grow (up to `max_batch`) with the work waiting. `max_wait_ms` bounds how long the oldest
event of a batch may wait in any case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPolicy:
    """Close a batch when the model is free, at `max_batch` events, or `max_wait_ms` after its first."""

    max_batch: int
    max_wait_ms: float
    poll_floor_ms: float = 1.0  # never ask the consumer to wait less than this
    busy_poll_ms: float = 2.0  # how often to look whether a busy model has become free

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")

    def is_ready(self, size: int, age_ms: float, model_free: bool = False) -> bool:
        """Whether a batch of `size` events whose oldest arrived `age_ms` ago should go now."""
        return size >= self.max_batch or (size > 0 and (model_free or age_ms >= self.max_wait_ms))

    def next_poll(self, size: int, age_ms: float, idle_ms: float = 100.0) -> tuple[int, int]:
        """(timeout_ms, max_records) for the next fetch while a batch of `size` is open.

        An empty batch waits up to `idle_ms` for its first event; an open one (the model is
        busy) looks again every `busy_poll_ms`, never past its deadline, and asks for no more
        events than still fit.
        """
        room = self.max_batch - size
        if size == 0:
            return int(idle_ms), room
        remaining = max(self.max_wait_ms - age_ms, self.poll_floor_ms)
        return max(int(min(remaining, self.busy_poll_ms)), int(self.poll_floor_ms)), room
