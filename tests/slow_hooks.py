"""A sensor preprocess hook that makes the model a known, slow speed (for back-pressure tests).

Sleeping in the inference thread costs no CPU, so the publisher and broker keep the machine
while the worker is the bottleneck: SLOW_BATCH_S per batch, whatever its size.
"""

from __future__ import annotations

import os
import time

import numpy as np

from streamlattice.inference.tasks import ModelInput, TaskContext

SLOW_BATCH_S = float(os.environ.get("SL_TEST_SLOW_BATCH_S", "0.025"))


def preprocess(batch: np.ndarray, ctx: TaskContext) -> ModelInput:
    time.sleep(SLOW_BATCH_S)
    return ModelInput({ctx.model.input_names[0]: batch})
