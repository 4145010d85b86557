"""The sensor-fusion anomaly model: per-channel window features and a Mahalanobis score, in ONNX.

Trained on normal windows only (as a condition monitor is: faults are rare and varied),
the model scores how far a window's features lie from normal operation, scaled so that a
normal window scores about 1; the flag is set above the 99.5th percentile of normal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamlattice.inference.tasks import Annotations, TaskContext
from workers.sensor.signals import CHANNELS, SAMPLES, generate

OPSET = 21
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 would write 14 by default
EPS = 1e-6
FEATURES = ("log_std", "log_max_dev", "log_roughness", "slope")
N_FEATURES = len(FEATURES) * len(CHANNELS)
TRAIN_WINDOWS = 20_000
FLAG_QUANTILE = 0.995


def _slope_weights() -> np.ndarray:
    t = np.arange(SAMPLES, dtype=np.float64)
    c = t - t.mean()
    return (c / (c @ c)).astype(np.float32)


def features(x: np.ndarray) -> np.ndarray:
    """[n, 12] features of [n, 3, 64] windows, exactly as the ONNX graph computes them."""
    x = x.astype(np.float32)
    d = x - x.mean(axis=2, keepdims=True)
    std = np.sqrt((d * d).mean(axis=2))
    max_dev = np.abs(d).max(axis=2)
    rough = np.abs(np.diff(x, axis=2)).mean(axis=2)
    slope = x @ _slope_weights()
    return np.concatenate([np.log(std + EPS), np.log(max_dev + EPS), np.log(rough + EPS), slope], axis=1).astype(
        np.float32
    )


def fit(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, whitening matrix, flag threshold) from normal windows."""
    f = features(normal).astype(np.float64)
    mu = f.mean(axis=0)
    cov = np.cov(f - mu, rowvar=False) + 1e-6 * np.eye(f.shape[1])
    # cov^-1 = W W^T with W = inverse of cov's Cholesky factor, transposed.
    w = np.linalg.inv(np.linalg.cholesky(cov)).T
    z = (f - mu) @ w
    score = (z * z).sum(axis=1) / f.shape[1]
    return mu.astype(np.float32), w.astype(np.float32), float(np.quantile(score, FLAG_QUANTILE))


def graph(mu: np.ndarray, w: np.ndarray, threshold: float) -> onnx.ModelProto:
    """The ONNX model: windows [N, 3, 64] float32 -> score [N] float32, anomaly [N] bool."""
    c = numpy_helper.from_array
    inits = [
        c(np.array([2], np.int64), "axis2"),
        c(np.array([1], np.int64), "axis1"),
        c(np.array([0], np.int64), "zero"),
        c(np.array([1], np.int64), "one"),
        c(np.array([SAMPLES - 1], np.int64), "last"),
        c(np.array([SAMPLES], np.int64), "end"),
        c(np.array(EPS, np.float32), "eps"),
        c(_slope_weights().reshape(SAMPLES, 1), "slope_w"),
        c(mu, "mu"),
        c(w, "whiten"),
        c(np.array(1.0 / N_FEATURES, np.float32), "inv_k"),
        c(np.array(threshold, np.float32), "threshold"),
    ]
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["windows", "axis2"], ["mean"], keepdims=1),
        n("Sub", ["windows", "mean"], ["dev"]),
        n("Mul", ["dev", "dev"], ["sq"]),
        n("ReduceMean", ["sq", "axis2"], ["var"], keepdims=0),
        n("Sqrt", ["var"], ["std"]),
        n("Abs", ["dev"], ["abs_dev"]),
        n("ReduceMax", ["abs_dev", "axis2"], ["max_dev"], keepdims=0),
        n("Slice", ["windows", "one", "end", "axis2"], ["later"]),
        n("Slice", ["windows", "zero", "last", "axis2"], ["earlier"]),
        n("Sub", ["later", "earlier"], ["diff"]),
        n("Abs", ["diff"], ["abs_diff"]),
        n("ReduceMean", ["abs_diff", "axis2"], ["rough"], keepdims=0),
        n("MatMul", ["windows", "slope_w"], ["slope3"]),
        n("Squeeze", ["slope3", "axis2"], ["slope"]),
        *[n("Add", [f, "eps"], [f"{f}_e"]) for f in ("std", "max_dev", "rough")],
        *[n("Log", [f"{f}_e"], [f"log_{f}"]) for f in ("std", "max_dev", "rough")],
        n("Concat", ["log_std", "log_max_dev", "log_rough", "slope"], ["features"], axis=1),
        n("Sub", ["features", "mu"], ["centered"]),
        n("MatMul", ["centered", "whiten"], ["z"]),
        n("ReduceSumSquare", ["z", "axis1"], ["d2"], keepdims=0),
        n("Mul", ["d2", "inv_k"], ["score"]),
        n("Greater", ["score", "threshold"], ["anomaly"]),
    ]
    g = helper.make_graph(
        nodes,
        "sensor_anomaly",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["N", len(CHANNELS), SAMPLES])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("anomaly", TensorProto.BOOL, ["N"]),
        ],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streamlattice")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build(path: Path) -> None:
    """Train on generated normal windows (fixed seed) and write the ONNX model to `path`."""
    data = generate(TRAIN_WINDOWS, seed=1, anomaly_rate=0.0)
    mu, w, threshold = fit(data.x)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph(mu, w, threshold).SerializeToString())


def postprocess(outputs: dict[str, np.ndarray], ctx: TaskContext) -> Annotations:
    """Per event: label "anomaly" or "normal", and the anomaly score."""
    return Annotations(np.where(outputs["anomaly"], "anomaly", "normal").tolist(), outputs["score"])
