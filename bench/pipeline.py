"""Baseline of one sensor worker: backlog throughput and end-to-end latency at a modest rate.

Measured in one run on one broker, next to the compute limit (ONNX Runtime alone on the
same windows at the worker's batch size), so the ratio says how much the pipeline costs.
Not a test. Usage: python bench/pipeline.py [--events N] [--rate R] [--output FILE]
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
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamlattice.client import LatticeProducer, Result, ResultSubscriber  # noqa: E402
from streamlattice.config import load_lattice  # noqa: E402
from streamlattice.groups import wait_for_stable_group  # noqa: E402
from streamlattice.kafka import KafkaSettings  # noqa: E402
from streamlattice.models import ensure_model  # noqa: E402
from streamlattice.ops import broker as dev  # noqa: E402
from streamlattice.topics import ensure_topics  # noqa: E402
from workers.sensor import signals  # noqa: E402


def compute_limit(model: Path, x: np.ndarray, batch: int) -> float:
    """Events/s of ONNX Runtime alone on pre-decoded batches (one intra-op thread, as a worker)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]
    session.run(None, {"windows": batches[0]})
    started = time.perf_counter()
    for b in batches:
        session.run(None, {"windows": b})
    return len(batches) * batch / (time.perf_counter() - started)


async def publish(settings: KafkaSettings, lattice, windows, rate: float | None) -> set[str]:
    ids: set[str] = set()
    regions = [r.name for r in lattice.regions]
    async with LatticeProducer(lattice=lattice, settings=settings) as producer:
        pending = []
        started = time.monotonic()
        for i, (x, source) in enumerate(zip(windows.x, windows.source_id, strict=True)):
            if rate:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            event_id, delivery = await producer.submit("sensor", regions[i % 3], source, x)
            ids.add(event_id)
            pending.append(delivery)
        await asyncio.gather(*pending)
    return ids


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


def start_worker(bootstrap: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "streamlattice", "--bootstrap", bootstrap, "--config", str(config),
           "--log-level", "WARNING", "worker", "--task", "sensor", "--region", "eu-west", "--node-id", "bench"]
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)


async def run(bootstrap: str, events: int, rate: float, workdir: Path) -> dict:
    settings = KafkaSettings(bootstrap=bootstrap)
    base = load_lattice(REPO / "lattice.toml")
    model = ensure_model(base.task("sensor"))
    config = workdir / "lattice.toml"
    text = (REPO / "lattice.toml").read_text().replace('namespace = "sl"', f'namespace = "b{uuid.uuid4().hex[:8]}"')
    config.write_text(text.replace('model = "models/sensor.onnx"', f'model = "{model}"'))
    lattice = load_lattice(config)
    await ensure_topics(settings, lattice)
    task = lattice.task("sensor")

    backlog = signals.generate(events, seed=1)
    limit = compute_limit(model, backlog.x, task.max_batch)

    # 1. backlog: publish first, then let one worker drain it
    await publish(settings, lattice, backlog, None)
    worker = start_worker(bootstrap, config, workdir / "worker.log")
    try:
        async with ResultSubscriber("sensor", lattice=lattice, settings=settings, from_beginning=True) as sub:
            await wait_for_stable_group(settings, lattice.group_id("sensor"), 1, 60)
            drained = await collect(sub, events, timeout=300)
        first = min(r.consumed_us for r in drained)
        last = max(r.produced_us for r in drained)
        throughput = len(drained) / ((last - first) / 1e6)

        # 2. latency at a modest, steady rate, read as the results arrive
        steady = signals.generate(int(rate * 20), seed=2)
        async with ResultSubscriber("sensor", lattice=lattice, settings=settings) as sub:
            timed, _ = await asyncio.gather(collect(sub, len(steady.x), 120), publish(settings, lattice, steady, rate))
        lat = np.array([r.latency_ms for r in timed])
        stages = {
            "to_worker": [r.consumed_us - r.event_time_us for r in timed],
            "batch_and_infer": [r.inferred_us - r.consumed_us for r in timed],
            "to_result_topic": [r.produced_us - r.inferred_us for r in timed],
            "to_subscriber": [r.received_us - r.produced_us for r in timed],
        }
    finally:
        worker.terminate()
        worker.wait(30)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "events": events,
        "answered": len(drained),
        "worker_throughput_eps": round(throughput),
        "compute_limit_eps": round(limit),
        "worker_vs_compute_limit": round(throughput / limit, 3),
        "latency_rate_eps": rate,
        "latency_answered": len(timed),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "p50_stage_ms": {k: round(float(np.percentile(v, 50)) / 1000, 1) for k, v in stages.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--output", type=Path, default=REPO / "bench" / "pipeline.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.bootstrap:
            result = asyncio.run(run(args.bootstrap, args.events, args.rate, workdir))
        else:
            state = dev.start(workdir / "broker", port=dev.free_port(), progress=lambda _: None)
            try:
                result = asyncio.run(run(state.bootstrap, args.events, args.rate, workdir))
            finally:
                dev.stop(workdir / "broker", progress=lambda _: None)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        print(f"{k:>26}: {v}")


if __name__ == "__main__":
    main()
