"""The integer model as an ONNX graph: onnxruntime, with its default options, gives qmtik's int8
scores byte for byte, for every layer kind and activation, on extreme and random input codes."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="running the exported graph needs onnxruntime (the [fast] extra)")
pytest.importorskip("onnx", reason="the models here are imported from ONNX graphs (the [onnx] extra)")

import qmtik  # noqa: E402
from onnx_helpers import Builder, conv, dense  # noqa: E402
from qmtik.calibrate import calibrate  # noqa: E402
from qmtik.export_onnx import model_bytes, run_onnx, save_onnx  # noqa: E402
from qmtik.onnx_import import import_onnx  # noqa: E402

DATA = Path(__file__).parent / "data"


def integer_model(path, sample_values: int, seed: int = 0, observer: str = "minmax"):
    net = import_onnx(path, (0, 1))
    calibrate(net, np.random.default_rng(seed).uniform(0, 1, (64, sample_values)), observer)
    return net.quantize()


def probes(inputs: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    extremes = np.stack([np.full(inputs, -128), np.full(inputs, 127), np.tile([-128, 127], inputs)[:inputs]])
    return np.concatenate([extremes, rng.integers(-128, 128, (61, inputs))]).astype(np.int8)


def assert_same_bytes(model):
    codes = probes(model.inputs)
    got = run_onnx(model_bytes(model), codes)
    assert got.dtype == np.int8 and got.shape == (len(codes), model.outputs)
    np.testing.assert_array_equal(got, model.scores(codes))
    assert len(np.unique(got)) > 3  # not all saturated: the comparison says something


def window_graphs():
    b = Builder((2, 7, 6), seed=5)  # conv padded asymmetrically, max pool padded, depthwise, leaky, global pool
    conv(b, 2, 4, (3, 3), pads=[1, 2, 0, 1])
    b.add("MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 1, 0, 1])
    b.add("Conv", b.weights(4, 1, 3, 3), kernel_shape=[3, 3], group=4, pads=[1, 1, 1, 1], strides=[1, 2])
    b.add("LeakyRelu", alpha=0.1)
    b.add("GlobalAveragePool")
    b.add("Flatten")
    yield "conv-maxpool-depthwise-leaky-gap", dense(b, 4, 5, activation=None)
    b = Builder((3, 8, 9), seed=6)  # tanh conv, average pool, sigmoid dense, a linear dense between
    conv(b, 3, 5, (2, 2), activation="Tanh")
    b.add("AveragePool", kernel_shape=[2, 3], strides=[2, 2])
    b.add("Flatten")
    dense(b, 5 * 3 * 3, 6, activation="Sigmoid")
    dense(b, 6, 6, activation=None)
    yield "tanh-avgpool-sigmoid-linear", dense(b, 6, 4, activation=None)
    b = Builder((3, 12), seed=7)  # 1-D
    conv(b, 3, 4, (3,), pads=[1, 1])
    b.add("MaxPool", kernel_shape=[2], strides=[2])
    b.add("Flatten")
    yield "conv1d", dense(b, 24, 3, activation=None)


@pytest.mark.parametrize("case", list(window_graphs()), ids=lambda case: case[0])
def test_window_models_run_to_the_same_bytes(tmp_path, case):
    _, builder = case
    path = builder.save(tmp_path / "m.onnx")
    assert_same_bytes(integer_model(path, int(np.prod(builder.sample))))


@pytest.mark.parametrize("observer", ["minmax", "mse"])
def test_the_fixtures_run_to_the_same_bytes(observer):
    assert_same_bytes(integer_model(DATA / "onnx_mlp.onnx", 12, observer=observer))
    assert_same_bytes(integer_model(DATA / "onnx_cnn.onnx", 84, observer=observer))


def test_a_trained_model_runs_to_the_same_bytes(digits, tmp_path):
    (x, y), _ = digits
    config = qmtik.Config().replace_many({"network.inputs": 64, "network.hidden": [16], "training.epochs": 1})
    model = qmtik.Network(config).fit(x, y).quantize()
    save_onnx(tmp_path / "d.onnx", model)
    codes = model.quantize_inputs(x[:200])
    np.testing.assert_array_equal(run_onnx(tmp_path / "d.onnx", codes), model.scores(codes))


def test_the_rounding_is_half_away_from_zero_not_to_even(tmp_path):
    # a layer whose scores land on halves: QLinear operators would round them to even
    b = Builder((2,), seed=0)
    b.add("Gemm", b.const(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])), transB=1)
    model = integer_model(b.save(tmp_path / "h.onnx"), 2)
    codes = np.array([[c, d] for c in range(-128, 128, 3) for d in range(-128, 128, 5)], np.int8)
    np.testing.assert_array_equal(run_onnx(model_bytes(model), codes), model.scores(codes))
