"""The micro-batching policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlattice.inference.batching import BatchPolicy


def test_a_full_batch_goes_at_once() -> None:
    p = BatchPolicy(max_batch=64, max_wait_ms=20)
    assert p.is_ready(64, 0.0)
    assert not p.is_ready(63, 0.0)


def test_a_partial_batch_goes_when_its_oldest_event_has_waited_long_enough() -> None:
    p = BatchPolicy(max_batch=64, max_wait_ms=20)
    assert not p.is_ready(5, 19.9)
    assert p.is_ready(5, 20.0)


def test_an_empty_batch_never_goes() -> None:
    assert not BatchPolicy(max_batch=64, max_wait_ms=0).is_ready(0, 1e9)


def test_a_free_model_takes_whatever_is_there_at_once() -> None:
    p = BatchPolicy(max_batch=64, max_wait_ms=20)
    assert p.is_ready(1, 0.0, model_free=True)
    assert not p.is_ready(1, 0.0, model_free=False)  # busy: let the batch grow
    assert not p.is_ready(0, 0.0, model_free=True)


def test_polling_waits_only_until_the_deadline_and_asks_for_what_fits() -> None:
    p = BatchPolicy(max_batch=64, max_wait_ms=20, busy_poll_ms=5)
    assert p.next_poll(0, 0.0, idle_ms=100) == (100, 64)
    assert p.next_poll(10, 5.0) == (5, 54)  # busy model: look again soon
    assert p.next_poll(10, 18.0) == (2, 54)  # but never past the deadline
    assert p.next_poll(10, 25.0) == (1, 54)  # late: poll briefly, never with a zero wait


@given(st.integers(1, 10_000), st.floats(0, 1000), st.integers(0, 10_000), st.floats(0, 5000))
def test_poll_never_overfills_and_never_waits_past_the_deadline(
    max_batch: int, max_wait: float, size: int, age: float
) -> None:
    p = BatchPolicy(max_batch=max_batch, max_wait_ms=max_wait)
    size = min(size, max_batch)
    timeout, room = p.next_poll(size, age)
    assert size + room == max_batch
    if size:
        assert timeout <= max(max_wait - age, 1.0) + 1


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(max_batch=0, max_wait_ms=10)
    with pytest.raises(ValueError):
        BatchPolicy(max_batch=8, max_wait_ms=-1)
