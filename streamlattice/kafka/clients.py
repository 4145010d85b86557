"""The one place aiokafka clients are built and started: settings, idempotence, error translation.

Everything else asks this module for a producer, a consumer or an admin client, so that
security, timeouts and the "broker unreachable" message are decided once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
)
from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request

from streamlattice.config import bootstrap_from_env
from streamlattice.errors import AuthenticationFailed, BrokerUnavailable, StreamLatticeError
from streamlattice.kafka import fixes
from streamlattice.kafka.registry import Registry, RegistryCodec
from streamlattice.kafka.security import ALLOW, CONFIG_ENV, Acl, Security
from streamlattice.wire.codec import RecordCodec

# Every client streamlattice builds comes from this module: fix aiokafka's OffsetFetch first.
fixes.apply()

# The schema registry's URL, and its "user:password" when it asks for basic authentication.
REGISTRY_ENV = "STREAMLATTICE_SCHEMA_REGISTRY"
REGISTRY_AUTH_ENV = "STREAMLATTICE_SCHEMA_REGISTRY_AUTH"
# Where a client runs, as the brokers' `broker.rack` names it: its consumers read from the nearest replica.
RACK_ENV = "STREAMLATTICE_CLIENT_RACK"

# (topic, value, key, partition, headers): one record on its way out
Message = tuple[str, bytes, bytes | None, int, list[tuple[str, bytes]] | None]


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; every client in streamlattice is built from one of these."""

    bootstrap: str = field(default_factory=bootstrap_from_env)
    client_id: str = "streamlattice"
    request_timeout_ms: int = 30_000
    security: Security = field(default_factory=Security.from_env)
    # A schema registry's URL: events, results and dead letters in its wire format (kafka.registry)
    schema_registry: str | None = field(default_factory=lambda: os.environ.get(REGISTRY_ENV) or None)
    # KIP-392: a consumer with a rack fetches from a replica in that rack when the brokers run
    # the rack-aware replica selector. Opt-in: with it, aiokafka 0.14's consumer groups stalled
    # in rebalances in our suite, so workers never set it (docs/regions).
    rack: str | None = field(default_factory=lambda: os.environ.get(RACK_ENV) or None)

    @classmethod
    def from_env(cls, bootstrap: str | None = None, client_id: str = "streamlattice") -> KafkaSettings:
        """Settings from the flag value or $STREAMLATTICE_BOOTSTRAP, security from the environment."""
        return cls(bootstrap=bootstrap_from_env(bootstrap), client_id=client_id)

    def codec(self, codec: RecordCodec, topic: str | None = None) -> RecordCodec | RegistryCodec:
        """`codec` framed as this cluster's records on `topic` are: for its schema registry, if it
        has one (a codec that only decodes needs no topic)."""
        if not self.schema_registry:
            return codec
        return RegistryCodec(codec, Registry.connect(self.schema_registry, os.environ.get(REGISTRY_AUTH_ENV)), topic)

    def with_client_id(self, client_id: str) -> KafkaSettings:
        """The same settings under another client id."""
        return replace(self, client_id=client_id)

    def common(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes."""
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.client_kwargs(),
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


async def send_batches(
    producer: AIOKafkaProducer,
    messages: Sequence[Message],
    handed: list[tuple[asyncio.Future[Any], list[int]]] | None = None,
) -> list[tuple[asyncio.Future[Any], list[int]]]:
    """Hand `messages` to the producer as one record batch per topic partition (more if one fills).

    Returns a delivery future per batch, not per record, each with the positions in `messages` of
    the records it carries (so a caller can retry only what a failed batch held): `send` costs a
    coroutine, a future and an accumulator lookup for every record, a fifth of a worker's time on
    a small model.

    `handed`, if given, is the list the deliveries are appended to as each batch is handed over:
    when handing one over fails (KafkaTimeoutError: the partition's last batch is still waiting
    for a leader), it says which records the producer already has.
    """
    by_partition: dict[tuple[str, int], list[int]] = {}
    for i, message in enumerate(messages):
        by_partition.setdefault((message[0], message[3]), []).append(i)
    deliveries: list[tuple[asyncio.Future[Any], list[int]]] = [] if handed is None else handed
    for (topic, partition), positions in by_partition.items():
        batch = producer.create_batch()
        held: list[int] = []
        for i in positions:
            _, value, key, _, headers = messages[i]
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                if held:
                    deliveries.append((await producer.send_batch(batch, topic, partition=partition), held))
                batch, held = producer.create_batch(), []
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    raise RecordTooLargeError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
            held.append(i)
        deliveries.append((await producer.send_batch(batch, topic, partition=partition), held))
    return deliveries


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
    if settings.rack:
        kwargs["client_rack"] = settings.rack
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **settings.common(), **kwargs)


def make_admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    """An admin client (topic creation, metadata, group offsets)."""
    return AIOKafkaAdminClient(**settings.common())


async def start_client(client: Any, settings: KafkaSettings) -> None:
    """Start an aiokafka client, turning "cannot connect" into BrokerUnavailable."""
    try:
        await client.start()
    except (AuthenticationFailedError, SaslAuthenticationFailed) as e:
        await _close_quietly(client)
        raise AuthenticationFailed(
            f"Kafka at {settings.bootstrap} refused {settings.security.describe()}: {e}; check the user and "
            f"password in ${CONFIG_ENV}'s file"
        ) from None
    except (KafkaConnectionError, OSError) as e:
        await _close_quietly(client)
        detail = str(e)
        if settings.security.uses_sasl:  # aiokafka reports a failed login as a failed bootstrap
            detail += f" (or it refused {settings.security.describe()}: check the password in ${CONFIG_ENV}'s file)"
        else:
            detail += f" (a secured cluster closes the door on clients without credentials: set ${CONFIG_ENV})"
        raise BrokerUnavailable(settings.bootstrap, detail) from None


async def _close_quietly(client: Any) -> None:
    close = getattr(client, "stop", None) or client.close
    with contextlib.suppress(KafkaError, OSError, RuntimeError):
        await close()


async def broker_count(settings: KafkaSettings) -> int:
    """How many brokers the cluster's metadata lists, as the broker that knows the fewest sees it;
    BrokerUnavailable if none answers.

    Each broker learns of the others from the metadata log a moment apart: right after a
    cluster starts, one may list three brokers while another still lists two. Whoever creates
    topics next asks one of them for the replication it can have, so the cluster is counted as
    ready only when every broker lists all of them (a topic created with replication 2 on a
    cluster with min.insync.replicas 2 stops taking writes when either of its brokers is down).
    """
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        brokers = (await admin.describe_cluster())["brokers"]
    finally:
        await admin.close()
    views = [len(brokers)]
    if len(brokers) > 1:
        for b in brokers:
            one = replace(settings, bootstrap=f"{b['host']}:{b['port']}")
            admin = make_admin(one)
            await start_client(admin, one)
            try:
                views.append(len((await admin.describe_cluster())["brokers"]))
            finally:
                await admin.close()
    return min(views)


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


class _CreateAcls(Request[CreateAclsRequest_v1]):
    """CreateAcls (v1) of many bindings in one request; aiokafka's own takes one per request."""

    API_KEY = 30

    def __init__(self, acls: list[Acl]) -> None:
        self.acls = acls

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(
            [(a.resource_type, a.name, a.pattern, a.principal, "*", a.operation, ALLOW) for a in self.acls]
        )


async def create_acls(settings: KafkaSettings, acls: list[Acl]) -> None:
    """Grant `acls` (adding one that exists is a no-op); `settings` must be a super user's.

    aiokafka 0.14's admin client has no create_acls: this sends Kafka's CreateAcls request
    through the admin client's `_send_request`, the one place that reaches for it.
    """
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        response = await admin._send_request(_CreateAcls(acls))
        failed = [(code, msg) for code, msg in response.creation_responses if code]
        if failed:
            raise StreamLatticeError(f"the broker refused {len(failed)} ACLs, first: {failed[0][1] or failed[0][0]}")
        # The broker answers before its authorizer applies them: wait until it lists them all.
        wanted = {(a.resource_type, a.name, a.pattern, a.principal, a.operation) for a in acls}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = await admin._send_request(DescribeAclsRequest(1, None, 1, None, None, 1, 1))
            have = {
                (rtype, name, pattern, principal, op)
                for rtype, name, pattern, entries in listed.resources
                for principal, _, op, _ in entries
            }
            if wanted <= have:
                return
            await asyncio.sleep(0.2)
        raise StreamLatticeError("ACLs were created but the broker did not apply them within 30 s")
    finally:
        await admin.close()
