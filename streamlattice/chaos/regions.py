"""Runs on emulated regions (streamlattice.devbroker.regions): how much nearness buys, and a
region cut.

- `measure`: end-to-end latency (an event's creation at its region's producer to its result at
  a subscriber in the same region) with every region's partitions led and served at home
  (`local`), against the same load led and served from one region (`central`). Producers and
  subscribers stay in their regions in both: only where Kafka leads and the workers run moves.
- `cut_run`: the lattice (router and a worker per region) under load; one region's data centre
  loses its links for a while and gets them back. Measured: when its events are answered from
  elsewhere, when they come home, and the independent checker's count of what was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka.errors import KafkaError

from streamlattice.chaos.checker import check
from streamlattice.chaos.run import Lab, Proc
from streamlattice.config import Lattice, load_lattice
from streamlattice.devbroker import broker as dev
from streamlattice.devbroker.regions import EmulatedRegions
from streamlattice.inference.models import build_model, import_path
from streamlattice.kafka.topics import create_topics, lattice_topics
from streamlattice.sdk.client import LatticeProducer, ResultSubscriber
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import SCHEMA_DIR

PLACEMENTS = ("local", "central")
SAME_CARBON = 400.0
# The users' clients give up on a silent broker after 10 s (Kafka's default is 30 s): a region's
# users fail over to the other regions only as fast as their clients notice the silence.
USER_REQUEST_TIMEOUT_MS = 10_000
SAME_POWER = f"static:renewable=0.3,carbon={SAME_CARBON:g}"


@dataclass(frozen=True)
class Answer:
    """A result as a subscriber in the event's region saw it."""

    event_id: str
    region: str  # the event's region
    node_id: str
    event_time_us: int
    received_us: int
    consumed_us: int = 0  # when its worker read it
    produced_us: int = 0  # when its worker handed the result to Kafka

    @property
    def latency_ms(self) -> float:
        """Creation at the producer to arrival at the subscriber."""
        return (self.received_us - self.event_time_us) / 1000


class RegionLab(Lab):
    """A chaos lab on emulated regions: workers, router, producers and subscribers each in a region."""

    def __init__(
        self,
        workdir: Path,
        lattice: Lattice,
        task: str,
        progress: Callable[[str], None],
        placement: str = "local",
        central: str | None = None,
        router: bool = False,
        mode: str = "alo",
        replication: int = 3,
        same_power: bool = False,
        latency_scale: float = 1.0,
    ) -> None:
        super().__init__(workdir, lattice, [task], mode, progress)
        self.replication = replication
        self.same_power = same_power
        self.latency_scale = latency_scale
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        self.task = task
        self.placement = placement
        self.central = central or lattice.regions[0].name
        self.with_router = router
        self.emulated: EmulatedRegions | None = None
        self.published: dict[str, tuple[str, int]] = {}  # event id -> its region, when it was submitted (µs)
        self.refused = 0  # events the cluster never acknowledged
        self.answers: list[Answer] = []
        self.node_region: dict[str, str] = {}
        self._stop_subscribers = threading.Event()
        self._subscribing = threading.Event()

    def start(self) -> None:
        """Start the regions, the topics (leaders at home, or all in the central region), the
        router if asked, the workers and a subscriber per region."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lattice = self._write_lattice()
        regions = [r.name for r in self.lattice.regions]
        self.emulated = EmulatedRegions(self.data_dir, self.lattice, self.latency_scale)
        self.emulated.start(progress=self.say)
        self.bootstrap = self.emulated.bootstrap(self.central)
        specs = lattice_topics(self.lattice)
        if self.placement == "central":
            specs = [replace(s, homes=(self.central,) * len(s.homes)) if s.homes else s for s in specs]
        if self.replication < 3:  # a leader and its nearest follower: one of them may be cut off
            specs = [replace(s, configs={**s.configs, "min.insync.replicas": "1"}) for s in specs]
        lattice = self.lattice
        asyncio.run(
            create_topics(
                self.emulated.settings(self.central),
                specs,
                lambda a, b: lattice.latency_ms.get((a, b), 0.0),
                self.replication,
            )
        )
        build_model(self.lattice.task(self.task))
        if self.with_router:
            self.router = Proc(
                "router",
                [*self._common_in(self.central), "router", "--web-port", str(dev.free_port())],
                self._log("router"),
            )
            self.router.start(self._env())
        for region in regions:
            self.add_worker(self.task, region if self.placement == "local" else self.central)
        self._wait_for_assignment()
        self._spawn(self._sample_rss)
        self._spawn(self._subscribe)
        if not self._subscribing.wait(60):
            raise RuntimeError("the subscribers did not start within 60 s")

    # ---- faults: brokers are the regions', and a region can be cut --------------------------

    def broker_ids(self) -> list[int]:
        """Every region's broker."""
        assert self.emulated is not None
        return [b.node_id for b in self.emulated.brokers]

    def stop_broker(self, node_id: int, sig: signal.Signals) -> None:
        """Send a region's broker `sig` and wait until it has exited."""
        assert self.emulated is not None
        self.emulated.stop_broker(node_id, sig)

    def start_brokers(self) -> None:
        """Start the regions' brokers that are down; returns once all of them answer."""
        assert self.emulated is not None
        self.emulated.start_brokers()

    def cut_region(self, region: str) -> None:
        """Blackhole `region`'s links (see `EmulatedRegions.cut`)."""
        assert self.emulated is not None
        self.emulated.cut(region)

    def heal_region(self, region: str) -> None:
        """Give `region` its links back."""
        assert self.emulated is not None
        self.emulated.heal(region)

    def _write_lattice(self) -> Lattice:
        """The lattice in a namespace of its own; with `same_power`, every region on the same
        static power, so that where the router places work depends on distance and capacity only."""
        lattice = super()._write_lattice()
        if not self.same_power:
            return lattice
        assert lattice.source is not None
        text = Path(lattice.source).read_text()
        text = re.sub(r"(?m)^power\s*=.*$", f'power = "{SAME_POWER}"', text)
        text = re.sub(r"(?m)^carbon_intensity\s*=.*$", f"carbon_intensity = {SAME_CARBON}", text)
        Path(lattice.source).write_text(text)
        return load_lattice(lattice.source)

    def _common_in(self, region: str) -> list[str]:
        assert self.lattice is not None and self.lattice.source is not None and self.emulated is not None
        return ["--bootstrap", self.emulated.bootstrap(region, "dc"), "--config", str(self.lattice.source)]

    def add_worker(self, task: str, region: str) -> Proc:
        """Start a worker of `task` in `region`, connected as that region's servers are."""
        node = f"{region}-{task}-{len(self.workers)}"
        args = [*self._common_in(region), "worker", "--task", task, "--region", region, "--node-id", node]
        if self.mode == "eos":
            args.append("--exactly-once")
        proc = Proc(node, args, self._log(node))
        proc.start(self._env())
        self.workers.append(proc)
        self.node_region[node] = region
        return proc

    # ---- users: producers and subscribers in their regions ---------------------------------

    async def _publish(self, rate: float) -> None:
        """`rate` events/s in all, a region's share from its own users' producer and loop: a region
        whose producer waits on a cut-off broker must not hold back the others' users."""
        assert self.lattice is not None and self.emulated is not None
        spec = self.lattice.task(self.task)
        if spec.generator is None:
            raise RuntimeError(f"task {self.task!r} has no generator to make load with")
        payloads, sources = import_path(spec.generator)(512, 1)
        regions = [r.name for r in self.lattice.regions]
        share = rate / len(regions)
        await asyncio.gather(
            *(self._publish_from(r, k, len(regions), share, payloads, sources) for k, r in enumerate(regions))
        )

    async def _publish_from(
        self, region: str, k: int, n: int, rate: float, payloads: list[Any], sources: list[str]
    ) -> None:
        assert self.lattice is not None and self.emulated is not None
        settings = self.emulated.settings(region, "edge", f"sl-load-{region}", USER_REQUEST_TIMEOUT_MS)
        async with LatticeProducer(lattice=self.lattice, settings=settings, pending_timeout_s=300) as producer:
            started, i = time.monotonic(), 0
            while not self._stop_load.is_set():
                j = (i * n + k) % len(sources)  # the sources the single loop gave this region
                event_id, delivery = await producer.submit(self.task, region, sources[j], payloads[j])
                self.published[event_id] = (region, now_us())
                delivery.add_done_callback(functools.partial(self._delivered, event_id))
                i += 1
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            with contextlib.suppress(Exception):
                await producer.flush()

    def _delivered(self, event_id: str, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            self.acknowledged.append(event_id)
        else:
            self.refused += 1

    def _subscribe(self) -> None:
        try:
            asyncio.run(self._read_results())
        except BaseException as e:
            self.load_error = e
            self._subscribing.set()

    async def _read_results(self) -> None:
        assert self.lattice is not None and self.emulated is not None
        subscribers = [
            ResultSubscriber(
                self.task,
                [r.name],
                lattice=self.lattice,
                settings=self.emulated.settings(r.name, "edge", f"sl-subscriber-{r.name}", USER_REQUEST_TIMEOUT_MS),
            )
            for r in self.lattice.regions
        ]
        for s in subscribers:
            await s.start()
        self._subscribing.set()

        async def read(s: ResultSubscriber) -> None:
            async for batch in s.batches():
                for res in batch:
                    self.answers.append(
                        Answer(
                            res.event_id,
                            res.region,
                            res.node_id,
                            res.event_time_us,
                            res.received_us,
                            res.consumed_us,
                            res.produced_us,
                        )
                    )
                if self._stop_subscribers.is_set():
                    return

        try:
            await asyncio.gather(*(read(s) for s in subscribers))
        finally:
            for s in subscribers:
                with contextlib.suppress(Exception):
                    await s.stop()

    def close(self) -> None:
        """Stop subscribers, load, workers, router, brokers and proxies."""
        self._stop_subscribers.set()
        super().close()
        if self.emulated is not None:
            self.emulated.stop()


# ---- what a run measured ---------------------------------------------------------------------


def latency_stats(latencies_ms: list[float], unanswered: int) -> dict[str, Any]:
    """p50/p99/max of answered events, and how many were not answered (failures, not samples)."""
    if not latencies_ms:
        return {"answered": 0, "unanswered": unanswered, "p50_ms": None, "p99_ms": None, "max_ms": None}
    xs = np.asarray(latencies_ms)
    return {
        "answered": len(latencies_ms),
        "unanswered": unanswered,
        "p50_ms": round(float(np.percentile(xs, 50)), 1),
        "p99_ms": round(float(np.percentile(xs, 99)), 1),
        "max_ms": round(float(xs.max()), 1),
    }


def window_stats(
    published: dict[str, tuple[str, int]], answers: list[Answer], start_us: int, end_us: int, regions: list[str]
) -> dict[str, Any]:
    """Per region and overall: latency of the events submitted in [start_us, end_us) and how many
    of them got no answer. A duplicate answer counts once (the first)."""
    first: dict[str, Answer] = {}
    for a in answers:
        if a.event_id not in first or a.received_us < first[a.event_id].received_us:
            first[a.event_id] = a
    per: dict[str, tuple[list[float], int]] = {r: ([], 0) for r in regions}
    stages: dict[str, list[tuple[float, float, float]]] = {r: [] for r in regions}
    for event_id, (region, at) in published.items():
        if not start_us <= at < end_us:
            continue
        lat, missing = per[region]
        answer = first.get(event_id)
        if answer is None:
            per[region] = (lat, missing + 1)
        else:
            lat.append(answer.latency_ms)
            if answer.consumed_us:
                stages[region].append(
                    (
                        (answer.consumed_us - answer.event_time_us) / 1000,
                        (answer.produced_us - answer.consumed_us) / 1000,
                        (answer.received_us - answer.produced_us) / 1000,
                    )
                )
    out: dict[str, Any] = {r: latency_stats(lat, missing) for r, (lat, missing) in per.items()}
    for r, xs in stages.items():
        if xs:  # where the time goes, median of each stage: to the worker, in it, to the subscriber
            med = np.median(np.asarray(xs), axis=0)
            out[r]["stages_p50_ms"] = {
                "to_worker": round(med[0], 1),
                "in_worker": round(med[1], 1),
                "to_subscriber": round(med[2], 1),
            }
    out["all"] = latency_stats([x for lat, _ in per.values() for x in lat], sum(m for _, m in per.values()))
    return out


def measure(
    lattice: Lattice,
    placement: str,
    workdir: Path,
    task: str = "sensor",
    rate: float = 90.0,
    seconds: float = 60.0,
    warmup_s: float = 20.0,
    central: str | None = None,
    replication: int = 3,
    latency_scale: float = 1.0,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One run of `placement` ("local" or "central"): latency per region over `seconds` of load
    at `rate` events/s (split evenly over the regions) after `warmup_s`. `latency_scale` 0 keeps
    the proxies and takes the delay away: the pipeline's own latency."""
    lab = RegionLab(
        workdir,
        lattice,
        task,
        progress,
        placement=placement,
        central=central,
        replication=replication,
        latency_scale=latency_scale,
    )
    try:
        lab.start()
        assert lab.lattice is not None
        regions = [r.name for r in lab.lattice.regions]
        progress(f"{placement}: {rate:g} events/s of {task} for {warmup_s:g}s warm-up + {seconds:g}s measured")
        lab.start_load(rate)
        time.sleep(warmup_s)
        start = now_us()
        time.sleep(seconds)
        end = now_us()
        time.sleep(10)  # the last events of the window get their answers
        lab.stop_load()
        if lab.load_error is not None:
            raise RuntimeError(f"the load or the subscribers failed: {lab.load_error!r}")
        stats = window_stats(lab.published, lab.answers, start, end, regions)
        return {
            "placement": placement,
            "central": lab.central if placement == "central" else None,
            "task": task,
            "rate": rate,
            "seconds": seconds,
            "replication": replication,
            "latency_scale": latency_scale,
            "refused": lab.refused,
            "regions": stats,
            "crashed": [w.name for w in lab.workers if w.popen is not None and w.popen.poll() not in (None, 0)],
        }
    finally:
        lab.close()


def _watch_leaders_leave(
    emulated: EmulatedRegions,
    topic: str,
    block: Sequence[int],
    region: str,
    via: str,
    cut_us: int,
    cut_s: float,
    progress: Callable[[str], None],
) -> float | None:
    """Seconds from the cut until the metadata of `via`'s brokers has no partition of `block` led
    from `region` (None if that did not happen within `cut_s`)."""
    while (now_us() - cut_us) / 1e6 < cut_s - 2.0:
        time.sleep(2.0)
        try:
            leaders = emulated.leaders(topic, via=via, request_timeout_ms=3_000)
        except (KafkaError, OSError, TimeoutError) as e:
            progress(f"  leaders unknown ({e!r})")
            continue
        if all(leaders.get(p) not in (None, "-", region) for p in block):
            left = (now_us() - cut_us) / 1e6
            progress(f"  {region}'s partitions led from other regions {left:.1f}s after the cut")
            return left
    progress(f"  {region}'s partitions still led from {region} (or leaderless) as the cut ends")
    return None


def cut_timings(
    answers: list[Answer], node_region: dict[str, str], region: str, cut_us: int, heal_us: int
) -> dict[str, float | None]:
    """From the answers to `region`'s events, seconds:

    - `served_elsewhere_s`: from the cut to the first one a worker of another region produced;
    - `seen_elsewhere_s`: from the cut to the first one from another region that the region's
      own subscriber received (its users' clients must first give up on their cut-off broker);
    - `home_again_s`: from the links' return to the first one produced at home after which
      every answer was produced at home.
    """
    mine = sorted((a for a in answers if a.region == region), key=lambda a: a.produced_us or a.received_us)

    def at(a: Answer) -> int:
        return a.produced_us or a.received_us

    elsewhere = [a for a in mine if at(a) > cut_us and node_region.get(a.node_id) != region]
    served_elsewhere = (at(elsewhere[0]) - cut_us) / 1e6 if elsewhere else None
    seen = min((a.received_us for a in elsewhere), default=None)
    home_again: float | None = None
    after = [a for a in mine if at(a) > heal_us]
    for i, a in enumerate(after):
        if all(node_region.get(b.node_id) == region for b in after[i:]):
            home_again = (at(a) - heal_us) / 1e6
            break
    return {
        "served_elsewhere_s": served_elsewhere,
        "seen_elsewhere_s": None if seen is None else (seen - cut_us) / 1e6,
        "home_again_s": home_again,
    }


def snapshot(answers: list[Answer], node_region: dict[str, str], since_us: int, until_us: int) -> str:
    """One line per event region: answers received in the window, their p50 latency, and which
    regions' workers served them."""
    lines = []
    window = [a for a in answers if since_us <= a.received_us < until_us]
    seconds = max(1e-6, (until_us - since_us) / 1e6)
    for region in sorted({a.region for a in answers}):
        mine = [a for a in window if a.region == region]
        if not mine:
            lines.append(f"  {region:>10}: no answers")
            continue
        served: dict[str, int] = {}
        for a in mine:
            where = node_region.get(a.node_id, "?")
            served[where] = served.get(where, 0) + 1
        by = ", ".join(f"{w} {100 * n / len(mine):.0f}%" for w, n in sorted(served.items(), key=lambda x: -x[1]))
        p50 = float(np.median([a.latency_ms for a in mine]))
        lines.append(f"  {region:>10}: {len(mine) / seconds:5.1f} answers/s, p50 {p50:6.0f} ms, served by {by}")
    return "\n".join(lines)


def cut_run(
    lattice: Lattice,
    workdir: Path,
    region: str,
    task: str = "sensor",
    rate: float = 60.0,
    before_s: float = 30.0,
    cut_s: float = 60.0,
    after_s: float = 90.0,
    settle_s: float = 90.0,
    progress: Callable[[str], None] = print,
    tick_s: float | None = None,
) -> dict[str, Any]:
    """The lattice under load; `region`'s data centre is cut off for `cut_s`, then healed. With
    `tick_s`, a line per region every `tick_s` (answers/s, latency, where they were served).

    Every region runs on the same power here: the router would otherwise move work toward green
    power whatever the cut does, and "home" would mean nothing; this run is about failing over."""
    lab = RegionLab(workdir, lattice, task, progress, placement="local", router=True, same_power=True)
    try:
        lab.start()
        if tick_s:

            def tick() -> None:
                while not lab._stop_subscribers.wait(tick_s):
                    now = now_us()
                    cut = (
                        f" ({', '.join(sorted(lab.emulated.cut_regions))} cut)"
                        if lab.emulated and lab.emulated.cut_regions
                        else ""
                    )
                    progress(
                        f"last {tick_s:g}s{cut}:\n"
                        + snapshot(lab.answers, lab.node_region, now - int(tick_s * 1e6), now)
                    )

            lab._spawn(tick)
        assert lab.lattice is not None and lab.emulated is not None
        if region not in lab.emulated.regions:
            raise ValueError(f"unknown region {region!r}; the lattice has {', '.join(lab.emulated.regions)}")
        others = [r for r in lab.emulated.regions if r != region]
        lab.start_load(rate)
        progress(f"load {rate:g} events/s in every region; cutting {region} in {before_s:g}s")
        time.sleep(before_s)
        cut_us = now_us()
        names = lab.emulated.cut(region)
        progress(f"cut {region}: {len(names)} links blackholed for {cut_s:g}s")
        topic = lab.lattice.events_topic(task)
        block = lab.lattice.region(region).block
        leaders_left_s = _watch_leaders_leave(lab.emulated, topic, block, region, others[0], cut_us, cut_s, progress)
        time.sleep(max(0.0, cut_s - (now_us() - cut_us) / 1e6))
        heal_us = now_us()
        lab.emulated.heal(region)
        progress(f"healed {region}; {after_s:g}s more load")
        time.sleep(after_s)
        end_us = now_us()
        lab.stop_load()
        leaders = lab.emulated.leaders(topic, via=others[0])
        topics = [(lab.lattice.events_topic(task), lab.lattice.results_topic(task), lab.lattice.dlq_topic(task))]
        progress(f"load stopped; checking (up to {settle_s:g}s for the last answers)")
        deadline = time.monotonic() + settle_s
        while True:
            time.sleep(5)
            verdict = check(
                lab.emulated.bootstrap(others[0]), topics, SCHEMA_DIR, lab.acknowledged, [(cut_us, heal_us)], end_us, 50
            )
            if verdict.lost == 0 or time.monotonic() > deadline:
                break
        regions = lab.emulated.regions
        return {
            "region": region,
            "task": task,
            "rate": rate,
            "cut_s": cut_s,
            "links_cut": len(names),
            "leaders_left_s": leaders_left_s,
            **cut_timings(lab.answers, lab.node_region, region, cut_us, heal_us),
            "before": window_stats(
                lab.published, lab.answers, cut_us - int(before_s * 1e6) + 10_000_000, cut_us, regions
            ),
            "during": window_stats(lab.published, lab.answers, cut_us, heal_us, regions),
            "after": window_stats(lab.published, lab.answers, heal_us + 30_000_000, end_us, regions),
            "published": len(lab.published),
            "acknowledged": len(lab.acknowledged),
            "refused": lab.refused,
            "leaders_home_at_end": all(leaders.get(p) == region for p in block),
            "verdict": verdict.to_json(),
            "crashed": [w.name for w in lab.workers if w.popen is not None and w.popen.poll() not in (None, 0)],
        }
    finally:
        lab.close()


def compare(
    lattice: Lattice,
    workdir: Path,
    repeats: int = 2,
    replications: tuple[int, ...] = (3, 2),
    progress: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Any]:
    """local and central, alternating, `repeats` times for each replication factor: every run on a
    fresh set of regions."""
    runs: list[dict[str, Any]] = []
    total = repeats * (len(PLACEMENTS) * len(replications) + 1)
    for rf in replications:
        for i in range(repeats):
            for placement in PLACEMENTS:
                progress(f"run {len(runs) + 1}/{total}: {placement}, replication {rf}")
                run = measure(
                    lattice,
                    placement,
                    workdir / f"{placement}-rf{rf}-{i}",
                    replication=rf,
                    progress=progress,
                    **options,
                )
                runs.append(run)
    for i in range(repeats):  # the control: the same proxies and load, no delay
        progress(f"run {len(runs) + 1}/{total}: local, replication {replications[0]}, no delay")
        runs.append(
            measure(
                lattice,
                "local",
                workdir / f"control-{i}",
                replication=replications[0],
                latency_scale=0.0,
                progress=progress,
                **options,
            )
        )
    latency = {(a, b): ms for (a, b), ms in lattice.latency_ms.items() if a < b}
    return {
        "method": (
            "one Kafka broker per region (broker.rack), every hop between regions delayed by Toxiproxy "
            "(latency toxic each way = lattice.toml's one-way latency_ms); producers and subscribers in "
            "their regions in both placements; end-to-end = event_time at the producer to arrival at the "
            "subscriber; unanswered events are failures"
        ),
        "latency_ms": {f"{a}~{b}": ms for (a, b), ms in sorted(latency.items())},
        "runs": runs,
    }


def markdown(report: dict[str, Any]) -> str:
    """The comparison as a table: p50/p99 per region and placement, min-max over repeats."""
    runs = report["runs"]
    regions = [r for r in runs[0]["regions"] if r != "all"] + ["all"]
    lines = [
        "| replication | region | local p50 ms | central p50 ms | local p99 ms | central p99 ms "
        "| p99 local/central | unanswered (local, central) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def span(xs: list[float]) -> str:
        return f"{min(xs):.0f}" if min(xs) == max(xs) else f"{min(xs):.0f}-{max(xs):.0f}"

    delayed = [r for r in runs if r.get("latency_scale", 1.0) > 0]
    for rf in sorted({r["replication"] for r in delayed}, reverse=True):
        for region in regions:
            cells = {}
            for placement in PLACEMENTS:
                rs = [r["regions"][region] for r in delayed if r["placement"] == placement and r["replication"] == rf]
                cells[placement] = (
                    [x["p50_ms"] for x in rs if x["p50_ms"] is not None],
                    [x["p99_ms"] for x in rs if x["p99_ms"] is not None],
                    sum(x["unanswered"] for x in rs),
                )
            lp99, cp99 = cells["local"][1], cells["central"][1]
            ratio = f"{sum(lp99) / len(lp99) / (sum(cp99) / len(cp99)):.2f}" if lp99 and cp99 else "-"
            lines.append(
                f"| {rf} | {region} | {span(cells['local'][0])} | {span(cells['central'][0])} | "
                f"{span(lp99)} | {span(cp99)} | {ratio} | {cells['local'][2]}, {cells['central'][2]} |"
            )
    control = [r for r in runs if r.get("latency_scale", 1.0) == 0]
    if control:
        lines += [
            "",
            "Control, no delay (local, the same proxies): "
            + ", ".join(
                f"{region} p50 {span([r['regions'][region]['p50_ms'] for r in control])} / "
                f"p99 {span([r['regions'][region]['p99_ms'] for r in control])} ms"
                for region in regions
            ),
        ]
    return "\n".join(lines) + "\n"


def cut_summary(report: dict[str, Any]) -> str:
    """A region cut's outcome in a few lines."""

    def s(x: float | None) -> str:
        return "never" if x is None else f"{x:.1f}s"

    v = report["verdict"]
    region = report["region"]
    during = report["during"][region]
    return "\n".join(
        [
            f"cut {region} for {report['cut_s']:g}s ({report['links_cut']} links) under {report['rate']:g} events/s",
            f"  its partitions led from other regions {s(report.get('leaders_left_s'))} after the cut; "
            f"its events answered from another region {s(report['served_elsewhere_s'])} after the cut "
            f"(its users saw the first such answer after {s(report['seen_elsewhere_s'])}); "
            f"all served at home again {s(report['home_again_s'])} after the links returned",
            f"  its events published during the cut: {during['answered']} answered (p50 {during['p50_ms']} ms, "
            f"p99 {during['p99_ms']} ms), {during['unanswered']} unanswered",
            f"  published {report['published']}, acknowledged {report['acknowledged']}, refused {report['refused']}; "
            f"checker: {v['lost']} lost, {v['duplicated']} duplicated, {v['dead_lettered']} dead-lettered",
            f"  leaders of {region}'s partitions at home at the end: {report['leaders_home_at_end']}; "
            f"crashed workers: {', '.join(report['crashed']) or 'none'}",
        ]
    )
