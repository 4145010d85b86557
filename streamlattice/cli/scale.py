"""`streamlattice scale`: how many workers of a task run in a region on this machine."""

from __future__ import annotations

import time
from typing import Any

import click

from streamlattice.cli.base import State, pass_state, run_async
from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings


@click.command()
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
    from streamlattice.operate.autoscale import Autoscaler, Look
    from streamlattice.operate.supervisor import Supervisor

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
        running = dict.fromkeys(regions, 0)
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
    from streamlattice.kafka.compacted import read_compacted
    from streamlattice.wire.records import PublishedPlan

    value = (await read_compacted(settings, lattice.placement_topic)).get(task.encode())
    return PublishedPlan.decode(value) if value else None
