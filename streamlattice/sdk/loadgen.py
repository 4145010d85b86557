"""The load generator behind `streamlattice produce` and the demo: paced events across regions."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlattice.config import Task
from streamlattice.inference.models import import_path
from streamlattice.sdk.client import LatticeProducer

SAMPLES_PER_DRAW = 2048


def sample_payloads(task: Task, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """`n` payloads for `task` from its generator, or random tensors of its shape when it has none."""
    if task.generator:
        payloads, sources = import_path(task.generator)(n, seed)
        return payloads, list(sources)
    rng = np.random.default_rng(seed)
    if np.issubdtype(task.np_dtype, np.integer):
        info = np.iinfo(task.np_dtype)
        x = rng.integers(info.min, int(info.max) + 1, (n, *task.shape), dtype=task.np_dtype)
    else:
        x = rng.standard_normal((n, *task.shape)).astype(task.np_dtype)
    return x, [f"source-{i % 64:03d}" for i in range(n)]


@dataclass
class LoadReport:
    """What a load run sent."""

    sent: int = 0
    by_region: dict[str, int] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def run_load(
    producer: LatticeProducer,
    task: str,
    regions: Sequence[str],
    rate: float | None,
    count: int | None,
    duration: float | None = None,
    seed: int = 0,
    stop: asyncio.Event | None = None,
    on_sent: Callable[[int], None] | None = None,
    keep_ids: bool = False,
) -> LoadReport:
    """Publish events round-robin over `regions` at `rate`/s (as fast as possible when None).

    Ends after `count` events, `duration` seconds or when `stop` is set, whichever is first,
    and returns once every sent event is acknowledged.
    """
    spec = producer.lattice.task(task)
    report = LoadReport(by_region=dict.fromkeys(regions, 0))
    region_cycle = itertools.cycle(regions)
    started = time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    draw = 0
    while True:
        payloads, sources = sample_payloads(spec, SAMPLES_PER_DRAW, seed + draw)
        draw += 1
        for payload, source in zip(payloads, sources, strict=True):
            elapsed = time.monotonic() - started
            if (
                (count is not None and report.sent >= count)
                or (duration is not None and elapsed >= duration)
                or (stop is not None and stop.is_set())
            ):
                await asyncio.gather(*pending)
                report.seconds = time.monotonic() - started
                return report
            if rate:
                ahead = report.sent / rate - elapsed
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            region = next(region_cycle)
            event_id, delivery = await producer.submit(task, region, source, payload)
            pending.append(delivery)
            report.sent += 1
            report.by_region[region] += 1
            if keep_ids:
                report.event_ids.append(event_id)
            if on_sent:
                on_sent(1)
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
