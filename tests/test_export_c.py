"""The C header: compiled with the local compiler (under AddressSanitizer and
UndefinedBehaviorSanitizer where available) and compared with the Python integer model."""
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik import quantization as q
from qmtik.export_c import ExportError, check_prefix, export_c
from qmtik.model import QuantizedModel

CC = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (gcc, cc or clang) on this machine")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-Wshadow"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover"]

DRIVER = r"""
#define NET_IMPLEMENTATION
#include "net.h"
#include <stdio.h>
#include <stdlib.h>

/* stdin: int32 n, n inputs of int8 codes, int32 m, m raw float inputs.
   stdout: per code input the int8 scores and the int32 class; per raw input its int8 codes
   and the float probabilities of its scores. */
int main(void)
{
    int32_t n, m, i, c;
    int8_t input[NET_INPUTS], scores[NET_OUTPUTS];
    int8_t *scratch = malloc(NET_SCRATCH_BYTES);    /* the heap, so that ASan sees overruns */
    float raw[NET_INPUTS], probabilities[NET_OUTPUTS];
    if (!scratch || fread(&n, 4, 1, stdin) != 1) return 2;
    for (i = 0; i < n; ++i) {
        if (fread(input, 1, NET_INPUTS, stdin) != NET_INPUTS) return 3;
        c = net_predict(input, scores, scratch);
        fwrite(scores, 1, NET_OUTPUTS, stdout);
        fwrite(&c, 4, 1, stdout);
    }
    if (fread(&m, 4, 1, stdin) != 1) return 4;
    for (i = 0; i < m; ++i) {
        if (fread(raw, 4, NET_INPUTS, stdin) != NET_INPUTS) return 5;
        net_quantize_input(raw, input);
        net_predict(input, scores, scratch);
        net_probabilities(scores, probabilities);
        fwrite(input, 1, NET_INPUTS, stdout);
        fwrite(probabilities, 4, NET_OUTPUTS, stdout);
    }
    free(scratch);
    return 0;
}
"""


def sanitizers_work(tmp: Path) -> bool:
    """Whether this compiler can build with ASan and UBSan (libasan and libubsan present)."""
    source = tmp / "probe.c"
    source.write_text("int main(void) { return 0; }\n")
    done = subprocess.run([CC, *SANITIZE, str(source), "-o", str(tmp / "probe")], capture_output=True)
    return done.returncode == 0


def compile_and_run(model, tmp: Path, codes, raw):
    """Build the driver against the model's header and run it on codes and raw inputs."""
    (tmp / "net.h").write_text(export_c(model, "net"))
    (tmp / "driver.c").write_text(DRIVER)
    flags = [*STRICT, "-O1", "-g"] + (SANITIZE if sanitizers_work(tmp) else [])
    build = subprocess.run([CC, *flags, "driver.c", "-o", "driver", "-lm"], cwd=tmp, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    stdin = (struct.pack("<i", len(codes)) + codes.astype(np.int8).tobytes()
             + struct.pack("<i", len(raw)) + raw.astype("<f4").tobytes())
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"}
    run = subprocess.run([str(tmp / "driver")], input=stdin, capture_output=True, env=env)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    out = run.stdout
    per_code = model.outputs + 4
    scores = np.frombuffer(out, np.int8, count=len(codes) * per_code).reshape(len(codes), per_code)
    classes = scores[:, model.outputs:].copy().view("<i4")[:, 0]
    rest = out[len(codes) * per_code:]
    per_raw = model.inputs + 4 * model.outputs
    assert len(rest) == len(raw) * per_raw
    raw_rows = [rest[i * per_raw:(i + 1) * per_raw] for i in range(len(raw))]
    raw_codes = np.array([np.frombuffer(r[:model.inputs], np.int8) for r in raw_rows]).reshape(len(raw), -1)
    proba = np.array([np.frombuffer(r[model.inputs:], "<f4") for r in raw_rows]).reshape(len(raw), -1)
    return scores[:, :model.outputs], classes, raw_codes, proba


def build(widths, activation="relu", per_channel=True, task="classification", output="softmax", seed=0,
          fixed=None):
    """A model laid out as the quantizer lays one out, with random codes."""
    rng = np.random.default_rng(seed)
    layers, scale, zero = [], q.INPUT_SCALE, q.INPUT_ZERO
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        kind = activation if i < len(widths) - 2 else "linear"
        weight = rng.integers(-127, 128, (fan_out, fan_in)).astype(np.int8)
        base = 1.0 / np.sqrt(fan_in) / 127
        w_scale = rng.uniform(0.5, 2, fan_out) * base if per_channel else np.full(fan_out, base)
        bias = rng.integers(-20000, 20000, fan_out)
        observed = np.array([-3.0, 4.0]) if kind != "relu" else np.array([0.0, 4.0])
        out_scale, out_zero, pre = q.output_quantization(kind, observed, fixed)
        layers.append(q.build_layer(weight, bias, w_scale, scale, zero, kind, out_scale, out_zero, pre, 0.1))
        scale, zero = out_scale, out_zero
    return QuantizedModel(task, output, (-1.0, 3.0), layers)


MODELS = {
    "relu-17-3": build((17, 3, 4)),
    "leaky-tensor": build((9, 17, 5), "leaky_relu", per_channel=False),
    "sigmoid-4-layers": build((6, 17, 3, 1, 300, 5), "sigmoid"),
    "tanh-fixed": build((300, 17, 3), "tanh", fixed=0.05),
    "relu-one-wide": build((784, 300, 10), seed=3),
    "binary-sigmoid-output": build((5, 3, 1), output="sigmoid"),
    "regression": build((4, 17, 17, 2), "tanh", task="regression", output="linear"),
    "width-1": build((1, 1, 1, 3), "relu", seed=4),
}


def inputs_for(model, rng, n=1500):
    codes = rng.integers(-128, 128, (n, model.inputs))
    codes[0], codes[1], codes[2] = -128, 127, 0                    # the extremes of the int8 range
    codes[3:50] = rng.choice([-128, 127], (47, model.inputs))
    return codes.astype(np.int8)


@needs_cc
@pytest.mark.parametrize("name", sorted(MODELS))
def test_header_scores_equal_python_bit_for_bit(name, tmp_path):
    model = MODELS[name]
    rng = np.random.default_rng(1)
    codes = inputs_for(model, rng)
    raw = np.concatenate([rng.uniform(-2, 4, (200, model.inputs)),
                          np.round(rng.uniform(-1, 3, (50, model.inputs)) * 255 / 4) * 4 / 255 - 1])  # near-ties
    raw = raw.astype(np.float32)
    scores, classes, raw_codes, proba = compile_and_run(model, tmp_path, codes, raw)
    np.testing.assert_array_equal(scores, model.scores(codes))
    last = model.layers[-1]
    if model.outputs > 1:
        np.testing.assert_array_equal(classes, model.scores(codes).argmax(axis=1))
    else:
        np.testing.assert_array_equal(classes, (model.scores(codes)[:, 0] >= last.out_zero).astype(int))
    np.testing.assert_array_equal(raw_codes, model.quantize_inputs(raw))
    np.testing.assert_allclose(proba, model.predict_proba(raw), rtol=1e-5, atol=1e-6)


@needs_cc
def test_a_trained_digits_model_agrees_on_the_whole_test_set(digits, tmp_path):
    (x, y), (xt, yt) = digits
    net = qmtik.Network(qmtik.Config().replace("training.epochs", 3)).fit(x, y)
    model = net.quantize()
    codes = model.quantize_inputs(xt)
    scores, classes, raw_codes, proba = compile_and_run(model, tmp_path, codes, xt.astype(np.float32))
    np.testing.assert_array_equal(scores, model.scores(codes))
    np.testing.assert_array_equal(classes, model.predict(xt))
    np.testing.assert_array_equal(raw_codes, codes)


@needs_cc
def test_two_models_live_in_one_program(tmp_path):
    (tmp_path / "a.h").write_text(export_c(MODELS["relu-17-3"], "alpha"))
    (tmp_path / "b.h").write_text(export_c(MODELS["leaky-tensor"], "beta"))
    (tmp_path / "a.c").write_text('#define ALPHA_IMPLEMENTATION\n#include "a.h"\n#include "b.h"\n')
    (tmp_path / "b.c").write_text('#define BETA_IMPLEMENTATION\n#include "b.h"\n#include "a.h"\n'
                                  "int main(void) { int8_t i[17] = {0}, s[4], w[ALPHA_SCRATCH_BYTES];\n"
                                  "  int8_t j[9] = {0}, t[5], v[BETA_SCRATCH_BYTES];\n"
                                  "  return alpha_predict(i, s, w) + beta_predict(j, t, v) >= 0 ? 0 : 1; }\n")
    build = subprocess.run([CC, *STRICT, "a.c", "b.c", "-o", "both", "-lm"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert subprocess.run([str(tmp_path / "both")]).returncode == 0


@needs_cc
def test_without_floating_point(tmp_path):
    (tmp_path / "net.h").write_text(export_c(MODELS["relu-17-3"], "net"))
    (tmp_path / "m.c").write_text("#define NET_NO_FLOAT\n#define NET_IMPLEMENTATION\n#include \"net.h\"\n"
                                  "int main(void) { int8_t i[17] = {0}, s[4], w[NET_SCRATCH_BYTES];\n"
                                  "  return net_predict(i, s, w) >= 0 ? 0 : 1; }\n")
    build = subprocess.run([CC, *STRICT, "-c", "m.c", "-o", "m.o"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    symbols = subprocess.run(["nm", "m.o"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "net_quantize_input" not in symbols and "expf" not in symbols


def test_the_header_is_deterministic_and_names_its_model():
    model = MODELS["relu-17-3"]
    text = export_c(model, "digits")
    assert text == export_c(model, "digits")
    assert "#define DIGITS_INPUTS 17" in text and "#define DIGITS_SCRATCH_BYTES 6" in text
    assert f"qmtik {qmtik.__version__}" in text and "CRC-32 0x" in text
    assert "malloc(" not in text
    # every static that is not const is a function: no mutable state
    assert all("(" in line for line in text.splitlines() if line.startswith("static ") and "const" not in line)


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", "x" * 42, "a b"])
def test_a_bad_prefix_is_refused(bad):
    with pytest.raises(ExportError, match="C identifier"):
        check_prefix(bad)
