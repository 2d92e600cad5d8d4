"""config_layers.py and [network]'s layer tables: each layer's shape as spatial.py computes it,
the defaults filled in, the MLP form unchanged, round trips, and every refusal one line naming
the layer (`network.layers[i] (kind)`) and what is allowed."""

import json
from pathlib import Path

import pytest

from qmtik import Config, ConfigError
from qmtik.config import NetworkConfig, load_config, parse_override, tomllib
from qmtik.config_docs import reference_markdown, starter_toml
from qmtik.config_layers import MAX_VALUES, LayerSpec, infer_shapes, parse_layers

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fashion_cnn.toml"
CNN = [
    {"kind": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "batch_norm": True},
    {"kind": "max_pool", "size": 2},
    {"kind": "global_avg_pool"},
]


def refusal(network: dict) -> str:
    """The one-line message of the ConfigError a [network] table raises."""
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"network": network})
    message = str(info.value)
    assert "\n" not in message, message
    return message


def net(input_shape, *layers, outputs=10) -> NetworkConfig:
    return Config.from_dict(
        {"network": {"input_shape": input_shape, "layers": list(layers), "outputs": outputs}}
    ).network


def out_shapes(network: NetworkConfig) -> list:
    return [layer.out_shape for layer in network.shapes]


# --- the example and its shapes ------------------------------------------------------------------


def test_the_fashion_cnn_example_loads_with_its_shapes_and_sizes():
    network = load_config(EXAMPLE).network
    assert network.inputs == 784 and network.sample_shape == (28, 28, 1) and network.hidden == ()
    assert out_shapes(network) == [(28, 28, 16), (14, 14, 16), (14, 14, 32), (7, 7, 32), (7, 7, 64), (64,), (10,)]
    assert [layer.in_shape for layer in network.shapes][1:] == out_shapes(network)[:-1]
    assert [layer.weights for layer in network.shapes] == [144, 0, 4608, 0, 18432, 0, 640]
    assert [layer.biases for layer in network.shapes] == [16, 0, 32, 0, 64, 0, 10]
    assert network.shapes[0].macs == 28 * 28 * 16 * 9 and network.shapes[0].activation_bytes == 28 * 28 * 16
    first, pool, *_, output = network.layer_specs
    assert first == LayerSpec("conv2d", 16, None, (3, 3), (1, 1), "same", "relu", True)
    assert pool == LayerSpec("max_pool", stride=(2, 2), padding="valid", size=(2, 2))
    assert output == LayerSpec("dense", units=10, activation="linear")
    assert network.shapes[0].geometry.pads == (1, 1, 1, 1) and network.shapes[1].geometry.out_hw == (14, 14)
    assert not network.is_dense


def test_same_padding_is_tensorflows_the_odd_one_at_the_bottom_and_right():
    odd = net([7, 7, 1], {"kind": "conv2d", "filters": 2, "kernel": 3, "stride": 2, "padding": "same"})
    assert odd.shapes[0].out_shape == (4, 4, 2) and odd.shapes[0].geometry.pads == (1, 1, 1, 1)
    even = net([8, 7, 1], {"kind": "conv2d", "filters": 2, "kernel": 3, "stride": 2, "padding": "same"})
    assert even.shapes[0].out_shape == (4, 4, 2) and even.shapes[0].geometry.pads == (0, 1, 1, 1)
    two = net([5, 5, 3], {"kind": "depthwise_conv2d", "kernel": [2, 1], "padding": "same"})
    assert two.shapes[0].out_shape == (5, 5, 3) and two.shapes[0].geometry.pads == (0, 1, 0, 0)
    assert (two.shapes[0].weights, two.shapes[0].biases) == (6, 3)  # one 2x1 filter per channel


def test_explicit_padding_is_pytorchs_output_size():
    stride2 = net([28, 28, 1], {"kind": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": [1, 1, 1, 1]})
    assert stride2.shapes[0].out_shape == (14, 14, 4)  # PyTorch's Conv2d(1, 4, 3, stride=2, padding=1)
    uneven = net([5, 6, 2], {"kind": "conv2d", "filters": 3, "kernel": [3, 2], "padding": [0, 1, 2, 3]})
    assert uneven.shapes[0].out_shape == (4, 10, 3) and uneven.layer_specs[0].padding == (0, 1, 2, 3)
    pooled = net([5, 5, 1], {"kind": "max_pool", "size": 2, "padding": "same"})
    assert pooled.shapes[0].out_shape == (3, 3, 1) and pooled.shapes[0].geometry.pads == (0, 1, 0, 1)


def test_one_d_layers_are_height_one_with_integer_windows():
    network = net(
        [50, 3],
        {"kind": "conv1d", "filters": 8, "kernel": 5, "stride": 2},
        {"kind": "max_pool", "size": 2},
        {"kind": "conv1d", "filters": 4, "kernel": 3, "padding": [2, 0], "activation": "tanh"},
        {"kind": "conv1d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same"},
        {"kind": "pointwise", "filters": 6},
        {"kind": "avg_pool", "size": 3, "stride": 1},
        {"kind": "flatten"},
        outputs=2,
    )
    assert out_shapes(network) == [(23, 8), (11, 8), (11, 4), (6, 4), (6, 6), (4, 6), (24,), (2,)]
    conv, pool, padded, *_ = network.layer_specs
    assert (conv.kernel, conv.stride, conv.padding) == ((1, 5), (1, 2), "valid")
    assert (pool.size, pool.stride) == ((1, 2), (1, 2))
    assert (padded.padding, padded.activation) == ((0, 0, 2, 0), "tanh")
    assert network.shapes[0].weights == 8 * 5 * 3 and network.shapes[0].geometry.in_hw == (1, 50)
    assert network.layer_specs[4].kernel == (1, 1) and network.shapes[4].weights == 24


def test_dense_flattens_a_spatial_input_and_pointwise_is_a_1x1_conv():
    network = net([4, 4, 2], {"kind": "pointwise", "filters": 3}, {"kind": "dense", "units": 5, "activation": "linear"})
    assert out_shapes(network) == [(4, 4, 3), (5,), (10,)]
    assert network.shapes[1].weights == 48 * 5 and network.layer_specs[1].activation == "linear"
    dense_only = net([2, 3], {"kind": "dense", "units": 4})
    assert dense_only.is_dense and dense_only.widths == (6, 4, 10)
    assert dense_only.layer_activations == ("relu", "linear")


def test_infer_shapes_can_be_called_directly():
    shapes = infer_shapes((6, 6, 1), parse_layers([{"kind": "avg_pool", "size": 3}]), 2, "tanh")
    assert [(s.index, s.in_shape, s.out_shape) for s in shapes] == [(0, (6, 6, 1), (2, 2, 1)), (1, (2, 2, 1), (2,))]
    assert shapes[1].spec.activation == "linear" and shapes[0].spec.activation is None


# --- the MLP form is today's -----------------------------------------------------------------


def test_an_mlp_config_means_what_it_meant():
    network = Config().network
    assert network.widths == (64, 64, 10) and network.layer_activations == ("relu", "linear")
    assert network.input_shape == () and network.layers == () and network.sample_shape == (64,)
    assert network.layer_specs == (
        LayerSpec("dense", units=64, activation="relu"),
        LayerSpec("dense", units=10, activation="linear"),
    )
    assert [(s.in_shape, s.out_shape, s.weights, s.biases) for s in network.shapes] == [
        ((64,), (64,), 4096, 64),
        ((64,), (10,), 640, 10),
    ]
    mnist = load_config(EXAMPLE.parent / "mnist" / "mnist.toml").network
    assert mnist.widths == (784, 256, 256, 10) and mnist.is_dense
    wide = NetworkConfig(inputs=5, hidden=[7, 3], activation="tanh")
    assert wide.layer_activations == ("tanh", "tanh", "linear")
    assert set(wide.to_dict()) >= {"inputs", "hidden", "input_shape", "layers"}


def test_widths_of_a_network_with_convolutions_is_refused_not_misleading():
    with pytest.raises(ConfigError, match=r"network.widths: the network has conv2d, global_avg_pool, max_pool layers"):
        _ = net([8, 8, 1], *CNN).widths


# --- round trips and overrides -----------------------------------------------------------------


def test_a_cnn_config_round_trips_through_dict_json_and_toml():
    config = load_config(EXAMPLE)
    assert Config.from_dict(config.to_dict()) == config
    assert Config.from_dict(json.loads(config.to_json())) == config  # what a checkpoint stores
    data = config.to_dict()["network"]
    assert "inputs" not in data and "hidden" not in data  # derived, unused: overriding input_shape works
    assert data["layers"][1] == {"kind": "max_pool", "size": 2}  # as written, defaults not frozen in
    text = starter_toml({"network.input_shape": [8, 8, 1], "network.layers": CNN})
    assert 'layers = [{kind = "conv2d", filters = 8' in text and "\nhidden = " not in text
    read = Config.from_dict(tomllib.loads(text))
    assert read.network.layers == parse_layers(CNN) and read.network.inputs == 64


def test_overrides_set_the_input_shape_and_layers():
    key, value = parse_override('network.layers=[{kind = "conv1d", filters = 4, kernel = 3}, {kind = "flatten"}]')
    assert key == "network.layers" and value[0] == {"kind": "conv1d", "filters": 4, "kernel": 3}
    config = Config().replace_many({"network.input_shape": [16, 4], key: value})
    assert out_shapes(config.network) == [(14, 4), (56,), (10,)] and config.network.inputs == 64
    bigger = load_config(EXAMPLE, {"network.input_shape": [32, 32, 3]}).network
    assert bigger.inputs == 3072 and bigger.shapes[4].out_shape == (8, 8, 64)
    tanh = load_config(EXAMPLE).replace("network.activation", "tanh").network
    assert tanh.layer_specs[0].activation == "tanh"  # a layer without its own follows the network's
    back = load_config(EXAMPLE).replace("network.layers", []).network
    assert back.widths == (784, 64, 10)  # the MLP of the default hidden, over the flattened image


# --- refusals: one line, naming the layer and what is allowed -----------------------------------


@pytest.mark.parametrize(
    "layers, expected",
    [
        ("conv2d", "config key network.layers: got 'conv2d' (a string); allowed: a list of layer tables"),
        ([3], "config key network.layers[0]: got 3 (an integer); allowed: a table such as"),
        ([{"filters": 3}], "config key network.layers[0].kind: missing; allowed: conv2d | depthwise_conv2d"),
        ([{"kind": "conv3d"}], "config key network.layers[0].kind: got 'conv3d' (a string); allowed: 'conv2d',"),
        (
            [{"kind": "conv2d", "filters": 8, "kernel": 3, "filter": 2}],
            "network.layers[0] (conv2d).filter: unknown key; did you mean 'network.layers[0] (conv2d).filters'?",
        ),
        (
            [*CNN[:1], {"kind": "max_pool", "size": 2, "filters": 3}],
            "config key network.layers[1] (max_pool).filters: max_pool takes no filters "
            "(its keys: kind, size, stride, padding; filters is for conv2d, pointwise, conv1d)",
        ),
        ([{"kind": "dense", "units": 4, "batch_norm": True}], "(dense).batch_norm: dense takes no batch_norm"),
        (
            [{"kind": "conv2d", "filters": 8}],
            "config key network.layers[0] (conv2d).kernel: missing; allowed: an integer",
        ),
        ([{"kind": "max_pool"}], "config key network.layers[0] (max_pool).size: missing"),
        ([{"kind": "dense"}], "config key network.layers[0] (dense).units: missing"),
        (
            [{"kind": "conv2d", "filters": 0, "kernel": 3}],
            "(conv2d).filters: got 0 (an integer); allowed: an integer >= 1",
        ),
        (
            [{"kind": "conv2d", "filters": 8, "kernel": 3, "stride": 0}],
            "(conv2d).stride: got 0 (an integer); allowed: an integer from 1 to 65536 or a pair",
        ),
        (
            [{"kind": "conv2d", "filters": 8, "kernel": [3]}],
            "(conv2d).kernel: got [3] (a list); allowed: an integer from 1",
        ),
        ([{"kind": "conv2d", "filters": 8, "kernel": [3, True]}], "(conv2d).kernel: got [3, True] (a list)"),
        ([{"kind": "conv2d", "filters": 8, "kernel": 3.0}], "(conv2d).kernel: got 3.0 (a number)"),
        ([{"kind": "conv2d", "filters": 8, "kernel": 70000}], "(conv2d).kernel: got 70000 (an integer)"),
        (
            [{"kind": "conv1d", "filters": 8, "kernel": [3, 3]}],
            "(conv1d).kernel: got [3, 3] (a list); allowed: an integer >= 1",
        ),
        (
            [{"kind": "conv2d", "filters": 8, "kernel": 3, "padding": "full"}],
            "(conv2d).padding: got 'full' (a string); allowed: 'valid', 'same'",
        ),
        (
            [{"kind": "conv2d", "filters": 8, "kernel": 3, "padding": [1, 1]}],
            "(conv2d).padding: got [1, 1] (a list); "
            "allowed: 'valid', 'same' (TensorFlow's rule) or [top, bottom, left, right]",
        ),
        (
            [{"kind": "conv1d", "filters": 8, "kernel": 3, "padding": [1, 1, 1, 1]}],
            "(conv1d).padding: got [1, 1, 1, 1] (a list); "
            "allowed: 'valid', 'same' (TensorFlow's rule) or [left, right]",
        ),
        (
            [{"kind": "conv2d", "filters": 8, "kernel": 3, "padding": [0, -1, 0, 0]}],
            "(conv2d).padding: got [0, -1, 0, 0]",
        ),
        (
            [{"kind": "avg_pool", "size": 2, "padding": "same"}],
            "(avg_pool).padding: got 'same' (a string); allowed: 'valid' (an average pool takes whole windows only)",
        ),
        (
            [{"kind": "dense", "units": 4, "activation": "softmax"}],
            "(dense).activation: got 'softmax' (a string); allowed: 'relu'",
        ),
        (
            [{"kind": "conv2d", "filters": 8, "kernel": 3, "batch_norm": 1}],
            "(conv2d).batch_norm: got 1 (an integer); allowed: true or false",
        ),
    ],
)
def test_a_bad_layer_table_is_one_line_naming_the_layer_and_the_key(layers, expected):
    assert expected in refusal({"input_shape": [8, 8, 1], "layers": layers})


@pytest.mark.parametrize(
    "input_shape, layers, expected",
    [
        (
            [4, 4, 1],
            [{"kind": "conv2d", "filters": 2, "kernel": 5}],
            "config key network.layers[0] (conv2d): a 5x5 window of stride 1x1 over a 4x4 input (padding 'valid'): "
            "height has a window of 5 larger than its padded input of 4",
        ),
        (
            [8, 8, 1],
            [
                {"kind": "conv2d", "filters": 2, "kernel": 3},
                {"kind": "max_pool", "size": 4},
                {"kind": "max_pool", "size": 2},
            ],
            "config key network.layers[2] (max_pool): a 2x2 window of stride 2x2 over a 1x1 input",
        ),
        (
            [28, 28, 1],
            [{"kind": "conv1d", "filters": 2, "kernel": 3}],
            "config key network.layers[0] (conv1d): needs a 1-D input [length, channels], "
            "but its input 28x28x1 is 2-D; use conv2d",
        ),
        (
            [50, 3],
            [{"kind": "conv2d", "filters": 2, "kernel": 3}],
            "config key network.layers[0] (conv2d): needs a 2-D input [height, width, channels], "
            "but its input 50x3 is 1-D; use conv1d",
        ),
        (
            [50, 3],
            [{"kind": "depthwise_conv2d", "kernel": 3}],
            "(depthwise_conv2d): needs a 2-D input [height, width, channels], but its input 50x3 is 1-D",
        ),
        (
            [8, 8, 1],
            [CNN[0], {"kind": "flatten"}, {"kind": "max_pool", "size": 2}],
            "config key network.layers[2] (max_pool): needs a 1-D input [length, channels] or a 2-D input "
            "[height, width, channels], but its input of 512 values is flat (network.layers[1] (flatten) flattened it)",
        ),
        (
            [8, 8, 1],
            [{"kind": "dense", "units": 4}, {"kind": "global_avg_pool"}],
            "network.layers[1] (global_avg_pool): needs a 1-D input [length, channels] or a 2-D input "
            "[height, width, channels], but its input of 4 values is flat (network.layers[0] (dense) flattened it)",
        ),
        (
            [],
            [CNN[0]],
            "config key network.layers[0] (conv2d): needs a 2-D input [height, width, channels], but its input of "
            "64 values is flat (the network's input is flat: set network.input_shape)",
        ),
        ([50, 3], [{"kind": "max_pool", "size": [2, 2]}], "(max_pool): takes integers over a 1-D input, not pairs"),
        (
            [50, 3],
            [{"kind": "max_pool", "size": 2, "padding": [0, 0, 1, 1]}],
            "(max_pool): takes padding [left, right] over a 1-D input, not [0, 0, 1, 1]",
        ),
        (
            [8, 8, 1],
            [{"kind": "max_pool", "size": 2, "padding": [1, 1]}],
            "(max_pool): padding must be 'valid', 'same' or 4 integers",
        ),
        (
            [5, 2],
            [{"kind": "conv1d", "filters": 2, "kernel": 7}],
            "config key network.layers[0] (conv1d): a window of 7 of stride 1 over a length of 5 (padding 'valid'): "
            "length has a window of 7 larger than its padded input of 5",
        ),
        (
            [64, 64, 32],
            [{"kind": "conv2d", "filters": 2, "kernel": 64}],
            "(conv2d): has windows of 131072 inputs, more than 65536",
        ),
        ([256, 256, 2], [], "config key network.hidden[0] (dense): takes 256x256x2 = 131072 inputs, more than 65536"),
        (
            [256, 256, 1],
            [{"kind": "conv2d", "filters": 2, "kernel": 1}],
            "config key network.outputs (the output layer): takes 256x256x2 = 131072 inputs, more than 65536",
        ),
        ([256, 256, 2], [{"kind": "flatten"}], "network.outputs (the output layer): takes 131072 inputs, more than"),
        (
            [4096, 4096, 1],
            [{"kind": "pointwise", "filters": 2}],
            f"(pointwise): an output of 4096x4096x2 is more than {MAX_VALUES} values",
        ),
        (
            [28, 0, 1],
            [],
            "config key network.input_shape: got [28, 0, 1] (a list); allowed: [] or a list of 1 to 3 integers",
        ),
        (
            [4096, 4096, 2],
            [],
            "config key network.input_shape: got [4096, 4096, 2] (a list); allowed: [] or a list of 1 to 3 "
            "integers from 1 to 65536 ([height, width, channels] or [length, channels]), "
            f"of at most {MAX_VALUES} values",
        ),
        ([1, 2, 3, 4], [], "config key network.input_shape: got [1, 2, 3, 4] (a list)"),
    ],
)
def test_a_shape_that_does_not_work_is_one_line_naming_the_layer(input_shape, layers, expected):
    assert expected in refusal({"input_shape": input_shape, "layers": layers})


def test_inputs_that_contradict_the_input_shape_are_refused():
    expected = "config key network.inputs: got 100 (an integer), but network.input_shape = [28, 28, 1] gives 784 inputs"
    assert expected in refusal({"inputs": 100, "input_shape": [28, 28, 1]})
    assert "got 64 (an integer)" in refusal({"inputs": 64, "input_shape": [28, 28, 1]})  # written, even if the default
    with pytest.raises(ConfigError, match="gives 784 inputs"):
        NetworkConfig(inputs=100, input_shape=(28, 28, 1))
    assert Config.from_dict({"network": {"inputs": 784, "input_shape": [28, 28, 1]}}).network.inputs == 784
    with pytest.raises(ConfigError, match=r"got 785 \(an integer\), but .* gives 784 inputs"):
        load_config(EXAMPLE).replace("network.inputs", 785)
    assert load_config(EXAMPLE).replace("network.inputs", 784) == load_config(EXAMPLE)


def test_hidden_beside_layers_is_refused_unless_empty_or_the_default():
    expected = "config key network.hidden: got [32] (a list) beside network.layers; allowed: [] or left out"
    assert expected in refusal({"input_shape": [8, 8, 1], "hidden": [32], "layers": CNN})
    with pytest.raises(ConfigError, match="beside network.layers"):
        load_config(EXAMPLE).replace("network.hidden", [16])
    for hidden in ([], [64]):
        config = Config.from_dict({"network": {"input_shape": [8, 8, 1], "hidden": hidden, "layers": CNN}})
        assert config.network.hidden == () and config.network.layers == parse_layers(CNN)
    mnist = load_config(EXAMPLE.parent / "mnist" / "mnist.toml")  # hidden = [256, 256]: an override of layers drops it
    cnn = mnist.replace_many({"network.input_shape": [28, 28, 1], "network.layers": CNN}).network
    assert cnn.hidden == () and cnn.inputs == 784 and cnn.shapes[-1].in_shape == (8,)


def test_the_reference_documents_the_layer_tables():
    text = reference_markdown()
    assert "| `network.layers` |" in text and "| `network.input_shape` |" in text and "## Layer tables" in text
    for key in ("kind", "filters", "units", "kernel", "stride", "padding", "activation", "batch_norm", "size"):
        assert f"| `{key}` |" in text
    assert "| `batch_norm` | conv2d, depthwise_conv2d, pointwise, conv1d |" in text


def test_the_starter_file_leaves_room_for_layer_tables():
    text = starter_toml()
    assert "\n# layers = []    (or [[network.layers]] tables" in text and "\ninput_shape = []\n" in text
    tables = '[[network.layers]]\nkind = "flatten"\n\n[quantization]'
    config = Config.from_dict(tomllib.loads(text.replace("[quantization]", tables)))
    assert config.network.layers == (LayerSpec("flatten"),) and config.network.hidden == ()
