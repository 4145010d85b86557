"""A worker stopped with SIGTERM mid-stream drains and commits; its successor loses nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from conftest import WorkerProcess, collect_results
from test_pipeline import publish_windows

from streamlattice.config import Lattice
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def test_sigterm_mid_stream_then_restart_loses_no_event(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess]
) -> None:
    first = workers(lattice, "eu-west", node_id="eu-first")
    first.wait_assigned()
    windows = signals.generate(3000, seed=11)
    sent: dict = {}

    def publish() -> None:
        sent.update(asyncio.run(publish_windows(kafka, lattice, windows, ["eu-west", "us-east", "ap-south"], 500)))

    publisher = threading.Thread(target=publish)
    publisher.start()
    time.sleep(2.5)  # mid-stream
    assert first.terminate(timeout=30) == 0, first.text()[-2000:]
    assert "stopped" in first.text()
    second = workers(lattice, "eu-west", node_id="eu-second")
    publisher.join(60)
    assert not publisher.is_alive()

    results = asyncio.run(collect_results(kafka, lattice, "sensor", set(sent), timeout=90))

    missing = set(sent) - results.keys()
    assert not missing, f"{len(missing)} events lost across the restart"
    served_by = {r.node_id for rs in results.values() for r in rs}
    assert served_by == {"eu-first", "eu-second"}, "both workers should have served part of the stream"
    duplicates = sum(len(rs) - 1 for rs in results.values())
    assert duplicates == 0, "a graceful stop commits everything it answered"
    assert second.alive()
