"""Batch normalization of a convolution's outputs, and how it folds into the integer layer.

Per output channel o, on the layer's real pre-activation z0 (before any activation):

    z = gamma[o] * (z0 - mean[o]) / sigma[o] + beta[o],   sigma = sqrt(var + EPS)

with the batch's mean and variance while the statistics train, and the moving ones (updated
with MOMENTUM at each training step) once they are frozen and in the integer model.

The fold. z is z0 times factor = gamma / sigma plus a constant, per channel. With per-channel
weight scales, multiplying a channel's weights by factor changes its scale and, when factor
is negative, the sign of its codes, never the codes' magnitudes. So the folded integer layer
has the codes sign(factor) * codes(w), the scales scale(w) * |factor| and the bias
beta + (b - mean) * factor: its accumulator is the unfolded one times sign(factor), exactly,
and training computes it with one product, as for a layer without normalization. While the
statistics train, the fold uses the batch's, so each step's int8 outputs are those of the
integer layer of that batch's statistics; frozen, it is the very layer that ships.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOMENTUM = 0.1  # weight of each batch's statistics in the moving ones (PyTorch's default)
EPS = 1e-5  # added to the variance (PyTorch's and TensorFlow's default)
MIN_FACTOR = 1e-12  # |gamma / sigma| is kept above this, so that a folded scale stays a scale


@dataclass
class Norm:
    """A layer's batch normalization: the trained gamma and beta, the moving statistics, and
    whether the statistics are frozen (training then uses the moving ones)."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    frozen: bool = False

    @classmethod
    def identity(cls, channels: int, dtype=np.float32) -> "Norm":
        """gamma 1, beta 0, moving mean 0 and variance 1: the start of training."""
        return cls(np.ones(channels, dtype), np.zeros(channels, dtype), np.zeros(channels), np.ones(channels))

    def copy(self) -> "Norm":
        return Norm(self.gamma.copy(), self.beta.copy(), self.mean.copy(), self.var.copy(), self.frozen)


def column_sums(x):
    """x.sum(axis=0) as a product with ones: numpy's reduction down a tall, narrow array (a
    convolution's rows x channels) is about ten times slower than BLAS."""
    return np.ones(x.shape[0], x.dtype) @ x


def moments(x) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and (biased) variance, as float64, from two BLAS reductions."""
    mean = column_sums(x).astype(np.float64) / len(x)
    centred = x - mean.astype(x.dtype)
    return mean, column_sums(centred * centred).astype(np.float64) / len(x)


def move(norm: Norm, mean, var, count: int) -> None:
    """Move the moving statistics toward a batch's (its variance made unbiased, as PyTorch does)."""
    norm.mean += MOMENTUM * (mean - norm.mean)
    norm.var += MOMENTUM * (var * (count / max(count - 1, 1)) - norm.var)


def statistics(norm: Norm, z0, training: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, var) to normalize z0 (rows x channels) with: the batch's while training with the
    statistics unfrozen, which also moves the moving ones toward them; else the moving ones."""
    if not training or norm.frozen:
        return norm.mean, norm.var
    mean, var = moments(z0)
    move(norm, mean, var, len(z0))
    return mean, var


def factor_of(norm: Norm, var) -> np.ndarray:
    """gamma / sigma per channel (float64), kept away from 0 so that a folded scale is a scale."""
    factor = norm.gamma.astype(np.float64) / np.sqrt(np.asarray(var, np.float64) + EPS)
    return np.where(np.abs(factor) < MIN_FACTOR, np.copysign(MIN_FACTOR, factor), factor)


def normalize(norm: Norm, z0, training: bool):
    """z from z0 (rows x channels) in z0's precision, and what backward needs."""
    mean, var = statistics(norm, z0, training)
    inverse = 1.0 / np.sqrt(np.asarray(var, np.float64) + EPS)
    zhat = z0 * inverse.astype(z0.dtype) - (mean * inverse).astype(z0.dtype)
    z = zhat * norm.gamma.astype(z0.dtype) + norm.beta.astype(z0.dtype)
    return z, (zhat, factor_of(norm, var).astype(z0.dtype), training and not norm.frozen)


def backward(grad, cache):
    """(d z0, d gamma, d beta) from d z: through the batch's statistics when they trained."""
    zhat, factor, batch = cache
    d_gamma = column_sums(grad * zhat)
    d_beta = column_sums(grad)
    if not batch:
        return grad * factor, d_gamma, d_beta
    n = grad.shape[0]
    d_z0 = grad * grad.dtype.type(n) - d_beta
    d_z0 -= zhat * d_gamma
    d_z0 *= factor / grad.dtype.type(n)
    return d_z0, d_gamma, d_beta


def fold(norm: Norm, var, mean, bias):
    """(sign, |factor|, folded bias): the folded layer's codes are sign * codes, its scales
    |factor| * scales, its real bias beta + (bias - mean) * factor (float64)."""
    factor = factor_of(norm, var)
    sign = np.where(factor < 0, -1.0, 1.0)
    folded_bias = norm.beta.astype(np.float64) + (np.asarray(bias, np.float64) - mean) * factor
    return sign, np.abs(factor), folded_bias
