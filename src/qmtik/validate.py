"""The checks every path of raw inputs, labels and class names takes: one rule each, shared by
the data loaders, training (Network) and the integer model (QuantizedModel) and its file.

It sits low in the pipeline, so that the model that ships can check its inputs without
importing data loading. Each check raises a one-line DataError, or returns a reason or None.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from .errors import DataError
from .head import class_count
from .quantization import F32_MAX

MAX_NAME = 255  # bytes of UTF-8 in one class name (the .qmt file's limit)
MAX_NAMES = 2**16 - 1  # class names a .qmt file holds


def check_inputs(x, inputs: int, name: str = "inputs") -> np.ndarray:
    """Inputs as a 2-D array of `inputs` columns, numeric, finite in float32 and not empty (no
    samples, or samples of no features, are refused). The model and the C API take float32
    inputs, so a float64 beyond float32 (1e300) is refused as an infinite one is: it would be
    infinite there. This is the one check every path of raw inputs takes."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected numbers, got an array of {x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{name}: no samples")
    if x.ndim > 2:
        x = x.reshape(len(x), -1)
    if x.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (samples x features), got shape {x.shape}")
    if x.shape[1] == 0:
        raise DataError(f"{name}: the samples have no features (shape {x.shape})")
    if x.shape[1] != inputs:
        raise DataError(f"{name}: {x.shape[1]} features per sample, the network has {inputs} inputs")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(f"{name}: NaN or infinite value in sample {bad}")
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:  # float16 and float32 cannot exceed it
        beyond = np.abs(x) > F32_MAX
        if beyond.any():
            row, column = (int(i) for i in np.argwhere(beyond)[0])
            raise DataError(
                f"{name}: value {np.format_float_scientific(x[row, column], precision=4)} "
                f"of sample {row} is beyond float32 "
                f"(|x| <= {F32_MAX:.4g}), which the model and the C API compute in"
            )
    return x


def encode_targets(y, task: str, outputs: int, samples: int, name: str = "labels") -> np.ndarray:
    """Labels as the float32 targets the cost compares with (one-hot for classes)."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected numbers, got an array of {y.dtype}")
    if y.ndim == 0:
        raise DataError(f"{name}: expected one label per sample, got a single value")
    if len(y) != samples:
        raise DataError(f"{name}: {len(y)} labels for {samples} samples")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{name}: NaN or infinite value in label {int(np.argwhere(~np.isfinite(y))[0][0])}")
    if task == "regression":
        y = y.reshape(samples, -1) if y.ndim > 1 else y.reshape(samples, 1)
        if y.shape[1] != outputs:
            raise DataError(f"{name}: {y.shape[1]} targets per sample, the network has {outputs} outputs")
        return y.astype(np.float32)
    classes = class_count(outputs)
    if y.ndim != 1 or (y != np.round(y)).any():
        raise DataError(f"{name}: class labels must be a 1-D array of integers")
    if y.min() < 0 or y.max() >= classes:
        bad = int(np.argmax((y < 0) | (y >= classes)))
        raise DataError(f"{name}: label {y[bad].item()!r} of sample {bad} is out of range 0..{classes - 1}")
    labels = y.astype(np.int64)
    if outputs == 1:
        return labels.astype(np.float32)[:, None]
    one_hot = np.zeros((samples, outputs), dtype=np.float32)  # not np.eye(outputs): outputs^2 floats
    one_hot[np.arange(samples), labels] = 1.0
    return one_hot


def class_names_problem(task: str, names, outputs: int) -> str | None:
    """Why these class names cannot go with a model of this task and outputs, or None: one
    name per class, text of 1 to MAX_NAME bytes of UTF-8, all different (predict could not tell
    them apart), without control characters such as a line break (predict prints
    one name per line). The one rule for the .qmt file, the checkpoint and Network.fit."""
    if not names:
        return None
    if task != "classification":
        return f"{len(names)} class names for a {task} model; only classification has class names"
    classes = class_count(outputs)
    if len(names) != classes:
        return f"{len(names)} class names for {classes} classes (one name per class, or none)"
    if len(names) > MAX_NAMES:
        return f"{len(names):,} class names, more than the format holds ({MAX_NAMES:,})"
    first = {}
    for number, name in enumerate(names, 1):
        if not isinstance(name, str):
            return f"class name {number} is a {type(name).__name__}, not text"
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            return f"class name {number} {name!r} cannot be written as UTF-8"
        if not 1 <= size <= MAX_NAME:
            return f"class name {number} {name!r} is {size} bytes of UTF-8; 1 to {MAX_NAME} are allowed"
        if any(unicodedata.category(char) == "Cc" for char in name):
            return f"class name {number} {name!r} holds a control character; predict prints one name per line"
        if first.setdefault(name, number) != number:
            return f"class name {number} {name!r} is also class name {first[name]}"
    return None
