"""The compute limit: the task's preprocessing and ONNX Runtime alone, no Kafka, on pre-decoded
batches, at its best batch size and intra-op thread count (both swept); prints JSON.

    python bench/contenders/compute_limit.py --config LATTICE --task TASK [--seconds S]
"""

import argparse
import json
import os
import time

import numpy as np

from streamlattice.bench.answers import peak_rss_mb, setup
from streamlattice.inference.models import load_model
from streamlattice.inference.tasks import TaskRuntime
from streamlattice.sdk.loadgen import sample_payloads

BATCHES = (1, 8, 32, 128, 256, 512, 1024)


def sweep(runtime: TaskRuntime, payloads: np.ndarray, size: int, seconds: float) -> dict[str, float]:
    """Events/s, CPU per 1,000 events and per-batch latency of batches of `size`."""
    batches = [payloads[i : i + size] for i in range(0, len(payloads) - size + 1, size)]
    runtime.run(batches[0])
    times: list[float] = []
    cpu0, started = time.process_time(), time.perf_counter()
    while not times or time.perf_counter() - started < seconds:
        b = batches[len(times) % len(batches)]
        t = time.perf_counter()
        runtime.run(b)
        times.append(time.perf_counter() - t)
    events = len(times) * size
    lat = np.array(times) * 1000
    return {
        "throughput_eps": events / (time.perf_counter() - started),
        "cpu_s_per_1k": (time.process_time() - cpu0) / events * 1000,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


if __name__ == "__main__":
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--seconds", type=float, default=1.0, help="per batch size and thread count")
    known, rest = extra.parse_known_args()
    s = setup("compute_limit", __doc__, rest)
    spec = s.lattice.task(s.task)
    # up to 8x the task's own batch: a heavy model's large batches would take minutes and add nothing
    sizes = [b for b in BATCHES if b <= max(64, 8 * spec.max_batch)]
    payloads, _ = sample_payloads(spec, max(sizes) * 4, seed=1)
    # the cores this process may use (the harness pins it to the contenders' core)
    threads = sorted({1, len(os.sched_getaffinity(0))})
    results: dict[str, dict[str, float]] = {}
    for n in threads:
        runtime = TaskRuntime(spec, load_model(spec, threads=n))
        for size in sizes:
            results[f"{size}x{n}"] = {**sweep(runtime, payloads, size, known.seconds), "batch": size, "threads": n}
    best = max(results.values(), key=lambda r: r["throughput_eps"])
    # VmHWM, not getrusage's ru_maxrss: that one starts from the parent's size at fork
    print(json.dumps({**best, "rss_mb": peak_rss_mb("self"), "by_batch_and_threads": results}), flush=True)
