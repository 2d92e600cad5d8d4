"""The command line's grammar: argparse's parser, each command bound to its function in commands.py."""

from __future__ import annotations

import argparse

from ..data import C_LIBRARY_SPLIT, CONVERT_TO
from ..targets import TARGETS
from ..version import __version__
from .commands import (
    cmd_config_from_header,
    cmd_data_convert,
    cmd_data_get,
    cmd_demo,
    cmd_eval,
    cmd_export_c,
    cmd_import_c_model,
    cmd_info,
    cmd_init,
    cmd_predict,
    cmd_train,
)
from .onnx_commands import cmd_export_onnx, cmd_import_onnx, cmd_quantize
from .tune_command import cmd_tune


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
    p.add_argument("--init", metavar="CHECKPOINT", help="start from these weights (an import's) instead of random")
    p.add_argument("--qmt", metavar="PATH", help="also write the integer model (.qmt) there")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    add_plot_option(p, "the training curves", "beside the checkpoint, NAME.curves.png")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("quantize", help="turn a training checkpoint into an integer model file (.qmt)")
    p.add_argument("checkpoint", help="a checkpoint written by qmtik train")
    p.add_argument("-o", "--out", help="where to write it (default: beside the checkpoint, NAME.qmt)")
    p.add_argument("--calibrate", metavar="DATA", help="post-training quantization: activation ranges from DATA")
    p.add_argument("--observer", choices=("minmax", "percentile", "mse"), default="minmax",
                   help="how --calibrate picks each range (default: minmax)")  # fmt: skip
    p.add_argument("--samples", type=int, metavar="N", help="calibrate on at most N samples of DATA (a seeded choice)")
    p.add_argument("--compare", metavar="DATA", help="per layer SQNR and share clipped, float vs int8 on DATA")
    p.add_argument("--compare-plot", nargs="?", const="", metavar="PNG", help="draw --compare ([plot] extra)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("info", help="topology, sizes, scales and memory needs of a model")
    p.add_argument("model", help="a .qmt model or a training checkpoint")
    add_plot_option(
        p, "each layer's int8 weights (and activations on --data) with the share clipped", "NAME.layers.png, here"
    )
    p.add_argument("--data", help="data whose activations --plot draws (as eval's DATA)")
    p.add_argument(
        "--target",
        help="estimate flash and RAM per layer on this microcontroller before compiling (cortex-m0, cortex-m4, "
        "cortex-m7, cortex-m33); MODEL may then be a config (.toml)",
    )
    p.add_argument("--compare", metavar="DATA", help="a checkpoint's per layer SQNR and share clipped on DATA")
    p.add_argument("--compare-plot", nargs="?", const="", metavar="PNG", help="draw --compare ([plot] extra)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("import-onnx", help="a float checkpoint (and config) from an ONNX model (PyTorch, Keras)")
    p.add_argument("model", help="the .onnx file (one chain of supported operators; see docs/import.md)")
    p.add_argument("-o", "--out", help="the checkpoint to write (default: NAME.ckpt.npz, here)")
    p.add_argument("--config", metavar="TOML", help="also write the network's config there (for train --init)")
    p.add_argument("--input-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="the raw inputs' range")
    p.add_argument("--calibrate", metavar="DATA", help="take the input range from DATA's min and max")
    p.add_argument("--task", choices=("classification", "regression"), help="default: from the graph's head")
    p.set_defaults(func=cmd_import_onnx)

    p = sub.add_parser("export-onnx", help="the integer model as ONNX that onnxruntime runs to the same bytes")
    p.add_argument("model", help="a .qmt model or a training checkpoint")
    p.add_argument("-o", "--out", help="the .onnx to write (default: NAME.int8.onnx, here)")
    p.set_defaults(func=cmd_export_onnx)

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
    p.add_argument(
        "--target",
        help="host (the local compiler, the default), or cortex-m0, cortex-m4, cortex-m7, cortex-m33: built with "
        "arm-none-eabi-gcc and run in an emulator (docs/c-api.md)",
    )
    p.add_argument("--emulator", choices=("unicorn", "qemu"), default="unicorn", help="for --target (default unicorn)")
    p.add_argument("--max-flash", metavar="SIZE", help="fail (exit 1) when the compiled header needs more flash")
    p.add_argument("--max-ram", metavar="SIZE", help="fail (exit 1) when it needs more RAM (scratch and stack)")
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

    add_tune_parser(sub)

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
    p.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="give up on a file not fetched whole in this time (default: $QMTIK_DOWNLOAD_DEADLINE, else 600)",
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


def add_tune_parser(sub) -> None:
    """qmtik tune: the budget-aware search (cli/tune_command.py; the [tune] extra)."""
    p = sub.add_parser("tune", help="search the config's [tune] space for the best network within a budget")
    p.add_argument("config", help="the TOML config whose [tune] section declares the space")
    p.add_argument(
        "--trials", type=int, required=True, help="trained trials the study should hold (rejected ones do not count)"
    )
    p.add_argument("--max-flash", help="flash budget (bytes, or such as 64K); default: [deploy] max_flash")
    p.add_argument("--max-ram", help="RAM budget (bytes, or such as 16K); default: [deploy] max_ram")
    p.add_argument(
        "--target", choices=sorted(TARGETS), help="the microcontroller of the budget (default: [deploy] target)"
    )
    p.add_argument("--timeout", help="stop starting trials after this long: 3600, 90s, 30m, 1h")
    p.add_argument("--resume", action="store_true", help="go on with the study file of an interrupted search")
    p.add_argument("--storage", metavar="URL", help="a shared study storage, such as postgresql://user@host/db")
    p.add_argument("--study", metavar="NAME", help="the study's name (default: the config's name)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of this worker (default 1; 0: as is)")
    p.add_argument("-o", "--out", help="the best config's path (default: beside the config, NAME.best.toml)")
    p.add_argument("--export", action="store_true", help="also train the best config fully; write its .qmt and header")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per trial")
    add_plot_option(p, "the trials' accuracy against flash and the front", "beside the config, NAME.front.png")
    p.set_defaults(func=cmd_tune)
