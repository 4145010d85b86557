"""How long a planned move pauses a worker group, measured on live Kafka: the simulator's `pause_s`.

The lab (streamlattice.chaos.run.Lab: three brokers, a worker per region, open-loop load) runs
without the router; this module publishes the router's records itself, a plan every `every_s`
that moves one partition between two regions' nodes and back, so that every rebalance is a
planned one and starts at a known time. Each worker follows the plan as it would follow the
router's (it asks the group to rebalance; aiokafka's protocol is eager: every member revokes
everything, drains, rejoins and is assigned again).

A partition's pause in a rebalance is the longest an event of it waited (event time to result
produced) in the rebalance's window, less the median wait outside every window: the time the
partition served nothing. The simulator's model is the same: every partition of the group stops
for `pause_s`, and an event that arrives meanwhile waits for the rest of it.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamlattice.chaos.checker import check, decode, read_topic, schemas
from streamlattice.chaos.run import Lab
from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings, make_producer, start_client
from streamlattice.placement.plan import Placement
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import SCHEMA_DIR
from streamlattice.wire.records import PublishedPlan

DRAINED = re.compile(r"in-flight batches drained in ([0-9.]+)s")
READY = re.compile(r"\(ready in ([0-9.]+)s\)")


def plan_of(task: str, epoch: int, lattice: Lattice, owner: dict[int, str]) -> PublishedPlan:
    """A plan record, as the router publishes it, for partition -> node id `owner`."""
    region_of = {p: r.name for r in lattice.regions for p in r.block}
    node_region = {n: n.split(f"-{task}-")[0] for n in owner.values()}
    placements = tuple(
        Placement(p, n, region_of[p], node_region[n], 0.0, 0.0, 0.0, 0.0, 0.0, "a measured planned move")
        for p, n in sorted(owner.items())
    )
    return PublishedPlan(task, epoch, now_us(), 1, placements)


def pauses(answers: Sequence[tuple[int, int, int]], moves_us: Sequence[int], window_s: float) -> dict[str, Any]:
    """Each planned move's pause from (partition, event time µs, produced µs) of the first answer to
    every event; a move's window runs from its plan's publication for `window_s`."""
    window_us = int(window_s * 1e6)

    def window(t: int) -> int:
        return next((k for k, m in enumerate(moves_us) if m <= t < m + window_us), -1)

    steady: list[float] = []
    worst: dict[tuple[int, int], float] = defaultdict(float)  # (move, partition) -> longest wait, ms
    for partition, event_us, produced_us in answers:
        wait_ms = (produced_us - event_us) / 1000
        k = window(event_us)
        if k < 0:
            steady.append(wait_ms)
        else:
            worst[k, partition] = max(worst[k, partition], wait_ms)
    base = statistics.median(steady) if steady else 0.0
    per_move = []
    for k in range(len(moves_us)):
        stalls = [max(0.0, w - base) / 1000 for (m, _), w in worst.items() if m == k]
        if stalls:
            per_move.append({"partitions": len(stalls), "mean_s": statistics.fmean(stalls), "max_s": max(stalls)})
    means = [m["mean_s"] for m in per_move]
    return {
        "steady_wait_p50_ms": round(base, 1),
        "steady_wait_p99_ms": round(_quantile(steady, 0.99), 1),
        "moves": [{k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()} for m in per_move],
        "pause_s": _spread(means),
        "pause_max_s": _spread([m["max_s"] for m in per_move]),
    }


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


async def _publish_plans(lab: Lab, task: str, moves: int, every_s: float, progress: Callable[[str], None]) -> list[int]:
    """The region-local plan, then `moves` plans that move one partition to another region's node and
    back; the plans are republished every `plan_refresh_s` so that none goes stale. Returns when
    each move was published."""
    lattice = lab.lattice
    assert lattice is not None
    nodes = {w.name.split(f"-{task}-")[0]: w.name for w in lab.workers}
    owner = {p: nodes[r.name] for r in lattice.regions for p in r.block}
    first, second = lattice.regions[0], lattice.regions[1]
    moved = first.block[0]
    settings = KafkaSettings(bootstrap=lab.bootstrap)
    producer = make_producer(settings.with_client_id("streamlattice-pause-lab"))
    await start_client(producer, settings)
    published: list[int] = []
    try:
        for epoch in range(1, moves + 2):
            if epoch > 1:
                owner[moved] = nodes[second.name] if owner[moved] == nodes[first.name] else nodes[first.name]
            plan = plan_of(task, epoch, lattice, owner)
            published.append(plan.created_us)
            if epoch > 1:
                progress(f"plan epoch {epoch}: partition {moved} to {owner[moved]}")
            until = time.monotonic() + every_s
            while True:
                await producer.send_and_wait(lattice.placement_topic, plan.encode(), key=task.encode())
                left = until - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, lattice.settings.plan_refresh_s))
                plan = PublishedPlan(task, epoch, now_us(), plan.moves, plan.placements)
    finally:
        await producer.stop()
    return published[1:]


def measure(
    lattice: Lattice,
    workdir: Path,
    mode: str = "alo",
    task: str = "sensor",
    moves: int = 8,
    rate: float = 150.0,
    every_s: float = 15.0,
    warmup_s: float = 15.0,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Planned moves on a live lab, one every `every_s` under `rate` events/s: the pause each caused
    (pauses()), the workers' own drain and readiness times, and the checker's count of what was lost."""
    lab = Lab(workdir, lattice, [task], mode, progress, router=False)
    try:
        lab.start()
        lab.start_load(rate)
        progress(f"load {rate:g} events/s; {warmup_s:g}s of warm-up under the region-local plan")
        time.sleep(warmup_s)
        # the first plan (region-local) switches the group from sticky to planned: itself a
        # rebalance, and not counted
        moves_us = asyncio.run(_publish_plans(lab, task, moves, every_s, progress))
        end_us = now_us()
        lab.stop_load()
        time.sleep(5)
        assert lab.lattice is not None
        topics = (lab.lattice.events_topic(task), lab.lattice.results_topic(task), lab.lattice.dlq_topic(task))
        verdict = check(lab.bootstrap, [topics], SCHEMA_DIR, lab.acknowledged, [], end_us, max(50, int(rate * 2)))
        parsed = schemas(SCHEMA_DIR)
        window_us = int(every_s / 2 * 1e6)  # a rebalance's window; the rest of each interval is steady
        first: dict[str, tuple[int, int, int]] = {}
        for partition, _, value in read_topic(lab.bootstrap, topics[1]):
            res = decode(parsed["result"], value)
            if res is None or res["event_time_us"] < moves_us[0] - window_us:
                continue  # the warm-up and the switch to planned
            seen = first.get(res["event_id"])
            if seen is None or res["produced_us"] < seen[2]:
                first[res["event_id"]] = (partition, res["event_time_us"], res["produced_us"])
        logs = "".join(w.text() for w in lab.workers)
        return {
            "method": __doc__,
            "mode": mode,
            "task": task,
            "rate_eps": rate,
            "every_s": every_s,
            "workers": [w.name for w in lab.workers],
            **pauses(list(first.values()), moves_us, window_s=every_s / 2),
            "drained_s": _spread([float(x) for x in DRAINED.findall(logs)]),
            "ready_s": _spread([float(x) for x in READY.findall(logs)]),
            "verdict": {k: v for k, v in verdict.to_json().items() if k in ("published", "answered", "lost")},
        }
    finally:
        lab.close()
