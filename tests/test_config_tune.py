"""The [tune] section: its defaults, its checks (one line naming the key), the space a study records."""

import pytest

from qmtik.config import Config
from qmtik.config_tune import SPACE_KEYS, TuneConfig
from qmtik.errors import ConfigError


def test_defaults_are_a_valid_space_and_the_config_carries_them():
    tune = Config().tune
    assert tune == TuneConfig()
    assert tune.depth == (1, 2) and tune.conv_layers == (0, 0) and tune.trial_samples == 15000
    assert Config.from_dict(Config().to_dict()).tune == tune  # round trip through plain data


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("widths", [], "tune.widths"),
        ("widths", [16, 16], "distinct"),
        ("widths", [0], "from 1"),
        ("depth", [2, 1], "low <= high"),
        ("depth", [1], "range"),
        ("conv_layers", [0, 9], "from 0 to 8"),
        ("kernel_sizes", [16], "from 1 to 15"),
        ("learning_rate", [0.01, 0.001], "low <= high"),
        ("learning_rate", [0, 0.1], "tune.learning_rate"),
        ("activation", ["relu", "swish"], "tune.activation"),
        ("trial_samples", 0, ">= 1"),
        ("sampler", "cmaes", "'tpe'"),
        ("pruner", "hyperband", "'median'"),
        ("heartbeat", 0, ">= 1"),
        ("grace", 30, "more seconds than tune.heartbeat"),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_key(key, value, says):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"tune": {key: value}})
    message = str(err.value)
    assert f"tune.{key}" in message and says in message and "\n" not in message


def test_an_unknown_tune_key_is_refused_naming_the_closest():
    with pytest.raises(ConfigError, match=r"config key tune.width: unknown key; did you mean 'tune.widths'\?") as err:
        Config.from_dict({"tune": {"width": [8]}})
    assert "\n" not in str(err.value)


def test_the_space_holds_the_searched_keys_only_as_plain_data():
    space = TuneConfig(widths=[8, 32], heartbeat=5, grace=9).space()
    assert set(space) == set(SPACE_KEYS)
    assert space["widths"] == [8, 32] and "heartbeat" not in space and "max_rejected" not in space
    assert TuneConfig(heartbeat=5, grace=9).space() == TuneConfig().space()  # liveness is no part of it


def test_repeated_activations_are_kept_once_in_order():
    assert TuneConfig(activation=["tanh", "relu", "tanh"]).activation == ("tanh", "relu")
