"""A sensor preprocess hook that raises on marked events, as a model can on inputs it cannot take.

An event is poisoned when its first value is POISON; the hook refuses any batch that holds one,
as ONNX Runtime refuses a whole batch for one bad row.
"""

from __future__ import annotations

import numpy as np

from streamlattice.inference.tasks import ModelInput, TaskContext

POISON = 1234.5


def preprocess(batch: np.ndarray, ctx: TaskContext) -> ModelInput:
    poisoned = int(np.count_nonzero(batch[:, 0, 0] == POISON))
    if poisoned:
        raise ValueError(f"poisoned input: {poisoned} of {len(batch)} rows")
    return ModelInput({ctx.model.input_names[0]: batch})
