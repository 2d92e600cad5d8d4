"""The whole network's passes in training: forward to the scores, backward to every layer's
gradients, and the integer layers (and their scores) the trained layers stand for.

Each layer's own passes are in layers.py (dense, and the dense step every convolution runs on
its windows) and window_layers.py (which dispatches on a layer's kind).
"""

from __future__ import annotations

import numpy as np

from . import quantization as q
from .backends.numpy import integer_scores, prepare
from .layers import Layer, QuantSpec
from .window_layers import float_forward, integer_layer_of, layer_gradients, quantized_forward

PREDICT_CHUNK = 4096  # samples per forward pass when predicting, to bound memory


def forward(layers: list[Layer], q_inputs, spec: QuantSpec, quantized: bool, training: bool):
    """Final scores (dequantized when quantized) and per-layer caches for backward.

    q_inputs are the int8 input codes (samples x features); in float mode the network sees
    their real values.
    """
    dtype = np.float32
    caches = []
    if not quantized:
        a = (q.INPUT_SCALE * (np.asarray(q_inputs, dtype) - q.INPUT_ZERO)).astype(dtype)
        for layer in layers:
            a, cache = float_forward(layer, a, spec, training)
            caches.append(cache)
        return a, caches
    codes, scale, zero = q_inputs, q.INPUT_SCALE, q.INPUT_ZERO
    for layer in layers:
        codes, (scale, zero), cache = quantized_forward(layer, codes, scale, zero, spec, training)
        caches.append(cache)
    return (scale * (codes.astype(np.float64) - zero)).astype(dtype), caches


def backward(layers: list[Layer], caches, grad_scores, spec: QuantSpec) -> list:
    """The gradients of every layer's params() (a list per layer), from d cost / d scores."""
    grads = [None] * len(layers)
    grad = grad_scores
    for i in reversed(range(len(layers))):
        grads[i], grad = layer_gradients(layers[i], caches[i], grad, spec, need_input=i > 0)
    return grads


def parameters(layers: list[Layer]) -> tuple[list, list]:
    """The arrays the optimizer updates, layer by layer in params() order, and which decay
    (weights do; biases and a normalization's gamma and beta do not)."""
    params, decay = [], []
    for layer in layers:
        arrays = layer.params()
        params += arrays
        decay += [i == 0 for i in range(len(arrays))]
    return params, decay


def integer_layers(layers: list[Layer], spec: QuantSpec) -> list:
    """The integer layers a trained network stands for (the input to the integer model)."""
    out, scale, zero = [], q.INPUT_SCALE, q.INPUT_ZERO
    for layer in layers:
        integer, (scale, zero) = integer_layer_of(layer, scale, zero, spec)
        out.append(integer)
    return out


def predict_scores(layers: list[Layer], q_inputs, spec: QuantSpec, quantized: bool):
    """Final scores of many samples: the integer model's when quantized, else float's."""
    if quantized:
        integer = integer_layers(layers, spec)
        codes = integer_scores([prepare(layer) for layer in integer], q_inputs)
        last = integer[-1]
        return (last.output_scale * (codes.astype(np.float64) - last.output_offset)).astype(np.float32)
    chunks = [
        forward(layers, q_inputs[start : start + PREDICT_CHUNK], spec, quantized=False, training=False)[0]
        for start in range(0, len(q_inputs), PREDICT_CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, layers[-1].weight.shape[0]), np.float32)
