"""Forward and backward passes: finite-difference gradient checks in float64 for every
combination, and the straight-through gradients of fake quantization, which finite
differences cannot measure (the forward pass is a step function)."""

import numpy as np
import pytest

from qmtik import Config, NetworkConfig, QuantizationConfig, intref
from qmtik import layers as L
from qmtik import passes as P
from qmtik import quantization as q
from qmtik.errors import QuantizationError
from qmtik.functions import HIDDEN_ACTIVATIONS, cost

VALID_PAIRS = [
    ("linear", "mse"),
    ("softmax", "cross_entropy"),
    ("softmax", "mse"),
    ("sigmoid", "binary_cross_entropy"),
    ("sigmoid", "mse"),
]


def make(
    activation="relu",
    output="softmax",
    cost_kind="cross_entropy",
    hidden=(5, 4),
    inputs=3,
    outputs=3,
    quant=None,
    seed=0,
    dtype=np.float64,
):
    task = "regression" if output == "linear" else "classification"
    config = Config(
        task=task,
        network=NetworkConfig(
            inputs=inputs, hidden=list(hidden), outputs=outputs, activation=activation, output=output, cost=cost_kind
        ),
        quantization=quant or QuantizationConfig(),
    )
    rng = np.random.default_rng(seed)
    layers = L.init_layers(config, rng, dtype)
    for layer in layers:  # non-zero biases so that their gradients are tested too
        layer.bias[...] = rng.normal(0, 0.3, layer.bias.shape)
    return config, layers, L.QuantSpec.from_config(config)


def targets_for(output, cost_kind, n, outputs, rng):
    if cost_kind == "cross_entropy":
        return np.eye(outputs)[rng.integers(0, outputs, n)]
    if output == "sigmoid":
        return rng.uniform(0, 1, (n, outputs))
    if output == "softmax":
        return np.eye(outputs)[rng.integers(0, outputs, n)]
    return rng.normal(0, 1, (n, outputs))


def loss_of(config, layers, spec, codes, targets):
    scores, _ = P.forward(layers, codes, spec, quantized=False, training=False)
    return cost(config.network.cost, config.network.output, scores, targets)[0]


def analytic(config, layers, spec, codes, targets):
    scores, caches = P.forward(layers, codes, spec, quantized=False, training=True)
    _, grad = cost(config.network.cost, config.network.output, scores, targets)
    return P.backward(layers, caches, grad, spec)


def gradient_error(config, layers, spec, codes, targets, grads, eps=1e-6):
    """Largest relative difference between grads and central finite differences."""
    worst = 0.0
    for layer, (d_weight, d_bias) in zip(layers, grads):
        for param, grad in ((layer.weight, d_weight), (layer.bias, d_bias)):
            numeric = np.zeros_like(param)
            for idx in np.ndindex(param.shape):
                keep = param[idx]
                param[idx] = keep + eps
                up = loss_of(config, layers, spec, codes, targets)
                param[idx] = keep - eps
                down = loss_of(config, layers, spec, codes, targets)
                param[idx] = keep
                numeric[idx] = (up - down) / (2 * eps)
            scale = max(np.abs(numeric).max(), np.abs(grad).max(), 1e-8)
            worst = max(worst, np.abs(numeric - grad).max() / scale)
    return worst


def random_codes(n, inputs, rng):
    return rng.integers(-128, 128, (n, inputs)).astype(np.int8)


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("output,cost_kind", VALID_PAIRS)
def test_gradients_match_finite_differences(activation, output, cost_kind):
    config, layers, spec = make(activation, output, cost_kind)
    rng = np.random.default_rng(1)
    codes = random_codes(7, 3, rng)
    targets = targets_for(output, cost_kind, 7, 3, rng)
    grads = analytic(config, layers, spec, codes, targets)
    assert gradient_error(config, layers, spec, codes, targets, grads) < 1e-6


def test_gradient_check_detects_a_wrong_gradient():
    """The checker must be able to fail: a gradient off by 1% on one weight is caught."""
    config, layers, spec = make("tanh", "softmax", "cross_entropy")
    rng = np.random.default_rng(2)
    codes, targets = random_codes(7, 3, rng), targets_for("softmax", "cross_entropy", 7, 3, rng)
    grads = analytic(config, layers, spec, codes, targets)
    grads[0][0][1, 2] *= 1.01
    assert gradient_error(config, layers, spec, codes, targets, grads) > 1e-4


def test_gradient_check_detects_a_wrong_derivative(monkeypatch):
    """A leaky relu derivative with the wrong slope is caught by the same check."""
    config, layers, spec = make("leaky_relu", "linear", "mse")
    rng = np.random.default_rng(3)
    codes, targets = random_codes(7, 3, rng), targets_for("linear", "mse", 7, 3, rng)
    real = L.activation_derivative
    monkeypatch.setattr(
        L, "activation_derivative", lambda kind, z, slope: real(kind, z, slope * 2 if kind == "leaky_relu" else slope)
    )
    grads = analytic(config, layers, spec, codes, targets)
    assert gradient_error(config, layers, spec, codes, targets, grads) > 1e-4


# --- fake quantization ------------------------------------------------------------------------


def trained_ranges(layers, spec, codes):
    """Let the observers see the data once (in float), as float epochs would."""
    P.forward(layers, codes, spec, quantized=False, training=True)


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize(
    "quant",
    [
        QuantizationConfig(),
        QuantizationConfig(weight_granularity="tensor"),
        QuantizationConfig(weight_scale=0.01, activation_scale=0.05),
    ],
)
def test_fake_quantized_forward_is_the_integer_arithmetic(activation, quant):
    """Training's forward pass gives the integer layers' int8 outputs, bit for bit."""
    config, layers, spec = make(
        activation, "softmax", "cross_entropy", hidden=(17, 3), inputs=9, outputs=4, quant=quant, dtype=np.float32
    )
    rng = np.random.default_rng(4)
    codes = random_codes(300, 9, rng)
    scores, _ = P.forward(layers, codes, spec, quantized=True, training=True)  # observes, then quantizes
    x = codes
    for integer in P.integer_layers(layers, spec):
        x = intref.layer_forward(x, integer)
    last = P.integer_layers(layers, spec)[-1]
    np.testing.assert_array_equal(scores, (last.output_scale * (x - last.output_offset)).astype(np.float32))
    again, _ = P.forward(layers, codes, spec, quantized=True, training=False)
    np.testing.assert_array_equal(again, scores)


def test_straight_through_gradient_of_a_single_layer():
    """With no hidden layer, d cost / d weight is the cost gradient at the int8 scores,
    zero where a score was clamped, times the dequantized inputs."""
    quant = QuantizationConfig(activation_scale=0.02)  # small: some scores clamp at +-128 codes
    config, layers, spec = make(output="linear", cost_kind="mse", hidden=(), inputs=6, outputs=4, quant=quant, seed=5)
    layers[0].weight *= 4
    rng = np.random.default_rng(6)
    codes = random_codes(50, 6, rng)
    targets = rng.normal(0, 1, (50, 4))
    scores, caches = P.forward(layers, codes, spec, quantized=True, training=True)
    _, grad = cost("mse", "linear", scores, targets)
    ((d_weight, d_bias),) = P.backward(layers, caches, grad, spec)

    integer = P.integer_layers(layers, spec)[0]
    acc = intref.accumulate(codes, integer.weights, integer.bias)
    real = acc * integer.input_scale * integer.weight_scales  # unclamped real scores
    inside = (real >= 0.02 * -128) & (real <= 0.02 * 127)
    assert 0 < inside.mean() < 1, "the test needs both clamped and unclamped scores"
    x = q.INPUT_SCALE * (codes.astype(np.float64) - q.INPUT_ZERO)
    g = grad * inside
    np.testing.assert_allclose(d_weight, g.T @ x, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d_bias, g.sum(axis=0), rtol=1e-12, atol=1e-15)


def test_straight_through_gradient_uses_the_int8_weights_for_the_layer_below():
    """The gradient reaching a hidden layer is carried by the dequantized int8 weights."""
    config, layers, spec = make("relu", "linear", "mse", hidden=(5,), inputs=4, outputs=3, seed=7)
    rng = np.random.default_rng(8)
    codes = random_codes(40, 4, rng)
    targets = rng.normal(0, 1, (40, 3))
    trained_ranges(layers, spec, codes)
    scores, caches = P.forward(layers, codes, spec, quantized=True, training=True)
    _, grad = cost("mse", "linear", scores, targets)
    grads = P.backward(layers, caches, grad, spec)
    top = P.integer_layers(layers, spec)[1]
    w_int8 = top.weights * top.weight_scales[:, None]
    a_in, weights, z, inside, _, _ = caches[1]
    w_eff = L.effective_weights(weights, layers[1].weight.dtype)
    np.testing.assert_allclose(w_eff, w_int8, rtol=1e-12)
    g_top = grad * inside
    hidden = caches[0]
    g_hidden = (g_top @ w_int8) * (hidden[2] > 0) * hidden[3]
    np.testing.assert_allclose(grads[0][0], g_hidden.T @ hidden[0], rtol=1e-10, atol=1e-14)


def test_fixed_weight_scale_stops_the_gradient_of_clipped_weights():
    quant = QuantizationConfig(weight_scale=0.001)  # clips every weight above 0.127
    config, layers, spec = make("relu", "linear", "mse", hidden=(), inputs=5, outputs=3, quant=quant, seed=9)
    rng = np.random.default_rng(10)
    codes = random_codes(30, 5, rng)
    scores, caches = P.forward(layers, codes, spec, quantized=True, training=True)
    _, grad = cost("mse", "linear", scores, rng.normal(0, 1, (30, 3)))
    ((d_weight, _),) = P.backward(layers, caches, grad, spec)
    clipped = np.abs(layers[0].weight) > 0.127
    assert clipped.any() and (~clipped).any()
    assert (d_weight[clipped] == 0).all()
    assert (d_weight[~clipped] != 0).any()


def test_table_activation_gradient_is_zero_where_the_table_input_clips():
    """Past the capped table range (|z| > 128 pre-scale steps) no gradient flows."""
    config, layers, spec = make("sigmoid", "linear", "mse", hidden=(4,), inputs=3, outputs=2, seed=11)
    layers[0].weight *= 200  # pre-activations far beyond +-8
    rng = np.random.default_rng(12)
    codes = random_codes(60, 3, rng)
    scores, caches = P.forward(layers, codes, spec, quantized=True, training=True)
    _, _, z, inside, _, _ = caches[0]
    pre_scale = P.integer_layers(layers, spec)[0].table_input_scale
    assert pre_scale == pytest.approx(q.SIGMOID_PRE_RANGE / 127)
    np.testing.assert_array_equal(inside, ((z >= pre_scale * -128) & (z <= pre_scale * 127)).astype(z.dtype))
    assert 0 < inside.mean() < 1


def test_observer_moves_toward_each_batch():
    config, layers, spec = make("relu", "linear", "mse", hidden=(), inputs=2, outputs=1)
    layer = layers[0]
    L.observe(layer, 0.0, 10.0)
    np.testing.assert_array_equal(layer.observed, [0.0, 10.0])
    L.observe(layer, -2.0, 20.0)
    np.testing.assert_allclose(layer.observed, [-2.0 * L.OBSERVER_MOMENTUM, 10 + 10 * L.OBSERVER_MOMENTUM])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_init_uses_he_for_rectifiers_and_glorot_otherwise(activation):
    config = Config(network=NetworkConfig(inputs=400, hidden=[300], outputs=10, activation=activation))
    layers = L.init_layers(config, np.random.default_rng(0))
    assert layers[0].weight.dtype == np.float32
    assert layers[0].weight.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert layers[1].weight.std() == pytest.approx(np.sqrt(2 / 310), rel=0.05)
    assert (layers[0].bias == 0).all()


def test_trainings_step_refuses_a_scale_the_integer_layer_refuses_with_the_same_message():
    """The step builds no validated layer, but still checks the scales (the rest is valid by
    construction): an observed range whose scale float32 cannot step 256 times stops it."""
    config, layers, spec = make("relu", hidden=(5,), inputs=3, outputs=3, dtype=np.float32)
    layers[0].observed = np.array([0.0, 3.4e38])
    codes = random_codes(4, 3, np.random.default_rng(0))
    with pytest.raises(QuantizationError) as step:
        P.forward(layers, codes, spec, quantized=True, training=False)
    with pytest.raises(QuantizationError) as validated:
        P.integer_layers(layers, spec)
    assert str(step.value) == str(validated.value)
    assert str(step.value).startswith("relu layer of 5 outputs: output_scale 1.33")
