"""`streamlattice router`: the routing stream."""

from __future__ import annotations

import click

from streamlattice.cli.base import State, run_async
from streamlattice.kafka.topics import require_topics


@click.command()
@click.option("--web-port", type=int, default=6066, show_default=True, help="Port of the JSON view.")
@click.option("--web-host", default="127.0.0.1", show_default=True, help="Address the JSON view listens on.")
@click.option(
    "--metrics-port",
    type=int,
    envvar="STREAMLATTICE_METRICS_PORT",
    help="Serve Prometheus metrics at http://0.0.0.0:PORT/metrics [off].",
)
@click.pass_context
def router(ctx: click.Context, web_port: int, web_host: str, metrics_port: int | None) -> None:
    """Run the routing stream: heartbeats in, placement plans out, its view at http://HOST:PORT/.

    Reads every node's heartbeat, recomputes each task's plan every plan_interval_s and
    publishes changed plans to the placement topic. SIGTERM or Ctrl-C stops it; workers keep
    their last assignment meanwhile.
    """
    from streamlattice.router.app import run_router

    state: State = ctx.obj
    lattice = state.lattice
    run_async(require_topics(state.settings(), [lattice.heartbeats_topic, lattice.placement_topic]))
    level = ctx.find_root().params.get("log_level") or "INFO"
    run_router(lattice, state.settings("streamlattice-router"), web_port, web_host, str(level), metrics_port)
