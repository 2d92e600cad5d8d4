"""The numpy backend: the spec's integers (intref) from float arithmetic that is provably exact.

Products as a float32 (or float64) matrix product, requantization in float64 (common.py says
why both are exact). No dependency beyond numpy; the default for single samples and small
batches, and for every batch without onnxruntime. tests/test_backends.py compares it with
intref.reference_scores at the extremes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import intref
from .. import quantization as q
from .common import FOLD_SHIFT, SMALL_BATCH, scale_of
from .windows import KERNELS

ROWS_PER_PASS = 1024  # samples per pass through the layers: keeps the temporaries in cache
WINDOW_ROWS = 128  # samples per pass of a model with window layers: their im2col rows are many


@dataclass
class LayerKernel:
    """One layer prepared for fast exact inference.

    acc = codes @ weight_t is exact in float32 while fan_in * 128 * 127 < 2**24, else in
    float64 (q.accumulator_dtype). With scale = multiplier * 2**-shift, y = acc * scale + bias
    * scale is the exact real value (acc + bias) * multiplier / 2**shift (common.py), and so is
    y +- 0.5. Rounding half away from zero is then trunc(y + copysign(0.5, y)), exactly. For
    relu, whose negative side clamps anyway, it is floor(y + 0.5), with 0.5 and the output zero
    point folded into the offset when the sum stays exact (shifts up to FOLD_SHIFT).
    """

    weight_t: np.ndarray
    activation: str
    scale: np.ndarray
    offset: np.ndarray  # bias * scale (relu: + 0.5 + folded_zero)
    zero_after: int  # the output zero point still to add after rounding
    floor: int  # the clamp's lower end: the zero point for relu, else -128
    neg_scale: np.ndarray | None  # leaky relu's negative side
    neg_offset: np.ndarray | None
    negative_below: np.ndarray | None  # -bias: acc below it means acc + bias < 0
    table: np.ndarray | None  # sigmoid / tanh table as float32

    @classmethod
    def prepare(cls, layer: intref.IntegerLayer) -> "LayerKernel":
        """The kernel of a (valid) integer layer."""
        return cls.from_arrays(
            layer.weights,
            layer.bias,
            layer.output_multiplier,
            layer.output_shift,
            layer.activation,
            layer.output_offset,
            layer.negative_multiplier,
            layer.negative_shift,
            layer.table,
        )

    @classmethod
    def from_arrays(
        cls,
        weights,
        bias,
        output_multiplier,
        output_shift,
        activation,
        output_offset,
        negative_multiplier=None,
        negative_shift=None,
        table=None,
        *,
        weight_t=None,
    ) -> "LayerKernel":
        """The kernel of an integer layer's arrays, unchecked: they must be ones
        intref.IntegerLayer accepts. Training builds one at every step this way, without the
        cost of a validated layer; tests prove it equal to the spec on extreme values.
        weight_t: the weights transposed in q.accumulator_dtype, when the caller has them."""
        if weight_t is None:
            weights = np.asarray(weights)
            weight_t = np.ascontiguousarray(weights.T, dtype=q.accumulator_dtype(weights.shape[1]))
        bias = np.asarray(bias).astype(np.float64)
        scale = scale_of(output_multiplier, output_shift)
        offset, zero_after = bias * scale, int(output_offset)
        if activation == "relu" and int(np.max(output_shift)) <= FOLD_SHIFT:
            offset, zero_after = offset + (0.5 + output_offset), 0
        elif activation == "relu":
            offset = offset + 0.5
        elif activation in q.TABLE_ACTIVATIONS:
            zero_after = 0  # a table's index has zero point 0
        neg_scale = neg_offset = negative_below = None
        if activation == "leaky_relu":
            neg_scale = scale_of(negative_multiplier, negative_shift)
            neg_offset, negative_below = bias * neg_scale, -bias
        floor = int(output_offset) if activation == "relu" else q.QMIN
        table = None if table is None else np.asarray(table).astype(np.float32)
        return cls(weight_t, activation, scale, offset, zero_after, floor, neg_scale, neg_offset, negative_below, table)

    @property
    def dtype(self):
        """The float type of the codes it multiplies (the window kernels have one too)."""
        return self.weight_t.dtype

    @property
    def outputs(self) -> int:
        return self.weight_t.shape[1]

    def __call__(self, codes, out=None):
        """int8 codes (as floats) in, the layer's int8 output codes (as float32) out.

        out, when given, is a float32 buffer of the result's shape to write into.
        """
        return self.requantize(codes @ self.weight_t, out)

    def requantize(self, acc, out=None):
        """The layer's int8 output codes (as float32) from its accumulators without the bias
        (exact integers as floats, or int32 from the onnx backend)."""
        y = np.multiply(acc, self.scale)
        y += self.offset
        if self.activation == "relu":  # y already holds + 0.5 (and the zero point)
            np.floor(y, out=y)
        else:
            if self.activation == "leaky_relu":
                y_neg = np.multiply(acc, self.neg_scale)
                y_neg += self.neg_offset
                np.copyto(y, y_neg, where=acc < self.negative_below)
            y += np.copysign(0.5, y)
            np.trunc(y, out=y)
        if self.zero_after:
            y += self.zero_after
        if self.table is not None:
            index = np.clip(y, q.QMIN, q.QMAX, out=y).astype(np.intp) - q.QMIN
            return np.take(self.table, index, out=out)
        return _clamp(y, self.floor, out)


def _clamp(values, low, out):
    """values clamped to [low, 127] into out: np.clip on large arrays, where it is fastest,
    minimum and maximum on small ones, where np.clip's own overhead dominates."""
    if values.size > 4096:
        return np.clip(values, low, q.QMAX, out=out)
    np.minimum(values, q.QMAX, out=values)
    return np.maximum(values, low, out=out, dtype=np.float32)  # integers: exact in float32


def prepare(layer):
    """The kernel of one layer, by its kind: LayerKernel for dense, windows.KERNELS for the
    window kinds (intref_windows.py; a convolution keeps its requantization in a LayerKernel)."""
    if layer.kind == "dense":
        return LayerKernel.prepare(layer)
    dense = LayerKernel.prepare(layer) if isinstance(layer, intref.IntegerLayer) else None
    return KERNELS[layer.kind](layer, dense)


class Kernels:
    """A model's layers as numpy kernels: call it with int8 codes for the int8 scores."""

    def __init__(self, layers):
        self.kernels = [prepare(layer) for layer in layers]

    def __call__(self, codes) -> np.ndarray:
        return integer_scores(self.kernels, codes)


def integer_scores(kernels, codes) -> np.ndarray:
    """int8 scores of int8 input codes through prepared layers, ROWS_PER_PASS samples at a time.

    Buffers are allocated once per call: fresh large arrays for every pass would cost more in
    page faults than the arithmetic. Batches up to SMALL_BATCH skip them (single-sample latency),
    and so do models with window layers, WINDOW_ROWS samples at a time.
    """
    n = len(codes)
    if n <= SMALL_BATCH:
        return _forward(kernels, codes).astype(np.int8)
    if not all(isinstance(kernel, LayerKernel) for kernel in kernels):  # window layers
        out = np.empty((n, kernels[-1].outputs), dtype=np.int8)
        for start in range(0, n, WINDOW_ROWS):
            out[start : start + WINDOW_ROWS] = _forward(kernels, codes[start : start + WINDOW_ROWS])
        return out
    rows = min(ROWS_PER_PASS, n)
    x = np.empty((rows, kernels[0].weight_t.shape[0]), dtype=kernels[0].dtype)
    buffers = [np.empty((rows, k.outputs), dtype=np.float32) for k in kernels]
    out = np.empty((n, kernels[-1].outputs), dtype=np.int8)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        h = x[: stop - start]
        np.copyto(h, codes[start:stop], casting="unsafe")
        for kernel, buffer in zip(kernels, buffers):
            h = kernel(h.astype(kernel.weight_t.dtype, copy=False), buffer[: stop - start])
        out[start:stop] = h
    return out


def _forward(kernels, codes):
    """The layers' int8 codes (as floats) of a few samples' codes, without buffers."""
    h = codes.astype(kernels[0].dtype)
    for kernel in kernels:
        h = kernel(h.astype(kernel.dtype, copy=False))
    return h
