"""The loops of the layers over windows, each in one pass when qmtik's compiled module built.

Max pooling and its backward, im2col and its adjoint col2im, and a convolution's fake-quantized
step after its product (conv_step.py): the statistics of its exact accumulators, their codes
and straight-through mask, and the normalization's backward. As in fused.py, the NumPy forms
here are the definitions: the compiled forms (src/qmtik/_fused.c) compute the same float32 and
float64 operations in the same order, and tests/test_fused_windows.py checks them bit for bit.
The compiled forms take float32 arrays; float64 ones (the gradient checks) take the NumPy forms.

A window op's geometry goes to C as (n, h, w, c, kh, kw, sh, sw, top, left, out_h, out_w).

QMTIK_THREADS=k in the environment (1 to 256) runs the compiled window loops in up to k threads
(1 by default: on a machine other work keeps busy, threads wait for each other longer than they
save).
Each sum down a column stays in one thread, so the results are the same for any k.
"""

from __future__ import annotations

import numpy as np

from . import fused
from .errors import ConfigError
from .parsing import env_count
from .spatial import Geometry, pad, unpad
from .spatial import col2im as col2im_numpy
from .spatial import im2col as im2col_numpy

FLOAT32 = np.dtype(np.float32)
WHERE = np.int16  # max pooling's tap numbers: kernels of fewer than 2**15 taps


THREADS = "QMTIK_THREADS"
MOST_THREADS = 256


def set_threads(strict: bool = False) -> int:
    """Set and return the compiled loops' thread count, QMTIK_THREADS (a whole number from 1 to
    256; 1 when unset). A bad value is one ConfigError line when strict (training starts with a
    strict call); at import it means 1, since `import qmtik` must not fail on the environment."""
    try:
        count = env_count(THREADS, MOST_THREADS) or 1
    except ConfigError:
        if strict:
            raise
        count = 1
    if fused.compiled is not None:
        fused.compiled.threads(count)
    return count


set_threads()


def _compiled(*arrays) -> bool:
    """Whether the compiled loops run on these arrays: float32 (C-contiguous ones are made)."""
    return fused.using_compiled() and all(a.dtype == FLOAT32 for a in arrays)


def geo_args(geo: Geometry, n: int, channels: int) -> tuple:
    """The geometry as the compiled loops take it."""
    top, _, left, _ = geo.pads
    return (n, *geo.in_hw, channels, *geo.kernel, *geo.stride, top, left, *geo.out_hw)


def column_sums64(x) -> np.ndarray:
    """Each column's float64 sum of a (rows, columns) array, added row after row from 0.0, as
    the compiled loops add them (NumPy sums a single column pairwise: that one is accumulated)."""
    if x.shape[1] == 1 or not len(x):
        return np.add.accumulate(x.astype(np.float64), axis=0)[-1] + 0.0 if len(x) else np.zeros(x.shape[1])
    return x.sum(axis=0, dtype=np.float64) + 0.0  # + 0.0: a sum from 0.0 is never -0.0


# --- max pooling --------------------------------------------------------------------------------


def max_pool(x, geo: Geometry):
    """(y, where): each window's first (row-major) tap of its largest value, a NaN counting as
    the largest (np.argmax's rule), and that tap's number; the padding is -inf."""
    taps = geo.kernel[0] * geo.kernel[1]
    if _compiled(x) and taps < 2**15:
        x = np.ascontiguousarray(x)
        y = np.empty((len(x), *geo.out_hw, x.shape[3]), FLOAT32)
        where = np.empty(y.shape, WHERE)
        fused.compiled.max_pool(x, geo_args(geo, len(x), x.shape[3]), y, where)
        return y, where
    return max_pool_numpy(x, geo)


def max_pool_numpy(x, geo: Geometry):
    """max_pool in NumPy: the definition the compiled loop is checked against."""
    xp = pad(x, geo, -np.inf)
    stacked = np.stack([xp[:, rows, columns] for _, _, rows, columns in geo.offsets()], axis=-1)
    where = np.argmax(stacked, axis=-1)
    y = np.take_along_axis(stacked, where[..., None], axis=-1)[..., 0]
    return y, where.astype(WHERE if geo.kernel[0] * geo.kernel[1] < 2**15 else np.int64)


def max_pool_backward(grad, where, geo: Geometry, shape):
    """d x of max_pool: each window's gradient added to the tap it took (0.0 to the others),
    tap after tap, into zeros."""
    if _compiled(grad) and where.dtype == WHERE:
        d_x = np.empty(shape, FLOAT32)
        grad, where = np.ascontiguousarray(grad), np.ascontiguousarray(where)
        fused.compiled.gather(grad, where, geo_args(geo, shape[0], shape[3]), d_x)
        return d_x
    return max_pool_backward_numpy(grad, where, geo, shape)


def max_pool_backward_numpy(grad, where, geo: Geometry, shape):
    """max_pool_backward in NumPy: the definition the compiled loop is checked against."""
    d_xp = np.zeros((shape[0], *geo.padded_hw, shape[3]), grad.dtype)
    for tap, (_, _, rows, columns) in enumerate(geo.offsets()):
        d_xp[:, rows, columns] += np.where(where == tap, grad, grad.dtype.type(0))
    return unpad(d_xp, geo)


# --- im2col and col2im ------------------------------------------------------------------------------


def _reshape_only(geo: Geometry) -> bool:
    return geo.kernel == (1, 1) and geo.stride == (1, 1) and not any(geo.pads)


def im2col(x, geo: Geometry, subtract: float = 0.0, pad_value: float = 0.0):
    """spatial.im2col of x - subtract (in x's precision), padded with pad_value."""
    if _compiled(x) and not _reshape_only(geo) and geo.in_hw == x.shape[1:3]:
        x = np.ascontiguousarray(x)
        (oh, ow), (kh, kw), c = geo.out_hw, geo.kernel, x.shape[3]
        rows = np.empty((len(x) * oh * ow, kh * kw * c), FLOAT32)
        fused.compiled.im2col(x, geo_args(geo, len(x), c), subtract, pad_value, rows)
        return rows
    return im2col_numpy_form(x, geo, subtract, pad_value)


def im2col_numpy_form(x, geo: Geometry, subtract: float = 0.0, pad_value: float = 0.0):
    """im2col in NumPy: the definition the compiled loop is checked against."""
    if subtract:
        x = np.subtract(x, subtract, dtype=x.dtype)
    return im2col_numpy(x, geo, pad_value)


def col2im(cols, geo: Geometry, channels: int):
    """spatial.col2im (the definition the compiled loop is checked against), gathered in one pass."""
    if _compiled(cols) and not _reshape_only(geo):
        n = cols.shape[0] // (geo.out_hw[0] * geo.out_hw[1])
        d_x = np.empty((n, *geo.in_hw, channels), FLOAT32)
        fused.compiled.gather(np.ascontiguousarray(cols), None, geo_args(geo, n, channels), d_x)
        return d_x
    return col2im_numpy(cols, geo, channels)


# --- a convolution's fake-quantized step -------------------------------------------------------------


def acc_stats(acc_c, shift):
    """Each column's (sum, sum of h*h, of h*l, of l*l, least, largest) of the exact
    accumulators acc = acc_c + shift (float32 integers), acc = 4096 h + l with 0 <= l < 4096:
    every term is below 2**24, so the float64 sums are exact whatever their order."""
    columns = acc_c.shape[1]
    if _compiled(acc_c, shift) and acc_c.flags.c_contiguous:
        sums = np.zeros((4, columns))
        low, high = np.full(columns, np.inf, FLOAT32), np.full(columns, -np.inf, FLOAT32)
        fused.compiled.acc_stats(acc_c, shift, *acc_c.shape, *sums, low, high)
        return (*sums, low, high)
    return acc_stats_numpy(acc_c, shift)


def acc_stats_numpy(acc_c, shift):
    """acc_stats in NumPy: the definition the compiled loop is checked against."""
    acc = acc_c + shift
    whole = acc.astype(np.int64)
    high_part, low_part = whole >> 12, whole & 4095
    sums = [p.sum(axis=0).astype(np.float64) for p in (whole, high_part * high_part, high_part * low_part,
                                                        low_part * low_part)]  # fmt: skip
    return (*sums, acc.min(axis=0), acc.max(axis=0))


def exact_moments(stats, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and (biased) variance of the accumulators acc_stats summed, each
    correctly rounded to float64 from the exact integers (Python's int division rounds once)."""
    s1, hh, hl, ll = stats[:4]
    mean, var = np.empty(len(s1)), np.empty(len(s1))
    for c in range(len(s1)):
        total = int(s1[c])
        squares = (int(hh[c]) << 24) + (int(hl[c]) << 13) + int(ll[c])
        mean[c] = total / count
        var[c] = (count * squares - total * total) / (count * count)
    return mean, var


def conv_step(acc_c, shift, norm, sign, kernel, bias, z_scale, relu: bool, lower: float, upper: float):
    """(codes, zhat, mask) of a convolution's step from its accumulators acc = acc_c + shift:
    zhat = acc * na + nb when norm = (na, nb) (else None); the folded accumulator s = acc * sign,
    its int8 codes by kernel (the step's LayerKernel, relu or linear, as fused.requantize_step);
    z = float32((s + bias) * z_scale) in float64; mask (uint8): 1 where the activation's
    derivative is 1 (z > 0 for relu) and lower <= activation(z) <= upper."""
    rows, columns = acc_c.shape
    if _compiled(acc_c, shift, sign) and acc_c.flags.c_contiguous and kernel.table is None:
        codes, mask = np.empty_like(acc_c), np.empty(acc_c.shape, np.uint8)
        zhat = None if norm is None else np.empty_like(acc_c)
        na, nb = (None, None) if norm is None else norm
        scale = np.ascontiguousarray(np.broadcast_to(kernel.scale, columns), dtype=np.float64)
        offset = np.ascontiguousarray(np.broadcast_to(kernel.offset, columns), dtype=np.float64)
        bias, z_scale = (np.ascontiguousarray(a, dtype=np.float64) for a in (bias, z_scale))
        fused.compiled.conv_step(acc_c, shift, rows, columns, na, nb, sign, scale, offset, relu, kernel.zero_after,
                                 kernel.floor, bias, z_scale, lower, upper, codes, zhat, mask)  # fmt: skip
        return codes, zhat, mask
    return conv_step_numpy(acc_c, shift, norm, sign, kernel, bias, z_scale, relu, lower, upper)


def conv_step_numpy(acc_c, shift, norm, sign, kernel, bias, z_scale, relu: bool, lower: float, upper: float):
    """conv_step in NumPy: the definition the compiled loop is checked against."""
    acc = acc_c + shift
    zhat = None if norm is None else acc * norm[0] + norm[1]
    folded = acc * sign
    codes = kernel.requantize(folded, np.empty_like(folded))
    z = np.add(folded, bias, dtype=np.float64)
    z *= z_scale
    z = z.astype(FLOAT32)
    act = np.maximum(z, 0) if relu else z
    mask = (act >= lower) & (act <= upper)
    if relu:
        mask &= z > 0
    return codes, zhat, mask.view(np.uint8)


def masked_sums(g, mask, zhat):
    """g *= mask in place, and each column's float64 sums (column_sums64) of g and of g * zhat
    (the latter zeros when zhat is None)."""
    if _compiled(g) and g.flags.c_contiguous and (zhat is None or zhat.dtype == FLOAT32):
        sum_g, sum_gz = np.zeros(g.shape[1]), np.zeros(g.shape[1])
        fused.compiled.masked_sums(g, mask, zhat, *g.shape, sum_g, sum_gz)
        return sum_g, sum_gz
    return masked_sums_numpy(g, mask, zhat)


def masked_sums_numpy(g, mask, zhat):
    """masked_sums in NumPy: the definition the compiled loop is checked against."""
    np.multiply(g, mask, out=g)
    return column_sums64(g), np.zeros(g.shape[1]) if zhat is None else column_sums64(g * zhat)


def norm_backward(g, zhat, batch: bool, d_beta, d_gamma, k):
    """The normalization's d z0 in place of g: ((g * n - d_beta) - zhat * d_gamma) * k with the
    batch's statistics (k = factor / n), else g * k (k = factor); and each column's float64 sum."""
    n = g.dtype.type(len(g))
    if _compiled(g, zhat, d_beta, d_gamma, k) and g.flags.c_contiguous:
        sum_d = np.zeros(g.shape[1])
        fused.compiled.norm_backward(g, zhat, *g.shape, batch, n, d_beta, d_gamma, k, sum_d)
        return sum_d
    return norm_backward_numpy(g, zhat, batch, d_beta, d_gamma, k)


def norm_backward_numpy(g, zhat, batch: bool, d_beta, d_gamma, k):
    """norm_backward in NumPy: the definition the compiled loop is checked against."""
    if batch:
        g *= g.dtype.type(len(g))
        g -= d_beta
        g -= zhat * d_gamma
    g *= k
    return column_sums64(g)
