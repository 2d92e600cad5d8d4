"""The geometry of windows: padding and output sizes by TensorFlow's and PyTorch's rules, im2col
against a loop over every window, col2im as im2col's adjoint, and the one-line errors."""

import numpy as np
import pytest

from qmtik import ShapeError
from qmtik import spatial as S


def naive_im2col(x, geo, pad_value):
    """One row per output pixel, written out with loops: the oracle."""
    top, bottom, left, right = geo.pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    (kh, kw), (sh, sw), (oh, ow) = geo.kernel, geo.stride, geo.out_hw
    rows = []
    for n in range(x.shape[0]):
        for oy in range(oh):
            for ox in range(ow):
                rows.append(xp[n, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw, :].reshape(-1))
    return np.array(rows)


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    [
        (13, 6, 5, (1, 2)),  # TensorFlow's documented example: out 3, total 3, the extra after
        (4, 3, 2, (0, 1)),  # even input, stride 2: total 1 goes at the bottom/right
        (5, 3, 2, (1, 1)),
        (4, 2, 1, (0, 1)),  # even kernel
        (1, 3, 2, (1, 1)),  # input smaller than the kernel
        (8, 1, 3, (0, 0)),  # the formula's total is -1: no padding
        (28, 3, 2, (0, 1)),
        (28, 3, 1, (1, 1)),
    ],
)
def test_same_padding_follows_tensorflow(size, kernel, stride, expected):
    before, after = S.same_padding(size, kernel, stride)
    assert (before, after) == expected
    assert S.output_size(size, kernel, stride, before, after) == -(-size // stride)


@pytest.mark.parametrize(
    "size, kernel, stride, pad, out",
    [(28, 3, 2, 1, 14), (7, 3, 2, 1, 4), (5, 3, 1, 0, 3), (6, 3, 2, 0, 2), (5, 5, 1, 2, 5), (2, 3, 3, 1, 1)],
)
def test_explicit_padding_follows_pytorch(size, kernel, stride, pad, out):
    """PyTorch: floor((in + 2 p - k) / s) + 1."""
    geo = S.geometry((size, size), kernel, stride, [pad] * 4)
    assert geo.out_hw == (out, out) and geo.pads == (pad,) * 4


def test_valid_same_and_explicit_geometry():
    assert S.geometry((13, 13), 6, 5, "valid").out_hw == (2, 2)  # TensorFlow's documented example
    same = S.geometry((28, 7), (3, 2), (2, 1), "same")
    assert same.pads == (0, 1, 0, 1) and same.out_hw == (14, 7)
    odd = S.geometry((5, 6), (3, 3), (2, 3), [0, 2, 1, 0])  # asymmetric explicit
    assert odd.out_hw == ((5 + 2 - 3) // 2 + 1, (6 + 1 - 3) // 3 + 1) and odd.padded_hw == (7, 7)
    line = S.geometry_1d(10, 4, 3, [2, 1])
    assert line.pads == (0, 0, 2, 1) and line.out_hw == (1, 4)
    assert S.geometry_1d(10, 4, 3, "same").pads == (0, 0, 1, 2)


@pytest.mark.parametrize(
    "args, words",
    [
        (((2, 5), 3, 1, "valid"), "height has a window of 3 larger than its padded input of 2"),
        (((5, 5), 3, 0, "valid"), "height has a stride of 0"),
        (((5, 5), 3, 0, "same"), "stride of 0"),
        (((0, 5), 1, 1, "valid"), "height has an input of size 0"),
        (((5, 5), (3, 0), 1, "valid"), "width has a window of size 0"),
        (((5, 5), 3, 1, "full"), "padding must be 'valid', 'same' or [top, bottom, left, right]"),
        (((5, 5), 3, 1, [1, 1, 1]), "4 integers >= 0"),
        (((5, 5), 3, 1, [1, -1, 1, 1]), "4 integers >= 0"),
        (((5, 5), 2.5, 1, "valid"), "kernel must be an integer or a pair"),
        (((5, 5), 3, True, "valid"), "stride must be an integer or a pair"),
        (((1, 2), 3, 1, [0, 0, 0, 0]), "a 3x3 window of stride 1x1 over a 1x2 input"),
    ],
)
def test_windows_that_do_not_fit_are_one_line_shape_errors(args, words):
    with pytest.raises(ShapeError) as info:
        S.geometry(*args)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_window_problem_is_the_shared_rule():
    assert S.window_problem(5, 3, 1) is None
    assert S.window_problem(2, 3, 1, 0, 1) is None  # padding makes it fit
    assert S.window_problem(2, 3, 1) == "has a window of 3 larger than its padded input of 2"
    with pytest.raises(ShapeError, match="1-D padding"):
        S.geometry_1d(10, 3, 1, [1, 1, 1, 1])


@pytest.mark.parametrize(
    "hw, kernel, stride, padding",
    [
        ((5, 6), (3, 3), (1, 1), "valid"),
        ((5, 6), (3, 2), (2, 2), "same"),
        ((4, 4), (3, 3), (2, 2), "same"),
        ((5, 7), (2, 3), (2, 3), [0, 2, 1, 0]),
        ((3, 3), (1, 1), (1, 1), "valid"),  # the reshape path
        ((4, 5), (1, 1), (2, 1), "valid"),
        ((1, 9), (1, 4), (1, 2), [0, 0, 2, 1]),  # 1-D
    ],
)
def test_im2col_matches_a_loop_and_col2im_is_its_adjoint(hw, kernel, stride, padding):
    rng = np.random.default_rng(1)
    geo = S.geometry(hw, kernel, stride, padding)
    x = rng.standard_normal((2, *hw, 3))
    for pad_value in (0.0, -7.0):
        np.testing.assert_array_equal(S.im2col(x, geo, pad_value), naive_im2col(x, geo, pad_value))
    y = rng.standard_normal(S.im2col(x, geo).shape)
    back = S.col2im(y, geo, 3)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(S.im2col(x, geo) * y), np.sum(x * back), rtol=1e-12)


def test_im2col_of_integer_codes_pads_with_the_zero_point():
    x = np.arange(2 * 2 * 2 * 1, dtype=np.int8).reshape(2, 2, 2, 1)
    geo = S.geometry((2, 2), 2, 1, [1, 0, 1, 0])
    cols = S.im2col(x, geo, -128)
    assert cols.dtype == np.int8
    np.testing.assert_array_equal(cols[0], [-128, -128, -128, 0])
    np.testing.assert_array_equal(cols, naive_im2col(x, geo, -128))


def test_windows_are_a_read_only_view_without_copy():
    x = np.zeros((2, 6, 6, 4), np.float32)
    view = S.windows(x, S.geometry((6, 6), 3, 1))
    assert view.shape == (2, 4, 4, 3, 3, 4) and np.shares_memory(view, x) and not view.flags.writeable


def test_a_batch_of_another_size_is_refused():
    geo = S.geometry((5, 5), 3)
    with pytest.raises(ShapeError, match=r"expected a batch of shape \(n, 5, 5, c\), got \(2, 5, 4, 1\)"):
        S.im2col(np.zeros((2, 5, 4, 1)), geo)
