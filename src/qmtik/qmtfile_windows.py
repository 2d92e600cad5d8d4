"""The .qmt records of the window kinds: conv2d (pointwise and conv1d too), depthwise_conv2d,
max_pool, avg_pool and global_avg_pool (docs/format.md, "Window records").

Every window record starts, right after its kind and length, with its window: the input shape
(H, W, C), then kernel, stride and pads, all u32 (WINDOW; a global average pool stores the shape
alone, SHAPE, since its window is the whole input). A convolution's record goes on with a dense
record's fields and arrays (qmtfile_reader reads them, with the fan-in kh*kw*C, or kh*kw for
depthwise); a pool's ends there: its scale and zero point are its input's, never stored.

This module reads and checks the window before anything that depends on it (so that no size
comes from an unchecked field), checks a window layer against the layer before it (one rule for
the writer and the reader: shapes chain, and scale and zero point pass through unchanged), and
builds a pool through its intref_windows class, whose validate() is the rule in memory.
"""

from __future__ import annotations

import struct

from . import intref_windows, spatial
from . import quantization as q
from .errors import QuantizationError, ShapeError

KINDS = intref_windows.KINDS  # conv2d, depthwise_conv2d, max_pool, avg_pool, global_avg_pool
CONVOLUTIONS = intref_windows.CONVOLUTIONS  # their records carry a dense record's fields
CLASSES = {"conv2d": intref_windows.ConvLayer, "depthwise_conv2d": intref_windows.DepthwiseLayer}
CLASSES.update(intref_windows.POOL_CLASSES)
SHAPE = struct.Struct("<III")  # 12 bytes: the input's height, width, channels
WINDOW = struct.Struct("<III2I2I4I")  # 44 bytes: SHAPE, kernel (kh, kw), stride (sh, sw), pads (t, b, l, r)
MAX_SIZE = q.MAX_FAN_IN  # every size and every layer's flat width: 1 .. 65536, as a dense record's


def window_bytes(layer) -> bytes:
    """The window fields of a window layer's record as written (right after its kind and length)."""
    if layer.kind == "global_avg_pool":
        return SHAPE.pack(*layer.input_shape)
    return WINDOW.pack(*layer.input_shape, *layer.kernel, *layer.stride, *layer.pads)


def read_window(reader, kind: str, number: int, fan_in: int, previous, fail) -> tuple[dict, tuple]:
    """(the window fields of layer number's record of kind, as the layer's class takes them;
    its output height and width), every field checked: sizes, the window against its padded
    input (spatial's rule), the input against the layer before (previous; None before layer 1,
    whose input is the model's fan_in raw codes), the taps of a window and, for a pool, the
    output within the format's widths (a convolution's needs its channels: check_output)."""
    where = f"layer {number}"
    if kind == "global_avg_pool":
        shape = reader.unpack(SHAPE, f"{where} input shape")
        kernel, stride, pads = shape[:2], shape[:2], (0, 0, 0, 0)
        window = {"input_shape": shape}
    else:
        values = reader.unpack(WINDOW, f"{where} window")
        shape, kernel, stride, pads = values[:3], values[3:5], values[5:7], values[7:]
        window = {"input_shape": shape, "kernel": kernel, "stride": stride, "pads": pads}
    if not all(1 <= size <= MAX_SIZE for size in shape):
        fail(f"{where}: input shape {_dims(shape)}: each size must be 1 to {MAX_SIZE}")
    problem = shape_problem(shape, fan_in, previous, number)
    if problem:
        fail(problem)
    for name, pair in (("kernel", kernel), ("stride", stride)):
        if min(pair) < 1:
            fail(f"{where}: {name} {_dims(pair)}: each size must be at least 1")
    try:
        geo = spatial.geometry(shape[:2], kernel, stride, list(pads))
    except ShapeError as exc:
        fail(f"{where}: kernel {_dims(kernel)}, stride {_dims(stride)}, pads {pads}: {exc}")
    fan = fan_in_of(kind, shape, kernel)
    if fan > q.MAX_FAN_IN:
        over = f" over {shape[2]:,} channels" if kind == "conv2d" else ""
        fail(f"{where}: kernel {_dims(kernel)}{over}: {fan:,} taps per window, more than {q.MAX_FAN_IN}")
    if kind not in CONVOLUTIONS:
        check_output(where, geo.out_hw, shape[2], fail)
    return window, geo.out_hw


def fan_in_of(kind: str, shape, kernel) -> int:
    """The taps of one output code: kh*kw*C for conv2d (a dense layer's fan-in over the window),
    kh*kw for depthwise and the pools."""
    return kernel[0] * kernel[1] * (shape[2] if kind == "conv2d" else 1)


def check_channels(kind: str, shape, out_hw, channels: int, where: str, fail) -> None:
    """Fail unless a convolution's output channels suit it: depthwise has one per input channel,
    and its flat output (out_h * out_w * channels) is within the format's widths."""
    if kind == "depthwise_conv2d" and channels != shape[2]:
        fail(f"{where}: {channels:,} outputs, but a depthwise_conv2d layer has one per input channel ({shape[2]:,})")
    check_output(where, out_hw, channels, fail)


def check_output(where: str, out_hw, channels: int, fail) -> None:
    """Fail unless out_h * out_w * channels, the layer's flat width, is at most MAX_SIZE."""
    outputs = out_hw[0] * out_hw[1] * channels
    if outputs > MAX_SIZE:
        fail(f"{where}: output {_dims((*out_hw, channels))} is {outputs:,} codes, more than {MAX_SIZE}")


def shape_problem(shape, fan_in: int, previous, number: int) -> str | None:
    """Why layer number, a window layer reading shape (H, W, C), cannot follow previous, or None:
    after a window layer it reads exactly that layer's output shape; after a dense layer (or as
    layer 1, previous None, reading the model's fan_in raw inputs) any shape of fan_in codes."""
    size, shape = shape[0] * shape[1] * shape[2], tuple(shape)
    where, before = f"layer {number}", f"layer {number - 1}"
    if previous is not None and previous.kind != "dense" and tuple(previous.output_shape) != shape:
        return f"{where}: input shape {_dims(shape)}, but {before} writes {_dims(previous.output_shape)}"
    if size != fan_in:
        source = f"{before} writes {fan_in:,} codes" if previous is not None else f"the model has {fan_in:,} inputs"
        return f"{where}: input shape {_dims(shape)} is {size:,} codes, but {source}"
    return None


def scale_problem(layer, in_scale: float, in_zero: int, where: str) -> str | None:
    """Why a window layer's input scale and zero point are not those of the codes it reads
    (in_scale, in_zero: the previous layer's output, or the raw inputs'), or None. The file does
    not store them (a convolution pads with its input zero point; a pool passes both through),
    so a layer that disagreed would be read back as another model."""
    if layer.input_scale != in_scale or layer.input_zero_point != in_zero:
        return (
            f"{where}: a {layer.kind} layer with input scale {layer.input_scale!r} and zero point "
            f"{layer.input_zero_point}, but the codes it reads have {in_scale!r} and {in_zero}"
        )
    return None


def pool_layer(kind: str, window: dict, in_scale: float, in_zero: int, where: str, fail):
    """The pool of a record's window, its scale and zero point its input's, checked by its class."""
    try:
        return CLASSES[kind](**window, scale=in_scale, zero_point=in_zero)
    except QuantizationError as exc:
        fail(f"{where}: {exc}")


def _dims(values) -> str:
    """(28, 28, 1) as '28x28x1'."""
    return "x".join(str(v) for v in values)
