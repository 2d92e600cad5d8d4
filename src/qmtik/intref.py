"""THE integer spec: what one int8 layer computes, in plain steps, and a whole model through it.

Read it beside a generated header (tests/golden/tiny.h): each step below is a few lines of the
C, as in TensorFlow Lite Micro's reference kernels. For every output o of a dense layer:

    acc = sum_i weights[o, i] * input[i] + bias[o]               accumulate      (int32)
    r   = requantize(acc, output_multiplier[o], output_shift[o])  multiply, round  (int64)
    out = clamp(r + output_offset, floor, 127)                    activate        (int8)
          or table[clamp(r, -128, 127) + 128]                     (sigmoid, tanh)

The names are TFLite Micro's, with one sign convention of ours: output_shift is a RIGHT shift
>= 0 (TFLM stores a left shift, negative for a right one). All float work (scales, multipliers,
tables) happened when the model was prepared (quantization.py); here are integers only.
docs/quantization.md states the bounds that make every step exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from . import quantization as q
from .errors import QuantizationError

ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh")  # in this order: the .qmt codes 0..4
SATURATION = 1024  # |requantize| is capped here, beyond any int8 result (|offset| <= 128)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: fields are arrays
class IntegerLayer:
    """One dense layer in integer arithmetic: int8 codes in, int8 codes out.

    Built complete in one call and checked then (validate): an invalid layer cannot exist.
    Its arrays are read-only copies in fixed dtypes, so it stays valid.
    """

    kind: ClassVar[str] = "dense"  # the other kinds: intref_windows.py (flatten is a reshape, no layer)
    weights: np.ndarray  # int8 codes in -127..127, (outputs, inputs)
    bias: np.ndarray  # int32 (stored as int64), input zero point folded in
    output_multiplier: np.ndarray  # per output, 0 .. 2**22 - 1
    output_shift: np.ndarray  # per output, a right shift 0..62
    activation: str  # one of ACTIVATIONS
    input_scale: float
    input_zero_point: int
    weight_scales: np.ndarray  # float64, per output channel (all equal: per tensor)
    output_scale: float
    output_offset: int  # the output zero point
    negative_multiplier: np.ndarray | None = None  # leaky_relu only: requantizes acc < 0
    negative_shift: np.ndarray | None = None
    table: np.ndarray | None = None  # sigmoid / tanh only: 256 int8 entries
    table_input_scale: float | None = None  # sigmoid / tanh only: scale of the index

    DTYPES: ClassVar[dict] = {
        "weights": np.int8,
        "bias": np.int64,
        "output_multiplier": np.int64,
        "output_shift": np.int64,
        "negative_multiplier": np.int64,
        "negative_shift": np.int64,
        "weight_scales": np.float64,
        "table": np.int8,
    }

    def __post_init__(self):
        self.validate()
        for name, dtype in self.DTYPES.items():
            value = getattr(self, name)
            if value is not None:
                value = np.array(value, dtype=dtype, order="C")
                value.flags.writeable = False
                object.__setattr__(self, name, value)
        for name, kind in (
            ("output_offset", int),
            ("input_zero_point", int),
            ("input_scale", float),
            ("output_scale", float),
            ("table_input_scale", float),
        ):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, kind(getattr(self, name)))

    @property
    def inputs(self) -> int:
        return self.weights.shape[1]

    @property
    def outputs(self) -> int:
        return self.weights.shape[0]

    def validate(self) -> None:
        """Raise QuantizationError (one line naming the field) unless every value is one the
        integer arithmetic, the .qmt file and the C header can hold."""
        if self.activation not in ACTIVATIONS:
            _fail(f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        weights = _integers(self.weights, "weights")
        if weights.ndim != 2 or weights.shape[0] < 1 or not 1 <= weights.shape[1] <= q.MAX_FAN_IN:
            _fail(f"weights: shape {weights.shape}, expected (outputs >= 1, inputs in 1..{q.MAX_FAN_IN})")
        outputs, inputs = weights.shape
        _within(weights, "weights", -q.WMAX, q.WMAX)
        limit = q.bias_limit(inputs)
        _within(_vector(self.bias, outputs, "bias"), "bias", -limit, limit)
        _check_requant(self.output_multiplier, self.output_shift, outputs, "output")
        leaky, table = self.activation == "leaky_relu", self.activation in q.TABLE_ACTIVATIONS
        if leaky:
            _check_requant(self.negative_multiplier, self.negative_shift, outputs, "negative")
        elif self.negative_multiplier is not None or self.negative_shift is not None:
            _fail(f"{self.activation} has negative_multiplier or negative_shift; only leaky_relu has them")
        scales = _vector(self.weight_scales, outputs, "weight_scales", "iuf")
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            stored = scales.astype(np.float32)  # what the file and C hold
            good = stored.min() > 0 and np.isfinite(stored.max())  # a NaN fails the first test
        if not good:
            bad = np.flatnonzero(~(np.isfinite(stored) & (stored > 0)))
            _fail(f"weight_scales {scales[bad[0]]} at [{bad[0]}] is not a finite positive float32")
        _check_scale(self.input_scale, "input_scale")
        _check_scale(self.output_scale, "output_scale")
        _check_code(self.input_zero_point, "input_zero_point")
        _check_code(self.output_offset, "output_offset")
        if table:
            _check_scale(self.table_input_scale, "table_input_scale")
            _within(_vector(self.table, 256, "table"), "table", q.QMIN, q.QMAX)
        elif self.table is not None or self.table_input_scale is not None:
            _fail(f"{self.activation} has a table or table_input_scale; only sigmoid and tanh have them")


def build_layer(*args, **kwargs) -> IntegerLayer:
    """The layer of these codes and scales (the arguments of layer_fields), checked: its
    multipliers from the real multiplier input_scale * weight_scale / output_scale (or
    / table_input_scale) and, for sigmoid and tanh, its table; a leaky relu's negative side
    multiplies by slope as well."""
    return IntegerLayer(**layer_fields(*args, **kwargs))


def layer_fields(
    weights,
    bias,
    weight_scales,
    input_scale,
    input_zero_point,
    activation,
    output_scale,
    output_offset,
    table_input_scale=None,
    slope=0.01,
) -> dict:
    """build_layer's IntegerLayer fields, unchecked: for training's step, whose arrays are valid
    by construction and which runs them through a backend proven equal to this spec."""
    table = activation in q.TABLE_ACTIVATIONS
    real = input_scale * np.asarray(weight_scales, dtype=np.float64) / (table_input_scale if table else output_scale)
    multiplier, shift = q.quantize_multiplier(real)
    negative = q.quantize_multiplier(real * slope) if activation == "leaky_relu" else (None, None)
    return dict(
        weights=weights,
        bias=bias,
        output_multiplier=multiplier,
        output_shift=shift,
        activation=activation,
        input_scale=input_scale,
        input_zero_point=input_zero_point,
        weight_scales=weight_scales,
        output_scale=output_scale,
        output_offset=output_offset,
        negative_multiplier=negative[0],
        negative_shift=negative[1],
        table=q.activation_table(activation, table_input_scale) if table else None,
        table_input_scale=table_input_scale if table else None,
    )


# --- the arithmetic: accumulate -> requantize -> activate ---------------------------------------


def accumulate(codes, weights, bias):
    """acc = weights @ codes + bias for every output, as int64 (|acc| < 2**30: an int32).

    The products are summed as floats, exactly: in float32 while fan_in * 128 * 127 < 2**24
    (fan-ins up to 1032; every partial sum is an integer float32 holds), else in float64.
    """
    dtype = q.accumulator_dtype(weights.shape[1])
    acc = np.asarray(codes, dtype=dtype) @ np.asarray(weights, dtype=dtype).T
    return acc.astype(np.int64) + bias


def rounding_shift(product, shift):
    """product / 2**shift rounded half away from zero, on int64, without shifting a negative."""
    product, shift = np.asarray(product, dtype=np.int64), np.asarray(shift, dtype=np.int64)
    half = (np.int64(1) << shift) >> 1
    magnitude = (np.abs(product) + half) >> shift
    return np.where(product < 0, -magnitude, magnitude)


def requantize(acc, multiplier, shift):
    """acc * multiplier / 2**shift, rounded half away from zero, saturated at +-SATURATION.

    The product of |acc| < 2**30 and multiplier < 2**22 is exact in int64. The saturation
    never changes an int8 result (offsets lie in -128..127) and keeps C's result in an int32.
    """
    scaled = rounding_shift(np.asarray(acc, dtype=np.int64) * multiplier, shift)
    return np.clip(scaled, -SATURATION, SATURATION)


def activate(acc, layer: IntegerLayer):
    """The layer's int8 output codes (as int64) from its accumulators."""
    r = requantize(acc, layer.output_multiplier, layer.output_shift)
    if layer.activation in q.TABLE_ACTIVATIONS:
        return layer.table.astype(np.int64)[np.clip(r, q.QMIN, q.QMAX) - q.QMIN]
    if layer.activation == "leaky_relu":
        r = np.where(acc < 0, requantize(acc, layer.negative_multiplier, layer.negative_shift), r)
    floor = layer.output_offset if layer.activation == "relu" else q.QMIN  # relu is this clamp
    return np.clip(r + layer.output_offset, floor, q.QMAX)


def layer_forward(codes, layer: IntegerLayer):
    """int8 codes in, the layer's int8 codes out (both as int64 arrays, samples x features).

    Dense here; every other kind (intref_windows.py: convolutions, pools) is dispatched by its
    `kind` to its own forward, which reads and writes the same flat rows (NHWC, row-major)."""
    if layer.kind != "dense":
        return layer.forward(codes)
    return activate(accumulate(codes, layer.weights, layer.bias), layer)


def reference_scores(layers, codes) -> np.ndarray:
    """The int8 scores of int8 input codes (samples x inputs) through layers: the reference
    backend, which every faster form of the arithmetic (numpy, onnxruntime, C) must equal."""
    for layer in layers:
        codes = layer_forward(codes, layer)
    return np.asarray(codes).astype(np.int8)


# --- validation helpers: each raises QuantizationError naming the field -------------------------


def _fail(problem: str):
    raise QuantizationError(problem)


def _integers(values, what: str, kinds: str = "iu") -> np.ndarray:
    if values is None:
        _fail(f"{what}: missing")
    values = np.asarray(values)
    if values.dtype.kind not in kinds:
        _fail(f"{what}: dtype {values.dtype}, expected {'integers' if kinds == 'iu' else 'real numbers'}")
    return values


def _vector(values, length: int, what: str, kinds: str = "iu") -> np.ndarray:
    values = _integers(values, what, kinds)
    if values.shape != (length,):
        _fail(f"{what}: shape {values.shape}, expected ({length},)")
    return values


def _within(values: np.ndarray, what: str, low: int, high: int) -> None:
    """Fail naming the first value outside [low, high] and its index."""
    if values.min() >= low and values.max() <= high:  # the common case, in two reductions
        return
    first = int(np.flatnonzero((values < low) | (values > high))[0])
    index = [int(i) for i in np.unravel_index(first, values.shape)]
    _fail(f"{what} {values.flat[first]} at {index} is outside {low}..{high}")


def _check_requant(multiplier, shift, outputs: int, side: str) -> None:
    multiplier = _vector(multiplier, outputs, f"{side}_multiplier")
    shift = _vector(shift, outputs, f"{side}_shift")
    _within(multiplier, f"{side}_multiplier", 0, 2**q.MULTIPLIER_BITS - 1)
    _within(shift, f"{side}_shift", 0, q.MAX_SHIFT)
    if not multiplier.all() and (shift[multiplier == 0] != 0).any():
        bad = np.flatnonzero((multiplier == 0) & (shift != 0))
        _fail(f"{side}_multiplier 0 at [{bad[0]}] has {side}_shift {shift[bad[0]]}; a zero multiplier has shift 0")


def scale_problem(value) -> str | None:
    """Why value cannot be the scale of int8 codes, or None: a finite number > 0 that
    quantization.scale_problem, training's own rule, accepts (a normal float32 whose 256 steps
    stay finite in float32, as the C header writes it)."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (math.isfinite(value) and value > 0)
    ):
        return "is not a finite positive number"
    return q.scale_problem(value)


def _check_scale(value, what: str) -> None:
    problem = scale_problem(value)
    if problem:
        _fail(f"{what} {value} {problem}")


def _check_code(value, what: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not q.QMIN <= value <= q.QMAX:
        _fail(f"{what} {value} is not an integer in {q.QMIN}..{q.QMAX}")
