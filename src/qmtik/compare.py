"""What quantization costs, layer by layer: the integer model against its float network.

    rows, summary = compare(net, x, y)       # net: a calibrated float network (or QAT's)

For each layer, on the same raw inputs: the signal-to-quantization-noise ratio in dB of the
int8 output (dequantized) against the float network's output, 10 log10(sum f^2 / sum (f -
q)^2), and the share of float values outside what the layer's int8 output can stand for
(clipped). At the end, the float and int8 accuracy (classification) or mean squared error
(regression). The float network here takes the raw inputs mapped to [0, 1] without int8
rounding (onnx_import.float_layers), so the input's own quantization counts too. PyTorch's
numeric suite and TFLite's quantization debugger report the same figures.
"""

from __future__ import annotations

import numpy as np

from . import quantization as q
from .backends.numpy import prepare
from .head import classes
from .integer_model import QuantizedModel
from .network import Network
from .onnx_import import float_layers

INFINITE_DB = 999.0  # the SQNR reported for an output quantized without error
CHUNK = 500  # samples per pass: a convolution's float64 outputs of many samples take much memory


def output_grid(layer) -> tuple[float, int]:
    """(scale, zero point) of an integer layer's int8 output."""
    if hasattr(layer, "output_scale"):
        return float(layer.output_scale), int(layer.output_offset)
    return float(layer.scale), int(layer.zero_point)


def layer_name(number: int, layer) -> str:
    """'2 conv2d relu' for a table row."""
    activation = getattr(layer, "activation", None)
    return f"{number} {layer.kind}" + (f" {activation}" if activation else "")


def sqnr_db(reference, approximation) -> float:
    """10 log10(signal power / noise power), INFINITE_DB without noise."""
    reference = np.asarray(reference, np.float64)
    return _db(float(np.sum(reference**2)), float(np.sum((reference - approximation) ** 2)))


def compare(net: Network, x, y=None, model: QuantizedModel | None = None) -> tuple[list, dict]:
    """([{'layer', 'sqnr_db', 'clipped'}, ...], {'samples', 'float', 'int8', 'metric'}) of the
    integer model (net.quantize() unless given) on raw inputs x, CHUNK samples at a time; the
    summary's figures are the accuracy (classification) or mean squared error (regression)
    against y, None without y."""
    model = net.quantize() if model is None else model
    grids = [output_grid(layer) for layer in model.layers]
    kernels = [prepare(layer) for layer in model.layers]
    sums = np.zeros((len(model.layers), 3))  # signal power, noise power, values clipped
    values = np.zeros(len(model.layers))
    scores_float, codes_int8 = [], []
    for start in range(0, len(x), CHUNK):
        part = x[start : start + CHUNK]
        h = model.quantize_inputs(part).astype(np.float32)
        for i, (kernel, reference, (scale, zero)) in enumerate(zip(kernels, float_layers(net, part), grids)):
            h = kernel(h.astype(kernel.dtype, copy=False))
            reference = reference.reshape(len(part), -1)
            approximation = scale * (h.reshape(len(part), -1).astype(np.float64) - zero)
            low, high = scale * (q.QMIN - zero - 0.5), scale * (q.QMAX - zero + 0.5)
            sums[i] += (np.sum(reference**2), np.sum((reference - approximation) ** 2),
                        np.count_nonzero((reference < low) | (reference > high)))  # fmt: skip
            values[i] += reference.size
        scores_float.append(reference)
        codes_int8.append(h.reshape(len(part), -1))
    rows = [
        {"layer": layer_name(number, layer), "sqnr_db": _db(signal, noise), "clipped": float(clipped / count)}
        for number, (layer, (signal, noise, clipped), count) in enumerate(zip(model.layers, sums, values), 1)
    ]
    return rows, _summary(model, np.concatenate(scores_float), np.concatenate(codes_int8), y, grids[-1])


def _db(signal: float, noise: float) -> float:
    return INFINITE_DB if noise == 0 else 10.0 * np.log10(max(signal, 1e-300) / noise)


def _summary(model, scores_float, codes, y, grid) -> dict:
    summary = {"samples": int(len(codes)), "float": None, "int8": None, "metric": None}
    if y is None:
        return summary
    y = np.asarray(y)
    if model.task == "classification":
        labels = y.astype(np.int64)
        summary.update(metric="accuracy", float=float(np.mean(classes(scores_float) == labels)),
                       int8=float(np.mean(model.classes(codes.astype(np.int8)) == labels)))  # fmt: skip
    else:
        target = y.reshape(len(codes), -1)
        scores_int8 = grid[0] * (codes.astype(np.float64) - grid[1])
        summary.update(metric="mse of the scores", float=float(np.mean((scores_float - target) ** 2)),
                       int8=float(np.mean((scores_int8 - target) ** 2)))  # fmt: skip
    return summary


def report_lines(rows, summary) -> list[str]:
    """The comparison as text: a table of layers, then the figures at the end."""
    width = max(len("layer"), *(len(r["layer"]) for r in rows))
    lines = [f"{'layer':<{width}}  SQNR (dB)  clipped"]
    for r in rows:
        db = "exact" if r["sqnr_db"] >= INFINITE_DB else f"{r['sqnr_db']:.1f}"
        lines.append(f"{r['layer']:<{width}}  {db:>9}  {100 * r['clipped']:6.2f}%")
    if summary["metric"] == "accuracy":
        drop = 100 * (summary["float"] - summary["int8"])
        lines.append(
            f"accuracy on {summary['samples']} samples: float {100 * summary['float']:.2f}%, "
            f"int8 {100 * summary['int8']:.2f}% ({abs(drop):.2f} pp {'lost' if drop >= 0 else 'gained'})"
        )
    elif summary["metric"]:
        lines.append(
            f"{summary['metric']} on {summary['samples']} samples: float {summary['float']:.4g}, "
            f"int8 {summary['int8']:.4g}"
        )
    return lines


def plot_comparison(rows, summary, path) -> None:
    """The per-layer SQNR (bars) and the share clipped (line), as PNG or SVG (the [plot] extra)."""
    from .plots import _figure, _save

    fig, fmt = _figure(path, (max(6.0, 0.7 * len(rows) + 2), 4.2))
    ax = fig.subplots()
    names = [r["layer"] for r in rows]
    values = [min(r["sqnr_db"], 80.0) for r in rows]
    ax.bar(range(len(rows)), values, color="tab:blue")
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    ax.set_ylabel("SQNR of the int8 output (dB)")
    clipped = ax.twinx()
    clipped.plot(range(len(rows)), [100 * r["clipped"] for r in rows], "o-", color="tab:red")
    clipped.set_ylabel("values clipped (%)", color="tab:red")
    title = "int8 against float, per layer"
    if summary["metric"] == "accuracy":
        title += f": accuracy float {100 * summary['float']:.2f}%, int8 {100 * summary['int8']:.2f}%"
    ax.set_title(title)
    _save(fig, path, fmt)
