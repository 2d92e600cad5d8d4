"""The seven sections of a config (SECTIONS, in this order) as frozen dataclasses, each value
checked as the section is built (config_values.py). Four are defined here: [network],
[quantization], [training], [data]; [limits] is limits.py's (it is read below the
configuration, by the .qmt reader too), [deploy] config_deploy.py's, [tune] config_tune.py's.

Every field carries a help text and the values it allows (`documented`): the starter config
and docs/config.md are generated from them (config_docs.py). config.py puts the sections
together into a Config and reads the TOML file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from . import config_layers as layer_config
from . import config_values as check
from . import limits
from .config_deploy import DeployConfig
from .config_tune import TuneConfig
from .config_values import FLOAT32_ALLOWED, INPUT_RANGE_ALLOWED, SCALE_ALLOWED, documented
from .data_formats import format_of
from .errors import ConfigError
from .functions import COSTS, HIDDEN_ACTIVATIONS, OUTPUTS
from .quantization import MAX_FAN_IN

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
GRANULARITIES = ("channel", "tensor")
NAMED_DATASETS = ("digits", "mnist", "fashion-mnist")


@dataclass(frozen=True)
class NetworkConfig:
    """Topology and the functions of the network: an MLP (inputs, hidden), or a list of layers
    over an input shape (input_shape, layers; config_layers.py). Either way the output layer,
    dense with `outputs` units, is implied."""

    inputs: int = documented(
        64, "number of input features (derived from input_shape when that is given)", "an integer >= 1"
    )
    input_shape: tuple = documented(
        [],
        "shape of one sample, channels last: [height, width, channels], [length, channels], "
        "or [] for flat [inputs]; flat data is reshaped to it in row-major order",
        "[] or a list of 1 to 3 integers >= 1",
    )
    hidden: tuple = documented(
        [64], "widths of the hidden layers, input side first (any depth, [] for none)", "a list of integers >= 1"
    )
    layers: tuple = documented(
        [],
        "the layers, input side first, as [[network.layers]] tables (see Layer tables below); "
        "[] for the MLP of hidden (beside layers, hidden is left out, [] or its default)",
        "[] or a list of layer tables",
    )
    outputs: int = documented(10, "number of outputs (classes, or regression targets)", "an integer >= 1")
    activation: str = documented(
        "relu", "activation of the hidden layers (the default of each layer table's)", " | ".join(HIDDEN_ACTIVATIONS)
    )
    leaky_slope: float = documented(0.01, "slope of leaky_relu for negative inputs", "a number > 0 and < 1")
    output: str = documented("softmax", "output processing applied to the final scores", " | ".join(OUTPUTS))
    cost: str = documented("cross_entropy", "training cost", " | ".join(COSTS))

    def __post_init__(self):
        shape = layer_config.input_shape("network.input_shape", self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        if shape and self.inputs not in (_DEFAULT_INPUTS, math.prod(shape)):
            raise ConfigError(_contradiction(self.inputs, shape))
        object.__setattr__(self, "inputs", math.prod(shape) if shape else self.inputs)
        check.integer("network.inputs", self.inputs, 1, layer_config.MAX_VALUES if shape else MAX_FAN_IN)
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (list, tuple)):
            check.refuse("network.hidden", self.hidden, "a list of integers >= 1, such as [256, 256]")
        for width in self.hidden:
            if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_FAN_IN:
                check.refuse("network.hidden", list(self.hidden), f"a list of integers from 1 to {MAX_FAN_IN}")
        limits.check_depth(len(self.hidden) + 1, "config key network.hidden")  # before building a layer
        layers = layer_config.parse_layers(self.layers)
        if layers and tuple(self.hidden) not in ((), _DEFAULT_HIDDEN):
            raise ConfigError(_both_hidden_and_layers(list(self.hidden)))
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "hidden", () if layers else tuple(self.hidden))
        check.integer("network.outputs", self.outputs, 1, MAX_FAN_IN)
        check.choice("network.activation", self.activation, HIDDEN_ACTIVATIONS)
        object.__setattr__(self, "leaky_slope", check.number("network.leaky_slope", self.leaky_slope, 0, 1, True, True))
        check.choice("network.output", self.output, OUTPUTS)
        check.choice("network.cost", self.cost, COSTS)
        given = layers or tuple(layer_config.LayerSpec("dense", units=w) for w in self.hidden)
        source = "network.layers" if layers else "network.hidden"
        shapes = layer_config.infer_shapes(self.sample_shape, given, self.outputs, self.activation, source)
        object.__setattr__(self, "_shapes", shapes)

    @staticmethod
    def check_keys(values: dict) -> None:
        """What only the keys written can tell: inputs written beside an input_shape they
        contradict, even when they equal the default (64)."""
        if "input_shape" in values and "inputs" in values:
            shape = layer_config.input_shape("network.input_shape", values["input_shape"])
            if shape and values["inputs"] != math.prod(shape):
                raise ConfigError(_contradiction(values["inputs"], shape))

    def to_dict(self) -> dict:
        """The section as plain data that from_dict reads back; a network of layers leaves out
        inputs (derived) and hidden (unused), so that overriding input_shape or layers works."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "layers":
                value = [spec.to_dict() for spec in value]
            if self.layers and f.name == "hidden" or self.input_shape and f.name == "inputs":
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def sample_shape(self) -> tuple:
        """One sample's shape: input_shape, or (inputs,) for a flat input."""
        return self.input_shape or (self.inputs,)

    @property
    def shapes(self) -> tuple:
        """Each layer's LayerShape (config_layers.py): resolved spec, input and output shape,
        window geometry, weights, biases, MACs; the implied output layer last."""
        return self._shapes

    @property
    def layer_specs(self) -> tuple:
        """Every layer as a resolved LayerSpec, the implied output layer (dense, linear) last;
        an MLP's are dense layers of the hidden widths."""
        return tuple(layer.spec for layer in self._shapes)

    @property
    def is_dense(self) -> bool:
        """True when every layer is dense (an MLP, whatever its input shape)."""
        return all(spec.kind == "dense" for spec in self.layer_specs)

    @property
    def widths(self) -> tuple:
        """All layer widths, inputs first, outputs last (dense networks only)."""
        self._dense_only("widths")
        return (self.inputs, *(spec.units for spec in self.layer_specs))

    @property
    def layer_activations(self) -> tuple:
        """Each layer's activation: the hidden activation, then linear for the output layer
        (its scores go through the output processing instead). Dense networks only."""
        self._dense_only("layer_activations")
        return tuple(spec.activation for spec in self.layer_specs)

    def _dense_only(self, name: str) -> None:
        """Refuse an MLP-only property of a network with other layers, rather than mislead."""
        if not self.is_dense:
            kinds = sorted({spec.kind for spec in self.layer_specs} - {"dense"})
            raise ConfigError(f"network.{name}: the network has {', '.join(kinds)} layers; use network.shapes")


_DEFAULT_INPUTS = 64
_DEFAULT_HIDDEN = (64,)


def _contradiction(inputs, shape) -> str:
    """The message of an inputs that contradicts input_shape."""
    return (
        f"config key network.inputs: got {check.shown(inputs)}, but network.input_shape = {list(shape)} "
        f"gives {math.prod(shape)} inputs; leave inputs out (it is derived) or make them agree"
    )


def _both_hidden_and_layers(hidden) -> str:
    """The message of hidden widths beside a list of layers."""
    return (
        f"config key network.hidden: got {check.shown(hidden)} beside network.layers; "
        'allowed: [] or left out (with layers, write dense layers as [[network.layers]] kind = "dense")'
    )


@dataclass(frozen=True)
class QuantizationConfig:
    """How weights and activations become int8 (the C library's W_SCALE and A_SCALE)."""

    weight_scale: object = documented(
        "auto",
        "scale of one int8 weight step: 'auto' maps each channel's "
        "largest |w| to 127; a number fixes it (per tensor) and may clip",
        SCALE_ALLOWED,
    )
    activation_scale: object = documented(
        "auto",
        "scale of one int8 activation step: 'auto' calibrates "
        "each layer's range during training; a number fixes it for every layer",
        SCALE_ALLOWED,
    )
    weight_granularity: str = documented(
        "channel",
        "automatic weight scales per output channel or one per tensor (a fixed weight_scale is always per tensor)",
        "channel | tensor",
    )
    bits: int = documented(8, "bits of weights and activations", "8")

    def __post_init__(self):
        object.__setattr__(self, "weight_scale", check.auto_or_scale("quantization.weight_scale", self.weight_scale))
        object.__setattr__(
            self, "activation_scale", check.auto_or_scale("quantization.activation_scale", self.activation_scale)
        )
        check.choice("quantization.weight_granularity", self.weight_granularity, GRANULARITIES)
        check.integer("quantization.bits", self.bits, 8, 8)

    @property
    def per_channel(self) -> bool:
        """True when each output channel has its own weight scale."""
        return self.weight_scale == "auto" and self.weight_granularity == "channel"


@dataclass(frozen=True)
class TrainingConfig:
    """The optimizer, its schedule, and how fake quantization enters training."""

    epochs: int = documented(10, "passes over the training data", "an integer >= 1")
    batch_size: int = documented(128, "samples per gradient step", "an integer >= 1")
    optimizer: str = documented(
        "adam", "sgd (with momentum and nesterov), adam, adamw or rmsprop", " | ".join(OPTIMIZERS)
    )
    learning_rate: float = documented(0.002, "peak learning rate", FLOAT32_ALLOWED)
    momentum: float = documented(0.9, "momentum of sgd (0 for plain sgd)", "a number >= 0 and < 1")
    nesterov: bool = documented(False, "Nesterov momentum for sgd", "true or false")
    beta1: float = documented(0.9, "adam / adamw first-moment decay", "a number >= 0 and < 1")
    beta2: float = documented(0.999, "adam / adamw second-moment decay", "a number >= 0 and < 1")
    rho: float = documented(0.99, "rmsprop squared-gradient decay", "a number >= 0 and < 1")
    eps: float = documented(1e-8, "added to denominators of adam, adamw and rmsprop", FLOAT32_ALLOWED)
    weight_decay: float = documented(
        0.0, "L2 penalty on weights (not biases); decoupled for adamw", "0 or " + FLOAT32_ALLOWED
    )
    schedule: str = documented("cosine", "learning-rate schedule after warm-up", " | ".join(SCHEDULES))
    warmup_epochs: float = documented(
        0.0, "epochs of linear warm-up from 0 to learning_rate", "a number >= 0 and < epochs"
    )
    step_size: int = documented(10, "step schedule: epochs between learning-rate drops", "an integer >= 1")
    gamma: float = documented(0.1, "step schedule: factor of each drop", "a number > 0 and <= 1")
    min_learning_rate: float = documented(
        0.0, "cosine schedule: the learning rate it ends at", "a number >= 0 and <= learning_rate"
    )
    float_epochs: int = documented(
        0, "epochs trained in float before fake quantization starts", "an integer >= 0 and <= epochs"
    )
    freeze_bn_epoch: object = documented(
        "auto",
        "the first epoch (from 1) whose batch normalizations use their moving statistics, frozen, "
        "which is the arithmetic that ships: 'auto' freezes the last two epochs (never the first)",
        "'auto' or an integer >= 1",
    )
    validation_split: float = documented(
        0.1,
        "share of the training data held out for validation (0: none; then the last epoch is kept)",
        "a number >= 0 and < 1",
    )
    seed: int = documented(0, "random seed of initialisation, shuffling and the validation split", "an integer >= 0")

    def __post_init__(self):
        k = "training."
        check.integer(k + "epochs", self.epochs, 1)
        check.integer(k + "batch_size", self.batch_size, 1)
        check.choice(k + "optimizer", self.optimizer, OPTIMIZERS)
        check.choice(k + "schedule", self.schedule, SCHEDULES)
        for name in ("learning_rate", "eps", "weight_decay"):
            object.__setattr__(self, name, check.float32(k + name, getattr(self, name), zero_ok=name == "weight_decay"))
        for name, lo, hi, lo_open, hi_open in [
            ("momentum", 0, 1, False, True),
            ("beta1", 0, 1, False, True),
            ("beta2", 0, 1, False, True),
            ("rho", 0, 1, False, True),
            ("gamma", 0, 1, True, False),
            ("min_learning_rate", 0, self.learning_rate, False, False),
            ("validation_split", 0, 1, False, True),
        ]:
            object.__setattr__(self, name, check.number(k + name, getattr(self, name), lo, hi, lo_open, hi_open))
        object.__setattr__(
            self, "warmup_epochs", check.number(k + "warmup_epochs", self.warmup_epochs, 0, self.epochs, False, True)
        )
        check.boolean(k + "nesterov", self.nesterov)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            check.refuse(k + "nesterov", self.nesterov, "true only with optimizer = 'sgd' and momentum > 0")
        check.integer(k + "step_size", self.step_size, 1)
        check.integer(k + "float_epochs", self.float_epochs, 0, self.epochs)
        frozen_from = self.freeze_bn_epoch
        if frozen_from != "auto" and (
            isinstance(frozen_from, bool) or not isinstance(frozen_from, int) or frozen_from < 1
        ):
            check.refuse(k + "freeze_bn_epoch", frozen_from, "'auto' or an integer >= 1")
        check.integer(k + "seed", self.seed, 0)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how raw inputs become int8."""

    dataset: str = documented(
        "digits",
        "a named data set (digits: bundled 8x8 handwritten digits; mnist and "
        "fashion-mnist: from the cache that 'qmtik data get' fills, or Debian's "
        "dataset-fashion-mnist), or '' when train is a path",
        " | ".join(NAMED_DATASETS) + " | ''",
    )
    train: str = documented(
        "",
        "training data, relative to the config file: an .npz with arrays x and y; "
        "an .npy or IDX file of inputs (with train_labels); a .csv with a label column; "
        "or the C library's qmtik-bin samples (.bin)",
        "a path or ''",
    )
    train_labels: str = documented(
        "", "labels (or regression targets) .npy or IDX file when train is an .npy or IDX file", "a path or ''"
    )
    test: str = documented("", "test data, as train (a named data set brings its own)", "a path or ''")
    test_labels: str = documented("", "test labels when test is an .npy or IDX file", "a path or ''")
    label_column: int = documented(
        -1,
        "which column of a .csv holds the label; negative counts from the end (-1: the last, as in OpenML's mnist_784)",
        "an integer",
    )
    input_range: object = documented(
        "auto",
        "raw input values mapped to the int8 codes -128..127: "
        "'auto' takes the training data's min and max; [0, 255] gives the "
        "C library's pixel - 128",
        INPUT_RANGE_ALLOWED,
    )

    def __post_init__(self):
        for name in ("dataset", "train", "train_labels", "test", "test_labels"):
            check.text("data." + name, getattr(self, name))
        for name in ("train", "train_labels", "test", "test_labels"):
            if self.dataset and getattr(self, name):
                check.refuse(
                    "data." + name,
                    getattr(self, name),
                    "'' when data.dataset is set (a named data set brings its own; set dataset = '' to use paths)",
                )
        if not self.dataset and not self.train:
            check.refuse("data.dataset", self.dataset, " | ".join(NAMED_DATASETS) + ", or set data.train to a path")
        if self.dataset:
            check.choice("data.dataset", self.dataset, NAMED_DATASETS)
        if not isinstance(self.label_column, int) or isinstance(self.label_column, bool):
            check.refuse("data.label_column", self.label_column, "an integer")
        for data, labels in (("train", "train_labels"), ("test", "test_labels")):
            path, label_path = getattr(self, data), getattr(self, labels)
            kind = format_of(path) if path else None
            if path and kind is None:
                check.refuse(
                    "data." + data,
                    path,
                    "a path ending in .npz, .npy, .csv, .bin (qmtik-bin) or "
                    "an IDX name (such as train-images-idx3-ubyte.gz)",
                )
            if kind in ("npy", "idx") and not label_path:
                check.refuse("data." + labels, label_path, f"a labels path when data.{data} is an .{kind} file")
            if kind in ("npz", "csv", "qmtik-bin") and label_path:
                check.refuse(
                    "data." + labels, label_path, f"'' when data.{data} is a {kind} file (it holds its labels)"
                )
            if label_path and format_of(label_path) not in ("npy", "idx"):
                check.refuse("data." + labels, label_path, "an .npy or IDX file")
            if label_path and not path:
                check.refuse(
                    "data." + labels, label_path, f"'' when data.{data} is '' (labels go with a file of inputs)"
                )
        object.__setattr__(self, "input_range", check.input_range("data.input_range", self.input_range))

    def paths(self):
        """The data file paths this section names, as (key, path) pairs."""
        keys = ("train", "train_labels", "test", "test_labels")
        return [("data." + k, getattr(self, k)) for k in keys if getattr(self, k)]


SECTIONS = {
    "network": NetworkConfig,
    "quantization": QuantizationConfig,
    "training": TrainingConfig,
    "data": DataConfig,
    "limits": limits.LimitsConfig,  # how large a network may be (limits.py, docs/limits.md)
    "deploy": DeployConfig,  # config_deploy.py
    "tune": TuneConfig,  # config_tune.py
}
