"""The training step's fused loops: the compiled forms equal the NumPy definitions bit for bit,
and both equal the quantization module's own functions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qmtik
from qmtik import fused
from qmtik import quantization as q

BUILT = fused.compiled is not None
NOT_BUILT = pytest.mark.skipif(not BUILT, reason="qmtik._fused did not build")
FORMS = ["numpy", pytest.param("compiled", marks=NOT_BUILT), pytest.param("compiled-narrow", marks=NOT_BUILT)]


@pytest.fixture(params=FORMS)
def form(request, monkeypatch):
    """Run the test with each form of the loops: QMTIK_FUSED=numpy, the compiled module, and
    the compiled module without its AVX2 forms (what a processor without AVX2 runs)."""
    monkeypatch.setenv("QMTIK_FUSED", "numpy" if request.param == "numpy" else "")
    assert fused.using_compiled() == (request.param != "numpy")
    if request.param == "compiled-narrow":
        before = fused.compiled.wide(False)
        yield request.param
        fused.compiled.wide(before)
    else:
        yield request.param


def test_the_compiled_module_builds_where_a_compiler_is():
    """CI installs with gcc present, so the optional module must have built there: a silent
    fallback would leave the compiled loops untested and training slow."""
    import shutil

    if shutil.which("cc") or shutil.which("gcc"):
        assert BUILT, "a C compiler is present but qmtik._fused did not build"


# --- weight codes ----------------------------------------------------------------------------------


def codes_of(weight, scales, limit=q.WMAX):
    """weight_codes' codes for weight (outputs x inputs), checked against its sums."""
    out, scratch = np.empty_like(weight), np.empty_like(weight)
    result, sums = fused.weight_codes(weight, scales.astype(weight.dtype), limit, out, scratch)
    assert result is out
    np.testing.assert_array_equal(sums, out.astype(np.int64).sum(axis=1))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_round_ties_away_from_zero_and_clip(form, dtype):
    """Quotients of exactly k + 0.5 round away from zero, as quantize does; the largest float
    below 0.5 rounds to 0; values beyond 127 clip (-1e30 too, whose quotient is huge)."""
    below = np.nextafter(dtype(0.5), dtype(0))
    w = np.array(
        [
            [0.5, -0.5, 2.5, -2.5, 3.5, -3.5, below, -below, 126.5, -126.5, 127.0, 0.0],
            [1.5, -1.5, 200.0, -1e30, 64.5, 0.25, 0.0, 7.0, -7.5, 8.5, 1.0, -1.0],
        ],
        dtype=dtype,
    )
    scales = np.array([1.0, 1.0])
    expected = q.quantize(w, scales[:, None].astype(dtype), 0, -q.WMAX, q.WMAX)
    np.testing.assert_array_equal(codes_of(w, scales), expected)
    np.testing.assert_array_equal(codes_of(w, scales)[0, :6], [1, -1, 3, -3, 4, -4])
    np.testing.assert_array_equal(codes_of(w, scales)[1, :4], [2, -2, 127, -127])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from([None, 0.001, 0.05]), st.booleans())
def test_codes_equal_quantize_weights(seed, per_channel, fixed, compiled):
    """Random weights, some made exact ties of their scale: the codes of training's buffered
    form equal quantize_weights' (per channel, per tensor, fixed scales that clip)."""
    if compiled and not BUILT:
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QMTIK_FUSED", "" if compiled else "numpy")
        rng = np.random.default_rng(seed)
        w = (rng.standard_normal((7, 33)) * rng.choice([0.01, 0.1, 1.0])).astype(np.float32)
        scales = q.weight_scales(w, per_channel, fixed)
        ties = rng.integers(-127, 127, (7, 33)) + 0.5
        w = np.where(rng.random((7, 33)) < 0.3, (ties * scales[:, None]).astype(np.float32), w)
        scales = q.weight_scales(w, per_channel, fixed)
        codes, _ = q.quantize_weights(w, per_channel, fixed)
        np.testing.assert_array_equal(codes_of(w, scales), codes)
        if fixed is None:  # automatic scales need no clamp
            np.testing.assert_array_equal(codes_of(w, scales, limit=0), codes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unclamped_codes_of_automatic_scales_stay_in_range(form, dtype):
    """Each channel's largest |w| over its automatic scale rounds to exactly +-127 without a
    clamp, across many magnitudes (the scale rounded to the weights' precision)."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((64, 50)) * np.logspace(-12, 30, 64)[:, None]).astype(dtype)
    for per_channel in (True, False):
        scales = q.weight_scales(w, per_channel)
        codes = codes_of(w, scales, limit=0)
        assert codes.max() <= 127 and codes.min() >= -127
        np.testing.assert_array_equal(codes, q.quantize_weights(w, per_channel)[0])
        if per_channel:  # below 1e-8 the scale's floor holds them
            wide = np.abs(w).max(axis=1) >= 1e-8
            np.testing.assert_array_equal(np.abs(codes[wide]).max(axis=1), 127)


@pytest.mark.skipif(not BUILT, reason="qmtik._fused did not build")
@pytest.mark.parametrize("wide", [True, False])
def test_compiled_codes_equal_numpy_codes_bit_for_bit_on_odd_shapes(wide):
    """Shapes of one row or column and odd sizes (vector loops' remainders), signed zeros
    kept, rounding ties, with the AVX2 form (where the processor has it) and without."""
    before = fused.compiled.wide(wide)
    rng = np.random.default_rng(3)
    for rows, cols in [(1, 1), (33, 65), (10, 784), (257, 31)]:
        w = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        w[0, 0] = -0.0
        scales = q.weight_scales(w, True).astype(np.float32)
        w[-1, -1] = -1e-9
        out_c, out_n, scratch = (np.empty((rows, cols), np.float32) for _ in range(3))
        w[0, -1] = 2.5 * scales[0]  # a tie, when float32 holds the product exactly
        w[-1, 0] = -1000.0  # clamped
        codes_c, sums_c = fused.weight_codes(w, scales, q.WMAX, out_c, scratch)
        codes_n, sums_n = fused.weight_codes_numpy(w, scales, q.WMAX, out_n, scratch)
        assert codes_c.tobytes() == codes_n.tobytes()
        np.testing.assert_array_equal(sums_c, sums_n)
    fused.compiled.wide(before)


# --- Adam ----------------------------------------------------------------------------------------


def adam_run(compiled: bool, steps: int = 5, seed: int = 0, scale: float = 1.0):
    """Parameters and moments after a few Adam updates of random gradients."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(1000).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    work, denominator = np.empty_like(p), np.empty_like(p)
    update = fused.adam_update if compiled else fused.adam_update_numpy
    for t in range(1, steps + 1):
        g = (rng.standard_normal(1000) * scale).astype(np.float32)
        g[:10] = [0.0, -0.0, 1e-30, -1e-30, 1e18, -1e18, 1e-45, 3.0, -3.0, 1.0]
        g[10:20] = 0.0  # moments that decay into subnormals
        step = 0.01 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        update(p, g, m, v, 0.9, 0.999, 1e-7, step, work, denominator)
    return p, m, v


@pytest.mark.skipif(not BUILT, reason="qmtik._fused did not build")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_adam_equals_numpy_adam_bit_for_bit(seed, monkeypatch):
    monkeypatch.setenv("QMTIK_FUSED", "")
    for got, expected in zip(adam_run(True, seed=seed), adam_run(False, seed=seed)):
        assert got.tobytes() == expected.tobytes()


def test_adam_overflow_raises_under_errstate_as_numpy_does(form):
    """A gradient whose square overflows float32 raises FloatingPointError inside training's
    np.errstate(over='raise'), whichever form runs; outside it the values are left as they are."""
    p, g = np.ones(4, np.float32), np.full(4, 1e30, np.float32)
    m, v, work, den = (np.zeros(4, np.float32) for _ in range(4))
    with np.errstate(over="raise", invalid="raise"), pytest.raises(FloatingPointError, match="overflow"):
        fused.adam_update(p, g, m, v, 0.9, 0.999, 1e-7, 0.01, work, den)
    p, m, v = np.ones(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        fused.adam_update(p, g, m, v, 0.9, 0.999, 1e-7, 0.01, work, den)
    assert np.isinf(v).all()


def test_training_gives_the_same_model_bits_with_either_form(monkeypatch):
    """The whole point: a model trains to the same bits with or without the compiled loops."""
    if not BUILT:
        pytest.skip("qmtik._fused did not build: there is one form only")
    x, y = qmtik.load_dataset("digits")[0]
    config = qmtik.Config(network=qmtik.NetworkConfig(inputs=64, hidden=[16], outputs=10))
    config = config.replace("training.epochs", 2).replace("training.float_epochs", 0)
    models = []
    for value in ("", "numpy"):
        monkeypatch.setenv("QMTIK_FUSED", value)
        models.append(qmtik.Network(config).fit(x[:600], y[:600]).quantize())
    assert [layer.weights.tobytes() for layer in models[0].layers] == [
        layer.weights.tobytes() for layer in models[1].layers
    ]
    np.testing.assert_array_equal(models[0].predict(x), models[1].predict(x))


def test_dequantized_weights_equal_numpys_product_rounded_once(form):
    """float32(code * float64 scale), as the backward pass has always computed it."""
    rng = np.random.default_rng(5)
    codes = rng.integers(-127, 128, (9, 37)).astype(np.float32)
    scales = rng.random(9) * 10.0 ** rng.integers(-12, 3, 9)
    got = fused.dequantized(codes, scales, np.empty_like(codes))
    assert got.tobytes() == (codes * scales[:, None]).astype(np.float32).tobytes()


@pytest.mark.parametrize("cols", [1, 7, 8, 9, 33, 784])
def test_row_absmax_finds_each_rows_largest_magnitude_and_non_finite_weights(form, cols):
    """Every row length around the compiled loop's 8 lanes; a NaN or an inf anywhere is seen."""
    rng = np.random.default_rng(cols)
    w = rng.standard_normal((5, cols)).astype(np.float32)
    w[1, -1] = -50.0  # the largest magnitude in the last (remainder) position
    absmax, finite = fused.row_absmax(w)
    np.testing.assert_array_equal(absmax, np.abs(w).max(axis=1).astype(np.float64))
    assert finite and absmax[1] == 50.0
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((0, 0), (4, cols - 1), (2, cols // 2)):
            w2 = w.copy()
            w2[where] = bad
            assert not fused.row_absmax(w2)[1]
            with pytest.raises(qmtik.QuantizationError, match="NaN or infinite"):
                q.weight_scales(w2, per_channel=True)


# --- a dense layer's step: pre-activation, requantization, straight-through mask -------------------


def kernel_of(rng, activation, outputs=19, fan_in=40, shift_high=False):
    """The NumPy backend's kernel of a random integer layer (numpy's LayerKernel, as training builds it)."""
    from qmtik import intref
    from qmtik.backends.numpy import LayerKernel

    weights = rng.integers(-127, 128, (outputs, fan_in))
    bias = rng.integers(-(2**20), 2**20, outputs)
    w_scales = rng.random(outputs) * 0.01 + 1e-4
    out_scale = 1e-9 if shift_high else rng.random() * 0.1 + 0.01  # tiny: shifts beyond FOLD_SHIFT
    offset = int(rng.integers(-128, 128)) if activation != "relu" else -128
    fields = intref.layer_fields(weights, bias, w_scales, 1 / 255, -128, activation, out_scale, offset)
    return LayerKernel.from_arrays(**{k: fields[k] for k in (
        "weights", "bias", "output_multiplier", "output_shift", "activation", "output_offset")})  # fmt: skip


@pytest.mark.skipif(not BUILT, reason="qmtik._fused did not build")
@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("width", [7, 19])
def test_compiled_requantize_equals_the_numpy_kernel_bit_for_bit(activation, seed, width, monkeypatch):
    """Random layers and accumulators spanning far past the int8 range, zero points folded into
    the offset and not, exact rounding ties, zero (signed) results: the codes and the mask, by
    the AVX2 loop (with its scalar remainder) and by the portable loop."""
    monkeypatch.setenv("QMTIK_FUSED", "")
    rng = np.random.default_rng(seed)
    kernel = kernel_of(rng, activation, outputs=width, shift_high=seed == 3)
    acc = rng.integers(-(2**24), 2**24, (33, width)).astype(np.float32)
    acc[0] = 0.0
    acc[1] = -0.0
    ties = (np.arange(-130, 130)[:width] + 0.5 - kernel.offset) / kernel.scale  # y = k + 0.5 where exact
    acc[2] = np.where(np.float32(ties) == ties, ties, acc[2]).astype(np.float32)
    value = rng.standard_normal((33, width)).astype(np.float32)
    value[3] = -0.0
    expected = fused.requantize_step_numpy(kernel, acc, value, -0.5, 1.25)
    for wide in (True, False):
        before = fused.compiled.wide(wide)
        rows, outputs = acc.shape
        codes, inside = np.empty_like(acc), np.empty_like(value)
        scale, offset = (
            np.ascontiguousarray(np.broadcast_to(v, outputs), dtype=np.float64) for v in (kernel.scale, kernel.offset)
        )
        fused.compiled.requantize(acc, scale, offset, rows, outputs, activation == "relu", kernel.zero_after,
                                  kernel.floor, value, -0.5, 1.25, codes, inside)  # fmt: skip
        fused.compiled.wide(before)
        assert codes.tobytes() == expected[0].tobytes() and inside.tobytes() == expected[1].tobytes()


@pytest.mark.skipif(not BUILT, reason="qmtik._fused did not build")
@pytest.mark.parametrize("kind", ["relu", "linear"])
@pytest.mark.parametrize("observe_pre", [False, True])
def test_compiled_preactivate_equals_numpy_bit_for_bit(kind, observe_pre, monkeypatch):
    monkeypatch.setenv("QMTIK_FUSED", "")
    rng = np.random.default_rng(11)
    acc = rng.integers(-(2**23), 2**23, (37, 21)).astype(np.float32)
    acc[0, :5] = [0.0, -0.0, 1.0, -1.0, 0.0]
    bias = rng.integers(-(2**29), 2**29, 21)
    bias[:5] = 0
    z_scale = rng.random(21) * 10.0 ** rng.integers(-12, -3, 21)
    got = fused.preactivate(acc, bias, z_scale, kind, 0.01, np.float32, observe_pre)
    expected = fused.preactivate_numpy(acc, bias, z_scale, kind, 0.01, np.float32, observe_pre)
    assert got[0].tobytes() == expected[0].tobytes() and got[1].tobytes() == expected[1].tobytes()
    assert [float(v) for v in got[2]] == [float(v) for v in expected[2]]


def test_preactivate_overflow_raises_under_errstate_as_numpy_does(form):
    acc = np.full((2, 3), 2.0**23, np.float32)
    bias, z_scale = np.zeros(3, np.int64), np.full(3, 1e35)
    with np.errstate(over="raise", invalid="raise"), pytest.raises(FloatingPointError, match="overflow"):
        fused.preactivate(acc, bias, z_scale, "relu", 0.01, np.float32, False)


def test_adam_moments_never_stay_subnormal(form):
    """A weight whose gradient was once non-zero and then always 0: its first moment decays
    by beta1 a step, and would sink through the subnormal floats (slow to compute); it becomes
    0 at the first step it would be subnormal, and the weight stops exactly where it would."""
    p, m, v = np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32)
    work, den = np.empty(3, np.float32), np.empty(3, np.float32)
    fused.adam_update(p, np.full(3, 1e-3, np.float32), m, v, 0.9, 0.999, 1e-8, 1e-3, work, den)
    tiny = np.finfo(np.float32).tiny
    for _ in range(1000):
        fused.adam_update(p, np.zeros(3, np.float32), m, v, 0.9, 0.999, 1e-8, 1e-3, work, den)
        assert not ((np.abs(m) < tiny) & (m != 0)).any() and not ((v < tiny) & (v != 0)).any()
    assert (m == 0).all() and (v > 0).all()
