"""The fuzz harness: hostile bytes through a worker's decode, validate, infer and publish steps.

`feed` is the worker loop's per-batch path without Kafka: what it checks holds for any input
(no exception escapes; each record is answered or dead-lettered with a reason, exactly once).
Used by tests/test_fuzz.py with hypothesis, and by atheris when run as a script:

    python tests/fuzzing.py sensor -runs=20000 CORPUS_DIR   (seed CORPUS_DIR with valid events)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from aiokafka.structs import ConsumerRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamlattice.config import load_lattice
from streamlattice.errors import InvalidEvent
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.wire.codec import codecs, tensor_record
from streamlattice.worker.handoff import reject_failed_rows
from streamlattice.worker.runtime import Worker

REPO = Path(__file__).resolve().parents[1]
REASON_KINDS = {"undecodable", "schema", "task", "region", "shape", "dtype", "non_finite", "oversize", "empty"}


def make_worker(task: str) -> Worker:
    """A worker of the repo's lattice with its model loaded, never connected to Kafka."""
    worker = Worker(load_lattice(REPO / "lattice.toml"), task, "eu-west", "fuzz", KafkaSettings(bootstrap="none:1"))
    worker.load()
    return worker


def record(value: bytes | None, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    size = len(value) if value is not None else 0
    return ConsumerRecord("sl.events.fuzz", 0, offset, 0, 0, b"key", value, None, 3, size, [])


def feed(worker: Worker, values: list[bytes | None]) -> set[int]:
    """Run one batch of raw record values through the worker's steps; the indices answered.

    Raises AssertionError when the worker broke a promise; any other exception is an escape.
    """
    batch = worker.intake.validate([record(v, i) for i, v in enumerate(values)])
    if batch.accepted:
        x = worker.intake.model_input(batch)
        if batch.accepted:
            runtime = worker.runtime
            assert runtime is not None
            isolated = runtime.run_isolating(x)
            if isolated.failures:
                reject_failed_rows(batch, isolated, worker.node_id)
            if isolated.inferred is not None:
                results = worker.answers.results(batch, isolated.inferred, runtime.model)
                assert len(results) == len(batch.accepted)
                for item in results:
                    codecs().result.decode(item.message[1])
    handled = sorted([m.offset for m, _ in batch.accepted] + [m.offset for m, _ in batch.rejected])
    assert handled == list(range(len(values))), "every record is answered or dead-lettered, once"
    letters = worker.answers.dead_letters(batch)
    assert len(letters) == len(batch.rejected)
    for (_, err), (_, (_, value, _, _, headers), _) in zip(batch.rejected, letters, strict=True):
        assert isinstance(err, InvalidEvent) and err.kind in REASON_KINDS, f"unclassified: {err!r}"
        assert err.reason and headers and dict(headers)["sl.error.kind"] == err.kind.encode()
        dead = codecs().dead_letter.decode(value)
        assert dead["reason"] == err.reason and dead["kind"] == err.kind
    return {m.offset for m, _ in batch.accepted}


def feed_between(worker: Worker, value: bytes, good: bytes) -> None:
    """One hostile value between two valid events: whatever it is, its neighbours are answered."""
    answered = feed(worker, [good, value, good])
    assert {0, 2} <= answered, "a bad record took a valid neighbour down with it"


def valid_event(task: str, rng: np.random.Generator) -> bytes:
    """A valid event of the repo's `task`, to seed mutations from."""
    lattice = load_lattice(REPO / "lattice.toml")
    spec = lattice.task(task)
    region = lattice.regions[int(rng.integers(len(lattice.regions)))].name
    rec = {
        "event_id": f"seed-{rng.integers(1 << 30)}",
        "event_time_us": 1_700_000_000_000_000,
        "region": region,
        "task": task,
        "source_id": f"device-{rng.integers(100)}",
        "tensor": None,
        "text": None,
    }
    if spec.input == "text":
        rec["text"] = "my invoice shows a double charge"
    else:
        rec["tensor"] = tensor_record(rng.random(spec.shape).astype(spec.np_dtype))
    return codecs().event.encode(rec)


def main() -> None:
    """atheris entry point: python tests/fuzzing.py TASK [libFuzzer flags and corpus dirs]."""
    import atheris

    task = sys.argv.pop(1)
    worker = make_worker(task)

    good = valid_event(task, np.random.default_rng(0))

    def one_input(data: bytes) -> None:
        feed_between(worker, data, good)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
