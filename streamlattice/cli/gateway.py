"""`streamlattice gateway`: the Open Inference Protocol over HTTP, in front of the lattice."""

from __future__ import annotations

import click

from streamlattice.cli.base import State, pass_state


@click.command()
@click.option("--port", type=int, default=8000, show_default=True, help="Port to serve HTTP on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--region", required=True, help="Region the gateway publishes requests in (a request may name another).")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for a result.")
@pass_state
def gateway(state: State, port: int, host: str, region: str, timeout: float) -> None:
    """Serve the Open Inference Protocol (KServe v2 REST) for every task of the lattice.

    POST /v2/models/TASK/infer publishes each row of the request's input as an event and
    answers with the rows' results (400: refused input, 422: dead-lettered, 504: no result in
    --timeout). Also GET /v2/models/TASK (metadata), /v2/health/live and /v2/health/ready.
    Any OIP client works, e.g. tritonclient's HTTP client with binary_data=False.
    """
    import uvicorn

    from streamlattice.gateway.app import make_app

    app = make_app(state.lattice, region, state.settings("streamlattice-gateway"), timeout)
    click.echo(f"Open Inference Protocol on http://{host}:{port}/v2 (region {region})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
