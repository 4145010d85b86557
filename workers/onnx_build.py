"""Small helpers the example model builders share: a node maker and the model wrapper."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 21
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 would write 14 by default


def const(name: str, value: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    """An initializer holding `value` as `dtype`."""
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def model(
    nodes: list[onnx.NodeProto],
    name: str,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
) -> onnx.ModelProto:
    """A checked model at our opset and an IR version onnxruntime reads."""
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streamlattice")
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m)
    return m
