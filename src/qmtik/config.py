"""The network description: a TOML file and the same structure as frozen dataclasses.

Every field has a default and a help text; the starter config (`qmtik init`) and the config
reference (docs/config.md) are generated from them. Every value is checked when a section is
built, so a Config that exists is a Config that can be trained; a bad one raises ConfigError
naming the key, the value given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import reprlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .formats import format_of
from .functions import COSTS, HIDDEN_ACTIVATIONS, OUTPUTS, TASKS, combination_problem
from .parsing import load_toml, tomllib  # noqa: F401 - tomllib re-exported: one import for every module
from .quantization import (  # re-exported: one definition for every module
    F32_MAX,
    F32_TINY,
    MAX_FAN_IN,
    SCALE_MAX,
    input_range_problem,
    scale_problem,
)

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
GRANULARITIES = ("channel", "tensor")
NAMED_DATASETS = ("digits", "mnist", "fashion-mnist")
INT64_MAX = 2**63 - 1
INPUT_RANGE_ALLOWED = "'auto' or [low, high], finite in float32, with low < high"
FLOAT32_ALLOWED = f"a number from {F32_TINY:.3g} to {F32_MAX:.3g} (a normal float32: training computes in float32)"
SCALE_ALLOWED = (
    f"'auto' or a number from {F32_TINY:.3g} to {SCALE_MAX:.3g} (a normal float32 whose 256 steps stay finite)"
)


def _field(default, help: str, allowed: str):
    """A dataclass field with the help text and allowed values the docs and starter config show."""
    if isinstance(default, list):
        return field(default_factory=lambda: tuple(default), metadata={"help": help, "allowed": allowed})
    return field(default=default, metadata={"help": help, "allowed": allowed})


# --- value checks: each returns the value (normalised) or raises ConfigError -----------------


class _Shown(reprlib.Repr):
    """repr cut short: a hostile file's value can be a 100,000-character string, a list nested
    hundreds deep or a hexadecimal integer too long for repr (Python's int-digit limit)."""

    def repr_int(self, value, level):
        if value.bit_length() > 128:
            return f"<an integer of {len(hex(abs(value))) - 2} hexadecimal digits>"
        return repr(value)


_SHOWN = _Shown()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 3, 8, 8


def _shown(value) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        tuple: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    return f"{_SHOWN.repr(value)} ({kind})"


def _refuse(key: str, value, allowed: str):
    raise ConfigError(f"config key {key}: got {_shown(value)}; allowed: {allowed}")


def _integer(key, value, lo=None, hi=None):
    allowed = (
        "an integer"
        + (f" >= {lo}" if lo is not None else "")
        + (f" and <= {_SHOWN.repr(hi)}" if hi is not None else "")
    )  # hi may be another key's value
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(key, value, allowed)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _refuse(key, value, allowed)
    if abs(value) > INT64_MAX:  # JSON (the checkpoint) and numpy must hold it
        _refuse(key, value, f"{allowed}, within int64")
    return value


def _number(key, value, lo=None, hi=None, lo_open=False, hi_open=False):
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_SHOWN.repr(hi)}")  # hi may be another key's value
    allowed = "a number" + (" " + " and ".join(parts) if parts else "")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value
        or value in (float("inf"), float("-inf"))
    ):
        _refuse(key, value, allowed)
    try:
        value = float(value)
    except OverflowError:
        _refuse(key, value, allowed)
    if lo is not None and (value <= lo if lo_open else value < lo):
        _refuse(key, value, allowed)
    if hi is not None and (value >= hi if hi_open else value > hi):
        _refuse(key, value, allowed)
    return value


def _choice(key, value, choices):
    if not isinstance(value, str) or value not in choices:
        hint = ""
        if isinstance(value, str):
            close = [c for c in choices if c.lower() == value.lower()] or difflib.get_close_matches(value, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        _refuse(key, value, ", ".join(repr(c) for c in choices) + hint)
    return value


def _boolean(key, value):
    if not isinstance(value, bool):
        _refuse(key, value, "true or false")
    return value


def _float32(key, value, zero_ok: bool = False):
    """A number training's float32 arithmetic holds without making it 0 or infinite: a normal
    float32 (or exactly 0 when zero_ok). An eps of 1e-320 would be 0 there (and 0 / 0 NaN)."""
    allowed = ("0 or " if zero_ok else "") + FLOAT32_ALLOWED
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _refuse(key, value, allowed)
    try:
        number = float(value)
    except OverflowError:
        _refuse(key, value, allowed)
    if not ((zero_ok and number == 0) or F32_TINY <= number <= F32_MAX):
        _refuse(key, value, allowed)
    return number


def _auto_or_scale(key, value):
    """'auto', or a fixed scale that int8 codes can step by (quantization.scale_problem)."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
        _refuse(key, value, SCALE_ALLOWED)
    try:
        number = float(value)
    except OverflowError:
        _refuse(key, value, SCALE_ALLOWED)
    if number != number or scale_problem(number):
        _refuse(key, value, SCALE_ALLOWED)
    return number


def _text(key, value):
    if not isinstance(value, str):
        _refuse(key, value, "a string")
    return value


# --- the sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """Topology and the functions of the network."""

    inputs: int = _field(64, "number of input features", "an integer >= 1")
    hidden: tuple = _field(
        [64], "widths of the hidden layers, input side first (any depth, [] for none)", "a list of integers >= 1"
    )
    outputs: int = _field(10, "number of outputs (classes, or regression targets)", "an integer >= 1")
    activation: str = _field("relu", "activation of the hidden layers", " | ".join(HIDDEN_ACTIVATIONS))
    leaky_slope: float = _field(0.01, "slope of leaky_relu for negative inputs", "a number > 0 and < 1")
    output: str = _field("softmax", "output processing applied to the final scores", " | ".join(OUTPUTS))
    cost: str = _field("cross_entropy", "training cost", " | ".join(COSTS))

    def __post_init__(self):
        _integer("network.inputs", self.inputs, 1, MAX_FAN_IN)
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (list, tuple)):
            _refuse("network.hidden", self.hidden, "a list of integers >= 1, such as [256, 256]")
        for width in self.hidden:
            if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_FAN_IN:
                _refuse("network.hidden", list(self.hidden), f"a list of integers from 1 to {MAX_FAN_IN}")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _integer("network.outputs", self.outputs, 1, MAX_FAN_IN)
        _choice("network.activation", self.activation, HIDDEN_ACTIVATIONS)
        object.__setattr__(self, "leaky_slope", _number("network.leaky_slope", self.leaky_slope, 0, 1, True, True))
        _choice("network.output", self.output, OUTPUTS)
        _choice("network.cost", self.cost, COSTS)

    @property
    def widths(self) -> tuple:
        """All layer widths, inputs first, outputs last."""
        return (self.inputs, *self.hidden, self.outputs)

    @property
    def layer_activations(self) -> tuple:
        """Each layer's activation: the hidden activation, then linear for the output layer
        (its scores go through the output processing instead)."""
        return (self.activation,) * len(self.hidden) + ("linear",)


@dataclass(frozen=True)
class QuantizationConfig:
    """How weights and activations become int8 (the C library's W_SCALE and A_SCALE)."""

    weight_scale: object = _field(
        "auto",
        "scale of one int8 weight step: 'auto' maps each channel's "
        "largest |w| to 127; a number fixes it (per tensor) and may clip",
        SCALE_ALLOWED,
    )
    activation_scale: object = _field(
        "auto",
        "scale of one int8 activation step: 'auto' calibrates "
        "each layer's range during training; a number fixes it for every layer",
        SCALE_ALLOWED,
    )
    weight_granularity: str = _field(
        "channel",
        "automatic weight scales per output channel or one per tensor (a fixed weight_scale is always per tensor)",
        "channel | tensor",
    )
    bits: int = _field(8, "bits of weights and activations", "8")

    def __post_init__(self):
        object.__setattr__(self, "weight_scale", _auto_or_scale("quantization.weight_scale", self.weight_scale))
        object.__setattr__(
            self, "activation_scale", _auto_or_scale("quantization.activation_scale", self.activation_scale)
        )
        _choice("quantization.weight_granularity", self.weight_granularity, GRANULARITIES)
        _integer("quantization.bits", self.bits, 8, 8)

    @property
    def per_channel(self) -> bool:
        """True when each output channel has its own weight scale."""
        return self.weight_scale == "auto" and self.weight_granularity == "channel"


@dataclass(frozen=True)
class TrainingConfig:
    """The optimizer, its schedule, and how fake quantization enters training."""

    epochs: int = _field(10, "passes over the training data", "an integer >= 1")
    batch_size: int = _field(128, "samples per gradient step", "an integer >= 1")
    optimizer: str = _field("adam", "sgd (with momentum and nesterov), adam, adamw or rmsprop", " | ".join(OPTIMIZERS))
    learning_rate: float = _field(0.002, "peak learning rate", FLOAT32_ALLOWED)
    momentum: float = _field(0.9, "momentum of sgd (0 for plain sgd)", "a number >= 0 and < 1")
    nesterov: bool = _field(False, "Nesterov momentum for sgd", "true or false")
    beta1: float = _field(0.9, "adam / adamw first-moment decay", "a number >= 0 and < 1")
    beta2: float = _field(0.999, "adam / adamw second-moment decay", "a number >= 0 and < 1")
    rho: float = _field(0.99, "rmsprop squared-gradient decay", "a number >= 0 and < 1")
    eps: float = _field(1e-8, "added to denominators of adam, adamw and rmsprop", FLOAT32_ALLOWED)
    weight_decay: float = _field(
        0.0, "L2 penalty on weights (not biases); decoupled for adamw", "0 or " + FLOAT32_ALLOWED
    )
    schedule: str = _field("cosine", "learning-rate schedule after warm-up", " | ".join(SCHEDULES))
    warmup_epochs: float = _field(0.0, "epochs of linear warm-up from 0 to learning_rate", "a number >= 0 and < epochs")
    step_size: int = _field(10, "step schedule: epochs between learning-rate drops", "an integer >= 1")
    gamma: float = _field(0.1, "step schedule: factor of each drop", "a number > 0 and <= 1")
    min_learning_rate: float = _field(
        0.0, "cosine schedule: the learning rate it ends at", "a number >= 0 and <= learning_rate"
    )
    float_epochs: int = _field(
        0, "epochs trained in float before fake quantization starts", "an integer >= 0 and <= epochs"
    )
    validation_split: float = _field(
        0.1,
        "share of the training data held out for validation (0: none; then the last epoch is kept)",
        "a number >= 0 and < 1",
    )
    seed: int = _field(0, "random seed of initialisation, shuffling and the validation split", "an integer >= 0")

    def __post_init__(self):
        k = "training."
        _integer(k + "epochs", self.epochs, 1)
        _integer(k + "batch_size", self.batch_size, 1)
        _choice(k + "optimizer", self.optimizer, OPTIMIZERS)
        _choice(k + "schedule", self.schedule, SCHEDULES)
        for name in ("learning_rate", "eps", "weight_decay"):
            object.__setattr__(self, name, _float32(k + name, getattr(self, name), zero_ok=name == "weight_decay"))
        for name, lo, hi, lo_open, hi_open in [
            ("momentum", 0, 1, False, True),
            ("beta1", 0, 1, False, True),
            ("beta2", 0, 1, False, True),
            ("rho", 0, 1, False, True),
            ("gamma", 0, 1, True, False),
            ("min_learning_rate", 0, self.learning_rate, False, False),
            ("validation_split", 0, 1, False, True),
        ]:
            object.__setattr__(self, name, _number(k + name, getattr(self, name), lo, hi, lo_open, hi_open))
        object.__setattr__(
            self, "warmup_epochs", _number(k + "warmup_epochs", self.warmup_epochs, 0, self.epochs, False, True)
        )
        _boolean(k + "nesterov", self.nesterov)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            _refuse(k + "nesterov", self.nesterov, "true only with optimizer = 'sgd' and momentum > 0")
        _integer(k + "step_size", self.step_size, 1)
        _integer(k + "float_epochs", self.float_epochs, 0, self.epochs)
        _integer(k + "seed", self.seed, 0)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how raw inputs become int8."""

    dataset: str = _field(
        "digits",
        "a named data set (digits: bundled 8x8 handwritten digits; mnist and "
        "fashion-mnist: from the cache that 'qmtik data get' fills, or Debian's "
        "dataset-fashion-mnist), or '' when train is a path",
        " | ".join(NAMED_DATASETS) + " | ''",
    )
    train: str = _field(
        "",
        "training data, relative to the config file: an .npz with arrays x and y; "
        "an .npy or IDX file of inputs (with train_labels); a .csv with a label column; "
        "or the C library's qmtik-bin samples (.bin)",
        "a path or ''",
    )
    train_labels: str = _field(
        "", "labels (or regression targets) .npy or IDX file when train is an .npy or IDX file", "a path or ''"
    )
    test: str = _field("", "test data, as train (a named data set brings its own)", "a path or ''")
    test_labels: str = _field("", "test labels when test is an .npy or IDX file", "a path or ''")
    label_column: int = _field(
        -1,
        "which column of a .csv holds the label; negative counts from the end (-1: the last, as in OpenML's mnist_784)",
        "an integer",
    )
    input_range: object = _field(
        "auto",
        "raw input values mapped to the int8 codes -128..127: "
        "'auto' takes the training data's min and max; [0, 255] gives the "
        "C library's pixel - 128",
        INPUT_RANGE_ALLOWED,
    )

    def __post_init__(self):
        for name in ("dataset", "train", "train_labels", "test", "test_labels"):
            _text("data." + name, getattr(self, name))
        for name in ("train", "train_labels", "test", "test_labels"):
            if self.dataset and getattr(self, name):
                _refuse(
                    "data." + name,
                    getattr(self, name),
                    "'' when data.dataset is set (a named data set brings its own; set dataset = '' to use paths)",
                )
        if not self.dataset and not self.train:
            _refuse("data.dataset", self.dataset, " | ".join(NAMED_DATASETS) + ", or set data.train to a path")
        if self.dataset:
            _choice("data.dataset", self.dataset, NAMED_DATASETS)
        if not isinstance(self.label_column, int) or isinstance(self.label_column, bool):
            _refuse("data.label_column", self.label_column, "an integer")
        for data, labels in (("train", "train_labels"), ("test", "test_labels")):
            path, label_path = getattr(self, data), getattr(self, labels)
            kind = format_of(path) if path else None
            if path and kind is None:
                _refuse(
                    "data." + data,
                    path,
                    "a path ending in .npz, .npy, .csv, .bin (qmtik-bin) or "
                    "an IDX name (such as train-images-idx3-ubyte.gz)",
                )
            if kind in ("npy", "idx") and not label_path:
                _refuse("data." + labels, label_path, f"a labels path when data.{data} is an .{kind} file")
            if kind in ("npz", "csv", "qmtik-bin") and label_path:
                _refuse("data." + labels, label_path, f"'' when data.{data} is a {kind} file (it holds its labels)")
            if label_path and format_of(label_path) not in ("npy", "idx"):
                _refuse("data." + labels, label_path, "an .npy or IDX file")
            if label_path and not path:
                _refuse("data." + labels, label_path, f"'' when data.{data} is '' (labels go with a file of inputs)")
        rng = self.input_range
        if rng != "auto":
            allowed = INPUT_RANGE_ALLOWED
            if not (
                isinstance(rng, (list, tuple))
                and len(rng) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
            ):
                _refuse("data.input_range", rng, allowed)
            try:
                low, high = float(rng[0]), float(rng[1])
            except OverflowError:
                _refuse("data.input_range", rng, allowed)
            if input_range_problem(low, high):
                _refuse("data.input_range", rng, allowed)
            object.__setattr__(self, "input_range", (low, high))

    def paths(self):
        """The data file paths this section names, as (key, path) pairs."""
        keys = ("train", "train_labels", "test", "test_labels")
        return [("data." + k, getattr(self, k)) for k in keys if getattr(self, k)]


SECTIONS = {
    "network": NetworkConfig,
    "quantization": QuantizationConfig,
    "training": TrainingConfig,
    "data": DataConfig,
}


@dataclass(frozen=True)
class Config:
    """A whole network description: the task and the four sections."""

    task: str = _field("classification", "what the outputs mean: classes or real values", " | ".join(TASKS))
    network: NetworkConfig = field(default_factory=NetworkConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        _choice("task", self.task, TASKS)
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                _refuse(name, getattr(self, name), f"a {cls.__name__}")
        net = self.network
        problem = combination_problem(self.task, net.output, net.cost, net.outputs)
        if problem:
            raise ConfigError(
                f"config: task = {self.task!r}, network.output = {net.output!r}, "
                f"network.cost = {net.cost!r}, network.outputs = {net.outputs}: {problem}"
            )

    # --- conversions ---

    def to_dict(self) -> dict:
        """Plain data (lists, numbers, strings) that from_dict and TOML both read back."""
        out = {"task": self.task}
        for name in SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        """Build and check a Config from nested plain data, refusing unknown keys by name."""
        if not isinstance(data, dict):
            _refuse("config", data, "a table of keys")
        allowed_top = ["task", *SECTIONS]
        for key in data:
            if key not in allowed_top:
                _unknown(key, allowed_top)
        sections = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                _refuse(name, values, f"a table [{name}]")
            known = [f.name for f in dataclasses.fields(section_cls)]
            for key in values:
                if key not in known:
                    _unknown(f"{name}.{key}", known, prefix=f"{name}.")
            sections[name] = section_cls(**values)
        return cls(task=data.get("task", "classification"), **sections)

    def replace(self, key: str, value) -> "Config":
        """A copy with one dotted key (such as 'training.epochs') set to value, checked."""
        return self.replace_many({key: value})

    def replace_many(self, changes: dict) -> "Config":
        """A copy with several dotted keys set at once, checked together, so that changes which
        only make sense together (epochs and float_epochs) do not fail one by one. A key is
        'task' or 'section.name'; a whole section ('training') is not a key: its keys are set
        one by one, so that no change can replace what another sets."""
        if not isinstance(changes, dict):
            raise ConfigError(f"config changes: got {_shown(changes)}; allowed: a table of 'section.key' = value")
        data = self.to_dict()
        for key, value in changes.items():
            if not isinstance(key, str):
                raise ConfigError(f"config key {_shown(key)}: a key is text, such as 'training.epochs'")
            section, _, name = key.rpartition(".")
            if not section and name in SECTIONS:
                first = dataclasses.fields(SECTIONS[name])[0].name
                raise ConfigError(
                    f"config key {name}: a section, not a key; set its keys one by one, such as {name}.{first}=..."
                )
            if section and section not in SECTIONS:
                _unknown(key, [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)])
            (data[section] if section else data)[name] = value
        return Config.from_dict(data)


def _unknown(key: str, allowed, prefix: str = ""):
    name = key[len(prefix) :] if prefix else key
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
    shown = key if len(key) <= 80 else key[:80] + "..."  # a hostile file's key can be 100 kB
    raise ConfigError(f"config key {shown}: unknown key{hint} (allowed: {', '.join(allowed)})")


# --- files -------------------------------------------------------------------------------------


def load_config(path, overrides=None) -> Config:
    """Read a TOML config, apply 'section.key' overrides, resolve data paths next to the file.

    Raises ConfigError for a missing or unreadable file, bad TOML, unknown keys, bad values,
    combinations that make no sense, and data files that do not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc})") from None
    data = load_toml(text, f"config file {path}", ConfigError)
    config = Config.from_dict(data).replace_many(overrides or {})
    return resolve_paths(config, path.parent)


def resolve_paths(config: Config, base: Path) -> Config:
    """Make the data paths absolute (relative ones count from base) and check the files exist."""
    updates = {}
    for key, value in config.data.paths():
        resolved = Path(value) if Path(value).is_absolute() else Path(base) / value
        if not resolved.is_file():
            raise ConfigError(f"config key {key}: file {str(resolved)!r} does not exist")
        updates[key.split(".")[1]] = str(resolved)
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **updates)) if updates else config


def parse_override(text: str) -> tuple[str, object]:
    """'training.epochs=5' to ('training.epochs', 5); values are TOML (bare words are strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, such as training.epochs=5")
    key, raw = key.strip(), raw.strip()
    parsed = load_toml(f"v = {raw}", f"override {key}", ConfigError, lenient=True)
    if parsed is None:  # not TOML: a bare word, taken as a string
        return key, raw
    if set(parsed) != {"v"}:
        raise ConfigError(f"override {key}: the value must be one TOML value on one line")
    return key, parsed["v"]


# The starter config trains the bundled digits (1438 samples): smaller batches, more epochs.
DIGITS_STARTER = {"training.epochs": 30, "training.batch_size": 32, "training.learning_rate": 0.003}
