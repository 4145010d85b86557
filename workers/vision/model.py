"""The vision task: a handwritten-digit classifier on scikit-learn's bundled digits, in ONNX.

Events carry 32x32 uint8 grayscale images. Everything between those bytes and the class
lives in the graph: scaling to [0, 1], resizing to 16x16, per-pixel standardisation, then a
one-hidden-layer MLP and a softmax. Training features come from running the very same
preprocessing nodes in ONNX Runtime, so training and serving cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from streamlattice.inference.tasks import Annotations, TaskContext
from workers.onnx_build import const, model

IMAGE = 32  # the events' image side
FEATURE = 16  # the side the graph resizes to
CLASSES = 10
HIDDEN = 64
SEED = 0


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as 32x32 uint8 images (upscaled from 8x8, 0..16 -> 0..255) and their labels."""
    digits = load_digits()
    small = (digits.images * (255 / 16)).round().astype(np.uint8)  # [n, 8, 8]
    images = np.repeat(np.repeat(small, IMAGE // 8, axis=1), IMAGE // 8, axis=2)
    return images, digits.target.astype(np.int64)


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, test images, train labels, test labels): a fixed, stratified 75/25 split."""
    images, labels = digit_images()
    parts = train_test_split(images, labels, test_size=0.25, random_state=SEED, stratify=labels)
    return parts[0], parts[1], parts[2], parts[3]


def _preprocess_nodes() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    n = helper.make_node
    nodes = [
        n("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        n("Mul", ["pixels", "inv255"], ["unit"]),
        n("Unsqueeze", ["unit", "channel_axis"], ["nchw"]),
        n("Resize", ["nchw", "", "half"], ["small"], mode="linear"),
        n("Reshape", ["small", "flat_shape"], ["flat"]),
    ]
    inits = [
        const("inv255", 1 / 255),
        const("channel_axis", [1], np.int64),
        const("half", [1, 1, FEATURE / IMAGE, FEATURE / IMAGE]),
        const("flat_shape", [-1, FEATURE * FEATURE], np.int64),
    ]
    return nodes, inits


def _image_input() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", IMAGE, IMAGE])


def features(images: np.ndarray) -> np.ndarray:
    """[n, 256] features of uint8 images, computed by the graph's own preprocessing nodes."""
    nodes, inits = _preprocess_nodes()
    out = helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", FEATURE * FEATURE])
    pre = model(nodes, "vision_preprocess", [_image_input()], [out], inits)
    session = ort.InferenceSession(pre.SerializeToString(), providers=["CPUExecutionProvider"])
    (flat,) = session.run(None, {"image": images})
    return np.asarray(flat)


def train() -> tuple[MLPClassifier, np.ndarray, np.ndarray]:
    """The classifier and the standardisation (mean, std) it was trained with."""
    train_x, _, train_y, _ = split()
    f = features(train_x)
    mean, std = f.mean(axis=0), f.std(axis=0) + 1e-3
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, max_iter=600, random_state=SEED)
    with threadpool_limits(1):  # one BLAS thread: the same weights on every run
        clf.fit((f - mean) / std, train_y)
    return clf, mean.astype(np.float32), std.astype(np.float32)


def graph(clf: MLPClassifier, mean: np.ndarray, std: np.ndarray) -> onnx.ModelProto:
    """image [N, 32, 32] uint8 -> probabilities [N, 10] float32, label [N] int64."""
    nodes, inits = _preprocess_nodes()
    n = helper.make_node
    nodes += [
        n("Sub", ["flat", "mean"], ["centered"]),
        n("Div", ["centered", "std"], ["standard"]),
        n("Gemm", ["standard", "w1", "b1"], ["hidden_pre"]),
        n("Relu", ["hidden_pre"], ["hidden"]),
        n("Gemm", ["hidden", "w2", "b2"], ["logits"]),
        n("Softmax", ["logits"], ["probabilities"], axis=1),
        n("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    inits += [
        const("mean", mean),
        const("std", std),
        const("w1", clf.coefs_[0]),
        const("b1", clf.intercepts_[0]),
        const("w2", clf.coefs_[1]),
        const("b2", clf.intercepts_[1]),
    ]
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES]),
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
    ]
    return model(nodes, "vision_digits", [_image_input()], outputs, inits)


def build(path: Path) -> None:
    """Train on the fixed training split and write the ONNX model to `path`."""
    clf, mean, std = train()
    path.write_bytes(graph(clf, mean, std).SerializeToString())


def postprocess(outputs: dict[str, np.ndarray], ctx: TaskContext) -> Annotations:
    """Per event: the digit as the label and its probability as the score."""
    labels = outputs["label"]
    scores = outputs["probabilities"][np.arange(len(labels)), labels]
    return Annotations([str(d) for d in labels.tolist()], scores)


def sample(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Held-out digit images for the load generator, from 16 cameras."""
    _, test_x, _, _ = split()
    idx = np.random.default_rng(seed).integers(0, len(test_x), n)
    return test_x[idx], [f"camera-{i % 16:02d}" for i in idx]
