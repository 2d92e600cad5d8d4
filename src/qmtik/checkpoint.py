"""Training checkpoints: float weights, observed ranges, optimizer state, history; no pickle.

A checkpoint is an .npz (read with allow_pickle=False) of named arrays; text (the config, the
history) is stored as JSON strings. It holds the kept network ("model.*") and, while training
runs, the state to resume from ("resume.*", "optimizer.*"). Files are written to a temporary
name and renamed, so a crash never leaves half a file in place of a good one.
"""

from __future__ import annotations

import json
import os
import reprlib
import stat
from functools import partial
from pathlib import Path

import numpy as np

from .config import Config
from .errors import CheckpointError, ConfigError
from .layers import Layer, init_layers
from .optimizers import OPTIMIZERS
from .output_files import write_atomic
from .parsing import load_json, load_npz
from .qmtfile import MAGIC as QMT_MAGIC
from .quantization import F32_MAX, input_range_problem, range_problem
from .validate import class_names_problem  # the model file's rule: one rule for class names

FORMAT = "qmtik-checkpoint"
VERSION = 1


def _layer_arrays(prefix: str, layers) -> dict:
    return {f"{prefix}.{i}.{name}": value for i, layer in enumerate(layers) for name, value in layer.state().items()}


def save(
    path,
    config: Config,
    input_range,
    layers,
    quantized: bool,
    history: dict,
    resume: dict | None = None,
    class_names=None,
) -> None:
    """Write a checkpoint; resume = {'epoch', 'layers', 'optimizer'} keeps the state to go on from."""
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION),
        "config": np.array(config.to_json()),
        "history": np.array(json.dumps(history)),
        "class_names": np.array(json.dumps(list(class_names) if class_names else None)),
        "input_range": np.asarray(input_range, dtype=np.float64),
        "quantized": np.array(bool(quantized)),
        **_layer_arrays("model", layers),
    }
    if resume is not None:
        arrays["resume.epoch"] = np.array(resume["epoch"])
        arrays.update(_layer_arrays("resume", resume["layers"]))
        arrays.update({f"optimizer.{k}": v for k, v in resume["optimizer"].items()})
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load(path) -> dict:
    """Read and check a checkpoint: {'config', 'input_range', 'layers', 'quantized', 'history', 'resume'}.

    Each member's array header is read before its data (parsing.load_npz): a member of no
    checkpoint, or one whose shape is not the one its config gives it, is refused uninflated."""
    path = Path(path)
    if path.exists() and stat.S_ISFIFO(path.stat().st_mode):  # read twice below: a FIFO would block
        raise CheckpointError(f"checkpoint {path}: a FIFO or pipe; a checkpoint is read from a regular file")
    if _starts_with(path, QMT_MAGIC):
        raise CheckpointError(
            f"checkpoint {path}: an integer model (.qmt), not a training checkpoint; load it with qmtik.load_model"
        )
    what = f"checkpoint {path}"
    meta = load_npz(path, what, CheckpointError, keys=tuple(SCALARS), check=_scalar_problem)
    shapes = _member_shapes(meta)
    if shapes is None:  # not a checkpoint, or no config to check the arrays by: _check says why
        return _check(path, meta)
    known = _Known(shapes)
    return _check(path, load_npz(path, what, CheckpointError, known=known, check=partial(_shape_problem, shapes)))


SCALARS = {key: () for key in ("format", "version", "config", "history", "class_names", "quantized")}
SCALARS.update({"input_range": (2,), "resume.epoch": (), "optimizer.steps": ()})


def _scalar_problem(key: str, dtype, shape) -> str | None:
    """Why a header of one of the SCALARS members cannot be that member's, or None."""
    if key in SCALARS and shape != SCALARS[key]:
        return f"is {dtype} of shape {shape}, not what a checkpoint holds"
    return None


def _member_shapes(meta: dict) -> dict | None:
    """{member: shape} of every array member the checkpoint's config allows, or None when the
    config cannot be read (then _check refuses the checkpoint with the reason)."""
    if "format" not in meta or str(meta["format"]) != FORMAT or "config" not in meta:
        return None
    if "format" not in meta or str(meta["format"]) != FORMAT or "config" not in meta:
        return None
    try:
        config = Config.from_dict(json.loads(str(meta["config"])))
        layers = init_layers(config, np.random.default_rng(0))
    except Exception:  # noqa: BLE001 - any reason at all: _check gives the one-line message
        return None
    shapes = dict(SCALARS)
    for prefix in ("model", "resume"):
        shapes.update({key: a.shape for key, a in _layer_arrays(prefix, layers).items()})
    params = [a.shape for layer in layers for a in layer.params()]
    for slot in OPTIMIZERS[config.training.optimizer].slots:
        shapes.update({f"optimizer.{slot}.{i}": shape for i, shape in enumerate(params)})
    return shapes


class _Known:
    """Whether a member is one of the arrays a checkpoint of its config holds (load_npz's known)."""

    problem = "is not an array of a checkpoint of its config's network"

    def __init__(self, shapes: dict):
        self.shapes = shapes

    def __call__(self, name: str) -> bool:
        return name in self.shapes


def _shape_problem(shapes: dict, key: str, dtype, shape) -> str | None:
    """Why an array header cannot be that of the member key of a checkpoint of these shapes."""
    if key in SCALARS:
        return _scalar_problem(key, dtype, shape)
    if shape != shapes[key]:
        return f"is {dtype} of shape {shape}; expected float32 or float64 of shape {shapes[key]}"
    return None


def _starts_with(path, magic: bytes) -> bool:
    """Whether the file at path begins with magic (False when it cannot be read: load_npz then
    says why)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a device is not opened here: load_npz refuses it
            return False
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _float_problem(value, shape) -> str | None:
    """Why an array of a checkpoint cannot be one of floats of shape, or None. Only float32 and
    float64 are read: numpy compares a float16 array with the float32 limit by casting the limit
    to float16 (an overflow warning), and a long double may overflow the cast to float64."""
    if value.dtype.kind != "f" or value.dtype.itemsize not in (4, 8) or value.shape != shape:
        return f"is {value.dtype} of shape {value.shape}; expected float32 or float64 of shape {shape}"
    return None


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

    def json_of(key):  # a JSON string field; class_names may be absent
        text = str(need(key, "U", ())) if key in arrays or key != "class_names" else "null"
        return load_json(text, f"checkpoint {path}: {key}", CheckpointError)

    try:
        config = Config.from_dict(json_of("config"))
    except ConfigError as exc:
        fail(f"its config is invalid ({exc})")
    history, names = json_of("history"), json_of("class_names")
    _check_history(history, config, fail)
    if names is not None and not isinstance(names, list):
        fail(f"class_names {_shown(names)} is not a list of names")
    problem = class_names_problem(config.task, names, config.network.outputs)
    if problem:
        fail(f"class_names: {problem}")
    input_range = need("input_range")
    if _float_problem(input_range, (2,)):
        fail(f"input_range {_float_problem(input_range, (2,))}")
    input_range = input_range.astype(np.float64)
    problem = input_range_problem(*input_range) if np.isfinite(input_range).all() else "not finite"
    if problem:
        fail(f"input_range {input_range.tolist()}: {problem}")
    quantized = bool(need("quantized", "b", ()))
    kept = _kept_record(history)
    if kept is not None and quantized != kept["quantized"]:
        fail(
            f"quantized is {quantized}, but its kept epoch {kept['epoch']} ran "
            f"{'fake-quantized' if kept['quantized'] else 'in float'}"
        )
    out = {
        "config": config,
        "input_range": tuple(input_range.tolist()),
        "history": history,
        "class_names": tuple(names) if names else None,
        "quantized": quantized,
        "layers": _check_layers(path, arrays, "model", config, unobserved=not history["epochs"] and not quantized),
        "resume": None,
    }
    if "resume.epoch" in arrays:
        epoch = int(need("resume.epoch", "iu", ()))
        if not 0 < epoch < config.training.epochs or epoch != len(history["epochs"]):
            fail(
                f"resume.epoch {epoch} does not fit a run of {config.training.epochs} epochs "
                f"with {len(history['epochs'])} recorded"
            )
        layers = _check_layers(path, arrays, "resume", config)
        out["resume"] = {
            "epoch": epoch,
            "layers": layers,
            "optimizer": _check_optimizer(path, arrays, config, layers, epoch),
        }
    return out


def _kept_record(history: dict) -> dict | None:
    """The record of the epoch whose network the checkpoint keeps: the best, or else the last."""
    records = history["epochs"]
    if history["best_epoch"] is not None:
        return records[history["best_epoch"] - 1]
    return records[-1] if records else None


RECORD_NUMBERS = ("loss", "train_metric", "learning_rate", "seconds")  # finite and >= 0 in every record
RECORD_VALIDATION = ("val_loss", "val_metric")  # the same, or both null when there was no validation


def _is_number(value) -> bool:
    """A number >= 0 as JSON gives it that is finite as a float (not a boolean, which Python
    counts as an int, nor an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 <= float(value) < float("inf")
    except OverflowError:
        return False


_shown = reprlib.repr  # a hostile value in a message, cut short


def _check_history(history, config: Config, fail) -> None:
    """A training history: per-epoch records with every key training, plots and the history
    file read, of the right types and in order, and the kept epoch among them."""
    if not isinstance(history, dict) or not isinstance(history.get("epochs"), list):
        fail("history is not a record of epochs")
    records = history["epochs"]
    if len(records) > config.training.epochs:
        fail(f"history's records hold {len(records)} epochs of a run of {config.training.epochs}")
    best = history.get("best_epoch")
    if best is not None and (isinstance(best, bool) or not isinstance(best, int) or not 1 <= best <= len(records)):
        fail(f"history's best_epoch {_shown(best)} is not one of its {len(records)} epochs")
    for key in ("best_epoch", "first_loss"):
        if key not in history:
            fail(f"history's {key} is missing")
    first = history["first_loss"]
    if records and not _is_number(first):
        fail(f"history's first_loss {_shown(first)} is not a finite number >= 0")
    for i, record in enumerate(records):
        problem = _record_problem(record, i, config)
        if problem:
            fail(f"history's record of epoch {i + 1} {problem}")
    if len({r["val_loss"] is None for r in records}) > 1:
        fail("history has validation figures for some epochs and not for others")
    final_mode = config.training.float_epochs < config.training.epochs
    if best is not None and records[best - 1]["quantized"] != final_mode:
        fail(
            f"history's best_epoch {best} is a {'float' if final_mode else 'fake-quantized'} epoch; "
            "only the final mode's epochs are kept"
        )


def _record_problem(record, index: int, config: Config) -> str | None:
    """Why one epoch record cannot be the record of epoch index + 1, or None."""
    if not isinstance(record, dict):
        return "is not a record"
    epoch = record.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch != index + 1:
        return f"says epoch {_shown(epoch)}"
    for key in RECORD_NUMBERS:
        if not _is_number(record.get(key)):
            return f"has {key} {_shown(record.get(key))}, not a finite number >= 0"
    figures = [record.get(key) for key in RECORD_VALIDATION]
    if figures != [None, None] and not all(_is_number(v) for v in figures):
        return (
            f"has val_loss {_shown(figures[0])} and val_metric {_shown(figures[1])}: both finite "
            "numbers >= 0 or both null"
        )
    if record.get("quantized") is not (index >= config.training.float_epochs):
        return (
            f"has quantized {_shown(record.get('quantized'))}; with training.float_epochs = "
            f"{config.training.float_epochs} it is {index >= config.training.float_epochs}"
        )
    return None


def _check_optimizer(path, arrays: dict, config: Config, layers, epoch: int) -> dict:
    """The optimizer state after `epoch` epochs: a whole number of steps, at least one an epoch,
    and each slot's array present, of its parameter's shape, finite within float32 (second
    moments >= 0). train() checks the steps against the data's steps per epoch."""

    def fail(problem):
        raise CheckpointError(f"checkpoint {path}: {problem}")

    kind = OPTIMIZERS[config.training.optimizer]
    if "optimizer.steps" not in arrays:
        fail(f"missing 'optimizer.steps' of the {config.training.optimizer} optimizer")
    steps = arrays["optimizer.steps"]
    if steps.shape != () or steps.dtype.kind not in "iu":
        fail(f"optimizer.steps is {steps.dtype} of shape {steps.shape}, not a whole number")
    if int(steps) < epoch or int(steps) % epoch:
        fail(
            f"optimizer.steps {int(steps)} is not the same number of steps (at least 1) in each of "
            f"the {epoch} epochs trained"
        )
    state = {"steps": steps}
    shapes = [a.shape for layer in layers for a in layer.params()]
    for slot in kind.slots:
        for i, shape in enumerate(shapes):
            key = f"optimizer.{slot}.{i}"
            if key not in arrays:
                fail(f"missing {key!r} of the {config.training.optimizer} optimizer")
            value = arrays[key]
            if _float_problem(value, shape):
                fail(f"{key} {_float_problem(value, shape)}")
            if not (np.isfinite(value).all() and np.abs(value).max(initial=0) <= F32_MAX):
                fail(f"{key} holds values that are not finite in float32")
            if slot in kind.nonnegative and (value < 0).any():
                fail(f"{key} holds negative values; a second moment is >= 0")
            state[f"{slot}.{i}"] = value
    return state


def _check_layers(path, arrays, prefix: str, config: Config, unobserved: bool = False) -> list[Layer]:
    """The layers the config describes, with the checkpoint's arrays: each one present, of the
    layer's shape, finite within float32; an observed range one that quantizes (or, when
    unobserved is allowed, for a float import that trained no epoch, none yet: NaN)."""
    layers = init_layers(config, np.random.default_rng(0))
    for i, layer in enumerate(layers):
        parts = {}
        for name, template in layer.state().items():
            key = f"{prefix}.{i}.{name}"
            if key not in arrays:
                raise CheckpointError(f"checkpoint {path}: missing {key!r} for the config's network")
            value = arrays[key]
            if _float_problem(value, template.shape):
                raise CheckpointError(f"checkpoint {path}: {key} {_float_problem(value, template.shape)}")
            missing = unobserved and name == "observed" and np.isnan(value).all()  # an import, not calibrated
            if not np.isfinite(value).all() and not missing:
                raise CheckpointError(f"checkpoint {path}: {key} holds NaN or infinite values")
            if np.abs(value).max(initial=0) > F32_MAX:
                raise CheckpointError(
                    f"checkpoint {path}: {key} holds values beyond float32 "
                    f"(up to {np.abs(value).max():g}; at most {F32_MAX:.3g})"
                )
            if name == "observed" and not missing and range_problem(*value):
                raise CheckpointError(f"checkpoint {path}: {key} {value.tolist()} {range_problem(*value)}")
            if name == "var" and (value < 0).any():
                raise CheckpointError(f"checkpoint {path}: {key} holds negative values; a variance is >= 0")
            parts[name] = value
        layer.load_state(parts)
    return layers
