"""A faust-streaming agent as faust's documentation recommends for throughput: `stream.take` buffers
up to the task's batch size (or what came within 10 ms), one inference per buffer, one send per
result. faust's own at-least-once guarantee: a buffer's events are acknowledged after the agent
has handled it, and their offsets committed once acknowledged.

    python bench/contenders/faust_take.py --config LATTICE --task TASK --bootstrap HOST:PORT
"""

import tempfile
from typing import Any

import faust

from streamlattice.bench.answers import Answers, setup

s = setup("faust", __doc__)
answers = Answers(s.lattice, s.task, "faust", (1, s.max_batch))
app = faust.App(
    s.group,
    broker=f"kafka://{s.bootstrap}",
    store="memory://",
    datadir=tempfile.mkdtemp(prefix="sl-bench-faust-"),
    web_enabled=False,
    key_serializer="raw",
    value_serializer="raw",
    processing_guarantee="at_least_once",
    producer_acks=-1,
    topic_partitions=1,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(s.source, key_type=bytes, value_type=bytes)
sink = app.topic(s.sink, key_type=bytes, value_type=bytes)


@app.agent(source)
async def answer(stream: Any) -> None:
    async for events in stream.take_events(s.max_batch, within=0.01):
        results = answers.many([e.value for e in events])
        for event, result in zip(events, results, strict=True):
            await sink.send(key=event.key, value=result)


if __name__ == "__main__":
    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()
