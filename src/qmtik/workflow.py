"""The steps of each qmtik command, as library functions: what the command line calls, one
call a command (mostly), so a script can do what a command does without its text.

They take paths and plain values and raise the package's own exceptions; nothing here prints.
Where an output goes by default is paths.py's business; refusing an output before any work
(a folder, a same-file clash) is the command line's, before it calls in here.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .budget import check_config as check_budget
from .c_check import check, code_size, find_compiler
from .config import DIGITS_STARTER, Config
from .config_docs import starter_toml
from .data import class_names_of, data_name, load_data, load_named_or_path, read_inputs
from .errors import CheckpointError, ModelFormatError, UsageError
from .export_c import export_c
from .head import classes as predicted_classes
from .integer_model import QuantizedModel, memory_needs
from .network import Network
from .output_files import write_atomic, write_json
from .parsing import read_input
from .progress import Reporter
from .qmtfile import MAGIC, decode, load_model, save_model
from .validate import check_inputs, encode_targets

# --- either file: a .qmt integer model or a training checkpoint ---------------------------------


def load_any(path) -> QuantizedModel | Network:
    """A QuantizedModel from a .qmt file, or a Network from a training checkpoint, told apart
    by their first bytes (a name ending in .qmt counts as a .qmt, so that its reader names
    what is wrong with it). A FIFO or a pipe (/dev/stdin) is read once, bounded by the stream
    limit, and told apart by the bytes read: a probe would use up the bytes it looks at."""
    if _is_fifo(path):
        blob = read_input(path, f"model file {path}", ModelFormatError)
        if blob[: len(MAGIC)] == MAGIC or str(path).endswith(".qmt"):
            return decode(blob, str(path))
        raise CheckpointError(f"checkpoint {path}: a FIFO or pipe; a checkpoint is read from a regular file")
    try:
        with open(path, "rb") as f:
            start = f.read(len(MAGIC))
    except OSError:
        start = b""
    return load_model(path) if start == MAGIC or str(path).endswith(".qmt") else Network.load(path)


def _is_fifo(path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def load_network(path) -> Network:
    """A training checkpoint; a .qmt here is refused (UsageError) with a message that says what it is."""
    model = load_any(path)
    if isinstance(model, QuantizedModel):
        raise UsageError(f"{path} is an integer model (.qmt); this command needs a training checkpoint")
    return model


def load_integer_model(path) -> QuantizedModel:
    """The integer model of either file: a .qmt as it is, a checkpoint quantized."""
    return integer_model(load_any(path))


def integer_model(model: QuantizedModel | Network) -> QuantizedModel:
    """The integer model of what load_any gave: a QuantizedModel as it is, a Network quantized."""
    return model.quantize() if isinstance(model, Network) else model


def inputs_of(model) -> int:
    """Inputs of an integer model or a network."""
    return model.inputs if isinstance(model, QuantizedModel) else model.config.network.inputs


def outputs_of(model) -> int:
    """Outputs of an integer model or a network."""
    return model.outputs if isinstance(model, QuantizedModel) else model.config.network.outputs


def task_of(model) -> str:
    """'classification' or 'regression', of an integer model or a network."""
    return model.task if isinstance(model, QuantizedModel) else model.config.task


def class_names_of_model(model) -> tuple | list | None:
    """The class names an integer model or a network carries (None without)."""
    return model.class_names if isinstance(model, QuantizedModel) else model.class_names_


def classes_of(model, x) -> np.ndarray:
    """Class indices a model or network predicts (never names)."""
    if isinstance(model, QuantizedModel):
        return model.predict_index(x)
    return predicted_classes(model.decision_function(x))


def load_inputs(spec: str, model, labels: str = "", label_column: int = -1):
    """(x, y) of DATA (a named set such as 'digits:test', or a file) for model, its inputs
    checked against the model's width; errors name the data."""
    x, y = load_named_or_path(
        spec,
        labels,
        label_column=label_column,
        inputs=inputs_of(model),
        outputs=outputs_of(model),
        task=task_of(model),
    )
    return check_inputs(x, inputs_of(model), f"{data_name(spec, labels)}: inputs"), y


# --- train, quantize, describe ----------------------------------------------------------------


def write_starter(path) -> None:
    """The commented starter config (digits) at path."""
    write_atomic(path, lambda f: f.write(starter_toml(DIGITS_STARTER).encode()))


@dataclass
class TrainingRun:
    """What train() did: the fitted network, the files written in order, the test figures."""

    network: Network
    written: list = field(default_factory=list)
    test: dict | None = None  # net.evaluate() on the config's test data, when it names some


def train(
    config: Config,
    checkpoint,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    history=None,
    qmt=None,
    curves=None,
    init=None,
) -> TrainingRun:
    """Train the network config describes on its data, saving the checkpoint after every epoch
    (resume=True goes on from it); then write the history (JSON), the integer model (.qmt) and
    the training curves (PNG) where given, and evaluate on the config's test data. Bad test
    data is refused before training, not after. init (a checkpoint) is where the weights
    start (init_from says which ones fit). A network that exceeds the config's [deploy]
    budgets is refused from its topology alone, before any data is read (budget.py)."""
    if init is not None and resume:
        raise UsageError("--init starts a run from other weights and --resume goes on from this one; give one")
    start = None
    if init is not None:
        config, start = init_from(config, init)
    check_budget(config)
    (x, y), test = load_data(config)
    if test is not None:
        check_inputs(test[0], config.network.inputs, "test inputs")
        encode_targets(test[1], config.task, config.network.outputs, len(test[0]), "test labels")
    net = Network(config).fit(
        x, y, class_names=class_names_of(config), checkpoint=checkpoint, resume=resume, reporter=reporter, init=start
    )
    run = TrainingRun(net, [checkpoint])
    if history:
        write_json(history, net.history_)
        run.written.append(history)
    if qmt:
        save_model(qmt, net.quantize())
        run.written.append(qmt)
    if curves:
        from .plots import plot_history

        plot_history(net.history_, curves, config.task)
        run.written.append(curves)
    if test is not None:
        run.test = net.evaluate(*test)
    return run


def quantize_checkpoint(checkpoint, out, calibrate=None, observer="minmax", samples=None) -> QuantizedModel:
    """The integer model of a training checkpoint, saved as a .qmt file at out. With calibrate
    (DATA), post-training quantization: every layer's activation range chosen from DATA by
    observer (calibrate.py); a float checkpoint without observed ranges needs it."""
    from .calibrate import calibrate as calibrate_ranges
    from .calibrate import needs_calibration

    net = load_network(checkpoint)
    if calibrate:
        calibrate_ranges(net, load_inputs(calibrate, net)[0], observer, samples)
    elif needs_calibration(net):
        raise UsageError(
            f"checkpoint {checkpoint} holds float weights without observed activation ranges (an import); "
            f"calibrate them: qmtik quantize {checkpoint} --calibrate DATA"
        )
    model = net.quantize()
    save_model(out, model)
    return model


def init_from(config: Config, checkpoint) -> tuple[Config, list]:
    """(config, layers) to start training from a checkpoint's weights (train --init): its
    topology must be the config's, and so its input range (an import's first layer takes it
    in): the config's data.input_range 'auto' becomes the checkpoint's."""
    from .checkpoint import load as load_checkpoint

    state = load_checkpoint(checkpoint)
    saved = state["config"].network
    if saved.shapes != config.network.shapes or saved.leaky_slope != config.network.leaky_slope:
        raise UsageError(
            f"--init {checkpoint}: its network (layers, shapes, activations) differs from the config's; "
            "start from a checkpoint of the same topology"
        )
    wanted = config.data.input_range
    if wanted == "auto":
        config = config.replace("data.input_range", list(state["input_range"]))
    elif tuple(float(v) for v in wanted) != tuple(state["input_range"]):
        raise UsageError(
            f"--init {checkpoint}: its input range {list(state['input_range'])} differs from the config's "
            f"data.input_range {list(wanted)}; its first layer takes that range in"
        )
    return config, state["layers"]


def describe_file(path) -> tuple[QuantizedModel, str]:
    """(integer model, its description) of either file; a .qmt's description gives its size."""
    model = load_any(path)
    if isinstance(model, Network):
        model = model.quantize()
        return model, model.info()
    return model, model.info(Path(path).stat().st_size)


def draw_layers(model: QuantizedModel, picture, data: str | None = None) -> None:
    """Each layer's int8 weights, and its activations on DATA when given, drawn to picture."""
    from .plots import plot_layers

    plot_layers(model, picture, load_inputs(data, model)[0] if data else None)


# --- export and check the C header --------------------------------------------------------------


def write_header(model: QuantizedModel, out, prefix: str) -> int:
    """The model as one C header at out, its names prefixed; returns its size in bytes."""
    text = export_c(model, prefix).encode()
    write_atomic(out, lambda f: f.write(text))
    return len(text)


def header_needs(model: QuantizedModel, prefix: str) -> dict:
    """What the header needs on a device: {'compiled': True, 'code', 'constants', 'scratch',
    'stack'} from the local compiler (-Os, the header compiled whole), or, without one,
    {'compiled': False, 'constants', 'scratch'} from the model alone."""
    sizes = code_size(model, prefix=prefix)
    if sizes is None:
        needs = memory_needs(model)
        return {"compiled": False, "constants": needs["constants"], "scratch": needs["scratch"]}
    return {"compiled": True, **sizes}


def check_header(model: QuantizedModel, x, prefix: str) -> dict | None:
    """c_check.check of the header on inputs x (scores, classes and input codes compared with
    the spec), or None when no C compiler is found."""
    if find_compiler() is None:
        return None
    return check(model, x, prefix)


# --- evaluate and predict -----------------------------------------------------------------------


@dataclass
class Evaluation:
    """A model's figures on some data, with what they were computed from."""

    model: QuantizedModel | Network
    x: np.ndarray
    y: np.ndarray
    task: str
    figures: dict


def evaluate(model_path, data: str | None = None, labels: str = "", label_column: int = -1) -> Evaluation:
    """Accuracy (classification) or error (regression) of either file on DATA; without DATA, on
    the checkpoint's config's test data (a .qmt carries none: UsageError)."""
    model = load_any(model_path)
    task = task_of(model)
    if data:
        x, y = load_named_or_path(
            data,
            labels,
            label_column=label_column,
            inputs=inputs_of(model),
            outputs=outputs_of(model),
            task=task,
        )
    elif isinstance(model, QuantizedModel):
        raise UsageError(f"{model_path} is an integer model and carries no data; give DATA, such as digits:test")
    else:
        d = model.config.data
        if not (d.dataset or d.test):
            raise UsageError("the checkpoint's config names no test data; give DATA (or --data DATA)")
        _, (x, y) = load_data(model.config)
    source = data_name(data, labels) if data else "the config's test data"
    check_inputs(x, inputs_of(model), f"{source}: inputs")  # errors name the data
    encode_targets(y, task, outputs_of(model), len(x), f"{source}: labels")
    return Evaluation(model, x, y, task, model.evaluate(x, y))


def draw_confusion(evaluation: Evaluation, picture) -> None:
    """The confusion matrix of a classification evaluation, drawn to picture."""
    from .plots import plot_confusion

    e = evaluation
    labels = np.asarray(e.y).astype(np.int64)
    plot_confusion(labels, classes_of(e.model, e.x), picture, class_names_of_model(e.model))


def predict_file(model_path, input_path) -> np.ndarray:
    """Either file's predictions (classes, or values) for the samples of an .npy or .csv file."""
    model = load_any(model_path)
    return model.predict(check_inputs(read_inputs(input_path), inputs_of(model), f"input file {input_path}"))


def prediction_lines(predictions) -> str:
    """One prediction per line; regression rows as comma-separated values."""
    rows = np.asarray(predictions).reshape(len(predictions), -1)
    return "".join(
        ",".join(f"{v:.7g}" if isinstance(v, float) else str(v) for v in row.tolist()) + "\n" for row in rows
    )


def write_predictions(out, predictions) -> None:
    """Predictions as an .npy file (by out's suffix), else as text, one per line."""
    if Path(out).suffix == ".npy":
        write_atomic(out, lambda f: np.save(f, predictions, allow_pickle=False))
    else:
        write_atomic(out, lambda f: f.write(prediction_lines(predictions).encode()))


# --- the C library's models ---------------------------------------------------------------------


@dataclass
class CConversion:
    """A model stored by the C library, converted: the integer model, the widths its header
    gives, and (when checked on data) how it agrees with the C library's own arithmetic."""

    model: QuantizedModel
    widths: tuple
    agreement: dict | None = None


def convert_c_model(model_path, header_path, check_data: str | None = None) -> CConversion:
    """The integer model of a model file the C library qmtik.h stored, built with the config
    header at header_path; with check_data (DATA), compared with the C library's arithmetic
    on it (c_agreement). Nothing is written: qmtfile.save_model writes the result."""
    from .legacy import load_c_model, read_header

    header = read_header(header_path)
    c_model = load_c_model(model_path, header)
    model = c_model.to_quantized_model()
    converted = CConversion(model, header.widths)
    if check_data:
        x, y = load_inputs(check_data, model)
        converted.agreement = c_agreement(c_model, model, x, y)
    return converted


def c_agreement(c_model, model: QuantizedModel, x, y) -> dict:
    """How a model carried over from the C library (legacy.CLibraryModel) agrees with its
    integer conversion on inputs x with labels y: {'samples', 'equal' (classes equal),
    'c_accuracy', 'accuracy'}."""
    c_classes, q_classes = c_model.predict(model.quantize_inputs(x)), model.predict_index(x)
    labels = np.asarray(y).astype(np.int64)
    return {
        "samples": len(x),
        "equal": int((c_classes == q_classes).sum()),
        "c_accuracy": float((c_classes == labels).mean()),
        "accuracy": float((q_classes == labels).mean()),
    }
