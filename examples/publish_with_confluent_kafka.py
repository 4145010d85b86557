"""Publish a sensor event to streamlattice from confluent-kafka and Apache Avro, with no streamlattice code.

    python examples/publish_with_confluent_kafka.py localhost:9092 --region eu-west --block 0:4

Prints the event id. The event is framed in Avro's single-object encoding (0xC3 0x01, the
schema's 8-byte CRC-64-AVRO fingerprint, then the Avro body), keyed by its source id, and sent
to the partition of its region's block that Kafka's murmur2 of the key picks, which is what
streamlattice's own SDK does.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid
from pathlib import Path

import avro.io
import avro.schema
import numpy as np
from avro.name import Names
from confluent_kafka import Producer


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash, as the Java client's default partitioner computes it."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[4 * n4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bootstrap")
    ap.add_argument("--namespace", default="sl", help="the lattice's topic namespace")
    ap.add_argument("--region", default="eu-west")
    ap.add_argument("--block", default="0:4", help="FIRST:SIZE, the region's partition block (lattice.toml order)")
    ap.add_argument("--source", default="machine-7", help="the device id: the key")
    ap.add_argument("--partition", type=int, help="send here instead (the worker serves it and flags it if outside)")
    ap.add_argument("--schemas", default=str(Path(__file__).resolve().parents[1] / "schemas"))
    args = ap.parse_args()

    names = Names()  # Tensor first: Event refers to it by name
    avro.schema.make_avsc_object(json.loads(Path(args.schemas, "tensor.avsc").read_text()), names)
    schema = avro.schema.make_avsc_object(json.loads(Path(args.schemas, "event.avsc").read_text()), names)

    window = np.random.default_rng(7).standard_normal((3, 64)).astype("<f4")  # the sensor task's [3, 64]
    event = {
        "event_id": str(uuid.uuid4()),
        "event_time_us": time.time_ns() // 1000,
        "region": args.region,
        "task": "sensor",
        "source_id": args.source,
        "tensor": {"dtype": "float32", "shape": list(window.shape), "data": window.tobytes()},
        "text": None,
    }
    body = io.BytesIO()
    body.write(b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO"))
    avro.io.DatumWriter(schema).write(event, avro.io.BinaryEncoder(body))

    first, size = (int(x) for x in args.block.split(":"))
    key = args.source.encode()
    partition = args.partition if args.partition is not None else first + (murmur2(key) & 0x7FFFFFFF) % size
    producer = Producer({"bootstrap.servers": args.bootstrap})
    producer.produce(
        f"{args.namespace}.events.sensor",
        body.getvalue(),
        key=key,
        partition=partition,
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "correlation-id": "c-1"},
    )
    if producer.flush(10):
        raise SystemExit("the event was not delivered within 10 s")
    print(event["event_id"])


if __name__ == "__main__":
    main()
