"""The commands: each checks its outputs (console.py), makes one library call (workflow.py,
mostly) and says what it did. The arguments are argparse's, from parser.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import workflow
from ..c_check import layer_lines
from ..config import load_config, parse_override
from ..data import convert_file
from ..errors import CheckFailed, ExportError, UsageError
from ..export_c import check_prefix, prefix_from_name
from ..output_files import OutputError, check_rewritable, write_atomic, writes_through
from ..paths import convert_outputs, curves_path, default_checkpoint, history_path, made_from, unfinished_run
from ..progress import Reporter
from ..qmtfile import save_model
from .console import Console, data_file, distinct, output_path, plot_path, say, size_of
from .deploy import budgets_of, host_budgets, info_target, on_target, target_of

TRAIN_FLAGS = {  # command-line flag -> config key
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "learning_rate": "training.learning_rate",
    "optimizer": "training.optimizer",
    "float_epochs": "training.float_epochs",
    "seed": "training.seed",
}


def figures_line(result: dict, task: str) -> str:
    """One line of evaluation figures."""
    arithmetic = "int8 arithmetic" if result["int8"] else "float arithmetic"
    if task == "classification":
        return (
            f"accuracy {100 * result['accuracy']:.2f}% on {result['samples']} samples ({arithmetic}), "
            f"{result['cost'].replace('_', ' ')} {result['loss']:.4f}"
        )
    return f"mse {result['mse']:.6g}, mae {result['mae']:.6g} on {result['samples']} samples ({arithmetic})"


def cmd_init(args) -> int:
    """qmtik init [PATH]: the commented starter config; an existing file only with --force."""
    path = Path(args.path)
    if path.exists() and not writes_through(path) and not args.force:  # a device is no file to lose
        raise UsageError(f"{path} already exists; pass --force to overwrite it")
    output_path(path)
    workflow.write_starter(path)
    say(f"wrote {path}" if writes_through(path) else f"wrote {path}; train with: qmtik train {path}")
    return 0


def cmd_train(args) -> int:
    """qmtik train CONFIG: every output refused or accepted first, then workflow.train."""
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
    curves = plot_path(args.plot, curves_path(out))
    distinct(
        [("the config", args.config), ("--init", args.init), *config.data.paths()],
        [("output", out), ("the history", history), ("--qmt", qmt), ("--plot", curves)],
    )
    if not (args.resume or args.force) and unfinished_run(out):
        raise UsageError(
            f"checkpoint {out} holds an unfinished run; pass --resume to go on from it, or --force "
            "to start over and overwrite it"
        )
    reporter = Reporter(Console.stream(), quiet=args.quiet, task=config.task)
    run = workflow.train(
        config, out, resume=args.resume, reporter=reporter, history=history, qmt=qmt, curves=curves, init=args.init
    )
    best = run.network.history_["best_epoch"]
    if best is not None and not args.quiet:
        say(f"kept epoch {best} of {config.training.epochs}")
    if run.test is not None:
        say("test " + figures_line(run.test, config.task))
    say("wrote " + ", ".join(map(str, run.written)))
    return 0


def cmd_info(args) -> int:
    """qmtik info MODEL: its description; --plot draws its layers (on --data)."""
    picture = plot_path(args.plot, made_from(args.model, ".layers.png"))
    if args.data and picture is None:
        raise UsageError("--data goes with --plot: the activations are drawn on that data")
    distinct([("the model", args.model), ("--data", data_file(args.data))], [("--plot", picture)])
    if args.target is not None:  # estimates for a microcontroller (cli/deploy.py)
        return info_target(args.model, target_of(args.target))
    if args.compare or args.compare_plot is not None:
        from .onnx_commands import compare_info

        return compare_info(args)
    model, text = workflow.describe_file(args.model)
    say(text)
    if picture:
        workflow.draw_layers(model, picture, args.data)
        say(f"wrote {picture}")
    return 0


def cmd_export_c(args) -> int:
    """qmtik export-c MODEL: the C header; --report its needs, --check it compiled against Python.

    The steps are separate calls so that each line is said as soon as it is known."""
    out = output_path(args.out if args.out else made_from(args.model, ".h"))
    distinct(
        [("the model", args.model), ("--check", data_file(args.check)), ("--labels", args.labels)], [("output", out)]
    )
    prefix = args.prefix if args.prefix is not None else prefix_from_name(out.name)
    try:
        check_prefix(prefix)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    target_of(args.target)
    loaded = workflow.load_any(args.model)  # once: it may come through a FIFO or a pipe
    target, max_flash, max_ram = budgets_of(args, loaded)  # flags, else a checkpoint's [deploy]
    model = workflow.integer_model(loaded)
    x = None
    if args.check:  # read and check DATA first: nothing is written on a bad one
        x, _ = workflow.load_inputs(args.check, model, args.labels or "", args.label_column)
    size = workflow.write_header(model, out, prefix)
    say(f"wrote {out} ({size:,} bytes), prefix {prefix}")
    if target != "host":  # built for a Cortex-M and run in an emulator (cli/deploy.py)
        return on_target(model, x, prefix, target, args.emulator, max_flash, max_ram, args.report)
    if max_flash or max_ram:
        host_budgets(model, prefix, max_flash, max_ram)
    if args.report:
        needs = workflow.header_needs(model, prefix)
        say("\n".join([needs_line(needs), *layer_lines(needs.get("layers", []))]))
    if args.check:
        result = workflow.check_header(model, x, prefix)
        if result is None:
            say("check: no C compiler found ($CC, gcc, cc, clang); nothing was compared")
            return 0
        say(
            f"check: {result['samples']} samples, {result['score_mismatches']} score, {result['class_mismatches']} "
            f"class and {result['input_mismatches']} input-code mismatches between C and Python"
            + (" (under ASan and UBSan)" if result["sanitized"] else "")
        )
        if result["mismatched_samples"]:
            raise CheckFailed(f"the compiled header disagrees with Python on {result['mismatched_samples']} samples")
    return 0


def needs_line(needs: dict) -> str:
    """export-c --report's line: flash and RAM from the compiler, or what is known without one."""
    if not needs["compiled"]:
        return (
            "report: no C compiler found, so the code size is unknown; constants "
            f"{needs['constants']:,} bytes, scratch {needs['scratch']:,} bytes"
        )
    return (
        f"flash: {needs['code'] + needs['constants']:,} bytes (code {needs['code']:,}, constants "
        f"{needs['constants']:,}; local compiler, -Os); RAM: {needs['scratch'] + needs['stack']:,} bytes "
        f"(scratch {needs['scratch']:,}, stack {needs['stack']:,})"
    )


def cmd_eval(args) -> int:
    """qmtik eval MODEL [DATA]: its figures (--json), --plot the confusion matrix."""
    picture = plot_path(args.plot, made_from(args.model, ".confusion.png"))
    data = args.data or args.data_option
    distinct(
        [("the model", args.model), ("the data", data_file(data)), ("--labels", args.labels)], [("--plot", picture)]
    )
    result = workflow.evaluate(args.model, data, args.labels or "", args.label_column)
    if picture and result.task != "classification":
        raise UsageError("--plot draws a confusion matrix, which needs a classification model")
    say(json.dumps(result.figures) if args.json else figures_line(result.figures, result.task))
    if picture:
        workflow.draw_confusion(result, picture)
        print(f"wrote {picture}", file=sys.stderr if args.json else Console.stream())
    return 0


def cmd_predict(args) -> int:
    """qmtik predict MODEL INPUT: one prediction a line on stdout, or to -o (.npy or text)."""
    out = output_path(args.out) if args.out else None
    distinct([("the model", args.model), ("the input", args.input)], [("output", out)])
    predictions = workflow.predict_file(args.model, args.input)
    if out:
        workflow.write_predictions(out, predictions)
        say(f"wrote {len(predictions)} predictions to {out}")
    else:
        sys.stdout.write(workflow.prediction_lines(predictions))
    return 0


def cmd_demo(args) -> int:
    """qmtik demo: the end-to-end demo (demo.py) into a folder."""
    from ..demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out}: exists and is not a folder")
    figures = run_demo(args.dataset, out)
    check = figures["c_check"]
    if check and check["mismatched_samples"]:
        raise CheckFailed("the compiled header disagrees with Python (see the table above)")
    return 0


def cmd_config_from_header(args) -> int:
    """qmtik config from-header HEADER: the qmtik config a qmtik.h config header makes."""
    from ..legacy import header_toml

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
    """qmtik import-c-model MODEL --header H -o OUT: a C library model as a .qmt (--check: compared first)."""
    out = output_path(args.out)
    distinct(
        [("the model", args.model), ("--header", args.header), ("--check", data_file(args.check))], [("output", out)]
    )
    converted = workflow.convert_c_model(args.model, args.header, args.check)
    agreement = converted.agreement
    if agreement is not None:  # compared before writing: nothing is written on a bad DATA
        say(
            f"check: {agreement['equal']} of {agreement['samples']} classes equal between the C library's "
            f"arithmetic and the integer model; accuracy {100 * agreement['c_accuracy']:.2f}% "
            f"(C library) and {100 * agreement['accuracy']:.2f}% (integer model)"
        )
    save_model(out, converted.model)
    say(f"wrote {out}{size_of(out)}, {'-'.join(map(str, converted.widths))}, from {args.model}")
    return 0


def cmd_data_get(args) -> int:
    """qmtik data get NAME: download a data set into the cache (or --dir)."""
    from ..download import get_dataset  # urllib loads only for this command

    directory = get_dataset(args.name, directory=args.dir, base_url=args.url, deadline=args.deadline)
    say(f"{args.name}: {directory}")
    return 0


def cmd_data_convert(args) -> int:
    """qmtik data convert INPUT --to KIND: a data file as the C library's samples or an .npz."""
    out = Path(args.out) if args.out else made_from(args.input, "")
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
