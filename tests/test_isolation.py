"""Isolating the events a model raises on (streamlattice.tasks.isolate): pure, no broker."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlattice.inference.tasks import Annotations, Inferred, isolate


def model(poison: float) -> tuple[list[int], object]:
    """A batch model that refuses any batch holding `poison`, and counts its runs."""
    runs: list[int] = []

    def run(batch: np.ndarray) -> Inferred:
        runs.append(len(batch))
        if (batch[:, 0] == poison).any():
            raise ValueError("poisoned")
        return Inferred(
            {"double": batch * 2, "first": batch[:, 0].copy()},
            [["big"] if row[0] > 50 else [] for row in batch],
            Annotations([f"l{int(row[0])}" for row in batch], batch[:, 0].astype(np.float64)),
        )

    return runs, run


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 64), poisoned=st.sets(st.integers(0, 63), max_size=64))
def test_every_other_event_gets_its_own_row_and_each_poisoned_one_fails_alone(n: int, poisoned: set[int]) -> None:
    batch = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    bad = sorted(i for i in poisoned if i < n)
    batch[bad, 0] = -1.0
    runs, run = model(-1.0)

    isolated = isolate(run, batch)  # type: ignore[arg-type]

    good = [i for i in range(n) if i not in bad]
    assert isolated.kept == good
    assert [i for i, _ in isolated.failures] == bad
    assert all(str(e) == "poisoned" for _, e in isolated.failures)
    if not good:
        assert isolated.inferred is None
        return
    inferred = isolated.inferred
    assert inferred is not None
    np.testing.assert_array_equal(inferred.outputs["double"], batch[good] * 2)
    np.testing.assert_array_equal(inferred.outputs["first"], batch[good, 0])
    assert inferred.flags == [["big"] if batch[i, 0] > 50 else [] for i in good]
    assert inferred.annotations.labels == [f"l{int(batch[i, 0])}" for i in good]
    np.testing.assert_array_equal(inferred.annotations.scores, batch[good, 0])
    if len(bad) == 1:  # one poisoned event costs about two runs per halving
        assert len(runs) <= 2 * int(np.ceil(np.log2(n))) + 1


def test_a_clean_batch_runs_once() -> None:
    batch = np.ones((16, 2), dtype=np.float32)
    runs, run = model(-1.0)
    isolated = isolate(run, batch)  # type: ignore[arg-type]
    assert runs == [16] and isolated.kept == list(range(16)) and not isolated.failures
