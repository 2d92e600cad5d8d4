"""Float forward and backward of the spatial layers, for training: each pass beside its adjoint.

Every forward returns (output, cache) and every backward takes (d output, cache) and returns
the input gradient (and, for layers with parameters, (d input, d weights, d bias)). Arrays are
NHWC (see spatial.py); any float dtype works and the result keeps the input's (training uses
float32, the gradient checks float64). No Python loop runs over samples or pixels: a
convolution is one BLAS product on im2col's matrix, depthwise convolution and average pooling
are one vectorised operation per kernel tap (kh * kw of them), which reads the input in place
instead of copying every window, and max pooling is one pass each way (fused_windows.py).

Pooling takes "valid" padding (the default) or, for max pooling only, padding that leaves a
real element in every window ("same" does); average pooling refuses any padding ("same"
only where it pads nothing), so that its divisor is always kh * kw, the one the integer model
divides by.
"""

from __future__ import annotations

import numpy as np

from . import fused_windows
from .errors import ShapeError
from .spatial import Geometry, geometry, geometry_1d, im2col, pad, unpad

TAP_PRODUCTS_FROM = 8  # input channels from which conv2d_backward computes d x tap by tap

# --- convolution ------------------------------------------------------------------------------


def check_weights(weights, in_channels: int, depthwise: bool = False) -> None:
    """Weights (out_c, kh, kw, in_c) for a convolution, (c, kh, kw) for a depthwise one."""
    if depthwise:
        if weights.ndim != 3 or weights.shape[0] != in_channels:
            raise ShapeError(f"depthwise weights must be ({in_channels}, kh, kw), got {weights.shape}")
    elif weights.ndim != 4 or weights.shape[3] != in_channels:
        raise ShapeError(f"conv2d weights must be (out_c, kh, kw, {in_channels}), got {weights.shape}")


def column_sums(g):
    """g.sum(axis=0) as a product with ones: numpy's reduction down a tall, narrow array is
    about ten times slower than BLAS (2 ms against 0.2 ms for 100,352 x 16 in float32)."""
    return np.ones(g.shape[0], g.dtype) @ g


def conv2d_forward(x, weights, bias, stride=1, padding="valid"):
    """y[n, oy, ox, o] = sum_{i,j,c} w[o, i, j, c] * x_padded[n, oy*sh + i, ox*sw + j, c] + b[o].

    x is (n, h, w, in_c), weights (out_c, kh, kw, in_c), bias (out_c,) or None. The cache holds
    im2col's matrix, which backward needs for the weight gradient.
    """
    geo = geometry(x.shape[1:3], weights.shape[1:3], stride, padding)
    check_weights(weights, x.shape[3])
    cols = im2col(x, geo, 0)
    w_mat = weights.reshape(weights.shape[0], -1)
    y = cols @ w_mat.T
    if bias is not None:
        y += bias
    return y.reshape(x.shape[0], *geo.out_hw, weights.shape[0]), (cols, weights, geo, bias is not None)


def conv2d_backward(grad, cache):
    """(d x, d weights, d bias) of conv2d_forward from d y; d bias is None without a bias.

    d x is col2im(d y @ weights) for narrow inputs; from TAP_PRODUCTS_FROM input channels on,
    one product per kernel tap added in place is faster (it never writes the whole d cols:
    4.8 ms against 8.9 ms for a batch of 128 at 14x14x16 -> 3x3x32, one thread) and equal.
    """
    cols, weights, geo, has_bias = cache
    out_c, in_c = weights.shape[0], weights.shape[3]
    g = grad.reshape(-1, out_c)
    d_weights = (g.T @ cols).reshape(weights.shape)
    if in_c < TAP_PRODUCTS_FROM or geo.kernel == (1, 1):
        d_x = fused_windows.col2im(g @ weights.reshape(out_c, -1), geo, in_c)
    else:
        d_xp = np.zeros((grad.shape[0], *geo.padded_hw, in_c), g.dtype)
        for i, j, rows, columns in geo.offsets():
            d_xp[:, rows, columns] += grad @ weights[:, i, j]
        d_x = unpad(d_xp, geo)
    return d_x, d_weights, column_sums(g) if has_bias else None


def depthwise_forward(x, weights, bias, stride=1, padding="valid"):
    """Depthwise convolution, channel multiplier 1: each channel c with its own (kh, kw) kernel.

    y[n, oy, ox, c] = sum_{i,j} w[c, i, j] * x_padded[n, oy*sh + i, ox*sw + j, c] + b[c],
    weights (c, kh, kw). One multiply-add over the whole batch per kernel tap.
    """
    geo = geometry(x.shape[1:3], weights.shape[1:3], stride, padding)
    check_weights(weights, x.shape[3], depthwise=True)
    xp = pad(x, geo, 0)
    y = np.zeros((x.shape[0], *geo.out_hw, x.shape[3]), np.result_type(x, weights))
    for i, j, rows, columns in geo.offsets():
        y += xp[:, rows, columns] * weights[:, i, j]
    if bias is not None:
        y += bias
    return y, (xp, weights, geo, bias is not None)


def depthwise_backward(grad, cache):
    """(d x, d weights, d bias) of depthwise_forward; one product per kernel tap each way."""
    xp, weights, geo, has_bias = cache
    d_xp = np.zeros(xp.shape, grad.dtype)
    d_weights = np.zeros(weights.shape, grad.dtype)
    flat = grad.reshape(-1, grad.shape[3])
    for i, j, rows, columns in geo.offsets():
        d_xp[:, rows, columns] += grad * weights[:, i, j]
        d_weights[:, i, j] = np.einsum("pc,pc->c", flat, xp[:, rows, columns].reshape(-1, xp.shape[3]))
    return unpad(d_xp, geo), d_weights, column_sums(flat) if has_bias else None


def as_2d(x):
    """A 1-D batch (n, length, c) as the 2-D batch (n, 1, length, c): a view."""
    if x.ndim != 3:
        raise ShapeError(f"expected a 1-D batch of shape (n, length, c), got {x.shape}")
    return x[:, None]


def padding_2d(padding):
    """1-D padding ("valid", "same" or [left, right]) as 2-D padding, checked by geometry_1d."""
    return padding if isinstance(padding, str) else [0, 0, *padding]


def conv1d_forward(x, weights, bias, stride=1, padding="valid"):
    """conv2d over one axis: x (n, length, in_c), weights (out_c, k, in_c), padding [left, right]."""
    if weights.ndim != 3:
        raise ShapeError(f"conv1d weights must be (out_c, k, in_c), got {weights.shape}")
    x2 = as_2d(x)
    geometry_1d(x.shape[1], weights.shape[1], stride, padding)  # errors in 1-D terms
    y, cache = conv2d_forward(x2, weights[:, None], bias, (1, stride), padding_2d(padding))
    return y[:, 0], cache


def conv1d_backward(grad, cache):
    """(d x, d weights, d bias) of conv1d_forward, in its 1-D shapes."""
    d_x, d_weights, d_bias = conv2d_backward(grad[:, None], cache)
    return d_x[:, 0], d_weights[:, 0], d_bias


# --- pooling ----------------------------------------------------------------------------------


def pool_geometry(x, size, stride, padding, average: bool) -> Geometry:
    """The pooling window's Geometry (stride defaults to the size), with the padding rules above."""
    geo = geometry(x.shape[1:3], size, size if stride is None else stride, padding)
    if average and any(geo.pads):
        raise ShapeError(f"average pooling takes no padding, got {padding!r}")
    if any(p >= k for p, k in zip(geo.pads, (geo.kernel[0],) * 2 + (geo.kernel[1],) * 2)):
        raise ShapeError(f"pooling padding {geo.pads} leaves windows of {geo.kernel} without an input element")
    return geo


def max_pool_forward(x, size, stride=None, padding="valid"):
    """The largest value of each window; backward sends the gradient to its first (row-major)
    position, as PyTorch and TensorFlow do, so equal values do not share it. One pass
    (fused_windows.max_pool: a NaN counts as the largest, as np.argmax has it)."""
    geo = pool_geometry(x, size, stride, padding, average=False)
    y, where = fused_windows.max_pool(x, geo)
    return y, (where, x.shape, geo)


def max_pool_backward(grad, cache):
    """d x of max_pool_forward: each output's gradient added to the input it took its value from."""
    where, shape, geo = cache
    return fused_windows.max_pool_backward(grad, where, geo, shape)


def avg_pool_forward(x, size, stride=None, padding="valid"):
    """The mean of each window, over kh * kw elements (valid padding only)."""
    geo = pool_geometry(x, size, stride, padding, average=True)
    y = np.zeros((x.shape[0], *geo.out_hw, x.shape[3]), x.dtype)
    for _, _, rows, columns in geo.offsets():
        y += x[:, rows, columns]
    y *= 1.0 / (geo.kernel[0] * geo.kernel[1])
    return y, (x.shape, geo)


def avg_pool_backward(grad, cache):
    """d x of avg_pool_forward: each output's gradient shared equally by its window."""
    shape, geo = cache
    d_x = np.zeros(shape, grad.dtype)
    share = grad * (1.0 / (geo.kernel[0] * geo.kernel[1]))
    for _, _, rows, columns in geo.offsets():
        d_x[:, rows, columns] += share
    return d_x


def max_pool1d_forward(x, size, stride=None, padding="valid"):
    """max_pool_forward over (n, length, c), windows of size along length."""
    y, cache = max_pool_forward(as_2d(x), (1, size), (1, size if stride is None else stride), padding_2d(padding))
    return y[:, 0], cache


def max_pool1d_backward(grad, cache):
    return max_pool_backward(grad[:, None], cache)[:, 0]


def avg_pool1d_forward(x, size, stride=None):
    """avg_pool_forward over (n, length, c), windows of size along length (valid padding)."""
    y, cache = avg_pool_forward(as_2d(x), (1, size), (1, size if stride is None else stride))
    return y[:, 0], cache


def avg_pool1d_backward(grad, cache):
    return avg_pool_backward(grad[:, None], cache)[:, 0]


def global_avg_pool_forward(x):
    """The mean over every spatial position: (n, h, w, c) -> (n, c); 1-D batches (n, length, c) too."""
    axes = tuple(range(1, x.ndim - 1))
    if not axes:
        raise ShapeError(f"global average pooling needs a spatial batch, got {x.shape}")
    return x.mean(axis=axes, dtype=x.dtype), x.shape


def global_avg_pool_backward(grad, shape):
    """d x of global_avg_pool_forward: each position gets 1 / (h * w) of its channel's gradient."""
    count = int(np.prod(shape[1:-1]))
    spatial = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
    return np.broadcast_to(grad.reshape(spatial) * (1.0 / count), shape).astype(grad.dtype)


def flatten_forward(x):
    """(n, h, w, c) -> (n, h * w * c) in row-major NHWC order, the order TFLite flattens in."""
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(grad, shape):
    return grad.reshape(shape)
