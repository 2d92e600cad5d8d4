"""The .qmt file: an integer model in a small, strict, little-endian binary format.

docs/format.md describes it byte by byte. Writing goes field by field (never a struct dump of
memory) to a temporary file that is renamed into place; reading checks the magic, version,
sizes, CRC-32 and every value's range before a model is built, and nothing is ever executed.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from . import quantization as q
from .checkpoint import write_atomic
from .errors import ModelFormatError
from .model import QuantizedModel

MAGIC = b"\x89QMT\r\n\x1a\n"
VERSION = 1
HEADER = struct.Struct("<8sHHBBBBIddI")          # 40 bytes
LAYER = struct.Struct("<IBBbBdd")                # 24 bytes
TASKS = ("classification", "regression")
OUTPUTS = ("linear", "softmax", "sigmoid")
ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh")
MAX_WIDTH = q.MAX_FAN_IN


# --- writing -----------------------------------------------------------------------------------

def encode(model: QuantizedModel) -> bytes:
    """The .qmt bytes of a model; refuses values the format cannot hold."""
    _check_model(model)
    low, high = model.input_range
    parts = [b"", _class_names(model.class_names)]
    for layer in model.layers:
        parts.append(_layer_bytes(layer))
    body = b"".join(parts)
    size = HEADER.size + len(body) + 4
    header = HEADER.pack(MAGIC, VERSION, HEADER.size, TASKS.index(model.task), OUTPUTS.index(model.output),
                         len(model.layers), 0, model.inputs, low, high, size)
    blob = header + body
    return blob + struct.pack("<I", zlib.crc32(blob))


def _class_names(names) -> bytes:
    names = names or ()
    out = [struct.pack("<H", len(names))]
    for name in names:
        raw = name.encode("utf-8")
        out.append(struct.pack("<B", len(raw)) + raw)
    return b"".join(out)


def _layer_bytes(layer: q.IntegerLayer) -> bytes:
    scales = np.asarray(layer.weight_scale, dtype=np.float32)
    per_channel = not np.all(scales == scales[0])
    pre = layer.pre_scale if layer.table is not None else 0.0
    out = [LAYER.pack(layer.weight.shape[0], ACTIVATIONS.index(layer.activation), int(per_channel),
                      layer.out_zero, 0, layer.out_scale, pre),
           (scales if per_channel else scales[:1]).astype("<f4").tobytes(),
           layer.weight.astype(np.int8).tobytes(),
           layer.bias.astype("<i4").tobytes(),
           layer.multiplier.astype("<u4").tobytes(),
           layer.shift.astype(np.uint8).tobytes()]
    if layer.activation == "leaky_relu":
        out += [layer.neg_multiplier.astype("<u4").tobytes(), layer.neg_shift.astype(np.uint8).tobytes()]
    if layer.table is not None:
        out.append(layer.table.astype(np.int8).tobytes())
    return b"".join(out)


def save_model(path, model: QuantizedModel) -> None:
    """Write model to path atomically: a failure leaves the previous file in place."""
    blob = encode(model)
    write_atomic(path, lambda f: f.write(blob))


# --- reading -----------------------------------------------------------------------------------

class _Reader:
    """Reads fields in order from a byte string, refusing to run past its end."""

    def __init__(self, blob: bytes, end: int, fail):
        self.blob, self.pos, self.end, self.fail = blob, 0, end, fail

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.pos + count > self.end:
            self.fail(f"{what} runs past the end of the file (truncated or corrupted)")
        chunk = self.blob[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fmt: struct.Struct, what: str):
        return fmt.unpack(self.take(fmt.size, what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(size * count, what), dtype=dtype).copy()


def decode(blob: bytes, name: str = "<bytes>") -> QuantizedModel:
    """A model from .qmt bytes, every field checked; ModelFormatError names what is wrong."""
    def fail(problem):
        raise ModelFormatError(f"model file {name}: {problem}")

    if blob[:len(MAGIC)] != MAGIC[:len(blob)] or (not blob):
        fail("not a qmtik model (bad magic)" if blob else "empty file")
    if len(blob) < HEADER.size + 4:
        fail(f"truncated: {len(blob)} bytes, shorter than a header and a CRC ({HEADER.size + 4})")
    magic, version, header_size, task, output, count, reserved, inputs, low, high, size = HEADER.unpack_from(blob)
    if magic != MAGIC:
        fail("not a qmtik model (bad magic)")
    if version > VERSION:
        fail(f"format version {version} is newer than this qmtik reads ({VERSION}); upgrade qmtik")
    if version < 1:
        fail(f"format version {version} is not valid")
    if header_size != HEADER.size:
        fail(f"header size {header_size}, expected {HEADER.size}")
    if size != len(blob):
        fail(f"truncated: the header says {size} bytes, the file has {len(blob)}" if size > len(blob)
             else f"{len(blob) - size} bytes after the end the header gives ({size})")
    stored = struct.unpack_from("<I", blob, len(blob) - 4)[0]
    if zlib.crc32(blob[:-4]) != stored:
        fail("corrupted: CRC mismatch")
    if task >= len(TASKS):
        fail(f"task code {task} is unknown")
    if output >= len(OUTPUTS):
        fail(f"output code {output} is unknown")
    if reserved != 0:
        fail("reserved header byte is not 0")
    if not 1 <= count:
        fail("a model needs at least one layer")
    if not 1 <= inputs <= MAX_WIDTH:
        fail(f"inputs {inputs} out of range 1..{MAX_WIDTH}")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        fail(f"input range [{low}, {high}] is not finite with low < high")
    reader = _Reader(blob, len(blob) - 4, fail)
    reader.pos = HEADER.size
    names = _read_class_names(reader, fail)
    layers, fan_in, in_scale, in_zero = [], inputs, q.INPUT_SCALE, q.INPUT_ZERO
    for index in range(count):
        layer = _read_layer(reader, fan_in, in_scale, in_zero, index + 1, index == count - 1, fail)
        layers.append(layer)
        fan_in, in_scale, in_zero = layer.weight.shape[0], layer.out_scale, layer.out_zero
    if reader.pos != reader.end:
        fail(f"{reader.end - reader.pos} unexpected bytes before the CRC")
    outputs = fan_in
    task_name = TASKS[task]
    if names is not None:
        expected = max(outputs, 2)
        if task_name != "classification" or len(names) != expected:
            fail(f"{len(names)} class names for a {task_name} model with {expected} classes")
    return QuantizedModel(task_name, OUTPUTS[output], (low, high), layers, names)


def _read_class_names(reader: _Reader, fail):
    (count,) = reader.unpack(struct.Struct("<H"), "the class name count")
    names = []
    for i in range(count):
        (length,) = reader.unpack(struct.Struct("<B"), f"class name {i + 1}")
        if length == 0:
            fail(f"class name {i + 1} is empty")
        try:
            names.append(reader.take(length, f"class name {i + 1}").decode("utf-8"))
        except UnicodeDecodeError:
            fail(f"class name {i + 1} is not UTF-8")
    return tuple(names) if count else None


def _read_layer(reader: _Reader, fan_in: int, in_scale: float, in_zero: int, number: int, last: bool, fail):
    where = f"layer {number}"
    outputs, kind, per_channel, out_zero, reserved, out_scale, pre_scale = reader.unpack(LAYER, where)
    if not 1 <= outputs <= MAX_WIDTH:
        fail(f"{where}: {outputs} outputs, out of range 1..{MAX_WIDTH}")
    if kind >= len(ACTIVATIONS):
        fail(f"{where}: activation code {kind} is unknown")
    activation = ACTIVATIONS[kind]
    if last != (activation == "linear"):
        fail(f"{where}: activation {activation!r}; the last layer must be linear and only the last")
    if per_channel > 1 or reserved != 0:
        fail(f"{where}: reserved or flag byte out of range")
    table = activation in q.TABLE_ACTIVATIONS
    if not (np.isfinite(out_scale) and out_scale > 0):
        fail(f"{where}: output scale {out_scale} is not a finite positive number")
    if table != (pre_scale != 0) or not np.isfinite(pre_scale) or pre_scale < 0:
        fail(f"{where}: table input scale {pre_scale} does not fit activation {activation!r}")
    if table and (out_scale, out_zero) != q.table_output_params(activation):
        fail(f"{where}: {activation} output scale and zero point must be the table's fixed ones")
    scales = reader.array("<f4", outputs if per_channel else 1, f"{where} weight scales").astype(np.float64)
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        fail(f"{where}: weight scales must be finite and positive")
    weight = reader.array("i1", outputs * fan_in, f"{where} weights").reshape(outputs, fan_in)
    if (weight == -128).any():
        fail(f"{where}: weight -128 outside the symmetric range -127..127")
    bias = reader.array("<i4", outputs, f"{where} biases").astype(np.int64)
    if np.abs(bias).max() > q.bias_limit(fan_in):
        fail(f"{where}: bias beyond ±{q.bias_limit(fan_in)}, which could overflow the int32 accumulator")
    multiplier, shift = _read_requant(reader, outputs, where, fail)
    layer = q.IntegerLayer(weight, bias, multiplier, shift, activation, in_scale, in_zero,
                           np.broadcast_to(scales, (outputs,)).copy(), out_scale, out_zero)
    if activation == "leaky_relu":
        layer.neg_multiplier, layer.neg_shift = _read_requant(reader, outputs, where + " negative side", fail)
    if table:
        layer.table, layer.pre_scale = reader.array("i1", 256, f"{where} table"), pre_scale
    return layer


def _read_requant(reader: _Reader, outputs: int, where: str, fail):
    multiplier = reader.array("<u4", outputs, f"{where} multipliers").astype(np.int64)
    shift = reader.array("u1", outputs, f"{where} shifts").astype(np.int64)
    if multiplier.max() >= 2**q.MULTIPLIER_BITS:
        fail(f"{where}: multiplier {multiplier.max()} is not below 2**{q.MULTIPLIER_BITS}")
    if shift.max() > q.MAX_SHIFT:
        fail(f"{where}: shift {shift.max()} is above {q.MAX_SHIFT}")
    return multiplier, shift


def load_model(path) -> QuantizedModel:
    """Read and check a .qmt file."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"model file {path}: not found") from None
    except OSError as exc:
        raise ModelFormatError(f"model file {path}: cannot be read ({exc.strerror or exc})") from None
    return decode(blob, str(path))


# --- what encode refuses ---------------------------------------------------------------------

def _check_model(model: QuantizedModel) -> None:
    """Refuse a model whose values the format (and the arithmetic) cannot hold."""
    def fail(problem):
        raise ModelFormatError(f"model: {problem}")

    if not 1 <= len(model.layers) <= 255:
        fail(f"{len(model.layers)} layers; 1 to 255 are allowed")
    if model.task not in TASKS or model.output not in OUTPUTS:
        fail(f"task {model.task!r} or output {model.output!r} is unknown")
    for number, layer in enumerate(model.layers, 1):
        where = f"layer {number}"
        outputs, fan_in = layer.weight.shape
        if layer.activation not in ACTIVATIONS:
            fail(f"{where}: activation {layer.activation!r} is unknown")
        if not (1 <= outputs <= MAX_WIDTH and 1 <= fan_in <= MAX_WIDTH):
            fail(f"{where}: shape {layer.weight.shape} out of range")
        if np.abs(layer.weight.astype(np.int64)).max() > q.WMAX:
            fail(f"{where}: weights outside -127..127")
        if np.abs(layer.bias).max() > q.bias_limit(fan_in):
            fail(f"{where}: bias beyond ±{q.bias_limit(fan_in)}")
        pairs = [(layer.multiplier, layer.shift)]
        if layer.activation == "leaky_relu":
            pairs.append((layer.neg_multiplier, layer.neg_shift))
        for multiplier, shift in pairs:
            if multiplier.min() < 0 or multiplier.max() >= 2**q.MULTIPLIER_BITS or shift.min() < 0 \
                    or shift.max() > q.MAX_SHIFT:
                fail(f"{where}: requantization multiplier or shift out of range")
        if not q.QMIN <= layer.out_zero <= q.QMAX:
            fail(f"{where}: output zero point {layer.out_zero} out of range")
    for name in model.class_names or ():
        if not 1 <= len(name.encode("utf-8")) <= 255:
            fail(f"class name {name!r} must be 1 to 255 bytes of UTF-8")
