"""`streamlattice broker`: the dev broker's start, stop, status and install."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streamlattice.cli.base import State, pass_state


@click.group()
def broker() -> None:
    """Run a local Apache Kafka (KRaft) for development and tests; no Docker needed."""


def _data_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    from streamlattice.devbroker.broker import default_data_dir

    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=default_data_dir,
        show_default=".streamlattice/broker",
        help="Where the broker keeps its data; one cluster per data dir.",
    )(fn)


@broker.command("start")
@click.option("--port", type=int, help="Client port of the first node [9092, or the port it had].")
@click.option(
    "--nodes", type=click.IntRange(1, 3), default=1, show_default=True, help="1, or 3 for a replicated cluster."
)
@click.option("--heap-mb", type=int, help="JVM heap per node [512 for 1 node, 384 for 3].")
@click.option(
    "--secure",
    is_flag=True,
    help="TLS and SASL/SCRAM-SHA-512 with ACLs: a user per principal (admin, producer, worker, subscriber, "
    "router), their credentials written to DATA_DIR/clients/ (first start only).",
)
@_data_dir_option
@pass_state
def broker_start(state: State, port: int | None, nodes: int, heap_mb: int | None, secure: bool, data_dir: Path) -> None:
    """Start the dev broker in the background; returns once it answers, printing its address."""
    from streamlattice.devbroker import broker as dev

    if nodes == 2:
        raise click.BadParameter("a KRaft quorum wants 1 or 3 nodes", param_hint="--nodes")
    namespace = state.lattice.namespace if secure else None
    cluster = dev.start(
        data_dir,
        port=port,
        nodes=nodes,
        heap_mb=heap_mb,
        progress=lambda m: click.echo(m, err=True),
        secure=secure,
        namespace=namespace,
    )
    click.echo(cluster.bootstrap)
    if cluster.secure:
        click.echo(
            f"secured (TLS, SCRAM-SHA-512, ACLs for namespace {namespace!r}); each client picks its user:", err=True
        )
        for principal in ("admin", "producer", "worker", "subscriber", "router"):
            click.echo(f"  export STREAMLATTICE_SECURITY_CONFIG={dev.client_file(data_dir, principal)}", err=True)


@broker.command("stop")
@_data_dir_option
def broker_stop(data_dir: Path) -> None:
    """Stop the dev broker of a data dir cleanly."""
    from streamlattice.devbroker import broker as dev

    dev.stop(data_dir, progress=click.echo)


@broker.command("status")
@_data_dir_option
def broker_status(data_dir: Path) -> None:
    """Show the dev broker's nodes; exit 1 if none is running."""
    from streamlattice.devbroker import broker as dev

    nodes = dev.status(data_dir)
    if not nodes:
        click.echo(f"no broker in {data_dir} (start one with `streamlattice broker start`)")
        sys.exit(1)
    for n in nodes:
        state = click.style("running", fg="green") if n.running else click.style("stopped", fg="red")
        click.echo(f"node {n.node_id}  localhost:{n.port}  pid {n.pid or '-'}  {state}")
    if not any(n.running for n in nodes):
        sys.exit(1)


@broker.command("install")
def broker_install() -> None:
    """Resolve Kafka's jars with Maven into the cache (start does this on first use)."""
    from streamlattice.devbroker import broker as dev

    click.echo(dev.install_jars(progress=lambda m: click.echo(m, err=True)))
