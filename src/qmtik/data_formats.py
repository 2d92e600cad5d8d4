"""Data file formats, read and written: IDX, CSV, NumPy, and the C library's qmtik-bin samples.

A file's format comes from its name (`format_of`), never from a guess at its contents. Every
reader checks what it reads against the file's own length and layout, and raises DataError with
one line naming the file (and the line, for CSV) and the problem.

qmtik-bin is the sample format of the C library qmtik.h: per sample, I int8 input bytes, then O
int8 target bytes (classes one-hot at 127). Its inputs are int8 codes under the C library's
pixel - 128 convention, so qmtik reads them back as the pixels they stand for (byte + 128, 0..255):
with data.input_range = [0, 255] a network sees exactly the codes the file holds.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np

from .errors import DataError
from .parsing import READ_LIMIT, byte_count, input_stream, limit, over_limit, read_input, read_up_to, shortened

FORMATS = ("npz", "npy", "csv", "idx", "qmtik-bin")
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TARGET_ONE = 127  # qmtik-bin's "this class" target byte
PIXEL_OFFSET = 128  # qmtik-bin input byte = pixel - 128


def format_of(path) -> str | None:
    """The format a path's name says: 'npz', 'npy', 'csv' (.csv or .csv.gz), 'idx' (names such
    as train-images-idx3-ubyte.gz, or .idx), 'qmtik-bin' (.bin); None for anything else."""
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    if name.endswith((".npz", ".npy")) and not str(path).lower().endswith(".gz"):
        return name[-3:]
    if name.endswith(".csv"):
        return "csv"
    if re.search(r"idx\d-u?byte$", name) or name.endswith(".idx"):
        return "idx"
    if name.endswith(".bin") and not str(path).lower().endswith(".gz"):
        return "qmtik-bin"
    return None


def _read_bytes(path, what: str) -> bytearray:
    """A file's bytes, gunzipped when its name ends in .gz: at most the read limit (parsing.py)."""
    return read_input(path, f"{what} {path}", DataError, gz=_is_gz(path))


def _is_gz(path) -> bool:
    return Path(path).suffix.lower() == ".gz"


# --- IDX -----------------------------------------------------------------------------------------


def read_idx(path) -> np.ndarray:
    """An IDX file (raw or .gz): its array, the magic, type and dimensions checked against its
    length before the body is read (a gzip is inflated no further than its dimensions declare)."""
    what = f"IDX file {path}"
    with input_stream(path, what, DataError, gz=_is_gz(path)) as (stream, most):
        start = read_up_to(stream, 4)
        if len(start) < 4 or start[0] != 0 or start[1] != 0 or start[2] not in IDX_TYPES:
            raise DataError(f"{what}: not an IDX file (bad magic number)")
        dtype, ndim = np.dtype(IDX_TYPES[start[2]]), start[3]
        header = 4 + 4 * ndim
        dims = read_up_to(stream, 4 * ndim)
        if ndim == 0 or len(dims) < 4 * ndim:
            raise DataError(f"{what}: truncated header")
        shape = tuple(int.from_bytes(dims[4 * i : 4 + 4 * i], "big") for i in range(ndim))
        what = f"{what}: dimensions {shortened(str(shape))}"
        expected = header + math.prod(shape) * dtype.itemsize
        if expected > limit(READ_LIMIT):
            raise DataError(over_limit(what, f"need {byte_count(expected)} bytes", READ_LIMIT))
        sized = not _is_gz(path) and stream.seekable()  # a regular file: its size is known
        if expected > most or (sized and expected != most):
            found = f"{most}" if sized else f"at most {most} ({'inflated' if _is_gz(path) else 'a stream'})"
            raise DataError(f"{what} need {expected} bytes, the file has {found}")
        body = read_up_to(stream, expected - header + 1)
    if header + len(body) != expected:
        found = "more" if len(body) > expected - header else f"{header + len(body)}"
        raise DataError(f"{what} need {expected} bytes, the file has {found}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def idx_bytes(array) -> bytes:
    """The IDX encoding of an array of unsigned bytes (the type MNIST's files use)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim == 0:
        raise DataError(
            f"IDX: only arrays of unsigned bytes with at least one dimension are written, got {array.dtype}"
        )
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.tobytes()


# --- CSV -----------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """A CSV line's cells, without surrounding blanks and quotes."""
    return [c.strip().strip("'\"") for c in line.split(",")]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_header(line: str) -> bool:
    """Whether a first row is a header: none of its cells is a number or empty. A row with a
    number or an empty cell is a sample, so a bad cell in it is an error, never a lost sample."""
    return not any(not cell or _is_number(cell) for cell in _cells(line))


def read_csv_table(path, what: str = "CSV file") -> np.ndarray:
    """A CSV file of numbers (raw or .gz) as a float64 table; a first row none of whose cells is
    a number or empty is a header and skipped (see _is_header); quoted numbers ('5' or "5", as
    OpenML writes classes) are read. Lines end at LF, CR LF or CR, and are numbered so."""
    text = _read_bytes(path, what).decode("utf-8-sig", errors="replace")  # a BOM (Excel) is not data
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise DataError(f"{what} {path}: no samples")
    skip = first + 1 if _is_header(lines[first]) else first
    if not any(line.strip() for line in lines[skip:]):
        raise DataError(f"{what} {path}: no samples")
    for quote in (None, "'", '"'):  # numpy's C parser; on any trouble, find the line below
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.loadtxt(
                    lines[skip:], delimiter=",", ndmin=2, dtype=np.float64, quotechar=quote, comments=None
                )
        except ValueError:
            continue
    try:
        return _read_csv_rows(lines, skip, path, what)
    except MemoryError:
        raise DataError(f"{what} {path}: too large to read") from None


def _read_csv_rows(lines, skip: int, path, what: str) -> np.ndarray:
    """The slow reading of a CSV, row by row, that names the first bad line."""
    rows, width = [], None
    for number, line in enumerate(lines[skip:], skip + 1):
        if not line.strip():
            continue
        cells = _cells(line)
        try:
            values = [float(c) for c in cells]
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            first = not any(earlier.strip() for earlier in lines[: number - 1])
            hint = "; a first row with a number or an empty cell is a sample, not a header" if first else ""
            shown = repr(bad) if len(bad) <= 40 else repr(bad[:40]) + "..."
            raise DataError(f"{what} {path}, line {number}: {shown} is not a number{hint}") from None
        if width is not None and len(values) != width:
            raise DataError(f"{what} {path}, line {number}: {len(values)} columns, expected {width}")
        width = len(values)
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(len(rows), width or 0)


def read_csv(path, label_column: int = -1):
    """(inputs, labels) from a CSV with one sample per row and its label in label_column
    (negative counts from the end: -1, the default, is the last column, as in OpenML's mnist_784)."""
    table = read_csv_table(path, "data file")
    columns = table.shape[1]
    if not -columns <= label_column < columns or columns < 2:
        raise DataError(
            f"data file {path}: label column {label_column} does not exist "
            f"(the file has {columns} columns; a label and at least one input are needed)"
        )
    label_column %= columns
    return np.delete(table, label_column, axis=1), table[:, label_column]


# --- qmtik-bin (the C library's samples) ---------------------------------------------------------


def read_qmtik_bin(path, inputs: int, outputs: int):
    """(pixels 0..255 as uint8, int8 targets) of a qmtik-bin file for a network of `inputs` and
    `outputs`: the file's length must be a whole number of samples."""
    blob = _read_bytes(path, "data file")
    record = inputs + outputs
    if not blob:
        raise DataError(f"data file {path}: no samples")
    if len(blob) % record:
        raise DataError(
            f"data file {path}: {len(blob)} bytes is not a whole number of samples of "
            f"{inputs} input and {outputs} target bytes (truncated, or another network's data)"
        )
    table = np.frombuffer(blob, dtype=np.int8).reshape(-1, record)
    pixels = (table[:, :inputs].astype(np.int16) + PIXEL_OFFSET).astype(np.uint8)
    return pixels, table[:, inputs:].copy()


def qmtik_bin_bytes(codes, targets) -> bytes:
    """qmtik-bin samples: each row of int8 input codes followed by its row of int8 targets."""
    codes, targets = np.asarray(codes), np.asarray(targets)
    if codes.dtype != np.int8 or targets.dtype != np.int8 or codes.ndim != 2 or targets.ndim != 2:
        raise DataError("qmtik-bin: inputs and targets must be 2-D int8 arrays")
    if len(codes) != len(targets):
        raise DataError(f"qmtik-bin: {len(codes)} input rows for {len(targets)} target rows")
    return np.hstack([codes, targets]).tobytes()


def one_hot_targets(labels, outputs: int) -> np.ndarray:
    """Class labels as qmtik-bin's int8 targets: 127 for the class, 0 elsewhere."""
    targets = np.zeros((len(labels), outputs), dtype=np.int8)
    targets[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = TARGET_ONE
    return targets


def labels_of_targets(targets, path) -> np.ndarray:
    """The class of each one-hot target row: its 127. A row with no 127, or more than one, is refused."""
    hits = np.asarray(targets) == TARGET_ONE
    counts = hits.sum(axis=1)
    if (counts != 1).any():
        bad = int(np.argmax(counts != 1))
        raise DataError(
            f"data file {path}: sample {bad}'s target is not one-hot at {TARGET_ONE} "
            f"(a regression network reads targets, not classes)"
        )
    return hits.argmax(axis=1)
