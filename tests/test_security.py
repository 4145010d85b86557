"""A secure dev broker (TLS, SASL/SCRAM-SHA-512, ACLs): each principal does its job, and only it.

Refusals must be quick and clear (an error, never a hang), and no password may show up in a
log, a repr or `status`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from conftest import REPO, WorkerProcess, write_lattice

from streamlattice.config import Lattice
from streamlattice.devbroker import broker as dev
from streamlattice.errors import AuthenticationFailed, BrokerUnavailable, NotAuthorized
from streamlattice.kafka.clients import KafkaSettings, make_consumer, make_producer, start_client
from streamlattice.kafka.security import Security
from streamlattice.kafka.topics import require_topics
from streamlattice.sdk.client import LatticeProducer, ResultSubscriber
from workers.sensor import signals

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A one-node secure cluster: its data dir (credentials in clients/) and bootstrap address."""
    data_dir = tmp_path_factory.mktemp("secure")
    state = dev.start(data_dir, port=dev.free_port(), secure=True, progress=lambda _: None)
    try:
        yield data_dir, state.bootstrap
    finally:
        dev.stop(data_dir, progress=lambda _: None)


def as_(secure: tuple[Path, str], principal: str) -> KafkaSettings:
    data_dir, bootstrap = secure
    return KafkaSettings(
        bootstrap=bootstrap, client_id=f"test-{principal}", security=dev.client_security(data_dir, principal)
    )


@pytest.fixture(scope="module")
def lattice(secure: tuple[Path, str], models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Lattice:
    """A lattice on the secure cluster: topics made by the admin, each principal granted its rights."""
    lattice = write_lattice(as_(secure, "admin"), tmp_path_factory.mktemp("lattice"), models, max_batch=64)
    dev.grant_lattice(secure[0], lattice.namespace)
    return lattice


def test_a_producer_publishes_events_a_worker_answers_and_a_subscriber_reads_results(
    secure: tuple[Path, str], lattice: Lattice, tmp_path: Path
) -> None:
    data_dir, bootstrap = secure
    log = tmp_path / "worker.log"
    env = {"STREAMLATTICE_SECURITY_CONFIG": str(dev.client_file(data_dir, "worker"))}
    w = WorkerProcess(bootstrap, lattice, "sensor", "eu-west", "secure-worker", log, ["--exactly-once"], env)
    try:
        w.wait_assigned()
        windows = signals.generate(300, seed=9)

        async def publish() -> list[str]:
            async with LatticeProducer(lattice=lattice, settings=as_(secure, "producer")) as p:
                return [
                    await p.publish("sensor", "eu-west", s, x)
                    for x, s in zip(windows.x, windows.source_id, strict=True)
                ]

        sent = asyncio.run(publish())
        results = asyncio.run(collect_subscribed(as_(secure, "subscriber"), lattice, set(sent)))
        assert set(sent) <= results, f"{len(set(sent) - results)} events unanswered:\n{log.read_text()[-3000:]}"
    finally:
        w.terminate()
    text = log.read_text()
    for principal in ("worker", "admin"):
        password = dev.client_security(data_dir, principal).password
        assert password and password not in text, "a password reached the worker's log"


async def collect_subscribed(settings: KafkaSettings, lattice: Lattice, expected: set[str]) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    async with ResultSubscriber("sensor", lattice=lattice, settings=settings, from_beginning=True) as sub:
        async for batch in sub.batches(timeout_ms=500):
            seen |= {r.event_id for r in batch}
            if expected <= seen or time.monotonic() > deadline:
                return seen
    return seen


async def write(settings: KafkaSettings, topic: str) -> None:
    producer = make_producer(settings)
    await start_client(producer, settings)
    try:
        await producer.send_and_wait(topic, b"x", partition=0)
    finally:
        await producer.stop()


async def read(settings: KafkaSettings, topic: str) -> None:
    await require_topics(settings, [topic])  # as every streamlattice client does before it reads
    consumer = make_consumer(settings)
    await start_client(consumer, settings)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning(TopicPartition(topic, 0))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a refusal surfaces from a fetch
            await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("principal", "action", "topic_of"),
    [
        ("producer", write, Lattice.results_topic),  # a producer only writes events
        ("producer", read, Lattice.events_topic),
        ("subscriber", read, Lattice.events_topic),  # a subscriber only reads results
        ("subscriber", write, Lattice.results_topic),
        ("worker", write, Lattice.events_topic),  # a worker does not forge events
        ("router", write, Lattice.results_topic),
    ],
)
def test_each_principal_is_refused_outside_its_rights_quickly_and_clearly(
    secure: tuple[Path, str], lattice: Lattice, principal: str, action: Callable, topic_of: Callable
) -> None:
    started = time.monotonic()
    with pytest.raises((TopicAuthorizationFailedError, KafkaError, NotAuthorized)) as refused:
        asyncio.run(action(as_(secure, principal), topic_of(lattice, "sensor")))
    assert time.monotonic() - started < 20, "a refusal should not wait for a timeout"
    assert "Authoriz" in type(refused.value).__name__, f"{principal}: {refused.value!r}"


def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(
    secure: tuple[Path, str], lattice: Lattice
) -> None:
    data_dir, bootstrap = secure
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="without credentials"):
        asyncio.run(read(KafkaSettings(bootstrap=bootstrap, security=Security()), lattice.results_topic("sensor")))
    wrong = replace(dev.client_security(data_dir, "subscriber"), password="not-the-password")
    with pytest.raises((AuthenticationFailed, BrokerUnavailable), match="refused SASL_SSL as subscriber") as e:
        asyncio.run(read(KafkaSettings(bootstrap=bootstrap, security=wrong), lattice.results_topic("sensor")))
    assert "not-the-password" not in str(e.value)
    assert time.monotonic() - started < 60


def test_secrets_stay_out_of_reprs_and_status(secure: tuple[Path, str], lattice: Lattice) -> None:
    data_dir, bootstrap = secure
    admin = dev.client_security(data_dir, "admin")
    assert admin.password and admin.password not in repr(as_(secure, "admin"))
    env = {**os.environ, "STREAMLATTICE_SECURITY_CONFIG": str(dev.client_file(data_dir, "admin"))}
    cmd = [sys.executable, "-m", "streamlattice", "--bootstrap", bootstrap, "--config", str(lattice.source)]
    done = subprocess.run([*cmd, "status", "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"sensor"' in done.stdout
    assert admin.password not in done.stdout + done.stderr
