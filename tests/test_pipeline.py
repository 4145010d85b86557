"""End to end through the real broker: three regions, a sensor worker each, every event answered."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import numpy as np
import pytest
from conftest import WorkerProcess, collect_results

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.sdk.client import LatticeProducer
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


async def publish_windows(
    bootstrap: str, lattice: Lattice, windows: signals.Windows, regions: list[str], rate: float | None = None
) -> dict[str, tuple[str, bool]]:
    """Publish every window round-robin over `regions`; event id -> (region, is anomaly)."""
    sent: dict[str, tuple[str, bool]] = {}
    pending = []
    async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=bootstrap)) as producer:
        for i, (x, source) in enumerate(zip(windows.x, windows.source_id, strict=True)):
            region = regions[i % len(regions)]
            event_id, delivery = await producer.submit("sensor", region, source, x)
            sent[event_id] = (region, bool(windows.anomaly[i]))
            pending.append(delivery)
            if rate:
                await asyncio.sleep(1 / rate)
        await asyncio.gather(*pending)
    return sent


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid`, all its threads, as the OS counts them."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_ten_thousand_events_through_three_regions_each_get_exactly_one_right_result(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess]
) -> None:
    regions = [r.name for r in lattice.regions]
    # 1 W per busy CPU and nothing idle: a node's joules are its CPU-seconds
    procs = [workers(lattice, r, args=("--idle-watts", "0", "--busy-watts", "1")) for r in regions]
    for w in procs:
        w.wait_assigned()
    cpu_before = {w.node_id: cpu_seconds(w.proc.pid) for w in procs}
    windows = signals.generate(10_000, seed=2024, anomaly_rate=0.1)

    sent = asyncio.run(publish_windows(kafka, lattice, windows, regions))
    results = asyncio.run(collect_results(kafka, lattice, "sensor", set(sent), timeout=120))
    cpu_after = {w.node_id: cpu_seconds(w.proc.pid) for w in procs}

    missing = set(sent) - results.keys()
    assert not missing, f"{len(missing)} of {len(sent)} events have no result"
    duplicated = [e for e, rs in results.items() if len(rs) > 1]
    assert not duplicated, f"{len(duplicated)} events answered more than once"
    assert results.keys() == sent.keys()

    agree = 0
    for event_id, (region, is_anomaly) in sent.items():
        (r,) = results[event_id]
        assert r.region == region
        assert r.partition in lattice.region(region).block, "result outside its region's block"
        assert r.model_name == "sensor" and len(r.model_version) == 12
        assert r.label in ("anomaly", "normal") and r.score is not None
        assert bool(r.outputs["anomaly"]) == (r.label == "anomaly")
        assert np.isclose(float(r.outputs["score"]), r.score, rtol=1e-6)
        assert r.event_time_us <= r.consumed_us <= r.inferred_us <= r.produced_us
        assert r.energy_j > 0 and r.carbon_g > 0
        agree += (r.label == "anomaly") == is_anomaly
    # the model's held-out flag accuracy is >= 0.99 (test_sensor_model); allow sampling noise
    assert agree / len(sent) >= 0.98
    # with a worker in every region, each region's block is served by its own node
    for r_name in regions:
        nodes = {rs[0].node_id for e, rs in results.items() if sent[e][0] == r_name}
        assert nodes == {f"{r_name}-{regions.index(r_name)}"}
    # each result's energy is its share of its whole worker process's CPU time (decode, Kafka
    # I/O, the event loop and inference), not of the inference thread alone: what the results
    # of a node carry adds up to most of the CPU its process used while serving them
    for node, used in cpu_after.items():
        carried = sum(rs[0].energy_j for rs in results.values() if rs[0].node_id == node)
        serving = used - cpu_before[node]
        assert 0.6 * serving <= carried <= used, f"{node}: results carry {carried:.2f} J, process used {serving:.2f} s"
    assert all(w.alive() for w in procs)
