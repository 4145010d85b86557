"""`streamlattice status`: where work runs and how it is doing."""

from __future__ import annotations

import json
import time

import click

from streamlattice.cli.base import State, pass_state, run_async


@click.command()
@click.option("--watch", "-w", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between redraws.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@pass_state
def status(state: State, watch: bool, interval: float, as_json: bool) -> None:
    """Where work runs and how it is doing: per task, each node's partitions, lag, rates and power."""
    from streamlattice.operate.status import collect_status, render

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
