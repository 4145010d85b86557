"""Models: building them from the code in the repo, and loading them into ONNX Runtime."""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from streamlattice.config import Task
from streamlattice.errors import ConfigError

log = logging.getLogger(__name__)


def import_path(spec: str) -> Any:
    """The object a "module:attribute" string names."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"{spec!r} is not an import path of the form module:attribute")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import {spec}: {e}") from None


def file_version(path: Path) -> str:
    """A model's version: the first 12 hex digits of its content's SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def ensure_model(task: Task, progress: Callable[[str], None] = log.info) -> Path:
    """The task's model file, built by its builder if it does not exist yet."""
    if task.model.exists():
        return task.model
    if task.builder is None:
        raise ConfigError(f"model {task.model} of task {task.name!r} is missing and the task has no builder")
    progress(f"building model of task {task.name} into {task.model} ...")
    import_path(task.builder)(task.model)
    return task.model


@dataclass
class LoadedModel:
    """An ONNX Runtime session with the facts a result carries about it."""

    name: str
    version: str
    session: ort.InferenceSession
    input_name: str
    output_names: list[str]
    providers: list[str]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model on one batch, by name."""
        values = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, values, strict=True))


def session_options(threads: int) -> ort.SessionOptions:
    """Options for a small node: `threads` intra-op threads, one inter-op, all graph optimisations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def load_model(task: Task, threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",)) -> LoadedModel:
    """Load the task's model (building it if needed) into ONNX Runtime."""
    path = ensure_model(task)
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), session_options(threads), providers=chosen)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConfigError(f"model {path} has {len(inputs)} inputs; a task model takes exactly one")
    return LoadedModel(
        name=task.name,
        version=file_version(path),
        session=session,
        input_name=inputs[0].name,
        output_names=[o.name for o in session.get_outputs()],
        providers=session.get_providers(),
    )
