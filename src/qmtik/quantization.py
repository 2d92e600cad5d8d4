"""The int8 quantization: one definition of rounding, clamping, scales, zero points and multipliers.

Fake quantization during training and the preparation of the integer model both call these
functions, so the numbers a network is trained with are the numbers it runs with. What an
integer layer then computes with them is intref.py, the spec; docs/quantization.md is the
contract, these two modules its executable form.

Conventions (the contract in short):
- A real value r and its int8 code q are related by r = scale * (q - zero_point).
- Every rounding is half away from zero (C's ``roundf``), never numpy's half-to-even.
- Codes are clamped to [-128, 127]; weights to [-127, 127] (symmetric).
- A layer's int32 accumulator plus its bias stays inside (-2**30, 2**30); the bias is clamped
  so that this holds for every input.
- Requantization multiplies by an integer multiplier below 2**22 and divides by 2**shift,
  rounding half away from zero; the product stays below 2**52, so it is exact in int64 and in
  float64, and so is adding the half that rounds it.
"""

from __future__ import annotations

import math

import numpy as np

from . import fused
from .errors import QuantizationError

QMIN, QMAX = -128, 127  # int8 activation codes
WMAX = 127  # int8 weight codes are symmetric: [-127, 127]
MULTIPLIER_BITS = 22  # requantization multipliers lie in [2**21, 2**22)
MAX_SHIFT = 62  # beyond this the product rounds to 0 for every accumulator
ACC_LIMIT = 2**30  # |accumulator + bias| < ACC_LIMIT, always
MAX_FAN_IN = 65536  # keeps fan_in * 128 * 127 below ACC_LIMIT
SIGMOID_PRE_RANGE = 8.0  # sigmoid saturates to the last int8 code beyond |x| = 8
TANH_PRE_RANGE = 4.0  # tanh does so beyond |x| = 4
SIGMOID_SCALE, SIGMOID_ZERO = 1.0 / 256.0, -128  # sigmoid table output: [0, 1)
TANH_SCALE, TANH_ZERO = 1.0 / 128.0, 0  # tanh table output: [-1, 1)
TABLE_ACTIVATIONS = ("sigmoid", "tanh")
F32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32, about 1.2e-38
F32_MAX = float(np.finfo(np.float32).max)  # the largest float32, about 3.4e38
SCALE_MAX = F32_MAX / 256  # a scale whose 256 steps (every int8 code) stay finite in float32


def round_half_away(x):
    """Round to the nearest integer, halves away from zero, exactly, in the input's precision.

    ``floor(|x| + 0.5)`` is wrong for the float just below 0.5 (the sum rounds up to 1.0);
    subtracting the truncated part is exact, so this matches C's ``roundf``/``round``.
    """
    x = np.asarray(x)
    if x.dtype.kind == "f" and x.ndim:
        return _round_half_away_float(x)
    whole = np.trunc(x)
    return whole + np.copysign(np.abs(x - whole) >= 0.5, x, dtype=whole.dtype)


def _round_half_away_float(x):
    """round_half_away of a float array, in a faster form proven equal.

    np.rint rounds to the nearest integer, halves to even, so it differs only at ties. The
    distance d = x - rint(x) is exact (|d| <= 0.5; Sterbenz's lemma for |x| >= 1, and for
    |x| < 1 rint(x) is 0 or +-1 with x - rint(x) exact), so the ties are exactly the
    elements with |d| == 0.5, and there x + copysign(0.5, x) is the integer away from zero,
    exactly (ties exist only below 2**(mantissa bits), where that integer is representable).
    inf keeps inf (d is NaN, no tie); NaN stays NaN. Training rounds every weight every step.
    """
    nearest = np.rint(x)
    distance = np.subtract(x, nearest)
    ties = np.abs(distance) == 0.5
    if ties.any():
        at = x[ties]
        nearest[ties] = at + np.copysign(x.dtype.type(0.5), at)
    return nearest


def clamp_codes(q, lo: int = QMIN, hi: int = QMAX):
    """Saturate integer codes to [lo, hi]."""
    return np.clip(q, lo, hi)


def quantize(x, scale, zero_point=0, lo: int = QMIN, hi: int = QMAX):
    """Real values to integer codes: clamp(round_half_away(x / scale) + zero_point, lo, hi).

    Computed in the precision of x when it is a float array (float32 weights stay float32).
    A value so far beyond the codes that x / scale overflows (a tiny fixed scale) becomes
    +-inf, which rounding keeps (computing inf - inf on the way) and the clamp makes an end code.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        steps = round_half_away(x / np.asarray(scale, dtype=x.dtype))
    return clamp_codes(steps + zero_point, lo, hi)


def dequantize(q, scale, zero_point=0):
    """Integer codes to the real values they stand for."""
    return scale * (np.asarray(q, dtype=np.float64) - zero_point)


def fake_quantize(x, scale, zero_point=0, lo: int = QMIN, hi: int = QMAX):
    """Quantize then dequantize: the value the integer model will see in place of x."""
    return dequantize(quantize(x, scale, zero_point, lo, hi), scale, zero_point)


# --- scales ------------------------------------------------------------------------------------


def weight_scales(weight, per_channel: bool, fixed=None) -> np.ndarray:
    """The scale of each output channel's int8 weights (one repeated value when per tensor).

    Automatic scales map the largest |w| of the channel (or tensor) to 127, so no weight clips.
    A fixed scale (the C library's W_SCALE) is per tensor and may clip.
    """
    rows = weight.shape[0]
    absmax, finite = fused.row_absmax(weight)
    if not finite:
        raise QuantizationError("weights hold NaN or infinite values")
    if fixed is not None:
        return np.full(rows, float(fixed))
    if not per_channel:
        absmax = np.full(rows, absmax.max())
    return np.maximum(absmax.astype(np.float64), 1e-8) / WMAX


def affine_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point that map the real range [lo, hi] (widened to hold 0) onto [-128, 127].

    Zero is exactly representable, so a relu's floor is a code and padding costs nothing.
    A range with lo >= 0 gets zero point -128: non-negative values use all 256 codes.
    """
    problem = range_problem(lo, hi)
    if problem:
        raise QuantizationError(f"range [{float(lo):g}, {float(hi):g}] {problem}")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / (QMAX - QMIN)
    zero_point = min(max(QMIN - round_half_away_scalar(lo / scale), QMIN), QMAX)
    return scale, zero_point


def round_half_away_scalar(x: float) -> int:
    """round_half_away of one finite Python float, as an int, without NumPy's per-call cost
    (training chooses every layer's zero point at every step): the truncated part is exact."""
    whole = math.trunc(x)
    part = x - whole
    return whole + (part >= 0.5) - (part <= -0.5)


def range_problem(lo: float, hi: float) -> str | None:
    """Why [lo, hi] (an observed range of float32 values) cannot be quantized, or None when it
    can: both ends finite, lo <= hi, and its width (with 0) finite in float32, so that every
    code's value is a float32."""
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "is not finite"
    if lo > hi:
        return "is not [low, high]"
    if max(hi, 0.0) - min(lo, 0.0) > F32_MAX:
        return "is wider than float32 holds"
    return None


def scale_problem(scale) -> str | None:
    """Why a fixed scale (quantization.weight_scale or activation_scale) cannot be the step of
    int8 codes, or None when it can: a normal float32, with 256 steps finite in float32."""
    if not F32_TINY <= float(scale) <= SCALE_MAX:
        return (
            f"must lie from {F32_TINY:.3g} (the smallest normal float32) to {SCALE_MAX:.3g} "
            "(256 steps of it finite in float32)"
        )
    return None


def symmetric_scale(absmax: float, cap: float | None = None) -> float:
    """Scale that maps [-absmax, absmax] (capped, for table inputs) onto [-127, 127]."""
    absmax = float(absmax)
    if not np.isfinite(absmax):
        raise QuantizationError(f"range [-{absmax}, {absmax}] is not finite")
    if cap is not None:
        absmax = min(absmax, cap)
    return max(absmax, 1e-8) / WMAX


# --- requantization ----------------------------------------------------------------------------


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Split positive real multipliers into (multiplier, shift) with real ~= multiplier / 2**shift.

    The multiplier lies in [2**21, 2**22), so multiplier * (accumulator + bias) < 2**52: exact in
    int64 and in float64, with room to add the rounding half exactly. A real multiplier too small
    to move any accumulator becomes (0, 0).
    """
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if not (real.min() >= 0 and np.isfinite(real.max())):  # a NaN fails the first test
        bad = np.flatnonzero(~(np.isfinite(real) & (real >= 0)))
        raise QuantizationError(f"requantization multiplier must be finite and >= 0, got {float(real[bad[0]])!r}")
    mantissa, exponent = np.frexp(real)  # real = mantissa * 2**exponent
    mult = round_half_away(mantissa * 2.0**MULTIPLIER_BITS).astype(np.int64)
    carry = mult == 2**MULTIPLIER_BITS  # mantissa rounded up to 1.0
    mult = np.where(carry, mult // 2, mult)
    exponent = exponent + carry
    shift = MULTIPLIER_BITS - exponent.astype(np.int64)
    if shift.min() < 0 and np.any((shift < 0) & (mult > 0)):
        raise QuantizationError(f"requantization multiplier {real.max():.3g} is too large (below 2**22 allowed)")
    vanishing = (shift > MAX_SHIFT) | (real == 0)
    return np.where(vanishing, 0, mult), np.where(vanishing, 0, shift)


def accumulator_bound(fan_in: int) -> int:
    """The largest |sum of weight * input codes| a layer can produce: fan_in * 128 * 127."""
    return fan_in * (-QMIN) * WMAX


def accumulator_dtype(fan_in: int):
    """The float type that sums fan_in int8 products exactly, in any order: float32 while
    accumulator_bound(fan_in) < 2**24 (every partial sum is an integer float32 holds; fan-ins
    up to 1032), else float64 (exact below 2**53)."""
    return np.float32 if accumulator_bound(fan_in) < 2**24 else np.float64


def bias_limit(fan_in: int) -> int:
    """How large |bias| may be so that accumulator plus bias stays inside (-2**30, 2**30)."""
    limit = ACC_LIMIT - 1 - accumulator_bound(fan_in)
    if fan_in > MAX_FAN_IN:
        raise QuantizationError(f"fan-in {fan_in} is too large for int32 accumulators (at most {MAX_FAN_IN})")
    return limit


# --- activation tables -------------------------------------------------------------------------


def activation_table(kind: str, pre_scale: float) -> np.ndarray:
    """The 256-entry int8 table of sigmoid or tanh, indexed by pre-activation code + 128."""
    if not (np.isfinite(pre_scale) and pre_scale > 0):
        raise QuantizationError(f"activation table: input scale {pre_scale!r} is not a finite number > 0")
    pre = pre_scale * np.arange(QMIN, QMAX + 1, dtype=np.float64)
    if kind == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-pre) = inf far left: sigmoid 0, exactly
            out = quantize(1.0 / (1.0 + np.exp(-pre)), SIGMOID_SCALE, SIGMOID_ZERO)
    elif kind == "tanh":
        out = quantize(np.tanh(pre), TANH_SCALE, TANH_ZERO)
    else:
        raise QuantizationError(f"activation {kind!r} has no table (only sigmoid and tanh)")
    return out.astype(np.int8)


def table_output_params(kind: str) -> tuple[float, int]:
    """The fixed (scale, zero point) of a table's int8 output."""
    return (SIGMOID_SCALE, SIGMOID_ZERO) if kind == "sigmoid" else (TANH_SCALE, TANH_ZERO)


# --- weights, biases and output scales --------------------------------------------------------


def quantize_weights(weight, per_channel: bool, fixed=None) -> tuple[np.ndarray, np.ndarray]:
    """Float weights to int8 codes in [-127, 127] and the scale of each output channel."""
    scales = weight_scales(weight, per_channel, fixed)
    codes = quantize(weight, scales[:, None].astype(weight.dtype), 0, -WMAX, WMAX).astype(np.int8)
    return codes, scales


def output_quantization(activation: str, observed, fixed=None) -> tuple[float, int, float | None]:
    """(output_scale, output_offset, table_input_scale) of a layer from its observed range or a
    fixed scale.

    observed is [min, max] of the layer's output, or of its pre-activation for sigmoid and
    tanh, whose outputs have the tables' fixed scales and whose inputs are capped at the range
    beyond which the function no longer changes by one int8 step.
    """
    if activation in TABLE_ACTIVATIONS:
        cap = SIGMOID_PRE_RANGE if activation == "sigmoid" else TANH_PRE_RANGE
        pre = float(fixed) if fixed is not None else symmetric_scale(np.abs(observed).max(), cap)
        return (*table_output_params(activation), pre)
    if fixed is not None:
        return float(fixed), (QMIN if activation == "relu" else 0), None
    scale, zero = affine_params(*observed)
    return scale, zero, None


def quantize_bias(bias, in_scale: float, in_zero: int, weight_codes, weight_scale, code_sums=None) -> np.ndarray:
    """int32 bias at scale in_scale * weight_scale, with the input zero point folded in.

    sum_j w_j (q_j - z) = sum_j w_j q_j - z * sum_j w_j, so the second term joins the bias.
    The result is clamped so that accumulator plus bias never leaves (-2**30, 2**30).
    code_sums: each output's sum of weight codes, when the caller has them exactly.
    """
    if not np.isfinite(bias).all():
        raise QuantizationError("biases hold NaN or infinite values")
    codes = round_half_away(np.asarray(bias, dtype=np.float64) / (in_scale * weight_scale))
    if code_sums is None:
        code_sums = weight_codes.astype(np.int64).sum(axis=1)
    codes = codes - in_zero * code_sums
    limit = bias_limit(weight_codes.shape[1])
    return np.minimum(np.maximum(codes, -limit), limit).astype(np.int64)  # np.clip costs more on few values


# --- inputs ------------------------------------------------------------------------------------

INPUT_SCALE, INPUT_ZERO = 1.0 / 255.0, -128  # network inputs live in [0, 1]: code = 255 x - 128


def input_range_problem(low: float, high: float) -> str | None:
    """Why [low, high] cannot map raw inputs to int8 codes in float32, or None when it can:
    both bounds and the float32 gain 255 / (high - low) must be finite, the gain positive."""
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        return "must be finite with low < high"
    with np.errstate(over="ignore", divide="ignore"):
        gain = np.float32(255.0 / (high - low))
        bounds = np.float32([low, high])
    if not (np.isfinite(bounds).all() and np.isfinite(gain) and gain > 0):
        return "must stay finite in float32, with a finite non-zero gain 255 / (high - low)"
    return None


def quantize_inputs(x, input_range) -> np.ndarray:
    """Raw inputs to int8 codes, in float32 exactly as the C helper computes them.

    code = clamp(round_half_away((x - low) * gain) - 128, -128, 127) with
    gain = float32(255 / (high - low)); for pixels with range [0, 255] this is pixel - 128.
    Computed as floor(clip(u, 0, 255) + 0.5) - 128: clipping first changes nothing (the
    bounds are integers), and for u >= 0 rounding half away is floor(u + 0.5), exact when the
    float32 u is widened to float64 before adding the half.
    """
    low, high = input_range
    gain = np.float32(255.0 / (float(high) - float(low)))
    x = np.asarray(x)
    if x.size <= 2**16:
        return _input_codes(x, np.float32(low), gain).astype(np.int8)
    codes = np.empty(x.shape, dtype=np.int8)
    rows = max(1, 2**16 // max(1, x[0].size))  # work in cache-sized pieces
    for start in range(0, len(x), rows):
        codes[start : start + rows] = _input_codes(x[start : start + rows], np.float32(low), gain)
    return codes


def _input_codes(x, low, gain):
    """quantize_inputs on one piece, as float64 codes.

    An input so far from a wide range that x - low (or its product with the gain) overflows
    float32 becomes +-inf, which the clamp makes code -128 or 127, exactly as in C: no error.
    """
    with np.errstate(over="ignore"):
        unit = np.subtract(x, low, dtype=np.float32)
        unit *= gain
    np.maximum(unit, 0, out=unit)  # np.clip costs more on small inputs
    np.minimum(unit, QMAX - QMIN, out=unit)
    code = np.add(unit, 0.5 + INPUT_ZERO, dtype=np.float64)  # exact: |u| < 256 has 24 bits
    return np.floor(code, out=code)
