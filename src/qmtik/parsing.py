"""Reading text and archives qmtik did not write, with every failure one line of the caller's error.

Python's readers fail in more ways than their documented error. A JSON or TOML value nested
thousands deep raises RecursionError; a decimal integer of more than 4300 digits raises
ValueError (Python's int-digit limit, sys.set_int_max_str_digits); a very large text can raise
MemoryError. A zip archive (.npz) raises RuntimeError for a member flagged encrypted,
NotImplementedError for an unknown compression method, zlib.error for a corrupt stream and
MemoryError for an array header that claims terabytes; a corrupt .gz raises zlib.error. Every
JSON, TOML, .npz and .gz that comes from a user goes through this module, so that each of these
ends as one line naming the thing, in the error class of the caller (ConfigError, DataError,
CheckpointError).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import sys
import zipfile
import zlib

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TEXT_ERRORS = (ValueError, RecursionError, MemoryError)  # JSONDecodeError, TOMLDecodeError are ValueErrors
ARCHIVE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    MemoryError,
    zipfile.BadZipFile,
    zlib.error,
)
INT_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 4300)  # Python's int-digit limit
MAX_SHOWN = 200  # characters of a library's own message kept in ours


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, cut to MAX_SHOWN characters (a parser may quote the
    input, and a hostile input is long)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def problem_of(exc: BaseException, syntax: str) -> str:
    """What went wrong in a parse, in words: syntax is the language ('JSON', 'TOML')."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "too large to read"
    if isinstance(exc, ValueError) and re.search(r"limit \(\d+ digits\) for integer", str(exc)):
        return f"holds an integer of more than {INT_DIGITS()} digits"
    return f"not valid {syntax} ({one_line(exc)})"


def load_json(text: str, what: str, error):
    """json.loads(text); any failure raises error('WHAT: PROBLEM') on one line."""
    try:
        return json.loads(text)
    except TEXT_ERRORS as exc:
        raise error(f"{what}: {problem_of(exc, 'JSON')}") from None


def load_toml(text: str, what: str, error, *, lenient: bool = False):
    """tomllib.loads(text); any failure raises error('WHAT: PROBLEM') on one line. With
    lenient, text that is merely not TOML gives None (for a caller that falls back on it);
    nesting and integers beyond Python's limits are errors still."""
    try:
        return tomllib.loads(text)
    except TEXT_ERRORS as exc:
        if lenient and isinstance(exc, tomllib.TOMLDecodeError):
            return None
        raise error(f"{what}: {problem_of(exc, 'TOML')}") from None


def numpy_problem(exc: BaseException, kind: str) -> str:
    """What a failed np.load means, in words, never numpy's advice to load the file 'unsafely'
    with allow_pickle: a file that is no NumPy file at all, or an array of Python objects."""
    text = str(exc)
    if isinstance(exc, ValueError) and "allow_pickle" in text:
        if "Object arrays" in text:
            return "holds an array of Python objects, which qmtik does not read (it never unpickles)"
        return "not a NumPy file (.npy or .npz)"
    return f"cannot be read as {kind} ({one_line(exc)})"


def gunzip(blob: bytes, what: str, error) -> bytes:
    """The bytes a gzip stream holds; a corrupt or truncated stream raises error('WHAT: ...')."""
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error, MemoryError) as exc:
        raise error(f"{what}: not a readable gzip file ({one_line(exc)})") from None


@contextlib.contextmanager
def _numpy_file(path, what: str, error, expected: str):
    """The open file at path for np.load; a missing file, a folder and every way of reading
    `expected` wrong raise error('WHAT: PROBLEM') on one line."""
    try:
        with open(path, "rb") as file:
            yield file
    except FileNotFoundError:
        raise error(f"{what}: not found") from None
    except IsADirectoryError:
        raise error(f"{what}: is a directory") from None
    except ARCHIVE_ERRORS as exc:
        raise error(f"{what}: {numpy_problem(exc, expected)}") from None


def load_npz(path, what: str, error, keys=None) -> dict:
    """{name: array} of an .npz archive read without pickles: every member, or those of keys it
    holds. A missing file, a file that is not an .npz and every way of reading one wrong raise
    error('WHAT: PROBLEM') on one line."""
    with _numpy_file(path, what, error, "an .npz archive") as file:
        archive = np.load(file, allow_pickle=False)
        if isinstance(archive, np.lib.npyio.NpzFile):
            with archive:
                names = archive.files if keys is None else [k for k in keys if k in archive.files]
                return {k: archive[k] for k in names}
    raise error(f"{what}: a single NumPy array (.npy), not an .npz archive of named arrays")


def load_npy(path, what: str, error) -> np.ndarray:
    """The array of an .npy file read without pickles; any failure raises error('WHAT: ...')."""
    with _numpy_file(path, what, error, "a NumPy array") as file:
        array = np.load(file, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        array.close()
        raise error(f"{what}: an .npz archive, not a single NumPy array (.npy)")
    return array
