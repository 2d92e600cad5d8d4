"""A convolution's fake-quantized training step, fused: the common case of window_layers.py's
convolutions (conv2d with relu or no activation, float32, batch norm or none) in a few passes.

It computes what layers.quantized_layer_forward and layer_backward compute for a convolution,
with the same integer layer, int8 codes and observed ranges, bit for bit (tests/test_conv_step.py
checks them against the spec), in fewer passes over memory:

- im2col reads the windows' codes less the input zero point (centred: real 0 is 0, padding
  too), so the accumulators acc_c = rows @ codes.T are exact small integers; the layer's own
  accumulators are acc = acc_c + zero * (each output's sum of codes), added where they are read.
- The normalization's statistics are the accumulators' exact ones (fused_windows.acc_stats:
  integer sums, then the mean and variance each rounded once), in the same pass as each
  column's least and largest accumulator. z is monotone in each column's folded accumulator,
  so the observed range is that of the columns' extremes: no pass over z to find it.
- One pass then makes the normalization's zhat, the int8 codes and the straight-through mask
  (fused_windows.conv_step); the backward's two passes take the mask, the normalization's
  sums and its d z0 (masked_sums, norm_backward).
- The weights' gradient is in_scale * (d z0.T @ centred rows): the real inputs are never made.

So two choices differ from the layers.py path, in float rounding only: the batch's mean and
variance are exact (layers.py sums float32 accumulators by BLAS), and the reductions of the
backward are float64 sums down each column; the weight gradient is scaled after its product.
Both forms of each loop (NumPy and compiled) agree bit for bit, so training stays the same with
or without a compiler, and deterministic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import batch_norm as bn
from . import fused_windows as fw
from . import quantization as q
from .layers import Layer, QuantSpec, effective_weights, observe, product, step_fields, step_kernel, step_weights

FLOAT32 = np.float32


class StepCache(NamedTuple):
    """What the fused backward needs of a fused forward."""

    rows: np.ndarray  # the windows' centred codes
    weights: tuple  # (codes, scales) of the unfolded layer
    zhat: np.ndarray | None  # the normalization's normalized pre-activation
    mask: np.ndarray  # uint8: where the gradient passes
    factor: np.ndarray | None  # gamma / sigma, float32
    batch: bool  # whether the batch's statistics trained
    clipped_weights: np.ndarray | None
    in_scale: float
    in_shape: tuple


def applies(layer: Layer, training: bool) -> bool:
    """Whether a convolution's step runs here: a training step of a conv2d, relu or linear,
    float32, whose centred accumulators (codes - zero in [-255, 255]) stay exact in float32."""
    return (
        training
        and layer.kind == "conv2d"
        and layer.activation in ("relu", "linear")
        and layer.weight.dtype == FLOAT32
        and 255 * 127 * layer.weight.shape[1] < 2**24
    )


def forward(layer: Layer, x, scale: float, zero: int, spec: QuantSpec):
    """The layer's int8 output codes (n, out_h, out_w, out_c) as float32 for its input codes x
    (n, h, w, c) of (scale, zero), the integer layer's fields, and the backward's cache."""
    rows = fw.im2col(x, layer.window, float(zero), 0.0)
    codes, w_scale, sums = step_weights(layer, spec)
    unfolded = (codes, w_scale)
    acc_c = product(rows, codes.T)
    shift = (zero * sums).astype(FLOAT32)  # exact: |zero * sum| < 2**24
    stats = fw.acc_stats(acc_c, shift)
    low, high = stats[4], stats[5]
    norm, sign, real_bias, norm_args, factor, batch = layer.norm, np.ones(len(sums)), layer.bias, None, None, False
    if norm is not None:
        real = scale * w_scale  # z0 = real * (acc - zero * sums) + bias, per channel
        offset = layer.bias.astype(np.float64) - real * zero * sums
        batch = not norm.frozen
        if batch:
            acc_mean, acc_var = fw.exact_moments(stats, len(acc_c))
            mean, var = real * acc_mean + offset, real * real * acc_var
            bn.move(norm, mean, var, len(acc_c))
        else:
            mean, var = norm.mean, norm.var
        sign, magnitude, real_bias = bn.fold(norm, var, mean, layer.bias)
        inverse = 1.0 / np.sqrt(np.asarray(var, np.float64) + bn.EPS)
        norm_args = ((real * inverse).astype(FLOAT32), ((offset - mean) * inverse).astype(FLOAT32))
        factor = (sign * magnitude).astype(FLOAT32)
        codes, w_scale, sums = codes * sign[:, None].astype(FLOAT32), w_scale * magnitude, sums * sign.astype(np.int64)
    bias = q.quantize_bias(real_bias, scale, zero, codes, w_scale, sums)
    z_scale = scale * w_scale
    sign32 = sign.astype(FLOAT32)
    # each column's folded accumulators run from lowest to highest, and z and relu(z) with them
    ends = [np.where(sign32 > 0, low, -high), np.where(sign32 > 0, high, -low)]
    z_low, z_high = (np.add(end, bias, dtype=np.float64) * z_scale for end in ends)
    z_low, z_high = z_low.astype(FLOAT32), z_high.astype(FLOAT32)  # overflow raises as preactivate's cast
    relu = layer.activation == "relu"
    if relu:
        z_low, z_high = np.maximum(z_low, 0), np.maximum(z_high, 0)
    observe(layer, z_low.min(), z_high.max())
    fields = step_fields(layer, codes, w_scale, bias, scale, zero, spec)
    kernel = step_kernel(fields, codes.T)
    out_scale, out_zero = fields["output_scale"], fields["output_offset"]
    lower, upper = out_scale * (q.QMIN - out_zero), out_scale * (q.QMAX - out_zero)
    out, zhat, mask = fw.conv_step(acc_c, shift, norm_args, sign32, kernel, bias.astype(np.float64), z_scale,
                                   relu, lower, upper)  # fmt: skip
    clipped_weights = None
    if spec.weight_scale is not None:
        clipped_weights = np.abs(layer.weight) <= q.WMAX * spec.weight_scale
    cache = StepCache(rows, unfolded, zhat, mask, factor, batch, clipped_weights, scale, x.shape)
    return out.reshape(len(x), *layer.window.out_hw, len(sums)), fields, cache


def backward(layer: Layer, cache: StepCache, grad, need_input: bool):
    """[d weight, d bias, (d gamma, d beta)] and d input (None unless need_input) from the
    gradient of the layer's output (n, out_h, out_w, out_c); grad is overwritten."""
    g = np.ascontiguousarray(grad.reshape(-1, grad.shape[-1]), FLOAT32)
    sum_g, sum_gz = fw.masked_sums(g, cache.mask, cache.zhat)
    extra, d_bias = [], sum_g.astype(FLOAT32)
    if cache.zhat is not None:
        d_gamma, d_beta = sum_gz.astype(FLOAT32), sum_g.astype(FLOAT32)
        k = cache.factor / FLOAT32(len(g)) if cache.batch else cache.factor
        d_bias = fw.norm_backward(g, cache.zhat, cache.batch, d_beta, d_gamma, k).astype(FLOAT32)
        extra = [d_gamma, d_beta]
    d_weight = product(g.T, cache.rows)
    d_weight *= FLOAT32(cache.in_scale)
    if cache.clipped_weights is not None:
        d_weight = d_weight * cache.clipped_weights
    d_x = None
    if need_input:
        d_rows = product(g, effective_weights(cache.weights, layer.weight.dtype))
        d_x = fw.col2im(d_rows, layer.window, cache.in_shape[3])
    return [d_weight, d_bias, *extra], d_x
