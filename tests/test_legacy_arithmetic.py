"""qmtik.legacy.arithmetic: the C library's own float32 arithmetic (against a scalar oracle
and compiled C, byte for byte) and its conversion to qmtik's integer model."""

import ctypes
import ctypes.util
import shutil
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

import qmtik
from legacy_helpers import EXAMPLE, one_line, random_layers, small_header
from qmtik import legacy as c
from qmtik.c_check import find_compiler

f32 = np.float32


# --- the C library's arithmetic ----------------------------------------------------------------


def roundf(x) -> int:
    """C's roundf by exact decimal arithmetic: an oracle independent of numpy."""
    return int(Decimal(float(x)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def clamp_round(x) -> int:
    return max(-128, min(127, roundf(x)))


LIBM = ctypes.CDLL(ctypes.util.find_library("m")) if ctypes.util.find_library("m") else None
if LIBM is not None:
    for _fn in (LIBM.expf, LIBM.tanhf):
        _fn.restype, _fn.argtypes = ctypes.c_float, [ctypes.c_float]


def oracle(h, layers, sample):
    """QMTIK_infer_forward and QMTIK_infer_post_process, one sample, one scalar at a time."""
    W, A, exp = f32(h.w_scale), f32(h.a_scale), lambda v: f32(LIBM.expf(float(v)))
    act = {
        "relu": lambda x: x if x > 0 else f32(0),
        "leaky_relu": lambda x: x if x > 0 else f32(0.01) * x,
        "sigmoid": lambda x: f32(1) / (f32(1) + exp(-min(max(x, f32(-88)), f32(88)))),
        "tanh": lambda x: f32(LIBM.tanhf(float(min(max(x, f32(-88)), f32(88))))),
    }[h.activation]
    a = [int(v) for v in sample]
    for k, (w, b) in enumerate(layers):
        out = []
        for i in range(w.shape[0]):
            acc = f32(int(b[i])) * W
            for j in range(len(a)):
                acc = f32(acc + f32(f32(int(w[i, j])) * W) * f32(f32(a[j]) * A))
            out.append(clamp_round((acc if k == len(layers) - 1 else act(acc)) / A))
        a = out
    real = [f32(v) * A for v in a]
    if h.output == "softmax":
        top, total, e = max(real), f32(0), []
        for r in real:
            e.append(exp(r - top))
            total = f32(total + e[-1])
        return [roundf((v / total) * f32(127)) for v in e]
    if h.output == "sigmoid":
        return [roundf((f32(1) / (f32(1) + exp(-min(max(r, f32(-88)), f32(88))))) * f32(127)) for r in real]
    return a


@pytest.mark.skipif(LIBM is None, reason="libm not found")
@pytest.mark.parametrize("act", ["RELU", "LEAKY_RELU", "SIGMOID", "TANH"])
@pytest.mark.parametrize("out", ["LINEAR", "SOFT_MAX", "SIGMOID"])
def test_forward_equals_a_per_sample_scalar_loop(tmp_path, act, out):
    h = c.read_header(small_header(tmp_path, act, out, w=0.013, a=0.07))
    layers = random_layers(h.widths, seed=1)
    samples = np.random.default_rng(2).integers(-128, 128, (40, 5)).astype(np.int8)
    model = c.CLibraryModel(h, layers)
    expected = np.array([oracle(h, layers, s) for s in samples], dtype=np.int8)
    np.testing.assert_array_equal(model.outputs(samples), expected)


def test_roundf_ties_go_away_from_zero_and_codes_clamp():
    np.testing.assert_array_equal(c.c_round(f32([0.5, -0.5, 2.5, -2.5, 0.49999997])), [1, -1, 3, -3, 0])
    np.testing.assert_array_equal(c.c_codes(f32([127.5, -128.5, 300, -3.5])), [127, -128, 127, -4])


def test_softmax_post_processing(tmp_path):
    model = c.CLibraryModel(c.read_header(small_header(tmp_path, o=4, a=0.5)), [])
    z = np.array([[0, 0, 0, 0], [2, 0, 0, 0], [127, -128, 0, 0]], dtype=np.int8)
    e = np.exp(-1.0)  # z*A differ by 1
    np.testing.assert_array_equal(
        model.post_process(z),
        [
            [32, 32, 32, 32],  # 127/4 = 31.75
            [round(127 / (1 + 3 * e)), *[round(127 * e / (1 + 3 * e))] * 3],
            [127, 0, 0, 0],
        ],
    )


def test_class_is_the_first_index_of_the_largest_output(tmp_path):
    h = c.read_header(small_header(tmp_path, out="LINEAR", i=2, h=2, layers=1, o=3))
    zero = (np.zeros((2, 2), np.int8), np.zeros(2, np.int8))
    model = c.CLibraryModel(h, [zero, zero, (np.zeros((3, 2), np.int8), np.array([1, 5, 5], np.int8))])
    assert model.predict(np.zeros((1, 2), np.int8)).tolist() == [1]


# --- conversion to the integer model ------------------------------------------------------------


def pixel_codes(x):
    """The bundled digits (0..16) as 8-bit pixels, then pixel - 128 (the C library's inputs)."""
    return (np.round(np.asarray(x, dtype=np.float64) * 255 / 16) - 128).astype(np.int8)


def trained_c_layers(x, y, act="relu", a_scale=0.125, steps=300, seed=0):
    """A 64-32-32-32-10 network trained as qmtik.h trains (float, then fake quantization of
    weights and activations at fixed scales), quantized as QMTIK_quantize_to_model does."""
    rng = np.random.default_rng(seed)
    widths = (64, 32, 32, 32, 10)
    params = [rng.standard_normal((o, i)) * np.sqrt(2 / i) for i, o in zip(widths[:-1], widths[1:])]
    params += [np.zeros(o) for o in widths[1:]]
    f, df = {"relu": (lambda z: np.maximum(z, 0), lambda z: z > 0), "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2)}[
        act
    ]
    inputs, targets, n = pixel_codes(x) * a_scale, np.eye(10)[y], len(widths) - 1
    m, v, w_scale = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params], None
    for t in range(1, steps + 1):
        if t == steps // 2:
            w_scale = np.percentile(np.abs(np.concatenate([p.ravel() for p in params[:n]])), 99.9) / 127
        fq = (lambda p, s: np.clip(np.round(p / s), -128, 127) * s) if w_scale else (lambda p, s: p)
        hs, zs = [inputs], []
        for i in range(n):
            zs.append(hs[-1] @ fq(params[i], w_scale).T + fq(params[n + i], w_scale))
            hs.append(fq(f(zs[-1]), a_scale) if i < n - 1 else zs[-1])
        p = np.exp(hs[-1] - hs[-1].max(1, keepdims=True))
        g, grads = (p / p.sum(1, keepdims=True) - targets) / len(x), [None] * 2 * n
        for i in reversed(range(n)):
            grads[i], grads[n + i] = g.T @ hs[i], g.sum(0)
            if i:
                g = (g @ fq(params[i], w_scale)) * df(zs[i - 1])
        for k, grad in enumerate(grads):
            m[k] = 0.9 * m[k] + 0.1 * grad
            v[k] = 0.999 * v[k] + 0.001 * grad**2
            params[k] -= 0.01 * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
    w_scale = float(f32(w_scale))
    quantize = lambda p: c.c_codes(f32(p) / f32(w_scale))  # noqa: E731  (QMTIK_quantize_w)
    return [(quantize(params[i]), quantize(params[n + i])) for i in range(n)], w_scale


@pytest.fixture(scope="module", params=["relu", "tanh"])
def trained(request, digits, tmp_path_factory):
    """A trained C library model on the digits: (header path, model path, CLibraryModel, all codes)."""
    (x, y), (x_test, y_test) = digits
    layers, w_scale = trained_c_layers(x, y, request.param)
    tmp = tmp_path_factory.mktemp("c_model")
    path = small_header(tmp, request.param.upper(), "SOFT_MAX", 64, 32, 2, 10, w_scale, 0.125)
    c.write_c_model(tmp / "model", layers)
    codes = pixel_codes(np.concatenate([x, x_test]))
    return path, tmp / "model", c.load_c_model(tmp / "model", path), codes, np.concatenate([y, y_test])


def test_converted_model_agrees_with_the_c_arithmetic(trained, tmp_path):
    header_path, model_path, model, codes, labels = trained
    assert (model.predict(codes) == labels).mean() > 0.9  # a real, trained network
    assert sum(int((w == -128).sum()) for w, _ in model.layers) > 0  # the clipping is exercised
    converted = c.import_c_model(model_path, header_path, tmp_path / "model.qmt")
    loaded = qmtik.load_model(tmp_path / "model.qmt")
    scores = loaded.scores(codes)
    np.testing.assert_array_equal(scores, converted.scores(codes))
    agreement = (scores.argmax(axis=1) == model.predict(codes)).mean()
    assert agreement >= 0.99  # measured: 99.9% relu, 100% tanh
    pixels = np.clip(codes.astype(np.int16) + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded.predict(pixels), scores.argmax(axis=1))  # input_range [0, 255]


def test_libm_and_numpy_exp_agree_on_the_classes(trained):
    _, model_path, model, codes, _ = trained
    plain = c.load_c_model(model_path, model.header, use_libm=False)
    assert (plain.predict(codes) != model.predict(codes)).sum() <= 1


# --- against compiled C ------------------------------------------------------------------------

C_PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#define I %(I)d
#define H %(H)d
#define L %(L)d
#define O %(O)d
#define W_SCALE %(W)sf
#define A_SCALE %(A)sf
static float act(float x) { %(ACT)s }
static int8_t q(float x) { return (int8_t)fmaxf(-128, fminf(127, roundf(x))); }
static int8_t model[H*I + H + L*H*H + L*H + O*H + O];
int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb"); FILE* s = fopen(argv[2], "rb");
    if (!f || !s || fread(model, 1, sizeof model, f) != sizeof model) return 1;
    const int8_t *ihw = model, *ihb = ihw + H*I, *hhw = ihb + H, *hhb = hhw + L*H*H, *ow = hhb + L*H, *ob = ow + O*H;
    int8_t in[I], h[H], h2[H], z[O];
    while (fread(in, 1, I, s) == I) {
        float acc;
        for (int i = 0; i < H; ++i) { acc = ihb[i]*W_SCALE;
            for (int j = 0; j < I; ++j) acc += (ihw[i*I + j]*W_SCALE)*(in[j]*A_SCALE);
            h[i] = q(act(acc)/A_SCALE); }
        for (int l = 0; l < L; ++l) { for (int i = 0; i < H; ++i) { acc = hhb[l*H + i]*W_SCALE;
            for (int j = 0; j < H; ++j) acc += (hhw[(l*H + i)*H + j]*W_SCALE)*(h[j]*A_SCALE);
            h2[i] = q(act(acc)/A_SCALE); } memcpy(h, h2, H); }
        for (int i = 0; i < O; ++i) { acc = ob[i]*W_SCALE;
            for (int j = 0; j < H; ++j) acc += (ow[i*H + j]*W_SCALE)*(h[j]*A_SCALE);
            z[i] = q(acc/A_SCALE); }
        %(POST)s
        fwrite(z, 1, O, stdout);
    }
    return 0;
}
"""
C_ACT = {
    "relu": "return x>0?x:0.0f;",
    "leaky_relu": "return x>0?x:0.01f*x;",
    "sigmoid": "return 1.0f/(1.0f+expf(-(fmaxf(-88.0f, fminf(88.0f, x)))));",
    "tanh": "return tanhf(fmaxf(-88.0f, fminf(88.0f, x)));",
}
C_POST = {
    "linear": "",
    "softmax": "float t[O]; float m=z[0]*A_SCALE; for (int i=1;i<O;++i) if (z[i]*A_SCALE>m) m=z[i]*A_SCALE;"
    " float sum=0.0f; for (int i=0;i<O;++i) {t[i]=expf(z[i]*A_SCALE-m); sum+=t[i];}"
    " for (int i=0;i<O;++i) z[i]=(int8_t)roundf((t[i]/sum)*127);",
    "sigmoid": "for (int i=0;i<O;++i) z[i]=(int8_t)roundf((1.0f/(1.0f+expf(-fmaxf(-88.0f, fminf(88.0f, "
    "z[i]*A_SCALE)))))*127.0f);",
}


@pytest.mark.skipif(shutil.which("gcc") is None or c.libm() is None, reason="needs gcc and libm")
@pytest.mark.parametrize(
    "act, out", [("relu", "softmax"), ("leaky_relu", "linear"), ("sigmoid", "sigmoid"), ("tanh", "softmax")]
)
def test_outputs_equal_compiled_c_byte_for_byte(tmp_path, act, out):
    """The arithmetic of qmtik.h's QMTIK_infer_forward, compiled without FMA contraction."""
    h = c.read_header(
        small_header(
            tmp_path,
            act.upper(),
            {"softmax": "SOFT_MAX"}.get(out, out.upper()),
            i=23,
            h=17,
            layers=2,
            o=6,
            w=0.0123,
            a=0.0625,
        )
    )
    layers = random_layers(h.widths, seed=3)
    c.write_c_model(tmp_path / "model", layers)
    samples = np.random.default_rng(4).integers(-128, 128, (500, 23)).astype(np.int8)
    (tmp_path / "samples").write_bytes(samples.tobytes())
    source = C_PROGRAM % {
        "I": 23,
        "H": 17,
        "L": 2,
        "O": 6,
        "W": "0.0123",
        "A": "0.0625",
        "ACT": C_ACT[act],
        "POST": C_POST[out],
    }
    (tmp_path / "infer.c").write_text(source)
    subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-O2",
            "-ffp-contract=off",
            "-o",
            str(tmp_path / "infer"),
            str(tmp_path / "infer.c"),
            "-lm",
        ],
        check=True,
    )
    run = subprocess.run(
        [str(tmp_path / "infer"), str(tmp_path / "model"), str(tmp_path / "samples")], capture_output=True, check=True
    )
    expected = np.frombuffer(run.stdout, dtype=np.int8).reshape(-1, 6)
    np.testing.assert_array_equal(c.load_c_model(tmp_path / "model", h).outputs(samples), expected)


@pytest.mark.filterwarnings("error")
def test_a_weight_scale_beyond_the_requantization_names_the_header(tmp_path, capsys, monkeypatch):
    """2**22 and more cannot be a requantization multiplier; the C library computes with it."""
    monkeypatch.chdir(tmp_path)
    small_header(tmp_path, w=1e10)
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 4)))
    message = one_line(capsys, ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"], 2)
    assert (
        "C header qmtik_config.h: QMTIK_W_SCALE 1e+10 and QMTIK_A_SCALE 0.125 cannot be converted: "
        "requantization multiplier" in message
    )


def mnist_like(x8):
    """8x8 digits (0..16) as 28x28 MNIST-like int8 input bytes: a 20x20 box, pixel - 128."""
    pixels = (x8.reshape(-1, 8, 8) * 255 / 16).round()
    rows = np.minimum((np.arange(20) * 8) // 20, 7)
    big = np.zeros((len(pixels), 28, 28))
    big[:, 4:24, 4:24] = pixels[:, rows][:, :, rows]
    return (big.reshape(-1, 784) - 128).astype(np.int8)


@pytest.mark.skipif(find_compiler("c") is None or c.libm() is None, reason="needs a C compiler and libm")
def test_the_c_librarys_shipped_model_is_emulated_byte_for_byte_and_imported(tmp_path, digits):
    """The real mnist_784_model: CLibraryModel equals the C arithmetic compiled; the import
    agrees on the classes (figures in docs/migration.md, benchmarks/c_library_ties.py)."""
    (x, _), (x_test, _) = digits
    codes = np.concatenate(
        [
            mnist_like(np.concatenate([x, x_test])),
            np.random.default_rng(1).integers(-128, 128, (300, 784)).astype(np.int8),
        ]
    )
    (tmp_path / "samples").write_bytes(codes.tobytes())
    source = C_PROGRAM % {
        "I": 784,
        "H": 256,
        "L": 2,
        "O": 10,
        "W": "0.05",
        "A": "0.5",
        "ACT": C_ACT["leaky_relu"],
        "POST": "",
    }
    (tmp_path / "infer.c").write_text(source)
    subprocess.run(
        [
            find_compiler("c"),
            "-std=c99",
            "-O2",
            "-ffp-contract=off",
            "-o",
            str(tmp_path / "infer"),
            str(tmp_path / "infer.c"),
            "-lm",
        ],
        check=True,
    )
    run = subprocess.run(
        [str(tmp_path / "infer"), str(EXAMPLE / "mnist_784_model"), str(tmp_path / "samples")],
        capture_output=True,
        check=True,
    )
    c_scores = np.frombuffer(run.stdout, dtype=np.int8).reshape(-1, 10)
    c_model = c.load_c_model(EXAMPLE / "mnist_784_model", EXAMPLE / "qmtik_config.h")
    np.testing.assert_array_equal(c_model.raw_scores(codes), c_scores)
    model = c.import_c_model(EXAMPLE / "mnist_784_model", EXAMPLE / "qmtik_config.h", tmp_path / "m.qmt")
    scores = qmtik.load_model(tmp_path / "m.qmt").scores(codes)
    rows_differing = (scores != c_scores).any(axis=1).mean()
    assert 0.2 < rows_differing < 0.35  # measured 28.5% of the digits' rows: ties are common
    assert (scores.argmax(axis=1) == c_model.predict(codes)).mean() > 0.99
    assert np.abs(scores.astype(int) - c_scores).max() <= 2 and model.widths == (784, 256, 256, 256, 10)


def test_libm_is_loaded_on_first_use_not_on_import():
    """Importing qmtik.legacy loads no shared library; CLibraryModel loads libm when it runs."""
    code = "import qmtik.legacy as c; assert c.arithmetic.libm.cache_info().currsize == 0"
    subprocess.run([sys.executable, "-c", code], check=True)
