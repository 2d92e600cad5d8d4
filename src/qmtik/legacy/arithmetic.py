"""The C library's own float32 arithmetic, emulated sample for sample, and its conversion.

`CLibraryModel` runs a model stored by qmtik.h as `QMTIK_infer_forward` does: float32 sums in
index order, C's roundf (halves away from zero), expf and tanhf from libm (`libm()`, loaded on
first use, not when qmtik is imported). `to_quantized_model` converts it to qmtik's integer-only
scheme; docs/c-library.md says how close the two come.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import replace

import numpy as np

from .. import intref
from .. import quantization as q
from ..errors import ConfigError, QuantizationError
from ..integer_model import QuantizedModel
from .header import CHeader

f32 = np.float32
C_CLAMP = 88.0  # qmtik.h clamps the arguments of sigmoid and tanh to +-88
ROWS_PER_LOOP = 2048  # samples per pass of the float32 loop: keeps the accumulators in cache


@functools.cache
def libm():
    """expf and tanhf of the C library's libm, or None when libm cannot be found; loaded on first
    use (not when qmtik is imported), once."""
    name = ctypes.util.find_library("m")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if lib is None:
        return None
    for fn in (lib.expf, lib.tanhf):
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return {"exp": lib.expf, "tanh": lib.tanhf}


def c_round(x):
    """C's roundf on float32 values: halves away from zero (numpy's np.round would go to even)."""
    return q.round_half_away(np.asarray(x, dtype=f32))


def c_codes(x):
    """(int8_t)fmaxf(-128, fminf(127, roundf(x))): the C library's quantization of a float."""
    return np.clip(c_round(x), q.QMIN, q.QMAX).astype(np.int8)


class CLibraryModel:
    """A model stored by qmtik.h, run with the C library's own float32 arithmetic.

    Each layer starts from bias*W_SCALE and adds (w*W_SCALE)*(a*A_SCALE) one input at a time,
    in index order, each product rounded to float32 (no fused multiply-add); hidden outputs are
    clamp(roundf(act(acc)/A_SCALE)), the output layer's clamp(roundf(acc/A_SCALE)), then the
    output processing. expf and tanhf come from libm (use_libm=True, when found), else numpy.
    """

    def __init__(self, header: CHeader, layers: list, use_libm: bool = True):
        self.header, self.layers = header, layers  # layers: [(weights int8 (out, in), biases int8)]
        self.libm = libm() if use_libm else None
        self.w, self.a, self.leak = f32(header.w_scale), f32(header.a_scale), f32(header.leak)

    def _fn(self, name: str, x):
        """expf or tanhf of float32 x: libm on each distinct value, or numpy's float32 version."""
        if self.libm is None:
            return getattr(np, name)(x).astype(f32)
        values, inverse = np.unique(x, return_inverse=True)
        fn = self.libm[name]
        return np.fromiter((fn(v) for v in values.tolist()), f32, len(values))[inverse].reshape(x.shape)

    def accumulate(self, codes, weights, biases):
        """The float32 accumulators of one layer, added in the C library's order."""
        wt = np.ascontiguousarray((weights.astype(f32) * self.w).T)  # (in, out)
        acc = np.empty((len(codes), weights.shape[0]), dtype=f32)
        for start in range(0, len(codes), ROWS_PER_LOOP):
            a = np.ascontiguousarray((codes[start : start + ROWS_PER_LOOP].astype(f32) * self.a).T)  # (in, n)
            part, tmp = acc[start : start + ROWS_PER_LOOP], np.empty((a.shape[1], wt.shape[1]), dtype=f32)
            part[:] = biases.astype(f32) * self.w
            for j in range(len(wt)):
                np.multiply(a[j][:, None], wt[j][None, :], out=tmp)
                part += tmp
        return acc

    def hidden_codes(self, acc):
        """clamp(roundf(act(acc) / A_SCALE)): a hidden layer's int8 outputs from float32 accumulators."""
        acc, kind = np.asarray(acc, dtype=f32), self.header.activation
        if kind == "relu":
            y = np.where(acc > 0, acc, f32(0))
        elif kind == "leaky_relu":
            y = np.where(acc > 0, acc, self.leak * acc)
        elif kind == "sigmoid":
            y = f32(1) / (f32(1) + self._fn("exp", -np.clip(acc, f32(-C_CLAMP), f32(C_CLAMP))))
        else:
            y = self._fn("tanh", np.clip(acc, f32(-C_CLAMP), f32(C_CLAMP)))
        return c_codes(y / self.a)

    def raw_scores(self, codes) -> np.ndarray:
        """The output layer's int8 codes before output processing (QMTIK_infer_forward's q_o_z)."""
        h = np.asarray(codes, dtype=np.int8)
        for weights, biases in self.layers[:-1]:
            h = self.hidden_codes(self.accumulate(h, weights, biases))
        return c_codes(self.accumulate(h, *self.layers[-1]) / self.a)

    def post_process(self, z) -> np.ndarray:
        """QMTIK_infer_post_process: softmax or sigmoid of z*A_SCALE, as roundf(p*127); linear: z."""
        z = np.asarray(z, dtype=np.int8)
        real = z.astype(f32) * self.a
        if self.header.output == "softmax":
            e = self._fn("exp", real - real.max(axis=1, keepdims=True))
            total = np.zeros(len(z), dtype=f32)
            for i in range(z.shape[1]):  # summed in index order
                total += e[:, i]
            return c_round((e / total[:, None]) * f32(127)).astype(np.int8)
        if self.header.output == "sigmoid":
            e = self._fn("exp", -np.clip(real, f32(-C_CLAMP), f32(C_CLAMP)))
            return c_round((f32(1) / (f32(1) + e)) * f32(127)).astype(np.int8)
        return z

    def outputs(self, codes) -> np.ndarray:
        """The int8 outputs QMTIK_infer_forward leaves in q_o_z for int8 sample inputs."""
        return self.post_process(self.raw_scores(codes))

    def predict(self, codes) -> np.ndarray:
        """The C library's classes: the first index of the largest output."""
        return self.outputs(codes).argmax(axis=1)

    # --- conversion to qmtik's integer-only model ---

    def table_scale(self) -> float:
        """Input scale of a sigmoid/tanh table: 127 steps reach just past the last input at which
        the C library's output code still changes."""
        x = np.linspace(-20, 20, 40001, dtype=f32)
        changes = x[1:][np.diff(self.hidden_codes(x).astype(np.int16)) != 0]
        reach = float(np.abs(changes).max()) + 0.002 if changes.size else 1.0
        return reach * 129 / 127 / 127

    def to_quantized_model(self, class_names=None) -> QuantizedModel:
        """The model in qmtik's integer-only scheme: int8 weights at W_SCALE (-128 clipped to
        -127), int32 biases at A_SCALE*W_SCALE, every activation at A_SCALE with zero point 0."""
        a, w = float(self.a), float(self.w)
        kinds = [self.header.activation] * (len(self.layers) - 1) + ["linear"]
        layers = []
        for (weights, biases), kind in zip(self.layers, kinds):
            codes = np.maximum(weights, -q.WMAX).astype(np.int8)
            scales = np.full(len(codes), w)
            bias = q.quantize_bias((biases.astype(f32) * self.w).astype(np.float64), a, 0, codes, scales)
            pre = self.table_scale() if kind in q.TABLE_ACTIVATIONS else None
            try:
                layer = intref.build_layer(codes, bias, scales, a, 0, kind, a, 0, pre, slope=float(self.leak))
            except QuantizationError as exc:  # W_SCALE / A_SCALE beyond qmtik's multipliers
                raise ConfigError(
                    f"C header {self.header.path}: QMTIK_W_SCALE {w:g} and QMTIK_A_SCALE {a:g} "
                    f"cannot be converted: {exc}"
                ) from None
            if pre is not None:  # the C library's codes, not qmtik's fixed-scale table
                layer = replace(layer, table=self.hidden_codes(f32(pre) * np.arange(q.QMIN, q.QMAX + 1, dtype=f32)))
            layers.append(layer)
        return QuantizedModel("classification", self.header.output, (0.0, 255.0), layers, class_names)
