"""The sizes a network may have, checked before any work: when a config, a C header or a model
file is read, before data, arrays or training (docs/limits.md).

Four figures of a network, each with a limit:

    parameters        weights and biases as deployed (batch norm folded in)
    activation bytes  one sample's activations in training's float32: its input and every
                      layer's output (flatten is a view, not counted), 4 bytes a value
    macs              operations per sample: multiply-accumulates of dense and convolution
                      layers, and one per window tap of each pool output
    layers            layers as the .qmt file counts them: every layer but flatten, the output
                      layer included; the format holds at most 255, a limit nothing raises

A limit is the QMTIK_MAX_* environment variable when it is set, else the config's [limits] key,
else the default: the environment is the operator's, a config file may come from anyone, so a
limit the environment sets holds whatever the file says. `check` raises one line naming the
figure, its value, the limit and how to raise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .errors import ConfigError
from .parsing import env_count

FORMAT_LAYERS = 255  # the .qmt header's layer count is a u8
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Figures:
    """What a network needs: parameters, activation bytes per sample, operations per sample, layers."""

    parameters: int
    activation_bytes: int
    macs: int
    layers: int


# figure name: (the [limits] key, words of the figure, default, why this default)
LIMITS = {
    "layers": ("max_layers", "layers", FORMAT_LAYERS, "the .qmt format's most (its layer count is one byte)"),
    "parameters": (
        "max_parameters",
        "parameters",
        2**22,
        "4 MiB of int8 weights, more flash than most microcontrollers have; the 784-256-256-10 MLP "
        "has 269,322, the benchmarks' largest CNN 50,186; outputs = 65536 over the default hidden "
        "layer would need 4,264,000",
    ),
    "macs": (
        "max_macs",
        "multiply-accumulates per sample",
        2**27,
        "ten times MLPerf Tiny's largest model (12.5 M); the benchmarks' largest CNN needs 3.9 M",
    ),
    "activation_bytes": (
        "max_activation_bytes",
        "bytes of activations per sample",
        2**22,
        "4 MiB (a million float32 values) per sample, held batch_size times over in training; "
        "the benchmarks' largest CNN needs 191 KB",
    ),
}


def env_name(key: str) -> str:
    """The environment variable of a [limits] key: max_macs -> QMTIK_MAX_MACS."""
    return "QMTIK_" + key.upper()


def _limit_field(figure: str, help: str):
    key, _, default, _ = LIMITS[figure]
    allowed = (
        f"an integer from 1 to {FORMAT_LAYERS}, the .qmt format's most" if figure == "layers" else "an integer >= 1"
    )
    return field(default=default, metadata={"help": f"{help}; {env_name(key)} wins over it", "allowed": allowed})


@dataclass(frozen=True)
class LimitsConfig:
    """The [limits] section: how large a network the config may describe (docs/limits.md)."""

    max_parameters: int = _limit_field("parameters", "most weights and biases the network may have")
    max_activation_bytes: int = _limit_field(
        "activation_bytes", "most bytes of one sample's float32 activations: its input and every layer's output"
    )
    max_macs: int = _limit_field(
        "macs", "most operations per sample: multiply-accumulates, and one per window tap of a pool"
    )
    max_layers: int = _limit_field("layers", "most layers, the output layer included, flatten not counted")

    def __post_init__(self):
        for f in fields(self):
            limit_value(f"config key limits.{f.name}", getattr(self, f.name), f.name == "max_layers")


def limit_value(where: str, value, layers: bool = False) -> int:
    """A limit's value: an integer from 1 to int64's largest (255 for layers), or a one-line ConfigError."""
    most = FORMAT_LAYERS if layers else INT64_MAX
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        suffix = " (the .qmt format's most)" if layers else ""
        raise ConfigError(f"{where}: got {shown}; allowed: an integer from 1 to {most}{suffix}")
    return value


def in_force(section: LimitsConfig | None = None) -> dict:
    """{figure: (limit, where it comes from: 'env', 'config' or 'default')}: the environment's
    QMTIK_MAX_* when set, else the section's key when it differs from the default, else the default."""
    out = {}
    for figure, (key, _, default, _) in LIMITS.items():
        if figure == "layers":
            value = env_count(env_name(key), FORMAT_LAYERS, " (the .qmt format's most)")
        else:
            value = env_count(env_name(key), INT64_MAX)
        if value is not None:
            out[figure] = (value, "env")
        elif section is not None and getattr(section, key) != default:
            out[figure] = (getattr(section, key), "config")
        else:
            out[figure] = (default, "default")
    return out


def _count(value: int) -> str:
    """An integer with thousands separators, or its size in powers of ten when it is huge."""
    return f"{value:,}" if value < 10**24 else f"more than 10^{int(value.bit_length() * math.log10(2))}"


def problem(figures: Figures, section: LimitsConfig | None = None, config_keys: bool = True) -> str | None:
    """The first figure over its limit, in one line with how to raise the limit, or None.
    Depth first, then parameters, operations and activations. config_keys: whether a [limits]
    key can raise it (a config) or only the environment (a C header, a model file)."""
    limits = in_force(section)
    for figure, (key, words, _, _) in LIMITS.items():
        value, (limit, source) = getattr(figures, figure), limits[figure]
        if value <= limit:
            continue
        said = f"needs {_count(value)} {words}, the limit is {limit:,}"
        if figure == "layers" and limit == FORMAT_LAYERS:
            return f"{said}, the most the .qmt format holds (it cannot be raised)"
        if source == "env":
            over = f" (which wins over [limits] {key})" if config_keys else ""
            return f"{said}, set by {env_name(key)}{over}; raise it there"
        how = f"[limits] {key} or {env_name(key)}" if config_keys else env_name(key)
        cap = f" (at most {FORMAT_LAYERS})" if figure == "layers" else ""
        return f"{said}; raise it with {how}{cap}"
    return None


def check(figures: Figures, what: str, section: LimitsConfig | None = None, error=ConfigError, **kw) -> None:
    """Raise error('WHAT: needs N figure, the limit is L; raise it with ...') for the first
    figure over its limit."""
    found = problem(figures, section, **kw)
    if found:
        raise error(f"{what}: {found}")


def check_depth(layers: int, what: str, error=ConfigError) -> None:
    """Refuse more layers than the .qmt format holds, before anything is built for them."""
    if layers > FORMAT_LAYERS:
        raise error(
            f"{what}: needs {_count(layers)} layers, the limit is {FORMAT_LAYERS}, "
            "the most the .qmt format holds (it cannot be raised)"
        )


# --- the figures of each kind of network -------------------------------------------------------


def network_figures(shapes) -> Figures:
    """The figures of a config's network: its LayerShapes (config_layers.infer_shapes)."""
    parameters = macs = 0
    values = math.prod(shapes[0].in_shape) if shapes else 0
    layers = 0
    for layer in shapes:
        kind = layer.spec.kind
        if kind == "flatten":
            continue
        layers += 1
        parameters += layer.weights + layer.biases
        out = math.prod(layer.out_shape)
        values += out
        if kind in ("max_pool", "avg_pool"):
            macs += out * layer.geometry.kernel[0] * layer.geometry.kernel[1]
        elif kind == "global_avg_pool":
            macs += math.prod(layer.in_shape)
        else:
            macs += layer.macs
    return Figures(parameters, 4 * values, macs, layers)


def mlp_figures(widths) -> Figures:
    """The figures of a dense network of these widths, inputs first, outputs last."""
    widths = list(widths)
    macs = sum(a * b for a, b in zip(widths, widths[1:]))
    return Figures(macs + sum(widths[1:]), 4 * sum(widths), macs, len(widths) - 1)


def repeated_mlp_figures(inputs: int, hidden: int, repeats: int, outputs: int) -> Figures:
    """The figures of inputs -> hidden, repeats more hidden -> hidden layers, -> outputs (a C
    library header: QMTIK_L can say 10^9), worked out without a list of the widths."""
    macs = inputs * hidden + repeats * hidden * hidden + hidden * outputs
    biases = (repeats + 1) * hidden + outputs
    return Figures(macs + biases, 4 * (inputs + (repeats + 1) * hidden + outputs), macs, repeats + 2)


def model_figures(layers) -> Figures:
    """The figures of an integer model's layers (intref and intref_windows classes), counted as
    network_figures counts the config they come from."""
    parameters = macs = 0
    values = layers[0].inputs if layers else 0
    for layer in layers:
        values += layer.outputs
        weights = getattr(layer, "weights", None)
        if weights is not None:  # dense and the convolutions
            parameters += weights.size + layer.bias.size
            positions = layer.outputs // layer.weights.shape[0]  # out_h * out_w (1 for dense)
            macs += positions * weights.size
        elif layer.kind == "global_avg_pool":
            macs += layer.inputs
        else:
            macs += layer.outputs * layer.kernel[0] * layer.kernel[1]
    return Figures(parameters, 4 * values, macs, len(layers))
