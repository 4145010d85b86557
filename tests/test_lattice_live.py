"""The lattice live: power changes move partitions on the running group; failures lose nothing."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_TIMINGS, WorkerProcess, collect_results, outcome, write_lattice

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.kafka.groups import describe_group
from streamlattice.sdk.client import LatticeProducer
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

NEUTRAL = {"renewable_fraction": 0.5, "carbon_intensity": 350.0}
DIRTY = {"renewable_fraction": 0.05, "carbon_intensity": 660.0}
GREEN = {"renewable_fraction": 0.95, "carbon_intensity": 40.0}


class PowerFeed:
    """An HTTP JSON power feed per region, on loopback, whose readings the test sets."""

    def __init__(self) -> None:
        self.readings: dict[str, dict[str, float]] = {}
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(feed.readings.get(self.path.strip("/"), NEUTRAL)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def feed() -> Iterator[PowerFeed]:
    f = PowerFeed()
    yield f
    f.close()


@pytest.fixture
def fast_lattice(kafka: str, models: dict[str, Path], tmp_path: Path) -> Lattice:
    """A sensor lattice whose heartbeats, plans and timeouts run in seconds."""
    timings = f"{FAST_TIMINGS}\n[placement]\nmax_moves = 12"
    return write_lattice(
        KafkaSettings(bootstrap=kafka), tmp_path, models, ("sensor",), max_batch=64, settings_toml=timings
    )


@pytest.fixture
def router(fast_lattice: Lattice, routers: Callable[[Lattice], subprocess.Popen[bytes]]) -> Callable[[], Any]:
    """Start a router for the fast lattice."""
    return lambda: routers(fast_lattice)


class Load:
    """Publishes sensor windows at a steady rate from a thread until stopped; remembers every id."""

    def __init__(self, bootstrap: str, lattice: Lattice, rate: float = 60.0) -> None:
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(bootstrap, lattice, rate)))
        self._thread.start()

    async def _run(self, bootstrap: str, lattice: Lattice, rate: float) -> None:
        windows = signals.generate(20_000, seed=5)
        regions = [r.name for r in lattice.regions]
        async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=bootstrap)) as producer:
            i = 0
            while not self._stop.is_set():
                self.sent.append(
                    await producer.publish(
                        "sensor", regions[i % 3], windows.source_id[i], windows.x[i % len(windows.x)]
                    )
                )
                i += 1
                await asyncio.sleep(1 / rate)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        return self.sent


def owners(bootstrap: str, lattice: Lattice) -> dict[int, str]:
    """Partition -> node id, as the group's members hold them now."""
    view = asyncio.run(describe_group(KafkaSettings(bootstrap=bootstrap), lattice.group_id("sensor")))
    return {p: m.node_id or "?" for m in view.members for p in m.partitions} if view.state == "Stable" else {}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def router_plan(router_proc: subprocess.Popen[bytes]) -> dict:
    with urllib.request.urlopen(router_proc.web + "/plan", timeout=5) as r:  # type: ignore[attr-defined]
        return json.loads(r.read())["sensor"]


def start_lattice(kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess], feed: PowerFeed) -> list:
    nodes = [("eu-west", "eu"), ("us-east", "us"), ("ap-south", "ap"), ("us-east", "spare")]
    procs = [workers(lattice, region, node_id=node, args=("--power", f"{feed.url}/{region}")) for region, node in nodes]
    for w in procs:
        w.wait_assigned(holding=False)
    return procs


EU_BLOCK = {0, 1, 2, 3}


def test_power_moves_partitions_toward_green_nodes_and_back_and_every_event_is_answered_once(
    kafka: str, fast_lattice: Lattice, workers: Callable[..., WorkerProcess], feed: PowerFeed, router: Callable
) -> None:
    procs = start_lattice(kafka, fast_lattice, workers, feed)
    r = router()
    # equal power: every region serves its own block
    wait_for(lambda: all(owners(kafka, fast_lattice).get(p) == "eu" for p in EU_BLOCK), 60, "eu block at home")
    load = Load(kafka, fast_lattice)
    try:
        time.sleep(3)
        feed.readings = {"eu-west": DIRTY, "us-east": GREEN}
        moved_s = wait_for(
            lambda: all(owners(kafka, fast_lattice).get(p) in ("us", "spare") for p in EU_BLOCK),
            60,
            "eu-west's block moves to the green us-east nodes",
        )
        plan = router_plan(r)
        assert {p["node_id"] for p in plan["partitions"] if p["partition"] in EU_BLOCK} <= {"us", "spare"}
        assert all("40 ms from eu-west" in p["reason"] for p in plan["partitions"] if p["partition"] in EU_BLOCK)
        time.sleep(3)
        feed.readings = {}
        back_s = wait_for(
            lambda: all(owners(kafka, fast_lattice).get(p) == "eu" for p in EU_BLOCK),
            60,
            "eu-west's block comes home when its power recovers",
        )
        time.sleep(3)
    finally:
        sent = load.stop()
    results = asyncio.run(collect_results(kafka, fast_lattice, "sensor", set(sent), timeout=60))
    missing, duplicates = outcome(sent, results)
    print(
        f"\nplan landed on the group in {moved_s:.1f}s, back in {back_s:.1f}s; "
        f"{len(sent)} events, {len(missing)} lost, {duplicates} duplicates"
    )
    assert not missing, f"{len(missing)} of {len(sent)} events lost"
    assert duplicates == 0, f"{duplicates} events answered more than once"
    served_eu = {x.node_id for e, rs in results.items() for x in rs if x.partition in EU_BLOCK}
    assert {"eu", "us", "spare"} & served_eu >= {"eu"} and served_eu & {"us", "spare"}
    assert all(w.alive() for w in procs)


def test_a_killed_worker_is_replaced_within_the_session_timeout_plus_a_plan_and_nothing_is_lost(
    kafka: str, fast_lattice: Lattice, workers: Callable[..., WorkerProcess], feed: PowerFeed, router: Callable
) -> None:
    procs = start_lattice(kafka, fast_lattice, workers, feed)
    router()
    wait_for(lambda: all(owners(kafka, fast_lattice).get(p) == "eu" for p in EU_BLOCK), 60, "eu block at home")
    load = Load(kafka, fast_lattice)
    try:
        time.sleep(3)
        victim = procs[0]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        # the group notices after its 10 s session timeout; the router's next plan places the block
        took = wait_for(
            lambda: (o := owners(kafka, fast_lattice)) and all(o.get(p) not in (None, "eu") for p in EU_BLOCK),
            10 + 5 + 15,
            "the killed node's partitions are served by others",
        )
        time.sleep(3)
    finally:
        sent = load.stop()
    results = asyncio.run(collect_results(kafka, fast_lattice, "sensor", set(sent), timeout=60))
    missing, duplicates = outcome(sent, results)
    print(
        f"\nreplaced in {took:.1f}s; {len(sent)} events, {len(missing)} lost, {duplicates} duplicates (at-least-once)"
    )
    assert not missing, f"{len(missing)} of {len(sent)} events lost"


def _planned(router_proc: subprocess.Popen[bytes]) -> dict[int, str]:
    return {p["partition"]: p["node_id"] for p in router_plan(router_proc)["partitions"]}


def _epoch(router_proc: subprocess.Popen[bytes]) -> int:
    try:
        return int(router_plan(router_proc)["epoch"])
    except OSError:
        return -1  # not serving yet


STALE_S = 8.0


def test_with_the_router_dead_past_plan_stale_s_a_rebalance_falls_back_to_region_local_and_its_return_restores_the_plan(
    kafka: str,
    models: dict[str, Path],
    tmp_path: Path,
    workers: Callable[..., WorkerProcess],
    feed: PowerFeed,
    routers: Callable,
) -> None:
    lattice = write_lattice(
        KafkaSettings(bootstrap=kafka),
        tmp_path,
        models,
        ("sensor",),
        max_batch=64,
        settings_toml=f"{FAST_TIMINGS}\nplan_stale_s = {STALE_S}\n[placement]\nmax_moves = 12",
    )
    feed.readings = {"eu-west": DIRTY, "us-east": GREEN}  # the plan moves eu-west's block away from home
    procs = start_lattice(kafka, lattice, workers, feed)
    r = routers(lattice)
    away = lambda: all(owners(kafka, lattice).get(p) in ("us", "spare") for p in EU_BLOCK)  # noqa: E731
    wait_for(away, 90, "the plan moves eu-west's block to the green us-east nodes")
    epoch = _epoch(r)
    load = Load(kafka, lattice)
    try:
        time.sleep(2)
        r.send_signal(signal.SIGKILL)
        r.wait()
        time.sleep(STALE_S + 3)  # the last plan is now stale
        assert away(), "without a rebalance the group keeps its last assignment"
        procs.append(workers(lattice, "ap-south", node_id="joiner", args=("--power", f"{feed.url}/ap-south")))
        fell_back_s = wait_for(
            lambda: all(owners(kafka, lattice).get(p) == "eu" for p in EU_BLOCK),
            60,
            "the next rebalance assigns region-local: eu-west's block goes home",
        )
        assert any(re.search(r"leads the group: assigning \d+ members by sticky", w.text()) for w in procs)
        time.sleep(2)
        again = routers(lattice)  # the router's return brings the plan back
        back_s = wait_for(away, 90, "the restarted router's plan lands again")
        assert _epoch(again) >= epoch >= 1  # it takes up the epochs where the old one left them
        time.sleep(2)
    finally:
        sent = load.stop()
    results = asyncio.run(collect_results(kafka, lattice, "sensor", set(sent), timeout=60))
    missing, duplicates = outcome(sent, results)
    print(f"\nfell back {fell_back_s:.1f}s after the join; plan back in {back_s:.1f}s; {len(sent)} events")
    assert not missing, f"{len(missing)} of {len(sent)} events lost"
    assert duplicates == 0, f"{duplicates} events answered more than once (every move was graceful)"
    assert all(w.alive() for w in procs)
