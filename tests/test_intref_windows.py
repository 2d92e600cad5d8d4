"""The spec of the window kinds (intref_windows.py): hand goldens, the flat NHWC order, ties of
the average, and a one-line refusal for every bad field."""

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from qmtik import intref
from qmtik import intref_windows as iw
from qmtik import quantization as q
from qmtik.errors import QuantizationError

ONE = (2**21, 21)  # multiplier and shift of exactly x1
HALF = (2**21, 22)  # x0.5: ties show how requantization rounds


def conv(weights, bias, requant=ONE, activation="linear", in_zero=0, out_zero=0, **window):
    """A conv2d layer of these codes, every channel requantized by requant."""
    weights = np.asarray(weights, np.int8)
    out_c = len(weights)
    cls = window.pop("cls", iw.ConvLayer)
    return cls(
        weights=weights,
        bias=np.asarray(bias, np.int64),
        output_multiplier=np.full(out_c, requant[0]),
        output_shift=np.full(out_c, requant[1]),
        activation=activation,
        input_scale=0.1,
        input_zero_point=in_zero,
        weight_scales=np.full(out_c, 0.01),
        output_scale=0.1,
        output_offset=out_zero,
        **window,
    )


GRID = np.arange(1, 10).reshape(1, 9)  # one 3x3x1 sample: 1 2 3 / 4 5 6 / 7 8 9
W = [[1, 2, -1, 3], [0, 0, 0, 1]]  # (kh, kw, c) order: taps (0,0) (0,1) (1,0) (1,1)


def test_conv_valid_golden():
    """2x2 windows of the grid: 1*1 + 2*2 - 4 + 3*5 = 16, ... (channel 1 picks the lower right)."""
    layer = conv(W, [0, 0], input_shape=(3, 3, 1), kernel=(2, 2))
    assert layer.output_shape == (2, 2, 2) and (layer.inputs, layer.outputs) == (9, 8)
    out = intref.layer_forward(GRID, layer)
    np.testing.assert_array_equal(out, [[16, 5, 21, 6, 31, 8, 36, 9]])  # flat NHWC: (h, w, c)


def test_conv_pads_with_the_input_zero_point():
    """'same' pads the bottom and right with z_in = -2: the corner window is 9, -2, -2, -2:
    9*1 + 2*(-2) - (-2) + 3*(-2) = 1."""
    pads = iw.spatial.resolve_padding("same", (3, 3), (2, 2), (1, 1))
    assert pads == (0, 1, 0, 1)
    layer = conv(W[:1], [0], in_zero=-2, input_shape=(3, 3, 1), kernel=(2, 2), pads=pads)
    out = intref.layer_forward(GRID, layer).reshape(3, 3)
    np.testing.assert_array_equal(out, [[16, 21, -13], [31, 36, -13], [19, 22, 1]])


def test_conv_requantizes_per_channel_with_ties_away_from_zero():
    """acc + bias 10 = 26, 31, 41, 46, times 0.5: 13, 15.5 -> 16, 20.5 -> 21, 23."""
    layer = conv(W[:1], [10], HALF, input_shape=(3, 3, 1), kernel=(2, 2))
    np.testing.assert_array_equal(intref.layer_forward(GRID, layer), [[13, 16, 21, 23]])
    relu = conv(W[:1], [-30], HALF, "relu", out_zero=-5, input_shape=(3, 3, 1), kernel=(2, 2))
    # acc - 30 = -14, -9, 1, 6; x0.5 = -7, -4.5 -> -5, 0.5 -> 1, 3; + z = -12, -10, -4, -2; relu: >= z
    np.testing.assert_array_equal(intref.layer_forward(GRID, relu), [[-5, -5, -4, -2]])


def test_conv_stride_two_and_a_pointwise_kernel():
    strided = conv(W[:1], [0], input_shape=(3, 3, 1), kernel=(2, 2), stride=(2, 2), pads=(0, 1, 0, 1))
    # windows at (0, 0), (0, 2): 3 - 6 = -3, (2, 0): 7 + 2*8 = 23, (2, 2): 9; the padding is 0
    np.testing.assert_array_equal(intref.layer_forward(GRID, strided), [[16, -3, 23, 9]])
    pointwise = conv([[2, -1]], [1], input_shape=(1, 2, 2), kernel=(1, 1))  # 2*c0 - c1 + 1 per pixel
    np.testing.assert_array_equal(intref.layer_forward([[3, 4, -5, 6]], pointwise), [[3, -15]])


def test_depthwise_golden():
    """channel 0: 1+2+3+4 = 10; channel 1: 10 - 40 + 5 = -25 (relu: 0)."""
    sample = [[1, 10, 2, 20, 3, 30, 4, 40]]  # 2x2x2, NHWC
    weights, bias = [[1, 1, 1, 1], [1, 0, 0, -1]], [0, 5]
    layer = conv(weights, bias, input_shape=(2, 2, 2), kernel=(2, 2), cls=iw.DepthwiseLayer)
    assert layer.kind == "depthwise_conv2d" and layer.output_shape == (1, 1, 2)
    np.testing.assert_array_equal(intref.layer_forward(sample, layer), [[10, -25]])
    relu = conv(weights, bias, activation="relu", input_shape=(2, 2, 2), kernel=(2, 2), cls=iw.DepthwiseLayer)
    np.testing.assert_array_equal(intref.layer_forward(sample, relu), [[10, 0]])


POOL_IN = np.array([[1, 5, -3, -4, 2, 0, -128, 127]])  # 2x4x1: 1 5 -3 -4 / 2 0 -128 127


def test_max_pool_golden_and_its_padding_never_wins():
    layer = iw.build_pool("max_pool", (2, 4, 1), 0.1, -7, size=2)
    assert layer.stride == (2, 2) and layer.output_shape == (1, 2, 1)
    assert (layer.input_scale, layer.output_scale, layer.input_zero_point, layer.output_offset) == (0.1, 0.1, -7, -7)
    np.testing.assert_array_equal(intref.layer_forward(POOL_IN, layer), [[5, 127]])
    same = iw.build_pool("max_pool", (1, 3, 1), 0.1, 0, size=(1, 2), padding="same")  # pads right by 1
    assert same.pads == (0, 0, 0, 1)
    np.testing.assert_array_equal(intref.layer_forward([[-100, -50, -127]], same), [[-50, -127]])
    np.testing.assert_array_equal(intref.layer_forward([[-100, -50, -128]], same), [[-50, -128]])


@pytest.mark.parametrize(
    "codes, expected",  # 2x2 windows of a 2x4 grid: their sums / 4, half away from zero
    [
        ([1, 5, -3, -4, 2, 0, -128, 127], [2, -2]),  # 8 / 4, -8 / 4
        ([3, 4, -3, -4, 3, 4, -3, -4], [4, -4]),  # 14 / 4 = 3.5 -> 4, -3.5 -> -4
        ([1, 2, -1, -2, 2, 2, -2, -2], [2, -2]),  # 1.75 -> 2, -1.75 -> -2
        ([1, 0, -1, 0, 0, 0, 0, 0], [0, 0]),  # 0.25 -> 0, -0.25 -> 0
        ([-128, -128, 127, 127, -128, 127, 127, 127], [-64, 127]),  # -257 / 4 = -64.25 -> -64
    ],
)
def test_avg_pool_golden_rounds_half_away_from_zero(codes, expected):
    layer = iw.build_pool("avg_pool", (2, 4, 1), 0.1, 3, size=2)
    np.testing.assert_array_equal(intref.layer_forward([codes], layer), [expected])


def test_global_avg_pool_golden():
    """Channel 0: (1 + 2 + 3 + 5) / 4 = 2.75 -> 3; channel 1: -10 / 4 = -2.5 -> -3."""
    layer = iw.build_pool("global_avg_pool", (2, 2, 2), 0.1, 0)
    assert layer.kernel == (2, 2) and layer.output_shape == (1, 1, 2) and layer.outputs == 2
    np.testing.assert_array_equal(intref.layer_forward([[1, -1, 2, -2, 3, -3, 5, -4]], layer), [[3, -3]])


def test_divide_half_away_against_exact_fractions():
    totals = np.arange(-300, 301)
    for count in (1, 2, 3, 4, 9, 49):
        halves = [Fraction(int(t), count) + Fraction(1, 2) * (1 if t >= 0 else -1) for t in totals]
        exact = [math.floor(h) if h >= 0 else math.ceil(h) for h in halves]  # truncate: away from zero
        np.testing.assert_array_equal(iw.divide_half_away(totals, count), exact)


def test_builders_make_the_layer_a_dense_one_would_be():
    args = (np.array([[1, -2, 3, 4]], np.int8), np.array([7]), np.array([0.02]), 0.1, -128, "relu", 0.05, -128)
    layer = iw.build_conv(*args, input_shape=(2, 2, 1), kernel=2)
    dense = intref.build_layer(*args)
    for field in dataclasses.fields(dense):
        a, b = getattr(layer, field.name), getattr(dense, field.name)
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, field.name
    codes = np.array([[-128, 127, 5, -7]])
    np.testing.assert_array_equal(intref.layer_forward(codes, layer), intref.layer_forward(codes, dense))
    depthwise = iw.build_depthwise(*args, input_shape=(2, 2, 1), kernel=(2, 2))
    np.testing.assert_array_equal(intref.layer_forward(codes, depthwise), intref.layer_forward(codes, dense))


def test_a_window_layer_is_built_complete_and_cannot_change():
    layer = conv(W, [0, 0], input_shape=[3, 3, 1], kernel=[2, 2])
    assert layer.input_shape == (3, 3, 1) and layer.kernel == (2, 2) and layer.pads == (0, 0, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.kernel = (1, 1)
    with pytest.raises(ValueError):
        layer.weights[0, 0] = 5
    pool = iw.build_pool("avg_pool", (2, 4, 1), 0.1, 3, size=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pool.scale = 1.0


def bad_conv(weights=W, **changes):
    window = {"input_shape": (3, 3, 1), "kernel": (2, 2), **changes}
    return lambda: conv(weights, [0] * len(weights), **window)


@pytest.mark.parametrize(
    "make, expected",
    [
        (bad_conv(weights=[[1, 2, 3]]), "weights: shape (1, 3), expected (out_channels, 4)"),
        (bad_conv(input_shape=(3, 3)), "input_shape (3, 3): expected 3 integers"),
        (bad_conv(input_shape=(3, 0, 1)), "input_shape (3, 0, 1): every size must be >= 1"),
        (bad_conv(kernel=(4, 2)), "height has a window of 4 larger than its padded input of 3"),
        (bad_conv(stride=(0, 1)), "height has a stride of 0"),
        (bad_conv(kernel=2.0), "kernel 2.0: expected 2 integers"),
        (bad_conv(pads=(0, 0, -1, 0)), "4 integers >= 0 [top, bottom, left, right]"),
        (lambda: conv(W, [0, 0], input_shape=(2, 2, 1), kernel=2, cls=iw.DepthwiseLayer), "kernel 2: expected 2"),
        (
            lambda: conv(W, [0, 0], input_shape=(2, 2, 1), kernel=(2, 2), cls=iw.DepthwiseLayer),
            "weights: shape (2, 4), expected (channels, kh*kw) = (1, 4)",
        ),
        (lambda: iw.build_pool("min_pool", (2, 2, 1), 0.1, 0, size=2), "pool kind 'min_pool' is not one of"),
        (lambda: iw.build_pool("avg_pool", (3, 3, 1), 0.1, 0, size=2, padding="same"), "full windows only"),
        (
            lambda: iw.build_pool("max_pool", (3, 3, 1), 0.1, 0, size=2, padding=[2, 0, 0, 0]),
            "a window of padding only",
        ),
        (lambda: iw.build_pool("max_pool", (3, 3, 1), 0.0, 0, size=2), "scale 0.0 is not a finite positive number"),
        (
            lambda: iw.build_pool("max_pool", (3, 3, 1), 0.1, 128, size=2),
            "zero_point 128 is not an integer in -128..127",
        ),
        (lambda: iw.build_pool("max_pool", (3, 3, 1), 0.1, 0, size=None), "kernel must be an integer or a pair"),
        (
            lambda: iw.GlobalAvgPoolLayer(input_shape=(2, 2, 1), kernel=(1, 2), scale=0.1, zero_point=0),
            "a global pool's are the input's (H, W)",
        ),
        (lambda: iw.PoolLayer(input_shape=(2, 2, 1), kernel=(2, 2), scale=0.1, zero_point=0), "is not a pool kind"),
    ],
)
def test_validate_refuses_each_bad_field_with_one_line(make, expected):
    with pytest.raises(QuantizationError) as info:
        make()
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_the_dense_checks_hold_for_convolutions():
    """Bias bounds come from the convolution's fan-in kh*kw*C, as for a dense layer's."""
    limit = q.bias_limit(4)
    conv(W, [limit, -limit], input_shape=(3, 3, 1), kernel=(2, 2))
    with pytest.raises(QuantizationError, match=r"^bias .* is outside"):
        conv(W, [limit + 1, 0], input_shape=(3, 3, 1), kernel=(2, 2))
    with pytest.raises(QuantizationError, match="^weights -128 at"):
        conv([[1, 2, -128, 3]], [0], input_shape=(3, 3, 1), kernel=(2, 2))
