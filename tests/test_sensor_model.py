"""The sensor-fusion anomaly model: quality on held-out data, graph = numpy, deterministic build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from workers.sensor import model, signals


def test_held_out_roc_auc_is_at_least_095(sensor_model_path: Path) -> None:
    held_out = signals.generate(4000, seed=12345, anomaly_rate=0.15)
    session = ort.InferenceSession(str(sensor_model_path), providers=["CPUExecutionProvider"])
    score, flag = session.run(["score", "anomaly"], {"windows": held_out.x})
    assert roc_auc_score(held_out.anomaly, score) >= 0.95
    assert (flag == held_out.anomaly).mean() >= 0.95
    for kind in signals.ANOMALY_KINDS:  # every kind of fault is caught, not just the easy ones
        caught = flag[np.array(held_out.kind) == kind]
        assert caught.mean() >= 0.8, kind


def test_the_graph_computes_the_same_score_as_numpy(sensor_model_path: Path) -> None:
    x = signals.generate(256, seed=3).x
    mu, w, _ = model.fit(signals.generate(model.TRAIN_WINDOWS, seed=1, anomaly_rate=0.0).x)
    z = (model.features(x) - mu) @ w
    expected = (z * z).sum(axis=1) / model.N_FEATURES
    session = ort.InferenceSession(str(sensor_model_path), providers=["CPUExecutionProvider"])
    (score,) = session.run(["score"], {"windows": x})
    np.testing.assert_allclose(score, expected, rtol=1e-3, atol=1e-3)


def test_the_build_is_deterministic_and_loadable_by_onnxruntime(tmp_path: Path, sensor_model_path: Path) -> None:
    again = tmp_path / "again.onnx"
    model.build(again)
    assert again.read_bytes() == sensor_model_path.read_bytes()
    assert onnx.load(str(again)).ir_version <= 13


def test_generated_windows_are_plausible() -> None:
    w = signals.generate(1000, seed=5, anomaly_rate=0.2)
    assert w.x.shape == (1000, 3, 64) and w.x.dtype == np.float32
    assert 0.15 < w.anomaly.mean() < 0.25
    temp, vib, cur = w.x[~w.anomaly].transpose(1, 0, 2)
    assert 35 < temp.mean() < 75 and abs(vib.mean()) < 0.2 and 7 < cur.mean() < 13
