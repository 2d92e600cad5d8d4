"""The network description: a TOML file and the same structure as frozen dataclasses.

Every field has a default and a help text; the starter config (`qmtik init`) and the config
reference (docs/config.md) are generated from them. Every value is checked when a section is
built, so a Config that exists is a Config that can be trained; a bad one raises ConfigError
naming the key, the value given and what is allowed.

The sections are in config_sections.py, the checks of single values in config_values.py; this
module puts the sections together (`Config`), reads the TOML file and re-exports the rest, so
`from qmtik.config import ...` reaches every name of the schema.
"""

from __future__ import annotations

import dataclasses
import json
import reprlib
from dataclasses import dataclass, field
from pathlib import Path

from . import config_values as check
from . import limits as size_limits
from .config_sections import (
    GRANULARITIES,
    NAMED_DATASETS,
    OPTIMIZERS,
    SCHEDULES,
    SECTIONS,
    DataConfig,
    DeployConfig,
    NetworkConfig,
    QuantizationConfig,
    TrainingConfig,
    TuneConfig,
)
from .config_values import documented
from .errors import ConfigError
from .functions import TASKS, combination_problem
from .parsing import load_toml, tomllib  # tomllib re-exported: one import for every module
from .quantization import (  # re-exported: one definition for every module
    F32_MAX,
    F32_TINY,
    MAX_FAN_IN,
    SCALE_MAX,
    input_range_problem,
    scale_problem,
)

__all__ = [  # the sections, their enumerations and the shared rules are read from here
    "DIGITS_STARTER",
    "F32_MAX",
    "F32_TINY",
    "GRANULARITIES",
    "MAX_FAN_IN",
    "NAMED_DATASETS",
    "OPTIMIZERS",
    "SCALE_MAX",
    "SCHEDULES",
    "SECTIONS",
    "Config",
    "DataConfig",
    "NetworkConfig",
    "QuantizationConfig",
    "TrainingConfig",
    "input_range_problem",
    "load_config",
    "parse_override",
    "resolve_paths",
    "scale_problem",
    "tomllib",
]


@dataclass(frozen=True)
class Config:
    """A whole network description: the task and the five sections (the last, [limits], bounds
    the network's size: limits.py)."""

    task: str = documented("classification", "what the outputs mean: classes or real values", " | ".join(TASKS))
    network: NetworkConfig = field(default_factory=NetworkConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    limits: size_limits.LimitsConfig = field(default_factory=size_limits.LimitsConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)  # config_tune.py: qmtik tune's search

    def __post_init__(self):
        check.choice("task", self.task, TASKS)
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                check.refuse(name, getattr(self, name), f"a {cls.__name__}")
        net = self.network
        problem = combination_problem(self.task, net.output, net.cost, net.outputs)
        if problem:
            raise ConfigError(
                f"config: task = {self.task!r}, network.output = {net.output!r}, "
                f"network.cost = {net.cost!r}, network.outputs = {net.outputs}: {problem}"
            )
        size_limits.check(size_limits.network_figures(net.shapes), "config [network]", self.limits)

    # --- conversions ---

    def to_dict(self) -> dict:
        """Plain data (lists, numbers, strings) that from_dict and TOML both read back."""
        out = {"task": self.task}
        for name in SECTIONS:
            section = getattr(self, name)
            if hasattr(section, "to_dict"):  # [network] writes its layer tables and leaves out derived keys
                out[name] = section.to_dict()
                continue
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        """Build and check a Config from nested plain data, refusing unknown keys by name."""
        if not isinstance(data, dict):
            check.refuse("config", data, "a table of keys")
        allowed_top = ["task", *SECTIONS]
        for key in data:
            if key not in allowed_top:
                check.unknown(key, allowed_top)
        sections = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                check.refuse(name, values, f"a table [{name}]")
            known = [f.name for f in dataclasses.fields(section_cls)]
            for key in values:
                if key not in known:
                    check.unknown(f"{name}.{key}", known, prefix=f"{name}.")
            if hasattr(section_cls, "check_keys"):  # what only the keys written can tell
                section_cls.check_keys(values)
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
            raise ConfigError(f"config changes: got {check.shown(changes)}; allowed: a table of 'section.key' = value")
        data = self.to_dict()
        for key, name in (("network.input_shape", "inputs"), ("network.layers", "hidden")):
            if changes.get(key) and f"network.{name}" not in changes:
                data["network"].pop(name, None)  # derived (inputs) or unused (hidden) once the change is made
        for key, value in changes.items():
            if not isinstance(key, str):
                raise ConfigError(f"config key {check.shown(key)}: a key is text, such as 'training.epochs'")
            section, _, name = key.rpartition(".")
            if not section and name in SECTIONS:
                first = dataclasses.fields(SECTIONS[name])[0].name
                raise ConfigError(
                    f"config key {name}: a section, not a key; set its keys one by one, such as {name}.{first}=..."
                )
            if section and section not in SECTIONS:
                every_key = [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
                check.unknown(key, every_key, listed=[f"{s}.*" for s in SECTIONS])
            (data[section] if section else data)[name] = value
        return Config.from_dict(data)


# --- files -------------------------------------------------------------------------------------

MAX_CONFIG_BYTES = 1 << 20  # a config of 255 layer tables is about 25 kB


def load_config(path, overrides=None) -> Config:
    """Read a TOML config, apply 'section.key' overrides, resolve data paths next to the file.

    Raises ConfigError for a missing or unreadable file, bad TOML, unknown keys, bad values,
    combinations that make no sense, and data files that do not exist.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_CONFIG_BYTES + 1)  # a device or a huge file is refused, not read whole
        if len(blob) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few kB")
        text = blob.decode("utf-8").replace("\r\n", "\n")
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
        raise ConfigError(f"override {reprlib.repr(text)}: expected KEY=VALUE, such as training.epochs=5")
    key, raw = key.strip(), raw.strip()
    shown = key if len(key) <= 80 else key[:80] + "..."  # a hostile key is long
    parsed = load_toml(f"v = {raw}", f"override {shown}", ConfigError, lenient=True)
    if parsed is None:  # not TOML: a bare word, taken as a string
        return key, raw
    if set(parsed) != {"v"}:
        raise ConfigError(f"override {shown}: the value must be one TOML value on one line")
    return key, parsed["v"]


# The starter config trains the bundled digits (1438 samples): smaller batches, more epochs.
DIGITS_STARTER = {"training.epochs": 30, "training.batch_size": 32, "training.learning_rate": 0.003}
