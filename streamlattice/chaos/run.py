"""A chaos run: a three-broker cluster, the router and a worker per task and region under open-loop
load, a fault schedule applied to them, then the checker's verdict, written as JSON.

Everything runs as real processes on this machine (brokers are the dev broker's JVMs, workers
and the router are `streamlattice` subprocesses) and is stopped at the end, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlattice.bench.answers import rss_mb
from streamlattice.chaos.checker import TREND_S, check, slope_per_min
from streamlattice.chaos.schedule import Fault, Schedule, check_lab
from streamlattice.config import Lattice, load_lattice
from streamlattice.devbroker import broker as dev
from streamlattice.errors import DevBrokerError
from streamlattice.inference.models import build_model, import_path
from streamlattice.kafka.clients import KafkaSettings, make_admin, wait_for_brokers
from streamlattice.kafka.topics import ensure_topics
from streamlattice.sdk.client import LatticeProducer
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import SCHEMA_DIR

log = logging.getLogger(__name__)

LEADS = re.compile(r"leads the group")
QUIET_TAIL_S = 15.0  # load after the last fault, at least
# How long after a transaction's last write the router has aborted it if it hangs: its
# HANGING_AFTER_S (120 s) and one HEAL_EVERY_S (30 s) in router.app, and a margin (a test
# checks that it covers them).
HEALED_WITHIN_S = 165.0


def settled(lost: int, held_open: int, now: float, settle_by: float, healed_by: float) -> bool:
    """Whether to stop waiting for the last answers: nothing is lost, or the settle time is up,
    unless a hanging transaction holds partitions open that the router has not had time to
    abort (their answers are written, only hidden from read_committed readers)."""
    if lost == 0:
        return True
    return now > (max(settle_by, healed_by) if held_open else settle_by)


@dataclass
class Proc:
    """A `streamlattice` subprocess of the run (a worker or the router) and its log."""

    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    peak_rss_mb: float = 0.0
    # (seconds into the run, MB, process pid, partitions it held then)
    rss: list[tuple[float, float, int, int]] = field(default_factory=list)
    restarts: int = 0
    held: int = 0  # partitions in the process's last "assigned partitions [...]" line
    _read_to: int = field(default=0, init=False, repr=False)  # how far `partitions_held` has read its log

    def start(self, env: dict[str, str]) -> None:
        """Start (or start again) the process in its log's folder; its output goes on the end of its log."""
        self.held, self._read_to = 0, self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "streamlattice", *self.args], stdout=out, stderr=out, env=env, cwd=self.log.parent
        )

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal (nothing if it has exited)."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap (a paused process is continued first, so it can die)."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
            self.popen.wait()

    def text(self) -> str:
        """What it logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def partitions_held(self) -> int:
        """How many partitions the process holds, by the last assignment it logged (read on from
        where the last call stopped, to the last whole line)."""
        if not self.log.exists():
            return self.held
        with self.log.open("rb") as f:
            f.seek(self._read_to)
            new = f.read()
        whole = new[: new.rfind(b"\n") + 1]
        self._read_to += len(whole)
        for m in ASSIGNED.finditer(whole.decode(errors="replace")):
            self.held = len(m.group(1).split(",")) if m.group(1).strip() else 0
        return self.held


ASSIGNED = re.compile(r"assigned partitions \[([^\]]*)\]")


class Lab:
    """The lattice under test: cluster, router, workers and load, all stopped by `close`."""

    def __init__(
        self,
        workdir: Path,
        lattice: Lattice,
        tasks: list[str],
        mode: str,
        progress: Callable[[str], None],
        router: bool = True,
    ):
        self.workdir = workdir
        self.base = lattice
        self.tasks = tasks
        self.mode = mode
        self.say = progress
        self.data_dir = workdir / "kafka"
        self.bootstrap = ""
        self.lattice: Lattice | None = None
        self.with_router = router
        self.router: Proc | None = None
        self.workers: list[Proc] = []
        self.acknowledged: list[str] = []
        self.started = time.monotonic()
        self._stop_load = threading.Event()
        self._stop_sampling = threading.Event()
        self._threads: list[threading.Thread] = []
        self.load_error: BaseException | None = None

    # ---- set-up ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the cluster, make the lattice's topics and models, start the router (unless the lab
        runs without one: its caller publishes plans itself) and workers."""
        self.say("starting a three-broker cluster")
        for attempt in range(3):
            try:
                state = dev.start(self.data_dir, port=dev.free_port_block(3), nodes=3, progress=lambda _: None)
                break
            except DevBrokerError as e:  # a port taken between the check and the bind: another block
                if attempt == 2:
                    raise
                self.say(f"the cluster did not start ({str(e).splitlines()[0]}); again on other ports")
                dev.stop(self.data_dir, progress=lambda _: None)
                shutil.rmtree(self.data_dir, ignore_errors=True)
        self.bootstrap = state.bootstrap
        self.lattice = self._write_lattice()
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=self.bootstrap), self.lattice))
        for task in self.tasks:
            build_model(self.lattice.task(task))
        if self.with_router:
            self.router = Proc(
                "router", [*self._common(), "router", "--web-port", str(dev.free_port())], self._log("router")
            )
            self.router.start(self._env())
        for task in self.tasks:
            for region in self.lattice.regions:
                self.add_worker(task, region.name)
        self._wait_for_assignment()
        self._spawn(self._sample_rss)

    def _write_lattice(self) -> Lattice:
        """The base lattice in a namespace of its own, so a run never touches anyone's topics."""
        namespace = f"chaos{uuid.uuid4().hex[:8]}"
        assert self.base.source is not None
        text = Path(self.base.source).read_text()
        text, n = re.subn(r"(?m)^namespace\s*=.*$", f'namespace = "{namespace}"', text)
        if n == 0:
            text = text.replace("[lattice]", f'[lattice]\nnamespace = "{namespace}"', 1)
        # model paths are relative to the lattice file: make them absolute for the copy
        base_dir = Path(self.base.source).resolve().parent
        text = re.sub(
            r'(?m)^(\s*model\s*=\s*)"([^"]+)"',
            lambda m: f'{m.group(1)}"{(base_dir / m.group(2)).as_posix()}"',
            text,
        )
        path = self.workdir / "lattice.toml"
        path.write_text(text)
        return load_lattice(path)

    def _common(self) -> list[str]:
        assert self.lattice is not None and self.lattice.source is not None
        return ["--bootstrap", self.bootstrap, "--config", str(self.lattice.source)]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def _log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def add_worker(self, task: str, region: str) -> Proc:
        """Start one more worker of `task` in `region`."""
        node = f"{region}-{task}-{len(self.workers)}"
        args = [*self._common(), "worker", "--task", task, "--region", region, "--node-id", node]
        if self.mode == "eos":
            args.append("--exactly-once")
        proc = Proc(node, args, self._log(node))
        proc.start(self._env())
        self.workers.append(proc)
        return proc

    def _wait_for_assignment(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not all("assigned partitions [" in w.text() for w in self.workers):
            for w in self.workers:
                if not w.alive():
                    raise RuntimeError(f"worker {w.name} exited while starting:\n{w.text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not join their groups in time")
            time.sleep(0.5)

    # ---- load and sampling ---------------------------------------------------------------

    def start_load(self, rate: float) -> None:
        """Publish events of every task into every region at `rate` per second, open loop."""
        self._spawn(lambda: self._run_load(rate))

    def _run_load(self, rate: float) -> None:
        try:
            asyncio.run(self._publish(rate))
        except BaseException as e:  # reported: a run whose load generator failed is not a result
            self.load_error = e

    async def _publish(self, rate: float) -> None:
        assert self.lattice is not None
        samples = {}
        for task in self.tasks:
            spec = self.lattice.task(task)
            if spec.generator is None:
                raise RuntimeError(f"task {task!r} has no generator to make load with")
            samples[task] = import_path(spec.generator)(512, 1)
        regions = [r.name for r in self.lattice.regions]
        settings = KafkaSettings(bootstrap=self.bootstrap)
        async with LatticeProducer(lattice=self.lattice, settings=settings, pending_timeout_s=120) as producer:
            started, i = time.monotonic(), 0
            while not self._stop_load.is_set():
                task = self.tasks[i % len(self.tasks)]
                payloads, sources = samples[task]
                k = (i // len(self.tasks)) % len(sources)
                event_id, delivery = await producer.submit(task, regions[i % len(regions)], sources[k], payloads[k])
                delivery.add_done_callback(functools.partial(self._acknowledged, event_id))
                i += 1
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            await producer.flush()

    def _acknowledged(self, event_id: str, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            self.acknowledged.append(event_id)

    def stop_load(self) -> None:
        """Stop publishing once everything published is acknowledged (or refused)."""
        self._stop_load.set()

    def _sample_rss(self) -> None:
        while not self._stop_sampling.wait(1.0):
            at = time.monotonic() - self.started
            for w in self.workers:
                if w.popen is None or not w.alive():
                    continue
                try:
                    mb = rss_mb(w.popen.pid)
                except OSError:  # it exited between the check and the read
                    continue
                if mb is not None:
                    w.rss.append((at, mb, w.popen.pid, w.partitions_held()))
                    w.peak_rss_mb = max(w.peak_rss_mb, mb)

    # ---- brokers, for the nemesis -----------------------------------------------------------

    def broker_ids(self) -> list[int]:
        """The cluster's broker node ids, running or not."""
        return [s.node_id for s in dev.status(self.data_dir)]

    def stop_broker(self, node_id: int, sig: signal.Signals) -> None:
        """Send broker `node_id` `sig` and wait (up to 60 s) until it has exited."""
        node = next(s for s in dev.status(self.data_dir) if s.node_id == node_id)
        if node.pid is None or not node.running:
            return
        pid = node.pid
        os.kill(pid, sig)
        deadline = time.monotonic() + 60
        while dev.is_our_process(pid, self.data_dir.resolve()) and time.monotonic() < deadline:
            time.sleep(0.2)

    def start_brokers(self) -> None:
        """Start every broker that is down; returns once all of them answer."""
        dev.start(self.data_dir, nodes=3, progress=lambda _: None)
        asyncio.run(wait_for_brokers(KafkaSettings(bootstrap=self.bootstrap), 3, 120))

    def cut_region(self, region: str) -> None:
        """Cut `region`'s links: only a lab on emulated regions has any."""
        raise NotImplementedError("a region cut needs emulated regions (streamlattice chaos --regions-emulated)")

    def heal_region(self, region: str) -> None:
        """Give `region` its links back."""
        raise NotImplementedError("a region cut needs emulated regions (streamlattice chaos --regions-emulated)")

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop the load, the workers, the router and the cluster."""
        self._stop_load.set()
        self._stop_sampling.set()
        for t in self._threads:
            t.join(timeout=60)
        for p in [*self.workers, *([self.router] if self.router else [])]:
            p.signal(signal.SIGCONT)
            p.signal(signal.SIGTERM)
        for p in [*self.workers, *([self.router] if self.router else [])]:
            if p.popen is not None:
                try:
                    p.popen.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        with contextlib.suppress(Exception):
            dev.stop(self.data_dir, progress=lambda _: None)


class Nemesis:
    """Applies faults to a lab; each call returns when its target is back (what it did, as data)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def apply(self, fault: Fault) -> dict[str, Any]:
        """Apply one fault and undo it after its down time."""
        return getattr(self, fault.kind)(fault)

    def _worker(self, fault: Fault) -> Proc:
        live = [w for w in self.lab.workers if w.alive()]
        return live[fault.target % len(live)]

    def worker_kill(self, fault: Fault) -> dict[str, Any]:
        w = self._worker(fault)
        w.kill()
        time.sleep(fault.down_s)
        self._restart(w)
        return {"target": w.name}

    def worker_pause(self, fault: Fault) -> dict[str, Any]:
        w = self._worker(fault)
        w.signal(signal.SIGSTOP)
        time.sleep(fault.down_s)
        w.signal(signal.SIGCONT)
        return {"target": w.name}

    def router_kill(self, fault: Fault) -> dict[str, Any]:
        router = self.lab.router
        assert router is not None
        router.kill()
        time.sleep(fault.down_s)
        self._restart(router)
        return {"target": "router"}

    def leader_kill_in_rebalance(self, fault: Fault) -> dict[str, Any]:
        assert self.lab.lattice is not None
        live = [w for w in self.lab.workers if w.alive()]
        seen = {w.name: len(LEADS.findall(w.text())) for w in live}
        task = self.lab.tasks[fault.target % len(self.lab.tasks)]
        region = self.lab.lattice.regions[fault.target % len(self.lab.lattice.regions)].name
        joiner = self.lab.add_worker(task, region)  # its join makes the group rebalance
        deadline = time.monotonic() + 60
        leader = None
        while leader is None and time.monotonic() < deadline:
            leader = next((w for w in live if len(LEADS.findall(w.text())) > seen[w.name]), None)
            if leader is None and len(LEADS.findall(joiner.text())) > 0:
                leader = joiner
            time.sleep(0.02)
        if leader is None:
            return {"target": None, "note": "no rebalance was led within 60 s"}
        leader.kill()
        time.sleep(fault.down_s)
        self._restart(leader)
        if leader is not joiner:  # the group returns to its size: the joiner drains and leaves
            joiner.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert joiner.popen is not None
                joiner.popen.wait(60)
        return {"target": leader.name, "joiner": joiner.name}

    def broker_leader_kill(self, fault: Fault) -> dict[str, Any]:
        assert self.lab.lattice is not None
        node = leader_of_most(self.lab.bootstrap, [self.lab.lattice.events_topic(t) for t in self.lab.tasks])
        self.lab.stop_broker(node, signal.SIGKILL)
        time.sleep(fault.down_s)
        self.lab.start_brokers()
        return {"target": f"broker {node}"}

    def broker_rolling_restart(self, fault: Fault) -> dict[str, Any]:
        for node in self.lab.broker_ids():
            self.lab.stop_broker(node, signal.SIGTERM)
            time.sleep(fault.down_s)
            self.lab.start_brokers()
        return {"target": "every broker"}

    def region_cut(self, fault: Fault) -> dict[str, Any]:
        assert self.lab.lattice is not None
        region = self.lab.lattice.regions[fault.target % len(self.lab.lattice.regions)].name
        self.lab.cut_region(region)
        try:
            time.sleep(fault.down_s)
        finally:
            self.lab.heal_region(region)
        return {"target": region}

    def _restart(self, proc: Proc) -> None:
        proc.restarts += 1
        proc.start(self.lab._env())


def leader_of_most(bootstrap: str, topics: list[str]) -> int:
    """The broker that leads the most partitions of `topics`."""

    async def describe() -> list[Any]:
        admin = make_admin(KafkaSettings(bootstrap=bootstrap))
        await admin.start()
        try:
            return await admin.describe_topics(topics)
        finally:
            await admin.close()

    counts: dict[int, int] = {}
    for topic in asyncio.run(describe()):
        for p in topic["partitions"]:
            counts[p["leader"]] = counts.get(p["leader"], 0) + 1
    return max(counts, key=lambda n: counts[n])


def rss_growth(samples: list[tuple[float, float, int, int]], warm_up_s: float) -> dict[str, float] | None:
    """RSS of a worker's longest-lived process after its own warm-up: the first and last minute's
    means, the growth between them, and the slope (MB/min) over its last 20 minutes; beside them,
    the partitions it held in the first and last minute and at most, since a worker that takes
    partitions of a backlog keeps a fetch per partition (intake.FETCH_PARTITION_BYTES). A worker
    restarted by a fault has several processes; growth across them would measure nothing."""
    runs: dict[int, list[tuple[float, float, int]]] = {}
    for t, mb, pid, held in samples:
        runs.setdefault(pid, []).append((t, mb, held))
    longest: list[tuple[float, float, int]] = []
    for points in runs.values():
        after = [p for p in points if p[0] >= points[0][0] + warm_up_s]
        if len(after) >= 10 and (not longest or after[-1][0] - after[0][0] > longest[-1][0] - longest[0][0]):
            longest = after
    if not longest:
        return None
    t0, t1 = longest[0][0], longest[-1][0]
    first = [p for p in longest if p[0] <= t0 + 60]
    last = [p for p in longest if p[0] >= t1 - 60]
    slope = slope_per_min([(t, mb) for t, mb, _ in longest if t >= t1 - TREND_S])
    start, end = sum(p[1] for p in first) / len(first), sum(p[1] for p in last) / len(last)
    return {
        "minutes": round((t1 - t0) / 60, 1),
        "first_mb": round(start, 1),
        "last_mb": round(end, 1),
        "growth": round(end / start - 1, 4),
        "slope_mb_per_min": round(slope, 3),
        "partitions_first": max(p[2] for p in first),
        "partitions_last": max(p[2] for p in last),
        "partitions_max": max(p[2] for p in longest),
    }


def run(
    schedule: Schedule,
    lattice: Lattice,
    tasks: list[str],
    workdir: Path,
    settle_s: float = 90.0,
    lag_bound: int | None = None,
    progress: Callable[[str], None] = print,
    regions_emulated: bool = False,
) -> dict[str, Any]:
    """Run `schedule` against a fresh lab in `workdir`; the report (schedule, faults as applied,
    the checker's verdict, RSS, worker crashes).

    With `regions_emulated`, the lab is the lattice's regions on emulated links (a broker per
    region, delayed and cuttable; one task), and its schedule may cut a region."""
    check_lab(schedule, tasks, regions_emulated)
    lab: Lab
    if regions_emulated:
        from streamlattice.chaos.regions import RegionLab  # it builds on this module's Lab

        lab = RegionLab(workdir, lattice, tasks[0], progress, placement="local", router=True, mode=schedule.mode)
    else:
        lab = Lab(workdir, lattice, tasks, schedule.mode, progress)
    bound = lag_bound if lag_bound is not None else max(50, int(schedule.rate * 2))
    applied: list[dict[str, Any]] = []
    try:
        lab.start()
        nemesis = Nemesis(lab)
        progress(f"load {schedule.rate:g} events/s for {schedule.minutes:g} min, {len(schedule.faults)} faults")
        lab.start_load(schedule.rate)
        t0 = time.monotonic()
        for fault in schedule.faults:
            time.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
            progress(f"{time.monotonic() - t0:6.1f}s  {fault.kind} (down {fault.down_s:g}s)")
            started = now_us()
            detail = nemesis.apply(fault)
            applied.append({**fault.__dict__, **detail, "started_us": started, "ended_us": now_us()})
        # a fault that ran late still gets a quiet tail under load, to recover in
        time.sleep(max(QUIET_TAIL_S, t0 + schedule.minutes * 60 - time.monotonic()))
        end_us = now_us()
        lab.stop_load()
        assert lab.lattice is not None
        topics = [(lab.lattice.events_topic(t), lab.lattice.results_topic(t), lab.lattice.dlq_topic(t)) for t in tasks]
        progress(f"load stopped; waiting up to {settle_s:g}s for the last answers, then checking")
        stopped = time.monotonic()
        settle_by, healed_by = stopped + settle_s, stopped + HEALED_WITHIN_S
        said = False
        while True:
            time.sleep(5)
            verdict = check(
                lab.bootstrap,
                topics,
                SCHEMA_DIR,
                lab.acknowledged,
                [(a["started_us"], a["ended_us"]) for a in applied],
                end_us,
                bound,
            )
            now = time.monotonic()
            if settled(verdict.lost, len(verdict.held_open), now, settle_by, healed_by):
                break
            if verdict.held_open and now > settle_by and not said:
                progress(
                    f"{len(verdict.held_open)} partitions held open by a transaction: waiting up to "
                    f"{HEALED_WITHIN_S:g}s after the load for the router to abort it"
                )
                said = True
        crashed = [w.name for w in lab.workers if w.popen is not None and w.popen.poll() not in (None, 0)]
        return {
            "schedule": schedule.to_json(),
            "tasks": tasks,
            "regions_emulated": regions_emulated,
            "lag_bound": bound,
            "faults": [{**a, **r} for a, r in zip(applied, verdict.recoveries, strict=True)],
            "verdict": verdict.to_json(),
            "load_error": repr(lab.load_error) if lab.load_error else None,
            "workers": {
                w.name: {
                    "peak_rss_mb": round(w.peak_rss_mb, 1),
                    "restarts": w.restarts,
                    "rss": rss_growth(w.rss, warm_up_s=min(120.0, schedule.minutes * 20)),
                    # every 10th sample (about one per 10 s), to look at again: (s, MB, pid, partitions held)
                    "rss_samples": [(round(t, 1), round(mb, 1), pid, held) for t, mb, pid, held in w.rss[::10]],
                }
                for w in lab.workers
            },
            "crashed": crashed,
        }
    finally:
        lab.close()


def passed(report: dict[str, Any]) -> bool:
    """Whether a run kept every promise: nothing lost or crashed, and in exactly-once mode no
    duplicate and no reordering."""
    v = report["verdict"]
    ok = v["lost"] == 0 and v["acknowledged_missing"] == 0 and not report["crashed"] and not report["load_error"]
    if report["schedule"]["mode"] == "eos":
        ok = ok and v["duplicated"] == 0 and v["order_violations"] == 0
    return bool(ok)


def summary(report: dict[str, Any]) -> str:
    """A few lines a person reads first."""
    v = report["verdict"]
    s = report["schedule"]
    worst: dict[str, float] = {}
    for f in report["faults"]:
        worst[f["kind"]] = max(worst.get(f["kind"], 0.0), f["recovery_s"])
    lines = [
        f"seed {s['seed']} ({s['mode']}, {s['minutes']:g} min, {len(s['faults'])} faults): "
        f"published {v['published']}, answered {v['answered']}, dead-lettered {v['dead_lettered']}, "
        f"lost {v['lost']}, duplicated {v['duplicated']}, order violations {v['order_violations']}, "
        f"acknowledged but missing {v['acknowledged_missing']}",
        "worst recovery: " + (", ".join(f"{k} {t:.1f}s" for k, t in sorted(worst.items())) or "no faults"),
        f"peak worker RSS {max((w['peak_rss_mb'] for w in report['workers'].values()), default=0):.0f} MB"
        + (f"; crashed: {', '.join(report['crashed'])}" if report["crashed"] else ""),
    ]
    lag = v.get("lag")
    if lag:
        lines.append(
            f"waiting events: max {lag['max']}, at the end {lag['last']}, "
            f"trend {lag['slope_per_min']:+.1f}/min over the last 20 min (bound {report['lag_bound']})"
        )
    held = v.get("held_open")
    if held:
        lines.append(
            "held open by a transaction (nothing past it is readable with read_committed): "
            + ", ".join(f"{tp} from {stable} (end {end})" for tp, (stable, end) in held.items())
        )
    if report["load_error"]:
        lines.append(f"the load generator failed, so this run proves nothing: {report['load_error']}")
    not_back = [f["kind"] for f in report["faults"] if not f["recovered"]]
    if not_back:
        lines.append(f"not recovered before the next fault: {', '.join(not_back)}")
    return "\n".join(lines)


def write(report: dict[str, Any], path: Path) -> None:
    """The report as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


SOAK_MINUTES = 10.0  # a run this long counts as a soak in the summary


def markdown(reports: list[dict[str, Any]], session_timeout_s: float = 10.0) -> str:
    """A summary of many runs: a row per seed, then the issue's targets, each met or missed."""
    rows = [
        "| seed | mode | faults | published | lost | duplicated | order violations | worst recovery s | peak RSS MB |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|",
    ]
    by_kind: dict[str, list[float]] = {}
    not_recovered = 0
    for r in reports:
        v, s = r["verdict"], r["schedule"]
        for f in r["faults"]:
            by_kind.setdefault(f["kind"], []).append(f["recovery_s"])
            not_recovered += not f["recovered"]
        worst = max(r["faults"], key=lambda f: f["recovery_s"], default=None)
        worst_text = f"{worst['recovery_s']:.1f} ({worst['kind']})" if worst else "-"
        rows.append(
            f"| {s['seed']} | {s['mode']} | {', '.join(f['kind'] for f in r['faults'])} | {v['published']} | "
            f"{v['lost']} | {v['duplicated']} | {v['order_violations']} | "
            f"{worst_text} | "
            f"{max((w['peak_rss_mb'] for w in r['workers'].values()), default=0):.0f} |"
        )
    eos = [r for r in reports if r["schedule"]["mode"] == "eos"]
    lost = sum(r["verdict"]["lost"] for r in reports)
    crashed = sum(len(r["crashed"]) for r in reports)
    load_failed = sum(1 for r in reports if r.get("load_error"))
    worker_kill = by_kind.get("worker_kill", [])
    broker_kill = by_kind.get("broker_leader_kill", [])

    def judged(ok: bool, measured: bool = True) -> str:
        return "not measured (none drawn)" if not measured else "met" if ok else "**missed**"

    def spread(xs: list[float]) -> str:
        return (
            f"{len(xs)} faults, {min(xs):.1f}-{max(xs):.1f} s (median {sorted(xs)[len(xs) // 2]:.1f})"
            if xs
            else "none drawn"
        )

    targets = [
        "| target | result | |",
        "|---|---|---|",
        f"| lost = 0 on every seed, both modes | {lost} lost over {len(reports)} runs | {judged(lost == 0)} |",
        f"| no worker crashed | {crashed} crashed | {judged(crashed == 0)} |",
        f"| every run's load generator ran (a run whose load failed proves nothing) | {load_failed} failed | "
        f"{judged(load_failed == 0)} |",
        f"| exactly-once: 0 duplicates, order kept | {sum(r['verdict']['duplicated'] for r in eos)} duplicates, "
        f"{sum(r['verdict']['order_violations'] for r in eos)} order violations in {len(eos)} runs | "
        f"{judged(all(r['verdict']['duplicated'] == 0 and r['verdict']['order_violations'] == 0 for r in eos))} |",
        f"| recovery after a worker SIGKILL <= {2 * session_timeout_s:.0f} s | {spread(worker_kill)} | "
        f"{judged(all(x <= 2 * session_timeout_s for x in worker_kill), bool(worker_kill))} |",
        f"| recovery after a leader broker SIGKILL <= 30 s | {spread(broker_kill)} | "
        f"{judged(all(x <= 30 for x in broker_kill), bool(broker_kill))} |",
        f"| lag back under its bound after every fault | {not_recovered} faults not recovered before the next | "
        f"{judged(not_recovered == 0)} |",
    ]
    soaks = [r for r in reports if r["schedule"]["minutes"] >= SOAK_MINUTES]
    # processes that lived through a soak's length: a worker killed by a fault starts a new one
    lived = [w["rss"] for r in soaks for w in r["workers"].values() if w["rss"]]
    rss = [x for x in lived if x.get("minutes", 0) >= SOAK_MINUTES]
    lags = [r["verdict"].get("lag") or {} for r in soaks]
    growth = max((x["growth"] for x in rss), default=0.0)
    worst_rss: dict[str, Any] = max(rss, key=lambda x: x["growth"], default={})
    held = (
        f" (it held {worst_rss['partitions_first']} partitions in its first minute, "
        f"{worst_rss['partitions_last']} in its last, {worst_rss['partitions_max']} at most)"
        if "partitions_max" in worst_rss
        else ""
    )
    targets += [
        f"| soak: RSS growth after warm-up < 10%, worker processes that lived {SOAK_MINUTES:g}+ min | "
        + (
            f"{len(rss)} processes in {len(soaks)} runs, worst growth {growth:.1%}{held}, slopes "
            f"{min(x['slope_mb_per_min'] for x in rss):+.2f} to {max(x['slope_mb_per_min'] for x in rss):+.2f} MB/min"
            if rss
            else "no soak run"
        )
        + f" | {judged(growth < 0.10, bool(rss))} |",
        "| soak: waiting events do not grow (slope over the last 20 min) | "
        + ("; ".join(f"max {x['max']}, last {x['last']}, {x['slope_per_min']:+.1f}/min" for x in lags if x) or "none")
        + " | a slope near 0 and a last value under the lag bound |",
    ]
    kinds = ["| fault | recovery s |", "|---|---|"] + [f"| {k} | {spread(xs)} |" for k, xs in sorted(by_kind.items())]
    return "\n".join(["## Runs", "", *rows, "", "## Targets", "", *targets, "", "## Recovery by fault", "", *kinds, ""])
