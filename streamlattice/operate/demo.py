"""The one-command demo: a dev broker, topics, models, workers for three tasks across three
regions, the router, load with an accelerated day of power, and a live dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from streamlattice.config import Lattice
from streamlattice.devbroker import broker as dev
from streamlattice.inference.models import ensure_model
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.kafka.groups import wait_for_stable_group
from streamlattice.kafka.topics import ensure_topics
from streamlattice.operate.status import collect_status
from streamlattice.paths import data_dir
from streamlattice.sdk.client import LatticeProducer, ResultSubscriber
from streamlattice.sdk.loadgen import run_load
from streamlattice.wire.records import Result

# Sized for a 2-core machine: (task, region) of each worker, and each task's rate in events/s.
WORKERS = [
    ("sensor", "eu-west"),
    ("sensor", "us-east"),
    ("sensor", "ap-south"),
    ("vision", "eu-west"),
    ("vision", "ap-south"),
    ("language", "us-east"),
]
RATES = {"sensor": 60.0, "vision": 24.0, "language": 4.0}
TIME_FACTOR = 480.0  # a simulated day of power every three minutes
WINDOW_S = 10.0  # rates and latency percentiles over the last ten seconds


@dataclass
class Tally:
    """Results of one (task, region)."""

    results: int = 0
    carbon_g: float = 0.0
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (arrival, latency ms)
    latencies: list[float] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)

    def add(self, r: Result, now: float) -> None:
        """Count one result."""
        self.results += 1
        self.carbon_g += r.carbon_g
        self.recent.append((now, r.latency_ms))
        self.latencies.append(r.latency_ms)
        self.nodes.add(r.node_id)

    def window(self, now: float) -> tuple[float, float, float]:
        """(results/s, p50 ms, p99 ms) over the last WINDOW_S seconds."""
        while self.recent and self.recent[0][0] < now - WINDOW_S:
            self.recent.popleft()
        if not self.recent:
            return 0.0, 0.0, 0.0
        lat = np.array([x for _, x in self.recent])
        return len(lat) / WINDOW_S, float(np.percentile(lat, 50)), float(np.percentile(lat, 99))

    def carbon_per_1k(self) -> float:
        """Grams of CO2 per 1,000 inferences so far."""
        return 1000 * self.carbon_g / self.results if self.results else 0.0


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A streamlattice process in its own session, logging to `log`."""
    out = open(log, "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "streamlattice", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM each process (workers drain and commit), SIGKILL what is left after `timeout_s`."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(deadline - time.monotonic(), 0.1))
        if p.poll() is None:
            p.kill()
            p.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(lattice: Lattice, duration: float | None, explicit_bootstrap: str | None, live: bool) -> bool:
    """Run the demo; True if results came back in every region of every task that had events."""
    say = click.echo
    # SIGTERM or a closed terminal while starting up: unwind like Ctrl-C, so `finally` stops
    # every process this demo started (they run in sessions of their own and would outlive it)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started_broker: Path | None = None
    if explicit_bootstrap:
        bootstrap = explicit_bootstrap
    else:
        broker_dir = data_dir() / "demo-broker"
        saved = dev.ClusterState.load(broker_dir)
        port = None if saved else (dev.DEFAULT_PORT if dev.port_is_free(dev.DEFAULT_PORT) else dev.free_port())
        bootstrap = dev.start(broker_dir, port=port, progress=say).bootstrap
        started_broker = broker_dir
    logs = data_dir() / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    tallies: dict[tuple[str, str], Tally] = {}
    sent: dict[tuple[str, str], int] = {}
    try:
        settings = KafkaSettings(bootstrap=bootstrap, client_id="streamlattice-demo")
        for r in asyncio.run(ensure_topics(settings, lattice)):
            if r.action == "created":
                say(f"created topic {r.name} ({r.partitions} partitions)")
        for task in sorted({t for t, _ in WORKERS}):
            ensure_model(lattice.task(task), progress=say)
        base = ["--bootstrap", bootstrap] + (["--config", str(lattice.source)] if lattice.source else [])
        router_port = dev.free_port()
        procs.append(spawn([*base, "router", "--web-port", str(router_port)], logs / "router.log"))
        for task, region in WORKERS:
            node = f"{region}-{task}"
            args = [
                *base,
                "worker",
                "--task",
                task,
                "--region",
                region,
                "--node-id",
                node,
                "--time-factor",
                str(TIME_FACTOR),
            ]
            procs.append(spawn(args, logs / f"worker-{node}.log"))
        say(
            f"starting the router (view: http://127.0.0.1:{router_port}/plan) and {len(WORKERS)} workers; "
            f"logs in {logs}"
        )
        for task in sorted({t for t, _ in WORKERS}):
            members = sum(1 for t, _ in WORKERS if t == task)
            asyncio.run(wait_for_stable_group(settings, lattice.group_id(task), members, 180))
        say("all workers joined; publishing (Ctrl-C stops)")
        asyncio.run(_run(lattice, settings, duration, live, procs, tallies, sent))
    finally:
        stop_processes(procs)
        if started_broker is not None:
            dev.stop(started_broker, progress=say)
    return _summary(tallies, sent)


async def _run(
    lattice: Lattice,
    settings: KafkaSettings,
    duration: float | None,
    live: bool,
    procs: list[subprocess.Popen[bytes]],
    tallies: dict[tuple[str, str], Tally],
    sent: dict[tuple[str, str], int],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    regions = [r.name for r in lattice.regions]
    tasks = list(RATES)
    for t in tasks:
        for r in regions:
            tallies[(t, r)] = Tally()
    async with contextlib.AsyncExitStack() as stack:
        # subscribers are positioned before the first event goes out, so no result slips past
        subscribers = [
            await stack.enter_async_context(ResultSubscriber(t, lattice=lattice, settings=settings)) for t in tasks
        ]
        readers = [asyncio.create_task(_read(sub, t, tallies)) for sub, t in zip(subscribers, tasks, strict=True)]
        producer = await stack.enter_async_context(LatticeProducer(lattice=lattice, settings=settings))
        started = time.monotonic()
        loads = [
            asyncio.create_task(run_load(producer, t, regions, RATES[t], None, duration, stop=stop)) for t in tasks
        ]
        snapshot: dict[str, Any] = {}
        in_rates: dict[tuple[str, str], float] = {}
        ends: dict[tuple[str, int], tuple[float, int]] = {}
        last_draw = last_status = 0.0
        while not all(t.done() for t in loads) and not stop.is_set():
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if any(p.poll() is not None for p in procs):
                click.echo(click.style("a demo process exited; see the logs", fg="red"))
                stop.set()
            if now - last_status > 3:
                with contextlib.suppress(Exception):
                    snapshot = await collect_status(lattice, settings)
                    in_rates = arrival_rates(snapshot, ends, now)
                last_status = now
            if live and now - last_draw >= 2:
                click.clear()
                click.echo(dashboard(tallies, snapshot, in_rates, now - started, duration))
                last_draw = now
            elif not live and now - last_draw >= 10:
                done = sum(t.results for t in tallies.values())
                click.echo(f"  {now - started:5.0f}s: {done} results so far")
                last_draw = now
        stop.set()
        reports = await asyncio.gather(*loads, return_exceptions=True)
        for t, rep in zip(tasks, reports, strict=True):
            if not isinstance(rep, BaseException):
                for r, n in rep.by_region.items():
                    sent[(t, r)] = n
        grace = time.monotonic() + 20  # the last results
        while time.monotonic() < grace and any(tallies[k].results < n for k, n in sent.items()):
            await asyncio.sleep(0.25)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _read(sub: ResultSubscriber, task: str, tallies: dict[tuple[str, str], Tally]) -> None:
    async for batch in sub.batches(timeout_ms=250):
        now = time.monotonic()
        for r in batch:
            tallies[(task, r.region)].add(r, now)


def arrival_rates(
    snapshot: dict[str, Any], ends: dict[tuple[str, int], tuple[float, int]], now: float
) -> dict[tuple[str, str], float]:
    """Events/s into each (task, region) since the previous snapshot, from its partitions' end offsets."""
    rates: dict[tuple[str, str], float] = {}
    for task, t in snapshot.get("tasks", {}).items():
        for p in t["partitions"]:
            key = (task, p["partition"])
            if key in ends and now > ends[key][0]:
                rate = (p["end_offset"] - ends[key][1]) / (now - ends[key][0])
                rates[(task, p["region"])] = rates.get((task, p["region"]), 0.0) + rate
            ends[key] = (now, p["end_offset"])
    return rates


def dashboard(
    tallies: dict[tuple[str, str], Tally],
    snapshot: dict[str, Any],
    in_rates: dict[tuple[str, str], float],
    elapsed: float,
    duration: float | None,
) -> str:
    """One screen: per task and region, rates, latency, lag, nodes with their partitions, power, carbon."""
    now = time.monotonic()
    head = (
        f"streamlattice demo  {elapsed:4.0f}s"
        + (f" of {duration:.0f}s" if duration else "")
        + "   (a day of power passes every 3 minutes; Ctrl-C stops)"
    )
    lines = [click.style(head, bold=True), ""]
    lines.append(
        f"{'task':<9}{'region':<10}{'in/s':>7}{'out/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'lag':>6}{'mgCO2/1k':>10}  "
        f"nodes serving (partitions) and their power"
    )
    tasks_status = snapshot.get("tasks", {})
    for (task, region), t in tallies.items():
        rate, p50, p99 = t.window(now)
        ts = tasks_status.get(task, {})
        block = {p["partition"] for p in ts.get("partitions", []) if p["region"] == region}
        lag = sum(p["lag"] for p in ts.get("partitions", []) if p["region"] == region)
        serving = []
        for n in ts.get("nodes", []):
            mine = [p for p in n["partitions"] if p in block]
            if mine:
                carbon = n.get("carbon_intensity")
                colour = (
                    "green" if carbon is not None and carbon < 250 else "yellow" if carbon and carbon < 450 else "red"
                )
                power = f"{n.get('renewable_fraction') or 0:.0%} renewable, {carbon} g/kWh"
                serving.append(f"{n['node_id']}({','.join(map(str, mine))}) " + click.style(power, fg=colour))
        arriving = in_rates.get((task, region), 0.0)
        numbers = f"{arriving:>7.1f}{rate:>7.1f}{p50:>8.0f}{p99:>8.0f}{lag:>6}{t.carbon_per_1k() * 1000:>10.3f}"
        lines.append(f"{task:<9}{region:<10}{numbers}  " + ("; ".join(serving) or "-"))
    epochs = ", ".join(f"{task} epoch {t['plan']['epoch']}" for task, t in tasks_status.items() if t.get("plan"))
    lines += ["", f"router plans: {epochs or 'none yet'}"]
    return "\n".join(lines)


def _summary(tallies: dict[tuple[str, str], Tally], sent: dict[tuple[str, str], int]) -> bool:
    click.echo(f"\n{'task':<9}{'region':<10}{'sent':>7}{'results':>9}{'p50 ms':>8}{'p99 ms':>8}{'mgCO2/1k':>10}  nodes")
    ok = True
    for (task, region), t in tallies.items():
        n = sent.get((task, region), 0)
        lat = np.array(t.latencies) if t.latencies else np.zeros(1)
        click.echo(
            f"{task:<9}{region:<10}{n:>7}{t.results:>9}{np.percentile(lat, 50):>8.1f}"
            f"{np.percentile(lat, 99):>8.1f}{t.carbon_per_1k() * 1000:>10.3f}  {', '.join(sorted(t.nodes))}"
        )
        if n > 0 and t.results == 0:
            ok = False
    if not sent:
        ok = False
    click.echo(
        click.style("results flowed in every region of every task", fg="green")
        if ok
        else click.style("some region or task returned no results", fg="red")
    )
    return ok
