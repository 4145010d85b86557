"""The inference hand-off: a batch's model input goes to ONNX Runtime on a thread of its own.

While the model works on batch k, the event loop collects and validates batch k+1. A model
that raises on some events (see inference.tasks.isolate) fails only those: they become
rejections with their own exception, and the rest of the batch is answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from streamlattice.config import Task
from streamlattice.errors import InvalidEvent
from streamlattice.inference.models import load_model
from streamlattice.inference.tasks import Inferred, Isolated, TaskRuntime
from streamlattice.worker.batch import Batch

log = logging.getLogger(__name__)


class Inference:
    """A task's model, loaded once and run on one batch at a time off the event loop."""

    def __init__(self, task: Task, node_id: str, threads: int = 1, providers: tuple[str, ...] | None = None) -> None:
        self.task = task
        self.node_id = node_id
        self.threads = threads
        self.providers = providers
        self.runtime: TaskRuntime | None = None
        self.in_flight = 0  # batches handed to the thread and not finished
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{task.name}")

    def load(self) -> TaskRuntime:
        """Load the model with its hooks and warm it up, so the first real batch is not an outlier."""
        runtime = TaskRuntime(self.task, load_model(self.task, self.threads, self.providers))
        runtime.warm_up(tuple(sorted({1, self.task.max_batch})))
        self.runtime = runtime
        return runtime

    async def loaded(self) -> TaskRuntime:
        """The runtime, loaded on the inference thread if it is not yet."""
        if self.runtime is not None:
            return self.runtime
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    def start(self, batch: Batch, x: np.ndarray) -> None:
        """Hand `x`, the model input of `batch`'s accepted events, to the inference thread."""
        assert self.runtime is not None
        batch.infer_started = time.perf_counter()
        batch.inference = asyncio.get_running_loop().run_in_executor(self._executor, self.runtime.run_isolating, x)
        self.in_flight += 1
        batch.inference.add_done_callback(self._done)

    def _done(self, _: asyncio.Future[Isolated]) -> None:
        self.in_flight -= 1

    async def finish(self, batch: Batch) -> tuple[Inferred | None, float]:
        """Wait for `batch`'s inference: the outputs of its accepted events (None if none is left)
        and the seconds it took. Events the model failed on are moved to the rejections."""
        if batch.inference is None:
            return None, 0.0
        try:
            isolated = await batch.inference
        except Exception as e:  # not the model (it is isolated per event): dead-letter the batch, keep serving
            log.warning("node %s: inference failed on a batch of %d: %s", self.node_id, len(batch.accepted), e)
            batch.rejected += [(m, InvalidEvent("inference", f"model failed: {e!r}")) for m, _ in batch.accepted]
            batch.accepted = []
            return None, 0.0
        infer_s = time.perf_counter() - batch.infer_started
        if isolated.failures:
            reject_failed_rows(batch, isolated, self.node_id)
        return isolated.inferred, infer_s

    def shutdown(self) -> None:
        """Let the thread go (a batch still running finishes on its own)."""
        self._executor.shutdown(wait=False)


def reject_failed_rows(batch: Batch, isolated: Isolated, node_id: str) -> None:
    """Move the events the model raised on to the rejections, each with its own exception."""
    failed = dict(isolated.failures)
    log.warning(
        "node %s: the model raised on %d of %d events (first: %r); dead-lettering only those",
        node_id,
        len(failed),
        len(batch.accepted),
        next(iter(failed.values())),
    )
    batch.rejected += [
        (batch.accepted[i][0], InvalidEvent("inference", f"model failed on this event: {e!r}"))
        for i, e in failed.items()
    ]
    batch.accepted = [batch.accepted[i] for i in isolated.kept]
