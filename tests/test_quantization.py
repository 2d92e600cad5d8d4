"""The int8 quantization of quantization.py against hand-checked goldens and exact oracles.

Integers are compared exactly. The oracles are independent of the code under test: rounding
is done on fractions.Fraction (the exact value of a float), sums in Python or numpy int64.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qmtik
from qmtik import quantization as q


def exact_round(value) -> int:
    """Round half away from zero of the exact value of a float, int or Fraction."""
    f = Fraction(value)
    magnitude = math.floor(abs(f) + Fraction(1, 2))
    return -magnitude if f < 0 else magnitude


def as_ints(a):
    return [int(v) for v in np.asarray(a).ravel()]


# --- round_half_away -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_half_away_ties_go_away_from_zero(dtype):
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, -1.5, 3.5, 0.49, -0.51, 0.0, 7.0, -7.25], dtype=dtype)
    out = q.round_half_away(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([1, -1, 2, 3, -3, -2, 4, 0, -1, 0, 7, -7], dtype=dtype))
    # np.round would round 0.5 -> 0, 2.5 -> 2, -2.5 -> -2: the test above can tell them apart
    assert not np.array_equal(np.round(x), out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_half_away_float_just_below_half(dtype):
    below = np.nextafter(dtype(0.5), dtype(0))
    assert below < 0.5
    assert float(below + dtype(0.5)) == 1.0  # why floor(|x| + 0.5) is wrong here
    np.testing.assert_array_equal(
        q.round_half_away(np.array([below, -below], dtype=dtype)), np.array([0, 0], dtype=dtype)
    )
    # and the float just above 0.5 goes up
    above = np.nextafter(dtype(0.5), dtype(1))
    np.testing.assert_array_equal(q.round_half_away(np.array([above, -above])), [1, -1])


def test_round_half_away_large_float32_integers_unchanged():
    odd = np.array([2**23 + 1, 2**23 + 3, 2**24 - 1, -(2**23 + 1), -(2**24 - 1)], dtype=np.float32)
    assert as_ints(odd) == [2**23 + 1, 2**23 + 3, 2**24 - 1, -(2**23 + 1), -(2**24 - 1)]
    out = q.round_half_away(odd)
    assert out.dtype == np.float32
    assert as_ints(out) == [2**23 + 1, 2**23 + 3, 2**24 - 1, -(2**23 + 1), -(2**24 - 1)]
    # the largest float32 half-integer: 2**23 - 0.5
    np.testing.assert_array_equal(q.round_half_away(np.float32(2**23 - 0.5)), np.float32(2**23))


def test_round_half_away_large_float64_integers_unchanged():
    odd = np.array([2.0**52 + 1, 2.0**53 - 1, -(2.0**52 + 1), 2.0**52 - 0.5], dtype=np.float64)
    assert as_ints(q.round_half_away(odd)) == [2**52 + 1, 2**53 - 1, -(2**52 + 1), 2**52]


def test_round_half_away_scalar():
    assert float(q.round_half_away(2.5)) == 3.0
    assert float(q.round_half_away(-2.5)) == -3.0


def _floats(width):
    limit = 2.0 ** (24 if width == 32 else 53)
    halves = st.integers(-(2 ** (22 if width == 32 else 51)), 2 ** (22 if width == 32 else 51)).map(lambda k: k + 0.5)
    return st.one_of(st.floats(-limit * 4, limit * 4, width=width), halves, st.floats(-3, 3, width=width))


@settings(max_examples=300, deadline=None)
@given(st.lists(_floats(32), min_size=1, max_size=20))
def test_round_half_away_float32_matches_exact_oracle(values):
    x = np.array(values, dtype=np.float32)
    out = q.round_half_away(x)
    assert out.dtype == np.float32
    assert as_ints(out) == [exact_round(float(v)) for v in x]


@settings(max_examples=300, deadline=None)
@given(st.lists(_floats(64), min_size=1, max_size=20))
def test_round_half_away_float64_matches_exact_oracle(values):
    x = np.array(values, dtype=np.float64)
    assert as_ints(q.round_half_away(x)) == [exact_round(float(v)) for v in x]


# --- quantize / dequantize / fake_quantize -----------------------------------------------------------


def test_quantize_rounds_half_away_and_clamps():
    x = np.array([0.25, -0.75, 1.25, 0.0, 63.5, 64.0, -64.0, -64.25, 1000.0, -1000.0])
    # x / 0.5 = 0.5, -1.5, 2.5, 0, 127, 128, -128, -128.5, 2000, -2000
    np.testing.assert_array_equal(q.quantize(x, 0.5), [1, -2, 3, 0, 127, 127, -128, -128, 127, -128])


def test_quantize_weights_range_is_symmetric():
    x = np.array([-1000.0, -12.75, 12.75, 1000.0], dtype=np.float32)
    codes = q.quantize(x, np.float32(0.1), 0, -q.WMAX, q.WMAX)
    # -127.5 -> -128 -> clamped to -127; 127.5 -> 128 -> 127
    np.testing.assert_array_equal(codes, [-127, -127, 127, 127])


def test_quantize_with_zero_point():
    # r = s * (q - z):  q = round(r / s) + z
    x = np.array([0.0, 1.0, -1.0, 0.05, 30.0, -30.0])
    np.testing.assert_array_equal(q.quantize(x, 0.1, 5), [5, 15, -5, 6, 127, -128])
    np.testing.assert_array_equal(q.quantize(x, 0.1, -128), [-128, -118, -128, -127, 127, -128])


def test_quantize_integer_input():
    np.testing.assert_array_equal(q.quantize(np.array([3, -3, 5]), 2), [2, -2, 3])


def test_dequantize_and_fake_quantize():
    np.testing.assert_array_equal(
        q.dequantize(np.array([-128, 0, 5, 127], dtype=np.int8), 0.5, 5), [-66.5, -2.5, 0.0, 61.0]
    )
    # 0.3 / 0.25 = 1.2 -> 1; 0.375 / 0.25 = 1.5 -> 2; clamps at -128 and 127 steps
    np.testing.assert_array_equal(
        q.fake_quantize(np.array([0.3, 0.375, -0.375, 100.0, -100.0]), 0.25), [0.25, 0.5, -0.5, 31.75, -32.0]
    )
    np.testing.assert_array_equal(q.fake_quantize(np.array([100.0, -100.0]), 0.25, 0, -127, 127), [31.75, -31.75])
    # with a zero point the clamp moves: codes [-128, 127] stand for [0, 255 * s]
    np.testing.assert_array_equal(
        q.fake_quantize(np.array([-1.0, 0.0, 2.0, 100.0]), 0.25, -128), [0.0, 0.0, 2.0, 63.75]
    )


# --- scales ----------------------------------------------------------------------------------------


def test_affine_params_non_negative_range_uses_all_codes():
    scale, zero = q.affine_params(0.0, 2.55)
    assert zero == -128
    assert scale == 2.55 / 255
    assert int(q.quantize(2.55, scale, zero)) == 127
    assert int(q.quantize(0.0, scale, zero)) == -128


def test_affine_params_symmetric_range():
    scale, zero = q.affine_params(-1.0, 1.0)
    # lo / s = -127.5 -> -128, zero = -128 - (-128) = 0
    assert (scale, zero) == (2.0 / 255, 0)


def test_affine_params_widens_to_contain_zero():
    assert q.affine_params(2.0, 5.0) == q.affine_params(0.0, 5.0) == (5.0 / 255, -128)
    assert q.affine_params(-5.0, -2.0) == q.affine_params(-5.0, 0.0) == (5.0 / 255, 127)


def test_affine_params_degenerate_range():
    scale, zero = q.affine_params(0.0, 0.0)
    assert scale > 0 and zero == -128


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e4, 0), st.floats(0, 1e4))
def test_affine_params_zero_exact_and_range_covered(lo, hi):
    scale, zero = q.affine_params(lo, hi)
    assert isinstance(zero, int) and -128 <= zero <= 127
    assert int(q.quantize(0.0, scale, zero)) == zero
    assert float(q.dequantize(zero, scale, zero)) == 0.0
    if hi - lo >= 1e-6:
        # the end codes stand for lo and hi within half a step
        assert abs(float(q.dequantize(-128, scale, zero)) - lo) <= scale * 0.5 * (1 + 1e-9)
        assert abs(float(q.dequantize(127, scale, zero)) - hi) <= scale * 0.5 * (1 + 1e-9)


def test_weight_scales_and_codes():
    w = np.array([[0.5, -1.25, 0.0], [0.0625, 0.25, -0.1875]], dtype=np.float32)  # exact in float32
    codes, scales = q.quantize_weights(w, per_channel=True)
    np.testing.assert_array_equal(scales, [1.25 / 127, 0.25 / 127])
    assert codes.dtype == np.int8
    # row 0: 0.5 * 127 / 1.25 = 50.8 -> 51, -127, 0; row 1: 31.75 -> 32, 127, -95.25 -> -95
    np.testing.assert_array_equal(codes, [[51, -127, 0], [32, 127, -95]])
    codes, scales = q.quantize_weights(w, per_channel=False)
    np.testing.assert_array_equal(scales, [1.25 / 127] * 2)
    # row 1 at the tensor scale: 6.35 -> 6, 25.4 -> 25, -19.05 -> -19
    np.testing.assert_array_equal(codes, [[51, -127, 0], [6, 25, -19]])
    codes, scales = q.quantize_weights(w, per_channel=True, fixed=0.007)
    np.testing.assert_array_equal(scales, [0.007, 0.007])
    # 71.4 -> 71, -178.6 clips to -127; 8.93 -> 9, 35.7 -> 36, -26.8 -> -27
    np.testing.assert_array_equal(codes, [[71, -127, 0], [9, 36, -27]])
    # a channel of zeros gets a tiny positive scale and zero codes
    codes, scales = q.quantize_weights(np.zeros((1, 3), np.float32), per_channel=True)
    np.testing.assert_array_equal(scales, [1e-8 / 127])
    np.testing.assert_array_equal(codes, [[0, 0, 0]])


# --- quantize_multiplier ------------------------------------------------------------------------


def test_quantize_multiplier_goldens():
    m, s = q.quantize_multiplier([0.75, 1.0, 0.5, 2.0**20, 0.001])
    # 0.75 = 0.75 * 2**0 -> 0.75 * 2**22 = 3145728, shift 22
    # 1.0 = 0.5 * 2**1 -> 2**21, shift 21;  0.5 -> 2**21, shift 22;  2**20 -> 2**21, shift 1
    # 0.001 = 0.512 * 2**-9 -> round(2147483.648) = 2147484, shift 31
    assert as_ints(m) == [3145728, 2097152, 2097152, 2097152, 2147484]
    assert as_ints(s) == [22, 21, 22, 1, 31]
    assert abs(Fraction(2147484, 2**31) - Fraction(0.001)) <= Fraction(0.001) * Fraction(1, 2**21)


def test_quantize_multiplier_carry():
    # mantissa 1 - 2**-24: times 2**22 is 2**22 - 0.25, which rounds up to 2**22
    m, s = q.quantize_multiplier([1 - 2.0**-24, 2.0**-10 * (1 - 2.0**-25)])
    assert as_ints(m) == [2**21, 2**21]
    assert as_ints(s) == [21, 31]


def test_quantize_multiplier_zero_and_vanishing():
    m, s = q.quantize_multiplier([0.0, 1e-30, 2.0**-41, 2.0**-40])
    # 2**-41 = 0.5 * 2**-40 -> shift 62 (kept); 2**-41 / 2 would need 63
    assert as_ints(m) == [0, 0, 2**21, 2**21]
    assert as_ints(s) == [0, 0, 62, 61]
    m, s = q.quantize_multiplier(2.0**-42)
    assert as_ints(m) == [0] and as_ints(s) == [0]


@pytest.mark.parametrize("bad", [2.0**23, 2.0**22, 2.0**22 - 0.25, 1e10])
def test_quantize_multiplier_too_large(bad):
    with pytest.raises(qmtik.QuantizationError):
        q.quantize_multiplier(bad)


@pytest.mark.parametrize("bad", [-0.5, -1e-30, float("nan"), float("inf")])
def test_quantize_multiplier_negative_or_not_finite(bad):
    with pytest.raises(qmtik.QuantizationError):
        q.quantize_multiplier([0.5, bad])


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-12, 1e3))
def test_quantize_multiplier_property(real):
    m, s = q.quantize_multiplier(real)
    m, s = int(m[0]), int(s[0])
    assert 2**21 <= m < 2**22
    assert 0 <= s <= q.MAX_SHIFT
    assert abs(Fraction(m, 2**s) - Fraction(real)) <= Fraction(real) / 2**22


# --- accumulator and bias bounds -----------------------------------------------------------------


def test_accumulator_bound_and_bias_limit():
    assert q.accumulator_bound(1) == 128 * 127 == 16256
    assert q.accumulator_bound(1032) == 16776192 < 2**24
    assert q.accumulator_bound(1033) == 16792448 > 2**24
    assert q.bias_limit(1) == 2**30 - 1 - 16256 == 1073725567
    assert q.bias_limit(65536) == 2**23 - 1
    with pytest.raises(qmtik.QuantizationError):
        q.bias_limit(70000)


def test_quantize_bias_golden():
    # b / (s_in * s_w) = 0.3 / (0.5 * 0.1) = 6;  -0.125 / 0.05 = -2.5 -> -3
    # minus z_in * sum(W): z_in = -128, sums 3 and -1
    codes = np.array([[1, 2], [-3, 2]], dtype=np.int8)
    bias = q.quantize_bias(np.array([0.3, -0.125]), 0.5, -128, codes, np.array([0.1, 0.1]))
    np.testing.assert_array_equal(bias, [6 + 128 * 3, -3 - 128])
    assert bias.dtype == np.int64
    # huge biases clamp to the limit
    bias = q.quantize_bias(np.array([1e12, -1e12]), 0.5, 0, codes, np.array([0.1, 0.1]))
    np.testing.assert_array_equal(bias, [q.bias_limit(2), -q.bias_limit(2)])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_quantize_bias_folds_the_input_zero_point(seed):
    rng = np.random.default_rng(seed)
    outputs, inputs, n = rng.integers(1, 6), rng.integers(1, 9), rng.integers(1, 5)
    codes = rng.integers(-127, 128, (outputs, inputs)).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.1, outputs)
    in_scale = float(rng.uniform(0.001, 0.1))
    in_zero = int(rng.integers(-128, 128))
    b = rng.normal(0, 0.05, outputs)
    x = rng.integers(-128, 128, (n, inputs)).astype(np.int8)
    got = x.astype(np.int64) @ codes.astype(np.int64).T + q.quantize_bias(b, in_scale, in_zero, codes, w_scale)
    expected = [
        [
            sum(int(codes[i, j]) * (int(x[k, j]) - in_zero) for j in range(inputs))
            + exact_round(float(b[i]) / (in_scale * float(w_scale[i])))
            for i in range(outputs)
        ]
        for k in range(n)
    ]
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.int64))


# --- activation tables ---------------------------------------------------------------------------


def test_sigmoid_table():
    t = q.activation_table("sigmoid", 8 / 127)
    assert t.dtype == np.int8 and t.shape == (256,)
    assert int(t[128]) == 0  # round(0.5 * 256) - 128
    assert int(t[255]) == 127  # 256 * sigmoid(8) = 255.91 -> 256 -> 128, clamped
    assert int(t[0]) == -128  # 256 * sigmoid(-8.06) = 0.08 -> 0 -> -128
    assert np.all(np.diff(t.astype(np.int64)) >= 0)
    # 256 * sigmoid(1 * 8/127) = 132.03 -> 132 -> 4
    assert int(t[129]) == 4


def test_tanh_table():
    t = q.activation_table("tanh", 4 / 127)
    assert t.dtype == np.int8 and t.shape == (256,)
    assert int(t[128]) == 0
    assert int(t[0]) == -128  # 128 * tanh(-4.03) = -127.92 -> -128
    assert int(t[255]) == 127  # 128 * tanh(4) = 127.91 -> 128, clamped
    assert np.all(np.diff(t.astype(np.int64)) >= 0)
    # 128 * tanh(4/127) = 4.03 -> 4
    assert int(t[129]) == 4 and int(t[127]) == -4


def test_tables_match_oracle():
    for kind, pre, fn, s, z in (
        ("sigmoid", 0.03, lambda v: 1 / (1 + math.exp(-v)), 256, -128),
        ("tanh", 0.021, math.tanh, 128, 0),
    ):
        expected = [max(-128, min(127, exact_round(s * fn(pre * k)) + z)) for k in range(-128, 128)]
        assert as_ints(q.activation_table(kind, pre)) == expected


def test_activation_table_unknown_kind():
    with pytest.raises(qmtik.QuantizationError):
        q.activation_table("relu", 0.1)


# --- inputs --------------------------------------------------------------------------------------


def test_quantize_inputs_pixels():
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 64)
    codes = q.quantize_inputs(pixels, (0, 255))
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, pixels.astype(np.int64) - 128)
    codes = q.quantize_inputs(np.arange(256, dtype=np.float64), (0.0, 255.0))
    np.testing.assert_array_equal(codes, np.arange(256) - 128)


def test_quantize_inputs_clamp():
    x = np.array([[-50.0, -0.4, 255.4, 300.0, 1e9, -1e9]])
    np.testing.assert_array_equal(q.quantize_inputs(x, (0, 255)), [[-128, -128, 127, 127, 127, -128]])


def test_quantize_inputs_many_rows():
    # more rows than one working piece: every piece is written
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (5000, 64))
    np.testing.assert_array_equal(q.quantize_inputs(pixels, (0, 255)), pixels - 128)
    flat = rng.integers(0, 256, 70000)
    np.testing.assert_array_equal(q.quantize_inputs(flat, (0, 255)), flat - 128)


def input_oracle(x, low, high):
    gain = np.float32(255.0 / (float(high) - float(low)))
    out = []
    for v in np.asarray(x, dtype=np.float64).ravel():
        u = np.float32(np.float32(v) - np.float32(low))
        u = np.float32(u * gain)
        assert type(u) is np.float32
        out.append(max(-128, min(127, exact_round(float(u)) - 128)))
    return out


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e3, 1e3), st.floats(1e-3, 1e3), st.lists(st.floats(-2e3, 2e3), min_size=1, max_size=30))
def test_quantize_inputs_matches_float32_oracle(low, width, values):
    high = low + width
    x = np.array(values).reshape(1, -1)
    codes = q.quantize_inputs(x, (low, high))
    assert codes.dtype == np.int8
    assert as_ints(codes) == input_oracle(x, low, high)


def test_quantize_inputs_ties_round_away():
    # range [0, 510]: gain = float32(0.5) exactly, so odd x land on halves
    x = np.array([[1.0, 3.0, 5.0, -1.0, 255.0, 509.0]])
    # 0.5 -> 1 -> -127; 1.5 -> 2 -> -126; 2.5 -> 3 -> -125; -0.5 -> -1 -> -129 -> -128;
    # 127.5 -> 128 -> 0; 254.5 -> 255 -> 127
    np.testing.assert_array_equal(q.quantize_inputs(x, (0, 510)), [[-127, -126, -125, -128, 0, 127]])
    x = np.arange(-3, 1021, dtype=np.float64).reshape(8, -1)
    assert as_ints(q.quantize_inputs(x, (0, 510))) == input_oracle(x, 0, 510)


def test_quantize_inputs_is_float32_near_ties():
    # x = -1 + 2.5 / 127.5 with range [-1, 1]: in float64 (x + 1) * 127.5 = 2.5000000000000053 -> 3,
    # but float32(x) = -0.98039215803, u = 0.01960784197, u * 127.5 = 2.4999998 -> 2: code -126
    x = np.array([[-1 + 2.5 / 127.5]])
    np.testing.assert_array_equal(q.quantize_inputs(x, (-1.0, 1.0)), [[-126]])
    for low, high in ((-1.0, 1.0), (0.1, 0.7)):
        x = low + (np.arange(256) + 0.5) / (255 / (high - low))  # every half-step
        x = np.concatenate([x, np.nextafter(x, -np.inf), np.nextafter(x, np.inf)]).reshape(3, -1)
        codes = q.quantize_inputs(x, (low, high))
        expected = input_oracle(x, low, high)
        assert as_ints(codes) == expected
        in_float64 = np.clip(q.round_half_away((x - low) * (255 / (high - low))) - 128, -128, 127)
        assert as_ints(in_float64) != expected  # float64 arithmetic would be caught


# --- output quantization ------------------------------------------------------------------------


def test_output_quantization_tables_capped():
    assert q.output_quantization("sigmoid", np.array([-100.0, 100.0])) == (1 / 256, -128, 8 / 127)
    assert q.output_quantization("tanh", np.array([-3.0, 100.0])) == (1 / 128, 0, 4 / 127)
    # below the cap: the observed range itself
    assert q.output_quantization("sigmoid", np.array([-2.0, 3.0])) == (1 / 256, -128, 3 / 127)
    assert q.output_quantization("tanh", np.array([-2.0, 1.0])) == (1 / 128, 0, 2 / 127)
    # fixed scale sets the table input scale
    assert q.output_quantization("tanh", np.array([-2.0, 1.0]), 0.01) == (1 / 128, 0, 0.01)


def test_output_quantization_fixed_and_observed():
    assert q.output_quantization("relu", np.array([0.0, 5.0]), 0.05) == (0.05, -128, None)
    assert q.output_quantization("linear", np.array([0.0, 5.0]), 0.05) == (0.05, 0, None)
    assert q.output_quantization("leaky_relu", np.array([0.0, 5.0]), 0.05) == (0.05, 0, None)
    assert q.output_quantization("relu", np.array([0.0, 2.55])) == (2.55 / 255, -128, None)
    assert q.output_quantization("linear", np.array([-1.0, 1.0])) == (2 / 255, 0, None)


# --- issue 10: non-finite input is a QuantizationError, harmless overflow is silent -------------


@pytest.mark.parametrize("lo, hi", [(np.nan, 1.0), (0.0, np.inf), (-np.inf, 0.0), (-1e308, 1e308)])
def test_affine_params_of_a_range_that_is_not_finite_is_a_quantization_error(lo, hi):
    """A NaN range used to end in 'ValueError: cannot convert float NaN to integer'."""
    with pytest.raises(qmtik.QuantizationError, match=r"^range \[.*\] is (not finite|wider than float32 holds)$"):
        q.affine_params(lo, hi)


@pytest.mark.parametrize(
    "activation, observed",
    [
        ("relu", [np.nan, np.nan]),
        ("relu", [0.0, np.inf]),
        ("linear", [-3e38, 3e38]),
        ("sigmoid", [np.nan, np.nan]),
        ("tanh", [-np.inf, 0.0]),
    ],
)  # tables cap a wide finite range
def test_output_quantization_of_a_bad_range_is_a_quantization_error(activation, observed):
    with pytest.raises(qmtik.QuantizationError, match="not finite|wider than float32"):
        q.output_quantization(activation, np.array(observed))


@pytest.mark.parametrize("values", [[0.5, np.nan], [np.inf, 0.5], [-np.inf, 1.0]])
def test_weights_or_biases_that_are_not_finite_are_a_quantization_error(values):
    weight = np.array([values, [0.25, 0.5]], dtype=np.float32)
    for per_channel in (True, False):
        with pytest.raises(qmtik.QuantizationError, match="weights hold NaN or infinite values"):
            q.quantize_weights(weight, per_channel)
    with pytest.raises(qmtik.QuantizationError, match="biases hold NaN or infinite values"):
        q.quantize_bias(np.array(values), 1 / 255, -128, np.ones((2, 3), np.int8), np.array([0.01, 0.01]))


@pytest.mark.parametrize(
    "real, shown",
    [([0.5, np.inf, 0.25], "inf"), ([0.5, -2.0], "-2.0"), ([np.nan, 0.5], "nan"), ([0.1, 0.2, -np.inf], "-inf")],
)
def test_a_bad_multiplier_is_named_not_the_smallest(real, shown):
    """The message used to print real.min(), which skips an inf among finite values."""
    with pytest.raises(qmtik.QuantizationError) as info:
        q.quantize_multiplier(real)
    assert str(info.value).endswith(f"got {shown}")


@pytest.mark.parametrize("pre_scale", [0.0, -1.0, np.inf, np.nan])
def test_an_activation_table_needs_a_finite_positive_scale(pre_scale):
    with pytest.raises(qmtik.QuantizationError, match="activation table"):
        q.activation_table("sigmoid", pre_scale)


@pytest.mark.filterwarnings("error")
def test_a_sigmoid_table_of_a_huge_scale_saturates_without_warnings():
    """exp overflows left of 0 with a fixed activation scale of 1e30: sigmoid is 0 there."""
    table = q.activation_table("sigmoid", 1e30)
    np.testing.assert_array_equal(table[:128], -128)
    assert table[128] == 0 and (table[129:] == 127).all()


@pytest.mark.filterwarnings("error")
def test_values_far_beyond_a_tiny_scale_clamp_without_warnings():
    """|w| / 1.2e-38 overflows float32 for |w| > 4: the clamp makes it the end code, silently."""
    codes, _ = q.quantize_weights(np.array([[10.0, -10.0, 0.0, 1e-38]], np.float32), False, fixed=q.F32_TINY)
    np.testing.assert_array_equal(codes, [[127, -127, 0, 1]])
    np.testing.assert_array_equal(q.quantize(np.float32([3e38, -3e38]), np.float32(1e-30)), [127, -128])


@pytest.mark.filterwarnings("error")
def test_inputs_far_beyond_a_wide_range_clamp_without_warnings():
    codes = q.quantize_inputs(np.array([[3e38, -3e38, 1e38]]), (-1e38, 1e38))
    np.testing.assert_array_equal(codes, [[127, -128, 127]])


@pytest.mark.parametrize(
    "lo, hi, ok",
    [
        (0, 1, True),
        (-5, -1, True),
        (0, 0, True),
        (-1.7e38, 1.7e38, True),
        (1, 0, False),
        (np.nan, 1, False),
        (0, np.inf, False),
        (-3e38, 3e38, False),
        (1e38, 3.4e38, True),
        (-1e38, 3e38, False),
    ],
)
def test_range_problem(lo, hi, ok):
    assert (q.range_problem(lo, hi) is None) == ok


@pytest.mark.parametrize(
    "scale, ok",
    [
        (q.F32_TINY, True),
        (1.0, True),
        (q.SCALE_MAX, True),
        (1e-39, False),
        (q.SCALE_MAX * 1.001, False),
        (0.0, False),
        (-1.0, False),
        (np.nan, False),
        (np.inf, False),
    ],
)
def test_scale_problem(scale, ok):
    """A fixed scale is a normal float32 whose 256 steps stay finite in float32."""
    problem = q.scale_problem(scale)
    assert (problem is None) == ok
    if ok:
        assert np.isfinite(np.float32(scale) * np.float32(256)) and np.float32(scale) >= q.F32_TINY


def test_weight_scales_refuse_nan_and_inf_in_any_row():
    for bad in (np.nan, np.inf, -np.inf):
        w = np.ones((3, 4), np.float32)
        w[2, 1] = bad
        with pytest.raises(qmtik.QuantizationError, match="NaN or infinite"):
            q.weight_scales(w, per_channel=False)


def test_quantize_bias_with_code_sums_equals_without():
    codes = np.array([[127, -3, 5], [-127, 0, 64]], np.int8)
    bias, scales = np.array([0.03, -0.2]), np.array([0.01, 0.02])
    expected = q.quantize_bias(bias, 1 / 255, -128, codes, scales)
    given_sums = q.quantize_bias(bias, 1 / 255, -128, codes.astype(np.float32), scales, np.array([129, -63]))
    np.testing.assert_array_equal(given_sums, expected)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(-1e6, 1e6), st.integers(-300, 300).map(lambda k: k + 0.5)))
def test_round_half_away_scalar_equals_round_half_away(x):
    """The scalar form training uses for zero points rounds as the array form does, ties too."""
    assert q.round_half_away_scalar(x) == int(q.round_half_away(np.float64(x)))
    assert isinstance(q.round_half_away_scalar(x), int)


def test_round_half_away_scalar_at_the_float_just_below_a_half():
    below = math.nextafter(0.5, 0.0)
    assert [q.round_half_away_scalar(v) for v in (below, -below, 0.5, -0.5, 2.5, -2.5)] == [0, 0, 1, -1, 3, -3]
