"""The integer spec of window layers: convolutions and pools over NHWC samples, step by step.

intref.py is the dense layer and the steps every layer shares (requantize, activate); this
module adds the kinds that slide a window over a sample (docs/quantization.md, one section each):

    conv2d             pad the input codes with the input zero point (the code of real 0),
                       gather every window as a row of kh*kw*C codes in (kh, kw, c) order,
                       acc = row . weights[o] + bias[o] (int32), then intref.activate per
                       output channel: a dense layer over windows. Pointwise is a 1x1 kernel;
                       conv1d a (1, k) kernel over an input of height 1.
    depthwise_conv2d   channel multiplier 1: acc[c] = sum over taps of window[tap, c] *
                       weights[c, tap] + bias[c], then intref.activate per channel.
    max_pool           pad with -128 (no code is below it), the largest code of each window.
    avg_pool           the window's codes summed (int32), divided by the count, rounded half
    global_avg_pool    away from zero in integers (divide_half_away); full windows only.

Pools keep the scale and zero point of their input (max is monotonic, and avg(q - z) + z =
avg(q) for a full window), so a pool has one `scale` and one `zero_point`, no requantization.

Flat rows between layers: the integer model keeps each sample flat, one row of H*W*C codes in
row-major NHWC order (a C array [H][W][C]). Every layer reads and writes such rows and reshapes
inside, so flatten is no layer at all: a dense layer after a window layer reads the same row.

Layers are built complete and checked then (one-line QuantizationError naming the field),
immutable, as intref.IntegerLayer; conv2d and depthwise ARE IntegerLayers (its fields, its
checks, its requantization) with a window added. The forward functions here are the
definition, in int64 NumPy; backends/windows.py holds their fast forms, tested equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from . import intref, spatial
from . import quantization as q
from .errors import QuantizationError, ShapeError

CONVOLUTIONS = ("conv2d", "depthwise_conv2d")
POOLS = ("max_pool", "avg_pool", "global_avg_pool")
KINDS = (*CONVOLUTIONS, *POOLS)  # every kind of this module; intref's dense is "dense"


class _Window:
    """What every window layer shares: input_shape (H, W, C), kernel (kh, kw), stride (sh, sw)
    and pads (top, bottom, left, right) as tuples of ints, their Geometry, and the flat sizes."""

    def _normalize_window(self) -> None:
        """The window fields as tuples of Python ints (or a one-line QuantizationError)."""
        for name, length in (("input_shape", 3), ("kernel", 2), ("stride", 2), ("pads", 4)):
            object.__setattr__(self, name, _ints(getattr(self, name), length, name))

    def _check_window(self) -> None:
        """Positive sizes, and a window that fits its padded input (spatial's rule)."""
        if min(self.input_shape) < 1:
            _fail(f"input_shape {self.input_shape}: every size must be >= 1")
        try:
            spatial.geometry(self.input_shape[:2], self.kernel, self.stride, list(self.pads))
        except ShapeError as exc:
            _fail(f"kernel {self.kernel}, stride {self.stride}, pads {self.pads}: {exc}")
        if self.kernel[0] * self.kernel[1] > q.MAX_FAN_IN:
            _fail(f"kernel {self.kernel}: a window of more than {q.MAX_FAN_IN} taps")

    @cached_property
    def geometry(self) -> spatial.Geometry:
        return spatial.geometry(self.input_shape[:2], self.kernel, self.stride, list(self.pads))

    @property
    def channels(self) -> int:
        """Output channels (conv2d: out_c; depthwise and pools: the input's C)."""
        return self.input_shape[2]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (*self.geometry.out_hw, self.channels)

    @property
    def inputs(self) -> int:
        """Codes per sample read: H * W * C."""
        return int(np.prod(self.input_shape))

    @property
    def outputs(self) -> int:
        """Codes per sample written: out_h * out_w * channels."""
        return int(np.prod(self.output_shape))


@dataclass(frozen=True, eq=False, kw_only=True)
class ConvLayer(_Window, intref.IntegerLayer):
    """conv2d in integers (pointwise and conv1d too): an intref.IntegerLayer whose weights are
    (out_c, kh*kw*in_c) in (kh, kw, c) order and whose per-output vectors are per output
    channel, plus the window. Its fan-in is kh*kw*in_c (the bias and accumulator bounds)."""

    kind: ClassVar[str] = "conv2d"
    input_shape: tuple  # (H, W, C) of one sample
    kernel: tuple  # (kh, kw)
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)  # top, bottom, left, right

    def __post_init__(self):
        self._normalize_window()
        super().__post_init__()  # validate(), then the arrays as read-only copies

    @property
    def channels(self) -> int:
        return self.weights.shape[0]

    def validate(self) -> None:
        """intref.IntegerLayer's checks, the window's, and weights that fit both."""
        super().validate()
        self._check_window()
        taps = self.kernel[0] * self.kernel[1] * self.input_shape[2]
        if np.shape(self.weights)[1] != taps:
            _fail(
                f"weights: shape {np.shape(self.weights)}, expected (out_channels, {taps}) for a "
                f"{self.kernel[0]}x{self.kernel[1]} kernel over {self.input_shape[2]} channels"
            )

    def forward(self, codes):
        return conv_forward(codes, self)


@dataclass(frozen=True, eq=False, kw_only=True)
class DepthwiseLayer(ConvLayer):
    """depthwise_conv2d, channel multiplier 1: weights (C, kh*kw), one filter per channel, and
    the requantization per channel. Its fan-in is kh*kw."""

    kind: ClassVar[str] = "depthwise_conv2d"

    def validate(self) -> None:
        intref.IntegerLayer.validate(self)
        self._check_window()
        expected = (self.input_shape[2], self.kernel[0] * self.kernel[1])
        if np.shape(self.weights) != expected:
            _fail(f"weights: shape {np.shape(self.weights)}, expected (channels, kh*kw) = {expected}")

    def forward(self, codes):
        return depthwise_forward(codes, self)


@dataclass(frozen=True, eq=False, kw_only=True)
class PoolLayer(_Window):
    """A pool: its window, and the scale and zero point it passes through (input = output).

    stride defaults to the kernel. Not built directly: MaxPoolLayer, AvgPoolLayer and
    GlobalAvgPoolLayer are its kinds (build_pool picks one)."""

    kind: ClassVar[str] = "pool"
    input_shape: tuple
    kernel: tuple
    scale: float
    zero_point: int
    stride: tuple | None = None
    pads: tuple = (0, 0, 0, 0)

    def __post_init__(self):
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel)
        self._normalize_window()
        self.validate()
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "zero_point", int(self.zero_point))

    def validate(self) -> None:
        """The window's checks, the scale and the zero point (intref's own rules)."""
        if self.kind not in POOLS:
            _fail(f"{type(self).__name__} is not a pool kind; build a MaxPoolLayer, AvgPoolLayer or GlobalAvgPoolLayer")
        self._check_window()
        problem = intref.scale_problem(self.scale)
        if problem:
            _fail(f"scale {self.scale} {problem}")
        zero = self.zero_point
        if (
            isinstance(zero, (bool, np.bool_))
            or not isinstance(zero, (int, np.integer))
            or not q.QMIN <= zero <= q.QMAX
        ):
            _fail(f"zero_point {zero} is not an integer in {q.QMIN}..{q.QMAX}")

    # the pass-through, under the names every layer has
    input_scale = property(lambda self: self.scale)
    output_scale = property(lambda self: self.scale)
    input_zero_point = property(lambda self: self.zero_point)
    output_offset = property(lambda self: self.zero_point)

    def forward(self, codes):
        return pool_forward(codes, self)


@dataclass(frozen=True, eq=False, kw_only=True)
class MaxPoolLayer(PoolLayer):
    kind: ClassVar[str] = "max_pool"

    def validate(self) -> None:
        """A pool's checks, and pads smaller than the kernel: no window of padding only."""
        super().validate()
        (kh, kw), (top, bottom, left, right) = self.kernel, self.pads
        if max(top, bottom) >= kh or max(left, right) >= kw:
            _fail(f"pads {self.pads}: each must be smaller than the kernel {self.kernel} (a window of padding only)")


@dataclass(frozen=True, eq=False, kw_only=True)
class AvgPoolLayer(PoolLayer):
    kind: ClassVar[str] = "avg_pool"

    def validate(self) -> None:
        """A pool's checks, and no padding: every window is full, so its count is kh*kw."""
        super().validate()
        if any(self.pads):
            _fail(f"pads {self.pads}: an average pool has full windows only (valid padding)")


@dataclass(frozen=True, eq=False, kw_only=True)
class GlobalAvgPoolLayer(AvgPoolLayer):
    """The average of each channel over the whole input: kernel (H, W), output (1, 1, C)."""

    kind: ClassVar[str] = "global_avg_pool"
    kernel: tuple | None = None  # default and only value: (H, W)

    def __post_init__(self):
        if self.kernel is None:
            object.__setattr__(self, "kernel", tuple(_ints(self.input_shape, 3, "input_shape")[:2]))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if self.kernel != self.input_shape[:2] or self.stride != self.kernel:
            _fail(f"kernel {self.kernel}, stride {self.stride}: a global pool's are the input's (H, W)")


POOL_CLASSES = {cls.kind: cls for cls in (MaxPoolLayer, AvgPoolLayer, GlobalAvgPoolLayer)}


# --- builders: from the float side's values, as intref.build_layer -----------------------------


def build_conv(*args, input_shape, kernel, stride=1, padding="valid", **kwargs) -> ConvLayer:
    """The conv2d layer of these codes and scales (intref.layer_fields' arguments: weight codes
    (out_c, kh*kw*in_c), bias with the input zero point folded in (quantization.quantize_bias),
    weight_scales per output channel, input scale and zero point, activation, output scale and
    zero point, ...) over input_shape (H, W, C); padding "valid", "same" or [top, bottom, left,
    right] (spatial.py's rules)."""
    return ConvLayer(**intref.layer_fields(*args, **kwargs), **_window(input_shape, kernel, stride, padding))


def build_depthwise(*args, input_shape, kernel, stride=1, padding="valid", **kwargs) -> DepthwiseLayer:
    """The depthwise layer (weight codes (C, kh*kw), weight_scales per channel) as build_conv."""
    return DepthwiseLayer(**intref.layer_fields(*args, **kwargs), **_window(input_shape, kernel, stride, padding))


def build_pool(kind, input_shape, scale, zero_point, size=None, stride=None, padding="valid") -> PoolLayer:
    """The pool of kind ("max_pool", "avg_pool", "global_avg_pool") over input_shape, with
    window size (int or pair; global: the whole input), stride (default: size) and padding
    (max pool only: "valid", "same" or explicit); scale and zero point are its input's."""
    if kind not in POOL_CLASSES:
        _fail(f"pool kind {kind!r} is not one of {', '.join(POOLS)}")
    if kind == "global_avg_pool":
        return GlobalAvgPoolLayer(input_shape=input_shape, scale=scale, zero_point=zero_point)
    window = _window(input_shape, size, size if stride is None else stride, padding)
    return POOL_CLASSES[kind](scale=scale, zero_point=zero_point, **window)


def _window(input_shape, kernel, stride, padding) -> dict:
    """The window fields, padding resolved to explicit pads (a ShapeError becomes ours)."""
    try:
        kernel, stride = spatial.pair(kernel, "kernel"), spatial.pair(stride, "stride")
        shape = _ints(input_shape, 3, "input_shape")
        pads = spatial.resolve_padding(padding, shape[:2], kernel, stride)
    except ShapeError as exc:
        _fail(str(exc))
    return dict(input_shape=shape, kernel=kernel, stride=stride, pads=pads)


# --- the arithmetic, in int64 ------------------------------------------------------------------


def as_grid(codes, shape) -> np.ndarray:
    """Flat rows (samples, H*W*C) as an int64 NHWC batch (samples, H, W, C): a reshape."""
    codes = np.asarray(codes, dtype=np.int64)
    return codes.reshape(len(codes), *shape)


def conv_forward(codes, layer: ConvLayer) -> np.ndarray:
    """conv2d: pad with the input zero point, gather windows, accumulate, requantize, activate."""
    x = as_grid(codes, layer.input_shape)
    rows = spatial.im2col(x, layer.geometry, pad_value=layer.input_zero_point)  # (n*oh*ow, kh*kw*C)
    acc = rows @ layer.weights.astype(np.int64).T + layer.bias  # int64: |acc| < 2**30, an int32
    return intref.activate(acc, layer).reshape(len(x), -1)


def depthwise_forward(codes, layer: DepthwiseLayer) -> np.ndarray:
    """depthwise: each channel's window times its own filter, tap by tap, then the dense steps."""
    x, geo = as_grid(codes, layer.input_shape), layer.geometry
    padded = spatial.pad(x, geo, layer.input_zero_point)
    acc = np.zeros((len(x), *layer.output_shape), np.int64) + layer.bias
    for i, j, rows, columns in geo.offsets():
        acc += padded[:, rows, columns, :] * layer.weights[:, i * geo.kernel[1] + j].astype(np.int64)
    return intref.activate(acc.reshape(-1, layer.channels), layer).reshape(len(x), -1)


def pool_forward(codes, layer: PoolLayer) -> np.ndarray:
    """max: the largest code of each window (padding -128); avg: the sum over the window
    divided by its count (divide_half_away). The codes keep their scale and zero point."""
    x, geo = as_grid(codes, layer.input_shape), layer.geometry
    padded = spatial.pad(x, geo, q.QMIN)  # max pool only: average pools have no padding
    taps = [padded[:, rows, columns, :] for _, _, rows, columns in geo.offsets()]
    if layer.kind == "max_pool":
        out = np.maximum.reduce(taps)
    else:
        out = divide_half_away(np.add.reduce(taps), len(taps))  # |sum| <= 65536 * 128: an int32
    return out.reshape(len(x), -1)


def divide_half_away(total, count: int) -> np.ndarray:
    """total / count rounded half away from zero, in integers: sign(total) * ((2*|total| +
    count) // (2*count)), so that C computes it without dividing a negative number."""
    total = np.asarray(total, dtype=np.int64)
    magnitude = (2 * np.abs(total) + count) // (2 * count)
    return np.where(total < 0, -magnitude, magnitude)


# --- helpers -----------------------------------------------------------------------------------


def _fail(problem: str):
    raise QuantizationError(problem)


def _ints(value, length: int, what: str) -> tuple:
    """value as a tuple of length Python ints, or a one-line QuantizationError naming what."""
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != length or any(
        isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in items
    ):
        _fail(f"{what} {value!r}: expected {length} integers")
    return tuple(int(v) for v in items)
