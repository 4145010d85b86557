"""`streamlattice worker`: serve a task in a region."""

from __future__ import annotations

import asyncio
import dataclasses

import click

from streamlattice.cli.base import State, catch_early_stop, pass_state, run_async, split_list, stop_on_signals


@click.command()
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
@click.option(
    "--cpus",
    type=click.FloatRange(min=0, min_open=True),
    help="CPUs this worker is given: its share of the node's idle power [lattice.toml's [nodes] cpus, 1].",
)
@click.option(
    "--idle-watts",
    type=click.FloatRange(min=0),
    help="What one of the node's CPUs draws idle, W [lattice.toml's [nodes] idle_watts, 0.74].",
)
@click.option(
    "--busy-watts",
    type=click.FloatRange(min=0),
    help="What one of the node's CPUs draws fully busy, W [lattice.toml's [nodes] busy_watts, 3.5].",
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
    cpus: float | None,
    idle_watts: float | None,
    busy_watts: float | None,
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

    Each result carries an estimate of its energy and carbon: the whole process's CPU time
    through the node's power model (--cpus, --idle-watts, --busy-watts), at the node's grid
    intensity (docs/energy.md states the method).
    """
    catch_early_stop()  # a SIGTERM while the imports and the model load is a stop, not a crash
    from streamlattice.metrics import serve as serve_metrics
    from streamlattice.power.sources import parse_power
    from streamlattice.tracing import configure_from_env as configure_tracing
    from streamlattice.worker.runtime import Worker

    chosen = tuple(split_list(providers)) or None
    node_power = state.lattice.power_model
    try:
        node_power = dataclasses.replace(
            node_power,
            cpus=node_power.cpus if cpus is None else cpus,
            idle_watts=node_power.idle_watts if idle_watts is None else idle_watts,
            busy_watts=node_power.busy_watts if busy_watts is None else busy_watts,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None

    spec = state.lattice.task(task)
    source = parse_power(power, state.lattice.region(region).tz_hours) if power else None
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

    configure_tracing(f"streamlattice-worker-{task}")  # OTLP, if OTEL_EXPORTER_OTLP_ENDPOINT is set

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
            power_model=node_power,
        )
        if metrics_port:
            serve_metrics(w.metrics.registry, metrics_port)
        stop = asyncio.Event()
        stop_on_signals(stop)
        if stop.is_set():
            click.echo(f"worker {w.node_id}: stopped before it started serving", err=True)
            return
        await w.run(stop)

    run_async(serve())
