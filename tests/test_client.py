"""Request/response over Kafka with LatticeClient.infer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import WorkerProcess

from streamlattice.config import Lattice
from streamlattice.errors import InferenceTimeout
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.sdk.client import LatticeClient
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_infer_returns_the_models_answer_for_that_event(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess], sensor_model_path: Path
) -> None:
    for region in ("eu-west", "ap-south"):
        workers(lattice, region).wait_assigned()
    w = signals.generate(6, seed=99, anomaly_rate=0.5)
    session = ort.InferenceSession(str(sensor_model_path), providers=["CPUExecutionProvider"])
    expected_scores, expected_flags = session.run(["score", "anomaly"], {"windows": w.x})

    async def go() -> list:
        async with LatticeClient(lattice=lattice, settings=KafkaSettings(bootstrap=kafka)) as client:
            sequential = [await client.infer("sensor", "eu-west", w.x[i], timeout=30) for i in range(3)]
            concurrent = await asyncio.gather(
                *(client.infer("sensor", "ap-south", w.x[i], timeout=30) for i in range(3, 6))
            )
            return sequential + list(concurrent)

    results = asyncio.run(go())
    for i, r in enumerate(results):
        assert r.score == pytest.approx(float(expected_scores[i]), rel=1e-5)
        assert (r.label == "anomaly") == bool(expected_flags[i])
        assert r.region == ("eu-west" if i < 3 else "ap-south")
    assert len({r.event_id for r in results}) == 6


def test_infer_times_out_cleanly_when_no_worker_runs(kafka: str, lattice: Lattice) -> None:
    async def go() -> float:
        async with LatticeClient(lattice=lattice, settings=KafkaSettings(bootstrap=kafka)) as client:
            started = time.monotonic()
            with pytest.raises(InferenceTimeout, match="is a worker running"):
                await client.infer("sensor", "us-east", np.zeros((3, 64), np.float32), timeout=2)
            return time.monotonic() - started

    elapsed = asyncio.run(go())
    assert 2 <= elapsed < 6
