"""Post-training quantization: each observer's ranges from calibration data, the integer model they
make, and the refusal of a float network that has none."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the float networks here are imported from ONNX (the [onnx] extra)")

import qmtik  # noqa: E402
from qmtik import quantization as q  # noqa: E402
from qmtik.calibrate import OBSERVERS, calibrate, choose_range, needs_calibration, quantization_error  # noqa: E402
from qmtik.onnx_import import float_layers, import_onnx  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture
def cnn():
    return import_onnx(DATA / "onnx_cnn.onnx", (0, 1))


def inputs(n=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 7 * 6 * 2)).astype(np.float32)


def test_minmax_takes_the_extremes_of_each_layer_output(cnn):
    x = inputs()
    calibrate(cnn, x, "minmax")
    assert not needs_calibration(cnn)
    codes = cnn.input_codes(x)  # the float network sees the int8 input codes, as in training
    seen = float_layers(cnn, q.INPUT_SCALE * (codes.astype(np.float64) - q.INPUT_ZERO))
    first = cnn.layers_[0]
    assert first.activation == "relu"
    np.testing.assert_allclose(first.observed, [seen[0].min(), seen[0].max()], rtol=1e-5, atol=1e-6)
    depthwise = cnn.layers_[2]  # tanh: the range of its pre-activation, which the table takes
    assert depthwise.activation == "tanh" and depthwise.observed[0] < -0.0 < depthwise.observed[1]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_every_observer_makes_an_integer_model_close_to_the_float_one(cnn, observer):
    x = inputs(200)
    calibrate(cnn, x, observer, samples=100)
    model = cnn.quantize()
    floats = float_layers(cnn, x)[-1]
    scores = model.decision_function(x)
    assert np.corrcoef(floats.ravel(), scores.ravel())[0, 1] > 0.99
    assert (floats.argmax(1) == scores.argmax(1)).mean() > 0.9


def test_percentile_and_mse_ranges_lie_within_the_extremes():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 1, 100_000), [40.0]])  # one far outlier
    extremes = (float(values.min()), float(values.max()))
    assert choose_range(values, extremes, "minmax") == extremes
    low, high = choose_range(values, extremes, "percentile")
    assert extremes[0] < low < high < 5  # the outlier clipped
    tailed = rng.laplace(0, 1, 100_000)  # a heavy tail: mse clips it, where the error is least
    ends = (float(tailed.min()), float(tailed.max()))
    low, high = choose_range(tailed, ends, "mse")
    assert ends[0] < low < high < ends[1]
    assert quantization_error(tailed, low, high) < quantization_error(tailed, *ends)


def test_an_unknown_observer_is_refused(cnn):
    with pytest.raises(qmtik.UsageError, match="observer 'median': allowed minmax, percentile, mse"):
        calibrate(cnn, inputs(), "median")


def test_calibrating_with_no_samples_is_refused(cnn):
    with pytest.raises(qmtik.DataError, match="no samples"):
        calibrate(cnn, inputs()[:0])


def test_a_calibrated_import_saves_and_loads_with_its_ranges(cnn, tmp_path):
    calibrate(cnn, inputs())
    cnn.save(tmp_path / "c.ckpt.npz")
    again = qmtik.Network.load(tmp_path / "c.ckpt.npz")
    for a, b in zip(cnn.layers_, again.layers_):
        np.testing.assert_array_equal(a.observed, b.observed)
    x = inputs(10, seed=3)
    np.testing.assert_array_equal(
        cnn.quantize().scores(cnn.input_codes(x)), again.quantize().scores(again.input_codes(x))
    )
