"""A convolution's fused fake-quantized step: its int8 outputs are the integer layer's (the spec's)
that it reports, bit for bit; it equals the layers.py step where both fold the same statistics;
its gradients are that step's; and the NumPy and compiled forms train to the same bits."""

import copy

import numpy as np
import pytest

from qmtik import conv_step, fused
from qmtik import intref_windows as iw
from qmtik import passes as P
from qmtik.layers import QuantSpec, layer_backward, quantized_layer_forward
from qmtik.spatial import col2im, im2col
from test_window_layers import SPEC, conv

CASES = [  # in shape, filters, kernel, stride, padding, activation
    ((6, 7, 3), 5, 3, 1, "same", "relu"),
    ((7, 7, 2), 4, 3, 2, [1, 0, 2, 1], "linear"),
    ((5, 5, 4), 3, 1, 1, "valid", "relu"),
]


def layer_and_codes(case, norm: str, seed=0):
    """A float32 conv layer (batch norm trained, frozen or none) and int8 input codes."""
    in_shape, filters, kernel, stride, padding, activation = case
    rng = np.random.default_rng(seed)
    layer = conv(rng, in_shape, filters, kernel, stride, padding, activation, norm != "none", np.float32)
    layer.weight, layer.bias = layer.weight.astype(np.float32), layer.bias.astype(np.float32)
    if layer.norm is not None:
        layer.norm.gamma, layer.norm.beta = layer.norm.gamma.astype(np.float32), layer.norm.beta.astype(np.float32)
        layer.norm.frozen = norm == "frozen"
        layer.norm.mean[:] = rng.standard_normal(filters) * 0.2
        layer.norm.var[:] = rng.uniform(0.5, 2.0, filters)
    layer.observed = np.array([-1.0, 2.0])
    codes = rng.integers(-128, 128, (6, *in_shape)).astype(np.float32)
    return layer, codes


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("norm", ["batch", "frozen", "none"])
def test_the_fused_step_outputs_the_codes_of_the_integer_layer_it_reports(case, norm):
    layer, codes = layer_and_codes(case, norm)
    assert conv_step.applies(layer, training=True) and not conv_step.applies(layer, training=False)
    out, fields, _ = conv_step.forward(layer, codes, 0.04, -3, SPEC)
    geo = layer.window
    fields = {**fields, "weights": fields["weights"].astype(np.int8)}  # the step's codes are floats
    integer = iw.ConvLayer(**fields, input_shape=layer.in_shape, kernel=geo.kernel, stride=geo.stride, pads=geo.pads)
    expected = integer.forward(codes.reshape(len(codes), -1).astype(np.int8))
    np.testing.assert_array_equal(out.reshape(len(codes), -1), expected)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("norm", ["frozen", "none"])
@pytest.mark.parametrize("spec", [SPEC, QuantSpec(True, 0.02, None, 0.01)])
def test_the_fused_step_is_the_layers_step_bit_for_bit_and_its_gradients_are_its(case, norm, spec):
    """Statistics that do not train make the same fold: the same codes, fields and observed
    range; the gradients agree to float32 rounding (the weights' is scaled after its product)."""
    layer, codes = layer_and_codes(case, norm)
    twin = copy.deepcopy(layer)
    out, fields, cache = conv_step.forward(layer, codes, 0.04, -3, spec)
    rows = im2col(codes, twin.window, -3)
    out_2, fields_2, cache_2 = quantized_layer_forward(twin, rows, 0.04, -3, spec, True)
    np.testing.assert_array_equal(out.reshape(-1), out_2.reshape(-1))
    np.testing.assert_array_equal(layer.observed, twin.observed)
    for name, value in fields.items():
        np.testing.assert_array_equal(value, fields_2[name], err_msg=name)
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    grads, d_x = conv_step.backward(layer, cache, grad.copy(), need_input=True)
    grads_2, d_rows = layer_backward(twin, cache_2, grad.reshape(-1, grad.shape[-1]), spec, True)
    for got, expected in zip(grads, grads_2):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(d_x, col2im(d_rows, layer.window, codes.shape[3]), rtol=1e-5, atol=1e-6)


def test_the_fused_step_with_the_batch_statistics_is_the_layers_step_up_to_their_rounding():
    """The batch's statistics: exact here, float32 sums there; the moving ones and the gradients agree closely."""
    layer, codes = layer_and_codes(CASES[0], "batch")
    twin = copy.deepcopy(layer)
    out, _, cache = conv_step.forward(layer, codes, 0.04, -3, SPEC)
    out_2, _, cache_2 = quantized_layer_forward(twin, im2col(codes, twin.window, -3), 0.04, -3, SPEC, True)
    np.testing.assert_allclose(layer.norm.mean, twin.norm.mean, rtol=1e-6)
    np.testing.assert_allclose(layer.norm.var, twin.norm.var, rtol=1e-5)
    assert np.mean(out.reshape(-1) == out_2.reshape(-1)) > 0.99
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    grads, _ = conv_step.backward(layer, cache, grad.copy(), need_input=False)
    grads_2, _ = layer_backward(twin, cache_2, grad.reshape(-1, grad.shape[-1]), SPEC, False)
    for index in (0, 2, 3):  # d weight, d gamma, d beta
        expected = grads_2[index]
        np.testing.assert_allclose(grads[index], expected, rtol=0.05, atol=0.02 * np.abs(expected).max())
    # the bias's gradient through the batch's mean is 0: both are rounding noise
    for bias, beta in ((grads[1], grads[3]), (grads_2[1], grads_2[3])):
        assert np.abs(bias).max() < 1e-4 * np.abs(beta).max()


@pytest.mark.skipif(fused.compiled is None, reason="qmtik._fused did not build: there is one form only")
def test_a_cnn_step_is_the_same_with_the_numpy_and_the_compiled_loops(monkeypatch):
    from test_window_layers import dense, pool

    results = []
    for form in ("numpy", ""):
        monkeypatch.setenv("QMTIK_FUSED", form)
        rng = np.random.default_rng(2)
        first = conv(rng, (9, 9, 1), 6, 3, 1, "same", norm=True, dtype=np.float32)
        second = pool("max_pool", (9, 9, 6), 2, dtype=np.float32)
        third = conv(rng, (4, 4, 6), 5, 3, 2, "same", norm=True, dtype=np.float32)
        layers = [first, second, third, dense(rng, 2 * 2 * 5, 3, dtype=np.float32)]
        for layer in layers:
            layer.weight, layer.bias = layer.weight.astype(np.float32), layer.bias.astype(np.float32)
            if layer.norm is not None:
                layer.norm.gamma, layer.norm.beta = (a.astype(np.float32) for a in (layer.norm.gamma, layer.norm.beta))
        codes = rng.integers(-128, 128, (7, 81)).astype(np.int8)
        scores, caches = P.forward(layers, codes, SPEC, quantized=True, training=True)
        assert isinstance(caches[0], conv_step.StepCache) and isinstance(caches[2], conv_step.StepCache)
        grads = P.backward(layers, caches, rng.standard_normal(scores.shape).astype(np.float32), SPEC)
        results.append([scores, *[g for layer_grads in grads for g in layer_grads], first.norm.var, first.observed])
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)
