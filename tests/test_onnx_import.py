"""Importing ONNX graphs: qmtik's float network gives onnxruntime's outputs (within 1e-5 x
max(1, max|y|), the same classes), for the committed fixtures (tests/data/make_onnx_fixtures.py)
and for small graphs of each supported operator; the checkpoint and config it writes load back."""

from pathlib import Path

import numpy as np
import pytest

import qmtik
from onnx_helpers import Builder, conv, dense, onnx_outputs
from qmtik.config import load_config
from qmtik.onnx_import import float_layers, import_onnx, import_onnx_file, onnxruntime_agreement, to_qmtik_inputs

DATA = Path(__file__).parent / "data"


def agreement(path, sample, input_range, head=None, samples=16):
    """Largest |qmtik - onnxruntime| / max(1, max|y|), and whether the classes are the same."""
    net = import_onnx(path, input_range)
    x = np.random.default_rng(5).uniform(*input_range, (samples, *sample)).astype(np.float32)
    want = onnx_outputs(path, x)
    channels_last = tuple(net.config.network.input_shape) == tuple(sample) and len(sample) > 1
    got = float_layers(net, to_qmtik_inputs(x, sample, channels_last))[-1].reshape(len(x), -1)
    if head == "softmax":
        got = np.exp(got - got.max(1, keepdims=True))
        got /= got.sum(1, keepdims=True)
    elif head == "sigmoid":
        got = 1 / (1 + np.exp(-got))
    error = np.abs(got - want.reshape(len(x), -1)).max() / max(1.0, np.abs(want).max())
    return error, bool((got.argmax(1) == want.reshape(len(x), -1).argmax(1)).all()), net


@pytest.mark.parametrize(
    "name, sample, input_range, head",
    [("onnx_mlp.onnx", (12,), (0, 10), "softmax"), ("onnx_cnn.onnx", (2, 7, 6), (0, 1), None)],
)
def test_fixtures_agree_with_onnxruntime(name, sample, input_range, head):
    error, same, net = agreement(DATA / name, sample, input_range, head)
    assert error < 1e-5 and same
    assert net.quantized_ is False and net.input_range_ == tuple(map(float, input_range))


def test_the_mlp_fixture_becomes_the_layers_it_holds():
    net = import_onnx(DATA / "onnx_mlp.onnx", (0, 10))
    network = net.config.network
    assert [(s.kind, s.units, s.activation) for s in network.layer_specs] == [
        ("dense", 8, "relu"),
        ("dense", 6, "leaky_relu"),
        ("dense", 3, "linear"),
    ]
    assert network.leaky_slope == 0.1 and network.output == "softmax" and net.config.task == "classification"


def test_the_cnn_fixture_keeps_asymmetric_pads_and_folds_batch_norm():
    net = import_onnx(DATA / "onnx_cnn.onnx", (0, 1))
    specs = net.config.network.layer_specs
    assert specs[0].kind == "conv2d" and specs[0].padding == (1, 0, 2, 1)  # ONNX [1, 2, 0, 1]: begins, then ends
    assert specs[1].kind == "max_pool" and specs[1].padding == (0, 0, 1, 1)
    assert specs[2].kind == "depthwise_conv2d" and specs[2].activation == "tanh"
    assert net.config.network.input_shape == (7, 6, 2)  # channels last
    assert all(layer.norm is None for layer in net.layers_)


def graph_cases():
    """(builder, input range, head) of graphs that each exercise some operators."""
    b = Builder((3, 9, 8), seed=1)  # per-channel normalization folded into an unpadded conv, strided
    b.add("Sub", b.const(np.array([0.2, 0.4, 0.6]).reshape(1, 3, 1, 1)))
    b.add("Mul", b.const(np.array([2.0, 3.0, 4.0]).reshape(3, 1, 1)))
    conv(b, 3, 5, (3, 2), strides=[2, 1])
    b.add("AveragePool", kernel_shape=[2, 3], strides=[1, 2])
    b.add("Flatten")
    dense(b, 5 * 3 * 3, 4, activation="Sigmoid")
    dense(b, 4, 3, activation=None)
    yield "conv-avgpool-sigmoid", b, (0, 1), None
    b = Builder((4, 11), seed=2)  # 1-D: conv1d, max pool, the Reshape PyTorch writes for view(N, -1)
    conv(b, 4, 6, (3,), pads=[2, 0], activation="Tanh")
    b.add("MaxPool", kernel_shape=[2], strides=[2])
    b.add("Reshape", b.const(np.array([-1, 6 * 5]), np.int64))
    dense(b, 30, 1, activation=None)
    b.add("Sigmoid")
    yield "conv1d-maxpool-reshape-sigmoid-head", b, (0, 1), "sigmoid"
    b = Builder((2, 6, 6), seed=3)  # relu after a max pool (they commute); SAME_UPPER; a depthwise stride 2
    conv(b, 2, 4, (3, 3), activation=None, auto_pad=b"SAME_UPPER")
    b.add("MaxPool", kernel_shape=[2, 2], strides=[1, 1])
    b.add("Relu")
    b.add("Conv", b.weights(4, 1, 2, 2), kernel_shape=[2, 2], group=4, strides=[2, 2])
    b.add("Mul", b.const(np.float32(0.5)))  # a scale after a layer folds into it
    b.add("LeakyRelu", alpha=0.2)
    b.add("Flatten")
    dense(b, 4 * 2 * 2, 3, activation=None)
    b.add("Identity")
    yield "depthwise-same-upper-relu-after-pool", b, (0, 1), None
    b = Builder((5,), seed=4)  # input BatchNormalization as the normalization; raw range [-3, 7]
    rng = np.random.default_rng(9)
    b.add("BatchNormalization", b.const(rng.uniform(0.5, 2, 5)), b.const(rng.normal(0, 1, 5)),
          b.const(rng.normal(2, 1, 5)), b.const(rng.uniform(1, 4, 5)))  # fmt: skip
    b.add("MatMul", b.weights(5, 4))
    b.add("Relu")
    b.add("Gemm", b.weights(4, 3), b.weights(3), alpha=0.5, beta=2.0)  # B not transposed, alpha and beta
    yield "input-batchnorm-gemm-alpha-beta", b, (-3, 7), None

    b = Builder((6, 5, 2), seed=5)  # Keras through tf2onnx: channels last in, Transposes around the convolutions
    b.add("Div", b.const(np.float32(255)))
    b.add("Transpose", perm=[0, 3, 1, 2])
    conv(b, 2, 3, (3, 3), pads=[1, 1, 1, 1])
    b.add("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    b.add("Transpose", perm=[0, 2, 3, 1])
    b.add("Reshape", b.const(np.array([-1, 3 * 2 * 3]), np.int64))
    b.add("MatMul", b.weights(18, 4))
    b.add("Add", b.weights(4))
    yield "keras-channels-last", b, (0, 255), None


@pytest.mark.parametrize("case", list(graph_cases()), ids=lambda case: case[0])
def test_graphs_agree_with_onnxruntime(tmp_path, case):
    name, builder, input_range, head = case
    path = builder.save(tmp_path / f"{name}.onnx")
    error, same, net = agreement(path, builder.sample, input_range, head)
    assert error < 1e-5 and same
    assert onnxruntime_agreement(path, net)[0] < 1e-5


def test_a_regression_graph_imports_as_regression(tmp_path):
    b = dense(Builder((3,)), 3, 4)
    dense(b, 4, 1, activation=None)
    net = import_onnx(b.save(tmp_path / "r.onnx"), (0, 1))
    assert net.config.task == "regression" and net.config.network.output == "linear"


def test_import_file_writes_a_checkpoint_and_config_that_load_back(tmp_path):
    out, toml = tmp_path / "m.ckpt.npz", tmp_path / "m.toml"
    net = import_onnx_file(DATA / "onnx_cnn.onnx", out, (0, 1), toml)
    again = qmtik.Network.load(out)
    for a, b in zip(net.layers_, again.layers_):
        np.testing.assert_array_equal(a.weight, b.weight)
        assert np.isnan(b.observed).all()  # not calibrated yet
    config = load_config(toml)
    assert config.network.shapes == again.config.network.shapes
    assert tuple(config.data.input_range) == (0.0, 1.0)
    assert config.training.float_epochs == 0 and config.training.epochs == 1


def test_a_float_import_refuses_to_quantize_until_calibrated():
    net = import_onnx(DATA / "onnx_mlp.onnx", (0, 10))
    with pytest.raises(qmtik.QuantizationError, match="calibrate"):
        net.quantize()


def test_a_bad_input_range_is_refused():
    with pytest.raises(qmtik.OnnxError, match="input range"):
        import_onnx(DATA / "onnx_mlp.onnx", (1, 1))


def test_the_import_checks_itself_against_onnxruntime():
    for name, input_range in (("onnx_mlp.onnx", (0, 10)), ("onnx_cnn.onnx", (0, 1))):
        net = import_onnx(DATA / name, input_range)
        error, same = onnxruntime_agreement(DATA / name, net)
        assert error < 1e-5 and same
        net.layers_[-1].bias[0] += 1.0  # a wrong import shows
        assert onnxruntime_agreement(DATA / name, net)[0] > 1e-3
