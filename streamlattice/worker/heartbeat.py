"""The heartbeat: what a worker measures about itself and reports to the router.

Capacity is measured, not declared: events per second of the time the worker spends on
them (Python work plus inference) over the last interval. Partition load is the arrival
rate seen in each owned partition's high-water mark. Power comes from the node's source.
Every `heartbeat_s` the node publishes all of it, keyed by node id, on the heartbeats topic,
and once more with `stopping` when it leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamlattice.config import Lattice
from streamlattice.inference.models import LoadedModel
from streamlattice.kafka.lag import consumer_lag
from streamlattice.metrics import WorkerMetrics
from streamlattice.power.sources import PowerMeter
from streamlattice.wire.clock import now_us
from streamlattice.wire.records import Heartbeat

log = logging.getLogger(__name__)

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
    providers: Iterable[str],
    model_version: str,
    power: PowerMeter,
    stopping: bool = False,
) -> Heartbeat:
    """The node's heartbeat now."""
    return Heartbeat(
        node_id=node_id,
        task=task,
        region=region,
        capacity_eps=meter.capacity_eps,
        load_eps=meter.load_eps,
        lag=lag,
        partitions=tuple(sorted(partitions)),
        partition_load_eps=dict(meter.partition_load_eps),
        mean_batch=mean_batch,
        providers=tuple(providers),
        model_version=model_version,
        renewable_fraction=power.reading.renewable_fraction,
        carbon_intensity=power.reading.carbon_intensity,
        power_source=power.source.name,
        time_us=now_us(),
        stopping=stopping,
    )


class Heartbeats:
    """Publishes a node's heartbeat every `heartbeat_s` and keeps its gauges current."""

    def __init__(
        self,
        lattice: Lattice,
        task: str,
        region: str,
        node_id: str,
        meter: Meter,
        power: PowerMeter,
        metrics: WorkerMetrics,
        mean_batch: Callable[[], float],
    ) -> None:
        self.lattice = lattice
        self.task = task
        self.region = region
        self.node_id = node_id
        self.meter = meter
        self.power = power
        self.metrics = metrics
        self.mean_batch = mean_batch

    async def run(
        self, producer: Callable[[], AIOKafkaProducer], consumer: AIOKafkaConsumer, model: LoadedModel
    ) -> None:
        """Send one every `heartbeat_s` until cancelled; `producer()` is the one to use now."""
        while True:
            await asyncio.sleep(self.lattice.settings.heartbeat_s)
            try:
                await self.send(producer(), consumer, model)
            except KafkaError as e:
                log.warning("node %s: heartbeat not sent (%s)", self.node_id, e)

    async def send(
        self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, model: LoadedModel, stopping: bool = False
    ) -> None:
        """Measure and publish one heartbeat."""
        owned = consumer.assignment()
        lag, highwater = await consumer_lag(consumer)
        self.meter.roll(highwater)
        # a feed may answer slowly: read it off the event loop (not on the inference thread either)
        reading = await asyncio.get_running_loop().run_in_executor(None, self.power.refresh)
        m = self.metrics
        m.lag.set(lag)
        m.capacity.set(self.meter.capacity_eps)
        m.partitions.set(len(owned))
        m.renewable.set(reading.renewable_fraction)
        m.carbon_intensity.set(reading.carbon_intensity)
        record = heartbeat_record(
            node_id=self.node_id,
            task=self.task,
            region=self.region,
            meter=self.meter,
            lag=lag,
            partitions=[tp.partition for tp in owned],
            mean_batch=self.mean_batch(),
            providers=model.providers,
            model_version=model.version,
            power=self.power,
            stopping=stopping,
        )
        await producer.send_and_wait(self.lattice.heartbeats_topic, record.encode(), key=self.node_id.encode())
