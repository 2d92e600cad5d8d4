"""The numpy backend's window kernels: the fast forms of intref_windows.py, exact in floats.

Codes travel as float32 (or float64) holding exact integers, as in numpy.py:

- conv2d: im2col of the codes padded with the input zero point, one BLAS product in
  q.accumulator_dtype(kh*kw*in_c) (exact: every partial sum is an integer below 2**24 in
  float32, 2**53 in float64), then the dense kernel's requantization (numpy.LayerKernel).
- depthwise: one multiply-add per kernel tap over the whole batch, in
  q.accumulator_dtype(kh*kw), then the same requantization per channel.
- max pool: the largest of the taps' strided views (padding -128); no arithmetic, so exact.
- avg pools: the taps' sum in float32 (|sum| <= 65536 * 128 < 2**24: exact), divided by the
  count in float64 as the spec does in integers: floor_divide(2*|sum| + count, 2*count) is
  exact on integers below 2**53 (numpy computes it with fmod), signed with copysign.

Each kernel takes flat rows (samples, H*W*C) and returns flat rows (samples, outputs), like
LayerKernel; `dtype` is the float type it wants its input in and `outputs` its row length.
tests/test_backends_windows.py compares each with the spec at the extremes.
"""

from __future__ import annotations

import numpy as np

from .. import quantization as q
from .. import spatial


class ConvKernel:
    """conv2d: windows as rows, one product, the dense requantization (dense: its LayerKernel)."""

    def __init__(self, layer, dense):
        self.shape, self.geometry, self.pad_value = layer.input_shape, layer.geometry, layer.input_zero_point
        self.dense, self.dtype, self.outputs = dense, dense.weight_t.dtype, layer.outputs

    def __call__(self, codes, out=None):
        x = np.asarray(codes, dtype=self.dtype).reshape(len(codes), *self.shape)
        rows = spatial.im2col(x, self.geometry, self.pad_value)
        return self.dense(rows).reshape(len(codes), self.outputs)


class DepthwiseKernel:
    """depthwise: each tap's strided view times its per-channel weights, summed in place."""

    def __init__(self, layer, dense):
        self.shape, self.geometry, self.pad_value = layer.input_shape, layer.geometry, layer.input_zero_point
        self.dense, self.outputs, self.channels = dense, layer.outputs, layer.channels
        self.dtype = q.accumulator_dtype(layer.weights.shape[1])
        self.taps = np.ascontiguousarray(layer.weights.T, dtype=self.dtype)  # (kh*kw, C)

    def __call__(self, codes, out=None):
        x = np.asarray(codes, dtype=self.dtype).reshape(len(codes), *self.shape)
        padded = spatial.pad(x, self.geometry, self.pad_value)
        acc = None
        for tap, (_, _, rows, columns) in enumerate(self.geometry.offsets()):
            term = padded[:, rows, columns, :] * self.taps[tap]
            acc = term if acc is None else np.add(acc, term, out=acc)
        return self.dense.requantize(acc.reshape(-1, self.channels)).reshape(len(codes), self.outputs)


class PoolKernel:
    """max_pool, avg_pool, global_avg_pool: the taps' largest value, or their sum divided."""

    dtype = np.float32

    def __init__(self, layer, dense=None):
        self.shape, self.geometry, self.kind, self.outputs = (
            layer.input_shape,
            layer.geometry,
            layer.kind,
            layer.outputs,
        )
        self.count = layer.kernel[0] * layer.kernel[1]

    def __call__(self, codes, out=None):
        x = np.asarray(codes, dtype=np.float32).reshape(len(codes), *self.shape)
        if self.kind == "global_avg_pool":
            return divide_half_away(x.sum(axis=(1, 2)), self.count)
        padded = spatial.pad(x, self.geometry, q.QMIN)
        taps = (padded[:, rows, columns, :] for _, _, rows, columns in self.geometry.offsets())
        combine = np.maximum if self.kind == "max_pool" else np.add
        result = next(taps).copy()
        for tap in taps:
            combine(result, tap, out=result)
        if self.kind == "avg_pool":
            result = divide_half_away(result, self.count)
        return result.reshape(len(codes), self.outputs)


def divide_half_away(total, count: int) -> np.ndarray:
    """intref_windows.divide_half_away on exact integer floats, as float32."""
    total = np.asarray(total, dtype=np.float64)
    magnitude = np.floor_divide(2.0 * np.abs(total) + count, 2.0 * count)
    return np.copysign(magnitude, total).astype(np.float32)


KERNELS = {  # kind -> kernel(layer, its dense LayerKernel or None)
    "conv2d": ConvKernel,
    "depthwise_conv2d": DepthwiseKernel,
    "max_pool": PoolKernel,
    "avg_pool": PoolKernel,
    "global_avg_pool": PoolKernel,
}
