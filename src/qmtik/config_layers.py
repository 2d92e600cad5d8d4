"""The layers of a network as the config writes them (`[[network.layers]]` tables), checked, and
the shape of every layer's input and output, worked out when the config loads.

A layer table is read into a LayerSpec that keeps what was written (None for a key left out),
so that the config writes back what it read. `infer_shapes` fills in the defaults (stride 1, a
pool's stride its size, padding "valid", no batch norm, the network's activation), resolves
each window with spatial.py, appends the implied output layer (dense, `outputs` units, linear
scores) and returns one LayerShape per layer. Every refusal is one ConfigError line naming the
layer, `network.layers[i] (kind)`, and the problem; the window rules are spatial.py's own, so
the config, training and the integer model cannot disagree on a shape.

Shapes are channels last, as TFLite Micro and CMSIS-NN lay them out: (height, width, channels)
for a 2-D network, (length, channels) for a 1-D one (run as height 1), (values,) once flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from . import config_values as check
from . import limits
from .errors import ConfigError, ShapeError
from .functions import HIDDEN_ACTIVATIONS
from .quantization import MAX_FAN_IN
from .spatial import Geometry, geometry, window_problem

CONV_KINDS = ("conv2d", "depthwise_conv2d", "pointwise", "conv1d")
POOL_KINDS = ("max_pool", "avg_pool")
KINDS = (*CONV_KINDS, *POOL_KINDS, "global_avg_pool", "flatten", "dense")
LAYER_ACTIVATIONS = (*HIDDEN_ACTIVATIONS, "linear")
MAX_SIDE = 65536  # any kernel, stride, pool size, padding or input side
MAX_VALUES = 2**24  # values of one sample at any layer (int8 activations: 16 MiB)

KIND_KEYS = {  # the keys each kind takes besides `kind`, required ones first
    "conv2d": ("filters", "kernel", "stride", "padding", "activation", "batch_norm"),
    "depthwise_conv2d": ("kernel", "stride", "padding", "activation", "batch_norm"),
    "pointwise": ("filters", "activation", "batch_norm"),
    "conv1d": ("filters", "kernel", "stride", "padding", "activation", "batch_norm"),
    "max_pool": ("size", "stride", "padding"),
    "avg_pool": ("size", "stride", "padding"),
    "global_avg_pool": (),
    "flatten": (),
    "dense": ("units", "activation"),
}
REQUIRED = {"filters", "units", "kernel", "size"}  # required by every kind that takes them

PAIR = "an integer from 1 to 65536 or a pair [height, width] of them"
PADS = "'valid', 'same' (TensorFlow's rule) or [top, bottom, left, right] of integers from 0 to 65536"
PADS_1D = "'valid', 'same' (TensorFlow's rule) or [left, right] of integers from 0 to 65536"
KEY_DOCS = {  # key: (allowed, default, meaning), for the checks' messages and docs/config.md
    "kind": (" | ".join(KINDS), "(required)", "what the layer computes"),
    "filters": (f"an integer from 1 to {MAX_FAN_IN}", "(required)", "output channels of a convolution"),
    "units": (
        f"an integer from 1 to {MAX_FAN_IN}",
        "(required)",
        "outputs of a dense layer (a spatial input is flattened)",
    ),
    "kernel": (PAIR + " (conv1d: an integer)", "(required)", "window of a convolution, [height, width]"),
    "stride": (PAIR + " (conv1d: an integer)", "1; a pool's size", "step of the window"),
    "padding": (
        PADS + " (conv1d: [left, right]; avg_pool: 'valid')",
        '"valid"',
        "padding around the input (zeros; max_pool's padding never wins)",
    ),
    "activation": (" | ".join(LAYER_ACTIVATIONS), "network.activation", "applied to the layer's outputs"),
    "batch_norm": ("true or false", "false", "batch normalization after the convolution, folded into it"),
    "size": (PAIR + " (an integer over a 1-D input)", "(required)", "window of a pool"),
}


@dataclass(frozen=True)
class LayerSpec:
    """One layer. As read from the config, a key left out is None; as `infer_shapes` resolves
    it, every key its kind takes is filled in: kernel, stride and size as (height, width) pairs
    ((1, k) in a 1-D network), padding "valid", "same" or explicit (top, bottom, left,
    right), activation a name (None for pools, flatten and global_avg_pool), batch_norm a bool
    (conv kinds); pointwise resolves as the 1x1 conv2d it is (kernel and stride (1, 1),
    padding "valid"); other keys stay None (depthwise_conv2d's filters too: it keeps its
    input's channels, the LayerShape's out_shape[-1])."""

    kind: str
    filters: int | None = None
    units: int | None = None
    kernel: int | tuple | None = None
    stride: int | tuple | None = None
    padding: str | tuple | None = None
    activation: str | None = None
    batch_norm: bool | None = None
    size: int | tuple | None = None

    def to_dict(self) -> dict:
        """The keys that are set, as TOML writes them (lists, not tuples): the table read back."""
        out = {"kind": self.kind}
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class LayerShape:
    """A resolved layer with its input and output shape, its window (convolutions and pools;
    height 1 in a 1-D network), and what it costs: weights, biases (as deployed, batch norm
    folded in) and multiply-accumulates per sample."""

    index: int
    spec: LayerSpec
    in_shape: tuple
    out_shape: tuple
    geometry: Geometry | None = None
    weights: int = 0
    biases: int = 0
    macs: int = 0

    @property
    def activation_bytes(self) -> int:
        """Bytes of the layer's int8 output for one sample."""
        return math.prod(self.out_shape)


# --- reading the tables ------------------------------------------------------------------------


def parse_layers(value) -> tuple:
    """network.layers (a list of tables, or of LayerSpecs) as a tuple of checked LayerSpecs."""
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
        check.refuse("network.layers", value, "a list of layer tables ([[network.layers]] with kind = ...)")
    flattens = sum(1 for t in value if isinstance(t, dict) and t.get("kind") == "flatten")
    flattens += sum(1 for t in value if isinstance(t, LayerSpec) and t.kind == "flatten")
    limits.check_depth(len(value) - flattens + 1, "config key network.layers")  # before parsing a table
    return tuple(parse_layer(i, table) for i, table in enumerate(value))


def parse_layer(index: int, table) -> LayerSpec:
    """One layer table as a LayerSpec: its kind, only its kind's keys, each value checked."""
    where = f"network.layers[{index}]"
    if isinstance(table, LayerSpec):
        table = table.to_dict()
    if not isinstance(table, dict):
        check.refuse(where, table, 'a table such as {kind = "conv2d", filters = 16, kernel = 3}')
    if "kind" not in table:
        raise ConfigError(f"config key {where}.kind: missing; allowed: {KEY_DOCS['kind'][0]}")
    kind = check.choice(where + ".kind", table["kind"], KINDS)
    name, keys = f"{where} ({kind})", KIND_KEYS[kind]
    for key in table:
        if key == "kind" or key in keys:
            continue
        if key not in KEY_DOCS:
            check.unknown(f"{name}.{key}", ["kind", *keys], prefix=f"{name}.")
        taking = ", ".join(k for k in KINDS if key in KIND_KEYS[k])
        raise ConfigError(
            f"config key {name}.{key}: {kind} takes no {key} "
            f"(its keys: {', '.join(['kind', *keys])}; {key} is for {taking})"
        )
    for key in keys:
        if key in REQUIRED and key not in table:
            raise ConfigError(f"config key {name}.{key}: missing; allowed: {KEY_DOCS[key][0]}")
    return LayerSpec(kind, **{key: _checked(f"{name}.{key}", key, kind, table[key]) for key in keys if key in table})


def _checked(key: str, name: str, kind: str, value):
    """One value of a layer table, checked by what the key is."""
    if name in ("filters", "units"):
        return check.integer(key, value, 1, MAX_FAN_IN)
    if name == "activation":
        return check.choice(key, value, LAYER_ACTIVATIONS)
    if name == "batch_norm":
        return check.boolean(key, value)
    if name == "padding":
        return _padding(key, kind, value)
    if kind == "conv1d":
        return check.integer(key, value, 1, MAX_SIDE)
    return _int_or_pair(key, value)


def _int_or_pair(key: str, value):
    """An integer from 1 to MAX_SIDE, or a pair of them (as a tuple)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SIDE:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        if all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in value):
            return tuple(value)
    check.refuse(key, value, PAIR)


def _padding(key: str, kind: str, value):
    """'valid', 'same', or explicit pads: 2 for conv1d, 4 for 2-D convolutions, either for max
    pools (whose input decides); avg_pool averages whole windows only ('valid')."""
    if kind == "avg_pool":
        if value != "valid":
            check.refuse(key, value, "'valid' (an average pool takes whole windows only)")
        return value
    allowed = PADS_1D if kind == "conv1d" else PADS
    if isinstance(value, str):
        return check.choice(key, value, ("valid", "same"))
    lengths = (2,) if kind == "conv1d" else (2, 4) if kind == "max_pool" else (4,)
    if kind == "max_pool":
        allowed = PADS + " ([left, right] over a 1-D input)"
    if not isinstance(value, (list, tuple)) or len(value) not in lengths:
        check.refuse(key, value, allowed)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SIDE for v in value):
        check.refuse(key, value, allowed)
    return tuple(value)


def input_shape(key: str, value) -> tuple:
    """network.input_shape: () (flat), or 1 to 3 sides from 1 to MAX_SIDE, at most MAX_VALUES values."""
    allowed = f"[] or a list of 1 to 3 integers from 1 to {MAX_SIDE} ([height, width, channels] or [length, channels])"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) > 3:
        check.refuse(key, value, allowed)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in value):
        check.refuse(key, value, allowed)
    if math.prod(value) > MAX_VALUES:
        check.refuse(key, value, f"{allowed}, of at most {MAX_VALUES} values")
    return tuple(value)


# --- shapes ------------------------------------------------------------------------------------


def infer_shapes(in_shape, layers, outputs: int, activation: str = "relu", source: str = "network.layers") -> tuple:
    """Every layer resolved, with its input and output shape, then the implied output layer.

    in_shape is one sample's shape ((values,), (length, channels) or (height, width,
    channels)); layers are LayerSpecs as read; outputs the output layer's units; activation
    the default of layers that take one. Returns a tuple of LayerShape, one per layer and the
    output layer last (index len(layers)). Raises a one-line ConfigError naming the layer as
    `{source}[i] (kind)` (an MLP's hidden layers are network.hidden's).
    """
    shape, flat_by, out = tuple(in_shape), "network.input_shape", []
    output_layer = LayerSpec("dense", units=outputs, activation="linear")
    for index, spec in enumerate((*layers, output_layer)):
        name = f"{source}[{index}] ({spec.kind})" if index < len(layers) else "network.outputs (the output layer)"
        try:
            layer = _resolve(index, spec, shape, activation, flat_by)
        except ShapeError as exc:
            raise ConfigError(f"config key {name}: {exc}") from None
        if layer.activation_bytes > MAX_VALUES:
            raise ConfigError(
                f"config key {name}: an output of {_shown(layer.out_shape)} is more than {MAX_VALUES} values"
            )
        if len(shape) > 1 and len(layer.out_shape) == 1:
            flat_by = name
        shape = layer.out_shape
        out.append(layer)
    return tuple(out)


def _shown(shape) -> str:
    """A shape as 28x28x1."""
    return "x".join(map(str, shape))


def _needs(spec: LayerSpec, shape: tuple, sides: tuple, flat_by: str) -> None:
    """Raise the ShapeError of a layer given an input it cannot take (sides: 1-D, 2-D or both)."""
    if len(shape) - 1 in sides:
        return
    wanted = " or ".join(
        {1: "a 1-D input [length, channels]", 2: "a 2-D input [height, width, channels]"}[s] for s in sides
    )
    if len(shape) == 1:
        why = (
            "the network's input is flat: set network.input_shape"
            if flat_by == "network.input_shape"
            else f"{flat_by} flattened it"
        )
        raise ShapeError(f"needs {wanted}, but its input of {shape[0]} values is flat ({why})")
    other = {"conv1d": "conv2d", "conv2d": "conv1d"}.get(spec.kind)
    hint = f"; use {other}" if other else ""
    raise ShapeError(f"needs {wanted}, but its input {_shown(shape)} is {len(shape) - 1}-D{hint}")


def _window(spec, shape, kernel, stride, padding) -> Geometry:
    """The Geometry of a window over a 2-D (h, w, c) or 1-D (l, c) input; a 1-D window is the
    2-D one of height 1, and its errors speak of length."""
    if len(shape) == 3:
        return geometry(shape[:2], kernel, stride, padding)
    if isinstance(kernel, tuple) or isinstance(stride, tuple):
        raise ShapeError(f"takes integers over a 1-D input, not pairs (kernel or size {kernel}, stride {stride})")
    if not isinstance(padding, str) and len(padding) != 2:
        raise ShapeError(f"takes padding [left, right] over a 1-D input, not {list(padding)}")
    pads = (0, 0) if isinstance(padding, str) else padding
    problem = None if padding == "same" else window_problem(shape[0], kernel, stride, *pads)
    if problem:
        raise ShapeError(
            f"a window of {kernel} of stride {stride} over a length of {shape[0]} "
            f"(padding {padding!r}): length {problem}"
        )
    return geometry((1, shape[0]), (1, kernel), (1, stride), padding if isinstance(padding, str) else (0, 0, *padding))


def _resolve(index: int, spec: LayerSpec, shape: tuple, activation: str, flat_by: str) -> LayerShape:
    """One layer with its defaults filled in and its shapes, or a ShapeError."""
    kind, channels = spec.kind, shape[-1]
    if kind == "dense":
        fan_in = math.prod(shape)
        if fan_in > MAX_FAN_IN:
            given = f"{_shown(shape)} = {fan_in}" if len(shape) > 1 else str(fan_in)
            raise ShapeError(f"takes {given} inputs, more than {MAX_FAN_IN} (the accumulator's bound)")
        done = LayerSpec(kind, units=spec.units, activation=spec.activation or activation)
        return LayerShape(index, done, shape, (spec.units,), None, fan_in * spec.units, spec.units, fan_in * spec.units)
    if kind == "flatten":
        return LayerShape(index, spec, shape, (math.prod(shape),))
    _needs(spec, shape, {"conv1d": (1,), "conv2d": (2,), "depthwise_conv2d": (2,)}.get(kind, (1, 2)), flat_by)
    if kind == "global_avg_pool":
        return LayerShape(index, spec, shape, (channels,))
    one_d = len(shape) == 2
    if kind in POOL_KINDS:
        stride = spec.stride if spec.stride is not None else spec.size
        geo = _window(spec, shape, spec.size, stride, spec.padding or "valid")
        done = LayerSpec(kind, size=geo.kernel, stride=geo.stride, padding=_resolved_padding(spec.padding, one_d))
        return LayerShape(index, done, shape, (*_sides(geo, one_d), channels), geo)
    if kind == "pointwise":  # a 1x1 convolution of stride 1
        geo = _window(spec, shape, 1, 1, "valid")
    else:
        geo = _window(spec, shape, spec.kernel, spec.stride or 1, spec.padding or "valid")
    taps = geo.kernel[0] * geo.kernel[1]
    fan_in = taps if kind == "depthwise_conv2d" else taps * channels
    if fan_in > MAX_FAN_IN:
        raise ShapeError(f"has windows of {fan_in} inputs, more than {MAX_FAN_IN} (the accumulator's bound)")
    out_c = channels if kind == "depthwise_conv2d" else spec.filters
    done = LayerSpec(
        kind,
        filters=spec.filters,
        kernel=geo.kernel,
        stride=geo.stride,
        padding=_resolved_padding(spec.padding, one_d),
        activation=spec.activation or activation,
        batch_norm=bool(spec.batch_norm),
    )
    positions = geo.out_hw[0] * geo.out_hw[1]
    return LayerShape(
        index, done, shape, (*_sides(geo, one_d), out_c), geo, out_c * fan_in, out_c, positions * out_c * fan_in
    )


def _sides(geo: Geometry, one_d: bool) -> tuple:
    """The output's spatial sides: (length,) in a 1-D network, (height, width) in a 2-D one."""
    return geo.out_hw[1:] if one_d else geo.out_hw


def _resolved_padding(padding, one_d: bool):
    """ "valid" or "same" as written; explicit pads as (top, bottom, left, right)."""
    if padding is None or isinstance(padding, str):
        return padding or "valid"
    return (0, 0, *padding) if one_d else tuple(padding)
