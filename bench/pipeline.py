"""One worker per task: backlog throughput across batch sizes, and end-to-end latency at a modest rate.

Measured in one run on one dev broker, each next to its compute limit (the task's own
preprocessing and ONNX Runtime on pre-decoded batches of the same size, one thread, as in a
worker), so the ratio says what the Kafka pipeline costs. Not a test.

    python bench/pipeline.py [--tasks sensor,vision,language] [--quick] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamlattice.bench import harness  # noqa: E402
from streamlattice.config import Lattice, load_lattice  # noqa: E402
from streamlattice.devbroker import broker as dev  # noqa: E402
from streamlattice.inference.models import build_model, load_model  # noqa: E402
from streamlattice.inference.tasks import TaskRuntime  # noqa: E402
from streamlattice.kafka.clients import KafkaSettings  # noqa: E402
from streamlattice.kafka.groups import wait_for_stable_group  # noqa: E402
from streamlattice.kafka.topics import ensure_topics  # noqa: E402
from streamlattice.sdk.client import LatticeProducer, ResultSubscriber  # noqa: E402
from streamlattice.sdk.loadgen import sample_payloads  # noqa: E402
from streamlattice.wire.records import Result  # noqa: E402

# per task: batch sizes to sweep, backlog size, steady rate for the latency run
PLAN = {
    "sensor": ([32, 128, 512], 30_000, 200.0),
    "vision": ([16, 64, 256], 20_000, 100.0),
    "language": ([8, 32, 64], 2_000, 20.0),
}


def compute_limit(runtime: TaskRuntime, payloads: np.ndarray, batch: int) -> float:
    """Events/s of preprocessing + ONNX Runtime alone on pre-decoded batches."""
    batches = [payloads[i : i + batch] for i in range(0, len(payloads) - batch + 1, batch)][:50]
    runtime.infer(batches[0])
    started = time.perf_counter()
    for b in batches:
        runtime.infer(b)
    return len(batches) * batch / (time.perf_counter() - started)


async def publish(settings: KafkaSettings, lattice: Lattice, task: str, payloads: Any, rate: float | None) -> None:
    regions = [r.name for r in lattice.regions]
    async with LatticeProducer(lattice=lattice, settings=settings) as producer:
        pending = []
        started = time.monotonic()
        for i, p in enumerate(payloads):
            if rate:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            _, delivery = await producer.submit(task, regions[i % len(regions)], f"bench-{i % 64}", p)
            pending.append(delivery)
        await asyncio.gather(*pending)


async def collect(sub: ResultSubscriber, count: int, timeout: float) -> list[Result]:
    """The first `count` distinct results the subscriber sees (fewer if `timeout` passes)."""
    seen: dict[str, Result] = {}
    deadline = time.monotonic() + timeout
    async for batch in sub.batches(timeout_ms=500):
        for r in batch:
            seen.setdefault(r.event_id, r)
        if len(seen) >= count or time.monotonic() > deadline:
            break
    return list(seen.values())


def start_worker(bootstrap: str, config: Path, task: str, batch: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "streamlattice",
        "--bootstrap",
        bootstrap,
        "--config",
        str(config),
        "--log-level",
        "WARNING",
        "worker",
        "--task",
        task,
        "--region",
        "eu-west",
        "--node-id",
        "bench",
        "--max-batch",
        str(batch),
    ]
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)


def fresh_lattice(workdir: Path, task: str) -> Lattice:
    """The repo's layout under a new namespace, with absolute model paths; only `task`'s topics."""
    return harness.fresh_lattice(load_lattice(REPO / "lattice.toml"), task, workdir)


async def drain_rate(settings: KafkaSettings, workdir: Path, task: str, batch: int, payloads: Any) -> float:
    """Events/s one worker with `max_batch=batch` drains a pre-published backlog at."""
    lattice = fresh_lattice(workdir, task)
    await ensure_topics(settings, lattice)
    await publish(settings, lattice, task, payloads, None)
    assert lattice.source is not None
    worker = start_worker(settings.bootstrap, lattice.source, task, batch, workdir / "worker.log")
    try:
        async with ResultSubscriber(task, lattice=lattice, settings=settings, from_beginning=True) as sub:
            await wait_for_stable_group(settings, lattice.group_id(task), 1, 120)
            done = await collect(sub, len(payloads), timeout=600)
    finally:
        worker.terminate()
        worker.wait(60)
    first = min(r.consumed_us for r in done)
    last = max(r.produced_us for r in done)
    return len(done) / ((last - first) / 1e6)


async def latency(settings: KafkaSettings, workdir: Path, task: str, batch: int, payloads: Any, rate: float) -> dict:
    """p50/p99 end-to-end latency at a steady `rate`, and the median of each stage."""
    lattice = fresh_lattice(workdir, task)
    await ensure_topics(settings, lattice)
    assert lattice.source is not None
    worker = start_worker(settings.bootstrap, lattice.source, task, batch, workdir / "worker.log")
    try:
        await wait_for_stable_group(settings, lattice.group_id(task), 1, 120)
        async with ResultSubscriber(task, lattice=lattice, settings=settings) as sub:
            timed, _ = await asyncio.gather(
                collect(sub, len(payloads), 120), publish(settings, lattice, task, payloads, rate)
            )
    finally:
        worker.terminate()
        worker.wait(60)
    lat = np.array([r.latency_ms for r in timed])
    stages = {
        "to_worker": [r.consumed_us - r.event_time_us for r in timed],
        "batch_and_infer": [r.inferred_us - r.consumed_us for r in timed],
        "to_result_topic": [r.produced_us - r.inferred_us for r in timed],
        "to_subscriber": [r.received_us - r.produced_us for r in timed],
    }
    return {
        "rate_eps": rate,
        "answered": len(timed),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "p50_stage_ms": {k: round(float(np.percentile(v, 50)) / 1000, 1) for k, v in stages.items()},
    }


async def run(bootstrap: str, tasks: list[str], quick: bool, workdir: Path) -> dict:
    settings = KafkaSettings(bootstrap=bootstrap)
    repo = load_lattice(REPO / "lattice.toml")
    out: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "tasks": {}}
    for name in tasks:
        batches, events, rate = PLAN[name]
        if quick:
            events //= 4
        spec = repo.task(name)
        build_model(spec)
        payloads, _ = sample_payloads(spec, events, seed=1)
        runtime = TaskRuntime(spec, load_model(spec))
        sweep = {}
        for b in batches:
            limit = compute_limit(runtime, payloads, b)
            eps = await drain_rate(settings, workdir, name, b, payloads)
            sweep[b] = {"worker_eps": round(eps), "compute_limit_eps": round(limit), "ratio": round(eps / limit, 3)}
            print(f"{name:>9} batch {b:>4}: worker {eps:8.0f}/s  compute limit {limit:9.0f}/s", flush=True)
        best = max(sweep, key=lambda b: sweep[b]["worker_eps"])
        steady, _ = sample_payloads(spec, int(rate * (10 if quick else 20)), seed=2)
        lat = await latency(settings, workdir, name, spec.max_batch, steady, rate)
        print(f"{name:>9} at {rate:g}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms", flush=True)
        out["tasks"][name] = {"backlog_events": events, "batches": sweep, "best_batch": best, "latency": lat}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sensor,vision,language")
    ap.add_argument("--quick", action="store_true", help="a quarter of the backlog, half the latency run")
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--output", type=Path, default=REPO / "bench" / "pipeline.json")
    args = ap.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.bootstrap:
            result = asyncio.run(run(args.bootstrap, tasks, args.quick, workdir))
        else:
            state = dev.start(workdir / "broker", port=dev.free_port(), progress=lambda _: None)
            try:
                result = asyncio.run(run(state.bootstrap, tasks, args.quick, workdir))
            finally:
                dev.stop(workdir / "broker", progress=lambda _: None)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
