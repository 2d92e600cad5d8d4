"""The window layers' loops: the compiled forms equal the NumPy definitions bit for bit (padding,
stride, odd sizes, overlapping windows, ties, NaN, signed zeros), and the definitions mean what
they say (max pooling's first largest tap, col2im the adjoint of im2col, exact moments)."""

from fractions import Fraction

import numpy as np
import pytest

import qmtik
from qmtik import fused
from qmtik import fused_windows as fw
from qmtik import quantization as q
from qmtik.backends.numpy import LayerKernel
from qmtik.spatial import col2im, geometry, im2col

BUILT = fused.compiled is not None
NOT_BUILT = pytest.mark.skipif(not BUILT, reason="qmtik._fused did not build")
GEOMETRIES = [  # (input h, w), kernel, stride, padding
    ((8, 8), 2, 2, "valid"),  # tiling
    ((7, 9), 2, 2, "valid"),  # odd sizes: the last row and column read by no window
    ((7, 7), 3, 2, "same"),  # padding, overlapping windows
    ((6, 5), 3, 1, [1, 2, 0, 1]),  # explicit padding, every element read by up to 9 windows
    ((1, 11), (1, 3), (1, 2), [0, 0, 1, 1]),  # 1-D
    ((5, 5), 1, 1, "valid"),  # 1 x 1
]


def both(monkeypatch, function, *args, wide=True):
    """function(*args) with QMTIK_FUSED=numpy, then with the compiled loops (AVX2 forms on or off)."""
    monkeypatch.setenv("QMTIK_FUSED", "numpy")
    expected = function(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    monkeypatch.setenv("QMTIK_FUSED", "")
    before = fused.compiled.wide(wide)
    try:
        got = function(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    finally:
        fused.compiled.wide(before)
    return got, expected


def assert_same_bits(got, expected):
    """Equal arrays, NaN for NaN and -0.0 for -0.0 (compared as raw bits)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if got.dtype.kind == "f":
        got, expected = got.view(f"u{got.itemsize}"), expected.view(f"u{expected.itemsize}")
    np.testing.assert_array_equal(got, expected)


def pool_input(rng, shape):
    """Codes with many ties, a few NaN, -inf and signed zeros."""
    x = rng.integers(-3, 3, shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=(3, max(1, flat.size // 40)), replace=False)
    flat[picks[0]], flat[picks[1]], flat[picks[2]] = np.nan, -np.inf, -0.0
    return x


@NOT_BUILT
@pytest.mark.parametrize("spec", GEOMETRIES)
@pytest.mark.parametrize("wide", [True, False])
def test_max_pooling_and_its_backward_compiled_equal_their_definitions(monkeypatch, spec, wide):
    in_hw, kernel, stride, padding = spec
    geo = geometry(in_hw, kernel, stride, padding)
    if any(p >= k for p, k in zip(geo.pads, (geo.kernel[0],) * 2 + (geo.kernel[1],) * 2)):
        pytest.skip("a pool's padding leaves a real element in every window")
    rng = np.random.default_rng(sum(in_hw))
    x = pool_input(rng, (3, *in_hw, 5))
    (y, where), (y_n, where_n) = both(monkeypatch, fw.max_pool, x, geo, wide=wide)
    assert_same_bits(y, y_n)
    assert_same_bits(where, where_n)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    grad.reshape(-1)[::7] = -0.0
    got, expected = both(monkeypatch, fw.max_pool_backward, grad, where, geo, x.shape, wide=wide)
    assert_same_bits(got, np.ascontiguousarray(expected))


def test_max_pooling_takes_the_first_largest_tap_and_a_nan_first():
    geo = geometry((2, 4), 2, 2)
    x = np.array([[1, 5, 0, -0.0], [5, 2, 0, 0]], np.float32).reshape(1, 2, 4, 1)
    y, where = fw.max_pool_numpy(x, geo)
    np.testing.assert_array_equal(y.reshape(-1), [5, 0])
    np.testing.assert_array_equal(where.reshape(-1), [1, 0])  # two 5s: the first; 0, -0.0, 0, 0: the first
    x[0, 1, 0, 0] = np.nan
    y, where = fw.max_pool_numpy(x, geo)
    assert np.isnan(y.reshape(-1)[0]) and where.reshape(-1)[0] == 2
    d_x = fw.max_pool_backward_numpy(np.array([3.0, -0.0], np.float32).reshape(1, 1, 2, 1), where, geo, x.shape)
    np.testing.assert_array_equal(d_x.reshape(-1), [0, 0, 0, 0, 3, 0, 0, 0])
    assert not np.signbit(d_x).any()  # a gradient of -0.0 arrives as 0.0 + -0.0


@NOT_BUILT
@pytest.mark.parametrize("spec", GEOMETRIES)
def test_im2col_and_col2im_compiled_equal_their_definitions(monkeypatch, spec):
    in_hw, kernel, stride, padding = spec
    geo = geometry(in_hw, kernel, stride, padding)
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, *in_hw, 3)).astype(np.float32)
    for subtract, pad_value in ((0.0, 0.0), (-128.0, 0.0), (0.0, -7.0)):
        got, expected = both(monkeypatch, fw.im2col, x, geo, subtract, pad_value)
        assert_same_bits(got, np.ascontiguousarray(expected))
    np.testing.assert_array_equal(fw.im2col_numpy_form(x, geo, -128.0), im2col(x + 128, geo, 0))
    cols = rng.standard_normal(expected.shape).astype(np.float32)
    cols.reshape(-1)[::5] = -0.0
    got, expected = both(monkeypatch, fw.col2im, cols, geo, 3)
    assert_same_bits(got, np.ascontiguousarray(expected))
    np.testing.assert_array_equal(expected, col2im(cols, geo, 3))


def test_column_sums64_add_row_after_row_from_zero():
    rng = np.random.default_rng(0)
    for columns in (1, 2, 7):
        x = (rng.standard_normal((3000, columns)) * np.exp(rng.standard_normal((3000, columns)) * 6)).astype(np.float32)
        assert_same_bits(fw.column_sums64(x), np.add.accumulate(x.astype(np.float64), axis=0)[-1])
    assert_same_bits(fw.column_sums64(np.full((3, 2), -0.0, np.float32)), np.zeros(2))
    assert_same_bits(fw.column_sums64(np.zeros((0, 2), np.float32)), np.zeros(2))


def accumulators(rng, rows, columns, bound):
    acc = rng.integers(-bound, bound + 1, (rows, columns)).astype(np.float32)
    acc[0, 0], acc[1, 0] = -bound, bound
    return acc, rng.integers(-(2**20), 2**20, columns).astype(np.float32)


@NOT_BUILT
def test_the_accumulator_statistics_compiled_equal_their_definition_and_are_exact(monkeypatch):
    rng = np.random.default_rng(5)
    for bound in (3, 2**23 - 2**21):
        acc_c, shift = accumulators(rng, 517, 6, bound)
        shift = np.where(np.abs(shift) + bound < 2**24, shift, 0).astype(np.float32)
        got, expected = both(monkeypatch, fw.acc_stats, acc_c, shift)
        for a, b in zip(got, expected):
            assert_same_bits(a, b)
        mean, var = fw.exact_moments(got, len(acc_c))
        acc = (acc_c + shift).astype(np.int64)
        for c in range(acc.shape[1]):
            values = [int(v) for v in acc[:, c]]
            exact_mean = Fraction(sum(values), len(values))
            exact_var = Fraction(sum(v * v for v in values), len(values)) - exact_mean**2
            assert mean[c] == float(exact_mean) and var[c] == float(exact_var)
        np.testing.assert_array_equal(got[4], acc.min(axis=0))
        np.testing.assert_array_equal(got[5], acc.max(axis=0))


def kernel_of(rng, columns, activation, shift):
    weights = rng.integers(-127, 128, (columns, 9)).astype(np.int8)
    bias = rng.integers(-5000, 5000, columns)
    return LayerKernel.from_arrays(weights, bias, rng.integers(2**29, 2**31 - 1, columns), np.full(columns, shift),
                                   activation, -128 if activation == "relu" else 3)  # fmt: skip


@NOT_BUILT
@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize("normed", [True, False])
@pytest.mark.parametrize("wide", [True, False])
def test_the_convolution_step_compiled_equals_its_definition(monkeypatch, activation, normed, wide):
    rng = np.random.default_rng(8)
    columns = 37  # a tail after the AVX2 lanes
    acc_c, shift = accumulators(rng, 300, columns, 2**14)
    shift = (shift / 64).round().astype(np.float32)
    for shift_bits in (14, 40):  # folded offsets, and shifts too large to fold (relu)
        kernel = kernel_of(rng, columns, activation, shift_bits)
        sign = np.where(rng.random(columns) < 0.3, -1, 1).astype(np.float32)
        norm = (rng.uniform(-1e-3, 1e-3, columns).astype(np.float32), rng.standard_normal(columns).astype(np.float32))
        bias = rng.integers(-5000, 5000, columns).astype(np.float64)
        z_scale = rng.uniform(1e-5, 1e-3, columns)
        args = (acc_c, shift, norm if normed else None, sign, kernel, bias, z_scale, activation == "relu", -0.5, 2.0)
        got, expected = both(monkeypatch, fw.conv_step, *args, wide=wide)
        for a, b in zip(got, expected):
            assert (a is None) == (b is None)
            if a is not None:
                assert_same_bits(a, b)
        codes, _, mask = expected
        assert codes.min() >= q.QMIN and codes.max() <= q.QMAX and set(np.unique(mask)) <= {0, 1}


@NOT_BUILT
@pytest.mark.parametrize("normed", [True, False])
def test_the_backward_passes_compiled_equal_their_definitions(monkeypatch, normed):
    rng = np.random.default_rng(9)
    rows, columns = 1001, 5
    grad = rng.standard_normal((rows, columns)).astype(np.float32)
    grad[::3] = -0.0
    mask = (rng.random((rows, columns)) < 0.7).astype(np.uint8)
    zhat = rng.standard_normal((rows, columns)).astype(np.float32) if normed else None
    monkeypatch.setenv("QMTIK_FUSED", "numpy")
    g_n = grad.copy()
    sums_n = fw.masked_sums(g_n, mask, zhat)
    monkeypatch.setenv("QMTIK_FUSED", "")
    g_c = grad.copy()
    sums_c = fw.masked_sums(g_c, mask, zhat)
    assert_same_bits(g_c, g_n)
    for a, b in zip(sums_c, sums_n):
        assert_same_bits(a, b)
    assert_same_bits(g_n, grad * mask)
    if not normed:
        return
    d_beta, d_gamma = sums_n[0].astype(np.float32), sums_n[1].astype(np.float32)
    k = rng.uniform(-1, 1, columns).astype(np.float32)
    for batch in (True, False):
        got, expected = both(monkeypatch, fw.norm_backward, g_n, zhat, batch, d_beta, d_gamma, k)
        assert_same_bits(got, expected)
        g_c, g_n2 = g_n.copy(), g_n.copy()
        monkeypatch.setenv("QMTIK_FUSED", "numpy")
        fw.norm_backward(g_n2, zhat, batch, d_beta, d_gamma, k)
        monkeypatch.setenv("QMTIK_FUSED", "")
        fw.norm_backward(g_c, zhat, batch, d_beta, d_gamma, k)
        assert_same_bits(g_c, g_n2)


@NOT_BUILT
def test_the_loops_give_the_same_bits_in_any_number_of_threads(monkeypatch):
    """Large enough to be split: samples, rows and columns in parts, the same results."""
    rng = np.random.default_rng(10)
    x = pool_input(rng, (300, 8, 8, 32))
    geo, conv_geo = geometry((8, 8), 2, 2), geometry((8, 8), 3, 1, "same")
    acc_c, shift = accumulators(rng, 40000, 40, 2**14)
    shift = (shift / 64).round().astype(np.float32)
    kernel = kernel_of(rng, 40, "relu", 14)
    zhat = rng.standard_normal(acc_c.shape).astype(np.float32)
    k = rng.uniform(-1, 1, 40).astype(np.float32)

    def everything():
        y, where = fw.max_pool(x, geo)
        rows = fw.im2col(x, conv_geo, -1.0, 0.0)
        step = fw.conv_step(acc_c, shift, (k, k), np.sign(k), kernel, k.astype(np.float64), np.abs(k) + 0.5, True,
                            -1.0, 3.0)  # fmt: skip
        g = zhat * 3
        sums = fw.masked_sums(g, step[2], zhat)
        sum_d = fw.norm_backward(g, zhat, True, k, k, k)
        return [y, where, fw.max_pool_backward(y, where, geo, x.shape), rows, fw.col2im(rows, conv_geo, 32),
                *fw.acc_stats(acc_c, shift), *step, *sums, g, sum_d]  # fmt: skip

    monkeypatch.setenv("QMTIK_FUSED", "")
    results = []
    for count in (1, 3):
        monkeypatch.setenv("QMTIK_THREADS", str(count))
        assert fw.set_threads() == count
        results.append(everything())
    monkeypatch.setenv("QMTIK_THREADS", "many")
    assert fw.set_threads() == 1  # at import: a bad value must not break `import qmtik`
    monkeypatch.setenv("QMTIK_FUSED", "numpy")
    results.append(everything())
    for got, expected, defined in zip(*results):
        assert_same_bits(got, expected)
        assert_same_bits(got, np.ascontiguousarray(defined))


@pytest.mark.parametrize("value", ["many", "0", "-2", "1.5", "257"])
def test_a_bad_thread_count_is_one_line_where_training_starts(monkeypatch, value):
    monkeypatch.setenv("QMTIK_THREADS", value)
    with pytest.raises(qmtik.ConfigError) as caught:
        fw.set_threads(strict=True)
    assert str(caught.value) == (
        f"environment variable QMTIK_THREADS: got {value!r}; allowed: an integer from 1 to 256"
    )
