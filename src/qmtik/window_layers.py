"""The layers over windows, in training: convolutions, pools, and the passes that dispatch on a
layer's kind.

A convolution is a dense layer over its windows: im2col turns a batch (n, H, W, C) into one
row per output position, (n * out_h * out_w, kh * kw * C), and the dense layer's float or
fake-quantized pass (layers.py) runs on those rows unchanged: the same weight codes, scales,
requantization and straight-through gradient. In the fake-quantized pass the windows are read
from the int8 codes padded with the input's zero point, as the integer model pads them, so that
padding is real 0. col2im carries the rows' gradient back to the input.

Pools keep their input's scale and zero point. Max pooling takes the largest code, which is
the largest value; average pooling adds a window's codes and divides by its size, rounding
half away from zero (docs/quantization.md). The gradient treats that rounding as the identity.

Activations between layers are (n, H, W, C) arrays over windows and (n, features) rows after
a dense layer; a dense layer flattens a spatial input (row-major NHWC, as TFLite flattens).
"""

from __future__ import annotations

import numpy as np

from . import conv_ops, conv_step, fused_windows, intref_windows
from . import quantization as q
from .layers import (
    Layer,
    QuantSpec,
    effective_weights,
    float_layer_forward,
    integer_fields,
    integer_layer,
    layer_backward,
    named,
    pre_activation_gradient,
    quantized_layer_forward,
)
from .spatial import pad

CONVOLUTIONS = ("conv2d", "depthwise_conv2d")  # conv1d and pointwise are conv2d with a (1, k) or 1 x 1 window
EXACT_FLOAT32_TAPS = 2**24 // (255 * 127)  # a depthwise window sums (code - zero) * weight exactly in float32
POOLS = ("max_pool", "avg_pool", "global_avg_pool")


def spatial(x, layer: Layer):
    """x as the layer's (n, H, W, C) input (a flat input is reshaped in row-major order)."""
    return x.reshape(len(x), *layer.in_shape)


def output_shape(layer: Layer) -> tuple:
    """A layer's output shape per sample: (H, W, C) over windows, (C,) after global pooling,
    (outputs,) for a dense layer."""
    if layer.kind == "dense":
        return (layer.weight.shape[0],)
    if layer.kind == "global_avg_pool":
        return (layer.in_shape[2],)
    channels = layer.weight.shape[0] if layer.kind in CONVOLUTIONS else layer.in_shape[2]
    return (*layer.window.out_hw, channels)


# --- float -------------------------------------------------------------------------------------


def float_forward(layer: Layer, a, spec: QuantSpec, training: bool):
    """The layer's float output for a batch, and what float_backward needs."""
    if layer.kind == "dense":
        return float_layer_forward(layer, a.reshape(len(a), -1), spec, training)
    if layer.kind == "depthwise_conv2d":
        x = spatial(a, layer)
        z, _ = conv_ops.depthwise_forward(
            x, taps_of(layer, layer.weight), layer.bias, layer.window.stride, pads_of(layer.window)
        )
        out, cache = float_layer_forward(layer, x, spec, training, z=z.reshape(-1, z.shape[3]))
        return out.reshape(len(a), *output_shape(layer)), (cache, x.shape)
    if layer.kind in CONVOLUTIONS:
        rows = fused_windows.im2col(spatial(a, layer), layer.window)
        out, cache = float_layer_forward(layer, rows, spec, training)
        return out.reshape(len(a), *output_shape(layer)), (cache, a.shape)
    return pool_forward(layer, spatial(a, layer))


def taps_of(layer: Layer, weight):
    """A depthwise layer's weights (c, kh * kw) as conv_ops takes them, (c, kh, kw)."""
    return weight.reshape(weight.shape[0], *layer.window.kernel)


def pool_forward(layer: Layer, x):
    """A pool of real values (or of codes: the same windows), and its backward cache."""
    geo = layer.window
    if layer.kind == "max_pool":
        return conv_ops.max_pool_forward(x, geo.kernel, geo.stride, pads_of(geo))
    if layer.kind == "avg_pool":
        return conv_ops.avg_pool_forward(x, geo.kernel, geo.stride)
    return conv_ops.global_avg_pool_forward(x)


def pads_of(geo):
    """A Geometry's padding as the explicit [top, bottom, left, right] conv_ops takes."""
    return list(geo.pads)


# --- fake-quantized -------------------------------------------------------------------------------


def quantized_forward(layer: Layer, codes, scale: float, zero: int, spec: QuantSpec, training: bool):
    """The layer's int8 output codes (as floats) for int8 input codes, their (scale, zero point),
    and what backward needs (the fields of a layer with weights go with its cache)."""
    if layer.kind == "dense":
        out, fields, cache = quantized_layer_forward(layer, codes.reshape(len(codes), -1), scale, zero, spec, training)
        return out, (fields["output_scale"], fields["output_offset"]), cache
    if layer.kind == "depthwise_conv2d":
        x = spatial(np.asarray(codes, np.float32), layer)
        out, fields, cache = quantized_layer_forward(
            layer,
            x,
            scale,
            zero,
            spec,
            training,
            accumulate=lambda q_in, w, sums: depthwise_acc(layer, q_in, w, sums, zero),
        )
        out = out.reshape(len(codes), *output_shape(layer))
        return out, (fields["output_scale"], fields["output_offset"]), (cache, x.shape)
    if conv_step.applies(layer, training):  # the common case, fused
        x = spatial(np.asarray(codes, np.float32), layer)
        out, fields, cache = conv_step.forward(layer, x, scale, zero, spec)
        return out, (fields["output_scale"], fields["output_offset"]), cache
    if layer.kind in CONVOLUTIONS:
        x = spatial(np.asarray(codes, np.float32), layer)
        rows = fused_windows.im2col(x, layer.window, 0.0, zero)  # padded with the zero point: real 0
        out, fields, cache = quantized_layer_forward(layer, rows, scale, zero, spec, training)
        out = out.reshape(len(codes), *output_shape(layer))
        return out, (fields["output_scale"], fields["output_offset"]), (cache, x.shape)
    x = spatial(np.asarray(codes, np.float32), layer)
    if layer.kind == "max_pool":
        out, cache = pool_forward(layer, x)
        return out, (scale, zero), cache
    cache = x.shape if layer.kind == "global_avg_pool" else (x.shape, layer.window)  # conv_ops' caches
    return average_codes(layer, x), (scale, zero), cache


def depthwise_acc(layer: Layer, q_in, codes, sums, zero: int):
    """A depthwise layer's exact accumulator rows (n * out_h * out_w, c) without the bias: the
    sum over each window of (code - zero) * weight code, padding being the zero point (0 after
    the subtraction), plus zero * the channel's weight sum, which the bias takes back."""
    taps = layer.window.kernel[0] * layer.window.kernel[1]
    dtype = np.float32 if taps < EXACT_FLOAT32_TAPS else np.float64
    centred = np.subtract(q_in, zero, dtype=dtype)
    acc, _ = conv_ops.depthwise_forward(centred, taps_of(layer, codes.astype(dtype)), None, layer.window.stride,
                                        pads_of(layer.window))  # fmt: skip
    acc = acc.reshape(-1, acc.shape[3])
    acc += (zero * sums).astype(dtype)
    return acc


def average_codes(layer: Layer, x):
    """A window's codes added up exactly and divided by its size, rounded half away from zero:
    the float64 quotient of two integers rounds exactly (a tie k + 0.5 is a float, and any
    other quotient is at least 1 / (2 * size) from one)."""
    if layer.kind == "global_avg_pool":
        total = x.sum(axis=(1, 2), dtype=np.float64)
        count = x.shape[1] * x.shape[2]
    else:
        geo = layer.window
        total = np.zeros((len(x), *geo.out_hw, x.shape[3]), np.float64)
        for _, _, rows, columns in geo.offsets():
            total += x[:, rows, columns]
        count = geo.kernel[0] * geo.kernel[1]
    return q.round_half_away(total / count).astype(np.float32)


# --- backward ------------------------------------------------------------------------------------


def layer_gradients(layer: Layer, cache, grad, spec: QuantSpec, need_input: bool):
    """(the gradients of the layer's params(), d input) from d output, float or fake-quantized
    alike (the straight-through rule makes them the same passes)."""
    if layer.kind == "dense":
        return layer_backward(layer, cache, grad.reshape(len(grad), -1), spec, need_input)
    grad = grad.reshape(len(grad), *output_shape(layer))  # a dense layer after it passes back flat rows
    if isinstance(cache, conv_step.StepCache):
        return conv_step.backward(layer, cache, grad, need_input)
    if layer.kind == "depthwise_conv2d":
        return depthwise_gradients(layer, cache, grad, spec)
    if layer.kind in CONVOLUTIONS:
        dense_cache, in_shape = cache
        rows = grad.reshape(-1, grad.shape[-1])
        grads, d_rows = layer_backward(layer, dense_cache, rows, spec, need_input)
        d_in = None if d_rows is None else fused_windows.col2im(d_rows, layer.window, in_shape[3])
        return grads, d_in
    if layer.kind == "max_pool":
        return [], conv_ops.max_pool_backward(grad, cache)
    if layer.kind == "avg_pool":
        return [], conv_ops.avg_pool_backward(grad, cache)
    return [], conv_ops.global_avg_pool_backward(grad, cache)


def depthwise_gradients(layer: Layer, cache, grad, spec: QuantSpec):
    """A depthwise layer's [d weight, d bias, (d gamma, d beta)] and d input: the pre-activation's
    gradient carried back per kernel tap (conv_ops), through the weights' real values."""
    dense_cache, in_shape = cache
    a_in, weights, _, _, clipped_weights, _ = dense_cache
    g, extra = pre_activation_gradient(layer, dense_cache, grad.reshape(-1, grad.shape[-1]), spec)
    real = taps_of(layer, effective_weights(weights, layer.weight.dtype))
    g = g.reshape(in_shape[0], *layer.window.out_hw, in_shape[3])
    d_x, d_weight, d_bias = conv_ops.depthwise_backward(g, (pad(a_in, layer.window, 0), real, layer.window, True))
    d_weight = d_weight.reshape(layer.weight.shape)
    if clipped_weights is not None:
        d_weight = d_weight * clipped_weights
    return [d_weight, d_bias, *extra], d_x


# --- the integer layers -----------------------------------------------------------------------------


def integer_layer_of(layer: Layer, scale: float, zero: int, spec: QuantSpec):
    """The integer layer (intref / intref_windows) a trained layer stands for, given its input's
    scale and zero point, and its output's (scale, zero point)."""
    if layer.kind == "dense":
        integer = integer_layer(layer, scale, zero, spec)
        return integer, (integer.output_scale, integer.output_offset)
    if layer.kind in CONVOLUTIONS:
        fields = integer_fields(layer, scale, zero, spec)
        geo = layer.window
        kind = intref_windows.DepthwiseLayer if layer.kind == "depthwise_conv2d" else intref_windows.ConvLayer
        with named(layer, fields["weights"], spec):
            integer = kind(**fields, input_shape=layer.in_shape, kernel=geo.kernel, stride=geo.stride, pads=geo.pads)
        return integer, (integer.output_scale, integer.output_offset)
    if layer.kind == "global_avg_pool":
        return intref_windows.GlobalAvgPoolLayer(input_shape=layer.in_shape, scale=scale, zero_point=zero), (
            scale,
            zero,
        )
    geo = layer.window
    kind = intref_windows.MaxPoolLayer if layer.kind == "max_pool" else intref_windows.AvgPoolLayer
    pool = kind(input_shape=layer.in_shape, kernel=geo.kernel, scale=scale, zero_point=zero, stride=geo.stride,
                pads=geo.pads)  # fmt: skip
    return pool, (scale, zero)
