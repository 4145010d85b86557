"""`streamlattice models build`: the example models."""

from __future__ import annotations

import click

from streamlattice.cli.base import State, pass_state


@click.group()
def models() -> None:
    """Build the example models."""


@models.command("build")
@click.option("--task", "tasks", multiple=True, help="Only these tasks [all with a builder].")
@click.option("--force", is_flag=True, help="Rebuild even if sources and model are unchanged.")
@pass_state
def models_build(state: State, tasks: tuple[str, ...], force: bool) -> None:
    """Build every task's model from the code and data in the repo; skip those up to date."""
    from streamlattice.inference.models import build_model

    for name in tasks or tuple(state.lattice.tasks):
        task = state.lattice.task(name)
        if task.builder is None:
            click.echo(f"{name:<10} user model {task.model}")
            continue
        r = build_model(task, force=force, progress=lambda m: click.echo(m, err=True))
        click.echo(f"{name:<10} {r.action:<10} {r.path} version {r.version} ({r.seconds:.1f}s)")
