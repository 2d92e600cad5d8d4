"""The C library carry-over: qmtik_config.h to a Config, its model files, its own arithmetic,
and the conversion to qmtik's integer model (docs/c-library.md)."""

import ctypes
import ctypes.util
import shutil
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik import c_library as c
from qmtik import c_preprocessor
from qmtik.c_check import find_compiler
from qmtik.errors import ConfigError, ModelFormatError

f32 = np.float32

MNIST_HEADER = """#define QMTIK_I 784
#define QMTIK_H 256
#define QMTIK_L 2
#define QMTIK_O 10
#define QMTIK_LEAKY_RELU_ACTV
#define QMTIK_SOFT_MAX_PP
#define QMTIK_CROSS_ENTROPY_COST
#define QMTIK_A_SCALE 0.25f
#define QMTIK_W_SCALE 0.02f
#define QMTIK_EPOCHS 8
#define QMTIK_BATCH_SIZE 32
#define QMTIK_ALPHA 0.001f
#define QMTIK_BETA1 0.9f
#define QMTIK_BETA2 0.999f
#define QMTIK_EPS 1e-8f
#define QMTIK_TRAIN_DEBUG
"""


def header(tmp_path, text, name="qmtik_config.h"):
    path = tmp_path / name
    path.write_text(text)
    return path


def small_header(tmp_path, act="RELU", out="SOFT_MAX", i=5, h=3, layers=1, o=4, w=0.05, a=0.125):
    return header(
        tmp_path,
        f"#define QMTIK_I {i}\n#define QMTIK_H {h}\n#define QMTIK_L {layers}\n"
        f"#define QMTIK_O {o}\n#define QMTIK_W_SCALE {w!r}f\n#define QMTIK_A_SCALE {a!r}f\n"
        f"#define QMTIK_{act}_ACTV\n#define QMTIK_{out}_PP\n#define QMTIK_MSE_COST\n",
    )


def random_layers(widths, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(-128, 128, (n_out, n_in)).astype(np.int8), rng.integers(-128, 128, n_out).astype(np.int8))
        for n_in, n_out in zip(widths[:-1], widths[1:])
    ]


# --- the header --------------------------------------------------------------------------------


def test_flag_style_header_gives_topology_with_l_hidden_to_hidden_layers(tmp_path):
    h = c.read_header(header(tmp_path, MNIST_HEADER))
    assert h.widths == (784, 256, 256, 256, 10)
    assert (h.activation, h.output, h.cost, h.optimizer) == ("leaky_relu", "softmax", "cross_entropy", "adam")
    assert (h.w_scale, h.a_scale) == (0.02, 0.25)
    assert h.ignored == ("QMTIK_TRAIN_DEBUG",)
    assert c.config_from_header(tmp_path / "qmtik_config.h").network.hidden == (256, 256, 256)


def test_value_style_switches_comments_casts_and_parentheses(tmp_path):
    text = """/* a config
    #define QMTIK_I 1 (inside a comment: not read) */
    #define QMTIK_RELU 1
    #define QMTIK_ACTIVATION QMTIK_TANH      // the value names the choice
    #define QMTIK_OUTPUT (QMTIK_SIGMOID)
    #define QMTIK_COST CROSS_ENTROPY
    #  define QMTIK_I (64)
    #define QMTIK_H ((int)32) /* hidden */
    #define QMTIK_L 1
    #define QMTIK_O 1
    #define QMTIK_W_SCALE ((float)0.01f)
    #define QMTIK_A_SCALE 1e-1
    #define QMTIK_MOMENTUM 0.8f
    #define QMTIK_EPS 1e-3
    #define SOMETHING_ELSE 42
    #define QMTIK_MAX(a, b) ((a) > (b) ? (a) : (b))
    """
    h = c.read_header(header(tmp_path, text))
    assert h.widths == (64, 32, 32, 1)
    assert (h.activation, h.output, h.cost, h.optimizer) == ("tanh", "sigmoid", "cross_entropy", "sgd")
    assert (h.w_scale, h.a_scale) == (0.01, 0.1)
    config = c.config_from_header(tmp_path / "qmtik_config.h")
    assert (config.network.cost, config.training.optimizer, config.training.momentum) == (
        "binary_cross_entropy",
        "sgd",
        0.8,
    )


def test_missing_define_is_a_config_error_naming_header_and_define(tmp_path):
    path = header(tmp_path, MNIST_HEADER.replace("#define QMTIK_W_SCALE 0.02f\n", ""))
    with pytest.raises(ConfigError, match=r"qmtik_config.h: QMTIK_W_SCALE is not defined"):
        c.read_header(path)
    path = header(tmp_path, MNIST_HEADER.replace("#define QMTIK_SOFT_MAX_PP\n", ""))
    with pytest.raises(ConfigError, match="the output .* is not defined"):
        c.read_header(path)


@pytest.mark.parametrize("line, value", [(3, "two"), (9, "0.02.5f"), (3, "0"), (8, "-0.25f")])
def test_bad_value_names_the_line_and_define(tmp_path, line, value):
    lines = MNIST_HEADER.splitlines()
    name = lines[line - 1].split()[1]
    lines[line - 1] = f"#define {name} {value}"
    with pytest.raises(ConfigError, match=rf"qmtik_config.h, line {line}: {name} '{value}' is not"):
        c.read_header(header(tmp_path, "\n".join(lines)))


def test_two_choices_for_one_switch_and_an_unknown_choice_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="more than one activation"):
        c.read_header(header(tmp_path, MNIST_HEADER + "#define QMTIK_RELU_ACTV\n"))
    with pytest.raises(ConfigError, match="line 17: QMTIK_ACTIVATION 'QMTIK_SWISH' is not one of"):
        c.read_header(header(tmp_path, MNIST_HEADER + "#define QMTIK_ACTIVATION QMTIK_SWISH\n"))


# --- issue 10: numbers beyond Python's limits, nesting, octal ----------------------------------

DEEP = 100_000


def with_inputs(tmp_path, value: str):
    return header(tmp_path, MNIST_HEADER.replace("#define QMTIK_I 784", f"#define QMTIK_I {value}"))


@pytest.mark.parametrize("value", ["1" * 5000, "-" + "1" * 5000, "(" * DEEP + "784", "08"])
def test_an_integer_python_cannot_read_is_a_one_line_error_at_its_line(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        c.read_header(with_inputs(tmp_path, value))
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert "qmtik_config.h, line 1: QMTIK_I" in message and "is not a positive integer" in message


def test_a_hexadecimal_integer_too_long_to_print_is_refused_by_the_config(tmp_path):
    path = with_inputs(tmp_path, "0x" + "f" * 5000)
    with pytest.raises(ConfigError) as info:
        c.config_from_header(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300 and "network.inputs" in message, message


def test_parentheses_nested_100000_deep_are_read_in_linear_time(tmp_path):
    import time

    start = time.perf_counter()
    assert c.read_header(with_inputs(tmp_path, "(" * DEEP + "(int)784u" + ")" * DEEP)).inputs == 784
    assert c.read_header(with_inputs(tmp_path, "(int)" * DEEP + "784")).inputs == 784
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("value, inputs", [("01420", 784), ("0x310", 784), ("( (int) (784u) )", 784), ("0", None)])
def test_octal_hexadecimal_and_wrapped_literals_are_read_as_c_reads_them(tmp_path, value, inputs):
    if inputs is None:
        with pytest.raises(ConfigError, match="QMTIK_I '0' is not a positive integer"):
            c.read_header(with_inputs(tmp_path, value))
    else:
        assert c.read_header(with_inputs(tmp_path, value)).inputs == inputs


@pytest.mark.parametrize(
    "command",
    [
        ["config", "from-header", "qmtik_config.h"],
        ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"],
    ],
)
def test_header_commands_exit_2_with_one_line_for_a_5000_digit_integer(tmp_path, monkeypatch, capsys, command):
    from qmtik.cli import main

    monkeypatch.chdir(tmp_path)
    with_inputs(tmp_path, "1" * 5000)
    (tmp_path / "model.bin").write_bytes(bytes(100))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qmtik: error: C header qmtik_config.h, line 1: QMTIK_I"), err[:300]


@pytest.mark.parametrize("extra", ["", "#define QMTIK_MOMENTUM 0.9f\n"])
def test_toml_loads_as_the_same_config(tmp_path, extra):
    path = header(tmp_path, MNIST_HEADER.replace("LEAKY_RELU", "SIGMOID") + extra)
    toml = tmp_path / "net.toml"
    toml.write_text(c.header_toml(path))
    config = qmtik.load_config(toml)
    assert config == c.config_from_header(path)
    assert config.quantization.weight_scale == 0.02 and config.quantization.activation_scale == 0.25
    assert config.data.input_range == (0.0, 255.0)
    assert config.training.optimizer == ("sgd" if extra else "adam")
    assert "# QMTIK_TRAIN_DEBUG: no qmtik equivalent" in toml.read_text()


def test_header_qmtik_cannot_train_is_refused_naming_the_header(tmp_path):
    path = header(tmp_path, MNIST_HEADER.replace("SOFT_MAX_PP", "LINEAR_PP"))
    with pytest.raises(ConfigError, match="C header .*qmtik_config.h: .*cross_entropy is the cost of softmax"):
        c.header_toml(path)


# --- the model file ----------------------------------------------------------------------------


def test_model_file_layout_and_length(tmp_path):
    path = small_header(tmp_path, i=5, h=3, layers=2, o=4)
    layers = random_layers((5, 3, 3, 3, 4))
    c.write_c_model(tmp_path / "model", layers)
    assert (tmp_path / "model").stat().st_size == 3 * 6 + 2 * 3 * 4 + 4 * 4 == c.c_model_size(c.read_header(path))
    model = c.load_c_model(tmp_path / "model", path)
    for (w, b), (w2, b2) in zip(layers, model.layers):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    (tmp_path / "short").write_bytes((tmp_path / "model").read_bytes()[:-1])
    with pytest.raises(ModelFormatError, match=r"C model file .*short: 57 bytes, expected 58 for 5-3-3-3-4"):
        c.load_c_model(tmp_path / "short", path)
    with pytest.raises(ModelFormatError, match="cannot be read"):
        c.load_c_model(tmp_path / "missing", path)


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


@pytest.mark.parametrize("scale", ["1e-50f", "1e39", "1e-40f"])
def test_scales_that_float32_cannot_hold_are_refused_at_their_line(tmp_path, scale):
    path = small_header(tmp_path)
    path.write_text(path.read_text().replace("#define QMTIK_W_SCALE 0.05f", f"#define QMTIK_W_SCALE {scale}"))
    with pytest.raises(ConfigError) as info:
        c.read_header(path)
    assert "line 5: QMTIK_W_SCALE" in str(info.value) and "float32" in str(info.value)


def test_a_header_for_other_data_leaves_the_input_range_to_the_data(tmp_path):
    config = c.config_from_header(small_header(tmp_path))
    assert config.data.dataset == "digits" and config.data.input_range == "auto"


# --- one rule for config from-header and import-c-model; scales the C arithmetic overflows with -------


def one_line(capsys, argv, code: int) -> str:
    """main(argv) exits with code and writes exactly one line, the error, to stderr."""
    from qmtik.cli import main

    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qmtik: error: ") and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(
    "out, cost, words",
    [
        ("SOFT_MAX", "MSE", "QMTIK_O 1, softmax output, mse cost: softmax over a single output is always 1"),
        ("LINEAR", "MSE", "QMTIK_O 1, linear output, mse cost: a single-output classifier needs output = 'sigmoid'"),
    ],
)
def test_a_single_output_header_is_refused_alike_by_config_and_import(tmp_path, monkeypatch, capsys, out, cost, words):
    """QMTIK_O 1 with softmax: config from-header refused it, import-c-model took it, and the
    imported model then disagreed with the C library on 156 of 1,000 inputs."""
    monkeypatch.chdir(tmp_path)
    path = small_header(tmp_path, out=out, o=1)
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 1)))
    messages = set()
    for call in (
        lambda: c.read_header(path),
        lambda: c.config_from_header(path),
        lambda: c.load_c_model(tmp_path / "model.bin", path),
        lambda: c.import_c_model(tmp_path / "model.bin", path, tmp_path / "m.qmt"),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        messages.add(str(info.value))
    assert len(messages) == 1 and messages.pop().startswith(f"C header {path}: {words}")
    assert words in one_line(capsys, ["config", "from-header", "qmtik_config.h"], 2)
    assert words in one_line(capsys, ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"], 2)
    assert not (tmp_path / "m.qmt").exists()


def test_a_single_sigmoid_output_is_accepted_by_both(tmp_path):
    path = small_header(tmp_path, out="SIGMOID", o=1)
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 1)))
    assert c.config_from_header(path).network.outputs == 1
    assert c.import_c_model(tmp_path / "model.bin", path, tmp_path / "m.qmt").outputs == 1


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "w, a, expected",
    [
        ("3e38f", "0.125f", "line 5: QMTIK_W_SCALE '3e38f' must lie from 1.18e-38"),
        ("0.05f", "3e38f", "line 6: QMTIK_A_SCALE '3e38f' must lie from 1.18e-38"),
        (
            "1e36f",
            "1e10f",
            "QMTIK_W_SCALE 1e+36 and QMTIK_A_SCALE 1e+10 overflow float32 in the C library's arithmetic",
        ),
        (
            "1e34f",
            "1e-30f",
            "QMTIK_W_SCALE 1e+34 and QMTIK_A_SCALE 1e-30 overflow float32 in the C library's arithmetic",
        ),
    ],
)
@pytest.mark.parametrize("command", ["config", "import"])
def test_scales_whose_use_overflows_are_one_line_without_numpy_warnings(
    tmp_path, monkeypatch, capsys, w, a, expected, command
):
    monkeypatch.chdir(tmp_path)
    small_header(tmp_path, w=w, a=a)
    path = tmp_path / "qmtik_config.h"
    path.write_text(path.read_text().replace(f"{w!r}f", w).replace(f"{a!r}f", a))
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 4)))
    argv = (
        ["config", "from-header", "qmtik_config.h"]
        if command == "config"
        else ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"]
    )
    assert expected in one_line(capsys, argv, 2)


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


# --- issue 12: conditionals as the C build reads them; the C library's real example ---------------

EXAMPLE = Path(__file__).parent / "data" / "qmtik-h-example"  # MIT, shinymonitor/qmtik 743f3d9
BIG_MODEL = MNIST_HEADER.replace(
    "#define QMTIK_H 256\n", "#define QMTIK_H 32\n#ifdef QMTIK_BIG_MODEL\n#define QMTIK_H 1024\n#endif\n"
)
needs_cc = pytest.mark.skipif(find_compiler("c") is None, reason="needs a C compiler")


@pytest.fixture(params=["compiler", "fallback"])
def reader(request, monkeypatch):
    """Run a test through the real preprocessor and through the reader used without a compiler."""
    if request.param == "compiler" and find_compiler("c") is None:
        pytest.skip("needs a C compiler")
    if request.param == "fallback":
        monkeypatch.setattr(c_preprocessor, "find_compiler", lambda language="c": None)
    return request.param


def test_an_ifdef_branch_not_taken_is_not_read(tmp_path, reader):
    """The define under #ifdef QMTIK_BIG_MODEL (not defined) was read: 1024 where C builds 32."""
    assert c.read_header(header(tmp_path, BIG_MODEL)).hidden == 32
    assert c.read_header(header(tmp_path, "#define QMTIK_BIG_MODEL\n" + BIG_MODEL)).hidden == 1024


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("#ifndef QMTIK_CONFIG_H\n#define QMTIK_CONFIG_H\n{}#endif\n", 256),  # an include guard
        ("{}#undef QMTIK_H\n#define QMTIK_H 64\n", 64),
        ("{}#ifdef QMTIK_H\n#undef QMTIK_H\n#define QMTIK_H 48\n#else\n#define QMTIK_H 8\n#endif\n", 48),
    ],
)
def test_undef_else_and_include_guards_are_read_alike_by_both_readers(tmp_path, reader, text, hidden):
    h = c.read_header(header(tmp_path, text.format(MNIST_HEADER)))
    assert h.hidden == hidden


@needs_cc
@pytest.mark.parametrize(
    "text, hidden",
    [
        ("#if 0\n#define QMTIK_H 1024\n#elif defined(__STDC__) && QMTIK_L == 2\n#define QMTIK_H 96\n#endif\n", 96),
        ("#if QMTIK_L > 5\n#define QMTIK_H 1024\n#else\n#define QMTIK_H 40\n#endif\n", 40),
    ],
)
def test_if_expressions_are_evaluated_by_the_preprocessor_as_c_does(tmp_path, text, hidden):
    base = MNIST_HEADER.replace("#define QMTIK_H 256\n", "")
    path = header(tmp_path, base + text)
    assert c.read_header(path).hidden == hidden
    program = tmp_path / "show.c"  # the C build itself, as an independent oracle
    program.write_text('#include <stdio.h>\n#include "qmtik_config.h"\nint main(void) { printf("%d", QMTIK_H); }\n')
    subprocess.run([find_compiler("c"), str(program), "-o", str(tmp_path / "show")], check=True)
    assert subprocess.run([str(tmp_path / "show")], capture_output=True, text=True, check=True).stdout == str(hidden)


@pytest.mark.parametrize(
    "text, words",
    [
        ("#if QMTIK_L > 1\n#define QMTIK_H 8\n#endif\n", "line 17: #if cannot be evaluated without a C compiler"),
        ("#ifdef __STDC__\n#define QMTIK_H 8\n#endif\n", "line 17: #ifdef __STDC__: cannot be evaluated without a C"),
        ("#ifdef A\n#elif B\n#endif\n", "line 18: #elif cannot be evaluated without a C compiler"),
        ("#ifdef A\n", "#if without #endif"),
    ],
)
def test_without_a_compiler_a_conditional_that_cannot_be_evaluated_is_one_line(tmp_path, monkeypatch, text, words):
    monkeypatch.setattr(c_preprocessor, "find_compiler", lambda language="c": None)
    with pytest.raises(ConfigError) as info:
        c.read_header(header(tmp_path, MNIST_HEADER + text))
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        '#include "/dev/zero"',
        "#include <stdio.h>",
        '%:include "x.h"',
        '#/* a\n */ include "/dev/zero"',
        '#inc\\\nlude "/dev/zero"',
        "#include_next <a.h>",
        '#embed "/dev/zero"',
        '#pragma GCC dependency "/dev/zero"',
    ],
)
def test_a_directive_that_reads_another_file_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, line):
    """#include "/dev/zero" made gcc ask for 2 GB; nothing is run for such a header."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(c_preprocessor.subprocess, "run", lambda *a, **k: pytest.fail("the preprocessor ran"))
    header(tmp_path, "#define QMTIK_I 784\n" + line + "\n")
    message = one_line(capsys, ["config", "from-header", "qmtik_config.h"], 2)
    assert "qmtik_config.h, line 2: #" in message and "is refused: config from-header reads one file" in message


@needs_cc
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_the_preprocessor_runs_under_a_memory_limit(tmp_path):
    """Were the pre-scan bypassed, gcc's 2 GB request for /dev/zero fails under the 512 MB limit."""
    with pytest.raises(ConfigError, match="the C preprocessor refused it: .*memory"):
        c_preprocessor.preprocessed_defines("h.h", b'#include "/dev/zero"\n', find_compiler("c"))


@needs_cc
def test_preprocessor_errors_are_one_line_naming_the_header_and_line(tmp_path):
    path = header(tmp_path, MNIST_HEADER + "#ifndef QMTIK_BIG_MODEL\n#error set QMTIK_BIG_MODEL\n#endif\n")
    with pytest.raises(ConfigError, match=r"qmtik_config.h: the C preprocessor refused it: line 18: #error set QMTIK"):
        c.read_header(path)


def test_a_header_larger_than_the_cap_is_refused_unread(tmp_path):
    path = header(tmp_path, MNIST_HEADER + "//" + "x" * c_preprocessor.MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        c.read_header(path)


def test_the_c_librarys_example_header_is_read_as_the_c_library_builds_it(reader):
    h = c.read_header(EXAMPLE / "qmtik_config.h")
    assert h.widths == (784, 256, 256, 256, 10) and (h.w_scale, h.a_scale) == (0.05, 0.5)
    assert (h.activation, h.output, h.cost, h.optimizer) == ("leaky_relu", "softmax", "cross_entropy", "adam")
    assert "QMTIK_BATCH_SIZE" not in h.numbers and h.numbers["QMTIK_EPOCHS"] == 8


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
