"""The geometry of convolution and pooling: padding, output sizes, and windows of an NHWC batch.

One definition shared by training (conv_ops.py), the integer spec and the C export, so that a
window means the same thing everywhere. Layout is NHWC (batch, height, width, channels), as in
TensorFlow Lite Micro and CMSIS-NN; a 1-D layer is the 2-D one with height 1.

Padding is one of
- "valid": none; windows that do not fit whole are dropped (out = floor((in - k) / s) + 1);
- "same": TensorFlow's rule, out = ceil(in / s) and
  total = max((out - 1) * s + k - in, 0), top/left = total // 2, the extra one at bottom/right;
- explicit [top, bottom, left, right] (PyTorch's padding=p is [p, p, p, p]), then
  out = floor((in + before + after - k) / s) + 1 as PyTorch computes it.

The padded input is never a float array the integer model could not have: training pads with
0.0, the integer model with the input zero point, which stands for 0.0 (`pad_value`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ShapeError

PADDINGS = ("valid", "same")  # or an explicit [top, bottom, left, right]


@dataclass(frozen=True)
class Geometry:
    """A window op over an NHWC input: kernel, stride, the explicit pads and the output size."""

    in_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    out_hw: tuple[int, int]

    @property
    def padded_hw(self) -> tuple[int, int]:
        top, bottom, left, right = self.pads
        return self.in_hw[0] + top + bottom, self.in_hw[1] + left + right

    def offset_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """Rows and columns of the padded input that kernel tap (i, j) meets, one per output pixel."""
        (sh, sw), (oh, ow) = self.stride, self.out_hw
        return slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw)

    def offsets(self):
        """(i, j, rows, columns) of every kernel tap, in the weights' (kh, kw) order."""
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                yield (i, j, *self.offset_slices(i, j))


def pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints as (height, width): 3 -> (3, 3)."""
    values = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        a, b = values
    except (TypeError, ValueError):
        raise ShapeError(f"{name} must be an integer or a pair of integers, not {value!r}") from None
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ShapeError(f"{name} must be an integer or a pair of integers, not {value!r}")
    return int(a), int(b)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis as (before, after): the extra one goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def window_problem(size: int, kernel: int, stride: int, before: int = 0, after: int = 0) -> str | None:
    """Why a window cannot slide along one axis, or None: the one rule config, spec and file share."""
    if size < 1:
        return f"has an input of size {size}"
    if kernel < 1:
        return f"has a window of size {kernel}"
    if stride < 1:
        return f"has a stride of {stride}"
    if before < 0 or after < 0:
        return f"has a negative padding {before, after}"
    if size + before + after < kernel:
        return f"has a window of {kernel} larger than its padded input of {size + before + after}"
    return None


def output_size(size: int, kernel: int, stride: int, before: int = 0, after: int = 0) -> int:
    """Outputs along one axis with explicit padding: floor((size + pads - kernel) / stride) + 1."""
    problem = window_problem(size, kernel, stride, before, after)
    if problem:
        raise ShapeError(f"a window op {problem}")
    return (size + before + after - kernel) // stride + 1


def resolve_padding(padding, in_hw, kernel, stride) -> tuple[int, int, int, int]:
    """ "valid", "same" or [top, bottom, left, right] as explicit (top, bottom, left, right)."""
    (h, w), (kh, kw), (sh, sw) = pair(in_hw, "input size"), pair(kernel, "kernel"), pair(stride, "stride")
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if sh < 1 or sw < 1:
                raise ShapeError(f"a window op has a stride of {min(sh, sw)}")
            return (*same_padding(h, kh, sh), *same_padding(w, kw, sw))
        raise ShapeError(f"padding must be 'valid', 'same' or [top, bottom, left, right], not {padding!r}")
    try:
        pads = tuple(padding)
    except TypeError:
        pads = ()
    if len(pads) != 4 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0 for p in pads):
        raise ShapeError(
            f"padding must be 'valid', 'same' or 4 integers >= 0 [top, bottom, left, right], not {padding!r}"
        )
    return tuple(int(p) for p in pads)


def geometry(in_hw, kernel, stride=1, padding="valid") -> Geometry:
    """The Geometry of a kernel sliding over an input of in_hw, or a one-line ShapeError.

    The error names the axis and the sizes: "a 5x5 window over 4x8 input (padding 'valid'):
    height has a window of 5 larger than its padded input of 4".
    """
    in_hw, kernel, stride = pair(in_hw, "input size"), pair(kernel, "kernel"), pair(stride, "stride")
    pads = resolve_padding(padding, in_hw, kernel, stride)
    out = []
    for axis, name in enumerate(("height", "width")):
        problem = window_problem(in_hw[axis], kernel[axis], stride[axis], *pads[2 * axis : 2 * axis + 2])
        if problem:
            raise ShapeError(
                f"a {kernel[0]}x{kernel[1]} window of stride {stride[0]}x{stride[1]} over a "
                f"{in_hw[0]}x{in_hw[1]} input (padding {padding!r}): {name} {problem}"
            )
        out.append(output_size(in_hw[axis], kernel[axis], stride[axis], *pads[2 * axis : 2 * axis + 2]))
    return Geometry(in_hw, kernel, stride, pads, (out[0], out[1]))


def geometry_1d(length: int, kernel: int, stride: int = 1, padding="valid") -> Geometry:
    """A 1-D window as the 2-D Geometry of height 1; explicit padding is [left, right]."""
    if not isinstance(padding, str):
        try:
            left, right = padding
        except (TypeError, ValueError):
            raise ShapeError(f"1-D padding must be 'valid', 'same' or [left, right], not {padding!r}") from None
        padding = [0, 0, left, right]
    return geometry((1, length), (1, kernel), (1, stride), padding)


def check_input(x, geo: Geometry) -> None:
    """x must be an NHWC batch of the geometry's height and width."""
    if x.ndim != 4 or tuple(x.shape[1:3]) != geo.in_hw:
        raise ShapeError(f"expected a batch of shape (n, {geo.in_hw[0]}, {geo.in_hw[1]}, c), got {x.shape}")


def pad(x, geo: Geometry, value=0):
    """x (NHWC) with the geometry's pads around height and width, filled with value; x itself if none."""
    check_input(x, geo)
    top, bottom, left, right = geo.pads
    if not any(geo.pads):
        return x
    out = np.full((x.shape[0], x.shape[1] + top + bottom, x.shape[2] + left + right, x.shape[3]), value, x.dtype)
    out[:, top : top + x.shape[1], left : left + x.shape[2]] = x
    return out


def windows(x, geo: Geometry, pad_value=0):
    """A read-only strided view (n, out_h, out_w, kh, kw, c) of every window of x: no copy beyond padding."""
    xp = pad(x, geo, pad_value)
    n, _, _, c = xp.shape
    s_n, s_h, s_w, s_c = xp.strides
    (sh, sw), (kh, kw), (oh, ow) = geo.stride, geo.kernel, geo.out_hw
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s_n, sh * s_h, sw * s_w, s_h, s_w, s_c), writeable=False
    )


def im2col(x, geo: Geometry, pad_value=0):
    """Every window of x as one row: (n * out_h * out_w, kh * kw * c), columns in (kh, kw, c) order.

    That order is the weights' (out_c, kh, kw, in_c) flattened, so a convolution is
    im2col(x) @ weights.reshape(out_c, -1).T. A 1x1 kernel of stride 1 without padding is a
    reshape (a view, no copy).
    """
    n, c = x.shape[0], x.shape[3]
    if geo.kernel == (1, 1) and geo.stride == (1, 1) and not any(geo.pads):
        check_input(x, geo)
        return x.reshape(n * geo.in_hw[0] * geo.in_hw[1], c)
    (oh, ow), (kh, kw) = geo.out_hw, geo.kernel
    return windows(x, geo, pad_value).reshape(n * oh * ow, kh * kw * c)


def unpad(xp, geo: Geometry):
    """The inside of a padded NHWC array: pad's inverse (a view)."""
    top, bottom, left, right = geo.pads
    return xp[:, top : xp.shape[1] - bottom, left : xp.shape[2] - right]


def col2im(cols, geo: Geometry, channels: int):
    """The adjoint of im2col: each column's value added back to the input element it was read from.

    cols is (n * out_h * out_w, kh * kw * channels); the result is (n, in_h, in_w, channels).
    Gradients reaching the padding are dropped. One vectorised add per kernel tap.
    """
    (oh, ow), (kh, kw) = geo.out_hw, geo.kernel
    n = cols.shape[0] // (oh * ow)
    if geo.kernel == (1, 1) and geo.stride == (1, 1) and not any(geo.pads):
        return cols.reshape(n, oh, ow, channels)
    cols = cols.reshape(n, oh, ow, kh, kw, channels)
    out = np.zeros((n, *geo.padded_hw, channels), cols.dtype)
    for i, j, rows, columns in geo.offsets():
        out[:, rows, columns] += cols[:, :, :, i, j]
    return unpad(out, geo)
