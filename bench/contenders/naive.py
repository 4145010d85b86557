"""The loop a user writes first (aiokafka): one event, one inference, `send_and_wait`, commit.

python bench/contenders/naive.py --config LATTICE --task TASK --bootstrap HOST:PORT
"""

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamlattice.bench.answers import Answers, Setup, setup, stop_on_sigterm


async def main(s: Setup) -> None:
    answers = Answers(s.lattice, s.task, "naive")
    consumer = AIOKafkaConsumer(
        s.source,
        bootstrap_servers=s.bootstrap,
        group_id=s.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    stop = stop_on_sigterm()
    try:
        while not stop.is_set():
            msg = await consumer.getone()
            await producer.send_and_wait(s.sink, answers.one(msg.value), key=msg.key)
            await consumer.commit()  # after its result is acknowledged: at-least-once
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(setup("naive", __doc__)))
