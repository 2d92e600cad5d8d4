"""The config: defaults, TOML round trips, overrides, and every refusal as one informative line."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qmtik
from qmtik import Config, ConfigError, NetworkConfig
from qmtik.config import (
    DataConfig,
    load_config,
    parse_override,
)
from qmtik.functions import HIDDEN_ACTIVATIONS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def refusal(data) -> str:
    """The message of the ConfigError that Config.from_dict(data) raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- building and round trips -----------------------------------------------------------------


def test_defaults_build():
    config = Config()
    assert config.task == "classification"
    assert config.network.widths == (64, 64, 10)
    assert (config.network.output, config.network.cost) == ("softmax", "cross_entropy")
    assert config.quantization.bits == 8 and config.quantization.per_channel
    assert config.data.dataset == "digits"


def test_to_dict_from_dict_round_trip():
    config = Config.from_dict(
        {
            "task": "regression",
            "network": {
                "inputs": 5,
                "hidden": [7, 3],
                "outputs": 2,
                "activation": "tanh",
                "output": "linear",
                "cost": "mse",
            },
            "quantization": {"weight_scale": 0.01, "weight_granularity": "tensor"},
            "training": {
                "epochs": 4,
                "optimizer": "sgd",
                "nesterov": True,
                "float_epochs": 4,
                "validation_split": 0.0,
                "seed": 3,
            },
            "data": {"input_range": [0, 255]},
        }
    )
    assert config.network.hidden == (7, 3)
    assert config.data.input_range == (0.0, 255.0)
    assert Config.from_dict(config.to_dict()) == config
    assert Config.from_dict(json.loads(config.to_json())) == config


def test_load_config_reads_a_toml_file(tmp_path):
    path = write(
        tmp_path / "net.toml",
        "task = 'classification'\n"
        "[network]\nhidden = [16, 8]\nactivation = 'leaky_relu'\n"
        "[training]\nepochs = 3\nlearning_rate = 1\n",
    )
    config = load_config(path)
    assert config.network.hidden == (16, 8)
    assert config.network.activation == "leaky_relu"
    assert config.training.epochs == 3
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert config.training.batch_size == Config().training.batch_size  # untouched keys keep defaults


def test_load_config_applies_overrides(tmp_path):
    path = write(tmp_path / "net.toml", "[training]\nepochs = 3\n")
    config = load_config(path, {"training.epochs": 7, "network.hidden": [4]})
    assert config.training.epochs == 7 and config.network.hidden == (4,)


# --- refusals: one line naming the key, the value and what is allowed ------------------------


def test_unknown_key_names_it_and_suggests_the_close_one():
    message = refusal({"training": {"epoch": 3}})
    assert "training.epoch" in message
    assert "did you mean 'training.epochs'" in message
    assert "batch_size" in message  # the allowed keys are listed


def test_unknown_section_names_it_and_suggests_the_close_one():
    message = refusal({"netwrok": {"hidden": [8]}})
    assert "netwrok" in message
    assert "did you mean 'network'" in message
    assert "quantization" in message


def test_unknown_key_in_a_file_is_refused(tmp_path):
    path = write(tmp_path / "net.toml", "[network]\nhiden = [8]\n")
    with pytest.raises(ConfigError, match=r"network\.hiden.*did you mean 'network\.hidden'"):
        load_config(path)


@pytest.mark.parametrize(
    "value, shown",
    [("10", "'10' (a string)"), (True, "True (a boolean)"), (10.0, "10.0 (a number)"), (0, "0 (an integer)")],
)
def test_epochs_must_be_an_integer_of_at_least_one(value, shown):
    message = refusal({"training": {"epochs": value}})
    assert "training.epochs" in message and shown in message
    assert "an integer >= 1" in message


def test_a_string_for_a_number_is_refused():
    message = refusal({"training": {"learning_rate": "fast"}})
    assert "training.learning_rate" in message and "'fast'" in message and "a number from 1.18e-38" in message


def test_a_zero_width_hidden_layer_is_refused():
    message = refusal({"network": {"hidden": [64, 0]}})
    assert "network.hidden" in message and "[64, 0]" in message
    assert "integers from 1 to" in message


@pytest.mark.parametrize("value", [64, "64", {"a": 1}])
def test_hidden_must_be_a_list(value):
    message = refusal({"network": {"hidden": value}})
    assert "network.hidden" in message and repr(value) in message and "a list of integers" in message


def test_hidden_may_be_empty():
    assert Config.from_dict({"network": {"hidden": []}}).network.widths == (64, 10)


def test_an_unknown_activation_is_refused_with_a_hint():
    message = refusal({"network": {"activation": "rellu"}})
    assert "network.activation" in message and "'rellu'" in message
    assert "did you mean 'relu'" in message
    for name in HIDDEN_ACTIVATIONS:
        assert repr(name) in message


@pytest.mark.parametrize(
    "output, cost, outputs, task, reason",
    [
        ("linear", "cross_entropy", 10, "classification", "cross_entropy is the cost of softmax outputs"),
        ("softmax", "binary_cross_entropy", 10, "classification", "binary_cross_entropy is the cost of sigmoid"),
        ("softmax", "cross_entropy", 1, "classification", "softmax over a single output"),
        ("softmax", "mse", 3, "regression", "suits classes, not regression"),
        ("linear", "cross_entropy", 3, "regression", "cross_entropy is the cost of softmax outputs"),
        ("softmax", "cross_entropy", 3, "regression", "suits classes, not regression"),
        ("linear", "mse", 1, "classification", "single-output classifier needs output = 'sigmoid'"),
    ],
)
def test_combinations_that_make_no_sense_are_refused_with_the_reason(output, cost, outputs, task, reason):
    message = refusal({"task": task, "network": {"output": output, "cost": cost, "outputs": outputs}})
    assert reason in message
    assert repr(output) in message and repr(cost) in message and repr(task) in message


@pytest.mark.parametrize(
    "training", [{"optimizer": "adam", "nesterov": True}, {"optimizer": "sgd", "momentum": 0.0, "nesterov": True}]
)
def test_nesterov_needs_sgd_with_momentum(training):
    message = refusal({"training": training})
    assert "training.nesterov" in message and "True" in message
    assert "optimizer = 'sgd' and momentum > 0" in message


def test_nesterov_with_sgd_and_momentum_builds():
    config = Config.from_dict({"training": {"optimizer": "sgd", "momentum": 0.9, "nesterov": True}})
    assert config.training.nesterov is True


def test_float_epochs_may_not_exceed_epochs():
    message = refusal({"training": {"epochs": 3, "float_epochs": 4}})
    assert "training.float_epochs" in message and "4" in message and "<= 3" in message
    assert Config.from_dict({"training": {"epochs": 3, "float_epochs": 3}}).training.float_epochs == 3


@pytest.mark.parametrize("share", [1, 1.0, -0.1])
def test_validation_split_must_be_below_one(share):
    message = refusal({"training": {"validation_split": share}})
    assert "training.validation_split" in message and "< 1" in message and repr(share) in message


@pytest.mark.parametrize("rng", [[1, 1], [5, 0], [0], "wide", [0, "255"]])
def test_input_range_needs_low_below_high(rng):
    message = refusal({"data": {"input_range": rng}})
    assert "data.input_range" in message and repr(rng) in message and "low < high" in message


@pytest.mark.parametrize("rng", [[0, float("inf")], [float("-inf"), 0], [float("nan"), 1]])
def test_input_range_must_be_finite(rng):
    refusal({"data": {"input_range": rng}})


@pytest.mark.parametrize("bits", [4, 16, 8.0])
def test_bits_must_be_8(bits):
    message = refusal({"quantization": {"bits": bits}})
    assert "quantization.bits" in message and repr(bits) in message and "8" in message


def test_weight_scale_is_auto_or_positive():
    assert Config.from_dict({"quantization": {"weight_scale": 0.5}}).quantization.weight_scale == 0.5
    message = refusal({"quantization": {"weight_scale": -1}})
    assert "quantization.weight_scale" in message and "-1" in message and "'auto' or a number from" in message


def test_a_section_that_is_not_a_table_is_refused():
    message = refusal({"training": 5})
    assert "training" in message and "5" in message and "a table" in message


def test_a_missing_data_file_is_refused(tmp_path):
    path = write(tmp_path / "net.toml", "[data]\ndataset = ''\ntrain = 'missing.npz'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert "data.train" in message and "missing.npz" in message and "does not exist" in message
    assert str(tmp_path) in message  # the path it looked at, next to the config


def test_a_path_together_with_a_named_dataset_is_refused():
    message = refusal({"data": {"train": "x.npz"}})
    assert "data.train" in message and "'x.npz'" in message and "dataset = ''" in message


def test_bad_toml_is_refused_naming_the_file(tmp_path):
    path = write(tmp_path / "net.toml", "[network\nhidden = [8]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "not valid TOML" in message


def test_a_missing_config_file_is_refused(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


# --- every valid combination of functions builds, and trains --------------------------------

VALID_PAIRS = [
    ("linear", "mse"),
    ("softmax", "cross_entropy"),
    ("softmax", "mse"),
    ("sigmoid", "binary_cross_entropy"),
    ("sigmoid", "mse"),
]


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("output, cost", VALID_PAIRS)
def test_every_valid_combination_builds_and_trains(activation, output, cost):
    config = Config.from_dict(
        {
            "network": {
                "inputs": 4,
                "hidden": [5],
                "outputs": 3,
                "activation": activation,
                "output": output,
                "cost": cost,
            },
            "training": {"epochs": 1, "batch_size": 8, "validation_split": 0.0},
        }
    )
    assert (config.network.activation, config.network.output, config.network.cost) == (activation, output, cost)
    assert Config.from_dict(config.to_dict()) == config
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 4)), np.arange(24) % 3
    net = qmtik.Network(config).fit(x, y)
    assert net.predict(x).shape == (24,)
    if output != "softmax":  # a regression task accepts every output but softmax
        Config.from_dict({"task": "regression", "network": {"output": output, "cost": "mse", "outputs": 1}})


# --- data paths --------------------------------------------------------------------------------


def test_relative_data_paths_resolve_against_the_config_directory(tmp_path, monkeypatch):
    conf_dir, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    (conf_dir / "data").mkdir(parents=True)
    elsewhere.mkdir()
    np.savez(conf_dir / "data" / "train.npz", x=np.zeros((3, 64)), y=np.zeros(3, int))
    np.save(conf_dir / "test.npy", np.zeros((3, 64)))
    np.save(conf_dir / "test_labels.npy", np.zeros(3, int))
    write(
        conf_dir / "net.toml",
        "[data]\ndataset = ''\ntrain = 'data/train.npz'\ntest = 'test.npy'\ntest_labels = 'test_labels.npy'\n",
    )
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "conf" / "net.toml")
    assert Path(config.data.train).resolve() == (conf_dir / "data" / "train.npz").resolve()
    assert Path(config.data.test).resolve() == (conf_dir / "test.npy").resolve()
    assert Path(config.data.test_labels).resolve() == (conf_dir / "test_labels.npy").resolve()
    # the same relative path next to the working directory is not what is read
    write(elsewhere / "net.toml", (conf_dir / "net.toml").read_text())
    with pytest.raises(ConfigError, match="data.train"):
        load_config(elsewhere / "net.toml")


def test_absolute_data_paths_are_kept(tmp_path):
    data = tmp_path / "d" / "train.npz"
    data.parent.mkdir()
    np.savez(data, x=np.zeros((3, 64)), y=np.zeros(3, int))
    (tmp_path / "c").mkdir()
    path = write(tmp_path / "c" / "net.toml", f"[data]\ndataset = ''\ntrain = {str(data)!r}\n")
    assert load_config(path).data.train == str(data)


# --- overrides ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("training.epochs=5", ("training.epochs", 5)),
        ("network.hidden=[64,32]", ("network.hidden", [64, 32])),
        ("optimizer=sgd", ("optimizer", "sgd")),
        (" training.learning_rate = 0.01 ", ("training.learning_rate", 0.01)),
        ("training.nesterov=true", ("training.nesterov", True)),
        ("data.train=a/b.npz", ("data.train", "a/b.npz")),
        ("data.dataset=''", ("data.dataset", "")),
    ],
)
def test_parse_override(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text", ["training.epochs", "=5", ""])
def test_parse_override_needs_key_equals_value(text):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(text)


def test_replace_sets_one_key_and_checks_it():
    config = Config()
    changed = config.replace("training.epochs", 5)
    assert changed.training.epochs == 5 and config.training.epochs == 10
    assert changed.replace("network.hidden", [64, 32]).network.hidden == (64, 32)
    assert config.replace("task", "classification") == config
    with pytest.raises(ConfigError, match="training.epochs"):
        config.replace("training.epochs", 0)
    with pytest.raises(ConfigError, match="did you mean 'training.epochs'"):
        config.replace("training.epoch", 5)


@pytest.mark.parametrize("key", ["trainig.epochs", "a.b.c"])
def test_replace_refuses_an_unknown_section_with_a_config_error(key):
    with pytest.raises(ConfigError) as info:
        Config().replace(key, 5)
    assert key in str(info.value)


def test_configs_are_frozen():
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        Config().training.epochs = 3  # type: ignore[misc]
    assert NetworkConfig(hidden=[3, 2]).hidden == (3, 2)


# --- the generated reference -------------------------------------------------------------------


# --- review findings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section,key",
    [
        ("training", "learning_rate"),
        ("quantization", "weight_scale"),
        ("quantization", "activation_scale"),
        ("network", "leaky_slope"),
        ("training", "weight_decay"),
    ],
)
@pytest.mark.parametrize("sign", [1, -1])
def test_a_number_too_large_for_a_float_is_refused(section, key, sign):
    message = refusal({section: {key: sign * 10**400}})
    assert message.startswith(f"config key {section}.{key}: got ") and "allowed: " in message


@pytest.mark.parametrize("bad", [[0, 1e-44], [1e39, 1e40], [0, 10**400], [-(10**400), 0], [-1e39, 0]])
def test_an_input_range_float32_cannot_hold_is_refused(bad):
    message = refusal({"data": {"input_range": bad}})
    assert message.startswith("config key data.input_range: got ")
    assert message.endswith("allowed: 'auto' or [low, high], finite in float32, with low < high")


def test_the_documented_input_range_is_what_the_refusal_says():
    field = next(f for f in dataclasses.fields(DataConfig) if f.name == "input_range")
    message = refusal({"data": {"input_range": [0, 1e-44]}})
    assert message.endswith("allowed: " + field.metadata["allowed"])


@pytest.mark.parametrize(
    "low, high, ok",
    [
        (0, 255, True),
        (-1.5, 2.5, True),
        (0, 1e-30, True),
        (0, 1e-44, False),
        (1e39, 1e40, False),
        (-1e39, 0, False),
        (1, 1, False),
        (2, 1, False),
        (0, float("nan"), False),
    ],
)
def test_input_range_problem_is_public_in_config(low, high, ok):
    from qmtik.config import input_range_problem

    problem = input_range_problem(low, high)
    assert (problem is None) == ok
    assert problem is None or (isinstance(problem, str) and "\n" not in problem)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"dataset": "", "train": "d.npz", "train_labels": "y.npy"}, "train_labels"),
        (
            {"dataset": "", "train": "x.npy", "train_labels": "y.npy", "test": "t.npz", "test_labels": "y.npy"},
            "test_labels",
        ),
        ({"dataset": "", "train": "d.npz", "test_labels": "y.npy"}, "test_labels"),
    ],
)
def test_labels_that_would_be_ignored_are_refused(data, key):
    message = refusal({"data": data})
    assert message.startswith(f"config key data.{key}: got 'y.npy' (a string); allowed: ''")


@pytest.mark.parametrize("key", ["test", "test_labels", "train_labels"])
def test_paths_beside_a_named_data_set_are_refused(key):
    with pytest.raises(qmtik.ConfigError, match=f"data.{key}: got .*brings its own"):
        Config.from_dict({"data": {"dataset": "digits", key: "x.npz"}})


@pytest.mark.parametrize(
    "fields, key, allowed",
    [
        ({"train": "x.txt"}, "data.train", "a path ending in .npz, .npy, .csv, .bin"),
        ({"train": "x-idx3-ubyte.gz"}, "data.train_labels", "a labels path when data.train is an .idx file"),
        ({"train": "d.csv", "train_labels": "y.npy"}, "data.train_labels", "'' when data.train is a csv file"),
        ({"train": "d.bin", "train_labels": "y.npy"}, "data.train_labels", "'' when data.train is a qmtik-bin file"),
        ({"train": "x.npy", "train_labels": "y.csv"}, "data.train_labels", "an .npy or IDX file"),
        ({"train": "d.csv", "label_column": 1.5}, "data.label_column", "an integer"),
        ({"train": "d.csv", "label_column": True}, "data.label_column", "an integer"),
    ],
)
def test_data_files_of_every_format_are_checked(fields, key, allowed):
    with pytest.raises(ConfigError) as info:
        DataConfig(dataset="", **fields)
    message = str(info.value)
    assert key in message and allowed in message and "\n" not in message


@pytest.mark.parametrize(
    "fields",
    [
        {"train": "mnist_784.csv", "label_column": 0},
        {"train": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz"},
        {"train": "mnist_train.bin", "test": "mnist_test.bin"},
    ],
)
def test_data_files_of_every_format_are_accepted(fields):
    data = DataConfig(dataset="", **fields)
    assert all(getattr(data, k) == v for k, v in fields.items())


def test_overrides_are_checked_together(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text("[training]\nepochs = 200\nfloat_epochs = 100\n")
    config = load_config(path, {"training.epochs": 4, "training.float_epochs": 2})
    assert (config.training.epochs, config.training.float_epochs) == (4, 2)
    with pytest.raises(ConfigError, match="training.float_epochs"):
        load_config(path, {"training.epochs": 4})


# --- issue 10: every field validated, float32 values, the schedule -----------------------------


def every_field():
    """('section', field) for every config field, top-level task as section ''."""
    yield "", next(f for f in dataclasses.fields(Config) if f.name == "task")
    for section in ("network", "quantization", "training", "data"):
        for f in dataclasses.fields(type(getattr(Config(), section))):
            yield section, f


@pytest.mark.parametrize("section, name", [(s, f.name) for s, f in every_field()])
def test_every_field_refuses_a_value_of_the_wrong_kind(section, name):
    """A table is the wrong kind for every key: no field may take it silently (schedule did)."""
    data = {name: {"a": 1}} if not section else {section: {name: {"a": 1}}}
    key = f"{section}.{name}" if section else name
    message = refusal(data)
    assert message.startswith(f"config key {key}: got ") and "allowed: " in message


@pytest.mark.parametrize(
    "section, name",
    [
        (s, f.name)
        for s, f in every_field()
        if " | " in f.metadata["allowed"] and not f.metadata["allowed"].endswith("''")
    ],
)
def test_every_choice_refuses_a_word_it_does_not_know(section, name):
    data = {name: "bogus"} if not section else {section: {name: "bogus"}}
    assert "'bogus' (a string)" in refusal(data)


@pytest.mark.parametrize("value", ["cosin", 5, [1], "STEP", ""])
def test_the_schedule_must_be_one_of_the_schedules(value):
    message = refusal({"training": {"schedule": value}})
    assert message.startswith("config key training.schedule: got ")
    assert "allowed: 'constant', 'step', 'cosine'" in message
    if value == "cosin":
        assert "did you mean 'cosine'?" in message
    if value == "STEP":
        assert "did you mean 'step'?" in message


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_every_schedule_is_accepted(schedule):
    assert Config.from_dict({"training": {"schedule": schedule}}).training.schedule == schedule


@pytest.mark.parametrize(
    "key, value",
    [
        ("eps", 1e-320),
        ("eps", 1e-40),
        ("eps", 1e39),
        ("eps", 0),
        ("learning_rate", 1e-320),
        ("learning_rate", 1e39),
        ("weight_decay", 1e300),
        ("weight_decay", 1e-320),
        ("weight_decay", 1e39),
        ("weight_decay", -1.0),
    ],
)
def test_optimizer_numbers_must_be_normal_float32(key, value):
    """Training computes in float32: an eps of 1e-320 is 0 there (and 0 / 0 NaN), a weight decay
    of 1e300 infinite; both are refused when the config is read, not found as NaN later."""
    message = refusal({"training": {key: value}})
    assert message.startswith(f"config key training.{key}: got ")
    assert "a normal float32" in message and "1.18e-38" in message and "3.4e+38" in message


@pytest.mark.parametrize(
    "key, value",
    [("eps", 1.2e-38), ("eps", 1e30), ("learning_rate", 3e38), ("weight_decay", 0), ("weight_decay", 1e30)],
)
def test_optimizer_numbers_within_float32_are_accepted(key, value):
    assert getattr(Config.from_dict({"training": {key: value}}).training, key) == value


@pytest.mark.parametrize("key", ["weight_scale", "activation_scale"])
@pytest.mark.parametrize("value", [1e300, 1e37, 1e-40, 1e-320, 0.0, float("nan"), float("inf")])
def test_fixed_scales_must_step_within_float32(key, value):
    message = refusal({"quantization": {key: value}})
    assert message.startswith(f"config key quantization.{key}: got ")
    assert "allowed: 'auto' or a number from 1.18e-38 to 1.33e+36 (a normal float32" in message


@pytest.mark.parametrize("key", ["weight_scale", "activation_scale"])
@pytest.mark.parametrize("value", [1e36, 1.2e-38, 0.02])
def test_fixed_scales_within_float32_are_accepted(key, value):
    assert getattr(Config.from_dict({"quantization": {key: value}}).quantization, key) == value


# --- issue 10: parser limits (nesting, Python's int-digit limit) end in one line ---------------

DEEP, BIG = 100_000, "1" * 5000


def one_line_error(call) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[network]\nhidden = " + "[" * DEEP + "]" * DEEP + "\n", "nested too deeply"),
        ("[training]\nepochs = " + BIG + "\n", "an integer of more than 4300 digits"),
    ],
)
def test_a_config_beyond_the_parser_limits_is_one_line(tmp_path, text, problem):
    path = write(tmp_path / "net.toml", text)
    message = one_line_error(lambda: load_config(path))
    assert message.startswith(f"config file {path}: ") and problem in message


@pytest.mark.parametrize(
    "value", ["0x" + "f" * 5000, "[0x" + "f" * 5000 + "]", "'" + "a" * 100_000 + "'", "[" * 300 + "]" * 300]
)
@pytest.mark.parametrize(
    "key", ["training.epochs", "training.seed", "training.warmup_epochs", "network.hidden", "network.activation"]
)
def test_a_value_too_long_to_show_is_refused_in_a_short_line(tmp_path, key, value):
    """A hexadecimal integer of 5000 digits is read by TOML but cannot be printed (int-digit
    limit) nor saved in a checkpoint's JSON: refused, shown short, as a huge string or list is."""
    section, name = key.split(".")
    path = write(tmp_path / "net.toml", f"[{section}]\n{name} = {value}\n")
    assert key in one_line_error(lambda: load_config(path))


@pytest.mark.parametrize("text", ["[network]\n" + "k" * 100_000 + " = 1\n", "[" + "s" * 100_000 + "]\n"])
def test_an_unknown_key_of_100_kb_is_shown_short(tmp_path, text):
    path = write(tmp_path / "net.toml", text)
    assert "unknown key" in one_line_error(lambda: load_config(path))


def test_an_epochs_bound_too_long_to_show_still_gives_one_line():
    message = one_line_error(lambda: Config.from_dict({"training": {"epochs": 16**5000, "warmup_epochs": -1}}))
    assert "training." in message


@pytest.mark.parametrize(
    "value, problem",
    [
        ("[" * DEEP + "]" * DEEP, "nested too deeply"),
        (BIG, "an integer of more than 4300 digits"),
        ("5\nseed = 3", "one TOML value"),
    ],
)
def test_an_override_beyond_the_parser_limits_is_one_line(value, problem):
    message = one_line_error(lambda: parse_override("training.epochs=" + value))
    assert message.startswith("override training.epochs: ") and problem in message


def test_set_beyond_the_parser_limits_exits_2_with_one_line(tmp_path, capsys):
    from qmtik.cli import main

    path = write(tmp_path / "net.toml", "[training]\nepochs = 1\n")
    for value in ("[" * DEEP + "]" * DEEP, BIG):
        capsys.readouterr()
        assert main(["train", str(path), "--set", "training.epochs=" + value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("qmtik: error: override training.epochs: "), err[:300]


# --- issue 10, round 2: a section is not a key ----------------------------------------------------


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"training": 1, "training.epochs": 2}, "config key training: a section, not a key"),
        ({"training": [1], "training.seed": 1}, "config key training: a section, not a key"),
        ({"network": 1, "network.inputs": 3}, "config key network: a section, not a key"),
        ({"network": {"hidden": [3]}}, "config key network: a section, not a key; set its keys one by one"),
        ({"training.epochs": 2, "training": 1}, "config key training: a section, not a key"),
        ({1: 2}, "config key 1 (an integer): a key is text"),
        ([("training.epochs", 2)], "config changes: got"),
    ],
)
def test_changes_set_keys_never_whole_sections(tmp_path, changes, fragment):
    """{'training': 1, 'training.epochs': 2} once raised TypeError ('int' object does not
    support item assignment); a whole table was taken, and could undo another change."""
    path = write(tmp_path / "c.toml", "")
    assert fragment in one_line_error(lambda: load_config(path, changes))
    assert fragment in one_line_error(lambda: Config().replace_many(changes))


# --- bounded readers (issue 15): a hostile file or --set gives a Config or one line ------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fashion_cnn.toml"
TOML_TOKENS = ["[", "]", "{", "}", "=", ",", '"', "'", "\n", " ", "#", ".", "-", "+", "_", "0x", "e", "inf", "nan"]
TOML_TOKENS += ["1", "65536", "9" * 25, "true", "[[network.layers]]\n", "[limits]\n", "max_layers = 1\n", "[" * 50]
TOML_TOKENS += ["kind", "units", "filters", "hidden", "outputs", "\\u0000", "é", "\x00", "\r"]
KEYS = sorted(
    f"{section}.{f.name}" for section, cls in qmtik.config.SECTIONS.items() for f in dataclasses.fields(cls)
) + ["task", "network", "limits.max_nothing", "", "a.b.c"]


@st.composite
def mutated_toml(draw, text: str):
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.lists(st.sampled_from(TOML_TOKENS), max_size=5).map("".join)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 30)) :]
    return text


def config_or_one_line(read):
    """read() gives a Config, or raises a ConfigError of one line; nothing else."""
    try:
        result = read()
    except ConfigError as exc:
        assert "\n" not in str(exc) and 0 < len(str(exc)) < 2000, str(exc)
        return None
    assert isinstance(result, Config)
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_toml(EXAMPLE.read_text(encoding="utf-8")))
def test_a_mutated_config_file_gives_a_config_or_one_line(tmp_path, text):
    path = tmp_path / "mutant.toml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    config = config_or_one_line(lambda: load_config(path))
    if config is not None:
        assert qmtik.limits.network_figures(config.network.shapes).layers <= 255


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(KEYS), raw=st.lists(st.sampled_from(TOML_TOKENS), max_size=8).map("".join))
def test_a_random_set_gives_a_config_or_one_line(key, raw):
    def read():
        return Config().replace_many(dict([parse_override(f"{key}={raw}")]))

    config_or_one_line(read)


def test_a_config_file_over_1_mib_is_refused_unread(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("# " + "x" * (1 << 20) + "\ntask = 'classification'\n")
    with pytest.raises(ConfigError, match=r"big.toml: larger than 1 MiB; a config is a few kB$"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_an_unknown_section_in_a_change_is_named_with_the_closest_key_and_the_sections():
    """A change to a key of no section suggests the closest full key and lists the sections,
    not every key of every section (a line of over a thousand characters)."""
    with pytest.raises(ConfigError) as err:
        Config().replace_many({"trainig.epochs": 3})
    message = str(err.value)
    assert "did you mean 'training.epochs'?" in message and "allowed: network.*, quantization.*" in message
    assert len(message) < 300 and "\n" not in message
