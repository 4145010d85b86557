"""The `streamlattice` command: a thin shell over the library; every verb has --help."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamlattice.bench import CONTENDERS
from streamlattice.config import REPO_ROOT, Lattice, bootstrap_from_env, load_lattice
from streamlattice.errors import BrokerUnavailable, StreamLatticeError
from streamlattice.kafka import KafkaSettings
from streamlattice.topics import require_topics

T = TypeVar("T")


class State:
    """What the group options resolve to, shared with every verb."""

    def __init__(self, bootstrap: str | None, config: str | None) -> None:
        self.bootstrap = bootstrap_from_env(bootstrap)
        self.config = config
        self._lattice: Lattice | None = None

    @property
    def lattice(self) -> Lattice:
        """The lattice layout, read on first use."""
        if self._lattice is None:
            self._lattice = load_lattice(self.config)
        return self._lattice

    def settings(self, client_id: str = "streamlattice-cli") -> KafkaSettings:
        """Kafka settings for a client of this command."""
        return KafkaSettings(bootstrap=self.bootstrap, client_id=client_id)


pass_state = click.make_pass_decorator(State)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning our errors into one line and an exit code, never a traceback."""
    try:
        return asyncio.run(coro)
    except StreamLatticeError as e:
        raise click.ClickException(str(e)) from None
    except KafkaConnectionError as e:
        raise click.ClickException(str(BrokerUnavailable(bootstrap_from_env(), str(e)))) from None
    except KafkaError as e:
        raise click.ClickException(f"Kafka error: {e}") from None


def errors_as_messages(fn: Callable[..., T]) -> Callable[..., T]:
    """Report StreamLatticeError from a synchronous verb as one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except StreamLatticeError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT (Ctrl-C): the graceful path of every long-running verb."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--bootstrap", envvar="STREAMLATTICE_BOOTSTRAP", help="Kafka bootstrap address [localhost:9092].")
@click.option("--config", envvar="STREAMLATTICE_CONFIG", help="lattice.toml to use [./lattice.toml, else the repo's].")
@click.option(
    "--security-config",
    envvar="STREAMLATTICE_SECURITY_CONFIG",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML [security] file of this client: TLS and SASL user (`broker start --secure` writes them) [none].",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="streamlattice")
@click.pass_context
def cli(
    ctx: click.Context, bootstrap: str | None, config: str | None, security_config: str | None, log_level: str
) -> None:
    """streamlattice: power-aware ONNX inference on Apache Kafka.

    Start a dev broker, create the topics, run workers, publish load, read results:

    \b
      streamlattice broker start
      streamlattice topics init
      streamlattice worker --task sensor --region eu-west &
      streamlattice produce --task sensor --rate 200 --count 2000
      streamlattice results --task sensor --follow
    """
    if security_config:  # through the environment, so workers `scale` starts inherit it too
        os.environ["STREAMLATTICE_SECURITY_CONFIG"] = str(Path(security_config).resolve())
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(log_level.upper())))
    ctx.obj = State(bootstrap, config)


# ---- broker ---------------------------------------------------------------------------------


@cli.group()
def broker() -> None:
    """Run a local Apache Kafka (KRaft) for development and tests; no Docker needed."""


def _data_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    from streamlattice.ops.broker import default_data_dir

    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=default_data_dir,
        show_default=".streamlattice/broker",
        help="Where the broker keeps its data; one cluster per data dir.",
    )(fn)


@broker.command("start")
@click.option("--port", type=int, help="Client port of the first node [9092, or the port it had].")
@click.option(
    "--nodes", type=click.IntRange(1, 3), default=1, show_default=True, help="1, or 3 for a replicated cluster."
)
@click.option("--heap-mb", type=int, help="JVM heap per node [512 for 1 node, 384 for 3].")
@click.option(
    "--secure",
    is_flag=True,
    help="TLS and SASL/SCRAM-SHA-512 with ACLs: a user per principal (admin, producer, worker, subscriber, "
    "router), their credentials written to DATA_DIR/clients/ (first start only).",
)
@_data_dir_option
@pass_state
@errors_as_messages
def broker_start(state: State, port: int | None, nodes: int, heap_mb: int | None, secure: bool, data_dir: Path) -> None:
    """Start the dev broker in the background; returns once it answers, printing its address."""
    from streamlattice.ops import broker as dev

    if nodes == 2:
        raise click.BadParameter("a KRaft quorum wants 1 or 3 nodes", param_hint="--nodes")
    namespace = state.lattice.namespace if secure else None
    cluster = dev.start(
        data_dir,
        port=port,
        nodes=nodes,
        heap_mb=heap_mb,
        progress=lambda m: click.echo(m, err=True),
        secure=secure,
        namespace=namespace,
    )
    click.echo(cluster.bootstrap)
    if cluster.secure:
        click.echo(
            f"secured (TLS, SCRAM-SHA-512, ACLs for namespace {namespace!r}); each client picks its user:", err=True
        )
        for principal in ("admin", "producer", "worker", "subscriber", "router"):
            click.echo(f"  export STREAMLATTICE_SECURITY_CONFIG={dev.client_file(data_dir, principal)}", err=True)


@broker.command("stop")
@_data_dir_option
@errors_as_messages
def broker_stop(data_dir: Path) -> None:
    """Stop the dev broker of a data dir cleanly."""
    from streamlattice.ops import broker as dev

    dev.stop(data_dir, progress=click.echo)


@broker.command("status")
@_data_dir_option
@errors_as_messages
def broker_status(data_dir: Path) -> None:
    """Show the dev broker's nodes; exit 1 if none is running."""
    from streamlattice.ops import broker as dev

    nodes = dev.status(data_dir)
    if not nodes:
        click.echo(f"no broker in {data_dir} (start one with `streamlattice broker start`)")
        sys.exit(1)
    for n in nodes:
        state = click.style("running", fg="green") if n.running else click.style("stopped", fg="red")
        click.echo(f"node {n.node_id}  localhost:{n.port}  pid {n.pid or '-'}  {state}")
    if not any(n.running for n in nodes):
        sys.exit(1)


@broker.command("install")
@errors_as_messages
def broker_install() -> None:
    """Resolve Kafka's jars with Maven into the cache (start does this on first use)."""
    from streamlattice.ops import broker as dev

    click.echo(dev.install_jars(progress=lambda m: click.echo(m, err=True)))


# ---- topics ---------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Manage the lattice's topics."""


@topics.command("init")
@pass_state
def topics_init(state: State) -> None:
    """Create every topic lattice.toml implies; safe to run again."""
    from streamlattice.topics import ensure_topics

    reports = run_async(ensure_topics(state.settings(), state.lattice))
    for r in reports:
        mark = click.style("created", fg="green") if r.action == "created" else "found  "
        click.echo(f"{mark} {r.name} ({r.partitions} partitions)")


# ---- models ---------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """Build the example models."""


@models.command("build")
@click.option("--task", "tasks", multiple=True, help="Only these tasks [all with a builder].")
@click.option("--force", is_flag=True, help="Rebuild even if sources and model are unchanged.")
@pass_state
@errors_as_messages
def models_build(state: State, tasks: tuple[str, ...], force: bool) -> None:
    """Build every task's model from the code and data in the repo; skip those up to date."""
    from streamlattice.models import build_model

    for name in tasks or tuple(state.lattice.tasks):
        task = state.lattice.task(name)
        if task.builder is None:
            click.echo(f"{name:<10} user model {task.model}")
            continue
        r = build_model(task, force=force, progress=lambda m: click.echo(m, err=True))
        click.echo(f"{name:<10} {r.action:<10} {r.path} version {r.version} ({r.seconds:.1f}s)")


# ---- worker ---------------------------------------------------------------------------------


@cli.command()
@click.option("--task", required=True, help="Task to serve, as named in lattice.toml.")
@click.option("--region", required=True, help="Region this node runs in.")
@click.option("--node-id", help="Stable id of this node [region-host-pid].")
@click.option("--threads", type=int, default=1, show_default=True, help="ONNX Runtime intra-op threads.")
@click.option("--providers", help="Execution providers in order of preference, e.g. cuda,cpu [the task's, else cpu].")
@click.option(
    "--power",
    help="Power source: solar, wind, grid, static:renewable=R,carbon=C, csv:PATH or an "
    "http:// JSON feed [the region's in lattice.toml].",
)
@click.option(
    "--time-factor",
    type=click.FloatRange(min=0, min_open=True),
    help="Run simulated power this many times faster than the clock [lattice.toml's].",
)
@click.option("--max-batch", type=click.IntRange(min=1), help="Largest micro-batch [the task's].")
@click.option(
    "--metrics-port",
    type=int,
    envvar="STREAMLATTICE_METRICS_PORT",
    help="Serve Prometheus metrics at http://0.0.0.0:PORT/metrics [off].",
)
@click.option("--max-wait-ms", type=click.FloatRange(min=0), help="Longest an event waits for its batch [the task's].")
@click.option(
    "--exactly-once",
    is_flag=True,
    envvar="STREAMLATTICE_EXACTLY_ONCE",
    help="Commit each batch's results with its offsets in Kafka transactions: no duplicates for "
    "read_committed subscribers [at-least-once].",
)
@pass_state
def worker(
    state: State,
    task: str,
    region: str,
    node_id: str | None,
    threads: int,
    providers: str | None,
    power: str | None,
    time_factor: float | None,
    max_batch: int | None,
    max_wait_ms: float | None,
    metrics_port: int | None,
    exactly_once: bool,
) -> None:
    """Serve a task in a region: consume events, infer micro-batches, publish results.

    At-least-once by default: offsets are committed after results are acknowledged, so a
    crash may repeat a batch's results but never loses one. --exactly-once writes results and
    offsets in one transaction. SIGTERM (or Ctrl-C) drains in-flight batches, commits and
    leaves the group.
    """
    from streamlattice.metrics import serve as serve_metrics
    from streamlattice.power import parse_power
    from streamlattice.worker.runtime import Worker

    chosen = tuple(p.strip() for p in providers.split(",") if p.strip()) if providers else None

    try:
        spec = state.lattice.task(task)
        source = parse_power(power, state.lattice.region(region).tz_hours) if power else None
    except StreamLatticeError as e:
        raise click.ClickException(str(e)) from None
    lattice = state.lattice
    if time_factor is not None:
        lattice = dataclasses.replace(lattice, settings=dataclasses.replace(lattice.settings, time_factor=time_factor))
    lattice = lattice.with_task(
        dataclasses.replace(
            spec,
            max_batch=max_batch or spec.max_batch,
            max_wait_ms=spec.max_wait_ms if max_wait_ms is None else max_wait_ms,
        )
    )

    async def serve() -> None:
        w = Worker(
            lattice,
            task,
            region,
            node_id,
            state.settings(),
            threads=threads,
            providers=chosen,
            power=source,
            exactly_once=exactly_once,
        )
        if metrics_port:
            serve_metrics(w.metrics.registry, metrics_port)
        stop = asyncio.Event()
        stop_on_signals(stop)
        await w.run(stop)

    run_async(serve())


# ---- router ---------------------------------------------------------------------------------


@cli.command()
@click.option("--web-port", type=int, default=6066, show_default=True, help="Port of the JSON view.")
@click.option("--web-host", default="127.0.0.1", show_default=True, help="Address the JSON view listens on.")
@click.option(
    "--metrics-port",
    type=int,
    envvar="STREAMLATTICE_METRICS_PORT",
    help="Serve Prometheus metrics at http://0.0.0.0:PORT/metrics [off].",
)
@click.pass_context
def router(ctx: click.Context, web_port: int, web_host: str, metrics_port: int | None) -> None:
    """Run the routing stream: heartbeats in, placement plans out, its view at http://HOST:PORT/.

    Reads every node's heartbeat, recomputes each task's plan every plan_interval_s and
    publishes changed plans to the placement topic. SIGTERM or Ctrl-C stops it; workers keep
    their last assignment meanwhile.
    """
    from streamlattice.router import run_router

    state: State = ctx.obj
    try:
        lattice = state.lattice
        run_async(require_topics(state.settings(), [lattice.heartbeats_topic, lattice.placement_topic]))
    except StreamLatticeError as e:
        raise click.ClickException(str(e)) from None
    level = ctx.find_root().params.get("log_level") or "INFO"
    run_router(lattice, state.settings("streamlattice-router"), web_port, web_host, str(level), metrics_port)


# ---- status and scale -------------------------------------------------------------------------


@cli.command()
@click.option("--watch", "-w", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between redraws.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@pass_state
def status(state: State, watch: bool, interval: float, as_json: bool) -> None:
    """Where work runs and how it is doing: per task, each node's partitions, lag, rates and power."""
    import json

    from streamlattice.ops.status import collect_status, render

    while True:
        snapshot = run_async(collect_status(state.lattice, state.settings("streamlattice-status")))
        if as_json:
            click.echo(json.dumps(snapshot))
        else:
            if watch:
                click.clear()
            click.echo(render(snapshot))
        if not watch:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


@cli.command()
@click.option("--task", required=True, help="Task of the workers.")
@click.option("--region", help="Region of the workers [with --auto: every region].")
@click.option("--replicas", type=click.IntRange(min=0), help="How many workers should run.")
@click.option("--auto", "auto", is_flag=True, help="Follow the router's recommended replicas instead.")
@click.option("--min", "low", type=click.IntRange(min=0), default=1, show_default=True, help="--auto: fewest.")
@click.option("--max", "high", type=click.IntRange(min=0), default=4, show_default=True, help="--auto: most.")
@click.option("--interval", type=float, default=10.0, show_default=True, help="--auto: seconds between looks.")
@click.option(
    "--cooldown",
    type=float,
    default=60.0,
    show_default=True,
    help="--auto: scale in only after the recommendation stayed lower this long, and this long after a change.",
)
@click.option("--once", is_flag=True, help="--auto: look once and exit.")
@click.option("--power", help="Power source for new workers (see `worker --help`).")
@pass_state
@errors_as_messages
def scale(
    state: State,
    task: str,
    region: str | None,
    replicas: int | None,
    auto: bool,
    low: int,
    high: int,
    interval: float,
    cooldown: float,
    once: bool,
    power: str | None,
) -> None:
    """Run exactly N worker processes for a task in a region on this machine, or follow the
    router's recommendation (--auto) within --min and --max: out at once, in only after
    --cooldown and never without a fresh plan (the router down is no reason to shrink).

    New workers join the group (a rebalance hands them partitions); surplus ones get SIGTERM,
    drain, commit and exit, and this waits for them. The supervisor's state outlives this
    command, so running it again with the same N changes nothing.
    """
    from streamlattice.ops.autoscale import Autoscaler, Look
    from streamlattice.ops.supervisor import Supervisor

    sup = Supervisor(state.lattice, state.bootstrap)
    extra: tuple[str, ...] = ("--power", power) if power else ()

    def apply(reg: str, n: int) -> None:
        started, stopped = sup.scale(task, reg, n, extra)
        for w in started:
            click.echo(f"started {w.node_id} (pid {w.pid}, log {w.log})")
        for w in stopped:
            click.echo(f"drained and stopped {w.node_id}")
        running = [w.node_id for w in sup.workers() if (w.task, w.region) == (task, reg)]
        click.echo(
            f"{task} in {reg}: {len(running)} worker(s) running" + (f": {', '.join(running)}" if running else "")
        )

    if not auto:
        if region is None or replicas is None:
            raise click.UsageError("give --region and --replicas, or --auto")
        apply(region, replicas)
        return
    if low > high:
        raise click.BadParameter(f"--min {low} is above --max {high}", param_hint="--min")
    regions = [region] if region else [r.name for r in state.lattice.regions]
    for r in regions:
        state.lattice.region(r)
    scaler = Autoscaler(tuple(regions), low, high, state.lattice.settings.plan_stale_s, cooldown)
    while True:
        plan = run_async(newest_plan(state.lattice, state.settings("streamlattice-scale"), task))
        look = Look(
            time.monotonic(),
            {r.region: r.replicas for r in plan.recommendations} if plan else None,
            plan.age_s() if plan else 0.0,
        )
        if plan is None or look.plan_age_s > scaler.stale_s:
            click.echo("no fresh plan from the router (is `streamlattice router` running?); not scaling in", err=True)
        running = {reg: 0 for reg in regions}
        for w in sup.workers():
            if w.task == task and w.region in running:
                running[w.region] += 1
        for reg, n in scaler.decide(look, running).items():
            if n != running[reg]:
                apply(reg, n)
        if once:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


async def newest_plan(lattice: Lattice, settings: KafkaSettings, task: str) -> Any:
    """The router's newest plan for `task`, or None."""
    from streamlattice.ops.status import read_compacted
    from streamlattice.plans import PublishedPlan

    value = (await read_compacted(settings, lattice.placement_topic)).get(task.encode())
    return PublishedPlan.decode(value) if value else None


# ---- simulate -------------------------------------------------------------------------------


@cli.command()
@click.option("--hours", type=click.FloatRange(min=1), default=24.0, show_default=True, help="Simulated hours.")
@click.option("--regions", type=click.IntRange(min=1), help="A synthetic lattice of N regions [lattice.toml's].")
@click.option("--nodes", type=click.IntRange(min=1), help="Nodes in all [3 per region].")
@click.option(
    "--load",
    type=click.FloatRange(0.01, 2.0),
    default=0.3,
    show_default=True,
    help="The day's mean load as a share of the lattice's capacity.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option(
    "--png",
    type=click.Path(path_type=Path),
    default=Path("simulation.png"),
    show_default=True,
    help="Where to draw the day.",
)
@pass_state
@errors_as_messages
def simulate(
    state: State, hours: float, regions: int | None, nodes: int | None, load: float, as_json: bool, png: Path
) -> None:
    """Replay a day of power and load through the placement code: range, round-robin, capacity-only
    and the lattice, side by side (carbon per 1,000 inferences, renewable share, latency, overload, moves)."""
    import json

    from streamlattice.ops.simulate import run, table

    summary = run(state.lattice, hours, regions, nodes, load, png)
    click.echo(json.dumps(summary) if as_json else table(summary))
    if not as_json:
        click.echo(f"picture: {png}", err=True)


# ---- bench ----------------------------------------------------------------------------------


@cli.command()
@click.option("--quick", is_flag=True, help="One repeat, shorter runs, latency at 50% load only (a few minutes).")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=REPO_ROOT / "bench" / "results.json",
    show_default="bench/results.json",
    help="The JSON results; RESULTS.md and results.png are written beside it.",
)
@click.option("--tasks", default="sensor,vision", show_default=True, help="Comma-separated tasks to measure.")
@click.option(
    "--contenders",
    default=",".join(CONTENDERS),
    show_default=True,
    help="Comma-separated contenders to measure.",
)
@click.option("--repeats", type=click.IntRange(min=1), help="Repeats per contender [3; --quick: 1].")
@click.option("--use-broker", metavar="HOST:PORT", help="Measure on this broker instead of starting one for the run.")
@click.option("--no-pin", is_flag=True, help="Do not pin the contender to a core of its own.")
@click.option(
    "--profile",
    type=click.Path(file_okay=False, path_type=Path),
    help="Record each contender's throughput window with py-spy into this folder (speedscope JSON).",
)
@pass_state
@errors_as_messages
def bench(
    state: State,
    quick: bool,
    output: Path,
    tasks: str,
    contenders: str,
    repeats: int | None,
    use_broker: str | None,
    no_pin: bool,
    profile: Path | None,
) -> None:
    """Measure streamlattice next to ONNX Runtime alone, aiokafka alone, a naive aiokafka loop, a
    faust agent and a Quix Streams app on the same events: throughput, CPU per 1,000 events, peak
    RSS and p50/p99 latency at 25/50/75% of each one's maximum. Needs the bench extra
    (`pip install -e '.[bench]'`; `./dev bench` installs it)."""
    import json

    from streamlattice.bench import harness, report

    names = [c.strip() for c in contenders.split(",") if c.strip()]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        raise click.BadParameter(
            f"unknown {sorted(unknown)}; choose from {', '.join(CONTENDERS)}", param_hint="--contenders"
        )
    plan = harness.Plan.quick() if quick else harness.Plan.full()
    if repeats:
        plan = dataclasses.replace(plan, repeats=repeats)
    task_names = [t.strip() for t in tasks.split(",") if t.strip()]
    for t in task_names:
        state.lattice.task(t)
    results = harness.run(plan, task_names, names, use_broker, not no_pin, state.lattice.source, profile=profile)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    (output.parent / "RESULTS.md").write_text(report.markdown(results))
    report.draw(results, output.parent / "results.png")
    click.echo(report.markdown(results))
    click.echo(f"wrote {output}, RESULTS.md and results.png beside it", err=True)


# ---- produce --------------------------------------------------------------------------------


def _regions(state: State, regions: str | None) -> list[str]:
    names = [r.strip() for r in regions.split(",")] if regions else [r.name for r in state.lattice.regions]
    for r in names:
        state.lattice.region(r)
    return names


@cli.command()
@click.option("--task", required=True, help="Task whose events to publish.")
@click.option("--rate", type=float, help="Events per second [as fast as the broker takes them].")
@click.option("--count", type=int, help="Stop after this many events.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--regions", help="Comma-separated regions to spread events over [all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample generator.")
@pass_state
def produce(
    state: State,
    task: str,
    rate: float | None,
    count: int | None,
    duration: float | None,
    regions: str | None,
    seed: int,
) -> None:
    """Publish generated events for a task (a load generator with a progress bar)."""
    from streamlattice.client import LatticeProducer
    from streamlattice.ops.loadgen import run_load

    try:
        names = _regions(state, regions)
        state.lattice.task(task)
    except StreamLatticeError as e:
        raise click.ClickException(str(e)) from None

    async def go() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with LatticeProducer(lattice=state.lattice, settings=state.settings("streamlattice-produce")) as p:
            if count is not None:
                with click.progressbar(length=count, label=f"publishing {task}", file=sys.stderr) as bar:
                    report = await run_load(p, task, names, rate, count, duration, seed, stop, bar.update)
            else:
                report = await run_load(p, task, names, rate, count, duration, seed, stop)
        per = ", ".join(f"{r}={n}" for r, n in report.by_region.items())
        click.echo(
            f"published {report.sent} events in {report.seconds:.1f}s "
            f"({report.sent / max(report.seconds, 1e-9):.0f}/s): {per}"
        )

    run_async(go())


# ---- results --------------------------------------------------------------------------------


def format_result(r: Any) -> str:
    """One line of a result for people."""
    score = "-" if r.score is None else f"{r.score:8.3f}"
    label = r.label or "-"
    if label == "anomaly":
        label = click.style(label, fg="red", bold=True)
    return (
        f"{r.region:<10} p{r.partition:<3} {r.source_id:<14} {label:<8} score {score}  "
        f"{r.latency_ms:7.1f} ms  {r.node_id}  {r.event_id[:8]}"
    )


@cli.command()
@click.option("--task", required=True, help="Task whose results to read.")
@click.option("--region", "regions", multiple=True, help="Only this region's block (repeatable) [all].")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new results as they arrive.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained result [--follow starts now].")
@click.option("--limit", type=int, help="Stop after this many results.")
@pass_state
def results(
    state: State, task: str, regions: tuple[str, ...], follow: bool, from_beginning: bool, limit: int | None
) -> None:
    """Print a task's results: those retained (default) or, with --follow, new ones as they arrive."""
    from streamlattice.client import ResultSubscriber

    async def go() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        sub = ResultSubscriber(
            task,
            regions or None,
            lattice=state.lattice,
            settings=state.settings("streamlattice-results"),
            from_beginning=from_beginning or not follow,
        )
        shown = 0
        async with sub:
            async for batch in sub.batches(timeout_ms=1000):
                for r in batch:
                    click.echo(format_result(r))
                    shown += 1
                    if limit is not None and shown >= limit:
                        return
                if stop.is_set() or (not batch and not follow):
                    break
        if not follow:
            click.echo(f"{shown} result(s)", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        run_async(go())


# ---- demo -----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--duration",
    type=float,
    help="Run this many seconds without the live dashboard, then print a summary [300 s live].",
)
@pass_state
def demo(state: State, duration: float | None) -> None:
    """The lattice on this machine: a broker, topics, models, workers for three tasks in three
    regions, the router, load with an accelerated day of power, and a live dashboard.

    Uses --bootstrap if given, else starts a dev broker in .streamlattice/demo-broker and stops
    it at the end. Ctrl-C stops everything it started. With --duration it runs that long and
    ends with a summary; the exit code is 0 only if results arrived in every region.
    """
    from streamlattice.ops.demo import run_demo

    live = duration is None and sys.stdout.isatty()
    try:
        ok = run_demo(state.lattice, duration or (300.0 if live else 90.0), _explicit_bootstrap(), live)
    except StreamLatticeError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(0 if ok else 1)


def _explicit_bootstrap() -> str | None:
    ctx = click.get_current_context()
    root = ctx.find_root()
    value = root.params.get("bootstrap")
    return str(value) if value else None


from streamlattice.chaos.command import chaos  # noqa: E402  (a verb of its own module)

cli.add_command(chaos)


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="streamlattice")
