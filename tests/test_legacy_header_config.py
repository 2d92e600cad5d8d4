"""qmtik.legacy.header_config: the qmtik config equivalent to a qmtik.h header, as TOML
text and as a Config that agree."""

import pytest

import qmtik
from legacy_helpers import MNIST_HEADER, header, small_header
from qmtik import legacy as c
from qmtik.errors import ConfigError


@pytest.mark.parametrize("extra", ["", "#define QMTIK_MOMENTUM 0.9f\n"])
def test_toml_loads_as_the_same_config(tmp_path, extra):
    path = header(tmp_path, MNIST_HEADER.replace("LEAKY_RELU", "SIGMOID") + extra)
    toml = tmp_path / "net.toml"
    toml.write_text(c.header_toml(path))
    config = qmtik.load_config(toml)
    assert config == c.config_from_header(path)
    assert config.quantization.weight_scale == 0.02 and config.quantization.activation_scale == 0.25
    assert config.data.input_range == (0.0, 255.0)
    assert config.training.optimizer == ("sgd" if extra else "adam")
    assert "# QMTIK_TRAIN_DEBUG: no qmtik equivalent" in toml.read_text()


def test_header_qmtik_cannot_train_is_refused_naming_the_header(tmp_path):
    path = header(tmp_path, MNIST_HEADER.replace("SOFT_MAX_PP", "LINEAR_PP"))
    with pytest.raises(ConfigError, match="C header .*qmtik_config.h: .*cross_entropy is the cost of softmax"):
        c.header_toml(path)


def test_a_header_for_other_data_leaves_the_input_range_to_the_data(tmp_path):
    config = c.config_from_header(small_header(tmp_path))
    assert config.data.dataset == "digits" and config.data.input_range == "auto"
