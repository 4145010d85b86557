"""The transport limit with aiokafka: the same records through the same broker, no inference.

For each event it writes as many bytes as the event's result would have (the event's first
bytes: its id and time come first), as fast as aiokafka goes: fetches of up to 1,000 records,
produced in record batches (`create_batch`/`send_batch`, one per partition) not waited for one
by one, and a commit once a fetch's batches are acknowledged, off the read path (at-least-once).

    python bench/contenders/transport_aiokafka.py --config LATTICE --task TASK --bootstrap HOST:PORT
"""

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamlattice.bench.answers import Setup, result_size, send_batched, setup, stop_on_sigterm


async def main(s: Setup) -> None:
    size = result_size(s.lattice, s.task)
    consumer = AIOKafkaConsumer(
        s.source,
        bootstrap_servers=s.bootstrap,
        group_id=s.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=True, linger_ms=1, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    acks: asyncio.Queue[tuple[list[asyncio.Future[Any]], dict[Any, int]]] = asyncio.Queue(maxsize=8)

    async def commit() -> None:
        done: dict[Any, int] = {}  # acknowledged, not yet committed: coalesced while fetches queue
        while True:
            sent, offsets = await acks.get()
            await asyncio.gather(*sent)
            done.update(offsets)
            if acks.empty():
                await consumer.commit(done)
                done = {}

    committer = asyncio.create_task(commit())
    stop = stop_on_sigterm()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100)
            by_partition = {tp.partition: [(m.key, m.value[:size]) for m in msgs] for tp, msgs in fetched.items()}
            sent = await send_batched(producer, s.sink, by_partition)
            if sent:
                await acks.put((sent, {tp: msgs[-1].offset + 1 for tp, msgs in fetched.items() if msgs}))
    finally:
        committer.cancel()
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(setup("transport_aiokafka", __doc__)))
