"""Small ONNX graphs for the import tests, built with onnx.helper (no PyTorch), and onnxruntime's
float outputs of them."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the ONNX import needs the onnx package (the [onnx] extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


class Builder:
    """A chain of nodes from input 'x' of shape (N, *sample), each taking the last output."""

    def __init__(self, sample, seed: int = 0, batch="N"):
        self.sample, self.rng = tuple(sample), np.random.default_rng(seed)
        self.nodes, self.inits, self.last, self.count, self.batch = [], [], "x", 0, batch

    def const(self, value, dtype=np.float32) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weights(self, *shape, scale=0.5) -> str:
        return self.const(self.rng.normal(0, scale, shape))

    def add(self, op: str, *consts, first_const: bool = False, outputs: int = 1, **attrs) -> "Builder":
        self.count += 1
        out = [f"y{self.count}"] + [f"y{self.count}_{i}" for i in range(1, outputs)]
        inputs = [*consts, self.last] if first_const else [self.last, *consts]
        self.nodes.append(helper.make_node(op, inputs, out, name=f"n{self.count}_{op}", **attrs))
        self.last = out[0]
        return self

    def model(self, opset: int = 17, out_dims=None):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.batch, *self.sample])
        y = helper.make_tensor_value_info(self.last, TensorProto.FLOAT, out_dims)
        graph = helper.make_graph(self.nodes, "test", [x], [y], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model

    def save(self, path, **kwargs):
        onnx.save(self.model(**kwargs), str(path))
        return path


def dense(b: Builder, fan_in: int, fan_out: int, activation: str | None = "Relu") -> Builder:
    b.add("Gemm", b.weights(fan_out, fan_in), b.weights(fan_out, scale=0.1), transB=1)
    return b.add(activation) if activation else b


def conv(b: Builder, c_in: int, c_out: int, kernel, activation: str | None = "Relu", **attrs) -> Builder:
    kernel = list(kernel)
    b.add("Conv", b.weights(c_out, c_in, *kernel), b.weights(c_out, scale=0.1), kernel_shape=kernel, **attrs)
    return b.add(activation) if activation else b


def onnx_outputs(path, x) -> np.ndarray:
    """onnxruntime's outputs of the model at path for x (N, *sample), float32."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.asarray(x, np.float32)})[0]
