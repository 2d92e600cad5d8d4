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


def statistics(norm: Norm, z0, training: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, var) to normalize z0 (rows x channels) with: the batch's while training with the
    statistics unfrozen, which also moves the moving ones toward them; else the moving ones."""
    if not training or norm.frozen:
        return norm.mean, norm.var
    mean = z0.mean(axis=0, dtype=np.float64)
    var = z0.var(axis=0, dtype=np.float64)
    unbiased = var * (len(z0) / max(len(z0) - 1, 1))
    norm.mean += MOMENTUM * (mean - norm.mean)
    norm.var += MOMENTUM * (unbiased - norm.var)
    return mean, var


def factor_of(norm: Norm, var) -> np.ndarray:
    """gamma / sigma per channel (float64), kept away from 0 so that a folded scale is a scale."""
    factor = norm.gamma.astype(np.float64) / np.sqrt(np.asarray(var, np.float64) + EPS)
    return np.where(np.abs(factor) < MIN_FACTOR, np.copysign(MIN_FACTOR, factor), factor)


def normalize(norm: Norm, z0, training: bool):
    """z from z0 (rows x channels) in z0's precision, and what backward needs."""
    mean, var = statistics(norm, z0, training)
    factor = factor_of(norm, var)
    zhat = ((z0 - mean) / np.sqrt(np.asarray(var) + EPS)).astype(z0.dtype)
    z = (factor * (z0 - mean) + norm.beta).astype(z0.dtype)
    return z, (zhat, factor.astype(z0.dtype), training and not norm.frozen)


def backward(grad, cache):
    """(d z0, d gamma, d beta) from d z: through the batch's statistics when they trained."""
    zhat, factor, batch = cache
    d_gamma = (grad * zhat).sum(axis=0)
    d_beta = grad.sum(axis=0)
    if not batch:
        return grad * factor, d_gamma, d_beta
    n = grad.shape[0]
    d_z0 = (factor / n) * (n * grad - d_beta - zhat * d_gamma)
    return d_z0.astype(grad.dtype), d_gamma, d_beta


def fold(norm: Norm, var, mean, bias):
    """(sign, |factor|, folded bias): the folded layer's codes are sign * codes, its scales
    |factor| * scales, its real bias beta + (bias - mean) * factor (float64)."""
    factor = factor_of(norm, var)
    sign = np.where(factor < 0, -1.0, 1.0)
    folded_bias = norm.beta.astype(np.float64) + (np.asarray(bias, np.float64) - mean) * factor
    return sign, np.abs(factor), folded_bias
