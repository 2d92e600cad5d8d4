"""The prediction head: what a network's final scores mean, written once for the float Network
and the integer QuantizedModel.

Scores become classes (the first of equal highest scores; a single output is class 1 when its
score reaches the threshold), class names, probabilities or regression values, and the figures
that judge them (accuracy, R^2, the loss). Both APIs call these functions and nothing else
decides a class.
"""

from __future__ import annotations

import numpy as np

from .functions import cost, process_output


def class_count(outputs: int) -> int:
    """The classes of a classifier with this many outputs: one (sigmoid) output tells two apart."""
    return max(outputs, 2)


def classes(scores, threshold=0) -> np.ndarray:
    """Class of each row: the index of the highest score (the first of equal ones), or, for a
    single output, 1 when the score is at least threshold (0 for a real score, where the sigmoid
    reaches 0.5; an int8 score's threshold is the output zero point)."""
    scores = np.asarray(scores)
    if scores.shape[1] == 1:
        return (scores[:, 0] >= threshold).astype(np.int64)
    return scores.argmax(axis=1)


def named(indices, names) -> np.ndarray:
    """The class names of indices when there are names (an array of them), else the indices."""
    return indices if names is None else names[indices]


def probabilities(output: str, scores) -> np.ndarray:
    """What predict_proba gives: the softmax or sigmoid of the scores (the scores themselves for a
    linear output)."""
    return process_output(output, scores)


def values(output: str, scores) -> np.ndarray:
    """What a regression network predicts: the processed outputs, one column as a 1-D array."""
    out = probabilities(output, scores)
    return out[:, 0] if out.shape[1] == 1 else out


def accuracy(scores, targets) -> float:
    """Share of rows whose predicted class is the target's (one-hot rows, or a 0/1 column)."""
    truth = targets[:, 0] if targets.shape[1] == 1 else targets.argmax(axis=1)
    return float((classes(scores) == truth).mean())


def r_squared(targets, predicted) -> float:
    """Coefficient of determination of predicted against targets (columns pooled)."""
    return float(1 - ((targets - predicted) ** 2).sum() / ((targets - targets.mean(axis=0)) ** 2).sum())


def score(task: str, output: str, scores, targets) -> float:
    """Accuracy (classification) or R^2 of the processed outputs (regression): what score() gives."""
    if task == "classification":
        return accuracy(scores, targets)
    return r_squared(targets, process_output(output, scores).reshape(targets.shape))


def figures(task: str, output: str, cost_kind: str, scores, targets) -> dict:
    """{'loss', 'cost', 'samples', 'accuracy'} for classes, {'loss', 'cost', 'samples', 'mse', 'mae'}
    for regression; 'cost' names the cost the loss is."""
    loss, _ = cost(cost_kind, output, scores, targets)
    out = {"loss": float(loss), "cost": cost_kind, "samples": len(scores)}
    if task == "classification":
        out["accuracy"] = accuracy(scores, targets)
    else:
        err = process_output(output, scores) - targets
        out["mse"], out["mae"] = float((err**2).mean()), float(np.abs(err).mean())
    return out


def natural_cost(task: str, output: str) -> str:
    """The cost an output is judged by when the training cost is unknown (a .qmt file does not
    record it): cross entropy for softmax, binary cross entropy for sigmoid classes, else mse."""
    if task != "classification":
        return "mse"
    return {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(output, "mse")
