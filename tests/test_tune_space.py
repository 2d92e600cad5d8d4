"""A candidate drawn from the [tune] space by hand-given answers, and its budget check from the topology."""

import pytest

from qmtik.budget import estimate
from qmtik.config import Config
from qmtik.tune_space import Budget, Unfit, candidate, fits, network_line, space_problem

IMAGE = Config.from_dict(
    {
        "network": {"input_shape": [28, 28, 1], "outputs": 10},
        "data": {"dataset": "fashion-mnist"},
        "tune": {"conv_layers": [0, 2], "depth": [0, 2]},
    }
)


def answers(**given):
    """ask() that answers from given (by name) and records what was asked."""
    asked = []

    def ask(name, kind, values):
        asked.append((name, kind, tuple(values)))
        return given[name]

    return ask, asked


def test_an_mlp_candidate_sets_hidden_activation_and_training():
    ask, asked = answers(
        conv_layers=0, depth=2, width_0=64, width_1=16, activation="tanh", learning_rate=0.003, batch_size=64
    )
    chosen = candidate(Config(), ask)
    assert chosen.network.hidden == (64, 16) and chosen.network.layers == ()
    assert chosen.network.activation == "tanh"
    assert chosen.training.learning_rate == 0.003 and chosen.training.batch_size == 64
    assert ("learning_rate", "log", (0.0005, 0.01)) in asked and ("depth", "int", (1, 2)) in asked
    assert network_line(chosen) == "64-16-10"


def test_a_convolution_candidate_is_conv_pool_blocks_a_flatten_and_dense_layers():
    ask, _ = answers(
        conv_layers=2,
        channels_0=8,
        kernel_0=5,
        channels_1=16,
        kernel_1=3,
        depth=1,
        width_0=32,
        activation="relu",
        learning_rate=0.001,
        batch_size=128,
    )
    chosen = candidate(IMAGE, ask)
    kinds = [spec.kind for spec in chosen.network.layer_specs]
    assert kinds == ["conv2d", "max_pool", "conv2d", "max_pool", "flatten", "dense", "dense"]
    assert tuple(chosen.network.shapes[3].out_shape) == (7, 7, 16)
    assert network_line(chosen) == "conv8k5-pool-conv16k3-pool-flatten-32-10"


def test_a_candidate_over_budget_is_unfit_with_the_estimates_reason_and_one_within_gets_its_figures():
    ask, _ = answers(conv_layers=0, depth=1, width_0=128, activation="relu", learning_rate=0.001, batch_size=64)
    big = candidate(IMAGE, ask)
    need = estimate(big, "cortex-m4")
    assert need["flash"] > 100_000  # 784 x 128 int8 weights
    with pytest.raises(Unfit, match=r"needs [\d,]+ B of flash .* the budget is 64 KiB; layer 1 holds"):
        fits(big, Budget("cortex-m4", 64 * 1024, 16 * 1024))
    assert fits(big, Budget("cortex-m4", need["flash"], need["ram"])) == need  # exactly at the budget: fits
    with pytest.raises(Unfit, match="of RAM"):
        fits(big, Budget("cortex-m4", 0, need["ram"] - 1))


def test_the_budget_is_deploys_each_part_overridden_by_the_flags():
    config = Config.from_dict({"deploy": {"target": "cortex-m0", "max_flash": "64K", "max_ram": "16K"}})
    assert Budget.of(config) == Budget("cortex-m0", 65536, 16384)
    assert Budget.of(config, max_flash=32768) == Budget("cortex-m0", 32768, 16384)
    assert Budget.of(config, target="cortex-m4", max_ram=0) == Budget("cortex-m4", 65536, 0)
    assert Budget.of(Config(), target="host").target == "cortex-m4"  # the host has no allowances of its own


def test_spaces_that_cannot_be_searched_are_named():
    assert space_problem(IMAGE) is None and space_problem(Config()) is None
    flat = Config.from_dict({"tune": {"conv_layers": [0, 1]}})
    assert "need a 3-D network.input_shape" in space_problem(flat)
    regression = Config.from_dict({"task": "regression", "network": {"outputs": 1, "output": "linear", "cost": "mse"}})
    assert "classification" in space_problem(regression)
