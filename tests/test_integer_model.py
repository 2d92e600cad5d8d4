"""The integer model's API and its scores against the spec (intref); every backend against the
spec at the extremes is tests/test_backends.py."""

from dataclasses import replace

import numpy as np
import pytest

import qmtik
from qmtik import intref
from qmtik import quantization as q
from qmtik.integer_model import QuantizedModel


def reference(codes, layers):
    """The spec's scores (intref.reference_scores)."""
    return intref.reference_scores(layers, codes)


def random_layer(rng, fan_in, fan_out, activation, in_zero=-128, extreme=False):
    """An integer layer with random codes; extreme=True drives weights, biases, multipliers
    and shifts to the edges of their ranges."""
    if extreme:
        weight = rng.choice([-127, 127, 0, 1, -1], size=(fan_out, fan_in)).astype(np.int8)
        limit = q.bias_limit(fan_in)
        bias = rng.choice([-limit, limit, 0, rng.integers(-limit, limit)], size=fan_out).astype(np.int64)
        multiplier = rng.choice([2**21, 2**22 - 1, rng.integers(2**21, 2**22)], size=fan_out).astype(np.int64)
        shift = rng.integers(0, 63, size=fan_out).astype(np.int64)
    else:
        weight = rng.integers(-127, 128, size=(fan_out, fan_in)).astype(np.int8)
        bias = rng.integers(-(2**16), 2**16, size=fan_out).astype(np.int64)
        multiplier = rng.integers(2**21, 2**22, size=fan_out).astype(np.int64)
        shift = rng.integers(28, 40, size=fan_out).astype(np.int64)
    out_scale, out_zero = 0.05, (-128 if activation == "relu" else int(rng.integers(-20, 20)))
    negative = table = (None, None)
    if activation == "leaky_relu":
        negative = rng.integers(2**21, 2**22, size=fan_out).astype(np.int64), np.minimum(shift + 6, 62)
    if activation in q.TABLE_ACTIVATIONS:
        table = q.activation_table(activation, 0.03), 0.03
        out_scale, out_zero = q.table_output_params(activation)
    return intref.IntegerLayer(
        weight,
        bias,
        multiplier,
        shift,
        activation,
        0.01,
        in_zero,
        np.full(fan_out, 0.01),
        out_scale,
        out_zero,
        *negative,
        *table,
    )


def test_model_scores_equal_the_reference_through_many_layers():
    rng = np.random.default_rng(7)
    widths = [20, 17, 3, 9, 5]
    kinds = ["relu", "leaky_relu", "tanh", "sigmoid"]
    layers, zero = [], -128
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        kind = kinds[i] if i < len(widths) - 2 else "linear"
        layer = random_layer(rng, a, b, kind, in_zero=zero)
        layers.append(layer)
        zero = layer.output_offset
    model = QuantizedModel("classification", "softmax", (0.0, 1.0), layers)
    codes = rng.integers(-128, 128, size=(5000, 20)).astype(np.int8)
    scores = model.scores(codes)
    assert scores.dtype == np.int8 and scores.shape == (5000, 5)
    np.testing.assert_array_equal(scores, reference(codes, layers))


@pytest.fixture(scope="module")
def trained(digits):
    (x, y), _ = digits
    config = qmtik.Config(training=qmtik.TrainingConfig(epochs=5, batch_size=32, learning_rate=0.003))
    return qmtik.Network(config).fit(x, y)


def test_quantize_gives_the_networks_predictions_exactly(trained, digits):
    _, (x, y) = digits
    model = trained.quantize()
    np.testing.assert_array_equal(model.predict(x), trained.predict(x))
    np.testing.assert_array_equal(model.decision_function(x), trained.decision_function(x))
    assert model.score(x, y) == trained.score(x, y)
    assert model.evaluate(x, y)["accuracy"] == trained.evaluate(x, y)["accuracy"]


def test_predict_proba_and_classes(trained, digits):
    _, (x, _) = digits
    model = trained.quantize()
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(x))


def test_class_names_are_what_predict_returns(trained, digits):
    _, (x, _) = digits
    model = trained.quantize()
    names = [f"digit {i}" for i in range(10)]
    named = QuantizedModel(model.task, model.output, model.input_range, model.layers, names)
    np.testing.assert_array_equal(named.predict(x[:5]), np.array(names)[model.predict(x[:5])])


def test_ties_between_scores_go_to_the_first_class():
    layer = intref.IntegerLayer(
        np.zeros((3, 2), np.int8),
        np.array([0, 0, 0]),
        np.full(3, 2**21),
        np.full(3, 22),
        "linear",
        1.0,
        -128,
        np.ones(3),
        1.0,
        5,
    )
    model = QuantizedModel("classification", "softmax", (0.0, 1.0), [layer])
    np.testing.assert_array_equal(model.scores(np.zeros((2, 2), np.int8)), [[5, 5, 5], [5, 5, 5]])
    np.testing.assert_array_equal(model.predict(np.zeros((2, 2))), [0, 0])


def test_bad_input_is_refused(trained):
    model = trained.quantize()
    with pytest.raises(qmtik.DataError, match="features"):
        model.predict(np.zeros((1, 5)))
    with pytest.raises(qmtik.DataError, match="input codes"):
        model.scores(np.zeros((1, 5), np.int8))


@pytest.mark.parametrize("n", [1, 2, 64, 65, 1024, 1025, 2100])
def test_small_and_chunked_batches_give_the_same_scores(n):
    """Batches up to SMALL skip the buffers, larger ones go through chunks: same integers."""
    rng = np.random.default_rng(n)
    layers = [random_layer(rng, 30, 12, "relu"), random_layer(rng, 12, 4, "linear")]
    model = QuantizedModel("classification", "softmax", (0.0, 1.0), layers)
    codes = rng.integers(-128, 128, size=(n, 30)).astype(np.int8)
    np.testing.assert_array_equal(model.scores(codes), reference(codes, layers))


# --- real numbers that float32 cannot compute with ------------------------------------------------


def two_layers(rng, out_scale=0.05):
    """A 3-4-2 relu model's layers, the last with out_scale."""
    layers = [random_layer(rng, 3, 4, "relu"), random_layer(rng, 4, 2, "linear")]
    layers[-1] = replace(layers[-1], output_scale=out_scale)
    return layers


@pytest.mark.parametrize(
    "input_range, expected",
    [
        ((-1e300, 1e300), "input range [-1e+300, 1e+300] must stay finite in float32"),
        ((0.0, 1e-300), "input range [0.0, 1e-300] must stay finite in float32, with a finite non-zero gain"),
    ],
)
def test_a_model_whose_input_range_overflows_float32_cannot_be_made(input_range, expected):
    with pytest.raises(qmtik.QuantizationError) as info:
        QuantizedModel("regression", "linear", input_range, two_layers(np.random.default_rng(0)))
    assert str(info.value).startswith(f"integer model: {expected}") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "out_scale, expected",
    [
        (1e300, "output_scale 1e+300 must lie from 1.18e-38"),
        (1e-300, "output_scale 1e-300 must lie from 1.18e-38"),
        (float("nan"), "output_scale nan is not a finite positive number"),
    ],
)
def test_a_layer_whose_scale_float32_cannot_hold_cannot_be_made(out_scale, expected):
    with pytest.raises(qmtik.QuantizationError) as info:
        two_layers(np.random.default_rng(0), out_scale)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_a_model_checks_the_chain_of_layers():
    rng = np.random.default_rng(0)
    with pytest.raises(
        qmtik.QuantizationError, match="^integer model: layer 2 has 5 inputs, but layer 1 has 4 outputs$"
    ):
        QuantizedModel(
            "regression", "linear", (0.0, 1.0), [random_layer(rng, 3, 4, "relu"), random_layer(rng, 5, 2, "linear")]
        )
    with pytest.raises(qmtik.QuantizationError, match="^integer model: no layers$"):
        QuantizedModel("regression", "linear", (0.0, 1.0), [])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "task, output", [("regression", "linear"), ("classification", "softmax"), ("classification", "sigmoid")]
)
def test_a_model_at_the_edges_of_float32_computes_finite_figures_without_a_warning(task, output):
    """The widest input range float32 holds and the largest output scale: finite outputs,
    probabilities and figures, no numpy warning."""
    rng = np.random.default_rng(1)
    model = QuantizedModel(task, output, (-3.4e38, 3.4e38), two_layers(rng, q.SCALE_MAX))
    x = np.array([[-3.4e38] * 3, [3.4e38] * 3, [0.0] * 3, [1e38, -1e38, 5.0]] * 3, dtype=np.float32)
    y = np.array([0, 1, 0, 1] * 3) if task == "classification" else rng.uniform(-1e38, 1e38, (12, 2))
    assert np.isfinite(model.predict_proba(x)).all()
    figures = model.evaluate(x, y)
    assert all(np.isfinite(v) for v in figures.values() if isinstance(v, float)), figures
    assert np.isfinite(model.score(x, y))
