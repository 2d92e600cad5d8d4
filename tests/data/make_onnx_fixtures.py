"""Writes the ONNX fixtures of the import tests (a few KB each), with onnx.helper and a fixed seed:

    python tests/data/make_onnx_fixtures.py

- onnx_mlp.onnx: input (N, 12) raw values in [0, 10]; (x - 5) / 2.5 per feature scale; Gemm 12->8,
  Relu, Dropout, MatMul 8->6 + Add, LeakyRelu 0.1, Gemm 6->3, Softmax (a PyTorch MLP's shape).
- onnx_cnn.onnx: input (N, 2, 7, 6) in [0, 1]; Conv 3x3 with asymmetric pads [1, 0, 2, 1] and a
  BatchNormalization after it, Relu, MaxPool 2x2 stride 2 padded [0, 0, 1, 1], depthwise Conv
  3x3 (group 4), Tanh, GlobalAveragePool, Flatten, Gemm 4->5 (channels first, as PyTorch's).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from onnx_helpers import Builder, conv, dense  # noqa: E402


def mlp() -> Builder:
    b = Builder((12,), seed=1)
    b.add("Sub", b.const(np.full(12, 5.0)))
    b.add("Div", b.const(np.linspace(2.0, 3.0, 12)))
    dense(b, 12, 8)
    b.add("Dropout")
    b.add("MatMul", b.weights(8, 6))
    b.add("Add", b.weights(6, scale=0.1))
    b.add("LeakyRelu", alpha=0.1)
    dense(b, 6, 3, activation=None)
    return b.add("Softmax", axis=-1)


def cnn() -> Builder:
    b = Builder((2, 7, 6), seed=2)
    conv(b, 2, 4, (3, 3), activation=None, pads=[1, 2, 0, 1])
    rng = np.random.default_rng(3)
    b.add("BatchNormalization", b.const(rng.uniform(0.5, 2, 4)), b.const(rng.normal(0, 0.2, 4)),
          b.const(rng.normal(0, 0.2, 4)), b.const(rng.uniform(0.5, 2, 4)), epsilon=1e-5)  # fmt: skip
    b.add("Relu")
    b.add("MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 1, 0, 1])
    b.add("Conv", b.weights(4, 1, 3, 3), b.weights(4, scale=0.1), kernel_shape=[3, 3], group=4, pads=[1, 1, 1, 1])
    b.add("Tanh")
    b.add("GlobalAveragePool")
    b.add("Flatten", axis=1)
    return dense(b, 4, 5, activation=None)


def main() -> None:
    for name, builder in (("onnx_mlp.onnx", mlp()), ("onnx_cnn.onnx", cnn())):
        onnx.save(builder.model(), str(HERE / name))
        print(f"wrote {name} ({(HERE / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
