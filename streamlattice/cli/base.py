"""What every verb shares: the group options, the state they resolve to, and the one error path.

Any StreamLatticeError, refused connection or Kafka error a verb raises, sync or async, ends
in `LatticeGroup.invoke` as one line on stderr and exit code 1; click's own usage errors
exit with 2. A verb never catches them itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamlattice.config import Lattice, bootstrap_from_env, load_lattice
from streamlattice.errors import BrokerUnavailable, StreamLatticeError
from streamlattice.kafka.clients import KafkaSettings

T = TypeVar("T")


class State:
    """What the group options resolve to, shared with every verb."""

    def __init__(self, bootstrap: str | None, config: str | None) -> None:
        self.explicit_bootstrap = bootstrap
        self.bootstrap = bootstrap_from_env(bootstrap)
        self.config = config
        self._lattice: Lattice | None = None

    @property
    def lattice(self) -> Lattice:
        """The lattice layout, read on first use."""
        if self._lattice is None:
            self._lattice = load_lattice(self.config)
        return self._lattice

    def settings(self, client_id: str = "streamlattice-cli") -> KafkaSettings:
        """Kafka settings for a client of this command."""
        return KafkaSettings(bootstrap=self.bootstrap, client_id=client_id)


pass_state = click.make_pass_decorator(State)


class LatticeGroup(click.Group):
    """The root group: turns every error of ours, or of Kafka's, into one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamLatticeError as e:
            raise click.ClickException(str(e)) from None
        except KafkaConnectionError as e:
            state = ctx.find_object(State)
            bootstrap = state.bootstrap if state is not None else bootstrap_from_env()
            raise click.ClickException(str(BrokerUnavailable(bootstrap, str(e)))) from None
        except KafkaError as e:
            raise click.ClickException(f"Kafka error: {e}") from None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a verb's coroutine (its errors reach LatticeGroup like those of synchronous code)."""
    return asyncio.run(coro)


_stop_requested = False


def catch_early_stop() -> None:
    """Until `stop_on_signals` takes over, remember a SIGTERM instead of dying of it: a verb told
    to stop while it starts (a scale-in, a rolling deploy) then exits cleanly, with status 0."""

    def remember(signum: int, frame: object) -> None:
        global _stop_requested
        _stop_requested = True

    signal.signal(signal.SIGTERM, remember)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT (Ctrl-C): the graceful path of every long-running verb.
    A SIGTERM that came while it started (see `catch_early_stop`) sets it at once."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if _stop_requested:
        stop.set()


def split_list(value: str | None) -> list[str]:
    """The items of a comma-separated option value."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


@click.group(cls=LatticeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--bootstrap", envvar="STREAMLATTICE_BOOTSTRAP", help="Kafka bootstrap address [localhost:9092].")
@click.option(
    "--config",
    "--lattice",
    "config",
    envvar="STREAMLATTICE_CONFIG",
    help="lattice.toml to use [./lattice.toml, else the built-in one].",
)
@click.option(
    "--security-config",
    envvar="STREAMLATTICE_SECURITY_CONFIG",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML [security] file of this client: TLS and SASL user (`broker start --secure` writes them) [none].",
)
@click.option(
    "--schema-registry",
    envvar="STREAMLATTICE_SCHEMA_REGISTRY",
    metavar="URL",
    help="Schema registry (Confluent Schema Registry, Karapace, Apicurio's compatible API): events, results "
    "and dead letters in its wire format; basic auth from $STREAMLATTICE_SCHEMA_REGISTRY_AUTH (user:password) "
    "[none: Avro single-object encoding].",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="streamlattice")
@click.pass_context
def cli(
    ctx: click.Context,
    bootstrap: str | None,
    config: str | None,
    security_config: str | None,
    schema_registry: str | None,
    log_level: str,
) -> None:
    """streamlattice: power-aware ONNX inference on Apache Kafka.

    Start a dev broker, create the topics, run workers, publish load, read results:

    \b
      streamlattice broker start
      streamlattice topics init
      streamlattice worker --task sensor --region eu-west &
      streamlattice produce --task sensor --rate 200 --count 2000
      streamlattice results --task sensor --follow
    """
    if security_config:  # through the environment, so workers `scale` starts inherit it too
        os.environ["STREAMLATTICE_SECURITY_CONFIG"] = str(Path(security_config).resolve())
    if schema_registry:  # the same, and KafkaSettings reads it there
        os.environ["STREAMLATTICE_SCHEMA_REGISTRY"] = schema_registry
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(log_level.upper())))
    ctx.obj = State(bootstrap, config)
