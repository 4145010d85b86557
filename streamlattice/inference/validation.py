"""What makes an event acceptable to its task: pure checks shared by the producer SDK and the worker."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamlattice.config import Task
from streamlattice.errors import InvalidEvent, PayloadTooLarge
from streamlattice.wire.codec import Record


def check_size(task: Task, size: int) -> None:
    """Refuse an encoded event larger than the task's `max_event_bytes`."""
    if size > task.max_event_bytes:
        raise PayloadTooLarge(
            f"event of {size} bytes exceeds task {task.name!r}'s max_event_bytes={task.max_event_bytes}"
        )


def check_event(task: Task, event: Record) -> None:
    """Refuse a decoded event that does not fit its task (size and values are checked elsewhere)."""
    if event["task"] != task.name:
        raise InvalidEvent("task", f"event is for task {event['task']!r}, not {task.name!r}")
    if task.input == "text":
        if event["text"] is None:
            raise InvalidEvent("shape", f"task {task.name!r} takes text, the event carries none")
        if not event["text"].strip():
            raise InvalidEvent("empty", "text is empty or only white space")
        return
    tensor = event["tensor"]
    if tensor is None:
        raise InvalidEvent("shape", f"task {task.name!r} takes a tensor, the event carries none")
    check_tensor_header(task, tensor["dtype"], tensor["shape"], len(tensor["data"]))


def check_tensor_header(task: Task, dtype: str, shape: Sequence[int], nbytes: int | None = None) -> None:
    """Refuse a tensor whose dtype, shape or byte count is not the task's."""
    if dtype != task.dtype:
        raise InvalidEvent("dtype", f"dtype {dtype} where task {task.name!r} takes {task.dtype}")
    if tuple(shape) != task.shape:
        raise InvalidEvent("shape", f"shape {list(shape)} where task {task.name!r} takes {list(task.shape)}")
    if nbytes is not None and nbytes != task.tensor_nbytes:
        raise InvalidEvent("shape", f"{nbytes} data bytes where shape {list(shape)} {dtype} needs {task.tensor_nbytes}")


def non_finite_rows(batch: np.ndarray) -> np.ndarray:
    """Indices of the rows of a batch holding NaN or ±Inf (none for integer dtypes); vectorised."""
    if not np.issubdtype(batch.dtype, np.floating):
        return np.empty(0, dtype=np.int64)
    finite = np.isfinite(batch.reshape(len(batch), -1)).all(axis=1)
    return np.flatnonzero(~finite)
