"""The .qmt file: an integer model in a small, strict, little-endian binary format.

docs/format.md describes it byte by byte; this module is the reference writer and the one
place to import the format from: `encode` writes version 2; `decode` and `load_model`
(qmtfile_reader.py) read versions 1 and 2; the fields and the rules both share are in
qmtfile_layout.py.

Version 2's layer records are typed: each starts with a kind code and its own length, so a
reader refuses a kind it does not know by name. Kind 0 is dense; kinds 1 .. 5 (conv2d,
depthwise_conv2d, the pools) start with their window (qmtfile_windows.py), and a convolution's
goes on as a dense record. A dense body stores each of its weight scales, requantization and
negative-side requantization once when every channel shares it, or once per channel (a flag
bit each). The flags follow from the values, so a model has exactly one encoding:
encode(decode(b)) == b.

Writing packs every field with an explicit little-endian type (never a dump of memory) and
saves through a temporary file that is renamed into place. Reading checks, in this order, the
length, magic, version, header size, file size and CRC-32; then parses field by field with a
bounds check before every read; builds each layer as an intref.IntegerLayer, whose validate()
is the one set of rules for every layer in memory (the scales with training's own, so that no
model computes on NaN or writes `inff` into C); then checks the file's own rules, which `encode`
applies too; and last, that the layers end exactly at the CRC. Nothing in a
file is ever executed, and every problem is a ModelFormatError of one line, "model file NAME: problem".
"""

from __future__ import annotations

import zlib

import numpy as np

from . import intref
from .errors import ModelFormatError
from .functions import OUTPUTS, TASKS
from .integer_model import QuantizedModel
from .output_files import write_atomic
from .qmtfile_layout import (
    ACTIVATIONS,
    COUNT,
    CRC,
    DENSE,
    GROUPS,
    HEADER,
    KINDS,
    LENGTH,
    MAGIC,
    MAX_SIZE,
    RECORD,
    VERSION,
    check_model,
    dense_arrays,
    failing,
    varies,
)
from .qmtfile_reader import decode, load_model
from .qmtfile_windows import window_bytes

__all__ = ["MAGIC", "OUTPUTS", "TASKS", "VERSION", "decode", "encode", "load_model", "save_model"]


# --- writing -----------------------------------------------------------------------------------


def _flags(arrays: dict) -> int:
    """The flag bits of a dense record whose arrays (field: values as stored) are these: a
    group's bit is set exactly when its channels' values differ (one encoding per model)."""
    return sum(
        bit
        for bit, (_, fields) in GROUPS.items()
        if fields[0] in arrays and varies(*(arrays[field] for field in fields))
    )


def encode(model: QuantizedModel) -> bytes:
    """The .qmt bytes of model (version 2): the one encoding of it.

    Refuses, with a ModelFormatError naming the layer and the field, a model that the format
    or the integer arithmetic cannot hold: whatever encode writes, decode reads back.
    """
    check_model(model, failing("cannot encode model"))
    body = b"".join([_names_bytes(model.class_names), *map(_record_bytes, model.layers)])
    size = HEADER.size + len(body) + CRC.size
    if size > MAX_SIZE:
        raise ModelFormatError(f"cannot encode model: {size:,} bytes, more than a .qmt file holds ({MAX_SIZE:,})")
    low, high = (value + 0.0 for value in model.input_range)  # -0.0 is written +0.0
    header = HEADER.pack(
        MAGIC,
        VERSION,
        HEADER.size,
        TASKS.index(model.task),
        OUTPUTS.index(model.output),
        len(model.layers),
        0,
        model.inputs,
        low,
        high,
        size,
    )
    return _sealed(header + body)


def _sealed(blob: bytes) -> bytes:
    """blob with its CRC-32 appended: the last step of every encode (the tests check here that
    every file they make is canonical)."""
    return blob + CRC.pack(zlib.crc32(blob))


def _names_bytes(names) -> bytes:
    names = names or ()
    parts = [COUNT.pack(len(names))]
    for name in names:
        raw = name.encode("utf-8")
        parts += [LENGTH.pack(len(raw)), raw]
    return b"".join(parts)


def _record_bytes(layer) -> bytes:
    """A version-2 layer record: kind, length, then its body (validated values only): a dense
    body; a window (qmtfile_windows.window_bytes), then for a convolution a dense body."""
    body = b"" if layer.kind == "dense" else window_bytes(layer)
    if isinstance(layer, intref.IntegerLayer):  # dense and the convolutions
        body += _dense_body(layer)
    return RECORD.pack(KINDS.index(layer.kind), RECORD.size + len(body)) + body


def _dense_body(layer: intref.IntegerLayer) -> bytes:
    """The DENSE fields and arrays of a dense layer or a convolution: its outputs are its weight
    rows (output channels), its fan-in their length."""
    outputs, fan_in = layer.weights.shape
    layout = dense_arrays(layer.activation, sum(GROUPS), outputs, fan_in)  # every flag: all values
    stored = {field: np.asarray(getattr(layer, field)).reshape(-1).astype(dtype) for field, dtype, _ in layout}
    flags = _flags(stored)
    parts = [DENSE.pack(outputs, ACTIVATIONS.index(layer.activation), flags, layer.output_offset, layer.output_scale)]
    parts += [
        stored[field][:count].tobytes() for field, _, count in dense_arrays(layer.activation, flags, outputs, fan_in)
    ]
    return b"".join(parts)


def save_model(path, model: QuantizedModel) -> None:
    """Write model to path as a .qmt file, atomically: any failure leaves the previous file."""
    blob = encode(model)
    write_atomic(path, lambda f: f.write(blob))
