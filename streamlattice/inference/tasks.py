"""A task's model with its hooks: how a batch becomes model inputs and outputs become labels.

Hooks are plain functions named by import path in lattice.toml, so a user brings a task
without touching streamlattice:

    preprocess(batch, ctx) -> ModelInput     batch: [n, *shape] array, or [n] texts (object array)
    postprocess(outputs, ctx) -> Annotations outputs: every model output by name, one row per event

Both work on the whole batch at once (vectorised), never per event. `ctx` is the
TaskContext: the task, the loaded model, and a `state` dict for what a hook computes once.
Without a preprocess hook the batch is the model's single input; without a postprocess
hook results carry the raw outputs only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlattice.config import Task
from streamlattice.errors import ConfigError
from streamlattice.inference.models import LoadedModel, import_path


@dataclass
class ModelInput:
    """The model's inputs for one batch, and per-event flags (e.g. "truncated") for the results."""

    inputs: dict[str, np.ndarray]
    flags: list[list[str]] | None = None


@dataclass
class Annotations:
    """Per event: a label and a score, either may be absent."""

    labels: list[str | None] | None = None
    scores: np.ndarray | None = None


@dataclass
class TaskContext:
    """What hooks are given: the task, its loaded model, and a memo for their own state."""

    task: Task
    model: LoadedModel
    state: dict[str, Any] = field(default_factory=dict)
    runtime: TaskRuntime | None = None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch through the task's own preprocessing and model (e.g. to embed labels once)."""
        assert self.runtime is not None
        return self.runtime.infer(batch)[0]


@dataclass
class Inferred:
    """A batch after the model: its outputs, preprocessing's flags and postprocessing's annotations."""

    outputs: dict[str, np.ndarray]
    flags: list[list[str]] | None
    annotations: Annotations


@dataclass
class Isolated:
    """A batch after the model with failing events isolated: the others' results, in batch order.

    `inferred` holds the rows of `kept` (None when every event failed); `failures` the position
    in the batch and the exception of each event the model raised on by itself.
    """

    inferred: Inferred | None
    kept: list[int]
    failures: list[tuple[int, Exception]]


def merge(parts: list[Inferred]) -> Inferred:
    """One Inferred of several batches' rows, in order (every output's first axis is the batch)."""
    if len(parts) == 1:
        return parts[0]
    outputs = {name: np.concatenate([p.outputs[name] for p in parts]) for name in parts[0].outputs}
    flags = None
    if any(p.flags is not None for p in parts):
        flags = [f for p in parts for f in (p.flags or [[] for _ in range(_rows(p))])]
    labels = None
    if any(p.annotations.labels is not None for p in parts):
        labels = [x for p in parts for x in (p.annotations.labels or [None] * _rows(p))]
    scores = None
    if all(p.annotations.scores is not None for p in parts):
        scores = np.concatenate([np.asarray(p.annotations.scores) for p in parts])
    return Inferred(outputs, flags, Annotations(labels, scores))


def _rows(inferred: Inferred) -> int:
    return len(next(iter(inferred.outputs.values()))) if inferred.outputs else 0


def isolate(run: Callable[[np.ndarray], Inferred], batch: np.ndarray) -> Isolated:
    """`run` on the whole batch; if it raises, on halves of it, until each failure is one event.

    One poisonous event costs about 2·log2(n) extra runs, and never its neighbours' results.
    """
    parts: list[Inferred] = []
    kept: list[int] = []
    failures: list[tuple[int, Exception]] = []
    todo = [np.arange(len(batch))]
    while todo:
        rows = todo.pop()
        try:
            inferred = run(batch if len(rows) == len(batch) else batch[rows])
        except Exception as e:
            if len(rows) == 1:
                failures.append((int(rows[0]), e))
            else:
                half = len(rows) // 2
                todo += [rows[half:], rows[:half]]  # the first half is run first: results stay in order
            continue
        parts.append(inferred)
        kept += rows.tolist()
    return Isolated(merge(parts) if parts else None, kept, sorted(failures, key=lambda f: f[0]))


# Per-event Python cost of a worker around the model (decode, validate, encode, produce),
# measured on the sensor task; refined by the node's own measurement once it serves.
WORKER_OVERHEAD_S = 80e-6

Preprocess = Callable[[np.ndarray, TaskContext], ModelInput]
Postprocess = Callable[[dict[str, np.ndarray], TaskContext], Annotations]


class TaskRuntime:
    """A task's model bound to its hooks."""

    def __init__(self, task: Task, model: LoadedModel) -> None:
        self.task = task
        self.model = model
        self.context = TaskContext(task, model)
        self.context.runtime = self
        self.warm_capacity_eps = 0.0
        self._pre: Preprocess | None = import_path(task.preprocess) if task.preprocess else None
        self._post: Postprocess | None = import_path(task.postprocess) if task.postprocess else None
        if self._pre is None and len(model.input_names) != 1:
            raise ConfigError(
                f"model of task {task.name!r} takes inputs {model.input_names}; "
                "a task whose model takes several needs a preprocess hook to make them"
            )

    def prepare(self, batch: np.ndarray) -> ModelInput:
        """The model inputs of a batch."""
        if self._pre is not None:
            return self._pre(batch, self.context)
        return ModelInput({self.model.input_names[0]: batch})

    def infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], list[list[str]] | None]:
        """Outputs of the model on a batch, and the flags preprocessing raised."""
        prepared = self.prepare(batch)
        return self.model.run(prepared.inputs), prepared.flags

    def annotate(self, outputs: dict[str, np.ndarray]) -> Annotations:
        """Labels and scores of a batch's outputs."""
        return self._post(outputs, self.context) if self._post is not None else Annotations()

    def run(self, batch: np.ndarray) -> Inferred:
        """Everything a batch's results carry: preprocess, model, postprocess (in the inference thread)."""
        outputs, flags = self.infer(batch)
        return Inferred(outputs, flags, self.annotate(outputs))

    def run_isolating(self, batch: np.ndarray) -> Isolated:
        """`run`, with the events the model raises on set apart from the others (see `isolate`)."""
        return isolate(self.run, batch)

    def warm_up(self, sizes: tuple[int, ...]) -> None:
        """Run the model at the given batch sizes, so the first real batch is not an outlier.

        Also gives a first capacity estimate (`warm_capacity_eps`) before any event is served.
        """
        for n in sizes:
            if self.task.input == "text":
                batch = np.array(["warm up the model"] * n, dtype=object)
            else:
                batch = np.zeros((n, *self.task.shape), dtype=self.task.np_dtype)
            self.run(batch)
            started = time.perf_counter()
            self.run(batch)
            per_event = (time.perf_counter() - started) / n
        self.warm_capacity_eps = 1.0 / (per_event + WORKER_OVERHEAD_S)
