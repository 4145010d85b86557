"""`streamlattice topics init`: the lattice's topics."""

from __future__ import annotations

import click

from streamlattice.cli.base import State, pass_state, run_async


@click.group()
def topics() -> None:
    """Manage the lattice's topics."""


@topics.command("init")
@pass_state
def topics_init(state: State) -> None:
    """Create every topic lattice.toml implies; safe to run again."""
    from streamlattice.kafka.topics import ensure_topics

    reports = run_async(ensure_topics(state.settings(), state.lattice))
    for r in reports:
        mark = click.style("created", fg="green") if r.action == "created" else "found  "
        click.echo(f"{mark} {r.name} ({r.partitions} partitions)")
