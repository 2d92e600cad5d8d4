"""Where the command line's text goes, and its refusals of outputs before any work.

What a command says goes to stdout, or to stderr when one of its outputs goes to stdout
(-o /dev/stdout): see say(). An output path is checked (and refused as usage, exit 2) before
the command does anything, so that a bad one costs nothing and loses nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import NAMED_DATASETS
from ..errors import OutputError, PlotError, UsageError
from ..output_files import check_distinct, check_writable, goes_to_stdout, writes_through
from ..paths import unfinished_run


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
    missing folder, a folder, a socket, a read-only file (output_files.check_writable), and the
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


def size_of(written) -> str:
    """' (N bytes)' for a file just written; '' for a device, FIFO or descriptor written through."""
    return "" if writes_through(written) else f" ({Path(written).stat().st_size:,} bytes)"


def plot_path(requested, default: Path) -> Path | None:
    """Where --plot writes (None when not asked), refused before any work when matplotlib is
    missing or the folder does not exist."""
    if requested is None:
        return None
    from ..plots import check_plot_path

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from ..plots import MISSING

        raise PlotError(MISSING) from None
    path = output_path(requested or default)
    try:
        check_plot_path(path)
    except PlotError as exc:
        raise UsageError(str(exc)) from None
    return path
