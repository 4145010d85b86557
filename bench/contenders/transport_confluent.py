"""The transport limit with confluent-kafka (librdkafka): the same records through the same broker,
no inference.

For each event it writes as many bytes as the event's result would have (the event's first
bytes), as fast as librdkafka goes: up to 1,000 records at a time, `produce` each, and each
fetch's offsets committed (asynchronously) once every one of its records is delivered
(at-least-once).

    python bench/contenders/transport_confluent.py --config LATTICE --task TASK --bootstrap HOST:PORT
"""

import signal
from collections import deque

from confluent_kafka import Consumer, Producer, TopicPartition

from streamlattice.bench.answers import result_size, setup


class Fetch:
    """One fetch's offsets, to commit once its records are all delivered."""

    def __init__(self, offsets: list[TopicPartition], pending: int) -> None:
        self.offsets, self.pending = offsets, pending

    def delivered(self, err: object, _msg: object) -> None:
        if err is None:
            self.pending -= 1


if __name__ == "__main__":
    s = setup("transport_confluent", __doc__)
    size = result_size(s.lattice, s.task)
    consumer = Consumer(
        {
            "bootstrap.servers": s.bootstrap,
            "group.id": s.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": s.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 1})
    consumer.subscribe([s.source])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    fetches: deque[Fetch] = deque()
    try:
        while not stopping:
            # the first record as soon as there is one, then what has already come, without waiting for more
            first = consumer.poll(0.1)
            fetched = [] if first is None else [first, *consumer.consume(num_messages=999, timeout=0)]
            msgs = [m for m in fetched if m.error() is None]
            if msgs:
                last = {(m.topic(), m.partition()): m.offset() for m in msgs}
                fetch = Fetch([TopicPartition(t, p, o + 1) for (t, p), o in last.items()], len(msgs))
                fetches.append(fetch)
                for m in msgs:
                    while True:
                        try:
                            producer.produce(s.sink, m.value()[:size], m.key(), on_delivery=fetch.delivered)
                            break
                        except BufferError:
                            producer.poll(0.01)
            producer.poll(0)
            done: dict[tuple[str, int], TopicPartition] = {}
            while fetches and fetches[0].pending == 0:  # in fetch order: never past an undelivered record
                done.update({(tp.topic, tp.partition): tp for tp in fetches.popleft().offsets})
            if done:
                consumer.commit(offsets=list(done.values()), asynchronous=True)
    finally:
        producer.flush(10)
        consumer.close()
