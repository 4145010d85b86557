"""Hostile input: random and mutated bytes through the worker's steps (hypothesis and atheris).

No exception may escape; every invalid record is dead-lettered with a classified reason; a
bad record never takes a valid neighbour in its batch down with it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fuzzing import feed, feed_between, make_worker, valid_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlattice.worker.runtime import Worker

FUZZ_EXAMPLES = 1000


@pytest.fixture(scope="module", params=["sensor", "language"])
def worker(request: pytest.FixtureRequest, models: dict[str, Path]) -> Worker:
    return make_worker(request.param)


@st.composite
def mutated(draw: st.DrawFn, task: str) -> bytes:
    """A valid event of `task` with bytes flipped, cut, inserted or spliced."""
    data = bytearray(valid_event(task, np.random.default_rng(draw(st.integers(0, 2**32 - 1)))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:  # a length or count field set to something extreme
            data[at : at + 1] = draw(
                st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\x01", b"\x7f", b"\x80\x80\x80\x80\x80"])
            )
    return bytes(data)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_and_mutated_bytes_never_escape_and_are_dead_lettered_with_a_reason(worker: Worker, data) -> None:
    task = worker.task.name
    good = valid_event(task, np.random.default_rng(1))
    value = data.draw(st.one_of(st.binary(max_size=4096), mutated(task)))
    feed_between(worker, value, good)


def test_records_without_a_value_and_empty_records_are_dead_lettered(worker: Worker) -> None:
    assert feed(worker, [None, b"", b"\xc3\x01"]) == set()


def test_atheris_finds_no_escape(worker: Worker, tmp_path: Path) -> None:
    """Coverage-guided: libFuzzer mutates seeds of valid events through the same harness."""
    pytest.importorskip("atheris", reason="atheris has no wheel for this platform")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(7)
    for i in range(8):
        (corpus / f"seed{i}").write_bytes(valid_event(worker.task.name, rng))
    harness = Path(__file__).with_name("fuzzing.py")
    cmd = [
        sys.executable,
        str(harness),
        worker.task.name,
        "-runs=5000",
        "-max_len=4096",
        "-seed=1",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"atheris found an escape:\n{done.stderr[-4000:]}"
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs.group(1)) >= 5000
    print(f"\natheris ({worker.task.name}): {runs.group(1)} inputs, no escape")
