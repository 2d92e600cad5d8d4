"""The onnx backend's own parts: relus requantized in the graph, the probe, the protobuf
encoding, and when "auto" picks it. tests/test_backends.py runs it against the spec with
every other backend."""

from dataclasses import replace

import numpy as np
import pytest

from qmtik import backends, intref
from qmtik.backends import onnx
from qmtik.backends.common import SMALL_BATCH
from qmtik.integer_model import QuantizedModel
from test_integer_model import random_layer, reference

has_onnxruntime = pytest.mark.skipif(
    not onnx.available(), reason="onnxruntime is not installed (pip install 'qmtik[fast]'), or QMTIK_INT8_GEMM=0"
)


def scores(layers, codes):
    return onnx.Int8Network(layers)(codes)


def chain(rng, widths, kinds, extreme=False, relu_shifts=None, relu_zero=None):
    """Layers of the given widths and activations, each reading the previous one's zero point;
    relu_shifts=(lo, hi) draws relu shifts there (the graph requantizes relus for 1..44)."""
    layers, zero = [], -128
    for a, b, kind in zip(widths[:-1], widths[1:], kinds):
        layer = random_layer(rng, a, b, kind, in_zero=zero, extreme=extreme)
        if kind == "relu" and relu_shifts is not None:
            shift = rng.integers(relu_shifts[0], relu_shifts[1] + 1, size=b)
            shift[:2] = relu_shifts  # both ends of the range
            layer = replace(layer, output_shift=shift)
        if kind == "relu" and relu_zero is not None:
            layer = replace(layer, output_offset=relu_zero)
        layers.append(layer)
        zero = layer.output_offset
    return layers


def extreme_codes(rng, n, fan_in):
    codes = rng.choice([-128, 127, 0, -1, 1], size=(n, fan_in)).astype(np.int8)
    codes[0], codes[1] = -128, 127  # the largest sums of both signs
    return codes


@has_onnxruntime
@pytest.mark.parametrize("relu_zero", [-128, 0, 127])
@pytest.mark.parametrize("fan_in", [3, 784, 1033])
def test_relus_requantized_in_the_graph_equal_the_reference_at_the_extremes(fan_in, relu_zero):
    rng = np.random.default_rng(fan_in + relu_zero + 128)
    layers = chain(
        rng, [fan_in, 33, 17, 5], ["relu", "relu", "linear"], extreme=True, relu_shifts=(1, 44), relu_zero=relu_zero
    )
    assert all(onnx._fusable(layer) for layer in layers[:2])
    codes = extreme_codes(rng, 1500, fan_in)
    np.testing.assert_array_equal(scores(layers, codes), reference(codes, layers))


@has_onnxruntime
def test_ties_round_away_from_zero_in_the_graph():
    """A relu requantized in the graph, read out through an identity layer: t / 2 for t = -50 ... 549."""
    t = np.arange(-50, 550)
    n = len(t)
    halves = intref.IntegerLayer(
        np.ones((n, 1), np.int8), t - 1, np.full(n, 2**21), np.full(n, 22), "relu", 1.0, 0, np.ones(n), 1.0, -128
    )
    identity = intref.IntegerLayer(
        np.eye(n, dtype=np.int8),
        np.full(n, 128),
        np.full(n, 2**21),
        np.full(n, 21),
        "linear",
        1.0,
        -128,
        np.ones(n),
        1.0,
        -128,
    )
    assert onnx._fusable(halves)
    codes = np.ones((3, 1), np.int8)
    got = scores([halves, identity], codes)
    want = np.clip(np.where(t > 0, (t + 1) // 2, 0) - 128, -128, 127)  # halves up, negatives clamp
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got, reference(codes, [halves, identity]))


@has_onnxruntime
@pytest.mark.parametrize("hidden", ["relu", "leaky_relu", "sigmoid", "tanh", "linear"])
def test_layers_requantized_by_numpy_equal_the_reference_at_the_extremes(hidden):
    """Any activation, and relus with shifts of 0 or above 44, end a graph: numpy finishes them."""
    rng = np.random.default_rng(len(hidden))
    layers = chain(rng, [784, 40, 24, 7], [hidden, "relu", "linear"], extreme=True)
    shift = layers[1].output_shift.copy()
    shift[0] = 0 if hidden == "relu" else 45  # never fused
    layers[1] = replace(layers[1], output_shift=shift)
    assert not onnx._fusable(layers[1])
    codes = extreme_codes(rng, 1100, 784)
    np.testing.assert_array_equal(scores(layers, codes), reference(codes, layers))


@has_onnxruntime
@pytest.mark.parametrize("n", [65, 1024, 1025, 2100])
def test_a_models_large_batches_use_the_backend_and_give_the_reference(n):
    rng = np.random.default_rng(n)
    layers = chain(rng, [784, 64, 32, 10], ["relu", "relu", "linear"])
    model = QuantizedModel("classification", "softmax", (0.0, 1.0), layers)
    codes = rng.integers(-128, 128, size=(n, 784)).astype(np.int8)
    got = model.scores(codes)
    assert list(model._prepared) == ["onnx"]
    np.testing.assert_array_equal(got, reference(codes, layers))


@has_onnxruntime
def test_auto_chooses_the_backend_for_large_batches_only(monkeypatch):
    assert backends.choose("auto", SMALL_BATCH + 1) == "onnx"
    assert backends.choose("auto", SMALL_BATCH) == "numpy"  # single samples: numpy's latency
    monkeypatch.setenv(onnx.ENV, "0")
    assert backends.choose("auto", SMALL_BATCH + 1) == "numpy"
    codes = np.zeros((SMALL_BATCH + 1, 4), np.int8)
    layers = chain(np.random.default_rng(0), [4, 3, 2], ["relu", "linear"])
    model = QuantizedModel("classification", "softmax", (0.0, 1.0), layers)
    np.testing.assert_array_equal(model.scores(codes), reference(codes, layers))
    assert list(model._prepared) == ["numpy"]  # disabled: never built


def test_without_onnxruntime_auto_computes_with_numpy(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    monkeypatch.setattr(onnx, "_probe_result", None)
    assert not onnx.available()
    rng = np.random.default_rng(1)
    layers = chain(rng, [30, 12, 4], ["relu", "linear"])
    model = QuantizedModel("classification", "softmax", (0.0, 1.0), layers)
    codes = rng.integers(-128, 128, size=(500, 30)).astype(np.int8)
    np.testing.assert_array_equal(model.scores(codes), reference(codes, layers))
    assert list(model._prepared) == ["numpy"]


def test_a_session_that_fails_to_load_turns_the_backend_off(monkeypatch):
    """The probe's session used to be created outside its try: a failing onnxruntime raised
    from available() instead of leaving the model on numpy."""

    def refuse(*args, **kwargs):
        raise RuntimeError("onnxruntime: cannot load the graph")

    monkeypatch.setattr(onnx, "_session", refuse)
    monkeypatch.setattr(onnx, "_probe_result", None)
    assert not onnx.available()
    assert backends.choose("auto", 1000) == "numpy"


def test_the_protobuf_encoding_of_varints_and_fields():
    assert onnx._varint(0) == b"\x00" and onnx._varint(1) == b"\x01"
    assert onnx._varint(300) == b"\xac\x02"  # the protobuf documentation's example
    assert onnx._varint(2**63) == b"\x80" * 9 + b"\x01"
    assert onnx._varint_field(1, 150) == b"\x08\x96\x01"
    assert onnx._field(2, "testing") == b"\x12\x07testing"
    tensor = onnx._tensor("w", np.array([[1, -1]], np.int8))
    assert tensor == b"\x08\x01\x08\x02\x10\x03" + b"\x42\x01w" + b"\x4a\x02\x01\xff"


def test_the_probe_refuses_a_kernel_that_saturates_in_int16(monkeypatch):
    """The probe must fail for the int16-saturating uint8 x int8 kernel of CPUs without VNNI."""

    class Saturating:
        def __init__(self, weight):
            self.weight = weight.astype(np.int64)

        def run(self, _, feeds):
            x = feeds["x"].astype(np.int64)
            pairs = x[:, 0::2, None] * self.weight[0::2] + x[:, 1::2, None] * self.weight[1::2]
            return [np.clip(pairs, -(2**15), 2**15 - 1).sum(axis=1) - 128 * self.weight.sum(axis=0)]

    class Exact(Saturating):
        def run(self, _, feeds):
            return [(feeds["x"].astype(np.int64) - 128) @ self.weight]

    monkeypatch.setattr(onnx, "_session", lambda nodes, init, *rest: Exact(init["w"]))
    assert onnx._probe()
    monkeypatch.setattr(onnx, "_session", lambda nodes, init, *rest: Saturating(init["w"]))
    assert not onnx._probe()
