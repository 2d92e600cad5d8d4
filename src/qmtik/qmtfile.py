"""The .qmt file: an integer model in a small, strict, little-endian binary format.

docs/format.md describes it byte by byte; this module is the reference writer and reader.

Writing packs every field with an explicit little-endian type (never a dump of memory) and
saves through a temporary file that is renamed into place. Reading checks, in this order, the
length, magic, version, header size, file size and CRC-32; then parses field by field with a
bounds check before every read; then checks every value with the very rules `encode` applies
before it writes (the input range and the scales with training's own, so that no model computes
on NaN or writes `inff` into C); and last, that the layers end exactly at the CRC. Nothing in a
file is ever executed, and every problem is a ModelFormatError of one line, "model file NAME: problem".
"""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from . import quantization as q
from .errors import ModelFormatError
from .files import write_atomic
from .model import QuantizedModel, scale_problem

MAGIC = b"\x89QMT\r\n\x1a\n"
VERSION = 1
HEADER = struct.Struct("<8sHHBBBBIddI")     # 40 bytes: magic, version, header size ... file size
COUNT = struct.Struct("<H")                 # the number of class names
LENGTH = struct.Struct("<B")                # the byte length of one class name
LAYER = struct.Struct("<IBBbBdd")           # 24 bytes: the fixed start of a layer record
CRC = struct.Struct("<I")
TASKS = ("classification", "regression")                        # codes 0, 1
OUTPUTS = ("linear", "softmax", "sigmoid")                      # codes 0, 1, 2
ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh")   # codes 0 .. 4
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


def _layer_bytes(layer: q.IntegerLayer) -> bytes:
    outputs = layer.weight.shape[0]
    scales = np.asarray(layer.weight_scale, dtype=np.float64).astype("<f4")   # checked: finite, > 0
    per_channel = bool((scales != scales[0]).any())
    table = layer.activation in q.TABLE_ACTIVATIONS
    parts = [LAYER.pack(outputs, ACTIVATIONS.index(layer.activation), per_channel, int(layer.out_zero), 0,
                        float(layer.out_scale), float(layer.pre_scale) if table else 0.0),
             (scales if per_channel else scales[:1]).tobytes(),
             np.asarray(layer.weight).astype("i1").tobytes(),       # C order: row by row
             np.asarray(layer.bias).astype("<i4").tobytes(),
             *_requant_bytes(layer.multiplier, layer.shift)]
    if layer.activation == "leaky_relu":
        parts += _requant_bytes(layer.neg_multiplier, layer.neg_shift)
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
        fan_in, in_scale, in_zero = layer.weight.shape[0], layer.out_scale, layer.out_zero
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
                fail) -> q.IntegerLayer:
    """One layer record; its codes and sizes are checked here, its values by _check_model."""
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
    _check_scale(out_scale, f"{where} output scale", fail)
    if table:
        _check_scale(pre_scale, f"{where} table input scale", fail)
    with np.errstate(invalid="ignore"):                      # a signalling NaN is refused later
        scales = reader.array("<f4", outputs if per_channel else 1, f"{where} weight scales").astype(np.float64)
    weight = reader.array("i1", outputs * fan_in, f"{where} weights").reshape(outputs, fan_in).astype(np.int8)
    bias = reader.array("<i4", outputs, f"{where} biases").astype(np.int64)
    multiplier, shift = _read_requant(reader, outputs, f"{where} ")
    layer = q.IntegerLayer(weight, bias, multiplier, shift, activation, float(in_scale), int(in_zero),
                           np.broadcast_to(scales, (outputs,)).copy(), out_scale, out_zero)
    if activation == "leaky_relu":
        layer.neg_multiplier, layer.neg_shift = _read_requant(reader, outputs, f"{where} negative-side ")
    if table:
        layer.table = reader.array("i1", 256, f"{where} table").astype(np.int8)
        layer.pre_scale = pre_scale
    return layer


def _read_requant(reader: _Reader, outputs: int, what: str) -> tuple:
    multiplier = reader.array("<u4", outputs, what + "multipliers").astype(np.int64)
    return multiplier, reader.array("u1", outputs, what + "shifts").astype(np.int64)


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
    """Refuse a model the format or the integer arithmetic cannot hold (fail names the field)."""
    if model.task not in TASKS:
        fail(f"task {model.task!r} is not one of {', '.join(TASKS)}")
    if model.output not in OUTPUTS:
        fail(f"output {model.output!r} is not one of {', '.join(OUTPUTS)}")
    if not 1 <= len(model.layers) <= MAX_LAYERS:
        fail(f"{len(model.layers)} layers; a model has 1 to {MAX_LAYERS}")
    _check_range(*model.input_range, fail)
    fan_in = None
    for number, layer in enumerate(model.layers, 1):
        fan_in = _check_layer(layer, number, number == len(model.layers), fan_in, fail)
    _check_names(model.task, model.class_names, fan_in, fail)


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


def _check_layer(layer: q.IntegerLayer, number: int, last: bool, fan_in: int | None, fail) -> int:
    """Check one layer whose input width is fan_in (None: the first layer); its outputs."""
    where = f"layer {number}"
    if layer.activation not in ACTIVATIONS:
        fail(f"{where}: activation {layer.activation!r} is not one of {', '.join(ACTIVATIONS)}")
    _check_placement(layer.activation, where, last, fail)
    weight = _integers(layer.weight, f"{where} weights", fail)
    if weight.ndim != 2:
        fail(f"{where} weights: shape {weight.shape}, expected (outputs, inputs)")
    outputs, width = weight.shape
    if fan_in is None and not 1 <= width <= MAX_WIDTH:
        fail(f"{where}: {width:,} inputs, outside 1..{MAX_WIDTH}")
    if fan_in is not None and width != fan_in:
        fail(f"{where} weights: shape {weight.shape}, but layer {number - 1} has {fan_in} outputs")
    if not 1 <= outputs <= MAX_WIDTH:
        fail(f"{where}: {outputs:,} outputs, outside 1..{MAX_WIDTH}")
    _within(weight, f"{where} weight", -q.WMAX, q.WMAX, fail)
    limit = q.bias_limit(width)
    _within(_vector(layer.bias, outputs, f"{where} bias", fail), f"{where} bias", -limit, limit, fail)
    _check_requant(layer.multiplier, layer.shift, outputs, f"{where} ", fail)
    if layer.activation == "leaky_relu":
        _check_requant(layer.neg_multiplier, layer.neg_shift, outputs, f"{where} negative-side ", fail)
    elif layer.neg_multiplier is not None or layer.neg_shift is not None:
        fail(f"{where}: {layer.activation} has negative-side multipliers; only leaky_relu has them")
    scales = _reals(layer.weight_scale, f"{where} weight scales", fail)
    if scales.shape != (outputs,):
        fail(f"{where} weight scales: shape {scales.shape}, expected ({outputs},)")
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        stored = scales.astype(np.float32)                    # what the file holds
    bad = np.flatnonzero(~(np.isfinite(stored) & (stored > 0)))
    if bad.size:
        fail(f"{where} weight scale {scales[bad[0]]} at [{bad[0]}] is not a finite positive float32")
    _check_scale(layer.out_scale, f"{where} output scale", fail)
    if isinstance(layer.out_zero, (bool, np.bool_)) or not isinstance(layer.out_zero, (int, np.integer)) \
            or not q.QMIN <= layer.out_zero <= q.QMAX:
        fail(f"{where}: output zero point {layer.out_zero} is not an integer in {q.QMIN}..{q.QMAX}")
    if layer.activation in q.TABLE_ACTIVATIONS:
        _check_scale(layer.pre_scale, f"{where} table input scale", fail)
        table = _integers(layer.table, f"{where} table", fail)
        if table.shape != (256,):
            fail(f"{where} table: shape {table.shape}, expected (256,)")
        _within(table, f"{where} table entry", q.QMIN, q.QMAX, fail)
    elif layer.table is not None or layer.pre_scale is not None:
        fail(f"{where}: {layer.activation} has a table or table input scale; only sigmoid and tanh have them")
    return outputs


def _check_requant(multiplier, shift, outputs: int, what: str, fail) -> None:
    multiplier = _vector(multiplier, outputs, what + "multipliers", fail)
    shift = _vector(shift, outputs, what + "shifts", fail)
    _within(multiplier, what + "multiplier", 0, 2**q.MULTIPLIER_BITS - 1, fail)
    _within(shift, what + "shift", 0, q.MAX_SHIFT, fail)
    bad = np.flatnonzero((multiplier == 0) & (shift != 0))
    if bad.size:
        fail(f"{what}multiplier 0 at [{bad[0]}] has shift {shift[bad[0]]}; a zero multiplier has shift 0")


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


def _integers(values, what: str, fail) -> np.ndarray:
    if values is None:
        fail(f"{what}: missing")
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        fail(f"{what}: dtype {values.dtype}, expected integers")
    return values


def _vector(values, length: int, what: str, fail) -> np.ndarray:
    values = _integers(values, what, fail)
    if values.shape != (length,):
        fail(f"{what}: shape {values.shape}, expected ({length},)")
    return values


def _within(values: np.ndarray, what: str, low: int, high: int, fail) -> None:
    """Fail naming the first value outside [low, high] and its index."""
    if values.dtype.kind == "u":
        outside = values > high                     # low <= 0 here: unsigned values are never below
    else:
        outside = (values < low) | (values > high)
    bad = np.flatnonzero(outside)
    if bad.size:
        index = [int(i) for i in np.unravel_index(bad[0], values.shape)]
        fail(f"{what} {values.flat[bad[0]]} at {index} is outside {low}..{high}")


def _reals(values, what: str, fail) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        fail(f"{what}: not numbers")


def _check_scale(value, what: str, fail) -> None:
    """Fail unless value is a scale the model can compute with (model.scale_problem)."""
    problem = scale_problem(value)
    if problem:
        fail(f"{what} {value} {problem}")
