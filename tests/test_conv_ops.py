"""The spatial layers' float passes: every forward against a direct loop over every output, and
every backward against central differences in float64 (strides, same padding on odd and even
sizes, asymmetric explicit padding, overlapping pools), plus max pooling's ties."""

import numpy as np
import pytest

from qmtik import ShapeError
from qmtik import conv_ops as C
from qmtik import spatial as S


def padded(x, geo, value=0.0):
    top, bottom, left, right = geo.pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def naive_window_op(x, geo, reduce, value=0.0):
    """out[n, oy, ox, ...] = reduce(window of the padded x): a loop over every output pixel."""
    xp, (kh, kw), (sh, sw), (oh, ow) = padded(x, geo, value), geo.kernel, geo.stride, geo.out_hw
    rows = [
        [[reduce(xp[n, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw]) for ox in range(ow)] for oy in range(oh)]
        for n in range(x.shape[0])
    ]
    return np.array(rows)


def numeric_grads(f, arrays, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of every array."""
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        for index in np.ndindex(a.shape):
            keep = a[index]
            a[index] = keep + eps
            up = f()
            a[index] = keep - eps
            down = f()
            a[index] = keep
            g[index] = (up - down) / (2 * eps)
        out.append(g)
    return out


def check_gradients(forward, backward, arrays, seed=0):
    """backward's gradients of the loss sum(forward(*arrays) * r) equal central differences."""
    out, _ = forward(*arrays)
    r = np.random.default_rng(seed).standard_normal(out.shape)
    _, cache = forward(*arrays)
    analytic = backward(r, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    numeric = numeric_grads(lambda: float(np.sum(forward(*arrays)[0] * r)), arrays)
    for a, n in zip(analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-7)


CONV_CASES = [  # (input hw, kernel hw, stride, padding)
    ((5, 6), (3, 3), 1, "valid"),
    ((5, 6), (3, 3), 2, "same"),  # odd height, even width
    ((4, 4), (2, 2), 1, "same"),  # even kernel: the extra pad at the bottom/right
    ((6, 5), (3, 2), (2, 1), "same"),
    ((5, 7), (3, 3), 2, [0, 2, 1, 0]),  # explicit, asymmetric
    ((7, 7), (3, 3), 2, [1, 1, 1, 1]),  # PyTorch's stride-2 padding=1
    ((4, 5), (1, 1), 1, "valid"),  # pointwise
]


def make(rng, *shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("hw, kernel, stride, padding", CONV_CASES)
def test_conv2d_matches_a_loop_and_its_gradients(hw, kernel, stride, padding):
    rng = np.random.default_rng(2)
    x, w, b = make(rng, 2, *hw, 3), make(rng, 4, *kernel, 3), make(rng, 4)
    y, _ = C.conv2d_forward(x, w, b, stride, padding)
    geo = S.geometry(hw, kernel, stride, padding)
    expected = naive_window_op(x, geo, lambda win: np.einsum("ijc,oijc->o", win, w) + b)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    check_gradients(lambda x, w, b: C.conv2d_forward(x, w, b, stride, padding), C.conv2d_backward, [x, w, b])


@pytest.mark.parametrize("padding", ["same", [0, 2, 1, 0]])
def test_conv2d_of_many_input_channels_takes_the_tap_by_tap_backward(padding):
    rng = np.random.default_rng(11)
    x, w, b = make(rng, 1, 4, 5, C.TAP_PRODUCTS_FROM), make(rng, 3, 3, 2, C.TAP_PRODUCTS_FROM), make(rng, 3)
    check_gradients(lambda x, w, b: C.conv2d_forward(x, w, b, 2, padding), C.conv2d_backward, [x, w, b])


def test_conv2d_without_bias_and_in_float32():
    rng = np.random.default_rng(3)
    x, w = make(rng, 2, 6, 6, 2).astype(np.float32), make(rng, 3, 3, 3, 2).astype(np.float32)
    y, cache = C.conv2d_forward(x, w, None, 2, "same")
    assert y.dtype == np.float32 and y.shape == (2, 3, 3, 3)
    d_x, d_w, d_b = C.conv2d_backward(np.ones_like(y), cache)
    assert d_b is None and d_x.dtype == np.float32 and d_w.dtype == np.float32 and d_x.shape == x.shape


@pytest.mark.parametrize("hw, kernel, stride, padding", CONV_CASES)
def test_depthwise_matches_a_loop_and_its_gradients(hw, kernel, stride, padding):
    rng = np.random.default_rng(4)
    x, w, b = make(rng, 2, *hw, 3), make(rng, 3, *kernel), make(rng, 3)
    y, _ = C.depthwise_forward(x, w, b, stride, padding)
    geo = S.geometry(hw, kernel, stride, padding)
    expected = naive_window_op(x, geo, lambda win: np.einsum("ijc,cij->c", win, w) + b)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    check_gradients(lambda x, w, b: C.depthwise_forward(x, w, b, stride, padding), C.depthwise_backward, [x, w, b])


@pytest.mark.parametrize("length, k, stride, padding", [(9, 3, 1, "valid"), (9, 4, 2, "same"), (8, 3, 2, [2, 0])])
def test_conv1d_is_conv2d_of_height_one(length, k, stride, padding):
    rng = np.random.default_rng(5)
    x, w, b = make(rng, 2, length, 3), make(rng, 4, k, 3), make(rng, 4)
    y, _ = C.conv1d_forward(x, w, b, stride, padding)
    geo = S.geometry_1d(length, k, stride, padding)
    expected = naive_window_op(x[:, None], geo, lambda win: np.einsum("jc,ojc->o", win[0], w) + b)[:, 0]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    check_gradients(lambda x, w, b: C.conv1d_forward(x, w, b, stride, padding), C.conv1d_backward, [x, w, b])


POOL_CASES = [  # (input hw, size, stride, padding)
    ((4, 6), 2, None, "valid"),  # non-overlapping
    ((5, 5), 3, 2, "valid"),  # overlapping
    ((5, 7), (2, 3), (1, 2), "valid"),
    ((5, 6), 3, 2, "same"),  # max pooling only
]


@pytest.mark.parametrize("hw, size, stride, padding", POOL_CASES)
def test_max_pool_matches_a_loop_and_its_gradients(hw, size, stride, padding):
    x = np.random.default_rng(6).permutation(2 * hw[0] * hw[1] * 3).reshape(2, *hw, 3) / 7.0  # no ties
    y, _ = C.max_pool_forward(x, size, stride, padding)
    geo = S.geometry(hw, size, size if stride is None else stride, padding)
    np.testing.assert_array_equal(y, naive_window_op(x, geo, lambda win: win.max(axis=(0, 1)), -np.inf))
    check_gradients(lambda x: C.max_pool_forward(x, size, stride, padding), C.max_pool_backward, [x])


@pytest.mark.parametrize("hw, size, stride, padding", POOL_CASES[:3])
def test_avg_pool_matches_a_loop_and_its_gradients(hw, size, stride, padding):
    x = make(np.random.default_rng(7), 2, *hw, 3)
    y, _ = C.avg_pool_forward(x, size, stride, padding)
    geo = S.geometry(hw, size, size if stride is None else stride, padding)
    np.testing.assert_allclose(y, naive_window_op(x, geo, lambda win: win.mean(axis=(0, 1))), rtol=1e-12)
    check_gradients(lambda x: C.avg_pool_forward(x, size, stride, padding), C.avg_pool_backward, [x])


def test_max_pool_ties_send_the_gradient_to_the_first_position_only():
    x = np.array([[1.0, 3.0, 3.0], [3.0, 0.0, 2.0], [3.0, 3.0, 3.0]]).reshape(1, 3, 3, 1)
    y, cache = C.max_pool_forward(x, 2, 1)  # overlapping 2x2 windows, every one a tie of 3s
    np.testing.assert_array_equal(y[0, :, :, 0], [[3, 3], [3, 3]])
    d_x = C.max_pool_backward(np.array([1.0, 10.0, 100.0, 1000.0]).reshape(1, 2, 2, 1), cache)
    # windows' first maxima in row-major order: (0,1), (0,1), (1,0), (2,1)
    np.testing.assert_array_equal(d_x[0, :, :, 0], [[0, 11, 0], [100, 0, 0], [0, 1000, 0]])


def test_average_pooling_takes_same_padding_that_pads_nothing():
    x = np.arange(32.0).reshape(1, 4, 4, 2)
    np.testing.assert_array_equal(C.avg_pool_forward(x, 2, 2, "same")[0], C.avg_pool_forward(x, 2, 2)[0])


def test_one_dimensional_pools():
    rng = np.random.default_rng(8)
    x = make(rng, 2, 9, 3)
    check_gradients(lambda x: C.max_pool1d_forward(x, 3, 2), C.max_pool1d_backward, [x])
    check_gradients(lambda x: C.avg_pool1d_forward(x, 2), C.avg_pool1d_backward, [x])
    y, _ = C.avg_pool1d_forward(x, 2)
    np.testing.assert_allclose(y, (x[:, 0:8:2] + x[:, 1:9:2]) / 2)
    assert C.max_pool1d_forward(x, 4, 2, [1, 2])[0].shape == (2, 5, 3)


def test_global_average_pool_and_flatten():
    rng = np.random.default_rng(9)
    x = make(rng, 2, 3, 4, 5)
    y, shape = C.global_avg_pool_forward(x)
    np.testing.assert_allclose(y, x.mean(axis=(1, 2)))
    check_gradients(C.global_avg_pool_forward, C.global_avg_pool_backward, [x])
    check_gradients(C.global_avg_pool_forward, C.global_avg_pool_backward, [make(rng, 2, 5, 3)])  # 1-D
    flat, shape = C.flatten_forward(x)
    assert flat.shape == (2, 60) and flat[0, 5 * 4 + 5 + 2] == x[0, 1, 1, 2]  # NHWC row-major
    np.testing.assert_array_equal(C.flatten_backward(flat, shape), x)


def test_the_gradient_check_can_fail():
    """A backward pass that flips the kernel (a classic slip) is caught."""
    rng = np.random.default_rng(10)
    x, w, b = make(rng, 1, 4, 4, 2), make(rng, 2, 3, 3, 2), make(rng, 2)

    def flipped(grad, cache):
        d_x, d_w, d_b = C.conv2d_backward(grad, cache)
        return d_x, d_w[:, ::-1, ::-1], d_b

    with pytest.raises(AssertionError):
        check_gradients(lambda x, w, b: C.conv2d_forward(x, w, b, 1, "same"), flipped, [x, w, b])


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: C.conv2d_forward(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 3, 1)), None), r"\(out_c, kh, kw, 2\)"),
        (lambda: C.depthwise_forward(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 3)), None), r"\(2, kh, kw\)"),
        (lambda: C.conv2d_forward(np.zeros((1, 2, 4, 2)), np.zeros((3, 3, 3, 2)), None), "larger than its padded"),
        (lambda: C.avg_pool_forward(np.zeros((1, 4, 4, 2)), 2, 2, [0, 0, 0, 1]), "average pooling takes no padding"),
        (lambda: C.avg_pool_forward(np.zeros((1, 5, 4, 2)), 3, 2, "same"), "average pooling takes no padding"),
        (lambda: C.max_pool_forward(np.zeros((1, 4, 4, 2)), 2, 2, [2, 0, 0, 0]), "without an input element"),
        (lambda: C.conv1d_forward(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 2)), None), r"\(n, length, c\)"),
        (lambda: C.global_avg_pool_forward(np.zeros((2, 3))), "needs a spatial batch"),
    ],
)
def test_shape_errors(call, words):
    with pytest.raises(ShapeError, match=words):
        call()


def test_tiled_max_pool_ties_send_the_gradient_to_the_first_tap_only():
    """Windows that tile the input (stride = size), where int8 codes tie often: each window's
    gradient goes to its first row-major tap that equals its maximum, as with overlapping ones."""
    x = np.array([[3, 3, 1, 2], [3, 0, 2, 2], [5, 5, 7, 7], [5, 5, 7, 7]], np.float64).reshape(1, 4, 4, 1)
    y, cache = C.max_pool_forward(x, 2)
    np.testing.assert_array_equal(y.reshape(2, 2), [[3, 2], [5, 7]])
    d_x = C.max_pool_backward(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1), cache)
    expected = [[1, 0, 0, 2], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(d_x.reshape(4, 4), expected)
