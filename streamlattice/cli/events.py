"""`streamlattice produce` and `results`: publish generated events, print results."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import click

from streamlattice.cli.base import State, pass_state, run_async, split_list, stop_on_signals


def _regions(state: State, regions: str | None) -> list[str]:
    names = split_list(regions) or [r.name for r in state.lattice.regions]
    for r in names:
        state.lattice.region(r)
    return names


@click.command()
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
    from streamlattice.sdk.client import LatticeProducer
    from streamlattice.sdk.loadgen import run_load

    names = _regions(state, regions)
    state.lattice.task(task)

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


@click.command()
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
    from streamlattice.sdk.client import ResultSubscriber

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
