"""The numpy backend's window kernels (backends/windows.py) against the spec (intref_windows.py),
exactly, at the extremes: all codes -128 and 127, weights of +-127, biases at their limits,
extreme multipliers and shifts, every activation, stride 2, 'same' and explicit padding,
fan-ins on both sides of float32's exactness, ties of the average; and the onnx backend's
refusal (auto picks numpy)."""

import dataclasses

import numpy as np
import pytest

from qmtik import backends, intref, spatial
from qmtik import intref_windows as iw
from qmtik.backends import numpy as numpy_backend
from qmtik.backends import onnx, windows
from qmtik.errors import ConfigError
from test_backends import ACTIVATIONS, extreme_layer


def window_layer(dense, cls, input_shape, kernel, stride=1, padding="valid"):
    """dense's fields (from test_backends.extreme_layer) as a window layer of cls."""
    fields = {f.name: getattr(dense, f.name) for f in dataclasses.fields(dense)}
    kernel, stride = spatial.pair(kernel, "kernel"), spatial.pair(stride, "stride")
    pads = spatial.resolve_padding(padding, input_shape[:2], kernel, stride)
    return cls(**fields, input_shape=input_shape, kernel=kernel, stride=stride, pads=pads)


def extreme_grid(rng, n, inputs):
    """n samples: all -128, all 127, then codes from the ends and the middle."""
    codes = rng.choice([-128, 127, 0, -1, 1, 126, -127], size=(n, inputs))
    codes[0], codes[1 % n] = -128, 127
    return codes.astype(np.int8)


def check(layers, codes):
    """The numpy backend's scores equal the spec's, and each window kernel alone equals its layer."""
    expected = intref.reference_scores(layers, codes)
    np.testing.assert_array_equal(backends.prepare("numpy", layers)(codes), expected)
    kernel = numpy_backend.prepare(layers[0])
    np.testing.assert_array_equal(kernel(codes.astype(kernel.dtype)), intref.layer_forward(codes, layers[0]))
    return expected


CONVS = [  # input_shape, kernel, stride, padding
    ((5, 6, 3), (3, 3), 1, "same"),
    ((7, 5, 2), (3, 2), 2, [1, 0, 2, 1]),  # stride 2, explicit, asymmetric
    ((6, 6, 2), (3, 3), 2, "same"),  # TensorFlow's extra pad at the bottom and right
    ((1, 9, 4), (1, 3), (1, 2), "valid"),  # conv1d
    ((4, 3, 5), (1, 1), 1, "valid"),  # pointwise: im2col is a reshape
    ((3, 3, 115), (3, 3), 1, [1, 1, 1, 1]),  # fan-in 1035: float64 products
]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape, kernel, stride, padding", CONVS)
def test_conv_kernel_equals_the_spec(shape, kernel, stride, padding, activation):
    rng = np.random.default_rng([len(shape), kernel[0], kernel[1], shape[2], ACTIVATIONS.index(activation)])
    in_zero = int(rng.choice([-128, 0, 127, 5]))  # the padding's value
    fan_in = kernel[0] * kernel[1] * shape[2]
    layer = window_layer(
        extreme_layer(rng, fan_in, 6, activation, in_zero), iw.ConvLayer, shape, kernel, stride, padding
    )
    check([layer], extreme_grid(rng, 9, layer.inputs))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape, kernel, stride, padding", CONVS[:4])
def test_depthwise_kernel_equals_the_spec(shape, kernel, stride, padding, activation):
    rng = np.random.default_rng([shape[0], kernel[1], ACTIVATIONS.index(activation), 7])
    in_zero = int(rng.choice([-128, 0, 127, -3]))
    dense = extreme_layer(rng, kernel[0] * kernel[1], shape[2], activation, in_zero)
    layer = window_layer(dense, iw.DepthwiseLayer, shape, kernel, stride, padding)
    check([layer], extreme_grid(rng, 9, layer.inputs))


def test_depthwise_with_a_window_beyond_float32():
    """A 33x33 window: fan-in 1089, the products summed in float64."""
    rng = np.random.default_rng(33)
    layer = window_layer(extreme_layer(rng, 1089, 2, "relu"), iw.DepthwiseLayer, (33, 33, 2), (33, 33))
    assert numpy_backend.prepare(layer).dtype == np.float64
    check([layer], extreme_grid(rng, 4, layer.inputs))


POOLS = [  # kind, input_shape, size, stride, padding
    ("max_pool", (4, 6, 3), 2, None, "valid"),
    ("max_pool", (5, 5, 2), 3, 2, "same"),
    ("max_pool", (5, 4, 2), (2, 3), (1, 2), [1, 0, 0, 2]),
    ("max_pool", (1, 9, 3), (1, 3), (1, 3), "valid"),
    ("avg_pool", (4, 6, 3), 2, None, "valid"),
    ("avg_pool", (5, 5, 2), (3, 2), 1, "valid"),
    ("avg_pool", (6, 6, 1), 3, 3, "valid"),  # count 9: no ties, only nearest
    ("global_avg_pool", (5, 7, 3), None, None, "valid"),
    ("global_avg_pool", (2, 2, 4), None, None, "valid"),  # count 4: many ties
]


@pytest.mark.parametrize("kind, shape, size, stride, padding", POOLS)
def test_pool_kernel_equals_the_spec(kind, shape, size, stride, padding):
    rng = np.random.default_rng([POOLS.index((kind, shape, size, stride, padding))])
    layer = iw.build_pool(kind, shape, 0.1, -7, size, stride, padding)
    codes = extreme_grid(rng, 40, layer.inputs)
    codes[2:20] = rng.choice([-2, -1, 1, 2, 3], size=(18, layer.inputs))  # small sums: ties of the average
    expected = check([layer], codes)
    assert expected.min() >= -128 and expected.max() <= 127


def test_the_average_ties_are_away_from_zero_in_both_forms():
    totals = np.array([-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 8388608, -8388608])
    expected = [-2, -1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 1, 2, 2097152, -2097152]  # / 4: -1.5 -> -2, 0.5 -> 1
    np.testing.assert_array_equal(iw.divide_half_away(totals, 4), expected)
    np.testing.assert_array_equal(windows.divide_half_away(totals.astype(np.float32), 4), expected)


def test_a_global_pool_of_65536_codes():
    layer = iw.build_pool("global_avg_pool", (256, 256, 1), 0.1, 0)
    codes = np.full((3, 65536), -128, np.int8)
    codes[1], codes[2, ::2] = 127, 127  # the average of -128 and 127 halves: -0.5 -> -1
    np.testing.assert_array_equal(check([layer], codes), [[-128], [127], [-1]])


def small_cnn(rng, activation="relu"):
    """6x6x2 -> conv 3x3 same (8) -> max pool 2 -> depthwise 2x2 -> avg pool... -> dense 5."""
    conv = window_layer(extreme_layer(rng, 18, 8, activation, -128), iw.ConvLayer, (6, 6, 2), 3, 1, "same")
    pool = iw.build_pool("max_pool", (6, 6, 8), conv.output_scale, conv.output_offset, 2)
    depthwise = window_layer(extreme_layer(rng, 4, 8, "relu", pool.output_offset), iw.DepthwiseLayer, (3, 3, 8), 2)
    average = iw.build_pool("global_avg_pool", (2, 2, 8), depthwise.output_scale, depthwise.output_offset)
    return [conv, pool, depthwise, average, extreme_layer(rng, 8, 5, "linear", average.output_offset)]


@pytest.mark.parametrize("n", [1, 64, 65, 130, 300])  # the small path, passes of WINDOW_ROWS
def test_a_cnn_equals_the_spec_for_every_batch_size(n):
    rng = np.random.default_rng(n)
    layers = small_cnn(rng)
    codes = extreme_grid(rng, n, layers[0].inputs)
    np.testing.assert_array_equal(backends.prepare("numpy", layers)(codes), intref.reference_scores(layers, codes))


def test_onnx_computes_dense_layers_only_and_auto_picks_numpy():
    layers = small_cnn(np.random.default_rng(1))
    assert onnx.unsupported(layers) == "backend 'onnx' computes dense layers only, and layer 1 is a conv2d layer"
    assert onnx.unsupported(layers[-1:]) is None
    assert backends.choose("auto", 1000, layers) == "numpy"
    with pytest.raises(ConfigError, match=r"^backend 'onnx' (computes dense layers only|needs|is turned off)"):
        backends.choose("onnx", 1000, layers)
    with pytest.raises(ConfigError, match=r"layer 1 is a conv2d layer \(choose backend 'numpy' or 'auto'\)$"):
        onnx.Int8Network(layers)
