"""QuantizedModel: the integer-only network that ships to devices.

int8 codes in, int8 scores out, int32 accumulators between: nothing else. It computes exactly
what docs/quantization.md says, vectorised over the batch, with the fastest representation
that is provably exact (see `LayerKernel`); tests compare it with the int64 reference in
quantization.py on extreme values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import quantization as q
from .data import check_inputs, encode_targets
from .errors import DataError
from .functions import TASKS, cost, predicted_classes, process_output

CHUNK = 1024          # samples per pass through the layers: keeps temporaries in cache


@dataclass
class LayerKernel:
    """One layer prepared for fast exact inference.

    acc = codes @ weight_t is exact in float32 while fan_in * 128 * 127 < 2**24, else in
    float64. y = acc * scale + bias_scaled, with scale = multiplier * 2**-shift, is the exact
    real value (acc + bias) * multiplier / 2**shift, since its numerator stays below 2**52;
    floor(y + 0.5) is then exact too (docs/quantization.md), and negative ties are moved one
    down, which makes the rounding half away from zero.
    """
    weight_t: np.ndarray
    scale: np.ndarray
    bias_scaled: np.ndarray
    neg_scale: np.ndarray | None
    neg_bias_scaled: np.ndarray | None
    layer: q.IntegerLayer

    @classmethod
    def prepare(cls, layer: q.IntegerLayer) -> "LayerKernel":
        fan_in = layer.weight.shape[1]
        dtype = np.float32 if q.accumulator_bound(fan_in) < 2**24 else np.float64
        weight_t = np.ascontiguousarray(layer.weight.T, dtype=dtype)

        def scaled(multiplier, shift):
            s = multiplier.astype(np.float64) * np.exp2(-shift.astype(np.float64))
            return s, layer.bias.astype(np.float64) * s

        scale, bias_scaled = scaled(layer.multiplier, layer.shift)
        neg_scale = neg_bias = None
        if layer.activation == "leaky_relu":
            neg_scale, neg_bias = scaled(layer.neg_multiplier, layer.neg_shift)
        return cls(weight_t, scale, bias_scaled, neg_scale, neg_bias, layer)

    def __call__(self, codes):
        """int8 codes (as floats) in, the layer's int8 output codes (as float32) out."""
        acc = codes @ self.weight_t
        layer = self.layer
        y = acc * self.scale
        y += self.bias_scaled
        if layer.activation == "relu":
            # negative values clamp to the zero point, so ties below 0 need no care
            y += 0.5
            np.floor(y, out=y)
            y += layer.out_zero
            return np.clip(y, layer.out_zero, q.QMAX).astype(np.float32)
        if layer.activation == "leaky_relu":
            negative = y < 0
            y_neg = acc * self.neg_scale
            y_neg += self.neg_bias_scaled
            y = np.where(negative, y_neg, y)
        r = _round_half_away_exact(y)
        if layer.activation in q.TABLE_ACTIVATIONS:
            index = np.clip(r, q.QMIN, q.QMAX).astype(np.intp) - q.QMIN
            return layer.table.astype(np.float32)[index]
        r += layer.out_zero
        return np.clip(r, q.QMIN, q.QMAX).astype(np.float32)


def integer_scores(kernels, codes) -> np.ndarray:
    """int8 scores of int8 input codes through prepared layers, a cache-sized chunk at a time."""
    out = np.empty((len(codes), kernels[-1].layer.weight.shape[0]), dtype=np.int8)
    for start in range(0, len(codes), CHUNK):
        x = codes[start:start + CHUNK].astype(kernels[0].weight_t.dtype)
        for kernel in kernels:
            x = kernel(x)
        out[start:start + CHUNK] = x
    return out


def _round_half_away_exact(y):
    """Round half away from zero of y = p / 2**shift with |p| < 2**52 (exact, in place)."""
    r = y + 0.5
    np.floor(r, out=r)
    tie_below = (r - y == 0.5) & (y < 0)
    r -= tie_below
    return r


@dataclass
class QuantizedModel:
    """An integer-only network: how raw inputs become int8, its integer layers, its outputs.

    predict gives classes (or their names) or regression values; predict_proba the softmax
    or sigmoid of the int8 scores; scores the int8 scores themselves.
    """
    task: str
    output: str
    input_range: tuple
    layers: list
    class_names: tuple | None = None
    _kernels: list = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")
        self.input_range = (float(self.input_range[0]), float(self.input_range[1]))
        if self.class_names is not None:
            self.class_names = tuple(str(n) for n in self.class_names)

    # --- shape ---

    @property
    def inputs(self) -> int:
        return self.layers[0].weight.shape[1]

    @property
    def outputs(self) -> int:
        return self.layers[-1].weight.shape[0]

    @property
    def widths(self) -> tuple:
        return (self.inputs, *(layer.weight.shape[0] for layer in self.layers))

    # --- integer inference ---

    def quantize_inputs(self, x) -> np.ndarray:
        """Raw inputs (floats or uint8 pixels) to the int8 codes the model computes with."""
        return q.quantize_inputs(check_inputs(x, self.inputs), self.input_range)

    def scores(self, codes) -> np.ndarray:
        """int8 scores (samples x outputs) of int8 input codes, computed exactly."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.inputs:
            raise DataError(f"input codes: expected shape (samples, {self.inputs}), got {codes.shape}")
        if self._kernels is None:
            self._kernels = [LayerKernel.prepare(layer) for layer in self.layers]
        return integer_scores(self._kernels, codes)

    def decision_function(self, x) -> np.ndarray:
        """The real values of the int8 scores: out_scale * (score - out_zero)."""
        last = self.layers[-1]
        return (last.out_scale * (self.scores(self.quantize_inputs(x)).astype(np.float64)
                                  - last.out_zero)).astype(np.float32)

    def predict_proba(self, x) -> np.ndarray:
        """Softmax or sigmoid of the real scores (the scores for a linear output)."""
        return process_output(self.output, self.decision_function(x))

    def predict(self, x) -> np.ndarray:
        """Class indices (names, when the model has them) or regression values."""
        if self.task == "classification":
            classes = self.predict_index(x)
            return np.asarray(self.class_names)[classes] if self.class_names else classes
        values = self.predict_proba(x)
        return values[:, 0] if values.shape[1] == 1 else values

    def predict_index(self, x) -> np.ndarray:
        """Class indices: the highest int8 score, the first on ties (classification only)."""
        last = self.layers[-1]
        scores = self.scores(self.quantize_inputs(x)).astype(np.int64) - last.out_zero
        return predicted_classes(scores)

    def evaluate(self, x, y) -> dict:
        """{'loss', 'accuracy'} (classification) or {'loss', 'mse', 'mae'} (regression)."""
        scores = self.decision_function(x)
        targets = encode_targets(y, self.task, self.outputs, len(scores))
        loss, _ = cost(self.cost_for_loss, self.output, scores, targets)
        out = {"loss": float(loss), "samples": len(scores), "int8": True}
        if self.task == "classification":
            truth = targets[:, 0] if self.outputs == 1 else targets.argmax(axis=1)
            out["accuracy"] = float((predicted_classes(scores) == truth).mean())
        else:
            err = process_output(self.output, scores) - targets
            out["mse"], out["mae"] = float((err**2).mean()), float(np.abs(err).mean())
        return out

    def score(self, x, y) -> float:
        """Accuracy (classification) or R^2 (regression) on the integer arithmetic."""
        if self.task == "classification":
            return self.evaluate(x, y)["accuracy"]
        targets = encode_targets(y, self.task, self.outputs, len(np.asarray(x)))
        pred = self.predict(x).reshape(targets.shape)
        return float(1 - ((targets - pred) ** 2).sum() / ((targets - targets.mean(axis=0)) ** 2).sum())

    @property
    def cost_for_loss(self) -> str:
        """The cost reported as loss: the natural one of the output processing."""
        return {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(self.output, "mse") \
            if self.task == "classification" else "mse"
