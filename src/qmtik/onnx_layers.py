"""The translation of an ONNX chain into qmtik layers: one handler per operator (onnx_import.py
says what each becomes), building Records of layer tables and float weights, channels last."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import onnx_graph as og
from .spatial import same_padding

MONOTONE = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
AFFINE = ("Add", "Sub", "Mul", "Div")
HANDLED = ("BatchNormalization", "Softmax", "Flatten", "Reshape", "Gemm", "MatMul", "Conv", "MaxPool", "AveragePool",
           "GlobalAveragePool", "Transpose")  # fmt: skip


@dataclass
class Record:
    """One qmtik layer being built: its table, its float weights in qmtik's layout, the ONNX
    node it came from, and the shape of its output, channels first as ONNX has it."""

    table: dict
    weight: np.ndarray | None
    bias: np.ndarray | None
    step: og.Step
    shape: tuple


class Importer:
    """The state of one import: the records so far, the current (channels first) shape, and
    the normalization waiting for the first layer."""

    def __init__(self, shape: tuple, input_range):
        self.shape, self.records = shape, []
        self.scale, self.offset = np.ones(shape), np.zeros(shape)  # normalization a, b (channels first)
        low, high = input_range
        self.low, self.span = float(low), float(high) - float(low)
        self.flattened_from = None  # the (C, H, W) or (C, L) shape a flatten made flat, for the next dense
        self.slope, self.head = None, None  # the one leaky slope; "Softmax" or "Sigmoid" after the last layer
        self.channels_last_input = False  # a Transpose NHWC -> NCHW first (Keras through tf2onnx)
        self.channels_last_flatten = False  # a Transpose NCHW -> NHWC right before the flatten

    # --- the chain ---

    def run(self, steps) -> None:
        for position, step in enumerate(steps):
            op = step.op
            if op in ("Dropout", "Identity"):
                continue
            if self.head is not None:
                raise og.unsupported(step, f"after the network's {self.head}: {self.head} must be the last node")
            if self.channels_last_flatten and op not in ("Flatten", "Reshape"):
                raise og.unsupported(step, "after a Transpose to channels last, which must come right before a flatten")
            handler = getattr(self, "_" + op, None) if op in HANDLED else None
            if op in AFFINE:
                self._affine(step)
            elif op in MONOTONE:
                self._activation(step, all(later.op in ("Dropout", "Identity") for later in steps[position + 1 :]))
            elif handler is not None:
                handler(step)
            else:
                why = {"LogSoftmax": "use Softmax, or export the logits", "Clip": "ReLU6 and clipping"}.get(op, "")
                raise og.unsupported(step, why)

    def _layer(self) -> Record | None:
        """The last layer with weights, when nothing but max pools came after it."""
        for record in reversed(self.records):
            if record.weight is not None:
                return record
            if record.table["kind"] != "max_pool":
                return None
        return None

    def _open(self, step: og.Step) -> Record:
        """The layer a fold applies to: the last one, with weights and no activation yet."""
        if not self.records or self.records[-1].weight is None or self.records[-1].table.get("activation"):
            raise og.unsupported(step, "a fold needs a Gemm, MatMul or Conv without activation right before it")
        return self.records[-1]

    def _affine(self, step: og.Step) -> None:
        const = [c for c in step.consts if c is not None]
        if len(const) != 1 or (step.op in ("Sub", "Div") and step.consts[1] is None):
            raise og.unsupported(step, "only by a constant, the data first for Sub and Div")
        c = np.asarray(const[0], np.float64)
        if step.op == "Div" and (c == 0).any():
            raise step.refuse("divides by zero")
        mul = {"Mul": c, "Div": 1.0 / c if step.op == "Div" else None}.get(step.op)
        add = {"Add": c, "Sub": -c}.get(step.op)
        if not self.started():  # the normalization before the first layer
            full = (1, *self.shape)
            try:
                m = np.broadcast_to(mul, full)[0] if mul is not None else 1.0
                d = np.broadcast_to(add, full)[0] if add is not None else 0.0
            except ValueError:
                raise step.refuse(
                    f"a constant of shape {c.shape} does not broadcast over the input {self.shape}"
                ) from None
            self.scale, self.offset = self.scale * m, self.offset * m + d
            return
        record = self._open(step)
        channels = self.shape[0]
        if not (c.size in (1, channels) and _per_channel(c, len(self.shape))):
            raise og.unsupported(step, f"after a layer only by a scalar or one value per channel, not {c.shape}")
        if mul is not None:
            m = np.broadcast_to(mul.reshape(-1), (channels,))
            record.weight, record.bias = record.weight * m[:, None], record.bias * m
        else:
            record.bias = record.bias + np.broadcast_to(add.reshape(-1), (channels,))

    def started(self) -> bool:
        """Whether a layer with weights (which takes in the input range) has been made."""
        return any(r.weight is not None for r in self.records)

    def _BatchNormalization(self, step: og.Step) -> None:
        if step.attrs.get("training_mode", 0) or step.outputs != 1:
            raise og.unsupported(step, "training mode")
        gamma, beta, mean, var = (np.asarray(c, np.float64) for c in step.consts[1:5])
        a = gamma / np.sqrt(var + float(step.attrs.get("epsilon", 1e-5)))
        if not self.started():
            extra = (1,) * (len(self.shape) - 1)
            self.scale = self.scale * a.reshape(-1, *extra)
            self.offset = self.offset * a.reshape(-1, *extra) + (beta - mean * a).reshape(-1, *extra)
            return
        record = self._open(step)
        record.weight, record.bias = record.weight * a[:, None], (record.bias - mean) * a + beta

    def _activation(self, step: og.Step, last: bool) -> None:
        record = self._layer()
        if record is None or record.table.get("activation"):
            raise og.unsupported(step, "an activation must follow a Gemm, MatMul or Conv (or max pools after one)")
        if last and record is self.records[-1] and record.table["kind"] == "dense" and step.op == "Sigmoid":
            self.head = "Sigmoid"
            return
        if step.op == "LeakyRelu":
            alpha = float(str(np.float32(step.attrs.get("alpha", 0.01))))  # 0.1, not float32's 0.10000000149
            if self.slope is not None and alpha != self.slope:
                raise step.refuse(f"alpha {alpha} differs from {self.slope} before; qmtik has one leaky slope")
            if not 0 < alpha < 1:
                raise step.refuse(f"alpha {alpha}; qmtik's leaky slope is between 0 and 1")
            self.slope = alpha
        record.table["activation"] = MONOTONE[step.op]

    def _Softmax(self, step: og.Step) -> None:
        if len(self.shape) != 1 or step.attrs.get("axis", -1) not in (-1, 1):
            raise og.unsupported(step, "softmax over the features of a dense layer's output only")
        self.head = "Softmax"

    def _flat(self, step: og.Step) -> None:
        if len(self.shape) > 1:
            self.flattened_from = None if self.channels_last_flatten else self.shape  # already qmtik's order
            self.channels_last_flatten = False
            self.records.append(Record({"kind": "flatten"}, None, None, step, (int(np.prod(self.shape)),)))
            self.shape = (int(np.prod(self.shape)),)

    def _Transpose(self, step: og.Step) -> None:
        """NHWC -> NCHW at the input, or NCHW -> NHWC right before a flatten, as tf2onnx writes
        Keras models: the first makes qmtik's own input order, the second its flatten order."""
        perm, axes = list(step.attrs.get("perm", [])), len(self.shape)
        to_first, to_last = [0, axes, *range(1, axes)], [0, *range(2, axes + 1), 1]
        if axes > 1 and perm == to_first and not self.records and not self.channels_last_input:
            self.shape = (self.shape[-1], *self.shape[:-1])
            self.scale, self.offset = np.moveaxis(self.scale, -1, 0), np.moveaxis(self.offset, -1, 0)
            self.channels_last_input = True
        elif axes > 1 and perm == to_last and self.started():
            self.channels_last_flatten = True
        else:
            raise og.unsupported(
                step, f"perm {perm}: only channels last to first at the input, or back before a flatten"
            )

    def input_shape(self, graph_shape: tuple) -> tuple:
        """qmtik's (channels last) input shape of a graph input of graph_shape; () when flat."""
        if len(graph_shape) == 1:
            return ()
        return tuple(graph_shape) if self.channels_last_input else (*graph_shape[1:], graph_shape[0])

    def _Flatten(self, step: og.Step) -> None:
        if step.attrs.get("axis", 1) != 1:
            raise og.unsupported(step, f"axis {step.attrs['axis']}; the flatten before a dense layer has axis 1")
        self._flat(step)

    def _Reshape(self, step: og.Step) -> None:
        target = [int(v) for v in np.asarray(step.consts[1]).reshape(-1)] if step.consts[1] is not None else None
        size = int(np.prod(self.shape))
        if target is None or len(target) != 2 or target[1] not in (-1, size) or target == [-1, -1]:
            raise og.unsupported(step, f"a reshape to {target}: only the flatten (N, -1) before a dense layer")
        self._flat(step)

    def _Gemm(self, step: og.Step) -> None:
        if step.attrs.get("transA", 0) or step.consts[1] is None:
            raise og.unsupported(step, "transA, or weights that are not constant")
        b = np.asarray(step.consts[1], np.float64)
        weight = (b if step.attrs.get("transB", 0) else b.T) * float(step.attrs.get("alpha", 1.0))
        bias = np.zeros(weight.shape[0])
        if len(step.consts) > 2 and step.consts[2] is not None:
            bias = bias + np.broadcast_to(np.asarray(step.consts[2], np.float64).reshape(-1), bias.shape)
            bias = bias * float(step.attrs.get("beta", 1.0))
        self._dense(step, weight, bias)

    def _MatMul(self, step: og.Step) -> None:
        if step.consts[0] is not None or step.consts[1] is None or np.ndim(step.consts[1]) != 2:
            raise og.unsupported(step, "only the data times a constant matrix")
        weight = np.asarray(step.consts[1], np.float64).T
        self._dense(step, weight, np.zeros(weight.shape[0]))

    def _dense(self, step: og.Step, weight, bias) -> None:
        if len(self.shape) != 1 or weight.shape[1] != self.shape[0]:
            raise step.refuse(f"takes {weight.shape[1]} inputs, but its input has shape {self.shape}")
        if not self.started():
            a, b = self.scale.reshape(-1) * self.span, self.scale.reshape(-1) * self.low + self.offset.reshape(-1)
            weight, bias = weight * a[None, :], bias + weight @ b
        if self.flattened_from is not None:
            weight = weight[:, channels_last_order(self.flattened_from)]
        self.records.append(Record({"kind": "dense", "units": int(weight.shape[0])}, weight, bias, step,
                                   (int(weight.shape[0]),)))  # fmt: skip
        self.flattened_from, self.shape = None, (int(weight.shape[0]),)

    def _window(self, step: og.Step, kernel) -> tuple:
        """(stride, explicit pads [top, bottom, left, right] or [left, right]) of a window node."""
        spatial_axes = len(self.shape) - 1
        if spatial_axes not in (1, 2):
            raise og.unsupported(step, f"over an input of shape {self.shape}")
        if step.attrs.get("ceil_mode", 0):
            raise og.unsupported(step, "ceil_mode = 1; export with ceil_mode=False")
        if any(d != 1 for d in step.attrs.get("dilations", [1] * spatial_axes)):
            raise og.unsupported(step, f"dilations {step.attrs['dilations']}")
        stride = list(step.attrs.get("strides", [1] * spatial_axes))
        pads = list(step.attrs.get("pads", [0] * 2 * spatial_axes))
        auto = step.attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pairs = [same_padding(n, k, s) for n, k, s in zip(self.shape[1:], kernel, stride)]
            pairs = [p[::-1] if auto == "SAME_LOWER" else p for p in pairs]
            pads = [p[0] for p in pairs] + [p[1] for p in pairs]
        elif auto == "VALID":
            pads = [0] * 2 * spatial_axes
        begins, ends = pads[:spatial_axes], pads[spatial_axes:]
        explicit = [v for pair in zip(begins, ends) for v in pair]  # [top, bottom, left, right]
        sides = [(n + b + e - k) // s + 1 for n, k, s, b, e in zip(self.shape[1:], kernel, stride, begins, ends)]
        if min(sides) < 1:
            raise step.refuse(f"a window of {list(kernel)} does not fit its input {self.shape}")
        return stride, explicit, tuple(sides)

    def _Conv(self, step: og.Step) -> None:
        w = np.asarray(step.consts[1], np.float64) if step.consts[1] is not None else None
        if w is None or w.ndim not in (3, 4):
            raise og.unsupported(step, "weights that are not constant, or a 3-D convolution")
        channels, group = self.shape[0], int(step.attrs.get("group", 1))
        kernel = list(w.shape[2:])
        stride, pads, sides = self._window(step, kernel)
        bias = np.zeros(w.shape[0]) if len(step.consts) < 3 or step.consts[2] is None else step.consts[2]
        bias = np.asarray(bias, np.float64)
        depthwise = group > 1
        if depthwise and not (group == channels == w.shape[0] and w.shape[1] == 1 and w.ndim == 4):
            raise og.unsupported(step, f"group {group}: only 1, or depthwise 2-D (group = channels = filters)")
        one_d = w.ndim == 3
        if not self.started():
            w, bias = self._fold_input(step, w, bias, depthwise, any(pads))
        if depthwise:
            weight = w[:, 0].reshape(w.shape[0], -1)
            table = {"kind": "depthwise_conv2d", "kernel": kernel, "stride": stride, "padding": pads}
        else:
            weight = (w.transpose(0, 2, 1) if one_d else w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)
            table = {"kind": "conv1d" if one_d else "conv2d", "filters": int(w.shape[0]),
                     "kernel": kernel[0] if one_d else kernel, "stride": stride[0] if one_d else stride,
                     "padding": pads}  # fmt: skip
        self.shape = (int(w.shape[0]), *sides)
        self.records.append(Record(table, weight, bias, step, self.shape))

    def _fold_input(self, step, w, bias, depthwise: bool, padded: bool):
        """A first convolution with the normalization and the input range folded in (per channel)."""
        extra = tuple(range(1, len(self.shape)))
        a, b = self.scale * self.span, self.scale * self.low + self.offset
        if np.ptp(a, axis=extra).max(initial=0) > 0 or np.ptp(b, axis=extra).max(initial=0) > 0:
            raise step.refuse("a normalization that is not per channel cannot be folded into a convolution")
        a, b = a.reshape(len(a), -1)[:, 0], b.reshape(len(b), -1)[:, 0]
        if padded and np.abs(b).max() > 0:
            raise step.refuse(
                "pads its input, where qmtik's padding is the input range's low end; that low end must "
                f"normalize to 0 (it normalizes to {b.tolist()}): use --input-range 0 HIGH and no offset"
            )
        shape = (-1, 1, *([1] * (w.ndim - 2)))
        if depthwise:
            return w * a.reshape(shape), bias + w.reshape(len(w), -1).sum(1) * b
        return w * a.reshape(1, -1, *([1] * (w.ndim - 2))), bias + (w.reshape(len(w), len(b), -1).sum(2) @ b)

    def _pool(self, step: og.Step, kind: str) -> None:
        kernel = list(step.attrs.get("kernel_shape", []))
        stride, pads, sides = self._window(step, kernel)
        if not self.started():
            raise step.refuse("qmtik's first layer is a Gemm, MatMul or Conv, which takes in the input range")
        if kind == "avg_pool" and any(pads):
            raise og.unsupported(step, f"pads {pads}: qmtik's average pool takes whole windows only")
        one_d = len(self.shape) == 2
        table = {"kind": kind, "size": kernel[0] if one_d else kernel, "stride": stride[0] if one_d else stride}
        if kind == "max_pool":
            table["padding"] = pads
        self.shape = (self.shape[0], *sides)
        self.records.append(Record(table, None, None, step, self.shape))

    def _MaxPool(self, step: og.Step) -> None:
        self._pool(step, "max_pool")

    def _AveragePool(self, step: og.Step) -> None:
        self._pool(step, "avg_pool")

    def _GlobalAveragePool(self, step: og.Step) -> None:
        if len(self.shape) != 3 or not self.started():
            raise og.unsupported(step, f"over an input of shape {self.shape} (2-D after a first layer only)")
        self.records.append(Record({"kind": "global_avg_pool"}, None, None, step, (self.shape[0],)))
        self.shape = (self.shape[0],)


def _per_channel(c, axes: int) -> bool:
    """Whether a constant applies one value per channel (or one for all) to a (C, ...) tensor."""
    shape = list(np.shape(c))
    while shape and shape[0] == 1 and len(shape) > axes:
        shape.pop(0)
    return np.size(c) == 1 or (len(shape) == axes and all(s == 1 for s in shape[1:]))


def channels_last_order(shape: tuple) -> np.ndarray:
    """For a (C, H, W) or (C, L) tensor flattened, the channels-first index of each position of
    the channels-last flattening: a dense layer's columns reordered by it take qmtik's order."""
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(*range(1, len(shape)), 0).reshape(-1)


def to_qmtik_inputs(x, sample_shape: tuple, channels_last: bool = False) -> np.ndarray:
    """ONNX inputs (N, C, H, W) or (N, C, L) as qmtik's flat channels-last rows (inputs already
    channels last, as a Keras graph takes them, only flattened)."""
    x = np.asarray(x).reshape(len(x), *sample_shape)
    if x.ndim > 2 and not channels_last:
        x = x.transpose(0, *range(2, x.ndim), 1)
    return x.reshape(len(x), -1)
