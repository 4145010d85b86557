"""The aiokafka loop written for throughput: `getmany` up to the task's batch size, one inference
per fetch, the results produced in batches (`create_batch`/`send_batch`, one per partition), one
commit per fetch once its results are acknowledged (at-least-once).

    python bench/contenders/batched_loop.py --config LATTICE --task TASK --bootstrap HOST:PORT
"""

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamlattice.bench.answers import Answers, Setup, send_batched, setup, stop_on_sigterm


async def main(s: Setup) -> None:
    answers = Answers(s.lattice, s.task, "batched_loop", (1, s.max_batch))
    consumer = AIOKafkaConsumer(
        s.source,
        bootstrap_servers=s.bootstrap,
        group_id=s.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await consumer.start()
    await producer.start()
    stop = stop_on_sigterm()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=s.max_batch)
            msgs = [m for batch in fetched.values() for m in batch]
            if not msgs:
                continue
            results = iter(answers.many([m.value for m in msgs]))
            # each result into the same partition of the results topic (same layout), one record batch each
            by_partition = {tp.partition: [(m.key, next(results)) for m in batch] for tp, batch in fetched.items()}
            await asyncio.gather(*await send_batched(producer, s.sink, by_partition))  # acknowledged, then commit
            await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch})
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(setup("batched_loop", __doc__)))
