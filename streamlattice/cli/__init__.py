"""The `streamlattice` command: a base that owns options, state and errors, and one module per verb."""

from __future__ import annotations

from streamlattice.cli import (
    bench,
    broker,
    chaos,
    demo,
    events,
    gateway,
    models,
    regions,
    router,
    scale,
    simulate,
    status,
    topics,
    worker,
)
from streamlattice.cli.base import cli

for command in (
    broker.broker,
    topics.topics,
    models.models,
    worker.worker,
    router.router,
    status.status,
    scale.scale,
    simulate.simulate,
    regions.regions,
    bench.bench,
    events.produce,
    events.results,
    demo.demo,
    chaos.chaos,
    gateway.gateway,
):
    cli.add_command(command)


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="streamlattice")


__all__ = ["cli", "main"]
