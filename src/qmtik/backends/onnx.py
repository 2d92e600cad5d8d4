"""The onnx backend: int8 matrix products through onnxruntime, for the integer model's large batches.

What: the integer model's layers run as one small ONNX graph per stretch of layers. Each layer
is a MatMulInteger (uint8 inputs with zero point 128, int8 weights, int32 accumulators); a
relu layer that feeds another layer is requantized inside the graph, in float64, straight into
the next layer's uint8 inputs; the last layer of a stretch (and any layer that is not a relu)
hands its int32 accumulators back to numpy, where the numpy backend's `LayerKernel.requantize`
finishes it.

Why: numpy can only multiply int8 codes as float32 (exact, but 4 bytes a code and no int8
instructions); onnxruntime's int8 kernels use AVX-512 VNNI (or AVX2, or ARM dot products) and
run the 784-256-256-10 benchmark about twice as fast. It is optional (the `fast` extra): without
it, or with QMTIK_INT8_GEMM=0 in the environment, the backend "auto" picks numpy, which computes
the same integers (backends/__init__.py).

Exactness (the same integers as the spec, intref.layer_forward, tested on extreme values):
- MatMulInteger computes sum_j (u_j - 128) * W_ij in int32: every term and partial sum is an
  integer below fan_in * 255 * 127 < 2**31 (fan-ins up to 65536). Some x86 CPUs without VNNI
  add pairs of uint8 x int8 products in saturating int16 (vpmaddubsw), which is not exact, so
  `available()` first runs a probe that such a kernel gets wrong (all inputs 255 against
  weights of +-127) and refuses the backend when the answer is not exact.
- The in-graph relu requantization is the numpy kernel's own float64 arithmetic (see
  common.py and numpy.LayerKernel), with the next layer's +128 folded into the offset:
  u = clamp(floor(acc * s + (bias * s + 128.5 + z_out)), 128 + z_out, 255) with s = m * 2**-shift.
  For 1 <= shift <= FOLD_SHIFT (44) all these are multiples of 2**-shift whose numerators stay below 2**53
  (|(acc + bias) * m| < 2**52 and (128.5 + z_out) * 2**44 < 2**52), so every product and sum is
  exact, and floor rounds half away from zero on the non-negative side that survives the clamp.
  A layer outside that range (or not a relu) ends the graph and is requantized by numpy.
- The graph is run unoptimized, so that onnxruntime fuses nothing into float32 arithmetic.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError
from .common import FOLD_SHIFT, scale_of
from .numpy import LayerKernel

ENV = "QMTIK_INT8_GEMM"  # "0" turns the backend off
ROWS_PER_RUN = 1024  # samples per session run: keeps the layers' buffers in cache

_probe_result = None  # whether onnxruntime's MatMulInteger is exact here (probed once)


def available() -> bool:
    """True when the backend is enabled, onnxruntime imports and its int8 product is exact."""
    global _probe_result
    if os.environ.get(ENV, "1") == "0":
        return False
    if _probe_result is None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            _probe_result = False
        else:
            _probe_result = _probe()
    return _probe_result


def unsupported(layers) -> str | None:
    """Why the graph cannot compute these layers, or None: it has dense layers only (the
    window kinds of intref_windows.py run in the numpy backend; "auto" picks it for them)."""
    for number, layer in enumerate(layers, 1):
        if layer.kind != "dense":
            return f"backend 'onnx' computes dense layers only, and layer {number} is a {layer.kind} layer"
    return None


def _probe() -> bool:
    """Does MatMulInteger give exact int32 sums where a saturating int16 kernel would not?"""
    weight = np.tile(np.array([[127, -127, 127, 1], [127, -127, -127, -1]], np.int8), (32, 1))
    inputs = np.full((3, 64), 255, np.uint8)
    inputs[1] = 0
    inputs[2, ::2] = 0
    want = (inputs.astype(np.int64) - 128) @ weight.astype(np.int64)
    try:  # onnxruntime refusing or failing the graph means no backend, not a crash
        session = _session(
            [_node("MatMulInteger", ["x", "w", "zero"], ["acc"])],
            {"w": weight, "zero": np.array(128, np.uint8)},
            64,
            "acc",
            np.int32,
            4,
        )
        return bool(np.array_equal(session.run(None, {"x": inputs})[0], want))
    except Exception:
        return False


class Int8Network:
    """The layers of an integer model as onnxruntime sessions, each ending in int32 accumulators
    that the numpy backend's kernels requantize. Call it with int8 codes for the int8 scores."""

    def __init__(self, layers):
        problem = unsupported(layers)
        if problem:
            raise ConfigError(f"{problem} (choose backend 'numpy' or 'auto')")
        self.kernels = [LayerKernel.prepare(layer) for layer in layers]
        self.stretches = []  # (session, index of the layer whose accumulators it returns)
        first = 0
        for last, layer in enumerate(layers):
            if last == len(layers) - 1 or not _fusable(layer):
                self.stretches.append((_stretch(layers[first : last + 1]), last))
                first = last + 1

    def __call__(self, codes) -> np.ndarray:
        return self.scores(codes, np.empty((len(codes), self.kernels[-1].weight_t.shape[1]), np.int8))

    def scores(self, codes, out):
        """The int8 scores of int8 input codes, written into out (samples x outputs, int8)."""
        for start in range(0, len(codes), ROWS_PER_RUN):
            stop = min(start + ROWS_PER_RUN, len(codes))
            u = codes[start:stop].view(np.uint8) ^ np.uint8(128)  # code + 128, as uint8
            for session, last in self.stretches:
                acc = session.run(None, {"x": u})[0]
                h = self.kernels[last].requantize(acc)
                if last < len(self.kernels) - 1:
                    u = np.add(h, 128, dtype=np.float32).astype(np.uint8)
            out[start:stop] = h
        return out


def _fusable(layer) -> bool:
    """Whether the graph may requantize this layer itself (see the module's exactness note)."""
    return layer.activation == "relu" and bool(
        np.all(((layer.output_shift >= 1) & (layer.output_shift <= FOLD_SHIFT)) | (layer.output_multiplier == 0))
    )


def _stretch(layers):
    """One session: the layers' products, every layer but the last requantized in the graph."""
    nodes, init = [], {"zero": np.array(128, np.uint8), "top": np.array(255.0)}
    x = "x"
    for i, layer in enumerate(layers):
        init[f"w{i}"] = np.ascontiguousarray(layer.weights.T)
        nodes.append(_node("MatMulInteger", [x, f"w{i}", "zero"], [f"acc{i}"]))
        if i == len(layers) - 1:
            break
        scale = scale_of(layer.output_multiplier, layer.output_shift)
        init[f"scale{i}"] = scale
        init[f"offset{i}"] = layer.bias.astype(np.float64) * scale + (128.5 + layer.output_offset)
        init[f"floor{i}"] = np.array(128.0 + layer.output_offset)
        nodes += [
            _node("Cast", [f"acc{i}"], [f"y{i}"], to=_DTYPES[np.dtype(np.float64)]),
            _node("Mul", [f"y{i}", f"scale{i}"], [f"ys{i}"]),
            _node("Add", [f"ys{i}", f"offset{i}"], [f"yo{i}"]),
            _node("Floor", [f"yo{i}"], [f"yf{i}"]),
            _node("Clip", [f"yf{i}", f"floor{i}", "top"], [f"yc{i}"]),
            _node("Cast", [f"yc{i}"], [f"u{i}"], to=_DTYPES[np.dtype(np.uint8)]),
        ]
        x = f"u{i}"
    return _session(nodes, init, layers[0].inputs, f"acc{len(layers) - 1}", np.int32, layers[-1].outputs)


def _session(nodes, initializers, inputs, output, dtype, outputs):
    import onnxruntime as ort

    graph = (
        b"".join(_field(1, n) for n in nodes)
        + _field(2, "qmtik")
        + b"".join(_field(5, _tensor(name, a)) for name, a in initializers.items())
        + _field(11, _value_info("x", np.uint8, inputs))
        + _field(12, _value_info(output, dtype, outputs))
    )
    model = _varint_field(1, 7) + _field(2, "qmtik") + _field(7, graph) + _field(8, _varint_field(2, 13))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    # idle worker threads sleep instead of spinning: a little slower on an idle machine,
    # much steadier on a busy one, and no core is held away from numpy between runs
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


# --- the few ONNX protobuf messages needed, written by hand ------------------------------------
# ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8 (version 2); GraphProto:
# node 1, name 2, initializer 5, input 11, output 12; NodeProto: input 1, output 2, op_type 4,
# attribute 5 (name 1, i 3, s 4, ints 8, type 20 = INT 2, STRING 3, INTS 7); TensorProto: dims 1,
# data_type 2, name 8, raw_data 9;
# ValueInfoProto: name 1, type 2 -> tensor_type 1 -> elem_type 1, shape 2 -> dim 1 ->
# dim_value 1 or dim_param 2. Protobuf: a key (field << 3 | wire type) then a varint (wire
# type 0) or a length and bytes (wire type 2).

_DTYPES = {
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.float64): 11,
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _varint_field(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _field(field: int, data) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array) -> bytes:
    array = np.ascontiguousarray(array)
    raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return (
        b"".join(_varint_field(1, d) for d in array.shape)
        + _varint_field(2, _DTYPES[array.dtype])
        + _field(8, name)
        + _field(9, raw)
    )


def _value_info(name: str, dtype, columns: int) -> bytes:
    shape = _field(1, _field(2, "samples")) + _field(1, _varint_field(1, columns))
    return _field(1, name) + _field(2, _field(1, _varint_field(1, _DTYPES[np.dtype(dtype)]) + _field(2, shape)))


def _attribute(name: str, value) -> bytes:
    """An AttributeProto: an int (i 3, type INT 2), a list of ints >= 0 (ints 8, type INTS 7)
    or bytes (s 4, type STRING 3)."""
    if isinstance(value, bytes):
        return _field(1, name) + _field(4, value) + _varint_field(20, 3)
    if isinstance(value, (list, tuple)):
        return _field(1, name) + b"".join(_varint_field(8, v) for v in value) + _varint_field(20, 7)
    return _field(1, name) + _varint_field(3, value) + _varint_field(20, 2)


def _node(op: str, inputs, outputs, **attributes) -> bytes:
    attrs = b"".join(_field(5, _attribute(k, v)) for k, v in attributes.items())
    return b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op) + attrs
