"""The one place aiokafka clients are built and started: settings, idempotence, error translation.

Everything else asks this module for a producer, a consumer or an admin client, so that
security, timeouts and the "broker unreachable" message are decided once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamlattice.config import bootstrap_from_env
from streamlattice.errors import BrokerUnavailable, StreamLatticeError


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; every client in streamlattice is built from one of these."""

    bootstrap: str = field(default_factory=bootstrap_from_env)
    client_id: str = "streamlattice"
    request_timeout_ms: int = 30_000

    @classmethod
    def from_env(cls, bootstrap: str | None = None, client_id: str = "streamlattice") -> KafkaSettings:
        """Settings from the flag value or $STREAMLATTICE_BOOTSTRAP."""
        return cls(bootstrap=bootstrap_from_env(bootstrap), client_id=client_id)

    def with_client_id(self, client_id: str) -> KafkaSettings:
        """The same settings under another client id."""
        return replace(self, client_id=client_id)

    def common(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes."""
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
        }


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer with acks=all: a record is acknowledged once every in-sync replica has it."""
    kwargs: dict[str, Any] = {
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**settings.common(), **kwargs)


def make_consumer(settings: KafkaSettings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that never commits on its own and reads only committed records.

    read_committed costs nothing on records written without a transaction, and it hides the
    results of a worker's transaction that was aborted (exactly-once mode).
    """
    kwargs: dict[str, Any] = {
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **settings.common(), **kwargs)


def make_admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    """An admin client (topic creation, metadata, group offsets)."""
    return AIOKafkaAdminClient(**settings.common())


async def start_client(client: Any, settings: KafkaSettings) -> None:
    """Start an aiokafka client, turning "cannot connect" into BrokerUnavailable."""
    try:
        await client.start()
    except KafkaConnectionError as e:
        await _close_quietly(client)
        raise BrokerUnavailable(settings.bootstrap, str(e)) from None
    except OSError as e:
        await _close_quietly(client)
        raise BrokerUnavailable(settings.bootstrap, str(e)) from None


async def _close_quietly(client: Any) -> None:
    close = getattr(client, "stop", None) or client.close
    with contextlib.suppress(KafkaError, OSError, RuntimeError):
        await close()


async def broker_count(settings: KafkaSettings) -> int:
    """How many brokers the cluster's metadata lists; BrokerUnavailable if none answers."""
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        info = await admin.describe_cluster()
        return len(info["brokers"])
    finally:
        await admin.close()


async def wait_for_brokers(settings: KafkaSettings, count: int, timeout_s: float, alive: Iterable[Any] = ()) -> None:
    """Wait until the cluster lists `count` brokers; `alive` are callables that raise if a process died."""
    deadline = time.monotonic() + timeout_s
    # aiokafka logs every refused connection at ERROR; while a broker boots that is expected.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        await _wait(settings, count, deadline, alive)
    finally:
        quiet.setLevel(level)


async def _wait(settings: KafkaSettings, count: int, deadline: float, alive: Iterable[Any]) -> None:
    last = ""
    while time.monotonic() < deadline:
        for check in alive:
            check()
        try:
            n = await asyncio.wait_for(broker_count(settings), timeout=5)
            if n >= count:
                return
            last = f"{n} of {count} brokers registered"
        except (TimeoutError, BrokerUnavailable, KafkaError) as e:
            last = str(e) or type(e).__name__
        await asyncio.sleep(0.5)
    raise StreamLatticeError(f"cluster at {settings.bootstrap} not ready in time: {last}")
