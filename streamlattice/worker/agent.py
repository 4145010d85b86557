"""The node agent: what a worker measures about itself and reports in its heartbeat.

Capacity is measured, not declared: events per second of the time the worker spends on
them (Python work plus inference) over the last interval. Partition load is the arrival
rate seen in each owned partition's high-water mark. Power comes from the node's source.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamlattice.power.sources import PowerMeter
from streamlattice.wire.clock import now_us

SMOOTHING = 0.5  # weight of the newest interval in the capacity estimate


@dataclass
class Meter:
    """Rates over heartbeat intervals, fed by the worker loop."""

    capacity_eps: float = 0.0
    load_eps: float = 0.0
    partition_load_eps: dict[int, float] = field(default_factory=dict)
    _events: int = 0
    _busy_s: float = 0.0
    _consumed: int = 0
    _since: float = field(default_factory=time.monotonic)
    _highwater: dict[int, int] = field(default_factory=dict)

    def batch(self, events: int, busy_s: float) -> None:
        """A batch of `events` took `busy_s` of the worker's time (Python and inference)."""
        self._events += events
        self._busy_s += busy_s

    def consumed(self, events: int) -> None:
        """`events` were taken from Kafka."""
        self._consumed += events

    def roll(self, highwater: dict[int, int]) -> None:
        """Close an interval: update the rates from what it saw. `highwater`: partition -> end offset."""
        now = time.monotonic()
        span = max(now - self._since, 1e-3)
        if self._events and self._busy_s > 0:
            measured = self._events / self._busy_s
            self.capacity_eps = (
                measured if not self.capacity_eps else (SMOOTHING * measured + (1 - SMOOTHING) * self.capacity_eps)
            )
        self.load_eps = self._consumed / span
        self.partition_load_eps = {
            p: max(hw - self._highwater[p], 0) / span for p, hw in highwater.items() if p in self._highwater
        }
        self._highwater = dict(highwater)
        self._events, self._busy_s, self._consumed, self._since = 0, 0.0, 0, now


def heartbeat_record(
    *,
    node_id: str,
    task: str,
    region: str,
    meter: Meter,
    lag: int,
    partitions: Iterable[int],
    mean_batch: float,
    providers: list[str],
    model_version: str,
    power: PowerMeter,
    stopping: bool = False,
) -> dict[str, object]:
    """A Heartbeat record of the node's state now."""
    return {
        "node_id": node_id,
        "task": task,
        "region": region,
        "capacity_eps": meter.capacity_eps,
        "load_eps": meter.load_eps,
        "lag": lag,
        "partitions": sorted(partitions),
        "partition_load_eps": {str(p): v for p, v in meter.partition_load_eps.items()},
        "mean_batch": mean_batch,
        "providers": providers,
        "model_version": model_version,
        "renewable_fraction": power.reading.renewable_fraction,
        "carbon_intensity": power.reading.carbon_intensity,
        "power_source": power.source.name,
        "time_us": now_us(),
        "stopping": stopping,
    }
