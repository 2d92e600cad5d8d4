"""Pictures of a run and a model: training curves, a confusion matrix, int8 codes per layer.

They need matplotlib (the [plot] extra), imported only when a plot is drawn, so qmtik works
without it; a plot asked for without it is a PlotError. Figures are drawn with the Agg
canvas (no pyplot, no global state) and written atomically: a failed plot leaves the old file.
layer_statistics and confusion_matrix hold the numbers, so they can be checked without pictures.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from . import intref
from . import quantization as q
from .errors import DataError, PlotError
from .output_files import write_atomic

MISSING = "plots need matplotlib: pip install 'qmtik[plot]'"
GREY, RED = "#d9d9d9", "#d62728"


# --- the numbers -------------------------------------------------------------------------------


def _share(mask) -> float:
    """The share of True values (0.0 for none)."""
    return float(np.count_nonzero(mask) / mask.size) if mask.size else 0.0


def layer_statistics(model, x=None) -> list[dict]:
    """Per layer of a QuantizedModel: its int8 weight codes and, on raw inputs x, its int8
    output codes, each with the share at the ends of the range, computed with the model's own
    integer arithmetic (quantize_inputs, then intref.layer_forward layer by layer).

    weight_clipped counts weights at +-127 (an automatic scale puts each channel's largest
    there exactly; more means a fixed scale clipped). output_low / output_high count outputs
    at -128 / 127; output_clipped adds them, except -128 after a relu, which is its zero.
    """
    codes = None if x is None else model.quantize_inputs(x).astype(np.int64)
    stats = []
    for i, layer in enumerate(model.layers, 1):
        weights = layer.weights.ravel()
        at_limit = np.abs(weights.astype(np.int64)) == q.WMAX
        entry = {
            "layer": i,
            "activation": layer.activation,
            "shape": tuple(layer.weights.shape),
            "weight_codes": weights,
            "weight_clipped": _share(at_limit),
            "output_codes": None,
            "output_low": None,
            "output_high": None,
            "output_clipped": None,
        }
        if codes is not None:
            codes = intref.layer_forward(codes, layer)
            low, high = _share(codes == q.QMIN), _share(codes == q.QMAX)
            entry.update(
                output_codes=codes.ravel(),
                output_low=low,
                output_high=high,
                output_clipped=high + (0.0 if layer.activation == "relu" else low),
            )
        stats.append(entry)
    return stats


def _class_indices(labels, lookup: dict) -> np.ndarray:
    """Integer labels as they are; names through lookup (-1 for a name not in it)."""
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    return np.array([lookup.get(str(v), -1) for v in labels], dtype=np.int64)


def confusion_matrix(y_true, y_pred, class_names=None) -> tuple[np.ndarray, list]:
    """(counts, names): counts[t, p] samples of true class t predicted as p.

    Labels are class indices or class names (either side may be either, as model.predict
    gives names when the model has them); names not given are sorted, or the indices.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if len(y_true) != len(y_pred) or not len(y_true):
        raise DataError(
            f"confusion matrix: {len(y_true)} true labels and {len(y_pred)} predictions (need the same non-zero number)"
        )
    names = (
        [str(c) for c in class_names]
        if class_names is not None
        else sorted({str(v) for y in (y_true, y_pred) if y.dtype.kind not in "iu" for v in y})
    )
    lookup = {name: k for k, name in enumerate(names)}
    index_true, index_pred = _class_indices(y_true, lookup), _class_indices(y_pred, lookup)
    if min(index_true.min(), index_pred.min()) < 0:
        bad = sorted({str(v) for y, i in ((y_true, index_true), (y_pred, index_pred)) for v in y[i < 0]})
        raise DataError(f"confusion matrix: labels {bad[:3]} are neither class indices >= 0 nor class names")
    n = max(len(names), int(index_true.max()) + 1, int(index_pred.max()) + 1)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (index_true, index_pred), 1)
    return counts, names + [str(c) for c in range(len(names), n)]


# --- drawing -----------------------------------------------------------------------------------


def _matplotlib():
    """matplotlib's Agg canvas and Figure classes, or PlotError when it is missing."""
    try:
        import matplotlib  # noqa: F401  (first: a missing or blocked matplotlib fails here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(MISSING) from None
    return FigureCanvasAgg, Figure


def check_plot_path(path) -> str:
    """The image format of path from its suffix; PlotError when matplotlib is missing or cannot
    write that format. Cheap: the command line calls it before training, not after."""
    canvas, _ = _matplotlib()
    fmt = Path(path).suffix.lower().lstrip(".")
    supported = canvas.get_supported_filetypes()
    if fmt not in supported:
        raise PlotError(
            f"plot {path}: suffix {Path(path).suffix or '(none)'!r} is not an image format "
            f"matplotlib writes; allowed {', '.join(sorted(supported))}"
        )
    return fmt


def _figure(path, size):
    """A matplotlib Figure on its own Agg canvas (no pyplot), and the format path asks for."""
    fmt = check_plot_path(path)
    canvas, figure = _matplotlib()
    fig = figure(figsize=size, layout="constrained")
    canvas(fig)
    return fig, fmt


def _save(fig, path, fmt) -> None:
    """Render fig to bytes, then write them atomically (no Software tag: same plot, same PNG)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=100, **({"metadata": {"Software": None}} if fmt == "png" else {}))
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def plot_history(history: dict, path, task: str = "classification") -> None:
    """Loss (left) and training and validation accuracy, or mse for regression (right), per
    epoch, as Network.history_ or `qmtik train`'s history JSON has them; float epochs are
    shaded and the kept (best) epoch marked, to see what fake quantization and stopping did."""
    records = history.get("epochs") or []
    if not records:
        raise PlotError("plot history: it has no epochs")
    fig, fmt = _figure(path, (11, 4.2))
    epochs = [r["epoch"] for r in records]
    best = history.get("best_epoch")
    name = "accuracy" if task == "classification" else "mse"
    for ax, key, label in zip(fig.subplots(1, 2), ("loss", "metric"), ("loss", name)):
        train_key, val_key = ("loss", "val_loss") if key == "loss" else ("train_metric", "val_metric")
        ax.plot(epochs, [r[train_key] for r in records], "o-", ms=3, label="training")
        val = [(r["epoch"], r[val_key]) for r in records if r.get(val_key) is not None]
        if val:
            ax.plot(*zip(*val), "s-", ms=3, label="validation (int8 when fake-quantized)")
        floats = [r["epoch"] for r in records if not r.get("quantized", True)]
        if floats:
            ax.axvspan(min(floats) - 0.5, max(floats) + 0.5, color=GREY, label="float epochs")
        if best is not None:
            ax.axvline(best, color=RED, ls="--", label=f"kept epoch {best}")
        ax.set(xlabel="epoch", ylabel=label, title=f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, path, fmt)


def plot_confusion(y_true, y_pred, path, class_names=None) -> None:
    """The confusion matrix (rows true, columns predicted) with counts in the cells and the
    accuracy in the title: which classes the model mixes up."""
    counts, names = confusion_matrix(y_true, y_pred, class_names)
    n = len(names)
    fig, fmt = _figure(path, (max(5.0, 0.45 * n + 2.5),) * 2)
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if n <= 40:  # beyond that the numbers cannot be read
        for (t, p), count in np.ndenumerate(counts):
            ax.text(
                p,
                t,
                str(count),
                ha="center",
                va="center",
                fontsize=8 if n > 12 else 10,
                color="white" if count > counts.max() / 2 else "black",
            )
    ax.set_xticks(range(n), names, rotation=90 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(n), names)
    accuracy = np.trace(counts) / counts.sum()
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"accuracy {100 * accuracy:.2f}% ({np.trace(counts)} of {counts.sum()} samples)",
    )
    _save(fig, path, fmt)


def _histogram(ax, codes, lo, title, log):
    """A bar per int8 code from lo to 127; the codes at the ends in red, with a red mark on
    top so that a one-pixel bar still shows."""
    counts = np.bincount(codes.astype(np.int64) - q.QMIN, minlength=256)[lo - q.QMIN :]
    ax.stairs(counts[1:-1], np.arange(lo + 0.5, q.QMAX), fill=True)  # one artist: fast
    ax.bar([lo, q.QMAX], counts[[0, -1]], width=1.0, color=RED)
    ends = [(code, count) for code, count in ((lo, counts[0]), (q.QMAX, counts[-1])) if count]
    if ends:
        ax.plot(*zip(*ends), "v", color=RED, ms=7)
    if log:
        ax.set_yscale("log")
    ax.set_xlim(lo - 2, q.QMAX + 2)
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("int8 code")


def plot_layers(model, path, x=None) -> None:
    """Per layer of a QuantizedModel, histograms of its int8 weights and, on raw inputs x, of
    its int8 outputs, with the shares at the ends of the range in the titles: how well the
    scales fit (many clipped values: the scale is too small; few codes used: too large)."""
    stats = layer_statistics(model, x)
    columns = 1 if x is None else 2
    fig, fmt = _figure(path, (5.5 * columns, 2.8 * len(stats) + 0.6))
    axes = np.asarray(fig.subplots(len(stats), columns, squeeze=False))
    for row, s in zip(axes, stats):
        fan_out, fan_in = s["shape"]
        _histogram(
            row[0],
            s["weight_codes"],
            -q.WMAX,
            f"layer {s['layer']} ({fan_in}→{fan_out}) weights: {100 * s['weight_clipped']:.2f}% at ±127",
            log=False,
        )
        if x is not None:
            low, high = 100 * s["output_low"], 100 * s["output_high"]
            ends = (
                f"{high:.2f}% at 127; {low:.1f}% at −128 (relu's 0)"
                if s["activation"] == "relu"
                else f"{low:.2f}% at −128, {high:.2f}% at 127"
            )
            _histogram(
                row[1],
                s["output_codes"],
                q.QMIN,
                f"layer {s['layer']} {s['activation']} outputs: {100 * s['output_clipped']:.2f}% clipped\n{ends}",
                log=True,
            )
    samples = "" if x is None else f"; outputs on {len(np.asarray(x))} samples"
    fig.suptitle(
        f"int8 codes per layer, model {'-'.join(map(str, model.widths))}{samples}"
        + (" (log scale)" if x is not None else "")
    )
    _save(fig, path, fmt)
