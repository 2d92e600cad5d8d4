"""The integer model as one ONNX graph: int8 input codes in, int8 scores out, the same bytes as qmtik.

    save_onnx("model.int8.onnx", model)      # qmtik export-onnx model.qmt -o model.int8.onnx

ONNX's QLinear operators round halves to even where qmtik rounds them away from zero, so the
graph spells the spec (intref.py) out as the onnxruntime backend does (backends/onnx.py, whose
small protobuf writer this reuses; no onnx package needed):

- activations travel as uint8 u = code + 128, channels first (NCHW) between window layers;
- dense and convolution layers are MatMulInteger / ConvInteger of u with zero point 128 and the
  int8 weights, so the int32 accumulator is sum(code * weight), exactly; a convolution's padding
  is an explicit Pad with the input's zero point (u = zero + 128), so padding is real 0;
- requantization is the numpy backend's float64 arithmetic (backends/common.py says why it is
  exact): y = acc * scale + bias * scale (leaky relu's negative side where acc < -bias), rounded
  half away from zero as sign(y) * floor(|y| + 0.5), plus the output zero point, clamped (relu
  at its zero point); sigmoid and tanh index their 256-entry table with Gather;
- max pools pad with u = 0 (padding never wins); average pools sum their windows exactly with a
  depthwise ConvInteger of ones (global ones with ReduceSum in int32) and divide in float64,
  rounding half away from zero as the spec does.
"""

from __future__ import annotations

import numpy as np

from .backends.common import scale_of
from .backends.onnx import _field, _node, _tensor, _value_info, _varint_field
from .integer_model import QuantizedModel
from .output_files import write_atomic

OPSET = 13
F64, UINT8, INT8, INT32, INT64 = 11, 2, 3, 6, 7  # TensorProto data types


class Graph:
    """Nodes and initializers being written, with fresh names."""

    def __init__(self):
        self.nodes, self.init, self.count = [], {}, 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, stem: str, value) -> str:
        name = self.name(stem)
        self.init[name] = np.asarray(value)
        return name

    def op(self, op: str, inputs, stem: str = "t", **attributes) -> str:
        out = self.name(stem)
        self.nodes.append(_node(op, inputs, [out], **attributes))
        return out


def model_bytes(model: QuantizedModel) -> bytes:
    """The ONNX ModelProto of the integer model: input 'codes' (N, inputs) int8, output 'scores'
    (N, outputs) int8."""
    g = Graph()
    wide = g.op("Cast", ["codes"], to=INT32)
    u = g.op("Cast", [g.op("Add", [wide, g.const("c", np.int32(128))])], to=UINT8)
    spatial = None  # (C, H, W) while u is NCHW, None while it is flat
    layers = model.layers
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        if layer.kind == "dense":
            if spatial is not None:
                u = g.op("Transpose", [u], perm=[0, 2, 3, 1])
                u = g.op("Reshape", [u, g.const("shape", np.array([-1, int(np.prod(spatial))], np.int64))])
                spatial = None
            acc = g.op(
                "MatMulInteger", [u, g.const("w", np.ascontiguousarray(layer.weights.T)), g.const("z", np.uint8(128))]
            )
            u = requantize(g, layer, acc, (1, -1), last)
            continue
        if spatial is None:
            h, w, c = layer.input_shape
            u = g.op("Reshape", [u, g.const("shape", np.array([-1, h, w, c], np.int64))])
            u = g.op("Transpose", [u], perm=[0, 3, 1, 2])
        u, spatial = window_layer(g, layer, u)
        if last:  # a model ends in a dense layer; a window layer last would need its own output
            raise ValueError("an integer model ends in a dense layer")
    g.nodes.append(_node("Identity", [u], ["scores"]))
    output = _value_info("scores", np.int8, model.outputs)
    graph = (
        b"".join(_field(1, n) for n in g.nodes)
        + _field(2, "qmtik")
        + b"".join(_field(5, _tensor(name, a)) for name, a in g.init.items())
        + _field(11, _value_info("codes", np.int8, model.inputs))
        + _field(12, output)
    )
    return _varint_field(1, 7) + _field(2, "qmtik") + _field(7, graph) + _field(8, _varint_field(2, OPSET))


def requantize(g: Graph, layer, acc: str, shape: tuple, last: bool) -> str:
    """The layer's output from its int32 accumulators: uint8 u (int8 codes when last)."""
    scale = scale_of(layer.output_multiplier, layer.output_shift).reshape(shape)
    bias = layer.bias.astype(np.float64).reshape(shape)
    x = g.op("Cast", [acc], to=F64)
    y = g.op("Add", [g.op("Mul", [x, g.const("s", scale)]), g.const("b", bias * scale)])
    if layer.activation == "leaky_relu":
        neg = scale_of(layer.negative_multiplier, layer.negative_shift).reshape(shape)
        y_neg = g.op("Add", [g.op("Mul", [x, g.const("s", neg)]), g.const("b", bias * neg)])
        y = g.op("Where", [g.op("Less", [x, g.const("nb", -bias)]), y_neg, y])
    r = rounded(g, y)
    if layer.table is not None:
        r = g.op("Clip", [r, g.const("lo", np.float64(-128)), g.const("hi", np.float64(127))])
        index = g.op("Cast", [g.op("Add", [r, g.const("c", np.float64(128))])], to=INT64)
        table = np.asarray(layer.table, np.int64)
        entries = table.astype(np.int8) if last else (table + 128).astype(np.uint8)
        return g.op("Gather", [g.const("table", entries), index])
    floor = layer.output_offset if layer.activation == "relu" else -128
    r = g.op("Add", [r, g.const("zero", np.float64(layer.output_offset))])
    r = g.op("Clip", [r, g.const("lo", np.float64(floor)), g.const("hi", np.float64(127))])
    if last:
        return g.op("Cast", [r], to=INT8)
    return g.op("Cast", [g.op("Add", [r, g.const("c", np.float64(128))])], to=UINT8)


def rounded(g: Graph, y: str) -> str:
    """round half away from zero: sign(y) * floor(|y| + 0.5), exact in float64 here."""
    magnitude = g.op("Floor", [g.op("Add", [g.op("Abs", [y]), g.const("half", np.float64(0.5))])])
    return g.op("Mul", [g.op("Sign", [y]), magnitude])


def padded(g: Graph, u: str, pads, value: int) -> str:
    """u (NCHW) with (top, bottom, left, right) pads of the uint8 value; u itself without."""
    top, bottom, left, right = (int(p) for p in pads)
    if not any((top, bottom, left, right)):
        return u
    spec = g.const("pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    return g.op("Pad", [u, spec, g.const("v", np.uint8(value))], mode=b"constant")


def window_layer(g: Graph, layer, u: str):
    """A window layer on uint8 NCHW u: (its output u, its output's (C, H, W))."""
    h, w, c = layer.input_shape
    kernel = [int(k) for k in (layer.kernel if layer.kernel is not None else (h, w))]
    stride = [int(s) for s in (layer.stride if layer.stride is not None else kernel)]
    if layer.kind in ("conv2d", "depthwise_conv2d"):
        depthwise = layer.kind == "depthwise_conv2d"
        codes = np.asarray(layer.weights, np.int8)
        weights = codes.reshape(-1, 1, *kernel) if depthwise else codes.reshape(-1, *kernel, c).transpose(0, 3, 1, 2)
        x = padded(g, u, layer.pads, int(layer.input_zero_point) + 128)
        acc = g.op("ConvInteger", [x, g.const("w", np.ascontiguousarray(weights)), g.const("z", np.uint8(128))],
                   kernel_shape=kernel, strides=stride, group=c if depthwise else 1)  # fmt: skip
        out = layer.output_shape
        return requantize(g, layer, acc, (1, -1, 1, 1), False), (out[2], out[0], out[1])
    if layer.kind == "max_pool":
        x = padded(g, u, layer.pads, 0)
        out = layer.output_shape
        return g.op("MaxPool", [x], kernel_shape=kernel, strides=stride), (out[2], out[0], out[1])
    if layer.kind == "global_avg_pool":
        wide = g.op("Cast", [u], to=INT32)
        total = g.op("ReduceSum", [wide, g.const("axes", np.array([2, 3], np.int64))], keepdims=1)
        codes_sum = g.op("Sub", [total, g.const("c", np.int32(128 * h * w))])
        return averaged(g, codes_sum, h * w), (c, 1, 1)
    ones = np.ones((c, 1, *kernel), np.int8)  # avg_pool: whole windows only
    acc = g.op("ConvInteger", [u, g.const("w", ones), g.const("z", np.uint8(128))], kernel_shape=kernel,
               strides=stride, group=c)  # fmt: skip
    out = layer.output_shape
    return averaged(g, acc, kernel[0] * kernel[1]), (out[2], out[0], out[1])


def averaged(g: Graph, total: str, count: int) -> str:
    """uint8 u of int32 sums of codes divided by count, rounded half away from zero: the
    float64 quotient of two integers rounds ties exactly (windows_layers.average_codes)."""
    y = g.op("Div", [g.op("Cast", [total], to=F64), g.const("n", np.float64(count))])
    return g.op("Cast", [g.op("Add", [rounded(g, y), g.const("c", np.float64(128))])], to=UINT8)


def save_onnx(path, model: QuantizedModel) -> None:
    """Write the model's ONNX graph at path, atomically."""
    data = model_bytes(model)
    write_atomic(path, lambda f: f.write(data))


def run_onnx(path_or_bytes, codes) -> np.ndarray:
    """The graph's int8 scores for int8 codes, by onnxruntime with its default options."""
    import onnxruntime as ort

    source = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"codes": np.asarray(codes, np.int8)})[0]
