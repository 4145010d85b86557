"""The one-command demo: a dev broker, topics, a worker per region, load and live results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from streamlattice.client import LatticeProducer, Result, ResultSubscriber
from streamlattice.config import REPO_ROOT, Lattice
from streamlattice.groups import wait_for_stable_group
from streamlattice.kafka import KafkaSettings
from streamlattice.models import ensure_model
from streamlattice.ops import broker as dev
from streamlattice.ops.loadgen import run_load
from streamlattice.topics import ensure_topics

DEMO_HOME = Path(os.environ.get("STREAMLATTICE_HOME", REPO_ROOT / ".streamlattice"))


@dataclass
class RegionTally:
    """Results seen from one region."""

    results: int = 0
    anomalies: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)

    def add(self, r: Result) -> None:
        """Count one result."""
        self.results += 1
        self.anomalies += r.label == "anomaly"
        self.latencies_ms.append(r.latency_ms)
        self.nodes.add(r.node_id)

    def percentile(self, q: float) -> float:
        """A latency percentile in ms (0 with no results)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0


def spawn_worker(lattice: Lattice, bootstrap: str, task: str, region: str, log_dir: Path) -> subprocess.Popen[bytes]:
    """A worker process for (task, region), logging to `log_dir`."""
    node_id = f"{region}-demo-1"
    cmd = [sys.executable, "-m", "streamlattice", "--bootstrap", bootstrap]
    if lattice.source is not None:
        cmd += ["--config", str(lattice.source)]
    cmd += ["worker", "--task", task, "--region", region, "--node-id", node_id]
    log = open(log_dir / f"worker-{node_id}.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout_s: float = 20.0) -> None:
    """SIGTERM each process (they drain and commit), SIGKILL what is left after `timeout_s`."""
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


def run_demo(lattice: Lattice, task: str, duration: float, rate: float, explicit_bootstrap: str | None) -> bool:
    """Run the demo; True if results came back from every region."""
    lattice.task(task)
    say = click.echo
    started_broker: Path | None = None
    if explicit_bootstrap:
        bootstrap = explicit_bootstrap
    else:
        data_dir = DEMO_HOME / "demo-broker"
        saved = dev.ClusterState.load(data_dir)
        port = None if saved else (dev.DEFAULT_PORT if dev.port_is_free(dev.DEFAULT_PORT) else dev.free_port())
        bootstrap = dev.start(data_dir, port=port, progress=say).bootstrap
        started_broker = data_dir
    log_dir = DEMO_HOME / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        settings = KafkaSettings(bootstrap=bootstrap, client_id="streamlattice-demo")
        for r in asyncio.run(ensure_topics(settings, lattice)):
            if r.action == "created":
                say(f"created topic {r.name} ({r.partitions} partitions)")
        ensure_model(lattice.task(task), progress=say)
        regions = [r.name for r in lattice.regions]
        workers = [spawn_worker(lattice, bootstrap, task, r, log_dir) for r in regions]
        say(f"starting {len(workers)} {task} workers ({', '.join(regions)}); logs in {log_dir}")
        group = asyncio.run(wait_for_stable_group(settings, lattice.group_id(task), len(workers), 90))
        for m in sorted(group.members, key=lambda m: m.node_id or ""):
            say(f"  {m.node_id} ({m.region}) holds partitions {', '.join(map(str, m.partitions))}")
        tallies = asyncio.run(_live(lattice, settings, task, regions, duration, rate, workers))
    finally:
        stop_processes(workers)
        if started_broker is not None:
            dev.stop(started_broker, progress=say)
    return _summary(tallies, regions, say)


async def _live(
    lattice: Lattice,
    settings: KafkaSettings,
    task: str,
    regions: list[str],
    duration: float,
    rate: float,
    workers: list[subprocess.Popen[bytes]],
) -> dict[str, RegionTally]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tallies = {r: RegionTally() for r in regions}
    async with (
        ResultSubscriber(task, lattice=lattice, settings=settings) as sub,
        LatticeProducer(lattice=lattice, settings=settings) as producer,
    ):
        click.echo(f"publishing {rate:g} events/s for {duration:g}s across {len(regions)} regions (Ctrl-C stops)")
        load = asyncio.create_task(run_load(producer, task, regions, rate, None, duration, stop=stop))
        last = time.monotonic()
        grace_until: float | None = None
        async for batch in sub.batches(timeout_ms=250):
            for r in batch:
                tallies[r.region].add(r)
                if r.label == "anomaly":
                    click.echo(
                        f"  {click.style('anomaly', fg='red', bold=True)} {r.region:<9} {r.source_id} "
                        f"score {r.score:.1f}  {r.latency_ms:.0f} ms  on {r.node_id}"
                    )
            if time.monotonic() - last >= 3:
                last = time.monotonic()
                click.echo(
                    "  "
                    + "   ".join(
                        f"{name}: {t.results} results p50 {t.percentile(50):.0f} ms p99 {t.percentile(99):.0f} ms"
                        for name, t in tallies.items()
                    )
                )
            if any(w.poll() is not None for w in workers) and not stop.is_set():
                click.echo(click.style("a worker exited; see its log", fg="red"))
                stop.set()
            if load.done():
                sent = load.result().sent
                got = sum(t.results for t in tallies.values())
                grace_until = grace_until or time.monotonic() + 15
                if got >= sent or time.monotonic() > grace_until or (stop.is_set() and got >= sent):
                    break
        await load
    return tallies


def _summary(tallies: dict[str, RegionTally], regions: list[str], say: object) -> bool:
    click.echo("\nregion       results  anomalies  p50 ms  p99 ms  nodes")
    for name in regions:
        t = tallies[name]
        click.echo(
            f"{name:<12} {t.results:>7}  {t.anomalies:>9}  {t.percentile(50):>6.1f}  {t.percentile(99):>6.1f}"
            f"  {', '.join(sorted(t.nodes))}"
        )
    ok = all(tallies[r].results > 0 for r in regions)
    click.echo(
        click.style("results flowed in every region", fg="green")
        if ok
        else click.style("some region returned no results", fg="red")
    )
    return ok
