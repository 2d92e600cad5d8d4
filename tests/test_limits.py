"""qmtik.limits: a network's sizes checked before any work (issue 15, "Sizes and depth"): the
figures, the limits in force ([limits] keys, QMTIK_MAX_* winning), one-line refusals at config
load, before data is read, and the shipped networks within the defaults."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from qmtik import limits
from qmtik.cli import main
from qmtik.config import Config, load_config, parse_override
from qmtik.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MLP = {"network.inputs": 784, "network.hidden": [256, 256]}


@pytest.fixture(autouse=True)
def no_limits_in_the_environment(monkeypatch):
    """The defaults, whatever the shell running the tests sets."""
    for key, *_ in limits.LIMITS.values():
        monkeypatch.delenv(limits.env_name(key), raising=False)


def refused(changes) -> str:
    with pytest.raises(ConfigError) as info:
        Config().replace_many(changes)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    return message


# --- the cases of the issue --------------------------------------------------------------------


def test_two_hidden_layers_of_65536_are_refused_by_their_parameters():
    """hidden = [65536, 65536] tried to allocate 32 GiB and died with MemoryError."""
    assert refused({"network.hidden": [65536, 65536]}) == (
        "config [network]: needs 4,299,948,042 parameters, the limit is 4,194,304; "
        "raise it with [limits] max_parameters or QMTIK_MAX_PARAMETERS"
    )


def test_65536_outputs_are_refused_by_their_parameters():
    """outputs = 65536 asked for 16 GiB (np.eye of the outputs for the labels)."""
    assert "needs 4,264,000 parameters, the limit is 4,194,304" in refused({"network.outputs": 65536})


@pytest.mark.parametrize("form", ["hidden", "layers"])
def test_a_300_layer_network_is_refused_when_the_config_loads(form):
    """300 layers trained to the end and only then failed to save (the .qmt format holds 255)."""
    changes = (
        {"network.hidden": [4] * 299}
        if form == "hidden"
        else {"network.input_shape": [8, 8, 1], "network.layers": [{"kind": "dense", "units": 4}] * 299}
    )
    assert refused(changes) == (
        f"config key network.{form}: needs 300 layers, the limit is 255, "
        "the most the .qmt format holds (it cannot be raised)"
    )


@pytest.mark.parametrize("form", ["hidden", "layers"])
def test_100000_layers_of_width_1_are_refused_before_any_layer_is_built(form, monkeypatch):
    """100,000 layers of width 1 ran past 120 s; now the list is counted, not built."""
    base = Config()
    monkeypatch.setattr("qmtik.config_layers.infer_shapes", lambda *a, **k: pytest.fail("shapes were inferred"))
    monkeypatch.setattr("qmtik.config_layers.parse_layer", lambda *a, **k: pytest.fail("a table was parsed"))
    changes = (
        {"network.hidden": [1] * 100_000}
        if form == "hidden"
        else {"network.layers": [{"kind": "dense", "units": 1}] * 100_000}
    )
    with pytest.raises(ConfigError, match="needs 100,001 layers, the limit is 255, the most the .qmt format holds"):
        base.replace_many(changes)


def test_flatten_is_no_layer_of_the_format():
    layers = [{"kind": "flatten"}] * 300 + [{"kind": "dense", "units": 2}] * 254
    config = Config().replace_many({"network.input_shape": [4, 4, 1], "network.layers": layers})
    assert limits.network_figures(config.network.shapes).layers == 255
    assert "needs 256 layers" in refused({"network.input_shape": [4, 4, 1], "network.layers": layers + layers[-1:]})


def test_the_train_command_refuses_before_reading_data(tmp_path, monkeypatch, capsys):
    """One line on stderr, exit 2 (a config error), no traceback, and no data read: the data
    set named is not in the (empty) cache, which would be a different error."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = tmp_path / "big.toml"
    config.write_text('[network]\nhidden = [65536, 65536]\n[data]\ndataset = "mnist"\n')
    monkeypatch.setattr("qmtik.workflow.load_dataset", lambda *a, **k: pytest.fail("data was read"), raising=False)
    assert main(["train", str(config), "-o", str(tmp_path / "m.ckpt.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("qmtik: error: config [network]: needs 4,299,948,042 parameters"), err
    assert not list(tmp_path.glob("m.*"))


# --- raising and lowering ----------------------------------------------------------------------


def test_a_limits_key_raises_a_limit_and_the_environment_wins_over_it(monkeypatch):
    raised = Config().replace_many({"network.outputs": 65536, "limits.max_parameters": 5_000_000})
    assert raised.limits.max_parameters == 5_000_000
    assert raised.to_dict()["limits"]["max_parameters"] == 5_000_000  # a checkpoint keeps it
    assert Config.from_dict(raised.to_dict()) == raised
    monkeypatch.setenv("QMTIK_MAX_PARAMETERS", "4_000_000")
    with pytest.raises(ConfigError) as info:
        Config.from_dict(raised.to_dict())
    assert str(info.value) == (
        "config [network]: needs 4,264,000 parameters, the limit is 4,000,000, set by "
        "QMTIK_MAX_PARAMETERS (which wins over [limits] max_parameters); raise it there"
    )
    monkeypatch.setenv("QMTIK_MAX_PARAMETERS", "16777216")  # the environment raises it alone too
    assert Config().replace("network.outputs", 65536).network.outputs == 65536


def test_the_environment_lowers_every_limit(monkeypatch):
    config = Config().replace_many(MLP)
    expected = {
        "QMTIK_MAX_LAYERS": "needs 3 layers, the limit is 2",
        "QMTIK_MAX_PARAMETERS": "needs 269,322 parameters, the limit is 2",
        "QMTIK_MAX_MACS": "needs 268,800 multiply-accumulates per sample, the limit is 2",
        "QMTIK_MAX_ACTIVATION_BYTES": "needs 5,224 bytes of activations per sample, the limit is 2",
    }
    for name, words in expected.items():
        monkeypatch.setenv(name, "2")
        with pytest.raises(ConfigError, match=words + f", set by {name}"):
            Config.from_dict(config.to_dict())
        monkeypatch.delenv(name)


def test_limits_are_set_from_a_config_file_and_from_set(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("[network]\noutputs = 65536\n[limits]\nmax_parameters = 8_388_608\n")
    assert load_config(path).limits.max_parameters == 8_388_608
    with pytest.raises(ConfigError, match=r"raise it with \[limits\] max_parameters or QMTIK_MAX_PARAMETERS"):
        load_config(path, dict([parse_override("limits.max_parameters=4194304")]))


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("limits.max_layers", 256, "an integer from 1 to 255 (the .qmt format's most)"),
        ("limits.max_layers", 0, "an integer from 1 to 255"),
        ("limits.max_macs", -1, "an integer from 1 to 9223372036854775807"),
        ("limits.max_parameters", True, "an integer from 1"),
        ("limits.max_activation_bytes", "lots", "an integer from 1"),
        ("limits.max_nothing", 5, "unknown key (allowed: max_parameters, max_activation_bytes, max_macs, max_layers)"),
    ],
)
def test_a_bad_limits_value_is_one_line_naming_the_key(key, value, words):
    message = refused({key: value})
    assert key in message and words in message


@pytest.mark.parametrize("value", ["lots", "-1", "0", "1e9", "²", "9" * 40, "256"])
def test_a_bad_environment_value_is_one_line_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("QMTIK_MAX_LAYERS", value)
    message = refused({})
    assert message.startswith("environment variable QMTIK_MAX_LAYERS: got ") and "allowed: an integer from 1" in message


def test_in_force_says_where_each_limit_comes_from(monkeypatch):
    monkeypatch.setenv("QMTIK_MAX_MACS", " 1_000 ")
    monkeypatch.setenv("QMTIK_MAX_LAYERS", "")  # empty: not set
    section = limits.LimitsConfig(max_parameters=7, max_macs=9)
    assert limits.in_force(section) == {
        "layers": (255, "default"),
        "parameters": (7, "config"),
        "macs": (1000, "env"),
        "activation_bytes": (2**22, "default"),
    }


# --- the figures -------------------------------------------------------------------------------


def test_the_shipped_networks_are_within_the_defaults():
    """The examples and benchmarks/cnn.py's networks: the defaults must not refuse them."""
    for path in sorted((ROOT / "examples").rglob("*.toml")):
        assert limits.problem(limits.network_figures(load_config(path).network.shapes)) is None, path
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cnn
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    base = load_config(ROOT / "examples" / "fashion_cnn.toml")
    largest = max(
        (
            limits.network_figures(base.replace("network.layers", layers).network.shapes)
            for layers in cnn.NETWORKS.values()
        ),
        key=lambda f: f.macs,
    )
    assert largest == limits.Figures(50_186, 191_336, 3_907_456, 5)  # docs/limits.md quotes these


def test_figures_count_every_kind_by_hand():
    """8x8x1 -> conv 3x3 valid, 2 filters, batch norm (6x6x2) -> max pool 2 (3x3x2) -> global
    average pool (2) -> flatten -> dense 3 -> output dense 4."""
    layers = [
        {"kind": "conv2d", "filters": 2, "kernel": 3, "batch_norm": True},
        {"kind": "max_pool", "size": 2},
        {"kind": "global_avg_pool"},
        {"kind": "flatten"},
        {"kind": "dense", "units": 3},
    ]
    config = Config().replace_many({"network.input_shape": [8, 8, 1], "network.layers": layers, "network.outputs": 4})
    parameters = (2 * 9 + 2) + (2 * 3 + 3) + (3 * 4 + 4)
    macs = 36 * 2 * 9 + 18 * 4 + 18 + 2 * 3 + 3 * 4  # conv, pool taps, average, dense, output
    values = 64 + 72 + 18 + 2 + 3 + 4
    assert limits.network_figures(config.network.shapes) == limits.Figures(parameters, 4 * values, macs, 5)


def test_a_repeated_mlp_is_counted_without_its_widths():
    assert limits.repeated_mlp_figures(784, 256, 2, 10) == limits.mlp_figures([784, 256, 256, 256, 10])
    figures = limits.repeated_mlp_figures(3, 2, 10**9, 1)  # QMTIK_L 1000000000: a count, never a list
    assert figures.layers == 10**9 + 2 and figures.parameters == 8 + 10**9 * 6 + 3


def test_a_figure_too_large_to_print_is_shown_by_its_size():
    message = limits.problem(limits.Figures(10**5000, 1, 1, 1))
    assert message.startswith("needs more than 10^") and len(message) < 200


def test_one_hot_labels_take_samples_times_outputs_not_outputs_squared(monkeypatch):
    """outputs = 65536 asked for 16 GiB: np.eye(65536) before picking the labels' rows. With the
    limit raised, 3 labels of 65536 classes take 3 rows."""
    from qmtik.validate import encode_targets

    monkeypatch.setattr("numpy.eye", lambda *a, **k: pytest.fail("an identity matrix of the outputs"))
    one_hot = encode_targets(np.array([65535, 0, 7]), "classification", 65536, 3)
    assert one_hot.shape == (3, 65536) and one_hot.dtype == np.float32
    np.testing.assert_array_equal(np.argwhere(one_hot), [[0, 65535], [1, 0], [2, 7]])


def test_a_checkpoint_whose_network_is_over_the_limits_is_refused_before_its_arrays(tmp_path):
    from qmtik import checkpoint
    from qmtik.errors import CheckpointError

    config = Config().to_dict()
    config["network"]["hidden"] = [65536, 65536]
    path = tmp_path / "big.ckpt.npz"
    np.savez(path, format=np.array("qmtik-checkpoint"), version=np.array(1), config=np.array(json.dumps(config)))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    assert str(info.value) == (
        f"checkpoint {path}: its config is invalid (config [network]: needs 4,299,948,042 parameters, the limit "
        "is 4,194,304; raise it with [limits] max_parameters or QMTIK_MAX_PARAMETERS)"
    )
