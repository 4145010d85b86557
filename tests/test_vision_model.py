"""The vision model: held-out accuracy, preprocessing in the graph, deterministic build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from workers.vision import model


def test_held_out_accuracy_is_at_least_95_percent(models: dict[str, Path]) -> None:
    _, test_x, _, test_y = model.split()
    session = ort.InferenceSession(str(models["vision"]), providers=["CPUExecutionProvider"])
    probabilities, label = session.run(["probabilities", "label"], {"image": test_x})
    assert len(test_y) == 450
    assert (label == test_y).mean() >= 0.95
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities.argmax(axis=1) == label).all()


def test_the_graph_takes_raw_uint8_images_and_does_its_own_preprocessing(models: dict[str, Path]) -> None:
    session = ort.InferenceSession(str(models["vision"]), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.type == "tensor(uint8)" and image.shape[1:] == [32, 32]
    ops = {n.op_type for n in __import__("onnx").load(str(models["vision"])).graph.node}
    assert {"Cast", "Resize", "Sub", "Div"} <= ops  # scaling, resizing, standardisation inside


def test_the_build_is_deterministic(tmp_path: Path, models: dict[str, Path]) -> None:
    again = tmp_path / "vision.onnx"
    model.build(again)
    assert again.read_bytes() == models["vision"].read_bytes()
