"""The dev broker: start, status, stop, restart keeping data, clear errors."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from streamlattice.config import load_lattice
from streamlattice.devbroker import broker as dev
from streamlattice.errors import DevBrokerError
from streamlattice.kafka.clients import KafkaSettings, make_admin, make_consumer, make_producer
from streamlattice.kafka.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


async def write_and_read(bootstrap: str, topic: str, value: bytes | None) -> list[bytes]:
    """Optionally append `value` to `topic` (creating it), then read back everything it holds."""
    settings = KafkaSettings(bootstrap=bootstrap)
    if value is not None:
        admin = make_admin(settings)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        producer = make_producer(settings)
        await producer.start()
        await producer.send_and_wait(topic, value)
        await producer.stop()
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = await consumer.getmany(tp, timeout_ms=5000)
        return [m.value for m in got.get(tp, [])]
    finally:
        await consumer.stop()


def test_start_status_stop_and_a_second_start_keeps_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    port = dev.free_port()
    try:
        state = dev.start(data_dir, port=port, progress=lambda _: None)
        assert state.bootstrap == f"localhost:{port}"
        assert [n.running for n in dev.status(data_dir)] == [True]
        assert asyncio.run(write_and_read(state.bootstrap, "kept", b"still here")) == [b"still here"]

        assert dev.stop(data_dir, progress=lambda _: None)
        assert [n.running for n in dev.status(data_dir)] == [False]
        assert dev.port_is_free(port)

        again = dev.start(data_dir, progress=lambda _: None)  # same data dir: same port, same data
        assert again.bootstrap == state.bootstrap and again.cluster_id == state.cluster_id
        assert asyncio.run(write_and_read(again.bootstrap, "kept", None)) == [b"still here"]
    finally:
        dev.stop(data_dir, progress=lambda _: None)


def test_a_taken_port_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DevBrokerError, match=f"port {port} .* is taken.*--port"):
            dev.start(tmp_path / "b", port=port, progress=lambda _: None)


def test_free_ports_are_drawn_where_no_outgoing_connection_can_take_them() -> None:
    # Why: the local port of a connection made now is a port no broker can bind afterwards.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            taken = client.getsockname()[1]
            assert not dev.port_is_free(taken)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [dev.free_port() for _ in range(50)] + [dev.free_port_block(3) + i for _ in range(10) for i in range(3)]
    assert all(p < low for p in ports), "a port from the ephemeral range was handed out"
    assert len(set(ports)) == len(ports), "a port was handed out twice"


def test_a_node_that_fails_to_start_reports_its_error_not_just_its_shutdown(tmp_path: Path) -> None:
    log = [f"[t] INFO starting {i}" for i in range(5)]
    log += ["[t] ERROR [KafkaRaftServer nodeId=2] Fatal error during broker startup. Prepare to shutdown"]
    log += [f"[t] INFO shutting down {i}" for i in range(40)]
    (tmp_path / "server.log").write_text("\n".join(log))
    tail = dev._log_tail(tmp_path)
    assert "Fatal error during broker startup" in tail
    assert tail.splitlines()[-1] == "[t] INFO shutting down 39"


def test_missing_java_is_reported_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    monkeypatch.setenv("STREAMLATTICE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DevBrokerError, match="`java` not found on PATH"):
        dev.install_jars(progress=lambda _: None)


def test_stop_without_a_broker_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    assert not dev.stop(tmp_path / "never", progress=said.append)
    assert "no broker was ever started" in said[0]


def test_three_nodes_make_a_replicated_cluster(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    try:
        state = dev.start(data_dir, port=dev.free_port_block(3), nodes=3, progress=lambda _: None)
        assert len(state.nodes) == 3 and all(n.running for n in dev.status(data_dir))

        async def listed_by_each() -> list[int]:
            views = []
            for node in state.nodes:
                settings = KafkaSettings(bootstrap=f"localhost:{node.port}")
                admin = make_admin(settings)
                await admin.start()
                try:
                    views.append(len((await admin.describe_cluster())["brokers"]))
                finally:
                    await admin.close()
            return views

        # ready means every broker lists all three: topics created next get replication 3
        assert asyncio.run(listed_by_each()) == [3, 3, 3]
        lattice = load_lattice(REPO / "lattice.toml")
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=state.bootstrap), lattice))

        async def describe() -> list:
            settings = KafkaSettings(bootstrap=state.bootstrap)
            admin = make_admin(settings)
            await admin.start()
            try:
                return await admin.describe_topics([lattice.events_topic("sensor"), lattice.results_topic("sensor")])
            finally:
                await admin.close()

        topics = asyncio.run(describe())
        assert all(len(p["replicas"]) == 3 for t in topics for p in t["partitions"])
        assert asyncio.run(write_and_read(state.bootstrap, lattice.events_topic("sensor"), None)) == []
    finally:
        dev.stop(data_dir, progress=lambda _: None)


def test_cluster_ids_never_start_with_a_dash() -> None:
    # a dash-led id once broke `kafka-storage format -t <id>`; Kafka's own ids avoid it too
    ids = [dev.new_cluster_id() for _ in range(3000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)
