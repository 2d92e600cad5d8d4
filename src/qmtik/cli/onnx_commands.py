"""The commands of models from elsewhere: import-onnx, export-onnx, and the per-layer
comparison (quantize --compare, info --compare). Each checks its outputs first, then calls
the library (onnx_import.py, export_onnx.py, compare.py)."""

from __future__ import annotations

from pathlib import Path

from .. import workflow
from ..data import load_named_or_path
from ..errors import UsageError
from ..network import Network
from ..paths import made_from, qmt_path, run_name
from .console import data_file, distinct, output_path, plot_path, say, size_of


def input_range_arg(args) -> tuple[float, float]:
    """The raw input range of an import: --input-range, or the min and max of --calibrate DATA."""
    from ..onnx_import import input_range_of

    if args.input_range and args.calibrate:
        raise UsageError("--input-range and --calibrate both set the input range; give one")
    if args.input_range:
        return tuple(args.input_range)
    if args.calibrate:
        x, _ = load_named_or_path(args.calibrate)
        return input_range_of(x)
    raise UsageError(
        "give the raw inputs' range: --input-range LOW HIGH (such as 0 255 for pixels) or --calibrate DATA "
        "(its min and max); the first layer takes it in"
    )


def cmd_import_onnx(args) -> int:
    """qmtik import-onnx MODEL.onnx: a float checkpoint (and config) of the graph."""
    from ..onnx_import import import_onnx_file, onnxruntime_agreement

    stem = Path(args.model).name.split(".")[0]
    out = output_path(args.out if args.out else Path(stem + ".ckpt.npz"))
    config_out = output_path(args.config) if args.config else None
    distinct(
        [("the model", args.model), ("--calibrate", data_file(args.calibrate))],
        [("output", out), ("--config", config_out)],
    )
    net = import_onnx_file(args.model, out, input_range_arg(args), config_out, args.task)
    specs = net.config.network.shapes
    low, high = net.input_range_
    say(f"imported {len(specs)} layers, input range [{low:g}, {high:g}]: " + " -> ".join(s.spec.kind for s in specs))
    agreement = onnxruntime_agreement(args.model, net)
    if agreement is not None:
        error, same = agreement
        say(f"float outputs against onnxruntime's on 8 random inputs: largest error {error:.1e} x max(1, max|y|), "
            f"{'the same classes' if same else 'OTHER CLASSES: please report this graph'}")  # fmt: skip
    say(f"wrote {out}{size_of(out)}" + (f", {config_out}" if config_out else ""))
    say(f"next: qmtik quantize {out} --calibrate DATA")
    return 0


def compare_report(net, data: str, picture=None, model=None) -> None:
    """Print the per-layer comparison of a network's integer model (model, or net.quantize())
    with its float arithmetic on DATA, and draw it to picture when given."""
    from ..compare import compare, plot_comparison, report_lines

    x, y = workflow.load_inputs(data, net)
    rows, summary = compare(net, x, y, model)
    for line in report_lines(rows, summary):
        say(line)
    if picture:
        plot_comparison(rows, summary, picture)
        say(f"wrote {picture}")


def compared_network(path) -> Network:
    """The checkpoint --compare needs (its float network); a .qmt is refused."""
    net = workflow.load_any(path)
    if not isinstance(net, Network):
        raise UsageError(f"--compare needs the float network: give the checkpoint {path} came from, not a .qmt")
    return net


def compare_info(args) -> int:
    """qmtik info CHECKPOINT --compare DATA [--compare-plot [PNG]]: the report (and its picture)."""
    if not args.compare:
        raise UsageError("--compare-plot draws the comparison: give --compare DATA")
    if args.plot is not None or args.data:
        raise UsageError("--compare reports on its own: leave out --plot and --data")
    picture = plot_path(args.compare_plot, made_from(args.model, ".compare.png"))
    distinct([("the model", args.model), ("--compare", data_file(args.compare))], [("--compare-plot", picture)])
    compare_report(compared_network(args.model), args.compare, picture)
    return 0


def cmd_quantize(args) -> int:
    """qmtik quantize CHECKPOINT [--calibrate DATA] [--compare DATA]: the .qmt, then the report."""
    out = output_path(args.out if args.out else qmt_path(args.checkpoint))
    picture = plot_path(args.compare_plot, made_from(args.checkpoint, ".compare.png"))
    if picture and not args.compare:
        raise UsageError("--compare-plot draws the comparison: give --compare DATA")
    distinct(
        [("the checkpoint", args.checkpoint), ("--calibrate", data_file(args.calibrate)),
         ("--compare", data_file(args.compare))],
        [("output", out), ("--compare-plot", picture)],
    )  # fmt: skip
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples {args.samples}: give 1 or more")
    if (args.observer != "minmax" or args.samples) and not args.calibrate:
        raise UsageError("--observer and --samples choose how --calibrate DATA calibrates; give --calibrate")
    model = workflow.quantize_checkpoint(args.checkpoint, out, args.calibrate, args.observer, args.samples)
    say(f"wrote {out}{size_of(out)}")
    if args.compare:
        compare_report(Network.load(args.checkpoint), args.compare, picture, model)
    return 0


def cmd_export_onnx(args) -> int:
    """qmtik export-onnx MODEL: the integer model as an ONNX graph (int8 codes in, int8 scores out)."""
    from ..export_onnx import save_onnx

    out = output_path(args.out if args.out else Path(run_name(args.model).split(".")[0] + ".int8.onnx"))
    distinct([("the model", args.model)], [("output", out)])
    model = workflow.load_integer_model(args.model)
    save_onnx(out, model)
    say(f"wrote {out}{size_of(out)}: int8 codes in, int8 scores out (onnxruntime gives qmtik's bytes)")
    return 0
