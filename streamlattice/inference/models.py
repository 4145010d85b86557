"""Models: building them from the code in the repo, and loading them into ONNX Runtime."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
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


def _manifest(task: Task) -> Path:
    return task.model.with_suffix(".build.json")


def source_hash(task: Task) -> str:
    """A hash of everything the task's builder reads: its package's code and declared input files.

    A builder module may define `build_inputs() -> list[Path]` naming data it reads (weights,
    datasets) so that a change to them rebuilds the model too.
    """
    assert task.builder is not None
    module = importlib.import_module(task.builder.partition(":")[0])
    h = hashlib.sha256(task.builder.encode())
    folder = Path(module.__file__ or ".").parent
    for f in sorted(folder.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    for extra in getattr(module, "build_inputs", lambda: [])():
        h.update(Path(extra).name.encode() + b"\0" + Path(extra).read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class BuildReport:
    """What `models build` did for one task."""

    task: str
    path: Path
    version: str
    action: str  # "built" or "up to date"
    seconds: float


def build_model(task: Task, force: bool = False, progress: Callable[[str], None] = log.info) -> BuildReport:
    """Build the task's model unless it exists and neither its sources nor its file changed since."""
    if task.builder is None:
        raise ConfigError(f"task {task.name!r} has no builder; its model {task.model} is the user's own")
    started = time.monotonic()
    sources = source_hash(task)
    manifest = _manifest(task)
    if not force and task.model.exists() and manifest.exists():
        recorded = json.loads(manifest.read_text())
        if recorded.get("sources") == sources and recorded.get("version") == file_version(task.model):
            return BuildReport(task.name, task.model, recorded["version"], "up to date", time.monotonic() - started)
    progress(f"building model of task {task.name} into {task.model} ...")
    task.model.parent.mkdir(parents=True, exist_ok=True)
    import_path(task.builder)(task.model)
    version = file_version(task.model)
    manifest.write_text(json.dumps({"sources": sources, "version": version}, indent=2))
    return BuildReport(task.name, task.model, version, "built", time.monotonic() - started)


def ensure_model(task: Task, progress: Callable[[str], None] = log.info) -> Path:
    """The task's model file, built by its builder if it does not exist yet."""
    if task.model.exists():
        return task.model
    if task.builder is None:
        raise ConfigError(f"model {task.model} of task {task.name!r} is missing and the task has no builder")
    build_model(task, progress=progress)
    return task.model


PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def provider_name(short: str) -> str:
    """ONNX Runtime's name of a provider given as e.g. "cuda" (full names pass through)."""
    return PROVIDER_NAMES.get(short.strip().lower(), short.strip())


def choose_providers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The wanted providers that are available, in order; CPU when none is. Logs what is missing."""
    names = [provider_name(p) for p in wanted]
    chosen = [p for p in names if p in available]
    missing = [p for p in names if p not in available]
    if not chosen:
        chosen = ["CPUExecutionProvider"]
    if missing:
        log.warning(
            "execution provider(s) %s not available here (available: %s); using %s",
            ", ".join(missing),
            ", ".join(available),
            ", ".join(chosen),
        )
    return chosen


@dataclass
class LoadedModel:
    """An ONNX Runtime session with the facts a result carries about it."""

    name: str
    version: str
    session: ort.InferenceSession
    input_names: list[str]
    output_names: list[str]
    providers: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of the model on one batch of inputs, by name."""
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values, strict=True))


def session_options(threads: int) -> ort.SessionOptions:
    """Options for a small node: `threads` intra-op threads, no inter-op pool, all graph optimisations.

    A 2-core node runs a worker's Kafka I/O on one core while ONNX Runtime computes, so one
    intra-op thread is the default; spinning threads would steal that core from the event loop.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def load_model(task: Task, threads: int = 1, providers: Sequence[str] | None = None) -> LoadedModel:
    """Load the task's model (building it if needed) into ONNX Runtime with the preferred providers."""
    path = ensure_model(task)
    chosen = choose_providers(providers or task.providers, ort.get_available_providers())
    session = ort.InferenceSession(str(path), session_options(threads), providers=chosen)
    return LoadedModel(
        name=task.name,
        version=file_version(path),
        session=session,
        input_names=[i.name for i in session.get_inputs()],
        output_names=[o.name for o in session.get_outputs()],
        providers=session.get_providers(),
    )
