"""A QuantizedModel of window layers (intref_windows.py): its chain of flat sizes, its scores
through every backend that computes them, its description; its .qmt file (the records:
tests/test_qmtfile_windows.py); and its C header's arena (the kernels: test_export_c_windows.py)."""

import numpy as np
import pytest

from qmtik import intref
from qmtik import intref_windows as iw
from qmtik import quantization as q
from qmtik.errors import ConfigError, ExportError, QuantizationError
from qmtik.export_c import export_c, save_header
from qmtik.integer_model import QuantizedModel, memory_needs, model_problem
from qmtik.qmtfile import encode, save_model


def cnn_layers(seed=0, channels=4):
    """6x6x1 -> conv 3x3 same, relu (6x6xchannels) -> max pool 2 (3x3) -> dense 3, built from
    float-side values as training builds them (per-channel weight scales, the bias folded)."""
    rng = np.random.default_rng(seed)
    in_scale, in_zero = 1 / 255, -128
    weights = rng.integers(-127, 128, size=(channels, 9)).astype(np.int8)
    scales = rng.uniform(0.005, 0.02, size=channels)
    bias = q.quantize_bias(rng.normal(0, 0.1, channels), in_scale, in_zero, weights, scales)
    conv = iw.build_conv(
        weights, bias, scales, in_scale, in_zero, "relu", 0.05, -128, input_shape=(6, 6, 1), kernel=3, padding="same"
    )
    pool = iw.build_pool("max_pool", conv.output_shape, conv.output_scale, conv.output_offset, size=2)
    dense_w = rng.integers(-127, 128, size=(3, pool.outputs)).astype(np.int8)
    dense_s = np.full(3, 0.01)
    dense_b = q.quantize_bias(np.zeros(3), 0.05, -128, dense_w, dense_s)
    dense = intref.build_layer(dense_w, dense_b, dense_s, 0.05, -128, "linear", 0.2, 0)
    return [conv, pool, dense]


def cnn(**kw):
    return QuantizedModel("classification", "softmax", (0.0, 1.0), cnn_layers(**kw), ("a", "b", "c"))


@pytest.mark.parametrize("n", [1, 65, 200])
def test_a_cnn_model_scores_as_the_spec_through_its_backends(n):
    model = cnn()
    assert (model.inputs, model.outputs, model.widths) == (36, 3, (36, 144, 36, 3))
    x = np.random.default_rng(n).uniform(0, 1, size=(n, 36))
    codes = model.quantize_inputs(x)
    expected = intref.reference_scores(model.layers, codes)
    for backend in ("reference", "numpy", "auto"):
        model.backend = backend
        np.testing.assert_array_equal(model.scores(codes), expected)
    assert set(model.predict(x)) <= {"a", "b", "c"}
    np.testing.assert_allclose(model.predict_proba(x).sum(axis=1), 1, rtol=1e-6)


def test_onnx_asked_for_by_name_is_refused_for_a_cnn():
    model = cnn()
    model.backend = "onnx"
    with pytest.raises(ConfigError, match="^backend 'onnx' "):
        model.scores(np.zeros((100, 36), np.int8))


def test_a_model_checks_the_chain_of_flat_sizes():
    conv, pool, dense = cnn_layers()
    with pytest.raises(QuantizationError, match="^integer model: layer 2 has 144 inputs, but layer 1 has 36 outputs$"):
        QuantizedModel("classification", "softmax", (0.0, 1.0), [pool, pool, dense])
    with pytest.raises(QuantizationError, match="^integer model: layer 3 has 36 inputs, but layer 2 has 144 outputs$"):
        QuantizedModel("classification", "softmax", (0.0, 1.0), [conv, conv_like(conv), dense])
    assert model_problem((0.0, 1.0), [conv, pool, dense], iw.KINDS + ("dense",), inputs=36) is None
    assert model_problem((0.0, 1.0), [conv, pool, dense], iw.KINDS + ("dense",), inputs=35) == (
        "layer 1 has 36 inputs, but the model has 35"
    )


def conv_like(conv):
    """A 1x1 conv2d reading conv's 6x6x4 output: 144 codes in, 144 out."""
    c = conv.channels
    return iw.ConvLayer(
        weights=np.eye(c, dtype=np.int8),
        bias=np.zeros(c, np.int64),
        output_multiplier=np.full(c, 2**21),
        output_shift=np.full(c, 21),
        activation="relu",
        input_scale=conv.output_scale,
        input_zero_point=conv.output_offset,
        weight_scales=np.ones(c),
        output_scale=conv.output_scale,
        output_offset=conv.output_offset,
        input_shape=conv.output_shape,
        kernel=(1, 1),
    )


def test_a_cnn_model_describes_its_windows():
    text = cnn().info()
    assert "layer 1: conv2d 3x3 stride 1x1 pads (1, 1, 1, 1): 6x6x1 -> 6x6x4" in text
    assert "  9 -> 4 relu; weight scale per channel" in text
    assert "layer 2: max_pool 2x2 stride 2x2 pads (0, 0, 0, 0): 6x6x4 -> 3x3x4" in text
    assert "  scale 0.05, zero point -128 (the input's)" in text
    assert "layer 3: 36 -> 3 linear" in text
    assert "parameters: 151 " in text  # 36 + 4 conv, 108 + 3 dense


def test_the_file_holds_window_layers_and_the_header_exports_them(tmp_path):
    """The .qmt records of the window kinds: tests/test_qmtfile_windows.py; the header's
    kernels, compiled and compared with the spec: tests/test_export_c_windows.py."""
    model = cnn()
    save_model(tmp_path / "m.qmt", model)
    assert (tmp_path / "m.qmt").read_bytes() == encode(model)
    text = save_header(tmp_path / "m.h", model, "m")
    assert text == export_c(model, "m") == (tmp_path / "m.h").read_text()
    assert "static void m__l0(const int8_t *in, int8_t *out)" in text  # the conv2d kernel, the pool fused in
    assert ",\n   fused with max_pool 2x2, stride 2x2, pads 0 0 0 0: 6x6x4 -> 3x3x4." in text
    assert "#define M_ARENA_BYTES 72\n" in text  # the conv's 36 in + the pool's 36 out (unfused: 36 + 144)
    assert memory_needs(model)["arena"] == 72
    assert "arena 72 bytes (the input included)" in model.info()


def test_a_layer_the_export_has_no_kernel_for_is_refused_in_one_line(monkeypatch):
    from qmtik import export_c as ex

    monkeypatch.delitem(ex.LAYER_KINDS, "max_pool")
    with pytest.raises(ExportError, match="^layer 2 is a max_pool layer, which the C export has no kernel for$"):
        export_c(cnn())
