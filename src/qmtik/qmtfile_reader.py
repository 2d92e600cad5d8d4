"""The .qmt reader: `decode` (versions 1 and 2) and `load_model`.

Reading checks, in this order, the length, magic, version, header size, file size and CRC-32;
then parses field by field with a bounds check before every read (`_Reader`); builds each layer
as an intref.IntegerLayer (a window kind's, its window read and checked first by
qmtfile_windows, as its intref_windows class), whose validate() is the one set of rules for
every layer in memory;
then checks the file's own rules (qmtfile_layout.check_model, which the writer applies too);
and last, that the layers end exactly at the CRC. Every problem is a ModelFormatError of one
line, "model file NAME: problem".
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from . import intref, limits, qmtfile_windows
from . import quantization as q
from .errors import ModelFormatError, QuantizationError
from .functions import OUTPUTS, TASKS
from .integer_model import QuantizedModel
from .parsing import STREAM_LIMIT, input_stream, over_limit, read_up_to
from .qmtfile_layout import (
    ACTIVATIONS,
    COUNT,
    CRC,
    DENSE,
    GROUPS,
    HEADER,
    KINDS,
    LAYER_V1,
    LENGTH,
    MAGIC,
    MAX_LAYERS,
    MAX_SIZE,
    MAX_WIDTH,
    NEGATIVE,
    RECORD,
    REQUANT,
    SCALES,
    VERSIONS,
    check_model,
    check_placement,
    check_range,
    dense_arrays,
    failing,
    varies,
)


class _Reader:
    """Reads fields in order from blob[pos:end], refusing to run past end (`until` names it)."""

    def __init__(self, blob: bytes, pos: int, end: int, fail, until: str = "the end of the data"):
        self.blob, self.pos, self.end, self.fail, self.until = blob, pos, end, fail, until

    def take(self, count: int, what: str) -> bytes:
        if count > self.end - self.pos:
            left = "before the CRC" if self.until == "the end of the data" else "in it"
            self.fail(
                f"{what} runs past {self.until} ({count:,} bytes at offset {self.pos:,}, "
                f"{self.end - self.pos:,} left {left})"
            )
        chunk = self.blob[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fields: struct.Struct, what: str) -> tuple:
        return fields.unpack(self.take(fields.size, what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """count values of a little-endian dtype, as a read-only view (callers convert)."""
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count, what), dtype=dtype)


def decode(blob: bytes, name: str = "<bytes>") -> QuantizedModel:
    """The model in .qmt bytes (version 1 or 2), every field checked; a ModelFormatError names
    the problem."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode needs bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    fail = failing(f"model file {name}")
    version, task, output, count, inputs, low, high = _read_header(blob, fail)
    reader = _Reader(blob, HEADER.size, len(blob) - CRC.size, fail)
    names = _read_names(reader, fail)
    layers, fan_in, in_scale, in_zero = [], inputs, q.INPUT_SCALE, q.INPUT_ZERO
    _within_limits(limits.Figures(0, 0, 0, count), fail)  # QMTIK_MAX_LAYERS, before any record
    for number in range(1, count + 1):
        args = (reader, number, number == count, fan_in, in_scale, in_zero, fail)
        layer = _read_record(*args, layers[-1] if layers else None) if version == 2 else _read_layer_v1(*args)
        layers.append(layer)
        fan_in, in_scale, in_zero = layer.outputs, layer.output_scale, layer.output_offset
    _within_limits(limits.model_figures(layers), fail)  # a window layer's cost is not the file's size
    model = QuantizedModel(TASKS[task], OUTPUTS[output], (low, high), layers, names or None)
    check_model(model, fail)
    if reader.pos != reader.end:
        fail(f"{reader.end - reader.pos:,} bytes left over between the last layer and the CRC")
    return model


def _within_limits(figures, fail) -> None:
    """Fail when the model needs more than the limits in force (limits.py: the QMTIK_MAX_*
    variables, else the defaults): parameters are bounded by the file's size, but a pool's
    operations, the activations and the depth are not."""
    found = limits.problem(figures, config_keys=False)
    if found:
        fail(f"the model {found}")


def _read_header(blob: bytes, fail) -> tuple:
    """(version, task, output, layers, inputs, low, high) of a header, after the whole-file checks."""
    least = HEADER.size + CRC.size
    if len(blob) < least:
        if blob[: len(MAGIC)] != MAGIC[: len(blob)]:
            fail("not a qmtik model (wrong magic bytes)")
        found = f"{len(blob)} bytes" if blob else "an empty file"
        fail(f"truncated: {found}, fewer than the {least} bytes of a header and a CRC")
    version = check_start(blob, len(blob), fail)
    _, _, _, task, output, count, reserved, inputs, low, high, size = HEADER.unpack_from(blob)
    stored, computed = CRC.unpack_from(blob, size - CRC.size)[0], zlib.crc32(memoryview(blob)[: -CRC.size])
    if stored != computed:
        fail(f"corrupted: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")
    if task >= len(TASKS):
        fail(f"task code {task} is unknown (0 classification, 1 regression)")
    if output >= len(OUTPUTS):
        fail(f"output code {output} is unknown (0 linear, 1 softmax, 2 sigmoid)")
    if count == 0:
        fail(f"0 layers; a model has 1 to {MAX_LAYERS}")
    if reserved != 0:
        fail(f"reserved header byte is {reserved}, must be 0")
    if not 1 <= inputs <= MAX_WIDTH:
        fail(f"{inputs:,} inputs, outside 1..{MAX_WIDTH}")
    check_range(low, high, fail)
    if version >= 2:
        for which, value in (("low", low), ("high", high)):
            if value == 0 and math.copysign(1.0, value) < 0:
                fail(f"input range {which} -0.0: version 2 writes a zero as +0.0")
    return version, task, output, count, inputs, low, high


def _read_names(reader: _Reader, fail) -> tuple:
    (count,) = reader.unpack(COUNT, "the class name count")
    names = []
    for number in range(1, count + 1):
        (length,) = reader.unpack(LENGTH, f"class name {number}")
        raw = reader.take(length, f"class name {number}")
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            fail(f"class name {number} ({raw!r}) is not UTF-8")
    return tuple(names)


def _read_record(reader: _Reader, number: int, last: bool, fan_in: int, in_scale: float, in_zero: int, fail, previous):
    """One version-2 layer record (after previous, None for layer 1): its kind and length, then
    its body, which must fill it exactly."""
    where = f"layer {number}"
    kind, length = reader.unpack(RECORD, f"{where} record")
    if kind >= len(KINDS):
        fail(
            f"{where}: layer kind {kind} is unknown to this qmtik (it reads "
            f"{', '.join(f'{i} {k}' for i, k in enumerate(KINDS))}): a newer qmtik may read it"
        )
    if length < RECORD.size:
        fail(f"{where}: record length {length} bytes, shorter than its kind and length ({RECORD.size} bytes)")
    start = reader.pos
    reader.take(length - RECORD.size, f"{where} record")
    body = _Reader(reader.blob, start, reader.pos, fail, "the end of its record")
    if kind == 0:
        layer = _read_dense(body, where, last, fan_in, in_scale, in_zero, fail)
    else:
        layer = _read_window(body, KINDS[kind], number, last, previous, fan_in, in_scale, in_zero, fail)
    if body.pos != body.end:
        fail(f"{where}: record length {length:,} bytes, but its fields take {body.pos - start + RECORD.size:,}")
    return layer


def _read_window(reader: _Reader, kind: str, number: int, last: bool, previous, fan_in, in_scale, in_zero, fail):
    """A window record's body: its window, checked first (qmtfile_windows.read_window); a pool's
    ends there, a convolution's goes on as a dense body over its taps (kh*kw*C, depthwise kh*kw)."""
    window, out_hw = qmtfile_windows.read_window(reader, kind, number, fan_in, previous, fail)
    if kind not in qmtfile_windows.CONVOLUTIONS:
        return qmtfile_windows.pool_layer(kind, window, in_scale, in_zero, f"layer {number}", fail)
    taps = qmtfile_windows.fan_in_of(kind, window["input_shape"], window["kernel"])
    conv = {"kind": kind, "out_hw": out_hw, "window": window}
    return _read_dense(reader, f"layer {number}", last, taps, in_scale, in_zero, fail, conv)


def _read_dense(
    reader: _Reader, where: str, last: bool, fan_in: int, in_scale: float, in_zero: int, fail, conv=None
) -> intref.IntegerLayer:
    """A dense body, of a dense record or of a convolution's after its window (conv: its kind,
    output size and window): its codes and flags are checked here, its values by its class's
    validate, and a flagged group must vary (one encoding per model)."""
    kind = conv["kind"] if conv else "dense"
    outputs, code, flags, out_zero, out_scale = reader.unpack(DENSE, f"{where} dense fields")
    activation = _check_codes(outputs, code, where, last, fail, kind)
    if conv:
        qmtfile_windows.check_channels(kind, conv["window"]["input_shape"], conv["out_hw"], outputs, where, fail)
    allowed = SCALES | REQUANT | (NEGATIVE if activation == "leaky_relu" else 0)
    if flags & ~allowed:
        fail(
            f"{where}: flags {flags:#04x} set bit {(flags & ~allowed).bit_length() - 1}, which {activation} does "
            f"not use (bits: {', '.join(f'{b.bit_length() - 1} {group}' for b, (group, _) in GROUPS.items())}, "
            "the last for leaky_relu)"
        )
    fields = {
        field: reader.array(dtype, count, f"{where} {field.replace('_', ' ')}")
        for field, dtype, count in dense_arrays(activation, flags, outputs, fan_in)
    }
    for bit, (group, names) in GROUPS.items():
        if flags & bit and not varies(*(fields[name] for name in names)):
            fail(
                f"{where}: flag {bit} stores {group} per channel, but all {outputs:,} channels share "
                "one (version 2 stores a shared value once)"
            )
        for name in names:
            if name in fields:  # one value or one per channel: one per channel
                fields[name] = np.broadcast_to(fields[name], (outputs,))
    with np.errstate(invalid="ignore"):  # a signalling NaN is refused by validate
        fields["weight_scales"] = fields["weight_scales"].astype(np.float64)
    fields["weights"] = fields["weights"].reshape(outputs, fan_in)
    if "table_input_scale" in fields:
        fields["table_input_scale"] = float(fields["table_input_scale"][0])
    return _layer(fields, activation, in_scale, in_zero, out_scale, out_zero, where, fail, conv)


def _layer(fields: dict, activation, in_scale, in_zero, out_scale, out_zero, where, fail, conv=None):
    """The layer of a record's fields (an IntegerLayer, or a convolution's class with its
    window), validated by its class's validate (one rule for every layer in memory); its
    complaint becomes the file's, naming the layer."""
    cls = qmtfile_windows.CLASSES[conv["kind"]] if conv else intref.IntegerLayer
    try:
        return cls(
            **(conv["window"] if conv else {}),
            activation=activation,
            input_scale=in_scale,
            input_zero_point=in_zero,
            output_scale=out_scale,
            output_offset=out_zero,
            **fields,
        )
    except QuantizationError as exc:
        fail(f"{where}: {exc}")


def _check_codes(outputs: int, code: int, where: str, last: bool, fail, kind: str = "dense") -> str:
    """The activation of a record's outputs and activation code, both checked."""
    if not 1 <= outputs <= MAX_WIDTH:
        fail(f"{where}: {outputs:,} outputs, outside 1..{MAX_WIDTH}")
    if code >= len(ACTIVATIONS):
        fail(f"{where}: activation code {code} is unknown ({', '.join(f'{i} {a}' for i, a in enumerate(ACTIVATIONS))})")
    activation = ACTIVATIONS[code]
    check_placement(activation, where, last, fail, kind)
    return activation


def _read_layer_v1(
    reader: _Reader, number: int, last: bool, fan_in: int, in_scale: float, in_zero: int, fail
) -> intref.IntegerLayer:
    """One version-1 layer record (24 fixed bytes, then every array; docs/format.md, "Version 1")."""
    where = f"layer {number}"
    outputs, code, per_channel, out_zero, reserved, out_scale, pre_scale = reader.unpack(LAYER_V1, f"{where} record")
    activation = _check_codes(outputs, code, where, last, fail)
    if per_channel > 1:
        fail(f"{where}: weight-scale flag {per_channel}, must be 0 (per tensor) or 1 (per channel)")
    if reserved != 0:
        fail(f"{where}: reserved byte is {reserved}, must be 0")
    table = activation in q.TABLE_ACTIVATIONS
    if not table and (pre_scale != 0 or math.copysign(1.0, pre_scale) < 0):  # +0.0 exactly
        fail(f"{where}: table input scale {pre_scale!r} must be 0 for {activation} (only sigmoid and tanh have one)")
    with np.errstate(invalid="ignore"):  # a signalling NaN is refused later
        scales = reader.array("<f4", outputs if per_channel else 1, f"{where} weight scales").astype(np.float64)
    fields = {
        "weight_scales": np.broadcast_to(scales, (outputs,)),
        "weights": reader.array("i1", outputs * fan_in, f"{where} weights").reshape(outputs, fan_in),
        "bias": reader.array("<i4", outputs, f"{where} biases"),
    }
    fields["output_multiplier"], fields["output_shift"] = _read_requant(reader, outputs, f"{where} ")
    if activation == "leaky_relu":
        negative = _read_requant(reader, outputs, f"{where} negative-side ")
        fields["negative_multiplier"], fields["negative_shift"] = negative
    if table:
        fields["table"], fields["table_input_scale"] = reader.array("i1", 256, f"{where} table"), pre_scale
    return _layer(fields, activation, in_scale, in_zero, out_scale, out_zero, where, fail)


def _read_requant(reader: _Reader, outputs: int, what: str) -> tuple:
    return reader.array("<u4", outputs, what + "multipliers"), reader.array("u1", outputs, what + "shifts")


def check_start(head: bytes, length: int, fail) -> int:
    """The version of a file whose first HEADER.size bytes are head and whose length is length,
    after the checks a header allows before the body is read: magic, version, header size and
    the file size it gives (load_model runs them against os.stat before reading the body)."""
    magic, version, header_size, *_, size = HEADER.unpack_from(head)
    if magic != MAGIC:
        fail("not a qmtik model (wrong magic bytes)")
    if version > max(VERSIONS):
        fail(
            f"format version {version} is newer than this qmtik reads ({' and '.join(map(str, VERSIONS))}): "
            "upgrade qmtik"
        )
    if version not in VERSIONS:
        fail(f"format version {version} is not valid (versions start at 1)")
    if header_size != HEADER.size:
        fail(f"header size {header_size}, expected {HEADER.size}")
    if size > length:
        fail(f"truncated: the header gives {size:,} bytes, the file has {length:,}")
    if size < length:
        fail(f"trailing data: {length - size:,} bytes after the {size:,} the header gives")
    return version


def load_model(path) -> QuantizedModel:
    """Read and check a .qmt file; a missing or unreadable file is a ModelFormatError too. The
    header is checked against the file's size (os.stat) before the body is read: a large file
    of another kind is refused after 40 bytes; a device or a folder before any (parsing.py)."""
    path = Path(path)
    what = f"model file {path}"
    with input_stream(path, what, ModelFormatError) as (stream, most):
        blob = read_up_to(stream, HEADER.size)
        length = os.fstat(stream.fileno()).st_size if stream.seekable() else 0
        if length >= HEADER.size + CRC.size:  # else decode names the short file
            check_start(blob, length, failing(what))
        blob += read_up_to(stream, min(most, MAX_SIZE) + 1 - len(blob))
    if len(blob) > min(most, MAX_SIZE):  # a FIFO or stdin past the stream limit
        raise ModelFormatError(over_limit(what, f"more than {min(most, MAX_SIZE):,} bytes", STREAM_LIMIT))
    return decode(blob, str(path))
