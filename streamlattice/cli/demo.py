"""`streamlattice demo`: the lattice on this machine."""

from __future__ import annotations

import sys

import click

from streamlattice.cli.base import State, pass_state


@click.command()
@click.option(
    "--duration",
    type=float,
    help="Run this many seconds without the live dashboard, then print a summary [300 s live].",
)
@click.option(
    "--regions-emulated",
    is_flag=True,
    help="Instead: a broker per region with real delay between them (Toxiproxy), the router and a sensor "
    "worker per region under load; the last region is cut off for a minute and comes back, live.",
)
@pass_state
def demo(state: State, duration: float | None, regions_emulated: bool) -> None:
    """The lattice on this machine: a broker, topics, models, workers for three tasks in three
    regions, the router, load with an accelerated day of power, and a live dashboard.

    Uses --bootstrap if given, else starts a dev broker in .streamlattice/demo-broker and stops
    it at the end. Ctrl-C stops everything it started. With --duration it runs that long and
    ends with a summary; the exit code is 0 only if results arrived in every region.

    With --regions-emulated (see `streamlattice regions --help`) the exit code is 0 only if the
    checker finds nothing lost across the cut.
    """
    if regions_emulated:
        _regions_demo(state, duration)
        return
    from streamlattice.operate.demo import run_demo

    live = duration is None and sys.stdout.isatty()
    ok = run_demo(state.lattice, duration or (300.0 if live else 90.0), state.explicit_bootstrap, live)
    sys.exit(0 if ok else 1)


def _regions_demo(state: State, duration: float | None) -> None:
    import tempfile
    from pathlib import Path

    from streamlattice.chaos.regions import cut_run, cut_summary
    from streamlattice.devbroker import broker as dev

    region = state.lattice.regions[-1].name
    total = duration or 180.0  # a sixth before the cut, a third cut, half after
    workdir = Path(tempfile.mkdtemp(prefix="streamlattice-regions-", dir=dev.default_data_dir().parent))
    click.echo(f"emulated regions in {workdir}; {region} is cut after {total / 6:.0f}s for {total / 3:.0f}s")
    report = cut_run(
        state.lattice,
        workdir,
        region,
        before_s=total / 6,
        cut_s=total / 3,
        after_s=total / 2,
        progress=click.echo,
        tick_s=5.0,
    )
    click.echo(cut_summary(report))
    sys.exit(0 if report["verdict"]["lost"] == 0 and not report["crashed"] else 1)
