"""A worker stopped with SIGTERM mid-stream drains and commits; its successor loses nothing."""

from __future__ import annotations

import asyncio
import signal
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


def catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler of its own for SIGTERM (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.timeout(60)
def test_sigterm_while_the_worker_starts_is_a_clean_stop_not_a_crash(
    lattice: Lattice, workers: Callable[..., WorkerProcess]
) -> None:
    """A scale-in or a deploy may stop a worker before it has loaded its model: exit status 0."""
    w = workers(lattice, "eu-west", node_id="eu-early")
    deadline = time.monotonic() + 30
    while not catches_sigterm(w.proc.pid):  # the worker's own handler is in place: stop it now
        assert w.alive() and time.monotonic() < deadline, w.text()[-2000:]
        time.sleep(0.01)
    assert w.terminate(timeout=30) == 0, w.text()[-2000:]
    assert "stopped before it started serving" in w.text()
