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
import io
import json
import math
import os
import re
import stat
import sys
import zipfile
import zlib
from tokenize import TokenError

import numpy as np

from .errors import QmtikError

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


# --- input files, bounded ------------------------------------------------------------------------

READ_LIMIT = ("QMTIK_MAX_READ_BYTES", 4 << 30)  # the most read or inflated from one input file
STREAM_LIMIT = ("QMTIK_MAX_STREAM_BYTES", 256 << 20)  # the most read from a FIFO or stdin
DEFLATE_RATIO = 1032  # deflate (gzip, zip) inflates one byte to at most 1032
CHUNK = 1 << 20


def env_count(name: str, most: int = 2**63 - 1, most_said: str = "") -> int | None:
    """Environment variable `name` as a whole number from 1 to `most` (underscores may group its
    digits: 16_777_216), or None when it is unset or blank; any other value is one ConfigError line
    naming the variable, the value and what is allowed. Every QMTIK_MAX_* variable is read here
    (these byte limits, and limits.py's network limits)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    digits = text.replace("_", "")
    if digits.isascii() and digits.isdigit() and len(digits) <= 20 and 1 <= int(digits) <= most:
        return int(digits)
    from .errors import ConfigError

    shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:40] + "..."
    raise ConfigError(f"environment variable {name}: got {shown}; allowed: an integer from 1 to {most}{most_said}")


def limit(setting: tuple) -> int:
    """A limit's value: its environment variable (a whole number of bytes) when set, else its default."""
    name, default = setting
    value = env_count(name)
    return default if value is None else value


def over_limit(what: str, amount: str, setting: tuple) -> str:
    """The one line for an input beyond a limit, naming how to raise it."""
    return f"{what}: {amount}, more than the {limit(setting):,} qmtik reads (raise it with {setting[0]}=BYTES)"


def _node_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def _check_node(mode: int, what: str, error) -> None:
    if stat.S_ISDIR(mode):
        raise error(f"{what}: is a directory")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise error(f"{what}: {_node_kind(mode)}; qmtik reads regular files, FIFOs and pipes")


@contextlib.contextmanager
def open_input(path, what: str, error):
    """(file, size) of an input opened for reading: size is the length of a regular file, None
    for a FIFO or a pipe (stdin as /dev/stdin), whose reads the caller bounds. A folder, a device
    (a link to /dev/zero), a socket and a missing file are refused before a byte is read, a
    device before it is opened (opening some has effects); the open file is checked again."""
    try:
        _check_node(os.stat(path).st_mode, what, error)
        file = open(path, "rb")  # noqa: SIM115 - closed below, after the checks
    except FileNotFoundError:
        raise error(f"{what}: not found") from None
    except IsADirectoryError:
        raise error(f"{what}: is a directory") from None
    except OSError as exc:
        raise error(f"{what}: cannot be read ({exc.strerror or exc})") from None
    with file:
        mode = os.fstat(file.fileno()).st_mode
        _check_node(mode, what, error)
        yield file, (os.fstat(file.fileno()).st_size if stat.S_ISREG(mode) else None)


@contextlib.contextmanager
def input_stream(path, what: str, error, *, gz: bool = False):
    """(stream, most) of an input, gunzipped with gz: most is the most bytes the stream can give
    (the file's size, DEFLATE_RATIO times it inflated, the stream limit for a FIFO), never above
    the read limit, so that a size a header declares is checked against it before any body is
    read. Every failure inside, a corrupt gzip, a read error, is one line of error."""
    with open_input(path, what, error) as (file, size):
        if size is not None and size > limit(READ_LIMIT):
            raise error(over_limit(what, f"{size:,} bytes", READ_LIMIT))
        most = size if size is not None else limit(STREAM_LIMIT)
        try:
            stream = gzip.GzipFile(fileobj=file, mode="rb") if gz else file
            yield stream, min(most * DEFLATE_RATIO if gz else most, limit(READ_LIMIT))
        except QmtikError:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            problem = "not a readable gzip file" if gz else "cannot be read"
            raise error(f"{what}: {problem} ({one_line(exc)})") from None
        except MemoryError:
            raise error(f"{what}: too large to read") from None


def read_up_to(stream, count: int) -> bytearray:
    """At most count bytes of stream (fewer at its end), read a chunk at a time: memory grows
    with what arrives, never with what a header claims."""
    data = bytearray()
    while len(data) < count:
        chunk = stream.read(min(count - len(data), CHUNK))
        if not chunk:
            break
        data += chunk
    return data


def read_input(path, what: str, error, *, gz: bool = False) -> bytearray:
    """The bytes of an input file (gunzipped with gz), at most the read limit: a regular file
    larger is refused before it is read, a FIFO, stdin or gzip stream past its bound as it is read."""
    with input_stream(path, what, error, gz=gz) as (stream, most):
        data = read_up_to(stream, most + 1)
    if len(data) > most:
        setting = STREAM_LIMIT if most < limit(READ_LIMIT) and not gz else READ_LIMIT
        raise error(over_limit(what, f"more than {most:,} bytes", setting))
    return data


def gunzip(blob: bytes, what: str, error) -> bytes:
    """The bytes a gzip stream holds, at most the read limit; a corrupt, truncated or larger
    stream raises error('WHAT: ...')."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob), mode="rb") as stream:
            data = read_up_to(stream, limit(READ_LIMIT) + 1)
    except (OSError, EOFError, zlib.error, MemoryError) as exc:
        raise error(f"{what}: not a readable gzip file ({one_line(exc)})") from None
    if len(data) > limit(READ_LIMIT):
        raise error(over_limit(what, "inflates to more", READ_LIMIT))
    return bytes(data)


# --- .npy and .npz: headers first ----------------------------------------------------------------

NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _array_header(stream, what: str, error) -> tuple:
    """(shape, fortran_order, dtype, data bytes) of the .npy header at stream's position, read
    without pickles and checked: no Python objects, no zero-size items."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"NumPy format version {version[0]}.{version[1]} is not read")
    except (ValueError, EOFError, SyntaxError, TypeError, TokenError, RecursionError, MemoryError) as exc:
        raise error(f"{what}: not a NumPy file (.npy or .npz) ({one_line(exc)})") from None
    if dtype.hasobject:
        raise error(f"{what}: holds an array of Python objects, which qmtik does not read (it never unpickles)")
    if dtype.itemsize == 0 or dtype.fields is not None or dtype.subdtype is not None:
        raise error(f"{what}: holds an array of {shortened(str(dtype))}, not of plain numbers or text")
    return shape, fortran, dtype, math.prod(shape) * dtype.itemsize


def _array_body(stream, header: tuple, what: str, error, expected: int) -> np.ndarray:
    """The array of a header read from stream: its declared size must be expected (the bytes
    left in the file or member, or the most a stream holds when it is None)."""
    shape, fortran, dtype, nbytes = header
    shown = shortened(str(shape))
    if nbytes != expected:
        raise error(f"{what}: an array of shape {shown} and {dtype} needs {nbytes:,} bytes, it holds {expected:,}")
    if nbytes > limit(READ_LIMIT):
        raise error(over_limit(what, f"an array of shape {shown} ({byte_count(nbytes)} bytes)", READ_LIMIT))
    data = read_up_to(stream, nbytes + 1)
    if len(data) != nbytes:
        raise error(f"{what}: truncated: an array of shape {shown} needs {nbytes:,} bytes, it holds {len(data):,}")
    if dtype.kind == "U":  # code points past U+10FFFF make numpy's str() fail with SystemError
        codes = np.frombuffer(data, dtype=np.dtype("u4").newbyteorder(dtype.byteorder))
        if (codes > 0x10FFFF).any():
            raise error(f"{what}: holds text that is not Unicode (a code point past U+10FFFF)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def byte_count(count: int) -> str:
    """A count of bytes a hostile header declares, in digits when it has at most 24 of them."""
    return f"{count:,}" if count < 10**24 else f"about 10^{len(str(count)) - 1}"


def shortened(text: str, most: int = 80) -> str:
    """text, cut to `most` characters: a hostile header's dtype or shape can be long."""
    return text if len(text) <= most else text[:most] + "..."


def _seekable(stream, most: int, what: str, error):
    """stream itself when it can seek (a regular file), else its bytes (at most `most`) in memory."""
    if stream.seekable():
        return stream
    data = read_up_to(stream, most + 1)
    if len(data) > most:
        raise error(over_limit(what, f"more than {most:,} bytes", STREAM_LIMIT))
    return io.BytesIO(data)


def load_npy(path, what: str, error) -> np.ndarray:
    """The array of an .npy file read without pickles, its header first: its declared size must
    be what the file holds, at most the read limit; any failure raises error('WHAT: ...')."""
    with input_stream(path, what, error) as (stream, most):
        stream = _seekable(stream, most, what, error)
        if stream.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
            raise error(f"{what}: an .npz archive, not a single NumPy array (.npy)")
        end = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        header = _array_header(stream, what, error)
        return _array_body(stream, header, what, error, end - stream.tell())


def load_npz(path, what: str, error, keys=None, *, known=None, check=None) -> dict:
    """{name: array} of an .npz archive read without pickles: every member, or those of keys it
    holds. Each member's array header is read first and its declared size checked against the
    member's size, the most its compressed bytes can inflate to and the read limit, before its
    data is inflated. known(name) -> bool refuses a member by its name before any byte of it is
    inflated (with the words known.problem); check(name, dtype, shape) -> problem or None
    refuses one by its header. A missing file, a
    file that is not an .npz and every way of reading one wrong raise error('WHAT: PROBLEM')."""
    with input_stream(path, what, error) as (stream, most):
        stream = _seekable(stream, most, what, error)  # zipfile seeks
        start = stream.read(len(NPY_MAGIC))
        if start == NPY_MAGIC:
            raise error(f"{what}: a single NumPy array (.npy), not an .npz archive of named arrays")
        if not start.startswith(b"PK"):
            raise error(f"{what}: not a NumPy file (.npy or .npz)")
        stream.seek(0)
        try:
            with zipfile.ZipFile(stream) as archive:
                return _npz_members(archive, what, error, keys, known, check)
        except QmtikError:
            raise
        except ARCHIVE_ERRORS as exc:
            raise error(f"{what}: {numpy_problem(exc, 'an .npz archive')}") from None


def _npz_members(archive, what: str, error, keys, known, check) -> dict:
    members = {}
    for info in archive.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if name in members:
            raise error(f"{what}: holds two members named {name!r}")
        if known is not None and not known(name):
            raise error(f"{what}: {name[:60]} {getattr(known, 'problem', 'is not a member it may hold')}")
        members[name] = info
    out = {}
    for name in [k for k in (members if keys is None else keys) if k in members]:
        info = members[name]
        inflatable = info.compress_size * (DEFLATE_RATIO if info.compress_type else 1) + 64
        if info.file_size > inflatable:
            raise error(f"{what}: member {name!r} claims {info.file_size:,} bytes from {info.compress_size:,}")
        with archive.open(info) as member:
            header = _array_header(member, f"{what}: member {name!r}", error)
            problem = check(name, header[2], header[0]) if check else None
            if problem:
                raise error(f"{what}: {name} {problem}")
            expected = info.file_size - member.tell()
            out[name] = _array_body(member, header, f"{what}: member {name!r}", error, expected)
    return out
