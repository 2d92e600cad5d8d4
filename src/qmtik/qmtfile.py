"""The .qmt file: an integer model in a small, strict, little-endian binary format.

docs/format.md describes it byte by byte; this module is the reference writer and reader.

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

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from . import intref
from . import quantization as q
from .errors import ModelFormatError, QuantizationError
from .files import write_atomic
from .model import QuantizedModel, model_problem

MAGIC = b"\x89QMT\r\n\x1a\n"
VERSION = 1
HEADER = struct.Struct("<8sHHBBBBIddI")     # 40 bytes: magic, version, header size ... file size
COUNT = struct.Struct("<H")                 # the number of class names
LENGTH = struct.Struct("<B")                # the byte length of one class name
LAYER = struct.Struct("<IBBbBdd")           # 24 bytes: the fixed start of a layer record
CRC = struct.Struct("<I")
TASKS = ("classification", "regression")                        # codes 0, 1
OUTPUTS = ("linear", "softmax", "sigmoid")                      # codes 0, 1, 2
ACTIVATIONS = intref.ACTIVATIONS                                  # codes 0 .. 4, in that order
MAX_LAYERS = 255
MAX_WIDTH = q.MAX_FAN_IN                    # inputs and every layer's outputs: 1 .. 65536
MAX_NAME = 255                              # bytes of UTF-8 in one class name
MAX_SIZE = 2**32 - 1                        # the file size is a u32


def _failing(prefix: str):
    """A function that raises ModelFormatError("prefix: problem")."""
    def fail(problem: str):
        raise ModelFormatError(f"{prefix}: {problem}")
    return fail


# --- writing -----------------------------------------------------------------------------------

def encode(model: QuantizedModel) -> bytes:
    """The .qmt bytes of model.

    Refuses, with a ModelFormatError naming the layer and the field, a model that the format
    or the integer arithmetic cannot hold: whatever encode writes, decode reads back.
    """
    _check_model(model, _failing("cannot encode model"))
    body = b"".join([_names_bytes(model.class_names), *map(_layer_bytes, model.layers)])
    size = HEADER.size + len(body) + CRC.size
    if size > MAX_SIZE:
        raise ModelFormatError(f"cannot encode model: {size:,} bytes, more than a .qmt file holds ({MAX_SIZE:,})")
    low, high = model.input_range
    header = HEADER.pack(MAGIC, VERSION, HEADER.size, TASKS.index(model.task), OUTPUTS.index(model.output),
                         len(model.layers), 0, model.inputs, low, high, size)
    blob = header + body
    return blob + CRC.pack(zlib.crc32(blob))


def _names_bytes(names) -> bytes:
    names = names or ()
    parts = [COUNT.pack(len(names))]
    for name in names:
        raw = name.encode("utf-8")
        parts += [LENGTH.pack(len(raw)), raw]
    return b"".join(parts)


def _layer_bytes(layer: intref.IntegerLayer) -> bytes:
    scales = layer.weight_scales.astype("<f4")                 # validated: finite, > 0 in float32
    per_channel = bool((scales != scales[0]).any())
    table = layer.activation in q.TABLE_ACTIVATIONS
    parts = [LAYER.pack(layer.outputs, ACTIVATIONS.index(layer.activation), per_channel, layer.output_offset, 0,
                        layer.output_scale, layer.table_input_scale if table else 0.0),
             (scales if per_channel else scales[:1]).tobytes(),
             layer.weights.astype("i1").tobytes(),                  # C order: row by row
             layer.bias.astype("<i4").tobytes(),
             *_requant_bytes(layer.output_multiplier, layer.output_shift)]
    if layer.activation == "leaky_relu":
        parts += _requant_bytes(layer.negative_multiplier, layer.negative_shift)
    if table:
        parts.append(np.asarray(layer.table).astype("i1").tobytes())
    return b"".join(parts)


def _requant_bytes(multiplier, shift) -> list:
    return [np.asarray(multiplier).astype("<u4").tobytes(), np.asarray(shift).astype("u1").tobytes()]


def save_model(path, model: QuantizedModel) -> None:
    """Write model to path as a .qmt file, atomically: any failure leaves the previous file."""
    blob = encode(model)
    write_atomic(path, lambda f: f.write(blob))


# --- reading -----------------------------------------------------------------------------------

class _Reader:
    """Reads fields in order from blob[pos:end], refusing to run past end."""

    def __init__(self, blob: bytes, pos: int, end: int, fail):
        self.blob, self.pos, self.end, self.fail = blob, pos, end, fail

    def take(self, count: int, what: str) -> bytes:
        if count > self.end - self.pos:
            self.fail(f"{what} runs past the end of the data ({count:,} bytes at offset {self.pos:,}, "
                      f"{self.end - self.pos:,} left before the CRC)")
        chunk = self.blob[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fields: struct.Struct, what: str) -> tuple:
        return fields.unpack(self.take(fields.size, what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """count values of a little-endian dtype, as a read-only view (callers convert)."""
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count, what), dtype=dtype)


def decode(blob: bytes, name: str = "<bytes>") -> QuantizedModel:
    """The model in .qmt bytes, every field checked; a ModelFormatError names the problem."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode needs bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    fail = _failing(f"model file {name}")
    task, output, count, inputs, low, high = _read_header(blob, fail)
    reader = _Reader(blob, HEADER.size, len(blob) - CRC.size, fail)
    names = _read_names(reader, fail)
    layers, fan_in, in_scale, in_zero = [], inputs, q.INPUT_SCALE, q.INPUT_ZERO
    for number in range(1, count + 1):
        layer = _read_layer(reader, number, number == count, fan_in, in_scale, in_zero, fail)
        layers.append(layer)
        fan_in, in_scale, in_zero = layer.outputs, layer.output_scale, layer.output_offset
    model = QuantizedModel(TASKS[task], OUTPUTS[output], (low, high), layers, names or None)
    _check_model(model, fail)
    if reader.pos != reader.end:
        fail(f"{reader.end - reader.pos:,} bytes left over between the last layer and the CRC")
    return model


def _read_header(blob: bytes, fail) -> tuple:
    """(task, output, layers, inputs, low, high) codes of a header, after the whole-file checks."""
    least = HEADER.size + CRC.size
    if len(blob) < least:
        if blob[:len(MAGIC)] != MAGIC[:len(blob)]:
            fail("not a qmtik model (wrong magic bytes)")
        found = f"{len(blob)} bytes" if blob else "an empty file"
        fail(f"truncated: {found}, fewer than the {least} bytes of a header and a CRC")
    magic, version, header_size, task, output, count, reserved, inputs, low, high, size = HEADER.unpack_from(blob)
    if magic != MAGIC:
        fail("not a qmtik model (wrong magic bytes)")
    if version > VERSION:
        fail(f"format version {version} is newer than this qmtik reads ({VERSION}): upgrade qmtik")
    if version < 1:
        fail(f"format version {version} is not valid (versions start at 1)")
    if header_size != HEADER.size:
        fail(f"header size {header_size}, expected {HEADER.size}")
    if size > len(blob):
        fail(f"truncated: the header gives {size:,} bytes, the file has {len(blob):,}")
    if size < len(blob):
        fail(f"trailing data: {len(blob) - size:,} bytes after the {size:,} the header gives")
    stored, computed = CRC.unpack_from(blob, size - CRC.size)[0], zlib.crc32(memoryview(blob)[:-CRC.size])
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
    _check_range(low, high, fail)
    return task, output, count, inputs, low, high


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


def _read_layer(reader: _Reader, number: int, last: bool, fan_in: int, in_scale: float, in_zero: int,
                fail) -> intref.IntegerLayer:
    """One layer record; its codes and sizes are checked here, its values by IntegerLayer.validate."""
    where = f"layer {number}"
    outputs, code, per_channel, out_zero, reserved, out_scale, pre_scale = reader.unpack(LAYER, f"{where} record")
    if not 1 <= outputs <= MAX_WIDTH:
        fail(f"{where}: {outputs:,} outputs, outside 1..{MAX_WIDTH}")
    if code >= len(ACTIVATIONS):
        fail(f"{where}: activation code {code} is unknown "
             f"({', '.join(f'{i} {a}' for i, a in enumerate(ACTIVATIONS))})")
    activation = ACTIVATIONS[code]
    _check_placement(activation, where, last, fail)
    if per_channel > 1:
        fail(f"{where}: weight-scale flag {per_channel}, must be 0 (per tensor) or 1 (per channel)")
    if reserved != 0:
        fail(f"{where}: reserved byte is {reserved}, must be 0")
    table = activation in q.TABLE_ACTIVATIONS
    if not table and (pre_scale != 0 or math.copysign(1.0, pre_scale) < 0):     # +0.0 exactly
        fail(f"{where}: table input scale {pre_scale!r} must be 0 for {activation} (only sigmoid and tanh have one)")
    with np.errstate(invalid="ignore"):                      # a signalling NaN is refused later
        scales = reader.array("<f4", outputs if per_channel else 1, f"{where} weight scales").astype(np.float64)
    weight = reader.array("i1", outputs * fan_in, f"{where} weights").reshape(outputs, fan_in)
    bias = reader.array("<i4", outputs, f"{where} biases")
    multiplier, shift = _read_requant(reader, outputs, f"{where} ")
    negative = _read_requant(reader, outputs, f"{where} negative-side ") if activation == "leaky_relu" else (None, None)
    values = reader.array("i1", 256, f"{where} table") if table else None
    try:
        return intref.IntegerLayer(weight, bias, multiplier, shift, activation, in_scale, in_zero,
                                   np.broadcast_to(scales, (outputs,)), out_scale, out_zero, *negative, values,
                                   pre_scale if table else None)
    except QuantizationError as exc:
        fail(f"{where}: {exc}")


def _read_requant(reader: _Reader, outputs: int, what: str) -> tuple:
    return reader.array("<u4", outputs, what + "multipliers"), reader.array("u1", outputs, what + "shifts")


def load_model(path) -> QuantizedModel:
    """Read and check a .qmt file; a missing or unreadable file is a ModelFormatError too."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"model file {path}: not found") from None
    except OSError as exc:
        raise ModelFormatError(f"model file {path}: cannot be read ({exc.strerror or exc})") from None
    return decode(blob, str(path))


# --- what a model may hold: one set of rules for encode and decode -----------------------------

def _check_model(model: QuantizedModel, fail) -> None:
    """Refuse a model the format cannot hold (fail names the field). Each layer is valid by
    construction (IntegerLayer.validate); what is left is the file's own rules."""
    if model.task not in TASKS:
        fail(f"task {model.task!r} is not one of {', '.join(TASKS)}")
    if model.output not in OUTPUTS:
        fail(f"output {model.output!r} is not one of {', '.join(OUTPUTS)}")
    if not 1 <= len(model.layers) <= MAX_LAYERS:
        fail(f"{len(model.layers)} layers; a model has 1 to {MAX_LAYERS}")
    problem = model_problem(model.input_range, model.layers)     # the input range, the fan-in chain
    if problem:
        fail(problem)
    for number, layer in enumerate(model.layers, 1):
        _check_placement(layer.activation, f"layer {number}", number == len(model.layers), fail)
        if layer.outputs > MAX_WIDTH:
            fail(f"layer {number}: {layer.outputs:,} outputs, outside 1..{MAX_WIDTH}")
    _check_names(model.task, model.class_names, model.layers[-1].outputs, fail)


def _check_range(low: float, high: float, fail) -> None:
    """Fail unless raw inputs in [low, high] map to int8 codes in float32: training's own rule."""
    problem = q.input_range_problem(low, high)
    if problem:
        fail(f"input range [{low}, {high}] {problem}")


def _check_placement(activation: str, where: str, last: bool, fail) -> None:
    if last and activation != "linear":
        fail(f"{where}: activation {activation}, but the last layer must be linear")
    if not last and activation == "linear":
        fail(f"{where}: activation linear, but a hidden layer must not be linear")


def _check_names(task: str, names, outputs: int, fail) -> None:
    if not names:
        return
    if task != "classification":
        fail(f"{len(names)} class names for a {task} model; only classification has class names")
    classes = max(outputs, 2)
    if len(names) != classes:
        fail(f"{len(names)} class names for {classes} classes (one name per class, or none)")
    if len(names) > 2**16 - 1:
        fail(f"{len(names):,} class names, more than the format holds ({2**16 - 1:,})")
    for number, name in enumerate(names, 1):
        if not isinstance(name, str):
            fail(f"class name {number} is a {type(name).__name__}, not text")
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            fail(f"class name {number} {name!r} cannot be written as UTF-8")
        if not 1 <= size <= MAX_NAME:
            fail(f"class name {number} {name!r} is {size} bytes of UTF-8; 1 to {MAX_NAME} are allowed")
