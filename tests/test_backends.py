"""Every registered backend against the spec (intref.reference_scores), exactly, at the extremes;
how a model chooses its backend; training's step kernel against the spec.

The equality tests are parametrized over backends.BACKENDS: registering a backend tests it.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qmtik
from qmtik import backends, intref
from qmtik import quantization as q
from qmtik.backends import onnx
from qmtik.backends.numpy import LayerKernel
from qmtik.integer_model import QuantizedModel

ACTIVATIONS = intref.ACTIVATIONS  # linear, relu, leaky_relu, sigmoid, tanh
MULTIPLIERS = [0, 1, 2**21, 2**22 - 1]  # with shifts 0 and 62 among the others below
SHIFTS = [0, 62, 1, 44, 45, 22, 31]


@pytest.fixture(params=list(backends.BACKENDS))
def backend(request):
    """Each registered backend's name (skipped, saying why, where it cannot run)."""
    name = request.param
    if name in backends.AVAILABLE and not backends.AVAILABLE[name]():
        pytest.skip(backends.unavailable(name))
    return name


def run(name, layers, codes):
    return backends.prepare(name, layers)(codes)


def extreme_requant(rng, outputs, fusable=False):
    """Multipliers and shifts at their ends (every multiplier with shift 0 and 62 among others;
    a zero multiplier has shift 0); fusable: shifts 1..44 only (the onnx graph's relus)."""
    pairs = [
        (m, s) for m in MULTIPLIERS for s in SHIFTS if (m > 0 or s == 0) and (not fusable or 1 <= s <= 44 or m == 0)
    ]
    chosen = [pairs[i % len(pairs)] for i in range(outputs)]
    order = rng.permutation(outputs)
    multiplier = np.array([chosen[i][0] for i in order], np.int64)
    return multiplier, np.array([chosen[i][1] for i in order], np.int64)


def extreme_layer(rng, fan_in, fan_out, activation, in_zero=-128, out_zero=None, fusable=False):
    """A valid layer with weights of +-127, 0, +-1 (whole rows of 127 and of -127 too), biases
    at +-bias_limit and 0, extreme multipliers and shifts, output offsets at -128, 0 or 127."""
    weights = rng.choice([-127, 127, 0, 1, -1], size=(fan_out, fan_in)).astype(np.int8)
    weights[0], weights[1 % fan_out] = 127, -127
    limit = q.bias_limit(fan_in)
    bias = rng.choice([-limit, limit, 0, int(rng.integers(-limit, limit))], size=fan_out).astype(np.int64)
    multiplier, shift = extreme_requant(rng, fan_out, fusable)
    negative, table, table_scale = (None, None), None, None
    out_scale = 0.05
    if out_zero is None:
        out_zero = int(rng.choice([-128, 0, 127]))
    if activation == "leaky_relu":
        negative = extreme_requant(rng, fan_out)
    if activation in q.TABLE_ACTIVATIONS:
        table_scale = 0.03
        table = q.activation_table(activation, table_scale)
        out_scale, out_zero = q.table_output_params(activation)
    return intref.IntegerLayer(
        weights,
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
        table,
        table_scale,
    )


def extreme_chain(rng, fan_in, activation):
    """fan_in -> 24 (activation) -> 16 (relu the onnx graph requantizes) -> 7 (linear)."""
    first = extreme_layer(rng, fan_in, 24, activation)
    middle = extreme_layer(rng, 24, 16, "relu", first.output_offset, fusable=True)
    assert onnx._fusable(middle)  # so the graph's own requantization is tested
    return [first, middle, extreme_layer(rng, 16, 7, "linear", middle.output_offset)]


def extreme_codes(rng, n, layer):
    """n rows: all -128, all 127, then the codes that drive each of the first outputs to its
    largest and smallest accumulator, then random extreme codes."""
    rows = [np.full(layer.inputs, -128), np.full(layer.inputs, 127)]
    for w in layer.weights[:8]:
        rows += [np.where(w > 0, 127, -128), np.where(w > 0, -128, 127)]
    codes = rng.choice([-128, 127, 0, -1, 1], size=(n, layer.inputs))
    codes[: min(n, len(rows))] = rows[:n]
    return codes.astype(np.int8)


# --- every backend equals the spec --------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("fan_in", [1, 1032, 1033])  # float32 sums are exact up to 1032
def test_every_backend_equals_the_spec_at_the_extremes(backend, activation, fan_in):
    rng = np.random.default_rng([fan_in, ACTIVATIONS.index(activation)])
    layers = extreme_chain(rng, fan_in, activation)
    codes = extreme_codes(rng, 70, layers[0])
    np.testing.assert_array_equal(run(backend, layers, codes), intref.reference_scores(layers, codes))


@pytest.mark.parametrize("n", [1, 64, 65, 1025])  # numpy's small path, its passes, onnx's runs
def test_every_backend_equals_the_spec_for_every_batch_size(backend, n):
    rng = np.random.default_rng(n)
    layers, zero = [], -128
    for fan_in, fan_out, kind in zip([1033, 40, 30, 20, 12], [40, 30, 20, 12, 5], ACTIVATIONS[1:] + ("linear",)):
        layers.append(extreme_layer(rng, fan_in, fan_out, kind, zero, fusable=kind == "relu"))
        zero = layers[-1].output_offset
    codes = extreme_codes(rng, n, layers[0])
    got = run(backend, layers, codes)
    assert got.dtype == np.int8 and got.shape == (n, 5)
    np.testing.assert_array_equal(got, intref.reference_scores(layers, codes))


def test_ties_round_away_from_zero_in_every_backend(backend):
    # multiplier 2**21 / 2**22 = 0.5: accumulators 1, 3, -1, -3 are the ties 0.5, 1.5, -0.5, -1.5
    acc = np.array([1, 3, -1, -3, 5, -5])
    layer = intref.IntegerLayer(
        np.ones((6, 1), np.int8), acc - 1, np.full(6, 2**21), np.full(6, 22), "linear", 1.0, 0, np.ones(6), 1.0, 0
    )
    np.testing.assert_array_equal(run(backend, [layer], np.ones((2, 1), np.int8)), [[1, 2, -1, -2, 3, -3]] * 2)


@pytest.mark.parametrize(
    "shift, multiplier, acc, exact, fold",
    [
        (47, 2796203, 25165821, 0, "0.5 + z"),  # numpy's relu fold (shifts <= FOLD_SHIFT) would give 1
        (46, 3538191, 49720849, 2, "128.5 + z"),  # onnx's in-graph fold (shifts 1..FOLD_SHIFT) would give 3
    ],
)
def test_relus_beyond_the_fold_shift_round_exactly_in_every_backend(backend, shift, multiplier, acc, exact, fold):
    """acc * multiplier / 2**shift lies 2**-shift below a half: folding the constant into the
    float64 offset at this shift rounds the sum up a step. Every backend must give the spec's value."""
    constant = {"0.5 + z": 64.5, "128.5 + z": 192.5}[fold]
    folded = np.floor(acc * (multiplier * 2.0**-shift) + constant) - (constant - 0.5)
    assert folded == exact + 1  # the case is sharp: a fold here is wrong
    relu = intref.IntegerLayer(
        np.ones((1, 1), np.int8),
        np.array([acc]),
        np.array([multiplier]),
        np.array([shift]),
        "relu",
        1.0,
        0,
        np.ones(1),
        1.0,
        64,
    )
    codes = np.zeros((2, 1), np.int8)
    assert intref.reference_scores([relu], codes)[0, 0] == 64 + exact
    np.testing.assert_array_equal(run(backend, [relu, read_out(relu)], codes), [[64 + exact]] * 2)


def read_out(layer):
    """A layer that passes its input codes through unchanged (weights 1, multiplier 1): behind
    `layer`, it makes the onnx backend requantize a relu in its graph."""
    n = layer.outputs
    return intref.IntegerLayer(
        np.eye(n, dtype=np.int8),
        np.zeros(n, np.int64),
        np.full(n, 2**21),
        np.full(n, 21),
        "linear",
        1.0,
        layer.output_offset,
        np.ones(n),
        1.0,
        0,
    )


@settings(max_examples=100, deadline=None)
@given(
    acc=st.lists(st.integers(-(2**30) + 128, 2**30 - 128), min_size=1, max_size=8),
    multiplier=st.integers(0, 2**22 - 1),
    shift=st.integers(0, 62),
    zero=st.integers(-128, 127),
    activation=st.sampled_from(ACTIVATIONS),
    table_scale=st.floats(1e-3, 1.0),
)
def test_every_backend_equals_the_spec_for_any_accumulator(acc, multiplier, shift, zero, activation, table_scale):
    """Every accumulator a 1-input layer reaches (|bias| <= bias_limit(1), |product| <= 127**2),
    every multiplier and shift, every output offset: the same integers in every backend."""
    acc = np.array(acc, dtype=np.int64)
    n = len(acc)
    # one input of code 127, weight +-127 by the sign of acc: the accumulator is the bias +- 16129
    weights = np.where(acc < 0, -127, 127).astype(np.int8)[:, None]
    shift = shift if multiplier else 0  # a zero multiplier has shift 0
    negative, table, out_scale = (None, None), (None, None), 1.0
    if activation == "leaky_relu":
        negative = np.full(n, multiplier // 3), np.full(n, min(shift + 1, 62) if multiplier // 3 else 0)
    if activation in q.TABLE_ACTIVATIONS:
        table = q.activation_table(activation, table_scale), table_scale
        out_scale, zero = q.table_output_params(activation)
    layer = intref.IntegerLayer(
        weights,
        acc - 127 * weights[:, 0].astype(np.int64),
        np.full(n, multiplier),
        np.full(n, shift),
        activation,
        1.0,
        0,
        np.ones(n),
        out_scale,
        zero,
        *negative,
        *table,
    )
    layers, codes = [layer, read_out(layer)], np.full((1, 1), 127, np.int8)
    want = intref.activate(acc[None, :], layer)  # the spec's own steps, from the accumulator
    np.testing.assert_array_equal(intref.reference_scores(layers, codes), want)
    for name in backends.BACKENDS:  # hypothesis runs once for all of them
        if name not in backends.AVAILABLE or backends.AVAILABLE[name]():
            np.testing.assert_array_equal(run(name, layers, codes), want, err_msg=name)


# --- training's step kernel, from raw arrays ----------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("fan_in", [1, 1033])
def test_the_kernel_training_builds_from_raw_arrays_equals_the_spec(activation, fan_in):
    """Training skips the validated layer: LayerKernel.from_arrays on the arrays as
    intref.layer_fields gives them, with training's own transposed weights."""
    rng = np.random.default_rng(fan_in)
    weights = rng.choice([-127, 127, 0, 1, -1], size=(13, fan_in)).astype(np.int8)
    limit = q.bias_limit(fan_in)
    bias = rng.choice([-limit, limit, 0], size=13).astype(np.int64)
    table_scale = 0.04 if activation in q.TABLE_ACTIVATIONS else None
    out_scale, out_zero = q.table_output_params(activation) if table_scale else (0.001, 3)
    fields = intref.layer_fields(
        weights, bias, np.geomspace(1e-6, 1e3, 13), 0.02, -5, activation, out_scale, out_zero, table_scale, 0.01
    )
    weight_t = weights.T.astype(q.accumulator_dtype(fan_in))
    kernel = LayerKernel.from_arrays(
        fields["weights"],
        fields["bias"],
        fields["output_multiplier"],
        fields["output_shift"],
        activation,
        out_zero,
        fields["negative_multiplier"],
        fields["negative_shift"],
        fields["table"],
        weight_t=weight_t,
    )
    codes = extreme_codes(rng, 40, intref.IntegerLayer(**fields))
    got = kernel.requantize(codes.astype(weight_t.dtype) @ weight_t)
    np.testing.assert_array_equal(got, intref.layer_forward(codes, intref.IntegerLayer(**fields)))


# --- choosing a backend -------------------------------------------------------------------------


def small_model(**kwargs):
    rng = np.random.default_rng(3)
    first = extreme_layer(rng, 6, 5, "relu")
    return QuantizedModel(
        "classification",
        "softmax",
        (0.0, 1.0),
        [first, extreme_layer(rng, 5, 3, "linear", first.output_offset)],
        **kwargs,
    )


@pytest.mark.parametrize("name", ["reference", "numpy"])
def test_a_model_computes_with_the_backend_it_names(name):
    model = small_model(backend=name)
    codes = np.random.default_rng(0).integers(-128, 128, size=(300, 6)).astype(np.int8)
    np.testing.assert_array_equal(model.scores(codes), intref.reference_scores(model.layers, codes))
    assert list(model._prepared) == [name]
    model.backend = "auto" if name == "reference" else "reference"  # chosen again at any time
    np.testing.assert_array_equal(model.scores(codes[:3]), intref.reference_scores(model.layers, codes[:3]))
    assert len(model._prepared) == 2


def test_the_environment_sets_the_default_backend(monkeypatch):
    monkeypatch.setenv(backends.ENV, "reference")
    model = small_model()
    model.scores(np.zeros((100, 6), np.int8))
    assert list(model._prepared) == ["reference"]
    small_model(backend="numpy").scores(np.zeros((1, 6), np.int8))  # a named backend wins
    monkeypatch.setenv(backends.ENV, "fastest")
    with pytest.raises(qmtik.ConfigError, match=r"^QMTIK_BACKEND 'fastest': allowed auto, reference, numpy, onnx$"):
        model.scores(np.zeros((1, 6), np.int8))


def test_an_unknown_backend_is_refused_in_one_line_listing_the_allowed_ones():
    with pytest.raises(qmtik.ConfigError, match=r"^backend 'fast': allowed auto, reference, numpy, onnx$"):
        small_model(backend="fast")
    model = small_model()
    model.backend = "c"
    with pytest.raises(qmtik.ConfigError, match=r"^backend 'c': allowed auto, reference, numpy, onnx$"):
        model.scores(np.zeros((1, 6), np.int8))


def test_onnx_asked_for_without_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    monkeypatch.setattr(onnx, "_probe_result", None)
    model = small_model(backend="onnx")
    with pytest.raises(qmtik.ConfigError) as info:
        model.scores(np.zeros((1, 6), np.int8))
    message = str(info.value)
    assert message.startswith("backend 'onnx' needs onnxruntime") and "pip install 'qmtik[fast]'" in message
    assert "\n" not in message
    model.backend = None  # auto: numpy computes
    np.testing.assert_array_equal(
        model.scores(np.zeros((100, 6), np.int8)), intref.reference_scores(model.layers, np.zeros((100, 6), np.int8))
    )


def test_onnx_asked_for_while_turned_off_says_so(monkeypatch):
    monkeypatch.setenv(onnx.ENV, "0")
    with pytest.raises(
        qmtik.ConfigError, match=r"^backend 'onnx' is turned off by QMTIK_INT8_GEMM=0 in the environment$"
    ):
        small_model(backend="onnx").scores(np.zeros((1, 6), np.int8))


def test_codes_of_other_integer_types_are_checked_not_wrapped():
    model = small_model(backend="numpy")
    codes = np.random.default_rng(1).integers(-128, 128, size=(9, 6))
    np.testing.assert_array_equal(model.scores(codes), model.scores(codes.astype(np.int8)))
    with pytest.raises(qmtik.DataError, match=r"^input codes: values -\d+\.\.128, expected -128\.\.127$"):
        model.scores(np.vstack([codes, np.full((1, 6), 128)]))
    with pytest.raises(qmtik.DataError, match=r"^input codes: dtype float64, expected integers in -128\.\.127$"):
        model.scores(codes.astype(np.float64))
