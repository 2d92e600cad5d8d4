"""The C header of networks with window layers (conv2d, pointwise, conv1d, depthwise, max, average
and global average pools): compiled as C99 and C++11 with gcc and clang under ASan and UBSan,
the arena allocated at exactly the stated size, and compared byte for byte with the spec
(intref.reference_scores); odd sizes, every padding, strides 1 to 3, extreme inputs."""

import shutil
import subprocess

import numpy as np
import pytest

from qmtik import intref
from qmtik import intref_windows as iw
from qmtik import quantization as q
from qmtik.c_check import SANITIZE, STRICT, STRICT_CXX11, find_compiler, run_headers, sanitizers_work
from qmtik.export_c import export_c
from qmtik.integer_model import (
    QuantizedModel,
    arena_bytes,
    arena_plan,
    fusable,
    fusions,
    in_place,
    layer_memory,
    memory_needs,
    overlapping,
)

CC = find_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


class Chain:
    """Builds a network layer by layer from random codes, each layer reading the last one's
    output shape, scale and zero point, as training lays one out."""

    def __init__(self, shape, seed):
        self.rng = np.random.default_rng(seed)
        self.shape, self.scale, self.zero, self.layers = tuple(shape), q.INPUT_SCALE, q.INPUT_ZERO, []

    def _quantization(self, activation, fan_in, channels):
        """Weight scales per channel, a random bias (the zero point folded in) and the output's."""
        w_scale = self.rng.uniform(0.5, 2, channels) / np.sqrt(fan_in) / 127
        observed = np.array([0.0, 3.0]) if activation == "relu" else np.array([-2.0, 3.0])
        out_scale, out_zero, pre = q.output_quantization(activation, observed)
        bias = self.rng.integers(-3000, 3000, channels)
        return w_scale, bias, out_scale, out_zero, pre

    def conv(self, filters, kernel, stride=1, padding="valid", activation="relu", depthwise=False):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        channels = self.shape[2] if depthwise else filters
        taps = kh * kw * (1 if depthwise else self.shape[2])
        weights = self.rng.integers(-127, 128, (channels, taps)).astype(np.int8)
        weights[0, : min(3, taps)] = 127  # the extremes of the weight codes
        w_scale, bias, out_scale, out_zero, pre = self._quantization(activation, taps, channels)
        build = iw.build_depthwise if depthwise else iw.build_conv
        args = (weights, bias, w_scale, self.scale, self.zero, activation, out_scale, out_zero, pre, 0.1)
        layer = build(*args, input_shape=self.shape, kernel=(kh, kw), stride=stride, padding=padding)
        return self._add(layer, layer.output_scale, layer.output_offset)

    def pool(self, kind, size=None, stride=None, padding="valid"):
        layer = iw.build_pool(kind, self.shape, self.scale, self.zero, size=size, stride=stride, padding=padding)
        return self._add(layer, self.scale, self.zero)

    def dense(self, units, activation="linear"):
        fan_in = int(np.prod(self.shape))
        weights = self.rng.integers(-127, 128, (units, fan_in)).astype(np.int8)
        w_scale, bias, out_scale, out_zero, pre = self._quantization(activation, fan_in, units)
        layer = intref.build_layer(weights, bias, w_scale, self.scale, self.zero, activation, out_scale, out_zero, pre)
        return self._add(layer, layer.output_scale, layer.output_offset, (1, 1, units))

    def _add(self, layer, scale, zero, shape=None):
        self.layers.append(layer)
        self.shape, self.scale, self.zero = shape or layer.output_shape, scale, zero
        return self

    def model(self, output="softmax"):
        return QuantizedModel("classification", output, (-1.0, 3.0), self.layers)


def network_2d():
    """7x5x3: conv 3x3 stride 2 same (17 channels), depthwise 2x3 asymmetric pads, max pool same
    stride 1, pointwise to 3 (tanh), avg pool 2x1, global average, dense."""
    c = Chain((7, 5, 3), seed=1).conv(17, 3, 2, "same")
    c.conv(0, (2, 3), (1, 3), [1, 0, 2, 1], "leaky_relu", depthwise=True)
    c.pool("max_pool", 2, 1, "same").conv(3, 1, activation="tanh").pool("avg_pool", (2, 1), 1)
    return c.pool("global_avg_pool").dense(4).model()


def network_tiny():
    """1x1x3: a 3x3 kernel stride 3 over a 1x1 input with padding (a window mostly padding),
    pointwise 17 sigmoid, max pool 1, depthwise 1x1 linear, global average of one pixel, dense."""
    c = Chain((1, 1, 3), seed=2).conv(5, 3, 3, "same", "relu").conv(17, 1, activation="sigmoid")
    c.pool("max_pool", 1).conv(0, 1, activation="linear", depthwise=True).pool("global_avg_pool")
    return c.dense(3).model()


def network_whole():
    """4x4x1: a kernel as large as its input (one window) with relu (codes often -128, so the max
    pool of one pixel and its padding, 2 same, sees -128 alone), depthwise 1x1, one output."""
    c = Chain((4, 4, 1), seed=3).conv(3, 4).pool("max_pool", 2, padding="same")
    c.conv(0, 1, depthwise=True, activation="leaky_relu")
    return c.dense(1).model("sigmoid")


def network_1d():
    """A sensor window (1, 19, 2): conv1d k5 stride 3 pads [2, 1] (length 6), conv1d k3 same
    (17 channels), max pool 3 stride 2 (length 2), depthwise k4 same, avg pool 2 stride 1, dense."""
    c = Chain((1, 19, 2), seed=4).conv(6, (1, 5), (1, 3), [0, 0, 2, 1]).conv(17, (1, 3), 1, "same", "tanh")
    c.pool("max_pool", (1, 3), (1, 2)).conv(0, (1, 4), 1, "same", "relu", depthwise=True)
    return c.pool("avg_pool", (1, 2), (1, 1)).dense(5, "relu").dense(2).model()


NETWORKS = {"2d": network_2d(), "tiny": network_tiny(), "whole": network_whole(), "1d": network_1d()}


def codes_for(model, seed, n=400):
    """Random codes with the extremes: all -128, all 127, all 0, and rows of only -128 and 127."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, (n, model.inputs))
    codes[0], codes[1], codes[2] = -128, 127, 0
    codes[3:40] = rng.choice([-128, 127], codes[3:40].shape)
    return codes.astype(np.int8)


def test_the_networks_cover_every_kind_and_odd_sizes():
    kinds = {layer.kind for model in NETWORKS.values() for layer in model.layers}
    assert kinds == {"dense", *iw.KINDS}
    windows = [layer for model in NETWORKS.values() for layer in model.layers if layer.kind != "dense"]
    assert {s for layer in windows for s in layer.stride} == {1, 2, 3}
    assert {layer.input_shape[2] for layer in windows} >= {1, 3, 17}
    assert (1, 1, 3) in {layer.input_shape for layer in windows}
    assert any(layer.kernel == layer.input_shape[:2] != (1, 1) for layer in windows if layer.kind == "conv2d")
    assert any(len(set(layer.pads)) > 1 for layer in windows)  # asymmetric padding


def identity(layer):
    """A linear 1x1 convolution that copies layer's output exactly (weights 1, the bias -z,
    the multiplier 2^21 / 2^21): a model's last layer must be linear, so a network cut after
    a relu layer or a pool ends in this one, and its scores are that layer's output codes."""
    scale, zero = layer.output_scale, layer.output_offset
    shape = layer.output_shape if layer.kind != "dense" else (1, 1, layer.outputs)
    channels = shape[2]
    return iw.ConvLayer(
        weights=np.eye(channels, dtype=np.int8),
        bias=np.full(channels, -zero),
        output_multiplier=np.full(channels, 2**21),
        output_shift=np.full(channels, 21),
        activation="linear",
        input_scale=scale,
        input_zero_point=zero,
        weight_scales=np.ones(channels),
        output_scale=scale,
        output_offset=zero,
        input_shape=shape,
        kernel=(1, 1),
    )


SANITIZED = {"gcc": ("c", True), "clang++": ("c++11", True), "clang": ("c", False), "g++": ("c++11", False)}


@pytest.mark.parametrize("compiler", sorted(SANITIZED))
def test_every_layer_computes_the_spec_byte_for_byte_under_sanitizers(compiler, tmp_path):
    """gcc (C99) and clang++ (C++11): every network cut after each of its layers and an identity
    (so each kernel's own output is compared); clang (C99) and g++ (C++11): the whole networks.
    All headers in one program, one compile (-O0: quicker, and nothing optimized away from the
    sanitizers). The driver allocates the arena with malloc at exactly PREFIX_SCRATCH_BYTES
    (= PREFIX_ARENA_BYTES), so ASan sees any access past it."""
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed here")
    language, cuts = SANITIZED[compiler]
    runs = []
    for k, (name, model) in enumerate(sorted(NETWORKS.items())):
        codes = codes_for(model, k)
        raw = np.random.default_rng(k).uniform(-2, 4, (20, model.inputs)).astype(np.float32)
        for cut in range(1 if cuts else len(model.layers), len(model.layers) + 1):
            last = model.layers[cut - 1]
            layers = model.layers[:cut] + ([] if getattr(last, "activation", "") == "linear" else [identity(last)])
            part = QuantizedModel("classification", "softmax", model.input_range, layers)
            runs.append((f"n{name}{cut}", part, codes, raw))
    results = run_headers(runs, tmp_path, shutil.which(compiler), language=language, optimize="-O0")
    for (prefix, model, codes, raw), got in zip(runs, results):
        want = intref.reference_scores(model.layers, codes)
        np.testing.assert_array_equal(got["scores"], want, err_msg=prefix)
        np.testing.assert_array_equal(got["classes"], model.classes(want), err_msg=prefix)
        np.testing.assert_array_equal(got["raw_codes"], model.quantize_inputs(raw), err_msg=prefix)
    assert {got["sanitized"] for got in results} == {sanitizers_work(shutil.which(compiler), tmp_path, language)}


def test_the_arena_plan_keeps_each_input_until_read_and_its_size_is_the_peak():
    """The plan by hand: step k (a layer, or a convolution fused with its pool) reads its
    input's bytes and writes its output's; the two are disjoint unless a pool runs in place
    (same end, flush with it); all lie in the arena, and some step needs all of it."""
    for model in NETWORKS.values():
        layers = model.layers
        size, plan = arena_plan(layers)
        assert memory_needs(model)["arena"] == memory_needs(model)["scratch"] == size == arena_bytes(layers)
        assert [i for step, *_ in plan for i in step] == list(range(len(layers)))
        source, peak = (0, model.inputs), layers[plan[-1][0][0]].inputs
        for step, end, offset, order in plan[:-1]:
            first, last = layers[step[0]], layers[step[-1]]
            target = (offset, offset + last.outputs)
            assert 0 <= target[0] and target[1] <= size and (end == 0) == (offset == 0)
            assert len(step) == 1 or (first.kind in iw.CONVOLUTIONS and last.kind in iw.POOLS and order is None)
            if order is None:
                assert target[1] <= source[0] or source[1] <= target[0]
                peak = max(peak, first.inputs + last.outputs)
            else:
                assert last.kind in iw.POOLS and (target[0] == source[0] or target[1] == source[1] == size)
                peak = max(peak, first.inputs)
            source = target
        assert size == peak
        assert max(part["ram"] for part in layer_memory(layers)) == size
    text = export_c(NETWORKS["2d"], "net")
    assert f"#define NET_ARENA_BYTES {arena_bytes(NETWORKS['2d'].layers)}\n" in text
    assert "#define NET_SCRATCH_BYTES NET_ARENA_BYTES\n" in text and "malloc(" not in text
    # every static that is not const is a function: no mutable state, no hidden buffer
    assert all("(" in line for line in text.splitlines() if line.startswith("static ") and "const" not in line)


def test_the_arena_of_the_fashion_cnn_by_hand():
    """examples/fashion_cnn.toml's shapes (gap-16): each convolution is fused with the pool after
    it, so the peak is the second step, 14x14x16 = 3,136 in + 7x7x32 = 1,568 out (unfused:
    784 + 28x28x16 = 13,328)."""
    c = Chain((28, 28, 1), seed=0).conv(16, 3, 1, "same").pool("max_pool", 2).conv(32, 3, 1, "same")
    c.pool("max_pool", 2).conv(64, 3, 1, "same").pool("global_avg_pool").dense(10)
    size, plan = arena_plan(c.layers)
    assert [step for step, *_ in plan] == [(0, 1), (2, 3), (4, 5), (6,)]
    assert size == 3_136 + 1_568 == 4_704
    assert [part["ram"] for part in layer_memory(c.layers)] == [3_920] * 2 + [4_704] * 2 + [1_632] * 2 + [64]


def test_the_arena_of_the_main_cnn_is_the_issues_figure():
    """benchmarks/cnn.py's "main": 28x28x1 -> conv 32 same -> max pool 2 -> conv 64 -> max pool 2
    -> dense 10 needs max(784 + 6,272, 6,272 + 3,136) bytes, not 784 + 25,088."""
    c = Chain((28, 28, 1), seed=0).conv(32, 3, 1, "same").pool("max_pool", 2).conv(64, 3, 1, "same")
    c.pool("max_pool", 2).dense(10)
    assert arena_bytes(c.layers) == max(784 + 6_272, 6_272 + 3_136) == 9_408
    assert fusions(c.layers) == {0, 2}


def test_overlapping_pools_are_fused_only_when_the_arena_shrinks():
    """A 3x3 stride-2 max pool recomputes conv outputs when fused: fused only when that lowers
    the peak. After the first convolution it does (784 + 32x13x13 < 784 + 28x28x32); after the
    second (4 channels), whose step 5,408 + 676 is below that peak, it is left as two kernels."""
    c = Chain((28, 28, 1), seed=0).conv(32, 3, 1, "same").pool("max_pool", 3, 2).conv(4, 3, 1, "same")
    c.pool("max_pool", 3, 2).dense(10)
    assert overlapping(c.layers[1]) and overlapping(c.layers[3]) and fusable(c.layers) == [0, 2]
    assert fusions(c.layers) == {0}
    assert arena_bytes(c.layers) == 784 + 13 * 13 * 32


FUSED_POOLS = [  # kind, size, stride, padding: every geometry a pool may have, over a 7x3 conv output
    ("max_pool", 2, None, "valid"),
    ("max_pool", 3, 1, "same"),  # overlapping, padded on every side
    ("max_pool", (2, 3), (3, 2), "same"),
    ("max_pool", 3, 2, [2, 1, 0, 2]),  # overlapping rows, asymmetric pads
    ("avg_pool", (2, 1), 1, "valid"),  # overlapping
    ("avg_pool", 3, 3, "valid"),  # a row and columns left over
    ("global_avg_pool", None, None, "valid"),
]


def fused_models():
    """conv2d (17 channels) and depthwise (3), 3x3 stride (1, 2) same over 7x6x3, each followed
    by every pool of FUSED_POOLS and an identity (so the scores are the pool's codes)."""
    models = []
    for k, (kind, size, stride, padding) in enumerate(FUSED_POOLS):
        for depthwise in (False, True):
            activation = ["relu", "tanh", "leaky_relu", "linear"][(2 * k + depthwise) % 4]
            c = Chain((7, 6, 3), seed=20 + k).conv(17, 3, (1, 2), "same", activation, depthwise=depthwise)
            c.pool(kind, size, stride, padding)
            models.append(QuantizedModel("classification", "softmax", (-1.0, 3.0), c.layers + [identity(c.layers[-1])]))
    return models


@needs_cc
def test_every_fused_convolution_and_pool_computes_the_spec_under_sanitizers(tmp_path, monkeypatch):
    """Fusion forced on every pair (overlapping pools too): each fused kernel gives the spec's
    codes (the two layers in turn), byte for byte under ASan and UBSan, the arena malloc'ed at
    exactly the plan's peak, which is the fused step's input + pooled output."""
    import qmtik.integer_model

    monkeypatch.setattr(qmtik.integer_model, "fusions", lambda layers: frozenset(fusable(layers)))
    runs = []
    for k, model in enumerate(fused_models()):
        conv, pool = model.layers[:2]
        assert arena_plan(model.layers)[1][0][0] == (0, 1)
        assert arena_bytes(model.layers) == max(conv.inputs + pool.outputs, pool.outputs)
        assert "fused with " + pool.kind in export_c(model, "net")
        runs.append((f"f{k}", model, codes_for(model, k, 120), np.zeros((1, model.inputs), np.float32)))
    results = run_headers(runs, tmp_path, CC, optimize="-O0")
    for (prefix, model, codes, _), got in zip(runs, results):
        np.testing.assert_array_equal(got["scores"], intref.reference_scores(model.layers, codes), err_msg=prefix)
    assert {got["sanitized"] for got in results} == {sanitizers_work(CC, tmp_path)}


def written_before_read(layer, order) -> bool:
    """Whether a pool run in place in this order reads a code it has already written: its
    loops simulated over addresses (forward: in and out from 0; reverse: flush with the end)."""
    (in_h, in_w, c), (out_h, out_w, _) = layer.input_shape, layer.output_shape
    shift = layer.inputs - layer.outputs if order == "reverse" else 0  # out's address of output 0
    top, left = layer.pads[0], layer.pads[2]
    outputs = [(oy, ox, o) for oy in range(out_h) for ox in range(out_w) for o in range(c)]
    written = set()
    for oy, ox, o in reversed(outputs) if order == "reverse" else outputs:
        for ky in range(layer.kernel[0]):
            for kx in range(layer.kernel[1]):
                y, x = oy * layer.stride[0] - top + ky, ox * layer.stride[1] - left + kx
                if 0 <= y < in_h and 0 <= x < in_w and (y * in_w + x) * c + o in written:
                    return True
        written.add(shift + (oy * out_w + ox) * c + o)
    return False


@pytest.mark.parametrize("seed", range(4))
def test_a_pool_in_place_never_reads_what_it_wrote(seed):
    """in_place's orders over random pools: safe whenever it says so; and the simulation can
    fail: a 3x3 max pool padded on every side overwrites codes it still reads going forward."""
    rng = np.random.default_rng(seed)
    for _ in range(150):
        shape = tuple(int(v) for v in rng.integers(1, 7, 2)) + (int(rng.integers(1, 4)),)
        kind = ["max_pool", "avg_pool", "global_avg_pool"][rng.integers(3)]
        size = [int(rng.integers(1, shape[0] + 1)), int(rng.integers(1, shape[1] + 1))]
        padding = "same" if kind == "max_pool" and rng.random() < 0.5 else "valid"
        layer = iw.build_pool(kind, shape, 0.1, 3, size=size, stride=tuple(rng.integers(1, 4, 2)), padding=padding)
        for end in (0, 1):
            order = in_place(layer, end)
            if order:
                assert not written_before_read(layer, order), (layer, order)
    padded = iw.build_pool("max_pool", (4, 4, 2), 0.1, 3, size=3, stride=1, padding="same")
    assert in_place(padded, 0) is in_place(padded, 1) is None and written_before_read(padded, "forward")


ARENA_DRIVER = r"""
#define NET_IMPLEMENTATION
#include "net.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* argv[1]: how many bytes short of NET_ARENA_BYTES the arena is. stdin: n, then n inputs;
   stdout: the scores, the input written into the arena's start (the layout the doc shows). */
int main(int argc, char **argv)
{
    int32_t n, i;
    int8_t scores[NET_OUTPUTS];
    size_t size = (size_t)(NET_ARENA_BYTES - atoi(argc > 1 ? argv[1] : "0"));
    int8_t *arena = (int8_t *)malloc(size);
    if (!arena || fread(&n, 4, 1, stdin) != 1) return 2;
    for (i = 0; i < n; ++i) {
        if (fread(arena, 1, NET_INPUTS, stdin) != NET_INPUTS) return 3;
        net_predict(arena, scores, arena);
        fwrite(scores, 1, NET_OUTPUTS, stdout);
    }
    free(arena);
    return 0;
}
"""


@needs_cc
@pytest.mark.parametrize("name", ["2d", "1d"])
def test_the_input_in_the_arena_computes_the_spec_and_one_byte_less_is_caught(name, tmp_path):
    """The arena at exactly PREFIX_ARENA_BYTES with the input at its start gives the spec's
    scores; one byte less and ASan stops the program: the stated size is the plan's peak."""
    if not sanitizers_work(CC, tmp_path):
        pytest.skip("no sanitizer runtimes here")
    model = NETWORKS[name]
    (tmp_path / "net.h").write_text(export_c(model, "net"))
    (tmp_path / "arena.c").write_text(ARENA_DRIVER)
    build = subprocess.run(
        [CC, *STRICT, "-O1", *SANITIZE, "arena.c", "-o", "arena", "-lm"], cwd=tmp_path, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    codes = codes_for(model, 9, 100)
    stdin = np.int32(len(codes)).tobytes() + codes.tobytes()
    exact = subprocess.run([str(tmp_path / "arena"), "0"], input=stdin, capture_output=True)
    assert exact.returncode == 0, exact.stderr.decode()[:300]
    got = np.frombuffer(exact.stdout, np.int8).reshape(len(codes), model.outputs)
    np.testing.assert_array_equal(got, intref.reference_scores(model.layers, codes))
    short = subprocess.run([str(tmp_path / "arena"), "1"], input=stdin, capture_output=True)
    assert short.returncode != 0 and b"heap-buffer-overflow" in short.stderr


COMPILERS = {
    "gcc": ["gcc", *STRICT, "-O2", "-c"],
    "clang": ["clang", *STRICT, "-O2", "-c"],
    "g++": ["g++", "-x", "c++", *STRICT_CXX11, "-O2", "-c"],
    "clang++": ["clang++", "-x", "c++", *STRICT_CXX11, "-O2", "-c"],
    "cortex-m4": ["arm-none-eabi-gcc", *STRICT, "-mcpu=cortex-m4", "-mthumb", "-Os", "-c"],
}


@pytest.mark.parametrize("compiler", sorted(COMPILERS))
def test_the_headers_compile_without_a_warning(compiler, tmp_path):
    """Every network's header in one translation unit, as C99, C++11 and for a Cortex-M4."""
    command = COMPILERS[compiler]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed here (.ci/run installs it)")
    source = ""
    for name, model in sorted(NETWORKS.items()):
        (tmp_path / f"n{name}.h").write_text(export_c(model, f"n{name}"))
        source += f'#define N{name.upper()}_IMPLEMENTATION\n#include "n{name}.h"\n'
    (tmp_path / "all.c").write_text(source)
    build = subprocess.run([*command, "all.c", "-o", "all.o"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert build.stderr == ""
