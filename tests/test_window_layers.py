"""Training's layers over windows: convolutions (dense over windows), pools, batch normalization.

Float64 gradient checks of whole small networks (stride, padding, pooling, normalization with
the batch's statistics and frozen), and the fake-quantized pass against the integer layers it
stands for.
"""

import numpy as np
import pytest

from qmtik import batch_norm as bn
from qmtik import passes as P
from qmtik import quantization as q
from qmtik.layers import Layer, QuantSpec
from qmtik.spatial import geometry

SPEC = QuantSpec(per_channel=True, weight_scale=None, activation_scale=None, slope=0.01)


def conv(rng, in_shape, filters, kernel, stride=1, padding="valid", activation="relu", norm=False, dtype=np.float64):
    """A conv2d layer over in_shape (H, W, C) with random weights (out_c, kh * kw * C)."""
    geo = geometry(in_shape[:2], kernel, stride, padding)
    fan_in = geo.kernel[0] * geo.kernel[1] * in_shape[2]
    weight = (rng.standard_normal((filters, fan_in)) * np.sqrt(2 / fan_in)).astype(dtype)
    bias = (rng.standard_normal(filters) * 0.1).astype(dtype)
    layer = Layer(weight, bias, activation, np.full(2, np.nan), kind="conv2d", window=geo, in_shape=tuple(in_shape))
    if norm:
        layer.norm = bn.Norm.identity(filters, dtype)
        layer.norm.gamma[:] = rng.uniform(0.5, 1.5, filters)
        layer.norm.gamma[0] = -layer.norm.gamma[0]  # a negative gamma flips its channel's codes
        layer.norm.beta[:] = rng.standard_normal(filters) * 0.1
    return layer


def pool(kind, in_shape, size=2, stride=None, dtype=np.float64):
    """A pool over in_shape: no weights (a global one has no window)."""
    geo = None if kind == "global_avg_pool" else geometry(in_shape[:2], size, size if stride is None else stride)
    empty = np.zeros((0, 0), dtype)
    return Layer(empty, np.zeros(0, dtype), "linear", np.full(2, np.nan), kind=kind, window=geo, in_shape=in_shape)


def dense(rng, inputs, outputs, activation="linear", dtype=np.float64):
    weight = (rng.standard_normal((outputs, inputs)) * np.sqrt(1 / inputs)).astype(dtype)
    return Layer(weight, np.zeros(outputs, dtype), activation, np.full(2, np.nan))


def depthwise(rng, in_shape, kernel, stride=1, padding="valid", activation="relu", norm=False, dtype=np.float64):
    """A depthwise layer over in_shape with random weights (C, kh * kw)."""
    layer = conv(rng, (*in_shape[:2], 1), in_shape[2], kernel, stride, padding, activation, norm, dtype)
    layer.kind, layer.in_shape = "depthwise_conv2d", tuple(in_shape)
    return layer


def small_network(rng, kind="max_pool", norm=True, padding="same", stride=1, dtype=np.float64):
    """conv 3x3 (padding, stride) -> pool -> depthwise 2x2 -> conv 1x1 -> global average pool
    -> dense: 7x7x2 in."""
    first = conv(rng, (7, 7, 2), 4, 3, stride, padding, norm=norm, dtype=dtype)
    shape = (*first.window.out_hw, 4)
    second = pool(kind, shape, 2, 1, dtype=dtype)
    shape = (*second.window.out_hw, 4)
    middle = depthwise(rng, shape, 2, 1, [1, 0, 0, 1], "leaky_relu", norm=norm, dtype=dtype)
    shape = (*middle.window.out_hw, 4)
    third = conv(rng, shape, 3, 1, activation="tanh", norm=norm, dtype=dtype)
    shape = (*third.window.out_hw, 3)
    gap = pool("global_avg_pool", shape, dtype=dtype)
    return [first, second, middle, third, gap, dense(rng, 3, 5, dtype=dtype)]


def loss_and_grads(layers, codes, weights_out):
    """A scalar of the float scores and its gradients (the params' and nothing else)."""
    scores, caches = P.forward(layers, codes, SPEC, quantized=False, training=True)
    loss = float((scores * weights_out).sum())
    return loss, P.backward(layers, caches, weights_out.astype(scores.dtype), SPEC)


def assert_central_differences(layers, codes, weights_out, params, grads, samples: int):
    """Each gradient equals central differences of the loss at about `samples` entries of its parameter."""
    for param, grad in zip(params, grads):
        assert grad.shape == param.shape
        for index in list(np.ndindex(param.shape))[:: max(1, param.size // samples)]:
            keep = param[index]
            param[index] = keep + 1e-6
            up = loss_and_grads(layers, codes, weights_out)[0]
            param[index] = keep - 1e-6
            down = loss_and_grads(layers, codes, weights_out)[0]
            param[index] = keep
            assert grad[index] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "kind, norm, padding, stride, frozen",
    [
        ("max_pool", True, "same", 1, False),
        ("avg_pool", True, "same", 2, True),
        ("max_pool", False, [0, 2, 1, 0], 2, False),
        ("avg_pool", False, "valid", 1, False),
    ],
)
def test_float_gradients_of_a_small_convolutional_network_match_central_differences(
    kind, norm, padding, stride, frozen
):
    """Every parameter's gradient (weights, biases, gamma, beta) of conv -> pool -> conv ->
    global pooling -> dense, in float64, against central differences of the same loss."""
    rng = np.random.default_rng(7)
    layers = small_network(rng, kind, norm, padding, stride)
    for layer in layers:
        if layer.norm is not None:
            layer.norm.frozen = frozen
            layer.norm.mean[:] = rng.standard_normal(len(layer.norm.mean)) * 0.1
            layer.norm.var[:] = rng.uniform(0.5, 2.0, len(layer.norm.var))
    codes = rng.integers(-128, 128, (6, 7 * 7 * 2)).astype(np.int8)
    weights_out = rng.standard_normal((6, 5))
    _, grads = loss_and_grads(layers, codes, weights_out)
    params = [p for layer in layers for p in layer.params()]
    flat = [g for layer_grads in grads for g in layer_grads]
    assert len(params) == len(flat) == (3 * 4 + 2 if norm else 4 * 2)
    assert_central_differences(layers, codes, weights_out, params, flat, samples=12)


def test_the_frozen_fake_quantized_step_is_the_integer_layer_that_ships():
    """With frozen statistics, the training step's int8 outputs of a normalized layer (folded:
    codes times sign(gamma / sigma), scales times |gamma / sigma|) equal its integer layer's,
    computed by the spec from integer_layers."""
    from qmtik import intref

    rng = np.random.default_rng(3)
    layer = dense(rng, 12, 6, "relu", np.float32)
    layer.norm = bn.Norm.identity(6)
    layer.norm.gamma[:] = [1.5, -0.7, 0.9, 2.0, -1.2, 0.3]
    layer.norm.beta[:] = rng.standard_normal(6)
    layer.norm.mean[:] = rng.standard_normal(6)
    layer.norm.var[:] = rng.uniform(0.2, 3.0, 6)
    layer.norm.frozen = True
    layer.observed = np.array([0.0, 4.0])
    codes = rng.integers(-128, 128, (40, 12)).astype(np.int8)
    scores, _ = P.forward([layer], codes, SPEC, quantized=True, training=False)
    (integer,) = P.integer_layers([layer], SPEC)
    unfolded, _ = q.quantize_weights(layer.weight, per_channel=True)
    np.testing.assert_array_equal(integer.weights, unfolded * np.where(layer.norm.gamma < 0, -1, 1)[:, None])
    expected = intref.reference_scores([integer], codes).astype(np.float64)
    expected = (integer.output_scale * (expected - integer.output_offset)).astype(np.float32)
    np.testing.assert_array_equal(scores, expected)


def test_batch_statistics_move_the_moving_ones_and_frozen_ones_stay():
    norm = bn.Norm.identity(2)
    z0 = np.array([[1.0, 10.0], [3.0, 14.0]], np.float32)
    mean, var = bn.statistics(norm, z0, training=True)
    np.testing.assert_allclose(mean, [2.0, 12.0])
    np.testing.assert_allclose(var, [1.0, 4.0])
    np.testing.assert_allclose(norm.mean, [0.2, 1.2])
    np.testing.assert_allclose(norm.var, [0.9 + 0.1 * 2.0, 0.9 + 0.1 * 8.0])  # unbiased: n / (n - 1)
    norm.frozen = True
    before = norm.mean.copy()
    assert bn.statistics(norm, z0, training=True)[0] is norm.mean
    np.testing.assert_array_equal(norm.mean, before)


def test_average_pooling_of_codes_rounds_half_away_from_zero():
    """Windows whose codes sum to k + 0.5 times their size round away from zero: (-1 + -2) / 2
    is -2, (1 + 2) / 2 is 2, and a window of codes keeps the input's scale and zero point."""
    from qmtik.window_layers import quantized_forward

    layer = pool("avg_pool", (2, 4, 1), size=(1, 2), stride=(1, 2), dtype=np.float32)
    codes = np.array([[-1, -2, 1, 2, -128, -127, 127, 126]], np.int8)
    out, (scale, zero), _ = quantized_forward(layer, codes, 0.5, -3, SPEC, training=False)
    np.testing.assert_array_equal(out.reshape(-1), [-2, 2, -128, 127])
    assert (scale, zero) == (0.5, -3)
    assert q.round_half_away(np.array([-127.5]))[0] == -128


@pytest.mark.parametrize("training", [False, True])
def test_the_fake_quantized_forward_of_a_small_cnn_is_the_integer_model_that_ships(training):
    """conv + batch norm (frozen, a negative gamma), max pool, depthwise + batch norm, average
    pool, pointwise conv (tanh), global average pool, dense: the scores of training's
    fake-quantized pass (the step's, with the compiled loops, and prediction's) equal the
    integer model's, computed by the spec (intref) from the integer layers made of them."""
    from qmtik import intref

    rng = np.random.default_rng(11)
    layers = small_network(rng, "avg_pool", norm=True, padding="same", stride=1, dtype=np.float32)
    for layer in layers:
        layer.weight, layer.bias = layer.weight.astype(np.float32), layer.bias.astype(np.float32)
        if layer.norm is not None:
            layer.norm.frozen = True
            layer.norm.mean[:] = rng.standard_normal(len(layer.norm.mean)) * 0.3
            layer.norm.var[:] = rng.uniform(0.3, 2.0, len(layer.norm.var))
    codes = rng.integers(-128, 128, (9, 7 * 7 * 2)).astype(np.int8)
    P.forward(layers, codes, SPEC, quantized=True, training=True)  # observes every range once
    for layer in layers:
        layer.observed = np.array([min(layer.observed[0], -0.5), max(layer.observed[1], 0.5)])
    scores, _ = P.forward(layers, codes, SPEC, quantized=True, training=training)
    if training:  # the step observed again; the integer layers must be made from the same ranges
        pass
    integer = P.integer_layers(layers, SPEC)
    assert [layer.kind for layer in integer] == [
        "conv2d",
        "avg_pool",
        "depthwise_conv2d",
        "conv2d",
        "global_avg_pool",
        "dense",
    ]
    expected = intref.reference_scores(integer, codes).astype(np.float64)
    last = integer[-1]
    expected = (last.output_scale * (expected - last.output_offset)).astype(np.float32)
    np.testing.assert_array_equal(P.predict_scores(layers, codes, SPEC, quantized=True), expected)
    if not training:
        np.testing.assert_array_equal(scores, expected)


def cnn_config(layers, input_shape, epochs=2, seed=0):
    import qmtik

    return qmtik.Config().replace_many(
        {
            "network.input_shape": input_shape,
            "network.layers": layers,
            "training.epochs": epochs,
            "training.seed": seed,
            "data.input_range": [0, 16],
        }  # fmt: skip
    )


def test_a_conv1d_network_from_its_config_has_exact_float64_gradients():
    """conv1d (stride 2, explicit [left, right] padding), max pool, pointwise, flatten and dense
    over (length 12, 2 channels) signals: the layers init_layers builds from the config, their
    gradients against central differences in float64."""
    from qmtik.layers import init_layers

    layers_config = [
        {"kind": "conv1d", "filters": 3, "kernel": 3, "stride": 2, "padding": [1, 2], "batch_norm": True},
        {"kind": "max_pool", "size": 2},
        {"kind": "pointwise", "filters": 2, "activation": "tanh"},
        {"kind": "flatten"},
    ]
    rng = np.random.default_rng(4)
    layers = init_layers(cnn_config(layers_config, [12, 2]), rng, dtype=np.float64)
    assert [layer.kind for layer in layers] == ["conv2d", "max_pool", "conv2d", "dense"]
    assert layers[0].in_shape == (1, 12, 2) and layers[0].window.out_hw == (1, 7)
    codes = rng.integers(-128, 128, (5, 24)).astype(np.int8)
    weights_out = rng.standard_normal((5, 10))
    _, grads = loss_and_grads(layers, codes, weights_out)
    params, flat = [p for layer in layers for p in layer.params()], [g for lg in grads for g in lg]
    assert_central_differences(layers, codes, weights_out, params, flat, samples=8)


def test_the_same_cnn_config_and_seed_give_the_same_model_bit_for_bit():
    import qmtik

    x, y = qmtik.load_dataset("digits")[0]
    layers_config = [
        {"kind": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "batch_norm": True},
        {"kind": "avg_pool", "size": 2},
        {"kind": "depthwise_conv2d", "kernel": 2, "batch_norm": True},
        {"kind": "global_avg_pool"},
    ]
    models = [qmtik.Network(cnn_config(layers_config, [8, 8, 1])).fit(x[:300], y[:300]).quantize() for _ in range(2)]
    blobs = [qmtik.qmtfile.encode(model) for model in models]
    assert blobs[0] == blobs[1]
    other = qmtik.Network(cnn_config(layers_config, [8, 8, 1], seed=1)).fit(x[:300], y[:300]).quantize()
    assert qmtik.qmtfile.encode(other) != blobs[0]
