"""The .qmt file's layout and rules: every version's fields in one place, and what a model
may hold, one set of rules for the writer (qmtfile.py) and the reader (qmtfile_reader.py).

docs/format.md describes the same layout byte by byte.
"""

from __future__ import annotations

import struct

from . import intref, qmtfile_windows
from . import quantization as q
from .errors import ModelFormatError
from .functions import OUTPUTS, TASKS
from .integer_model import QuantizedModel, model_problem
from .validate import class_names_problem

MAGIC = b"\x89QMT\r\n\x1a\n"
VERSION = 2  # what encode writes
VERSIONS = (1, 2)  # what decode reads
HEADER = struct.Struct("<8sHHBBBBIddI")  # 40 bytes: magic, version, header size ... file size (both versions)
COUNT = struct.Struct("<H")  # the number of class names
LENGTH = struct.Struct("<B")  # the byte length of one class name
CRC = struct.Struct("<I")
# TASKS and OUTPUTS (functions.py): a task's or output's code is its index there, never reordered
ACTIVATIONS = intref.ACTIVATIONS  # codes 0 .. 4, in that order

# version 2: a record = RECORD (kind, length) + the kind's body; a dense body = DENSE + arrays
RECORD = struct.Struct("<BI")  # 5 bytes: kind code, the record's length in bytes (these 5 included)
KINDS = ("dense", *qmtfile_windows.KINDS)  # kind codes 0 .. 5 (a layer's .kind), never reordered
# a window record (kinds 1 .. 5) = RECORD + its window (qmtfile_windows: WINDOW, or SHAPE for
# global_avg_pool); a convolution's then goes on as a dense body (DENSE + arrays), a pool's ends
DENSE = struct.Struct("<IBBbd")  # 15 bytes: outputs, activation, flags, output zero point, output scale
SCALES, REQUANT, NEGATIVE = 1, 2, 4  # DENSE flag bits: these groups are stored once per output channel
GROUPS = {
    SCALES: ("weight scales", ("weight_scales",)),
    REQUANT: ("requantization", ("output_multiplier", "output_shift")),
    NEGATIVE: ("negative-side requantization", ("negative_multiplier", "negative_shift")),
}

# version 1, read only: 24 fixed bytes, then the arrays (docs/format.md, "Version 1")
LAYER_V1 = struct.Struct("<IBBbBdd")  # outputs, activation, weight-scale flag, zero point, 0, scales

MAX_LAYERS = 255
MAX_WIDTH = q.MAX_FAN_IN  # inputs and every layer's outputs: 1 .. 65536
MAX_SIZE = 2**32 - 1  # the file size is a u32


def dense_arrays(activation: str, flags: int, outputs: int, fan_in: int) -> list:
    """The arrays after a version-2 dense record's DENSE fields, in file order, as (IntegerLayer
    field, little-endian dtype, count): the one statement of the layout, which the writer and
    the reader both follow. A group of GROUPS has one value per output channel when its flag
    bit is set, else one value."""
    bit_of = {field: bit for bit, (_, fields) in GROUPS.items() for field in fields}

    def count(field):
        return outputs if flags & bit_of[field] else 1

    arrays = [
        ("weight_scales", "<f4", count("weight_scales")),
        ("weights", "i1", outputs * fan_in),
        ("bias", "<i4", outputs),
        ("output_multiplier", "<u4", count("output_multiplier")),
        ("output_shift", "u1", count("output_shift")),
    ]
    if activation == "leaky_relu":
        arrays += [
            ("negative_multiplier", "<u4", count("negative_multiplier")),
            ("negative_shift", "u1", count("negative_shift")),
        ]
    if activation in q.TABLE_ACTIVATIONS:
        arrays += [("table_input_scale", "<f8", 1), ("table", "i1", 256)]
    return arrays


def varies(*arrays) -> bool:
    """True when some channel's values differ from channel 0's: they need one value each."""
    return any(bool((array != array[0]).any()) for array in arrays)


def failing(prefix: str):
    """A function that raises ModelFormatError("prefix: problem")."""

    def fail(problem: str):
        raise ModelFormatError(f"{prefix}: {problem}")

    return fail


# --- what a model may hold: one set of rules for encode and decode -----------------------------


def check_model(model: QuantizedModel, fail) -> None:
    """Refuse a model the format cannot hold (fail names the field). Each layer is valid by
    construction (IntegerLayer.validate, and the window classes'); what is left is the file's
    own rules: codes, widths, where linear layers may be, and the chain of window layers (their
    shapes, and the input scale and zero point the file does not store)."""
    if model.task not in TASKS:
        fail(f"task {model.task!r} is not one of {', '.join(TASKS)}")
    if model.output not in OUTPUTS:
        fail(f"output {model.output!r} is not one of {', '.join(OUTPUTS)}")
    if not 1 <= len(model.layers) <= MAX_LAYERS:
        fail(f"{len(model.layers)} layers; a model has 1 to {MAX_LAYERS}")
    problem = model_problem(model.input_range, model.layers, KINDS)  # the input range, the fan-in chain
    if problem:
        fail(problem)
    previous, scale, zero = None, q.INPUT_SCALE, q.INPUT_ZERO
    for number, layer in enumerate(model.layers, 1):
        where = f"layer {number}"
        if isinstance(layer, intref.IntegerLayer):  # dense and the convolutions
            check_placement(layer.activation, where, number == len(model.layers), fail, layer.kind)
        if layer.outputs > MAX_WIDTH:
            fail(f"{where}: {layer.outputs:,} outputs, outside 1..{MAX_WIDTH}")
        if layer.kind != "dense":
            fan_in = previous.outputs if previous is not None else layer.inputs
            problem = qmtfile_windows.shape_problem(layer.input_shape, fan_in, previous, number)
            problem = problem or qmtfile_windows.scale_problem(layer, scale, zero, where)
            if problem:
                fail(problem)
        previous, scale, zero = layer, layer.output_scale, layer.output_offset
    problem = class_names_problem(model.task, model.class_names, model.layers[-1].outputs)
    if problem:
        fail(problem)


def check_range(low: float, high: float, fail) -> None:
    """Fail unless raw inputs in [low, high] map to int8 codes in float32: training's own rule."""
    problem = q.input_range_problem(low, high)
    if problem:
        fail(f"input range [{low}, {high}] {problem}")


def check_placement(activation: str, where: str, last: bool, fail, kind: str = "dense") -> None:
    """Fail unless the last layer is linear and no hidden dense layer is (a hidden convolution
    may be linear, as a depthwise-separable block's often is)."""
    if last and activation != "linear":
        fail(f"{where}: activation {activation}, but the last layer must be linear")
    if not last and activation == "linear" and kind == "dense":
        fail(f"{where}: activation linear, but a hidden layer must not be linear")
