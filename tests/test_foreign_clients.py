"""Clients nobody here wrote: confluent-kafka and Apache Avro publish events and read results."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streamlattice.config import Lattice
from streamlattice.worker.outgoing import OUTSIDE_REGION_FLAG

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "publish_with_confluent_kafka.py"


def publish(bootstrap: str, lattice: Lattice, *args: str) -> str:
    eu = lattice.region("eu-west").block
    command = [sys.executable, str(EXAMPLE), bootstrap, "--namespace", lattice.namespace]
    out = subprocess.run(
        [*command, "--block", f"{eu.start}:{len(eu)}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def read_results(bootstrap: str, lattice: Lattice, want: set[str], timeout: float) -> dict[str, tuple]:
    """Results decoded with Apache Avro's own reader: event id -> (record, headers, partition)."""
    import avro.io
    import avro.schema
    from avro.name import Names

    names = Names()
    avro.schema.make_avsc_object(json.loads((REPO / "schemas" / "tensor.avsc").read_text()), names)
    schema = avro.schema.make_avsc_object(json.loads((REPO / "schemas" / "result.avsc").read_text()), names)
    header = b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO")
    topic = lattice.results_topic("sensor")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "foreign", "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(lattice.total_partitions)])
    found: dict[str, tuple] = {}
    deadline = time.monotonic() + timeout
    try:
        while not want <= found.keys() and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value()
            assert value[:10] == header, "a result framed with another fingerprint than Apache Avro computes"
            record = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))
            found[record["event_id"]] = (record, dict(msg.headers() or []), msg.partition())
    finally:
        consumer.close()
    return found


def test_an_event_from_confluent_kafka_is_served_with_its_headers_and_one_outside_its_block_is_flagged(
    kafka: str, lattice: Lattice, workers
) -> None:
    w = workers(lattice, "eu-west")
    w.wait_assigned()
    in_block = publish(kafka, lattice)
    ap_south = lattice.region("ap-south").block.start
    outside = publish(kafka, lattice, "--source", "machine-9", "--partition", str(ap_south))

    found = read_results(kafka, lattice, {in_block, outside}, timeout=60)

    assert {in_block, outside} <= found.keys(), f"no result for { ({in_block, outside} - found.keys()) }"
    eu = lattice.region("eu-west").block
    record, headers, partition = found[in_block]
    assert record["region"] == "eu-west" and record["label"] is not None and partition in eu
    assert OUTSIDE_REGION_FLAG not in record["flags"]
    assert headers["traceparent"] == b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert headers["correlation-id"] == b"c-1"
    record, headers, partition = found[outside]
    assert OUTSIDE_REGION_FLAG in record["flags"], "an event served outside its region's block went unflagged"
    assert partition in eu, "its result belongs in its own region's block"
    assert w.terminate() == 0
    assert "outside its partition block" in w.text()  # and the operator is told, once per partition
