"""Bad input in the middle of valid traffic: each lands in the DLQ with a reason, nothing else stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from conftest import WorkerProcess, collect_results, foreign_record, publish_raw, read_dlq

from streamlattice.config import Lattice
from streamlattice.errors import InvalidEvent, PayloadTooLarge
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.kafka.partitioning import partition_for
from streamlattice.kafka.registry import Registry, RegistryCodec
from streamlattice.sdk.client import LatticeProducer
from streamlattice.wire.codec import codecs, tensor_record
from streamlattice.worker.outgoing import ERROR_HEADER, KIND_HEADER
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def raw_event(tensor: np.ndarray, task: str = "sensor", region: str = "eu-west") -> bytes:
    return codecs().event.encode(
        {
            "event_id": f"bad-{task}-{region}-{tensor.shape}-{tensor.dtype}",
            "event_time_us": 1_700_000_000_000_000,
            "region": region,
            "task": task,
            "source_id": "machine-bad",
            "tensor": tensor_record(tensor),
            "text": None,
        }
    )


def bad_records() -> dict[str, bytes]:
    """One record of each kind of bad input, by the reason kind the DLQ must give."""
    nan = np.zeros((3, 64), np.float32)
    nan[1, 7] = np.nan
    inf = np.zeros((3, 64), np.float32)
    inf[2, 0] = np.inf
    wrong_schema = foreign_record()
    registry = RegistryCodec(codecs().event, Registry.connect("mock://dead-letters"), "events")
    return {
        "undecodable": b"\x01\xffthis is not avro at all",
        "schema": wrong_schema,
        # an event framed for a schema registry, to a worker that has none
        "schema_registry": registry.encode(codecs().event.decode(raw_event(np.zeros((3, 64), np.float32)))),
        "shape": raw_event(np.zeros((3, 32), np.float32)),
        "dtype": raw_event(np.zeros((3, 64), np.float64)),
        "non_finite": raw_event(nan, region="us-east"),
        "non_finite_inf": raw_event(inf, region="ap-south"),
        "oversize": raw_event(np.zeros((3, 2048), np.float32)),
        "task": raw_event(np.zeros((3, 64), np.float32), task="vision"),
        "region": raw_event(np.zeros((3, 64), np.float32), region="atlantis"),
    }


async def publish_mixed(bootstrap: str, lattice: Lattice) -> tuple[set[str], dict[str, tuple[int, int]]]:
    """Valid events with one bad record of each kind in their midst, all on one partition.

    Returns the valid event ids and, per bad kind, its (partition, offset).
    """
    settings = KafkaSettings(bootstrap=bootstrap)
    region = lattice.region("eu-west")
    source = "machine-0001"
    partition = partition_for(region, source.encode())
    windows = signals.generate(400, seed=7)
    valid: set[str] = set()
    bad_at: dict[str, tuple[int, int]] = {}
    bad = list(bad_records().items())
    async with LatticeProducer(lattice=lattice, settings=settings) as producer:
        for i, x in enumerate(windows.x):
            valid.add(await producer.publish("sensor", "eu-west", source, x))
            if i % 40 == 20 and bad:
                kind, value = bad.pop()
                (where,) = await publish_raw(
                    bootstrap, lattice.events_topic("sensor"), [(source.encode(), value, partition)]
                )
                bad_at[kind] = where
    assert not bad, "not every bad record was published"
    return valid, bad_at


def test_each_kind_of_bad_input_is_dead_lettered_with_its_reason_and_valid_events_still_flow(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(lattice, "eu-west")
    worker.wait_assigned()
    expected_bad = bad_records()

    valid, bad_at = asyncio.run(publish_mixed(kafka, lattice))
    results = asyncio.run(collect_results(kafka, lattice, "sensor", valid, timeout=60))
    dead = asyncio.run(read_dlq(kafka, lattice, "sensor", len(expected_bad), timeout=30))

    assert valid <= results.keys(), f"{len(valid - results.keys())} valid events lost behind bad ones"
    assert len(dead) == len(expected_bad)
    letters = {(letter["partition"], letter["offset"]): (m, letter) for m, letter in dead}  # where it was
    for kind, (partition, offset) in bad_at.items():
        m, letter = letters[(partition, offset)]
        headers = dict(m.headers)
        assert letter["original"] == expected_bad[kind], kind
        assert letter["topic"] == lattice.events_topic("sensor")
        assert letter["kind"] == kind.removesuffix("_inf").removesuffix("_registry")
        assert headers[KIND_HEADER].decode() == letter["kind"]
        assert headers[ERROR_HEADER].decode() == letter["reason"] and letter["reason"]
        assert m.partition == partition  # stays in the region's block
    registry_letter = letters[bad_at["schema_registry"]][1]
    assert (
        "framed for a schema registry" in registry_letter["reason"] and "--schema-registry" in registry_letter["reason"]
    )
    assert worker.alive(), worker.text()[-2000:]


def test_the_producer_sdk_refuses_what_a_worker_would_dead_letter(kafka: str, lattice: Lattice) -> None:
    async def go() -> None:
        async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=kafka)) as p:
            with pytest.raises(PayloadTooLarge, match="max_event_bytes"):
                await p.publish("sensor", "eu-west", "m", np.zeros((3, 2048), np.float32))
            with pytest.raises(InvalidEvent, match="shape"):
                await p.publish("sensor", "eu-west", "m", np.zeros((3, 32), np.float32))
            with pytest.raises(InvalidEvent, match="dtype"):
                await p.publish("sensor", "eu-west", "m", np.zeros((3, 64), np.int32))
            with pytest.raises(InvalidEvent, match="takes a float32 tensor, not text"):
                await p.publish("sensor", "eu-west", "m", "hello")

    asyncio.run(go())
