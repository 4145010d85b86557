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
@pass_state
def demo(state: State, duration: float | None) -> None:
    """The lattice on this machine: a broker, topics, models, workers for three tasks in three
    regions, the router, load with an accelerated day of power, and a live dashboard.

    Uses --bootstrap if given, else starts a dev broker in .streamlattice/demo-broker and stops
    it at the end. Ctrl-C stops everything it started. With --duration it runs that long and
    ends with a summary; the exit code is 0 only if results arrived in every region.
    """
    from streamlattice.operate.demo import run_demo

    live = duration is None and sys.stdout.isatty()
    ok = run_demo(state.lattice, duration or (300.0 if live else 90.0), state.explicit_bootstrap, live)
    sys.exit(0 if ok else 1)
