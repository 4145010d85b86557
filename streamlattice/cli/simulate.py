"""`streamlattice simulate`: a day of power and load through the placement code."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streamlattice.cli.base import State, pass_state


@click.command()
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
def simulate(
    state: State, hours: float, regions: int | None, nodes: int | None, load: float, as_json: bool, png: Path
) -> None:
    """Replay a day of power and load through the placement code: range, round-robin, capacity-only
    and the lattice, side by side (carbon per 1,000 inferences, renewable share, latency, overload, moves)."""
    from streamlattice.sim.simulate import run, table

    summary = run(state.lattice, hours, regions, nodes, load, png)
    click.echo(json.dumps(summary) if as_json else table(summary))
    if not as_json:
        click.echo(f"picture: {png}", err=True)
