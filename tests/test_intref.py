"""The spec, intref.py: hand-checked goldens in TFLite Micro's style (the arithmetic in the
comments), exact oracles, a one-line refusal for every bad field, and the fast paths against it.

Integers are compared exactly; the oracles (fractions.Fraction, Python or int64 sums) are
independent of the code under test.
"""

from dataclasses import FrozenInstanceError, replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qmtik
from qmtik import intref
from qmtik import quantization as q
from qmtik.integer_model import QuantizedModel
from test_integer_model import random_layer
from test_quantization import as_ints, exact_round

# --- requantize: rounding ties and saturation --------------------------------------------------


def test_rounding_shift_goldens():
    p = np.array([5, -5, 6, -6, 7, -7, 1, -1, 0, 4, -4])
    # 5/2 = 2.5 -> 3, -2.5 -> -3: ties go away from zero, never to even
    np.testing.assert_array_equal(intref.rounding_shift(p[:2], 1), [3, -3])
    # /4: 1.25 -> 1, 1.5 -> 2, 1.75 -> 2, 0.25 -> 0, 1.0 -> 1 (and the negatives mirrored)
    np.testing.assert_array_equal(intref.rounding_shift(p, 2), [1, -1, 2, -2, 2, -2, 0, 0, 0, 1, -1])
    # /2: 0.5 -> 1, 1.5 -> 2
    np.testing.assert_array_equal(intref.rounding_shift(np.array([1, -1, 3, -3]), 1), [1, -1, 2, -2])
    np.testing.assert_array_equal(intref.rounding_shift(p, 0), p)
    big = np.array([2**53 - 1, -(2**53 - 1), 2**62 - 1])
    np.testing.assert_array_equal(intref.rounding_shift(big, 0), big)


def test_requantize_goldens():
    # 3 * 3 / 2 = 4.5 -> 5;  -4.5 -> -5;  6 * 1 / 4 = 1.5 -> 2;  -1.5 -> -2
    np.testing.assert_array_equal(intref.requantize([3, -3], 3, 1), [5, -5])
    np.testing.assert_array_equal(intref.requantize([6, -6], 1, 2), [2, -2])
    # per output channel multipliers broadcast along the last axis: 30/4 = 7.5 -> 8, 50/8 = 6.25 -> 6
    acc = np.array([[10, 10], [-10, -10]])
    np.testing.assert_array_equal(intref.requantize(acc, np.array([3, 5]), np.array([2, 3])), [[8, 6], [-8, -6]])
    # multiplier 2**21, shift 22 is 0.5: accumulators 1, 3, -1, -3 are the ties 0.5, 1.5, -0.5, -1.5
    np.testing.assert_array_equal(intref.requantize([1, 3, -1, -3], 2**21, 22), [1, 2, -1, -2])
    # the largest product, (2**30 - 1) * (2**22 - 1) / 2**52 = 0.99999... -> 1: exact in int64
    np.testing.assert_array_equal(
        intref.requantize([2**30 - 1], 2**22 - 1, 52), [exact_round(Fraction((2**30 - 1) * (2**22 - 1), 2**52))]
    )


def test_requantize_saturates_at_1024_as_the_c_does():
    # 1023, 1024 and 1025 accumulators times 1 (2**21 / 2**21): 1023, 1024, then capped at 1024
    np.testing.assert_array_equal(intref.requantize([1023, 1024, 1025, -1025], 2**21, 21), [1023, 1024, 1024, -1024])
    # the largest product, (2**30 - 1) * (2**22 - 1) with shift 0, is 2**52 - ...: capped, sign kept
    np.testing.assert_array_equal(intref.requantize([2**30 - 1, -(2**30 - 1)], 2**22 - 1, 0), [1024, -1024])
    assert intref.SATURATION == 1024 > 127 + 128  # beyond r + offset for every int8 result


def test_saturation_never_changes_an_int8_result():
    """A layer's codes with the cap are the codes without it, for every offset: r + offset
    clamps to -128..127 both ways once |r| >= 1024 > 127 + 128."""
    r = np.array([-(10**9), -1025, -1024, -300, 0, 300, 1024, 1025, 10**9])
    capped = np.clip(r, -intref.SATURATION, intref.SATURATION)
    for offset in range(-128, 128):
        np.testing.assert_array_equal(np.clip(capped + offset, -128, 127), np.clip(r + offset, -128, 127))
    np.testing.assert_array_equal(np.clip(capped, -128, 127), np.clip(r, -128, 127))  # table index


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2**30) + 1, 2**30 - 1), st.integers(0, 2**22 - 1), st.integers(0, 62))
def test_requantize_matches_exact_fraction(acc, multiplier, shift):
    exact = exact_round(Fraction(acc * multiplier, 2**shift))
    assert as_ints(intref.rounding_shift(np.array([acc * multiplier]), np.array([shift]))) == [exact]
    assert as_ints(intref.requantize(np.array([acc]), multiplier, shift)) == [max(-1024, min(1024, exact))]


# --- accumulate at its extremes ----------------------------------------------------------------


@pytest.mark.parametrize("fan_in", [1, 1032, 1033, 5000])
@pytest.mark.parametrize("weight", [-127, 127])
def test_accumulate_exact_at_the_extremes(fan_in, weight):
    codes = np.full((3, fan_in), weight, dtype=np.int8)
    x = np.full((3, fan_in), -128, dtype=np.int8)
    # one input of -127 makes the sum odd: beyond 2**24 (fan-in 1033 and up) float32 cannot hold it
    x[2, fan_in // 2] = -127
    expected = x.astype(np.int64) @ codes.astype(np.int64).T
    assert int(expected[0, 0]) == -128 * weight * fan_in
    if fan_in > 1032:
        assert int(np.float32(expected[2, 0])) != int(expected[2, 0])  # float32 would be caught
    got = intref.accumulate(x, codes, np.zeros(3, np.int64))
    np.testing.assert_array_equal(got, expected)
    # the bias limit brings the accumulator to 2**30 - 1 and no further
    limit = q.bias_limit(fan_in)
    bias = np.full(3, limit if weight < 0 else -limit, dtype=np.int64)
    got = intref.accumulate(x, codes, bias)
    np.testing.assert_array_equal(got[:2], np.full((2, 3), (2**30 - 1) * (1 if weight < 0 else -1)))
    # the odd row: 127 * 128 less in magnitude, plus 127 * 127
    np.testing.assert_array_equal(got[2], np.full(3, (2**30 - 1 - 16256 + 16129) * (1 if weight < 0 else -1)))


@pytest.mark.parametrize("fan_in", [1032, 1033, 5000])
def test_accumulate_exact_with_odd_products(fan_in):
    # 127 * 127 is odd: partial sums beyond 2**24 would not be exact in float32
    rng = np.random.default_rng(fan_in)
    codes = rng.choice(np.array([-127, 127], dtype=np.int8), (4, fan_in))
    codes[0] = 127
    x = rng.choice(np.array([-128, 127], dtype=np.int8), (3, fan_in))
    x[0] = 127
    x[0, 0] = -128  # row 0 against codes row 0: an odd sum, beyond 2**24 from fan-in 1041
    expected = x.astype(np.int64) @ codes.astype(np.int64).T
    got = intref.accumulate(x, codes, np.array([1, -1, 0, 7]))
    np.testing.assert_array_equal(got, expected + np.array([1, -1, 0, 7]))
    assert got.dtype == np.int64


# --- a hand-computed integer layer ---------------------------------------------------------------

# input_scale 0.5, weight scale 0.25, output_scale 0.5: M = 0.5 * 0.25 / 0.5 = 0.25 = 2**21 / 2**23,
# so requantize(acc) = round(acc / 4), halves away from zero.
W = np.array([[2, -3], [1, 4]], dtype=np.int8)
B = np.array([5, -2], dtype=np.int64)
X = np.array([[10, -6], [-20, 7], [0, 0], [127, -128]], dtype=np.int8)
# acc = W @ x + B:
#   [10, -6]:    2*10 + (-3)(-6) + 5 = 43;      10 + 4*(-6) - 2 = -16
#   [-20, 7]:   -40 - 21 + 5 = -56;            -20 + 28 - 2 = 6
#   [0, 0]:      5;                             -2
#   [127,-128]: 254 + 384 + 5 = 643;           127 - 512 - 2 = -387
ACC = np.array([[43, -16], [-56, 6], [5, -2], [643, -387]])
# round(acc / 4): 10.75 -> 11, -4, -14, 1.5 -> 2, 1.25 -> 1, -0.5 -> -1, 160.75 -> 161, -96.75 -> -97
REQ = np.array([[11, -4], [-14, 2], [1, -1], [161, -97]])


def layer_of(activation, output_offset, **kw):
    return intref.build_layer(W, B, np.array([0.25, 0.25]), 0.5, -128, activation, 0.5, output_offset, **kw)


def test_hand_layer_accumulator_and_multiplier():
    layer = layer_of("linear", 10)
    assert as_ints(layer.output_multiplier) == [2**21, 2**21] and as_ints(layer.output_shift) == [23, 23]
    np.testing.assert_array_equal(intref.accumulate(X, layer.weights, layer.bias), ACC)
    np.testing.assert_array_equal(intref.requantize(ACC, layer.output_multiplier, layer.output_shift), REQ)


def test_hand_layer_linear():
    # REQ + 10, clamped to [-128, 127]: 161 + 10 = 171 -> 127
    np.testing.assert_array_equal(
        intref.layer_forward(X, layer_of("linear", 10)), [[21, 6], [-4, 12], [11, 9], [127, -87]]
    )
    # with offset -120 the negative side clamps at -128 but is not floored at the offset
    np.testing.assert_array_equal(
        intref.layer_forward(X, layer_of("linear", -120)), [[-109, -124], [-128, -118], [-119, -121], [41, -128]]
    )


def test_hand_layer_relu():
    # REQ - 128, floored at the offset -128: -117, -132 -> -128, ...
    out = intref.layer_forward(X, layer_of("relu", -128))
    np.testing.assert_array_equal(out, [[-117, -128], [-128, -126], [-127, -128], [33, -128]])
    # relu with offset 0 (a fixed scale elsewhere): floor at 0, not at -128
    out = intref.layer_forward(X, layer_of("relu", 0))
    np.testing.assert_array_equal(out, [[11, 0], [0, 2], [1, 0], [127, 0]])
    assert out.min() >= 0


def test_hand_layer_leaky_relu():
    # slope 0.25: negative multiplier 0.0625 = 2**21 / 2**25, so acc < 0 gives round(acc / 16)
    layer = layer_of("leaky_relu", -20, slope=0.25)
    assert as_ints(layer.negative_multiplier) == [2**21, 2**21] and as_ints(layer.negative_shift) == [25, 25]
    # positive acc: round(acc / 4) - 20: 11 - 20 = -9, 2 - 20 = -18, 1 - 20 = -19, 161 - 20 = 141 -> 127
    # negative acc: round(acc / 16) - 20: -16/16 = -1 -> -21, -56/16 = -3.5 -> -4 -> -24,
    #               -2/16 = -0.125 -> 0 -> -20, -387/16 = -24.19 -> -24 -> -44
    np.testing.assert_array_equal(intref.layer_forward(X, layer), [[-9, -21], [-24, -18], [-19, -20], [127, -44]])


def test_hand_layer_tables():
    # table_input_scale 0.5: M = 0.5 * 0.25 / 0.5 = 0.25 again, table index = clamp(round(acc / 4)) + 128
    # sigmoid: 256 * sigmoid(0.5 * 11) = 254.96 -> 255 -> 127;  256 * sigmoid(-2) = 30.52 -> 31 -> -97
    layer = layer_of("sigmoid", -128, table_input_scale=0.5)
    assert layer.output_scale == 0.5 and layer.table_input_scale == 0.5
    np.testing.assert_array_equal(intref.layer_forward(X[:1], layer), [[127, -97]])
    # tanh: 128 * tanh(5.5) = 127.996 -> 128 -> 127;  128 * tanh(-2) = -123.40 -> -123
    layer = layer_of("tanh", 0, table_input_scale=0.5)
    np.testing.assert_array_equal(intref.layer_forward(X[:1], layer), [[127, -123]])


def test_reference_scores_run_the_layers_in_turn():
    hidden, out = (
        layer_of("relu", -128),
        intref.build_layer(np.array([[1, 1]], np.int8), np.array([0]), np.array([1.0]), 0.5, -128, "linear", 0.5, 0),
    )
    # the relu codes of X (test_hand_layer_relu) summed by weights [1, 1], bias 0, M = 0.5 * 1 / 0.5 = 1:
    # -117 - 128 = -245, -128 - 126 = -254, -127 - 128 = -255, 33 - 128 = -95; clamped: -128, -128, -128, -95
    got = intref.reference_scores([hidden, out], X)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, [[-128], [-128], [-128], [-95]])


# --- the layer: complete, checked and fixed on construction --------------------------------------


def test_a_layer_is_built_complete_and_cannot_change():
    layer = layer_of("leaky_relu", -20, slope=0.25)
    assert layer.kind == "dense" and (layer.outputs, layer.inputs) == (2, 2)
    assert layer.weights.dtype == np.int8 and layer.bias.dtype == np.int64
    assert isinstance(layer.output_offset, int) and isinstance(layer.input_scale, float)
    with pytest.raises(FrozenInstanceError):
        layer.output_offset = 3
    with pytest.raises(ValueError, match="read-only"):
        layer.weights[0, 0] = 1
    weights = W.copy()
    mine = intref.build_layer(weights, B, np.array([0.25, 0.25]), 0.5, -128, "linear", 0.5, 0)
    weights[0, 0] = 100  # the caller's array is not the layer's
    assert int(mine.weights[0, 0]) == 2


LEAKY = layer_of("leaky_relu", -20, slope=0.25)
SIGMOID = layer_of("sigmoid", -128, table_input_scale=0.5)


@pytest.mark.parametrize(
    "base, changes, expected",
    [
        (LEAKY, {"activation": "gelu"}, "activation 'gelu' is not one of linear, relu, leaky_relu, sigmoid, tanh"),
        (LEAKY, {"weights": np.array([[1.0, 2.0]])}, "weights: dtype float64, expected integers"),
        (LEAKY, {"weights": np.ones(2, np.int8)}, "weights: shape (2,), expected (outputs >= 1, inputs in 1..65536)"),
        (LEAKY, {"weights": np.ones((2, 0), np.int8)}, "weights: shape (2, 0), expected"),
        (LEAKY, {"weights": np.array([[1, -128], [0, 0]], np.int8)}, "weights -128 at [0, 1] is outside -127..127"),
        (LEAKY, {"weights": np.array([[1, 300], [0, 0]], np.int16)}, "weights 300 at [0, 1] is outside -127..127"),
        (LEAKY, {"bias": None}, "bias: missing"),
        (LEAKY, {"bias": np.zeros(3, np.int64)}, "bias: shape (3,), expected (2,)"),
        (
            LEAKY,
            {"bias": np.array([0, 2**31])},
            f"bias 2147483648 at [1] is outside {-q.bias_limit(2)}..{q.bias_limit(2)}",
        ),
        (
            LEAKY,
            {"output_multiplier": np.array([2**22, 2**21])},
            "output_multiplier 4194304 at [0] is outside 0..4194303",
        ),
        (LEAKY, {"output_multiplier": np.array([-5, 2**21])}, "output_multiplier -5 at [0] is outside 0..4194303"),
        (
            LEAKY,
            {"output_multiplier": np.array([2**21, 0])},
            "output_multiplier 0 at [1] has output_shift 23; a zero multiplier has shift 0",
        ),
        (LEAKY, {"output_shift": np.array([23, 63])}, "output_shift 63 at [1] is outside 0..62"),
        (LEAKY, {"output_shift": np.array([-1, 23])}, "output_shift -1 at [0] is outside 0..62"),
        (LEAKY, {"output_shift": np.array([23.0, 23.0])}, "output_shift: dtype float64, expected integers"),
        (LEAKY, {"negative_multiplier": None}, "negative_multiplier: missing"),
        (LEAKY, {"negative_shift": np.array([70, 25])}, "negative_shift 70 at [0] is outside 0..62"),
        (LEAKY, {"negative_shift": np.zeros(3, np.int64)}, "negative_shift: shape (3,), expected (2,)"),
        (LEAKY, {"weight_scales": np.ones(3)}, "weight_scales: shape (3,), expected (2,)"),
        (
            LEAKY,
            {"weight_scales": np.array([0.25, 1e-50])},
            "weight_scales 1e-50 at [1] is not a finite positive float32",
        ),
        (
            LEAKY,
            {"weight_scales": np.array([1e300, 0.25])},
            "weight_scales 1e+300 at [0] is not a finite positive float32",
        ),
        (
            LEAKY,
            {"weight_scales": np.array([0.25, np.nan])},
            "weight_scales nan at [1] is not a finite positive float32",
        ),
        (LEAKY, {"output_scale": float("nan")}, "output_scale nan is not a finite positive number"),
        (LEAKY, {"output_scale": 0.0}, "output_scale 0.0 is not a finite positive number"),
        (LEAKY, {"output_scale": 1e300}, "output_scale 1e+300 must lie from 1.18e-38"),
        (LEAKY, {"output_scale": True}, "output_scale True is not a finite positive number"),
        (LEAKY, {"input_scale": -0.5}, "input_scale -0.5 is not a finite positive number"),
        (LEAKY, {"output_offset": 128}, "output_offset 128 is not an integer in -128..127"),
        (LEAKY, {"output_offset": 1.5}, "output_offset 1.5 is not an integer in -128..127"),
        (LEAKY, {"input_zero_point": -129}, "input_zero_point -129 is not an integer in -128..127"),
        (
            LEAKY,
            {"table": np.zeros(256, np.int8)},
            "leaky_relu has a table or table_input_scale; only sigmoid and tanh",
        ),
        (LEAKY, {"table_input_scale": 0.1}, "leaky_relu has a table or table_input_scale; only sigmoid and tanh"),
        (SIGMOID, {"negative_shift": np.zeros(2, np.int64)}, "sigmoid has negative_multiplier or negative_shift"),
        (SIGMOID, {"table": None}, "table: missing"),
        (SIGMOID, {"table": np.zeros(255, np.int8)}, "table: shape (255,), expected (256,)"),
        (SIGMOID, {"table": np.full(256, 200, np.int16)}, "table 200 at [0] is outside -128..127"),
        (SIGMOID, {"table_input_scale": None}, "table_input_scale None is not a finite positive number"),
        (SIGMOID, {"table_input_scale": 1e39}, "table_input_scale 1e+39 must lie from 1.18e-38"),
    ],
)
def test_validate_refuses_each_bad_field_with_one_line(base, changes, expected):
    with pytest.raises(qmtik.QuantizationError) as info:
        replace(base, **changes)
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message, message


def test_a_fan_in_beyond_int32_accumulators_is_refused():
    with pytest.raises(qmtik.QuantizationError, match=r"^weights: shape \(1, 65537\), expected"):
        replace(LEAKY, weights=np.zeros((1, 65537), np.int8))


def test_build_layer_reports_a_multiplier_too_large():
    # M = 1 * 1 / 2**-30 = 2**30: above 2**22, no right shift can hold it
    with pytest.raises(qmtik.QuantizationError, match="too large"):
        intref.build_layer(W, B, np.ones(2), 1.0, 0, "linear", 2.0**-30, 0)


# --- the fast path against the spec, at the extremes ---------------------------------------------


@pytest.mark.parametrize("activation", intref.ACTIVATIONS)
@pytest.mark.parametrize("batch", [5, 300])  # numpy alone; numpy or onnxruntime ([fast])
def test_the_models_fast_path_equals_the_spec_at_the_extremes(activation, batch):
    """Extreme codes, biases, multipliers and shifts from 0 (products up to 2**52, far beyond the
    saturation) to 62, for every activation: QuantizedModel.scores equals intref exactly."""
    rng = np.random.default_rng(len(activation) + batch)
    hidden = random_layer(rng, 40, 23, activation, extreme=True)
    layers = [hidden, random_layer(rng, 23, 7, "linear", in_zero=hidden.output_offset, extreme=True)]
    codes = rng.choice([-128, 127, 0, -1, 1], size=(batch, 40)).astype(np.int8)
    codes[0], codes[1] = -128, 127
    model = QuantizedModel("classification", "softmax", (0.0, 1.0), layers)
    np.testing.assert_array_equal(model.scores(codes), intref.reference_scores(layers, codes))
