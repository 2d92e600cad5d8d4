"""Post-training quantization: activation ranges chosen from calibration data, no training.

    net = qmtik.Network.load("model.ckpt.npz")    # float weights (an ONNX import, a float run)
    calibrate(net, x, observer="mse")             # every layer's observed range from x
    model = net.quantize()                        # the integer model (per-channel weights as ever)

A checkpoint from quantization-aware training carries the ranges its training observed (a
moving min and max of each layer's output); a float import carries none. Here the float
network runs on the calibration inputs (as int8 codes, as it runs in training) and each layer
with weights gets the range of its output (its pre-activation for sigmoid and tanh, whose
tables take it), chosen by one of three observers:

    minmax      the smallest and largest value seen
    percentile  the PERCENTILE-th and (100 - PERCENTILE)-th percentiles (outliers clipped)
    mse         the range, among the min/max shrunk by steps, whose int8 grid gives the least
                squared error on the values (TensorRT's and PyTorch's HistogramObserver's idea)

Percentile and mse look at a seeded sample of at most SAMPLE_VALUES values of each layer.
"""

from __future__ import annotations

import numpy as np

from . import quantization as q
from .errors import DataError, UsageError
from .functions import activation as apply_activation
from .layers import QuantSpec
from .network import Network
from .window_layers import float_forward

OBSERVERS = ("minmax", "percentile", "mse")
PERCENTILE = 0.01  # percentile's clip at each end, in percent
SAMPLE_VALUES = 2**20  # values of each layer that percentile and mse look at
SHRINK_STEPS = 64  # mse tries the range scaled by (1 - i / SHRINK_STEPS * 0.9), i < SHRINK_STEPS, each end alike
BATCH = 256  # calibration samples per forward pass


def needs_calibration(net: Network) -> bool:
    """Whether a layer with weights has no observed range (a float import)."""
    return any(layer.weight.size and np.isnan(layer.observed).any() for layer in net.layers_)


def calibrate(net: Network, x, observer: str = "minmax", samples: int | None = None, seed: int = 0) -> Network:
    """Set every weighted layer's observed range from inputs x (raw, as the network takes
    them), by observer; the network becomes a float network ready for quantize(). Returns net."""
    if observer not in OBSERVERS:
        raise UsageError(f"observer {observer!r}: allowed {', '.join(OBSERVERS)}")
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    if samples is not None and samples < len(x):
        x = x[np.sort(rng.choice(len(x), samples, replace=False))]
    if len(x) == 0:
        raise DataError("calibration data: no samples")
    codes = net.input_codes(x)
    spec = QuantSpec.from_config(net.config)
    weighted = [i for i, layer in enumerate(net.layers_) if layer.weight.size]
    seen = {i: [] for i in weighted}
    extremes = {i: [np.inf, -np.inf] for i in weighted}
    per_batch = max(1, SAMPLE_VALUES // max(1, -(-len(x) // BATCH)))
    for start in range(0, len(codes), BATCH):
        a = (q.INPUT_SCALE * (codes[start : start + BATCH].astype(np.float32) - q.INPUT_ZERO)).astype(np.float32)
        for i, layer in enumerate(net.layers_):
            if i not in seen:
                a = float_forward(layer, a, spec, training=False)[0]
                continue
            table = layer.activation in q.TABLE_ACTIVATIONS
            twin = layer.copy()
            twin.activation = "linear" if table else layer.activation
            z = float_forward(twin, a, spec, training=False)[0]
            values = z.reshape(-1)
            extremes[i] = [min(extremes[i][0], float(values.min())), max(extremes[i][1], float(values.max()))]
            pick = values if values.size <= per_batch else values[rng.integers(0, values.size, per_batch)]
            seen[i].append(pick.astype(np.float64))
            a = apply_activation(layer.activation, z, spec.slope) if table else z
    for i in weighted:
        low, high = choose_range(np.concatenate(seen[i]), extremes[i], observer)
        net.layers_[i].observed = np.array([low, high], np.float64)
    return net


def choose_range(values, extremes, observer: str) -> tuple[float, float]:
    """The [low, high] an observer picks for values (a sample) whose true extremes are given."""
    low, high = extremes
    if observer == "percentile":
        low, high = (float(v) for v in np.percentile(values, [PERCENTILE, 100 - PERCENTILE]))
    elif observer == "mse":
        best = None
        for step in range(SHRINK_STEPS):
            factor = 1.0 - 0.9 * step / SHRINK_STEPS
            lo, hi = extremes[0] * factor, extremes[1] * factor
            error = quantization_error(values, lo, hi)
            if best is None or error < best[0]:
                best = (error, lo, hi)
        low, high = best[1], best[2]
    if not high > low:
        high = low + 1e-6 * max(1.0, abs(low))
    return low, high


def quantization_error(values, low: float, high: float) -> float:
    """Mean squared error of values quantized to the int8 grid of [low, high] (qmtik's own
    affine_params, so the grid is the one the integer model gets)."""
    if not high > low:
        return float("inf")
    scale, zero = q.affine_params(low, high)
    codes = np.clip(q.round_half_away(values / scale) + zero, q.QMIN, q.QMAX)
    return float(np.mean((scale * (codes - zero) - values) ** 2))
