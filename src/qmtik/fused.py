"""The training step's elementwise loops, each in one pass when qmtik's compiled module built.

Training rounds every weight and updates every parameter at every step; in NumPy each of
those is a dozen passes over memory, which made them a third of an int8 epoch. qmtik._fused
(src/qmtik/_fused.c, built by setup.py when a C compiler is present) does each in one pass.
The NumPy forms here are the definitions: the compiled forms compute the same float32
operations in the same order, and tests/test_fused.py checks them bit for bit, so a model
trains to the same bits with or without a compiler.

QMTIK_FUSED=numpy in the environment uses the NumPy forms even when the module built (for
comparing the two, and for the benchmark's profile).
"""

from __future__ import annotations

import os

import numpy as np

from .functions import activation

try:
    from . import _fused as compiled
except ImportError:  # no C compiler when qmtik was installed: the NumPy forms
    compiled = None


def using_compiled() -> bool:
    """Whether the compiled loops run: they built, and QMTIK_FUSED does not ask for numpy."""
    return compiled is not None and os.environ.get("QMTIK_FUSED", "") != "numpy"


FLOAT32 = np.dtype(np.float32)


def _fits(*arrays) -> bool:
    """The compiled loops take C-contiguous float32 arrays (a plain loop: it runs for every
    parameter at every step)."""
    for a in arrays:
        if a.dtype != FLOAT32 or not a.flags.c_contiguous:
            return False
    return True


def _raise_if_not_finite(bad: int, what: str) -> None:
    """Report values that left float32 as NumPy would under np.errstate(over='raise'), which
    training's divergence check relies on; elsewhere they stay, as NumPy leaves them."""
    if bad and np.geterr()["over"] == "raise":
        raise FloatingPointError(f"overflow encountered in {what} ({bad} values not finite)")


# --- Adam ----------------------------------------------------------------------------------------


def adam_update(p, g, m, v, beta1: float, beta2: float, eps: float, step: float, work, denominator) -> None:
    """Adam's update of p in place from gradient g and moments m, v (also updated):

        m = m*beta1 + g*(1-beta1);  v = v*beta2 + (g*(1-beta2))*g;  p -= (m*step) / (sqrt(v) + eps)

    in p's precision, step the bias-corrected learning rate; work and denominator are scratch
    arrays of p's shape. A moment below the smallest normal float (about 1.2e-38 in float32)
    becomes 0: the first moment of a weight whose gradient is always 0 (a pixel that is always
    black) decays by beta1 each step into subnormal numbers, which processors compute a
    hundred times slower, and which move no weight (their step is below any weight's precision)."""
    if using_compiled() and _fits(p, g, m, v):
        bad = compiled.adam(p, g, m, v, beta1, 1 - beta1, beta2, 1 - beta2, eps, step)
        _raise_if_not_finite(bad, "the Adam update")
        return
    adam_update_numpy(p, g, m, v, beta1, beta2, eps, step, work, denominator)


def adam_update_numpy(p, g, m, v, beta1: float, beta2: float, eps: float, step: float, work, denominator) -> None:
    """adam_update in NumPy: the definition the compiled loop is checked against."""
    tiny = np.finfo(p.dtype).tiny
    m *= beta1
    m += np.multiply(g, 1 - beta1, out=work)
    np.copyto(m, 0, where=np.abs(m, out=work) < tiny)
    v *= beta2
    np.multiply(g, 1 - beta2, out=work)
    v += np.multiply(work, g, out=work)
    np.copyto(v, 0, where=v < tiny)
    np.sqrt(v, out=denominator)
    denominator += p.dtype.type(eps)
    np.multiply(m, p.dtype.type(step), out=work)
    p -= np.divide(work, denominator, out=work)


# --- weights -----------------------------------------------------------------------------------


def row_absmax(weight) -> tuple[np.ndarray, bool]:
    """Each row's largest |w| (float64), and whether every weight is finite."""
    if using_compiled() and weight.ndim == 2 and weight.size and _fits(weight):
        absmax = np.empty(weight.shape[0], np.float32)
        bad = compiled.row_absmax(weight, *weight.shape, absmax)
        return absmax.astype(np.float64), bad == 0
    high, low = weight.max(axis=1), weight.min(axis=1)  # a NaN or an inf shows in them
    finite = bool(np.isfinite(high).all() and np.isfinite(low).all())
    return np.maximum(high, -low).astype(np.float64), finite


def weight_codes(weight, scales, limit: float, out, scratch) -> tuple[np.ndarray, np.ndarray]:
    """The codes of weight (outputs x inputs) over each output's scale (float32, the weight's
    precision), as floats written into out (weight's shape), and each output's exact sum of
    codes (int64). Codes round half away from zero and are clamped to [-limit, limit] when
    limit > 0; limit 0 is for automatic scales, whose codes cannot leave [-127, 127]."""
    if using_compiled() and _fits(weight, scales, out) and weight.ndim == 2 and weight.size:
        compiled.weight_codes(weight, scales, *weight.shape, limit, out)
        return out, code_sums(out)
    return weight_codes_numpy(weight, scales, limit, out, scratch)


def weight_codes_numpy(weight, scales, limit: float, out, scratch) -> tuple[np.ndarray, np.ndarray]:
    """weight_codes in NumPy: the definition the compiled loop is checked against.

    Rounding is rint, then the ties found by their exact distance 0.5 moved away from zero
    (quantization.round_half_away's proof); a tie's quotient is computed again from the
    weight so that the distances can be made absolute in place.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        np.divide(weight, scales[:, None], out=scratch)
        np.rint(scratch, out=out)
        distance = np.subtract(scratch, out, out=scratch)  # exact; inf - inf is NaN, no tie
    np.abs(distance, out=distance)
    ties = distance == 0.5
    if ties.any():
        rows, cols = np.divmod(np.flatnonzero(ties), ties.shape[1])  # far faster than nonzero's
        at = weight[rows, cols] / scales[rows]  # the same quotients, elementwise
        out[rows, cols] = at + np.copysign(weight.dtype.type(0.5), at)
    if limit > 0:
        np.minimum(out, limit, out=out)
        np.maximum(out, -limit, out=out)
    return out, code_sums(out)


def dequantized(codes, scales, out) -> np.ndarray:
    """The real values of weight codes (outputs x inputs, floats) in out, each row times its
    float64 scale, rounded once to out's precision: (codes * scales[:, None]).astype(out.dtype)."""
    if using_compiled() and _fits(codes, out) and codes.ndim == 2 and scales.dtype == np.float64 and codes.size:
        compiled.dequantize_rows(codes, np.ascontiguousarray(scales), *codes.shape, out)
        return out
    np.copyto(out, codes * scales[:, None], casting="same_kind")
    return out


def code_sums(codes) -> np.ndarray:
    """Each row's exact sum of integer weight codes (floats in [-127, 127]): a float32
    product with ones while every partial sum stays below 2**24, which is exact and fast."""
    if codes.dtype == np.float32 and 127 * codes.shape[1] < 2**24:
        return (codes @ np.ones(codes.shape[1], codes.dtype)).astype(np.int64)
    return codes.astype(np.int64).sum(axis=1)


# --- a dense layer's step, after its product ----------------------------------------------------


def preactivate(acc, bias, z_scale, kind: str, slope: float, dtype, observe_pre: bool):
    """A dense layer's real pre-activation z = (acc + bias) * z_scale, in float64 rounded once to
    dtype, its activation a, and (min, max) of what its observer watches: z when observe_pre
    (the tables' input), else a. acc: the exact accumulators without the bias (rows x outputs)."""
    if (
        using_compiled()
        and kind in ("relu", "linear")
        and dtype == FLOAT32
        and _fits(acc)
        and bias.dtype.kind in "iuf"
        and z_scale.dtype == np.float64
        and acc.ndim == 2
    ):
        z, a, seen = np.empty_like(acc), np.empty_like(acc), np.empty(2, np.float32)
        rows, outputs = acc.shape
        bias = np.ascontiguousarray(bias, dtype=np.float64)  # exact: |bias| < 2**30
        bad = compiled.preactivate(acc, bias, np.ascontiguousarray(z_scale), rows, outputs,
                                   kind == "relu", observe_pre, z, a, seen)  # fmt: skip
        _raise_if_not_finite(bad, "the cast of the pre-activations to float32")
        return z, a, (seen[0], seen[1])
    return preactivate_numpy(acc, bias, z_scale, kind, slope, dtype, observe_pre)


def preactivate_numpy(acc, bias, z_scale, kind: str, slope: float, dtype, observe_pre: bool):
    """preactivate in NumPy: the definition the compiled loop is checked against."""
    z = np.add(acc, bias, dtype=np.float64)
    z *= z_scale
    z = z.astype(dtype)
    a = activation(kind, z, slope)
    watched = z if observe_pre else a
    return z, a, (watched.min(), watched.max())


def requantize_step(kernel, acc, value, lower: float, upper: float):
    """A layer's int8 output codes (as float32) from its accumulators, by kernel (the NumPy
    backend's LayerKernel of the step's integer layer), and the straight-through mask
    lower <= value <= upper (as value's dtype): where training's gradient passes.

    The compiled form runs only where its AVX2 form does: without AVX2, float64 rounding in
    C is slower than NumPy's own."""
    if (
        using_compiled()
        and compiled.wide()
        and kernel.activation in ("relu", "linear")
        and kernel.table is None
        and _fits(acc, value)
        and acc.shape == value.shape
        and acc.ndim == 2
    ):
        codes, inside = np.empty_like(acc), np.empty_like(value)
        rows, outputs = acc.shape
        scale = np.ascontiguousarray(np.broadcast_to(kernel.scale, outputs), dtype=np.float64)
        offset = np.ascontiguousarray(np.broadcast_to(kernel.offset, outputs), dtype=np.float64)
        compiled.requantize(acc, scale, offset, rows, outputs, kernel.activation == "relu", kernel.zero_after,
                            kernel.floor, value, lower, upper, codes, inside)  # fmt: skip
        return codes, inside
    return requantize_step_numpy(kernel, acc, value, lower, upper)


def requantize_step_numpy(kernel, acc, value, lower: float, upper: float):
    """requantize_step in NumPy: the definition the compiled loop is checked against."""
    inside = (value >= lower) & (value <= upper)
    return kernel.requantize(acc), inside.astype(value.dtype)
