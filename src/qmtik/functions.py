"""The differentiable functions: hidden activations, output processing and costs.

Each function's forward and its derivative sit side by side. All work on float arrays of any
precision (float32 in training, float64 in the gradient check).
"""

from __future__ import annotations

import numpy as np

HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
OUTPUTS = ("linear", "softmax", "sigmoid")
COSTS = ("mse", "cross_entropy", "binary_cross_entropy")
TASKS = ("classification", "regression")


# --- activations -------------------------------------------------------------------------------


def activation(kind: str, z, slope: float = 0.01):
    """A hidden activation (or 'linear', the identity) applied to pre-activations z."""
    if kind == "relu":
        return np.maximum(z, 0)
    if kind == "leaky_relu":
        return np.where(z >= 0, z, z * z.dtype.type(slope))
    if kind == "sigmoid":
        return sigmoid(z)
    if kind == "tanh":
        return np.tanh(z)
    if kind == "linear":
        return z
    raise ValueError(f"unknown activation {kind!r}")


def activation_derivative(kind: str, z, slope: float = 0.01):
    """d activation / d z at z (relu's derivative at 0 taken as 0)."""
    one = z.dtype.type(1)
    if kind == "relu":
        return (z > 0).astype(z.dtype)
    if kind == "leaky_relu":
        return np.where(z >= 0, one, z.dtype.type(slope))
    if kind == "sigmoid":
        s = sigmoid(z)
        return s * (one - s)
    if kind == "tanh":
        return one - np.tanh(z) ** 2
    if kind == "linear":
        return np.ones_like(z)
    raise ValueError(f"unknown activation {kind!r}")


def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    z = np.asarray(z)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def softmax(scores):
    """Row-wise softmax, shifted by the row maximum so that exp never overflows."""
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(scores):
    """Row-wise log of the softmax, computed stably."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# --- output processing -------------------------------------------------------------------------


def process_output(kind: str, scores):
    """What the network outputs from its final scores: the scores, softmax or sigmoid."""
    if kind == "linear":
        return scores
    if kind == "softmax":
        return softmax(scores)
    if kind == "sigmoid":
        return sigmoid(scores)
    raise ValueError(f"unknown output {kind!r}")


# --- costs -------------------------------------------------------------------------------------


def cost(kind: str, output: str, scores, targets):
    """The mean cost over the batch and its gradient with respect to the final scores.

    mse: mean over samples and outputs of (y - t)**2, with y the processed output.
    cross_entropy: mean over samples of -sum_k t_k log softmax_k (softmax output only).
    binary_cross_entropy: mean over samples and outputs of the logistic loss (sigmoid output only).
    """
    n = scores.shape[0]
    if kind == "cross_entropy":
        loss = -(targets * log_softmax(scores)).sum() / n
        return loss, (softmax(scores) - targets) / scores.dtype.type(n)
    if kind == "binary_cross_entropy":
        loss = (np.maximum(scores, 0) - scores * targets + np.log1p(np.exp(-np.abs(scores)))).mean()
        return loss, (sigmoid(scores) - targets) / scores.dtype.type(scores.size)
    if kind == "mse":
        y = process_output(output, scores)
        diff = y - targets
        grad_y = 2 * diff / y.dtype.type(diff.size)
        return (diff**2).mean(), _output_backward(output, scores, y, grad_y)
    raise ValueError(f"unknown cost {kind!r}")


def _output_backward(output: str, scores, y, grad_y):
    """Carry d cost / d y back through the output processing to d cost / d scores."""
    if output == "linear":
        return grad_y
    if output == "sigmoid":
        return grad_y * y * (1 - y)
    # softmax: J^T g with J = diag(y) - y y^T, row by row
    return y * (grad_y - (grad_y * y).sum(axis=1, keepdims=True))


# --- which combinations make sense -------------------------------------------------------------


def combination_problem(task: str, output: str, cost_kind: str, outputs: int) -> str | None:
    """Why this task / output / cost / width combination cannot work, or None when it can."""
    if cost_kind == "cross_entropy" and output != "softmax":
        return "cross_entropy is the cost of softmax outputs; use output = 'softmax' or cost = 'mse'"
    if cost_kind == "binary_cross_entropy" and output != "sigmoid":
        return "binary_cross_entropy is the cost of sigmoid outputs; use output = 'sigmoid' or cost = 'mse'"
    if output == "softmax" and outputs < 2:
        return "softmax over a single output is always 1; use output = 'sigmoid' for a yes/no class"
    if task == "regression" and output == "softmax":
        return "softmax makes outputs that sum to 1, which suits classes, not regression; use 'linear' or 'sigmoid'"
    if task == "classification" and outputs == 1 and output != "sigmoid":
        return "a single-output classifier needs output = 'sigmoid' (class 1 when the probability is at least 0.5)"
    return None
