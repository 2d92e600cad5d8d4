"""Layers and their passes: float weights, forward and backward, in float or fake-quantized.

In fake-quantized mode the forward pass *is* the integer model's arithmetic: each layer's
weights and bias become int8/int32 codes, the accumulator is computed exactly, and the int8
output comes from the integer layer the deployed model gets (intref.py, the spec), computed by
the numpy backend's kernel, which tests prove equal to the spec. Each step builds that kernel
straight from the layer's arrays (intref.layer_fields), without the cost of validating an
intref.IntegerLayer; integer_layers, which quantize() uses, builds validated ones from the
same functions. The backward pass then treats that rounding as the identity (the
straight-through estimator), zero where a value was clamped.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from . import batch_norm as bn
from . import fused, intref
from . import quantization as q
from .backends.numpy import LayerKernel
from .config import Config
from .errors import QuantizationError
from .functions import activation, activation_derivative

OBSERVER_MOMENTUM = 0.05  # weight of each new batch in the moving min/max of activations
BLAS_SUMS_FROM = 4096  # rows from which a bias gradient is summed by BLAS (a convolution's windows)


@dataclass
class Layer:
    """One layer of the network in training: float weights (outputs x inputs, a convolution's
    (out_c, kh * kw * in_c): dense over each window), bias, activation, observed range; for
    the layers over windows (window_layers.py), their kind, window and input shape (H, W, C);
    a batch normalization (batch_norm.py) when the layer has one. Pools have no weights."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str
    observed: np.ndarray  # moving [min, max] of the output (of the pre-activation for tables)
    work: dict = field(default_factory=dict, repr=False, compare=False)  # training's buffers
    kind: str = "dense"
    window: object = None  # spatial.Geometry of a convolution or a pool
    in_shape: tuple | None = None  # (H, W, C) of a layer over windows
    norm: bn.Norm | None = None

    def copy(self) -> "Layer":
        norm = None if self.norm is None else self.norm.copy()
        weight, bias, observed = self.weight.copy(), self.bias.copy(), self.observed.copy()
        return Layer(weight, bias, self.activation, observed, kind=self.kind, window=self.window,
                     in_shape=self.in_shape, norm=norm)  # fmt: skip

    def state(self) -> dict:
        """The named arrays a checkpoint keeps: weight, bias and observed range of a layer with
        weights, and its normalization's gamma, beta and moving statistics."""
        if not self.weight.size:
            return {}
        out = {"weight": self.weight, "bias": self.bias, "observed": self.observed}
        if self.norm is not None:
            out.update(gamma=self.norm.gamma, beta=self.norm.beta, mean=self.norm.mean, var=self.norm.var)
        return out

    def load_state(self, arrays: dict) -> None:
        """Take the arrays of state() (checked by the caller: the same names and shapes)."""
        for name, value in arrays.items():
            target = self.state()[name]
            if name == "observed":
                self.observed = np.array(value, np.float64)
            else:
                target[...] = value

    def params(self) -> list:
        """The arrays the optimizer trains: weight, bias, and a normalization's gamma and beta."""
        if not self.weight.size:
            return []
        return [self.weight, self.bias] + ([] if self.norm is None else [self.norm.gamma, self.norm.beta])


@dataclass(frozen=True)
class QuantSpec:
    """The quantization choices of a config, in the form the layers need them."""

    per_channel: bool
    weight_scale: float | None
    activation_scale: float | None
    slope: float

    @classmethod
    def from_config(cls, config: Config) -> "QuantSpec":
        qc = config.quantization
        fixed = lambda v: None if v == "auto" else float(v)  # noqa: E731
        return cls(qc.per_channel, fixed(qc.weight_scale), fixed(qc.activation_scale), config.network.leaky_slope)


def init_layers(config: Config, rng: np.random.Generator, dtype=np.float32) -> list[Layer]:
    """Random layers for the config's network: He-normal weights before relu and leaky relu,
    Glorot-normal otherwise, zero biases; a batch normalization starts as the identity. A
    flatten layer is no layer: a dense layer flattens its input (row-major, as TFLite does)."""
    layers = []
    for shape in config.network.shapes:
        spec = shape.spec
        if spec.kind == "flatten":
            continue
        in_shape = shape.in_shape if len(shape.in_shape) != 2 else (1, *shape.in_shape)  # 1-D: height 1
        if spec.kind in ("max_pool", "avg_pool", "global_avg_pool"):
            empty, nothing = np.zeros((0, 0), dtype), np.zeros(0, dtype)
            layers.append(Layer(empty, nothing, "linear", np.full(2, np.nan), kind=spec.kind, window=shape.geometry,
                                in_shape=in_shape))  # fmt: skip
            continue
        fan_out = spec.units if spec.kind == "dense" else shape.out_shape[-1]
        fan_in = shape.weights // fan_out
        std = np.sqrt(2.0 / fan_in) if spec.activation in ("relu", "leaky_relu") else np.sqrt(2.0 / (fan_in + fan_out))
        weight = (rng.standard_normal((fan_out, fan_in)) * std).astype(dtype)
        layer = Layer(weight, np.zeros(fan_out, dtype), spec.activation, np.full(2, np.nan))
        if spec.kind != "dense":
            layer.kind = "depthwise_conv2d" if spec.kind == "depthwise_conv2d" else "conv2d"
            layer.window, layer.in_shape = shape.geometry, in_shape
            layer.norm = bn.Norm.identity(fan_out, dtype) if spec.batch_norm else None
        layers.append(layer)
    return layers


def observe(layer: Layer, low, high) -> None:
    """Move the layer's observed [min, max] toward this batch's [low, high] (the first batch sets it).

    A range that float32 codes cannot stand for (not finite, or wider than float32 holds) is
    an overflow of training, raised as numpy raises one: FloatingPointError, which the
    training loop reports as divergence.
    """
    batch = np.array([low, high], dtype=np.float64)
    if layer.observed[0] != layer.observed[0]:  # NaN: nothing observed yet
        layer.observed = batch
    else:
        layer.observed += OBSERVER_MOMENTUM * (batch - layer.observed)
    problem = q.range_problem(*layer.observed)
    if problem:
        raise FloatingPointError(
            f"the observed range {layer.observed.tolist()} of a {layer.activation} layer {problem}"
        )


def product(a, b):
    """a @ b: every matrix product of the training step goes through here, one place to time."""
    return a @ b


# --- float ------------------------------------------------------------------------------------


def float_layer_forward(layer: Layer, a_in, spec: QuantSpec, training: bool, z=None):
    """Float pre-activation (normalized when the layer has a normalization) and activation;
    observes the range the layer will be quantized to. a_in: rows of inputs; z, when given,
    the pre-activation rows another product made of a_in (a depthwise convolution's)."""
    if z is None:
        z = product(a_in, layer.weight.T) + layer.bias
    norm_cache = None
    if layer.norm is not None:
        z, norm_cache = bn.normalize(layer.norm, z, training)
    a = activation(layer.activation, z, spec.slope)
    if training:
        watched = z if layer.activation in q.TABLE_ACTIVATIONS else a
        observe(layer, watched.min(), watched.max())
    return a, (a_in, layer.weight, z, None, None, norm_cache)


# --- fake-quantized ---------------------------------------------------------------------------


def quantized_layer_forward(
    layer: Layer, q_in, in_scale: float, in_zero: int, spec: QuantSpec, training: bool, accumulate=None
):
    """The integer layer's int8 output codes (as float32) for int8 input codes, and what backward needs.

    Returns (codes, fields, cache): fields are the integer layer's (intref.layer_fields). The
    observed range is updated from the float value of this very accumulator before the output
    scale is chosen, so the first step is calibrated. accumulate(q_in, codes, sums), when given,
    makes the accumulator rows another way than the product (a depthwise convolution's).
    """
    codes, w_scale, sums = step_weights(layer, spec) if training else integer_weights(layer, spec)
    weight_t = np.asarray(codes.T, dtype=q.accumulator_dtype(codes.shape[1]))  # BLAS takes either order
    q_in = np.asarray(q_in, weight_t.dtype)  # int8 codes as floats (the first layer's come as int8)
    acc = product(q_in, weight_t) if accumulate is None else accumulate(q_in, codes, sums)  # exact, no bias
    dtype = layer.weight.dtype
    unfolded, real_bias, norm_cache = (codes, w_scale), layer.bias, None
    if layer.norm is not None:
        acc, codes, w_scale, sums, real_bias, norm_cache = folded(layer, acc, codes, w_scale, sums, in_scale, in_zero,
                                                                  training)  # fmt: skip
        weight_t = codes.T
    bias = q.quantize_bias(real_bias, in_scale, in_zero, codes, w_scale, sums)
    table = layer.activation in q.TABLE_ACTIVATIONS
    # the real pre-activation acc stands for, its activation, and the range the observer watches
    z, a, seen = fused.preactivate(acc, bias, in_scale * w_scale, layer.activation, spec.slope, dtype, table)
    if training:
        observe(layer, *seen)
    fields = step_fields(layer, codes, w_scale, bias, in_scale, in_zero, spec)
    kernel = step_kernel(fields, weight_t)
    if not training:
        return kernel.requantize(acc), fields, None
    # straight-through: gradient passes where the value was inside the representable range
    value, scale, zero = (
        (z, fields["table_input_scale"], 0) if table else (a, fields["output_scale"], fields["output_offset"])
    )
    out, inside = fused.requantize_step(kernel, acc, value, scale * (q.QMIN - zero), scale * (q.QMAX - zero))
    clipped_weights = None
    if spec.weight_scale is not None:
        clipped_weights = np.abs(layer.weight) <= q.WMAX * spec.weight_scale
    a_in = np.subtract(q_in, in_zero, dtype=dtype)  # the real inputs, for the weights' gradient
    np.multiply(in_scale, a_in, out=a_in)
    return out, fields, (a_in, unfolded, z, inside, clipped_weights, norm_cache)


def folded(layer: Layer, acc, codes, w_scale, sums, in_scale: float, in_zero: int, training: bool):
    """The step's integer layer with its normalization folded in (batch_norm.py says how):
    (accumulators, codes, scales, code sums, real bias) of the folded layer, and what backward
    needs. The statistics are of the unfolded layer's real pre-activation z0, which is each
    channel's accumulators times in_scale * w_scale, less the zero point's share, plus the bias:
    so they come from the accumulators' own, and z0 is never made."""
    norm = layer.norm
    real = in_scale * w_scale  # z0 = real * (acc - in_zero * sums) + bias, per channel
    offset = layer.bias.astype(np.float64) - real * in_zero * sums
    if training and not norm.frozen:
        acc_mean, acc_var = bn.moments(acc)
        mean, var = real * acc_mean + offset, real * real * acc_var
        bn.move(norm, mean, var, len(acc))
    else:
        mean, var = norm.mean, norm.var
    sign, magnitude, real_bias = bn.fold(norm, var, mean, layer.bias)
    inverse = 1.0 / np.sqrt(np.asarray(var, np.float64) + bn.EPS)
    dtype = layer.weight.dtype
    zhat = acc * (real * inverse).astype(dtype) + ((offset - mean) * inverse).astype(dtype)
    cache = (zhat, (sign * magnitude).astype(dtype), training and not norm.frozen)
    codes = codes * sign[:, None].astype(codes.dtype)
    return acc * sign.astype(acc.dtype), codes, w_scale * magnitude, sums * sign.astype(np.int64), real_bias, cache


def step_weights(layer: Layer, spec: QuantSpec):
    """integer_weights for a training step: the same codes, as floats (exact integers), their
    scales and each output's sum of codes.

    The codes are written into buffers the layer keeps between steps (the previous step's
    backward pass is done with them by then), which saves allocating them at every step.
    """
    w_scale = q.weight_scales(layer.weight, spec.per_channel, spec.weight_scale)
    buffers = layer.work.get("codes")
    if buffers is None or buffers[0].shape != layer.weight.shape or buffers[0].dtype != layer.weight.dtype:
        buffers = layer.work["codes"] = (np.empty_like(layer.weight), np.empty_like(layer.weight))
    limit = q.WMAX if spec.weight_scale is not None else 0  # automatic scales cannot clip
    codes, sums = fused.weight_codes(layer.weight, w_scale.astype(layer.weight.dtype), limit, *buffers)
    return codes, w_scale, sums


def pre_activation_gradient(layer: Layer, cache, grad, spec: QuantSpec):
    """d z0 (the gradient of the pre-activation rows, before any normalization) and the
    normalization's [d gamma, d beta], from the gradient of the layer's output rows."""
    _, _, z, inside, _, norm_cache = cache
    g = grad * activation_derivative(layer.activation, z, spec.slope)
    if inside is not None:
        g = g * inside
    if norm_cache is None:
        return g, []
    g, d_gamma, d_beta = bn.backward(g, norm_cache)
    return g, [d_gamma, d_beta]


def layer_backward(layer: Layer, cache, grad, spec: QuantSpec, need_input: bool):
    """The gradients of the layer's params() and, when need_input, of its input rows, from the
    gradient of its output rows (float and fake-quantized passes alike: straight-through)."""
    a_in, weights, _, _, clipped_weights, _ = cache
    g, extra = pre_activation_gradient(layer, cache, grad, spec)
    d_weight = product(g.T, a_in)
    if clipped_weights is not None:
        d_weight = d_weight * clipped_weights
    grads = [d_weight, g.sum(axis=0) if len(g) <= BLAS_SUMS_FROM else bn.column_sums(g), *extra]
    return grads, product(g, effective_weights(weights, layer.weight.dtype)) if need_input else None


def effective_weights(weights, dtype):
    """The weights the backward pass carries gradients through: a float layer's own, or the
    real values of a fake-quantized layer's (codes, scales), made only for the layers that
    pass a gradient on (not the first)."""
    if isinstance(weights, tuple):
        codes, w_scale = weights
        return fused.dequantized(codes, w_scale, np.empty(codes.shape, dtype))
    return weights


def integer_weights(layer: Layer, spec: QuantSpec):
    """A layer's int8 weight codes (as floats), their scales and each output's sum of codes."""
    codes, w_scale = q.quantize_weights(layer.weight, spec.per_channel, spec.weight_scale)
    codes = codes.astype(layer.weight.dtype)
    return codes, w_scale, fused.code_sums(codes)


def integer_fields(layer: Layer, in_scale: float, in_zero: int, spec: QuantSpec) -> dict:
    """The fields of the integer layer a trained layer stands for (intref.layer_fields): its
    codes as int8, the output scale of its observed range, its normalization folded in with
    the moving statistics, as the frozen training step folds them."""
    codes, w_scale, sums = integer_weights(layer, spec)
    real_bias = layer.bias
    if layer.norm is not None:
        sign, magnitude, real_bias = bn.fold(layer.norm, layer.norm.var, layer.norm.mean, layer.bias)
        codes, w_scale, sums = codes * sign[:, None], w_scale * magnitude, sums * sign.astype(np.int64)
    bias = q.quantize_bias(real_bias, in_scale, in_zero, codes, w_scale, sums)
    return step_fields(layer, codes.astype(np.int8), w_scale, bias, in_scale, in_zero, spec)


def integer_layer(layer: Layer, in_scale: float, in_zero: int, spec: QuantSpec) -> intref.IntegerLayer:
    """The dense integer layer a trained dense layer stands for."""
    fields = integer_fields(layer, in_scale, in_zero, spec)
    with named(layer, fields["weights"], spec):
        return intref.IntegerLayer(**fields)


def step_fields(layer: Layer, codes, w_scale, bias, in_scale: float, in_zero: int, spec: QuantSpec) -> dict:
    """integer_layer's fields, without building the layer: only its scales are checked (the
    rest is valid by construction), as IntegerLayer.validate would, with the same message."""
    out_scale, out_zero, pre_scale = q.output_quantization(layer.activation, layer.observed, spec.activation_scale)
    with named(layer, codes, spec):
        fields = intref.layer_fields(
            codes, bias, w_scale, in_scale, in_zero, layer.activation, out_scale, out_zero, pre_scale, spec.slope
        )
        for name in ("output_scale", "table_input_scale"):
            problem = fields[name] is not None and intref.scale_problem(fields[name])
            if problem:
                raise QuantizationError(f"{name} {fields[name]} {problem}")
    return fields


def step_kernel(fields: dict, weight_t) -> LayerKernel:
    """The numpy backend's kernel of an integer layer's fields (tests prove it equal to the spec)."""
    return LayerKernel.from_arrays(
        fields["weights"],
        fields["bias"],
        fields["output_multiplier"],
        fields["output_shift"],
        fields["activation"],
        fields["output_offset"],
        fields["negative_multiplier"],
        fields["negative_shift"],
        fields["table"],
        weight_t=weight_t,
    )


@contextmanager
def named(layer: Layer, codes, spec: QuantSpec):
    """A QuantizationError inside becomes one naming the layer and the fixed scales to check."""
    try:
        yield
    except QuantizationError as exc:
        fixed = [
            f"quantization.{name}" for name in ("weight_scale", "activation_scale") if getattr(spec, name) is not None
        ]
        hint = f"; check {' and '.join(fixed)}" if fixed else ""
        raise QuantizationError(f"{layer.activation} layer of {codes.shape[0]} outputs: {exc}{hint}") from None
