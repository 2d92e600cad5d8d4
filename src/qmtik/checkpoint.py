"""Training checkpoints: float weights, observed ranges, optimizer state, history; no pickle.

A checkpoint is an .npz (read with allow_pickle=False) of named arrays; text (the config, the
history) is stored as JSON strings. It holds the kept network ("model.*") and, while training
runs, the state to resume from ("resume.*", "optimizer.*"). Files are written to a temporary
name and renamed, so a crash never leaves half a file in place of a good one.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .config import Config
from .errors import CheckpointError, ConfigError
from .files import write_atomic
from .layers import Layer
from .quantization import input_range_problem
from .optimizers import OPTIMIZERS

FORMAT = "qmtik-checkpoint"
VERSION = 1


def _layer_arrays(prefix: str, layers) -> dict:
    out = {}
    for i, layer in enumerate(layers):
        out[f"{prefix}.{i}.weight"] = layer.weight
        out[f"{prefix}.{i}.bias"] = layer.bias
        out[f"{prefix}.{i}.observed"] = layer.observed
    return out


def save(path, config: Config, input_range, layers, quantized: bool, history: dict,
         resume: dict | None = None, class_names=None) -> None:
    """Write a checkpoint; resume = {'epoch', 'layers', 'optimizer'} keeps the state to go on from."""
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
              "config": np.array(config.to_json()), "history": np.array(json.dumps(history)),
              "class_names": np.array(json.dumps(list(class_names) if class_names else None)),
              "input_range": np.asarray(input_range, dtype=np.float64), "quantized": np.array(bool(quantized)),
              **_layer_arrays("model", layers)}
    if resume is not None:
        arrays["resume.epoch"] = np.array(resume["epoch"])
        arrays.update(_layer_arrays("resume", resume["layers"]))
        arrays.update({f"optimizer.{k}": v for k, v in resume["optimizer"].items()})
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load(path) -> dict:
    """Read and check a checkpoint: {'config', 'input_range', 'layers', 'quantized', 'history', 'resume'}."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable qmtik checkpoint ({exc})") from None
    return _check(path, arrays)


def _check(path, arrays: dict) -> dict:
    def fail(problem):
        raise CheckpointError(f"checkpoint {path}: {problem}")

    def need(key, kinds=None, shape=None):
        if key not in arrays:
            fail(f"missing {key!r}; not a qmtik checkpoint or damaged")
        value = arrays[key]
        if (kinds and value.dtype.kind not in kinds) or (shape is not None and value.shape != shape):
            fail(f"{key} is {value.dtype} of shape {value.shape}, not what a checkpoint holds")
        return value

    if str(need("format", "U", ())) != FORMAT:
        fail(f"format {str(arrays['format'])!r}, expected {FORMAT!r}")
    version = int(need("version", "iu", ()))
    if version > VERSION:
        fail(f"version {version} is newer than this qmtik reads ({VERSION}); upgrade qmtik")
    if version < 1:
        fail(f"version {version} is not valid")
    try:
        config = Config.from_dict(json.loads(str(need("config", "U", ()))))
        history = json.loads(str(need("history", "U", ())))
        names = json.loads(str(arrays.get("class_names", np.array("null"))))
    except (ConfigError, json.JSONDecodeError) as exc:
        fail(f"its config or history is invalid ({exc})")
    _check_history(history, config, fail)
    if names is not None and (not isinstance(names, list) or len(names) != max(config.network.outputs, 2)
                              or not all(isinstance(n, str) and n for n in names)):
        fail("class_names must be one non-empty string per class")
    input_range = need("input_range", "f", (2,)).astype(np.float64)
    problem = input_range_problem(*input_range) if np.isfinite(input_range).all() else "not finite"
    if problem:
        fail(f"input_range {input_range.tolist()}: {problem}")
    out = {"config": config, "input_range": tuple(input_range.tolist()), "history": history,
           "class_names": tuple(names) if names else None,
           "quantized": bool(need("quantized", "b", ())), "layers": _check_layers(path, arrays, "model", config),
           "resume": None}
    if "resume.epoch" in arrays:
        epoch = int(need("resume.epoch", "iu", ()))
        if not 0 < epoch < config.training.epochs or epoch != len(history["epochs"]):
            fail(f"resume.epoch {epoch} does not fit a run of {config.training.epochs} epochs "
                 f"with {len(history['epochs'])} recorded")
        layers = _check_layers(path, arrays, "resume", config)
        out["resume"] = {"epoch": epoch, "layers": layers,
                         "optimizer": _check_optimizer(path, arrays, config, layers)}
    return out


def _check_history(history, config: Config, fail) -> None:
    """A training history: per-epoch records and the kept epoch among them."""
    if not isinstance(history, dict) or not isinstance(history.get("epochs"), list):
        fail("history is not a record of epochs")
    records = history["epochs"]
    if not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records):
        fail("history holds an epoch record that is not one")
    best = history.get("best_epoch")
    if best is not None and (not isinstance(best, int) or not 1 <= best <= len(records)):
        fail(f"history's best_epoch {best!r} is not one of its {len(records)} epochs")
    first = history.get("first_loss")
    if records and not isinstance(first, (int, float)):
        fail("history's first_loss is missing")


def _check_optimizer(path, arrays: dict, config: Config, layers) -> dict:
    """The optimizer state arrays, each present with its parameter's shape."""
    shapes = [a.shape for layer in layers for a in (layer.weight, layer.bias)]
    expected = {"steps": ()}
    for slot in OPTIMIZERS[config.training.optimizer].slots:
        expected.update({f"{slot}.{i}": shape for i, shape in enumerate(shapes)})
    state = {}
    for name, shape in expected.items():
        key = f"optimizer.{name}"
        if key not in arrays:
            raise CheckpointError(f"checkpoint {path}: missing {key!r} of the {config.training.optimizer} optimizer")
        if arrays[key].shape != shape or arrays[key].dtype.kind not in "iuf" or not np.isfinite(arrays[key]).all():
            raise CheckpointError(f"checkpoint {path}: {key} has shape {arrays[key].shape}, expected {shape} "
                                  "finite values")
        state[name] = arrays[key]
    return state


def _check_layers(path, arrays, prefix: str, config: Config) -> list[Layer]:
    widths = config.network.widths
    layers = []
    for i, (fan_in, fan_out, kind) in enumerate(zip(widths[:-1], widths[1:], config.network.layer_activations)):
        expected = {"weight": (fan_out, fan_in), "bias": (fan_out,), "observed": (2,)}
        parts = {}
        for name, shape in expected.items():
            key = f"{prefix}.{i}.{name}"
            if key not in arrays:
                raise CheckpointError(f"checkpoint {path}: missing {key!r} for a {'-'.join(map(str, widths))} network")
            value = arrays[key]
            if value.shape != shape or value.dtype.kind != "f":
                raise CheckpointError(f"checkpoint {path}: {key} has shape {value.shape} ({value.dtype}), "
                                      f"expected {shape} floats")
            if not np.isfinite(value).all():
                raise CheckpointError(f"checkpoint {path}: {key} holds NaN or infinite values")
            if name == "observed" and value[0] > value[1]:
                raise CheckpointError(f"checkpoint {path}: {key} {value.tolist()} is not [low, high]")
            parts[name] = value
        layers.append(Layer(parts["weight"].astype(np.float32), parts["bias"].astype(np.float32), kind,
                            parts["observed"].astype(np.float64)))
    return layers
