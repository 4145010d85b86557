"""Back-pressure: a flood far beyond what the workers serve, and producers that cannot outrun acks.

The worker's model is made a known speed by a preprocess hook that sleeps per batch
(tests/slow_hooks.py), so the flood can be several times its capacity while the machine's
CPU stays with the publisher and the broker. In the suite the flood lasts 20 s; for a
several-minute run: `SL_FLOOD_S=300 pytest tests/test_backpressure.py -s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from conftest import WorkerProcess, write_lattice

from streamlattice.bench import answers
from streamlattice.config import Lattice, load_lattice
from streamlattice.devbroker import broker as dev
from streamlattice.errors import ProducerBackpressure
from streamlattice.kafka.clients import KafkaSettings, make_consumer
from streamlattice.kafka.topics import ensure_topics
from streamlattice.operate.status import collect_status
from streamlattice.sdk.client import LatticeProducer
from streamlattice.wire.codec import codecs
from workers.sensor import signals

pytestmark = [pytest.mark.kafka]

FLOOD_S = float(os.environ.get("SL_FLOOD_S", "20"))
FLOOD_RATE = 4000.0  # events/s offered; the slow worker serves about 32 / 25 ms = 1,280/s


def rss_mb(pid: int) -> float:
    """Resident memory of a running process, from /proc."""
    mb = answers.rss_mb(pid)
    assert mb is not None, f"no VmRSS for {pid}"
    return mb


@dataclass
class Samples:
    """RSS and lag over time: (seconds since start, value)."""

    rss: list[tuple[float, float]] = field(default_factory=list)
    lag: list[tuple[float, int]] = field(default_factory=list)


def sample(pid: int, bootstrap: str, lattice: Lattice, stop: threading.Event, out: Samples) -> None:
    started = time.monotonic()
    settings = KafkaSettings(bootstrap=bootstrap)
    while not stop.is_set():
        t = time.monotonic() - started
        out.rss.append((t, rss_mb(pid)))
        status = asyncio.run(collect_status(lattice, settings))
        out.lag.append((t, status["tasks"]["sensor"]["lag"]))
        stop.wait(1.0)


async def flood(bootstrap: str, lattice: Lattice, seconds: float, rate: float) -> int:
    """Publish sensor windows at `rate` for `seconds`; how many were published."""
    windows = signals.generate(2048, seed=3)
    regions = [r.name for r in lattice.regions]
    n = 0
    async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=bootstrap)) as producer:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            k = n % len(windows.x)
            await producer.submit("sensor", regions[n % 3], windows.source_id[k], windows.x[k])
            n += 1
            if n % 200 == 0:
                await asyncio.sleep(max(0.0, n / rate - elapsed))
        await producer.flush()
    return n


async def count_results(bootstrap: str, lattice: Lattice) -> int:
    """Distinct event ids answered so far."""
    consumer = make_consumer(KafkaSettings(bootstrap=bootstrap))
    await consumer.start()
    try:
        tps = [TopicPartition(lattice.results_topic("sensor"), p) for p in range(lattice.total_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        ids: set[str] = set()
        decode = codecs().result.decode

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for msgs in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                ids.update(decode(m.value)["event_id"] for m in msgs)
        return len(ids)
    finally:
        await consumer.stop()


@pytest.fixture
def slow_lattice(kafka: str, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lattice:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the worker imports slow_hooks
    hooks = 'preprocess = "slow_hooks:preprocess"'
    return write_lattice(
        KafkaSettings(bootstrap=kafka), tmp_path, models, ("sensor",), max_batch=32, sensor_hooks=hooks
    )


@pytest.mark.timeout(300 + 4 * FLOOD_S)
def test_a_flood_beyond_capacity_keeps_worker_memory_bounded_and_the_lag_drains(
    kafka: str, slow_lattice: Lattice, workers: Callable[..., WorkerProcess]
) -> None:
    w = workers(slow_lattice, "eu-west", node_id="slow")
    w.wait_assigned()
    time.sleep(2)
    stop, samples = threading.Event(), Samples()
    sampler = threading.Thread(target=sample, args=(w.proc.pid, kafka, slow_lattice, stop, samples), daemon=True)
    sampler.start()
    try:
        published = asyncio.run(flood(kafka, slow_lattice, FLOOD_S, FLOOD_RATE))
        flood_end = samples.lag[-1][0]
        deadline = time.monotonic() + 120 + 3 * FLOOD_S
        while not samples.lag or samples.lag[-1][1] > 0 or samples.lag[-1][0] <= flood_end:
            assert w.alive(), f"the worker died under the flood:\n{w.text()[-3000:]}"
            assert time.monotonic() < deadline, f"lag did not drain: {samples.lag[-5:]}"
            time.sleep(1)
    finally:
        stop.set()
        sampler.join(30)
    answered = asyncio.run(count_results(kafka, slow_lattice))
    peak_lag = max(lag for _, lag in samples.lag)
    baseline = samples.rss[0][1]
    peak = max(mb for _, mb in samples.rss)
    half = [mb for t, mb in samples.rss if flood_end / 2 <= t <= flood_end]
    drain_s = samples.lag[-1][0] - flood_end
    print(f"\nlag over time: {[(round(t), lag) for t, lag in samples.lag[::5]]}")
    print(f"RSS over time: {[(round(t), round(mb)) for t, mb in samples.rss[::5]]}")
    print(
        f"\nflood {published} events in {FLOOD_S:.0f}s ({published / FLOOD_S:.0f}/s); peak lag {peak_lag}; "
        f"drained {drain_s:.0f}s after; worker RSS {baseline:.0f} MB idle, peak {peak:.0f} MB"
    )
    assert published / FLOOD_S > 2 * 1280, "the flood should be well beyond the worker's capacity"
    assert peak_lag > 10_000, "the backlog should have grown"
    assert answered == published, f"{published - answered} events unanswered"
    assert peak - baseline < 150, f"worker memory grew with the backlog: {baseline:.0f} -> {peak:.0f} MB"
    assert max(half) - min(half) < 40, f"worker memory kept growing during the flood: {half}"
    assert w.alive()


@pytest.mark.timeout(180)
def test_a_producer_facing_a_stalled_cluster_waits_then_raises_a_clear_error(tmp_path: Path) -> None:
    state = dev.start(tmp_path / "kafka", port=dev.free_port(), progress=lambda _: None)
    try:
        lattice = load_lattice(Path(__file__).resolve().parents[1] / "lattice.toml")
        settings = KafkaSettings(bootstrap=state.bootstrap)
        asyncio.run(ensure_topics(settings, lattice))
        pid = state.nodes[0].pid
        assert pid is not None

        async def publish_into_a_stall() -> tuple[int, float, str]:
            async with LatticeProducer(lattice=lattice, settings=settings, max_pending=200, pending_timeout_s=2) as p:
                window = signals.generate(1, seed=1).x[0]
                await p.publish("sensor", "eu-west", "m1", window)  # topics checked, connection up
                os.kill(pid, signal.SIGSTOP)  # the broker stops acknowledging
                submitted, started = 0, time.monotonic()
                try:
                    while True:
                        await p.submit("sensor", "eu-west", f"m{submitted}", window)
                        submitted += 1
                        assert p.pending <= 200
                except ProducerBackpressure as e:
                    return submitted, time.monotonic() - started, str(e)
                finally:
                    os.kill(pid, signal.SIGCONT)

        submitted, waited, message = asyncio.run(publish_into_a_stall())
        assert submitted == 200, "the buffer holds max_pending events, then submit waits"
        assert 1.5 < waited < 10
        assert "not keeping up" in message and "max_pending" in message
    finally:
        for n in state.nodes:
            if n.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n.pid, signal.SIGCONT)
        dev.stop(tmp_path / "kafka", progress=lambda _: None)
