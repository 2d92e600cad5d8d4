"""qmtik.budget: flash and RAM from the topology alone, held against the trained model and the
linked, emulated header: constants and arena exact; code and stack allowances at or above the
measured on every network, and within 15% on the examples' networks. The [deploy] check refuses
an oversized network in one line, before any data is read."""

import numpy as np
import pytest

import qmtik.workflow
from qmtik.budget import check_config, estimate, model_of, overshoot
from qmtik.cli import main
from qmtik.config import Config, load_config
from qmtik.emulate import check as emulated
from qmtik.emulate import problem
from qmtik.errors import ConfigError
from qmtik.export_c import export_c
from qmtik.integer_model import layer_memory, memory_needs
from qmtik.network import Network
from test_c_check import main_cnn
from test_emulate import KINDS

EXAMPLES = "examples/fashion_cnn.toml", "examples/fashion_cnn_flat.toml", "examples/gestures/gestures.toml"
MLP = {"inputs": 784, "hidden": [256, 256], "outputs": 10}  # examples/mnist, Fashion-MNIST's 784-256-256-10


def example(path):
    from pathlib import Path

    return load_config(Path(__file__).resolve().parents[1] / path)


def trained(config: Config, seed=0):
    """The network fitted for one epoch on random data: its integer model, as training makes it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (40, config.network.inputs)).astype(np.float32)
    y = rng.integers(0, config.network.outputs, 40)
    config = config.replace_many({"training.epochs": 1, "training.float_epochs": 0, "data.input_range": [0, 1]})
    return Network(config).fit(x, y).quantize()


@pytest.mark.parametrize(
    "config",
    [
        Config.from_dict({"network": {"inputs": 13, "hidden": [9, 5], "outputs": 3, "activation": "leaky_relu"}}),
        Config.from_dict(
            {
                "network": {
                    "inputs": 6,
                    "hidden": [7],
                    "outputs": 1,
                    "output": "sigmoid",
                    "cost": "binary_cross_entropy",
                    "activation": "tanh",
                }
            }
        ),
        example(EXAMPLES[2]).replace("network.input_shape", [12, 3]),
    ],
    ids=["leaky", "sigmoid-tanh", "gestures-cnn"],
)
def test_constants_and_arena_from_the_topology_are_the_trained_models(config):
    guess, model = estimate(config, "cortex-m4"), trained(config)
    assert guess["constants"] == memory_needs(model)["constants"]
    assert guess["arena"] == memory_needs(model)["arena"]
    assert [row["constants"] for row in guess["layers"]] == [
        sum(m["constants"].values()) for m in layer_memory(model.layers)
    ]
    assert [row["ram"] for row in guess["layers"]] == [m["ram"] for m in layer_memory(model.layers)]
    assert f"#define NET_CONSTANT_BYTES {guess['constants']}\n" in export_c(model, "net")
    assert guess["flash"] == guess["constants"] + guess["code"] and guess["ram"] == guess["arena"] + guess["stack"]
    assert estimate(Network(config), "cortex-m4")["constants"] == guess["constants"]  # unfitted: from its config


def test_the_examples_networks_are_sized_without_training():
    mlp = estimate(Config.from_dict({"network": MLP}), "cortex-m0")
    assert mlp["constants"] == 784 * 256 + 256 * 256 + 256 * 10 + (256 + 256 + 10) * 9 == 273_498
    assert [row["constants"] for row in mlp["layers"]] == [203_008, 67_840, 2_650]
    assert mlp["arena"] == 784 + 2 * 256
    cnn = estimate(example(EXAMPLES[0]), "cortex-m4")
    assert cnn["arena"] == 14 * 14 * 16 + 7 * 7 * 32 == 4_704  # docs/c-api.md's figure
    with pytest.raises(ConfigError, match="estimate: got a str"):
        estimate("net.toml")


def measured_models():
    models = {name: model for name, model in KINDS.items()}
    models["main_cnn"] = main_cnn()
    models["mlp"] = model_of(Config.from_dict({"network": MLP}))
    for path in EXAMPLES:
        models[path] = model_of(example(path))
    return models


CLOSE = {"main_cnn", "mlp", EXAMPLES[0], EXAMPLES[1]}  # the examples' networks: allowances within 15%


@pytest.mark.parametrize("target", ["cortex-m0", "cortex-m4"])
def test_the_allowances_hold_against_the_linked_and_emulated_header(target):
    if problem(target):
        pytest.skip(problem(target))
    for name, model in measured_models().items():
        guess = estimate(model, target)
        got = emulated(model, target_name=target, codes=np.zeros((1, model.inputs)), counted=0)
        assert got["mismatched_samples"] == 0
        assert got["constants"] <= guess["constants"], name  # a tiny array may be folded into code
        assert got["scratch"] == memory_needs(model)["scratch"], name
        assert got["code"] <= guess["code"] and got["stack"] <= guess["stack"], (name, got, guess)
        if name in CLOSE:
            assert got["constants"] == guess["constants"], name
            assert guess["code"] <= 1.15 * got["code"] and guess["stack"] <= 1.15 * got["stack"], (name, got, guess)


def test_an_overshoot_is_one_line_naming_the_heaviest_layer():
    config = Config.from_dict({"network": MLP, "deploy": {"max_flash": "256K"}})
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    assert str(caught.value) == (
        "[deploy] on cortex-m4: the network needs 274,198 B of flash (constants 273,498 exact, code ≈ 700), "
        "the budget is 256 KiB; layer 1 holds 203,008 of them"
    )
    config = Config.from_dict({"network": MLP, "deploy": {"target": "cortex-m0", "max_ram": 1000}})
    with pytest.raises(
        ConfigError,
        match=r"needs 1,501 B of RAM \(arena 1,296 exact, stack ≈ 205\), the budget is "
        r"1,000 B; layer 2 holds 512 of them$",
    ):
        check_config(config)
    assert check_config(config.replace("deploy.max_ram", "2K"))["ram"] == 1_501
    assert overshoot({"flash": 10, "ram": 10}, 10, 10) is None  # at the budget is within it
    assert overshoot({"flash": 10, "ram": 10}) is None  # 0: no budget
    assert check_config(Config.from_dict({"network": MLP})) is None


def test_train_refuses_an_oversized_network_before_reading_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "net.toml"]) == 0

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the budget was checked")

    monkeypatch.setattr(qmtik.workflow, "load_data", no_data)
    capsys.readouterr()
    assert main(["train", "net.toml", "--set", "deploy.max_flash=1K", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qmtik: error: [deploy] on cortex-m4: the network needs ")
    assert "the budget is 1 KiB; layer 1 holds" in err[0]
    assert not (tmp_path / "net.ckpt.npz").exists()
    assert main(["train", "net.toml", "--set", "deploy.max_flash=2M", "--set", "deploy.max_ram=nine", "-q"]) == 2
    assert "config key deploy.max_ram: got 'nine'" in capsys.readouterr().err
