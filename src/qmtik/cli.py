"""The command line: a thin shell over the library. Errors print one line on stderr and exit
2 (usage and config) or 1 (everything else), never a traceback. What a command says goes to
stdout, or to stderr when one of its outputs goes to stdout (-o /dev/stdout): see say()."""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .c_check import check, code_size, find_compiler
from .config import DIGITS_STARTER, NAMED_DATASETS, load_config, parse_override
from .config_docs import starter_toml
from .data import (
    C_LIBRARY_SPLIT,
    CONVERT_TO,
    class_names_of,
    convert_file,
    data_name,
    load_data,
    load_named_or_path,
    read_inputs,
)
from .errors import CheckFailed, ConfigError, PlotError, QmtikError, UsageError
from .export_c import ExportError, check_prefix, export_c, prefix_from_name
from .files import (
    OutputError,
    check_distinct,
    check_rewritable,
    check_writable,
    goes_to_stdout,
    write_atomic,
    write_json,
    writes_through,
)
from .head import classes as predicted_classes
from .model import QuantizedModel, memory_needs
from .network import Network
from .progress import Reporter
from .qmtfile import MAGIC, load_model, save_model
from .validate import check_inputs, encode_targets

TRAIN_FLAGS = {  # command-line flag -> config key
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "learning_rate": "training.learning_rate",
    "optimizer": "training.optimizer",
    "float_epochs": "training.float_epochs",
    "seed": "training.seed",
}


class Console:
    """Where the command line's own text goes (progress, figures, 'wrote ...'): stdout, unless
    an output of the command goes there (output_path notes it), when it goes to stderr, so
    that `qmtik quantize c.ckpt.npz -o /dev/stdout > m.qmt` holds the model and nothing else.
    main() resets it for each command."""

    stdout_taken = False

    @classmethod
    def stream(cls):
        return sys.stderr if cls.stdout_taken else sys.stdout


def say(text: str) -> None:
    """Print one line of the command's own text where Console sends it."""
    print(text, file=Console.stream())


def output_path(path, *, replaces_run: bool = False) -> Path:
    """An output path from the command line, refused (as usage, exit 2) before any work: a
    missing folder, a folder, a socket, a read-only file (files.check_writable), and the
    checkpoint of an unfinished training run, which only train's own -o may replace (with
    --resume or --force: replaces_run). An output that goes to stdout sends the command's
    text to stderr (Console)."""
    try:
        path = check_writable(path)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    if not replaces_run and unfinished_run(path):
        raise UsageError(
            f"output {path}: holds an unfinished training run (qmtik train --resume goes on from "
            "it), which qmtik does not overwrite; give another path"
        )
    if goes_to_stdout(path):
        Console.stdout_taken = True
    return path


STDOUT = ("standard output", "/dev/stdout")  # where every command prints: an output too


def distinct(inputs, outputs) -> None:
    """Refuse (as usage, exit 2, before any work) an output that is the same file as an input
    or another output of the command; (name, path) pairs, None paths left out. Standard output
    is an output of every command (`qmtik predict m.qmt in.csv >> in.csv`), compared with the
    inputs only: a file the shell opened for it holds nothing of ours to lose."""
    try:
        check_distinct(inputs, outputs)
        if not Console.stdout_taken:  # else an output is stdout, checked just now
            check_distinct(inputs, [STDOUT])
    except OutputError as exc:
        raise UsageError(str(exc)) from None


def data_file(spec):
    """The file a DATA argument names, or None for a named data set ('digits:test') or none."""
    return spec if spec and spec.partition(":")[0] not in NAMED_DATASETS else None


def unfinished_run(path) -> bool:
    """Whether path is a checkpoint of a run that has not finished: it holds 'resume.epoch'
    (see checkpoint.save). Only the zip's table of contents is read, so a damaged or foreign
    file is not one, and a FIFO or device is not opened."""
    if not os.path.isfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "resume.epoch.npy" in archive.namelist()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return False


def size_of(written) -> str:
    """' (N bytes)' for a file just written; '' for a device, FIFO or descriptor written through."""
    return "" if writes_through(written) else f" ({Path(written).stat().st_size:,} bytes)"


def default_checkpoint(config_path) -> Path:
    """digits.toml -> digits.ckpt.npz, beside the config."""
    return Path(config_path).with_suffix(".ckpt.npz")


def history_path(checkpoint) -> Path:
    """digits.ckpt.npz -> digits.history.json, beside the checkpoint."""
    name = Path(checkpoint).name
    for suffix in (".npz", ".ckpt"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return Path(checkpoint).with_name(name + ".history.json")


def qmt_path(checkpoint) -> Path:
    """digits.ckpt.npz -> digits.qmt, beside the checkpoint."""
    return history_path(checkpoint).with_name(history_path(checkpoint).name[: -len(".history.json")] + ".qmt")


def load_any(path):
    """A QuantizedModel from a .qmt file, or a Network from a training checkpoint, told apart
    by their first bytes (not their names)."""
    try:
        with open(path, "rb") as f:
            start = f.read(len(MAGIC))
    except OSError:
        start = b""
    return load_model(path) if start == MAGIC or str(path).endswith(".qmt") else Network.load(path)


def load_checkpoint(path) -> Network:
    """A training checkpoint; a .qmt here gets a message that says what it is."""
    model = load_any(path)
    if isinstance(model, QuantizedModel):
        raise UsageError(f"{path} is an integer model (.qmt); this command needs a training checkpoint")
    return model


def _width(model, outputs: bool = False) -> int:
    """Inputs (or outputs) of an integer model or a network."""
    if isinstance(model, QuantizedModel):
        return model.outputs if outputs else model.inputs
    return model.config.network.outputs if outputs else model.config.network.inputs


def figures_line(result: dict, task: str) -> str:
    """One line of evaluation figures."""
    arithmetic = "int8 arithmetic" if result["int8"] else "float arithmetic"
    if task == "classification":
        return (
            f"accuracy {100 * result['accuracy']:.2f}% on {result['samples']} samples ({arithmetic}), "
            f"{result['cost'].replace('_', ' ')} {result['loss']:.4f}"
        )
    return f"mse {result['mse']:.6g}, mae {result['mae']:.6g} on {result['samples']} samples ({arithmetic})"


def plot_path(requested, default: Path) -> Path | None:
    """Where --plot writes (None when not asked), refused before any work when matplotlib is
    missing or the folder does not exist."""
    if requested is None:
        return None
    from .plots import check_plot_path

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from .plots import MISSING

        raise PlotError(MISSING) from None
    path = output_path(requested or default)
    try:
        check_plot_path(path)
    except PlotError as exc:
        raise UsageError(str(exc)) from None
    return path


def classes_of(model, x) -> np.ndarray:
    """Class indices a model or network predicts (never names)."""
    if isinstance(model, QuantizedModel):
        return model.predict_index(x)
    return predicted_classes(model.decision_function(x))


# --- commands ----------------------------------------------------------------------------------


def cmd_init(args) -> int:
    path = Path(args.path)
    if path.exists() and not writes_through(path) and not args.force:  # a device is no file to lose
        raise UsageError(f"{path} already exists; pass --force to overwrite it")
    output_path(path)
    write_atomic(path, lambda f: f.write(starter_toml(DIGITS_STARTER).encode()))
    say(f"wrote {path}" if writes_through(path) else f"wrote {path}; train with: qmtik train {path}")
    return 0


def cmd_train(args) -> int:
    if args.resume and args.force:
        raise UsageError("--resume goes on from the checkpoint and --force starts over; give one of them")
    overrides = dict(parse_override(text) for text in args.set)
    overrides.update({key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None})
    config = load_config(args.config, overrides)
    out = output_path(args.out if args.out else default_checkpoint(args.config), replaces_run=True)
    try:
        check_rewritable(out)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    qmt = output_path(args.qmt) if args.qmt else None
    streamed = writes_through(out)  # -o /dev/null: no file to put the history beside
    history = None if streamed else output_path(history_path(out))
    if streamed and args.plot == "":
        raise UsageError(f"--plot needs a path: the checkpoint goes to {out}, which has nothing beside it")
    curves = plot_path(
        args.plot, history_path(out).with_name(history_path(out).name.replace(".history.json", ".curves.png"))
    )
    distinct(
        [("the config", args.config), *config.data.paths()],
        [("output", out), ("the history", history), ("--qmt", qmt), ("--plot", curves)],
    )
    if not (args.resume or args.force) and unfinished_run(out):
        raise UsageError(
            f"checkpoint {out} holds an unfinished run; pass --resume to go on from it, or --force "
            "to start over and overwrite it"
        )
    (x, y), test = load_data(config)
    if test is not None:  # refuse bad test data now, not after training
        check_inputs(test[0], config.network.inputs, "test inputs")
        encode_targets(test[1], config.task, config.network.outputs, len(test[0]), "test labels")
    reporter = Reporter(Console.stream(), quiet=args.quiet, task=config.task)
    net = Network(config).fit(
        x, y, class_names=class_names_of(config), checkpoint=out, resume=args.resume, reporter=reporter
    )
    written = [out]
    if history:
        write_json(history, net.history_)
        written.append(history)
    if qmt:
        save_model(qmt, net.quantize())
        written.append(qmt)
    if curves:
        from .plots import plot_history

        plot_history(net.history_, curves, config.task)
        written.append(curves)
    best = net.history_["best_epoch"]
    if best is not None and not args.quiet:
        say(f"kept epoch {best} of {config.training.epochs}")
    if test is not None:
        say("test " + figures_line(net.evaluate(*test), config.task))
    say("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_quantize(args) -> int:
    out = output_path(args.out if args.out else qmt_path(args.checkpoint))
    distinct([("the checkpoint", args.checkpoint)], [("output", out)])
    model = load_checkpoint(args.checkpoint).quantize()
    save_model(out, model)
    say(f"wrote {out}{size_of(out)}")
    return 0


def cmd_info(args) -> int:
    picture = plot_path(args.plot, Path(Path(args.model).name.split(".")[0] + ".layers.png"))
    if args.data and picture is None:
        raise UsageError("--data goes with --plot: the activations are drawn on that data")
    distinct([("the model", args.model), ("--data", data_file(args.data))], [("--plot", picture)])
    model = load_any(args.model)
    if isinstance(model, Network):
        model = model.quantize()
        say(model.info())
    else:
        say(model.info(Path(args.model).stat().st_size))
    if picture:
        from .plots import plot_layers

        x = None
        if args.data:
            x, _ = load_named_or_path(args.data, "", inputs=model.inputs, outputs=model.outputs, task=model.task)
            x = check_inputs(x, model.inputs, f"{data_name(args.data)}: inputs")
        plot_layers(model, picture, x)
        say(f"wrote {picture}")
    return 0


def cmd_export_c(args) -> int:
    out = output_path(args.out if args.out else Path(args.model).name.split(".")[0] + ".h")
    distinct(
        [("the model", args.model), ("--check", data_file(args.check)), ("--labels", args.labels)], [("output", out)]
    )
    prefix = args.prefix if args.prefix is not None else prefix_from_name(out.name)
    try:
        check_prefix(prefix)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    model = load_any(args.model)
    if isinstance(model, Network):
        model = model.quantize()
    if args.check:  # read and check DATA first: nothing is written on a bad one
        x, _ = load_named_or_path(
            args.check,
            args.labels or "",
            label_column=args.label_column,
            inputs=model.inputs,
            outputs=model.outputs,
            task=model.task,
        )
        x = check_inputs(x, model.inputs, f"{data_name(args.check, args.labels or '')}: inputs")
    text = export_c(model, prefix)
    write_atomic(out, lambda f: f.write(text.encode()))
    say(f"wrote {out} ({len(text.encode()):,} bytes), prefix {prefix}")
    if args.report:
        sizes = code_size(model, prefix=prefix)  # the very header written, compiled whole
        if sizes is None:
            say(
                "report: no C compiler found, so the code size is unknown; constants "
                f"{memory_needs(model)['constants']:,} bytes, scratch {memory_needs(model)['scratch']:,} bytes"
            )
        else:
            say(
                f"flash: {sizes['code'] + sizes['constants']:,} bytes (code {sizes['code']:,}, constants "
                f"{sizes['constants']:,}; local compiler, -Os); RAM: {sizes['scratch'] + sizes['stack']:,} bytes "
                f"(scratch {sizes['scratch']:,}, stack {sizes['stack']:,})"
            )
    if args.check:
        if find_compiler() is None:
            say("check: no C compiler found ($CC, gcc, cc, clang); nothing was compared")
            return 0
        result = check(model, x, prefix)
        bad = result["mismatched_samples"]
        say(
            f"check: {result['samples']} samples, {result['score_mismatches']} score, {result['class_mismatches']} "
            f"class and {result['input_mismatches']} input-code mismatches between C and Python"
            + (" (under ASan and UBSan)" if result["sanitized"] else "")
        )
        if bad:
            raise CheckFailed(f"the compiled header disagrees with Python on {bad} samples")
    return 0


def cmd_eval(args) -> int:
    picture = plot_path(args.plot, Path(Path(args.model).name.split(".")[0] + ".confusion.png"))
    data = args.data or args.data_option
    distinct(
        [("the model", args.model), ("the data", data_file(data)), ("--labels", args.labels)], [("--plot", picture)]
    )
    model = load_any(args.model)
    task = model.task if isinstance(model, QuantizedModel) else model.config.task
    if data:
        x, y = load_named_or_path(
            data,
            args.labels or "",
            label_column=args.label_column,
            inputs=_width(model),
            outputs=_width(model, outputs=True),
            task=task,
        )
    elif isinstance(model, QuantizedModel):
        raise UsageError(f"{args.model} is an integer model and carries no data; give DATA, such as digits:test")
    else:
        d = model.config.data
        if not (d.dataset or d.test):
            raise UsageError("the checkpoint's config names no test data; give DATA (or --data DATA)")
        _, (x, y) = load_data(model.config)
    source = data_name(data, args.labels or "") if data else "the config's test data"
    check_inputs(x, _width(model), f"{source}: inputs")  # errors name the data
    encode_targets(y, task, _width(model, outputs=True), len(x), f"{source}: labels")
    if picture and task != "classification":
        raise UsageError("--plot draws a confusion matrix, which needs a classification model")
    result = model.evaluate(x, y)
    say(json.dumps(result) if args.json else figures_line(result, task))
    if picture:
        from .plots import plot_confusion

        names = model.class_names if isinstance(model, QuantizedModel) else model.class_names_
        plot_confusion(np.asarray(y).astype(np.int64), classes_of(model, x), picture, names)
        print(f"wrote {picture}", file=sys.stderr if args.json else Console.stream())
    return 0


def cmd_predict(args) -> int:
    out = output_path(args.out) if args.out else None
    distinct([("the model", args.model), ("the input", args.input)], [("output", out)])
    model = load_any(args.model)
    x = check_inputs(read_inputs(args.input), _width(model), f"input file {args.input}")
    predictions = model.predict(x)
    if out:
        if out.suffix == ".npy":
            write_atomic(out, lambda f: np.save(f, predictions, allow_pickle=False))
        else:
            write_atomic(out, lambda f: f.write(_as_lines(predictions).encode()))
        say(f"wrote {len(predictions)} predictions to {out}")
    else:
        sys.stdout.write(_as_lines(predictions))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out}: exists and is not a folder")
    figures = run_demo(args.dataset, out)
    check = figures["c_check"]
    if check and check["mismatched_samples"]:
        raise CheckFailed("the compiled header disagrees with Python (see the table above)")
    return 0


def cmd_config_from_header(args) -> int:
    from .c_library import header_toml

    out = output_path(args.out) if args.out else None
    distinct([("the header", args.header)], [("output", out)])
    text = header_toml(args.header)
    if out:
        write_atomic(out, lambda f: f.write(text.encode()))
        say(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_import_c_model(args) -> int:
    from .c_library import load_c_model, read_header

    out = output_path(args.out)
    distinct(
        [("the model", args.model), ("--header", args.header), ("--check", data_file(args.check))], [("output", out)]
    )
    header = read_header(args.header)
    c_model = load_c_model(args.model, header)
    model = c_model.to_quantized_model()
    if args.check:  # compare before writing: nothing is written on a bad DATA
        x, y = load_named_or_path(args.check, "", inputs=model.inputs, outputs=model.outputs, task=model.task)
        x = check_inputs(x, model.inputs, f"{data_name(args.check)}: inputs")
        c_classes, q_classes = c_model.predict(model.quantize_inputs(x)), model.predict_index(x)
        labels = np.asarray(y).astype(np.int64)
        say(
            f"check: {int((c_classes == q_classes).sum())} of {len(x)} classes equal between the C library's "
            f"arithmetic and the integer model; accuracy {100 * float((c_classes == labels).mean()):.2f}% "
            f"(C library) and {100 * float((q_classes == labels).mean()):.2f}% (integer model)"
        )
    save_model(out, model)
    widths = "-".join(map(str, header.widths))
    say(f"wrote {out}{size_of(out)}, {widths}, from {args.model}")
    return 0


def cmd_data_get(args) -> int:
    from .download import get_dataset  # urllib loads only for this command

    directory = get_dataset(args.name, directory=args.dir, base_url=args.url)
    say(f"{args.name}: {directory}")
    return 0


def cmd_data_convert(args) -> int:
    out = Path(args.out) if args.out else Path(Path(args.input).name.split(".")[0])
    if out.name in ("", ".", ".."):
        raise UsageError(f"output {args.out or args.input}: needs a file name to write OUT_train and OUT_test as")
    outputs = [output_path(path) for path in convert_outputs(out, args.to, args.split)]
    distinct([("the input", args.input), ("--labels", args.labels)], [("output", path) for path in outputs])
    written = convert_file(
        args.input,
        args.to,
        out,
        labels_path=args.labels or "",
        label_column=args.label_column,
        split=args.split,
        input_range=args.input_range,
        outputs=args.outputs,
    )
    for path, samples, classes in written:
        size = "" if writes_through(path) else f", {path.stat().st_size:,} bytes"
        say(f"wrote {path} ({samples} samples of {classes} classes{size})")
    return 0


def convert_outputs(out: Path, to: str, split: float) -> list[Path]:
    """The files `data convert` writes for OUT, named as data.convert_file names them: OUT.npz
    or OUT.bin, or OUT_train and OUT_test with a split."""
    suffix = ".npz" if to == "npz" else ".bin"
    stems = [out.name] if split == 1 else [out.name + "_train", out.name + "_test"]
    return [out.with_name(stem + suffix) for stem in stems]


def _as_lines(predictions) -> str:
    """One prediction per line; regression rows as comma-separated values."""
    rows = predictions.reshape(len(predictions), -1)
    return "".join(
        ",".join(f"{v:.7g}" if isinstance(v, float) else str(v) for v in row.tolist()) + "\n" for row in rows
    )


# --- parser ------------------------------------------------------------------------------------


def add_plot_option(parser, what: str, default: str) -> None:
    """--plot [PNG]: draw `what` (the [plot] extra), to PNG or the default path."""
    parser.add_argument(
        "--plot",
        nargs="?",
        const="",
        metavar="PNG",
        help=f"draw {what} (needs the [plot] extra: pip install 'qmtik[plot]'); default: {default}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmtik", description="Train small networks with int8 fake quantization and run them in integer arithmetic."
    )
    parser.add_argument("--version", action="version", version=f"qmtik {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write a commented starter config")
    p.add_argument("path", nargs="?", default="qmtik.toml", help="where to write it (default: qmtik.toml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("train", help="train a network with fake quantization; writes a checkpoint")
    p.add_argument("config", help="the network's TOML config")
    p.add_argument("-o", "--out", help="checkpoint path (default: beside the config, CONFIG.ckpt.npz)")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--batch-size", type=int, help="override training.batch_size")
    p.add_argument("--learning-rate", type=float, help="override training.learning_rate")
    p.add_argument("--optimizer", help="override training.optimizer")
    p.add_argument("--float-epochs", type=int, help="override training.float_epochs")
    p.add_argument("--seed", type=int, help="override training.seed")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (a key, not a whole section), such as --set network.hidden=[64,32] (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="go on from the checkpoint of an interrupted run")
    p.add_argument(
        "--force",
        action="store_true",
        help="start over, overwriting the checkpoint of an unfinished run (without it, train refuses to)",
    )
    p.add_argument("--qmt", metavar="PATH", help="also write the integer model (.qmt) there")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    add_plot_option(p, "the training curves", "beside the checkpoint, NAME.curves.png")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("quantize", help="turn a training checkpoint into an integer model file (.qmt)")
    p.add_argument("checkpoint", help="a checkpoint written by qmtik train")
    p.add_argument("-o", "--out", help="where to write it (default: beside the checkpoint, NAME.qmt)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("info", help="topology, sizes, scales and memory needs of a model")
    p.add_argument("model", help="a .qmt model or a training checkpoint")
    add_plot_option(
        p, "each layer's int8 weights (and activations on --data) with the share clipped", "NAME.layers.png, here"
    )
    p.add_argument("--data", help="data whose activations --plot draws (as eval's DATA)")
    p.set_defaults(func=cmd_info)

    data_help = (
        "a named set ('digits', 'mnist', 'fashion-mnist'; their test part, or 'NAME:train'), or a file: "
        ".npz (x, y), .npy or IDX inputs with --labels, .csv, qmtik-bin .bin "
        "(default for a checkpoint: its config's test data)"
    )
    p = sub.add_parser("eval", help="accuracy (classification) or error (regression) of a model")
    p.add_argument("model", help="a .qmt model or a training checkpoint")
    p.add_argument("data", nargs="?", help=data_help)
    p.add_argument("--data", dest="data_option", help=argparse.SUPPRESS)
    p.add_argument("--labels", help="labels (.npy or IDX) when DATA is an .npy or IDX file of inputs")
    p.add_argument("--label-column", type=int, default=-1, help="the label's column in a .csv (default: the last)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_plot_option(p, "the confusion matrix", "NAME.confusion.png, here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export-c", help="write the model as one dependency-free C header")
    p.add_argument("model", help="a .qmt model or a training checkpoint")
    p.add_argument("-o", "--out", help="the header to write (default: MODEL's name with .h, here)")
    p.add_argument("--prefix", help="prefix of the header's names (default: the header's file name)")
    p.add_argument("--report", action="store_true", help="compile it and report the flash and RAM it needs")
    p.add_argument("--check", metavar="DATA", help="compile it and confirm identical outputs on DATA")
    p.add_argument("--labels", help=argparse.SUPPRESS)
    p.add_argument("--label-column", type=int, default=-1, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_export_c)

    p = sub.add_parser("predict", help="classes (or values) of the samples in a file")
    p.add_argument("model", help="a .qmt model or a training checkpoint")
    p.add_argument("input", help="samples: an .npy, or a .csv of numbers (one sample per row)")
    p.add_argument("-o", "--out", help="write the predictions to this .npy or text file instead of printing them")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="train, quantize, evaluate, export and check a network, end to end")
    p.add_argument(
        "--dataset",
        choices=("mnist", "fashion-mnist", "digits"),
        help="default: mnist when cached or downloadable, else the bundled digits",
    )
    p.add_argument("-o", "--out", default="qmtik-demo", help="folder for what it writes (default: qmtik-demo)")
    p.set_defaults(func=cmd_demo)

    cfg = sub.add_parser("config", help="carry a config over from the C library qmtik.h")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = cfg_sub.add_parser("from-header", help="the qmtik config equivalent to a qmtik.h config header")
    p.add_argument("header", help="the C library's qmtik_config.h")
    p.add_argument("-o", "--out", help="write the TOML here instead of printing it")
    p.set_defaults(func=cmd_config_from_header)

    p = sub.add_parser("import-c-model", help="convert a model stored by the C library qmtik.h to a .qmt")
    p.add_argument("model", help="the C library's model file (its raw int8 arrays)")
    p.add_argument("--header", required=True, help="the qmtik_config.h it was built with")
    p.add_argument("-o", "--out", required=True, help="the .qmt to write")
    p.add_argument(
        "--check",
        metavar="DATA",
        help="compare the converted model with the C library's own "
        "arithmetic on DATA (a qmtik-bin .bin, a named set, ...)",
    )
    p.set_defaults(func=cmd_import_c_model)

    data = sub.add_parser("data", help="fetch the standard data sets; convert data files")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("get", help="download mnist or fashion-mnist, checksums verified, into the cache")
    p.add_argument("name", choices=("mnist", "fashion-mnist"), help="the data set")
    p.add_argument("--dir", help="keep the files here instead of qmtik's cache folder (~/.cache/qmtik/NAME on Linux)")
    p.add_argument(
        "--url",
        help="fetch from this base URL instead (default: $QMTIK_DATA_URL, else the canonical locations and mirrors)",
    )
    p.set_defaults(func=cmd_data_get)
    p = data_sub.add_parser(
        "convert", help="convert a classification data file, as the C library's mnist_784_data_prep.py did"
    )
    p.add_argument("input", help="a .csv (label in the last column), .npz, .npy or IDX file (with --labels)")
    p.add_argument("--to", required=True, choices=CONVERT_TO, help="qmtik-bin: the C library's samples; npz: x and y")
    p.add_argument(
        "-o",
        "--out",
        help="the output's path without suffix (default: INPUT's name, here); with a split, OUT_train and OUT_test",
    )
    p.add_argument(
        "--split",
        type=float,
        default=C_LIBRARY_SPLIT,
        help=f"share of samples, in file order, for OUT_train (default {C_LIBRARY_SPLIT}; 1: one file)",
    )
    p.add_argument("--labels", help="labels (.npy or IDX) when INPUT is an .npy or IDX file")
    p.add_argument("--label-column", type=int, default=-1, help="the label's column in a .csv (default: the last)")
    p.add_argument(
        "--input-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="raw values mapped to int8 -128..127 (default: 0 255, pixels as pixel - 128)",
    )
    p.add_argument("--outputs", type=int, help="classes (default: the largest label + 1)")
    p.set_defaults(func=cmd_data_convert)
    return parser


def _stdout_gone() -> None:
    """After a reader has gone (qmtik predict ... | head -c1): if stdout is the broken pipe,
    point it at /dev/null, so that Python's flush at exit finds nowhere to fail."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
    except (OSError, ValueError):
        pass


SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a program its reader left


def os_error_line(exc: OSError) -> str:
    """'FILE: what went wrong' of an OSError, or only what went wrong when it names no file."""
    problem = exc.strerror or str(exc)
    return f"{exc.filename}: {problem}" if exc.filename else problem


def main(argv=None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    Console.stdout_taken = False
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that has gone shows here, not at exit
        return code
    except BrokenPipeError:  # | head: as cat and grep do, stop without a word
        _stdout_gone()
        return SIGPIPE_EXIT
    except (ConfigError, UsageError) as exc:
        print(f"qmtik: error: {exc}", file=sys.stderr)
        return 2
    except QmtikError as exc:
        print(f"qmtik: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"qmtik: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qmtik: interrupted (qmtik train --resume goes on from the last checkpoint)", file=sys.stderr)
        return 130
