"""A Quix Streams application in its recommended configuration: the `Application` defaults
(at-least-once, a checkpoint every 5 s: the producer flushed, then the offsets committed),
a StreamingDataFrame that `.apply`s the model to each event, `.to_topic` the results. Quix
Streams has no batch operator: a StreamingDataFrame handles one message at a time.

    python bench/contenders/quixstreams_app.py --config LATTICE --task TASK --bootstrap HOST:PORT
"""

import tempfile

from quixstreams import Application

from streamlattice.bench.answers import Answers, setup

if __name__ == "__main__":
    s = setup("quixstreams", __doc__)
    answers = Answers(s.lattice, s.task, "quixstreams")
    app = Application(
        broker_address=s.bootstrap,
        consumer_group=s.group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        loglevel="WARNING",
        use_changelog_topics=False,
        state_dir=tempfile.mkdtemp(prefix="sl-bench-quix-"),
    )
    source = app.topic(s.source, value_deserializer="bytes", key_deserializer="bytes")
    sink = app.topic(s.sink, value_serializer="bytes", key_serializer="bytes")
    app.dataframe(source).apply(answers.one).to_topic(sink)
    app.run()
