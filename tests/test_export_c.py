"""The C header: compiled with the local compiler, as C99 and as C++11 (under AddressSanitizer
and UndefinedBehaviorSanitizer where available), and compared with the spec itself
(intref.reference_scores), never with another form of it."""

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik import intref
from qmtik import quantization as q
from qmtik.c_check import STRICT, find_compiler, run_header, run_headers, sanitizers_work, spec_classes
from qmtik.export_c import ExportError, check_prefix, export_c
from qmtik.functions import process_output
from qmtik.integer_model import QuantizedModel

CC = find_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler ($CC, gcc, cc or clang) on this machine")


def compile_and_run(model, tmp: Path, codes, raw):
    """The header's scores, classes, input codes and probabilities (ASan and UBSan on when
    this compiler has them; a sanitizer report fails the run)."""
    got = run_header(model, codes, raw, tmp, CC)
    return got["scores"], got["classes"], got["raw_codes"], got["probabilities"]


def spec(model, codes):
    """The int8 scores the spec gives: what every header must compute, bit for bit."""
    return intref.reference_scores(model.layers, codes)


def assert_computes_the_spec(model, got: dict, codes, raw):
    """A header's results (run_header's dict) equal the spec's: scores and classes exactly, the
    input codes exactly, the float probabilities to float32 rounding."""
    want = spec(model, codes)
    np.testing.assert_array_equal(got["scores"], want)
    np.testing.assert_array_equal(got["classes"], spec_classes(model, want))
    np.testing.assert_array_equal(got["raw_codes"], model.quantize_inputs(raw))
    last = model.layers[-1]
    real = last.output_scale * (spec(model, model.quantize_inputs(raw)).astype(np.float64) - last.output_offset)
    np.testing.assert_allclose(got["probabilities"], process_output(model.output, real), rtol=1e-5, atol=1e-6)


def build(widths, activation="relu", per_channel=True, task="classification", output="softmax", seed=0, fixed=None):
    """A model laid out as the quantizer lays one out, with random codes; activation names the
    hidden layers' (one for all, or one each)."""
    rng = np.random.default_rng(seed)
    layers, scale, zero = [], q.INPUT_SCALE, q.INPUT_ZERO
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        kind = "linear" if i == len(widths) - 2 else activation if isinstance(activation, str) else activation[i]
        weight = rng.integers(-127, 128, (fan_out, fan_in)).astype(np.int8)
        base = 1.0 / np.sqrt(fan_in) / 127
        w_scale = rng.uniform(0.5, 2, fan_out) * base if per_channel else np.full(fan_out, base)
        bias = rng.integers(-20000, 20000, fan_out)
        observed = np.array([-3.0, 4.0]) if kind != "relu" else np.array([0.0, 4.0])
        out_scale, out_zero, pre = q.output_quantization(kind, observed, fixed)
        layers.append(intref.build_layer(weight, bias, w_scale, scale, zero, kind, out_scale, out_zero, pre, 0.1))
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
    "no-hidden": build((7, 4), seed=5),  # hidden = []: a header once unused scratch, -Werror
}


def inputs_for(model, rng, n=1500):
    codes = rng.integers(-128, 128, (n, model.inputs))
    codes[0], codes[1], codes[2] = -128, 127, 0  # the extremes of the int8 range
    codes[3:50] = rng.choice([-128, 127], codes[3:50].shape)
    return codes.astype(np.int8)


@needs_cc
@pytest.mark.parametrize("name", sorted(MODELS))
def test_header_scores_equal_python_bit_for_bit(name, tmp_path):
    model = MODELS[name]
    rng = np.random.default_rng(1)
    codes = inputs_for(model, rng)
    raw = np.concatenate(
        [
            rng.uniform(-2, 4, (200, model.inputs)),
            np.round(rng.uniform(-1, 3, (50, model.inputs)) * 255 / 4) * 4 / 255 - 1,
        ]
    )  # near-ties
    raw = raw.astype(np.float32)
    assert_computes_the_spec(model, run_header(model, codes, raw, tmp_path, CC), codes, raw)
    want = spec(model, codes)
    if model.outputs > 1:  # the rule spec_classes applies, by hand
        np.testing.assert_array_equal(spec_classes(model, want), want.argmax(axis=1))
    else:
        np.testing.assert_array_equal(spec_classes(model, want), want[:, 0] >= model.layers[-1].output_offset)


@needs_cc
def test_a_trained_digits_model_agrees_on_the_whole_test_set(digits, tmp_path):
    (x, y), (xt, yt) = digits
    net = qmtik.Network(qmtik.Config().replace("training.epochs", 3)).fit(x, y)
    model = net.quantize()
    codes = model.quantize_inputs(xt)
    scores, classes, raw_codes, proba = compile_and_run(model, tmp_path, codes, xt.astype(np.float32))
    np.testing.assert_array_equal(scores, spec(model, codes))
    np.testing.assert_array_equal(classes, spec(model, codes).argmax(axis=1))
    np.testing.assert_array_equal(raw_codes, codes)


@needs_cc
def test_two_models_live_in_one_program(tmp_path):
    (tmp_path / "a.h").write_text(export_c(MODELS["relu-17-3"], "alpha"))
    (tmp_path / "b.h").write_text(export_c(MODELS["leaky-tensor"], "beta"))
    (tmp_path / "a.c").write_text('#define ALPHA_IMPLEMENTATION\n#include "a.h"\n#include "b.h"\n')
    (tmp_path / "b.c").write_text(
        '#define BETA_IMPLEMENTATION\n#include "b.h"\n#include "a.h"\n'
        "int main(void) { int8_t i[17] = {0}, s[4], w[ALPHA_SCRATCH_BYTES];\n"
        "  int8_t j[9] = {0}, t[5], v[BETA_SCRATCH_BYTES];\n"
        "  return alpha_predict(i, s, w) + beta_predict(j, t, v) >= 0 ? 0 : 1; }\n"
    )
    build = subprocess.run(
        [CC, *STRICT, "a.c", "b.c", "-o", "both", "-lm"], cwd=tmp_path, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    assert subprocess.run([str(tmp_path / "both")]).returncode == 0


@needs_cc
def test_without_floating_point(tmp_path):
    (tmp_path / "net.h").write_text(export_c(MODELS["relu-17-3"], "net"))
    (tmp_path / "m.c").write_text(
        '#define NET_NO_FLOAT\n#define NET_IMPLEMENTATION\n#include "net.h"\n'
        "int main(void) { int8_t i[17] = {0}, s[4], w[NET_SCRATCH_BYTES];\n"
        "  return net_predict(i, s, w) >= 0 ? 0 : 1; }\n"
    )
    build = subprocess.run([CC, *STRICT, "-c", "m.c", "-o", "m.o"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    symbols = subprocess.run(["nm", "m.o"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "net_quantize_input" not in symbols and "expf" not in symbols


def test_the_header_is_deterministic_and_names_its_model(tmp_path):
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


COMPILERS = {
    "gcc": ["gcc", *STRICT, "-O2", "-c"],
    "clang": ["clang", *STRICT, "-O2", "-c"],
    "cortex-m4": ["arm-none-eabi-gcc", *STRICT, "-mcpu=cortex-m4", "-mthumb", "-Os", "-c"],
}


@pytest.mark.parametrize("compiler", sorted(COMPILERS))
@pytest.mark.parametrize(
    "name", ["sigmoid-4-layers", "leaky-tensor", "binary-sigmoid-output", "regression", "no-hidden"]
)
def test_the_header_compiles_without_a_warning(compiler, name, tmp_path):
    command = COMPILERS[compiler]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed here (.ci/run installs it)")
    (tmp_path / "net.h").write_text(export_c(MODELS[name], "net"))
    (tmp_path / "net.c").write_text('#define NET_IMPLEMENTATION\n#include "net.h"\n')
    build = subprocess.run([*command, "net.c", "-o", "net.o"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert build.stderr == ""


@needs_cc
@pytest.mark.skipif(
    not os.environ.get("CI"), reason="CI installs the sanitizer runtimes; elsewhere they may be missing"
)
def test_ci_runs_the_comparisons_under_sanitizers(tmp_path):
    assert sanitizers_work(CC, tmp_path)


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"


@needs_cc
def test_the_digits_example_builds_and_classifies(tmp_path, monkeypatch, capsys):
    """The example's README commands, on a short training run."""
    from qmtik.cli import main

    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE / "main.c", tmp_path / "main.c")
    assert main(["init", "digits.toml"]) == 0
    assert main(["train", "digits.toml", "--qmt", "digits.qmt", "--epochs", "8", "-q"]) == 0
    assert main(["export-c", "digits.qmt", "-o", "digits.h", "--check", "digits:test"]) == 0
    assert "0 score, 0 class and 0 input-code mismatches" in capsys.readouterr().out
    build = subprocess.run(
        [CC, *STRICT, "-O2", "main.c", "-o", "classify", "-lm"], cwd=tmp_path, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(tmp_path / "classify")], capture_output=True, text=True)
    model = qmtik.load_model(tmp_path / "digits.qmt")
    sample = np.array(
        [
            [
                0,
                0,
                0,
                1,
                11,
                0,
                0,
                0,
                0,
                0,
                0,
                7,
                8,
                0,
                0,
                0,
                0,
                0,
                1,
                13,
                6,
                2,
                2,
                0,
                0,
                0,
                7,
                15,
                0,
                9,
                8,
                0,
                0,
                5,
                16,
                10,
                0,
                16,
                6,
                0,
                0,
                4,
                15,
                16,
                13,
                16,
                1,
                0,
                0,
                0,
                0,
                3,
                15,
                10,
                0,
                0,
                0,
                0,
                0,
                2,
                16,
                4,
                0,
                0,
            ]
        ]
    )
    assert run.stdout.startswith(f"digit {spec(model, model.quantize_inputs(sample))[0].argmax()} (probability ")


def test_the_header_matches_the_golden_one_byte_for_byte():
    """A change to the generated C shows here; regenerate tests/golden/tiny.h on purpose only:
    PYTHONPATH=src python -c "import sys; sys.path.insert(0, 'tests'); import test_export_c as t;
    open('tests/golden/tiny.h', 'w').write(t.export_c(t.build((5, 3, 2), 'leaky_relu', seed=11), 'tiny'))"
    """
    golden = Path(__file__).parent / "golden" / "tiny.h"
    text = export_c(build((5, 3, 2), "leaky_relu", seed=11), "tiny").replace(qmtik.__version__, "VERSION")
    assert text == golden.read_text().replace(qmtik.__version__, "VERSION")


@needs_cc
@pytest.mark.parametrize("zero", [-128, -3])
def test_a_single_output_classifier_compiles_clean_whatever_its_zero_point(zero, tmp_path):
    model = build((5, 3, 1), output="sigmoid")
    model.layers[-1] = replace(model.layers[-1], output_offset=zero)
    (tmp_path / "net.h").write_text(export_c(model, "net"))
    (tmp_path / "net.c").write_text('#define NET_IMPLEMENTATION\n#include "net.h"\n')
    build_ = subprocess.run([CC, *STRICT, "-c", "net.c"], cwd=tmp_path, capture_output=True, text=True)
    assert build_.returncode == 0, build_.stderr
    codes = np.random.default_rng(0).integers(-128, 128, (300, 5)).astype(np.int8)
    scores, classes, _, _ = compile_and_run(model, tmp_path, codes, np.zeros((1, 5), np.float32))
    np.testing.assert_array_equal(scores, spec(model, codes))
    np.testing.assert_array_equal(classes, (spec(model, codes)[:, 0] >= zero).astype(int))


@needs_cc
def test_class_names_are_escaped_for_c(tmp_path):
    model = build((4, 3, 3))
    model.class_names = ('say "hi"\\', "??/ trigraph */ end", "ünïcode")
    (tmp_path / "net.h").write_text(export_c(model, "net"))
    (tmp_path / "m.c").write_text(
        '#define NET_IMPLEMENTATION\n#include "net.h"\n#include <stdio.h>\n'
        "static const char *names[] = NET_CLASS_NAMES;\n"
        'int main(void) { int k; for (k = 0; k < 3; ++k) printf("%s|", names[k]); return 0; }\n'
    )
    build_ = subprocess.run([CC, *STRICT, "m.c", "-o", "m", "-lm"], cwd=tmp_path, capture_output=True, text=True)
    assert build_.returncode == 0, build_.stderr
    out = subprocess.run([str(tmp_path / "m")], capture_output=True).stdout.decode()
    assert out == 'say "hi"\\|??/ trigraph */ end|ünïcode|'


# --- what export-c refuses, and a compile failure is never a success ----------------------------


def run_cli(capsys, argv) -> tuple[int, list, str]:
    """main(argv)'s exit code, its stderr lines and its stdout."""
    from qmtik.cli import main

    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, err.strip().splitlines(), out


def qmt_with(tmp_path, name, model, old: bytes, new: bytes):
    """model saved as tmp_path/name, with the bytes old (a field's value) replaced by new and
    the CRC made right again: a file that encode itself would refuse to write."""
    import struct
    import zlib

    blob = qmtik.qmtfile.encode(model)
    assert blob.count(old) == 1
    blob = blob.replace(old, new)[:-4]
    path = tmp_path / name
    path.write_bytes(blob + struct.pack("<I", zlib.crc32(blob)))
    return path


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("input_range", (-1e300, 1e300), "input range [-1e+300, 1e+300] must stay finite in float32"),
        ("input_range", (0.0, 1e-300), "input range [0.0, 1e-300] must stay finite in float32"),
        ("output_scale", 1e300, "layer 2: output_scale 1e+300 must lie from 1.18e-38"),
    ],
)
def test_export_c_of_a_model_float32_cannot_hold_fails_with_one_line(
    field, value, expected, tmp_path, capsys, monkeypatch
):
    """Such a model once gave a header with `inff` that did not compile, exit 0."""
    import struct

    monkeypatch.chdir(tmp_path)
    model = build((4, 3, 2), output="softmax")
    if field == "input_range":
        model.input_range = (-1.25, 2.5)
        path = qmt_with(tmp_path, "m.qmt", model, struct.pack("<dd", -1.25, 2.5), struct.pack("<dd", *value))
    else:
        model.layers[-1] = replace(model.layers[-1], output_scale=0.123456789)
        path = qmt_with(tmp_path, "m.qmt", model, struct.pack("<d", 0.123456789), struct.pack("<d", value))
    code, err, _ = run_cli(capsys, ["export-c", str(path), "-o", "m.h"])
    assert (code, len(err)) == (1, 1), err
    assert err[0].startswith("qmtik: error: model file ") and expected in err[0], err
    assert not (tmp_path / "m.h").exists()


@pytest.mark.parametrize("value", [1e300, -1e39, float("inf"), float("nan")])
def test_the_emitter_writes_no_float_that_float32_cannot_hold(value):
    from qmtik.export_c import c_float

    with pytest.raises(ExportError, match=r"^cannot export the model: its output scale .* is not a finite float32$"):
        c_float(value, "output scale")
    assert [c_float(v, "x") for v in (0.25, 1e-45, -1.0, 0.0, 1e20, 255 / 4, 0.1)] == [
        "0.25f",
        "1.40129846e-45f",
        "-1.0f",
        "0.0f",
        "1.00000002e+20f",
        "63.75f",
        "0.100000001f",
    ]


def float32_samples(n: int = 3000) -> np.ndarray:
    """Finite float32s of every kind: random bit patterns (subnormals, huge and tiny exponents,
    both signs), the edges of the range, and the scales qmtik writes."""
    bits = np.random.default_rng(5).integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    info = np.finfo(np.float32)
    edges = [info.max, -info.max, info.tiny, info.smallest_subnormal, -0.0, 1.0, 255 / 4, 4 / 255, 1 / 3]
    return np.concatenate([values[np.isfinite(values)], np.array(edges, np.float32)])


def test_every_float_literal_reads_back_as_its_float32():
    from qmtik.export_c import c_float

    for value in float32_samples():
        literal = c_float(value, "x")
        assert re.fullmatch(r"-?\d+(\.\d*)?(e[+-]\d+)?f", literal) and ("." in literal or "e" in literal), literal
        assert np.float32(float(literal[:-1])).tobytes() == value.tobytes(), literal


@pytest.mark.parametrize("language", ["c", "c++11"])
def test_the_compilers_read_every_float_literal_as_its_float32(language, tmp_path):
    """The decimal literals (C++11 has no hexadecimal ones), read by the compilers themselves."""
    from qmtik.c_check import LANGUAGES
    from qmtik.export_c import c_float

    cc = find_compiler(language)
    if cc is None:
        pytest.skip(f"no {language} compiler here")
    values = float32_samples()
    flags, suffix = LANGUAGES[language]
    (tmp_path / ("f" + suffix)).write_text(
        "#include <stdio.h>\n#include <string.h>\n#include <stdint.h>\n"
        f"static const float values[{len(values)}] = {{ {', '.join(c_float(v, 'x') for v in values)} }};\n"
        "int main(void) { uint32_t bits; size_t i; for (i = 0; i < sizeof values / sizeof values[0]; ++i) {\n"
        '  memcpy(&bits, &values[i], 4); printf("%lu\\n", (unsigned long)bits); } return 0; }\n'
    )
    build_ = subprocess.run([cc, *flags, "f" + suffix, "-o", "f"], cwd=tmp_path, capture_output=True, text=True)
    assert build_.returncode == 0, build_.stderr
    out = subprocess.run([str(tmp_path / "f")], capture_output=True, text=True).stdout.split()
    np.testing.assert_array_equal(np.array(out, dtype=np.uint64).astype(np.uint32), values.view(np.uint32))


@pytest.mark.parametrize(
    "bad",
    [
        "net\n",
        "net\r",
        " net",
        "_STDINT",
        "_net",
        "Net",
        "NET",
        "net__x",
        "net_",
        "a__",
        "é",
        "x" * 42,
        "9lives",
        "",
        None,
        5,
    ],
)
def test_a_prefix_that_is_not_a_lowercase_c_identifier_or_is_reserved_is_refused(bad):
    with pytest.raises(ExportError) as info:
        check_prefix(bad)
    assert "must be a lowercase C identifier" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("good", ["net", "a", "net2", "my_net_v2", "x" * 41, "int", "stdint"])
def test_a_lowercase_prefix_is_accepted(good):
    assert check_prefix(good) == good


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("Net.h", "net"),
        ("NET.h", "net"),
        ("my-model.v2.h", "my_model"),
        ("2nd  Net.h", "nd_net"),
        ("__init__.h", "init"),
        ("€.h", "model"),
        ("_STDINT.h", "stdint"),
        (("a_" * 30) + ".h", ("a_" * 20) + "a"),
    ],
)
def test_the_default_prefix_of_a_file_name_is_a_valid_one(name, prefix):
    from qmtik.export_c import prefix_from_name

    assert prefix_from_name(name) == check_prefix(prefix)


def test_export_c_to_an_upper_case_file_name_needs_no_prefix(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    qmtik.save_model("m.qmt", build((4, 3, 2)))
    code, err, out = run_cli(capsys, ["export-c", "m.qmt", "-o", "Net.h"])
    assert (code, err) == (0, []) and "prefix net" in out
    assert "int net_predict(" in (tmp_path / "Net.h").read_text()
    code, err, _ = run_cli(capsys, ["export-c", "m.qmt", "-o", "x.h", "--prefix", "net\n"])
    assert code == 2 and len(err) == 1 and "lowercase C identifier" in err[0]


@needs_cc
@pytest.mark.parametrize("prefix", ["acc", "accel", "out", "first", "count", "sum", "scratch", "input", "r", "w"])
def test_the_header_compiles_whatever_its_prefix(prefix, tmp_path):
    """Names of the generated code's own variables inside a prefix ('accel' holds 'acc') once
    broke the header: it was made by replacing text."""
    (tmp_path / f"{prefix}.h").write_text(export_c(MODELS["leaky-tensor"], prefix))
    (tmp_path / "m.c").write_text(f'#define {prefix.upper()}_IMPLEMENTATION\n#include "{prefix}.h"\n')
    build_ = subprocess.run([CC, *STRICT, "-fsyntax-only", "m.c"], cwd=tmp_path, capture_output=True, text=True)
    assert build_.returncode == 0, build_.stderr


@needs_cc
def test_the_check_compiles_and_runs_the_header_of_the_prefix_given(tmp_path):
    model = MODELS["leaky-tensor"]
    codes = inputs_for(model, np.random.default_rng(2), 300)
    got = run_header(model, codes, np.zeros((3, model.inputs), np.float32), tmp_path, CC, prefix="accel")
    np.testing.assert_array_equal(got["scores"], spec(model, codes))
    assert (tmp_path / "accel.h").read_text() == export_c(model, "accel")


@needs_cc
@pytest.mark.parametrize("options", [["--report"], ["--check", "digits:test"]])
def test_report_and_check_compile_the_header_written_and_fail_when_it_does_not_compile(
    options, tmp_path, capsys, monkeypatch
):
    """--report and --check once compiled a header of prefix 'net' (and --report without its
    float helpers), so a header that did not compile under the prefix written passed."""
    import qmtik.c_check

    monkeypatch.chdir(tmp_path)
    qmtik.save_model("m.qmt", build((64, 17, 10)))
    real = qmtik.c_check.export_c

    def broken(model, prefix="model"):  # an emitter bug that only some prefixes meet
        return real(model, prefix) + ("" if prefix == "net" else "#error this prefix breaks the header\n")

    monkeypatch.setattr(qmtik.c_check, "export_c", broken)
    code, err, _ = run_cli(capsys, ["export-c", "m.qmt", "-o", "digits.h", *options])
    assert (code, len(err)) == (1, 1), err
    assert err[0].startswith("qmtik: error: the header did not compile: ") and "this prefix breaks" in err[0]


@needs_cc
def test_report_compiles_the_float_helpers_too(tmp_path, capsys, monkeypatch):
    import qmtik.c_check

    monkeypatch.chdir(tmp_path)
    qmtik.save_model("m.qmt", build((4, 3, 2)))
    real = qmtik.c_check.export_c
    monkeypatch.setattr(
        qmtik.c_check, "export_c", lambda model, prefix="model": real(model, prefix).replace("expf(", "no_such_expf(")
    )
    code, err, _ = run_cli(capsys, ["export-c", "m.qmt", "-o", "m.h", "--report"])
    assert (code, len(err)) == (1, 1) and "the header did not compile" in err[0], err


# --- C++11: the header wraps its declarations in extern "C", so it must be C++ too ------------


def small_inputs(model, seed: int, n: int = 60):
    """A few int8 code vectors (the extremes first) and raw inputs (near-ties among them)."""
    rng = np.random.default_rng(seed)
    codes = inputs_for(model, rng, n)
    raw = np.concatenate(
        [
            rng.uniform(-2, 4, (20, model.inputs)),
            np.round(rng.uniform(-1, 3, (20, model.inputs)) * 255 / 4) * 4 / 255 - 1,
        ]
    )
    return codes, raw.astype(np.float32)


@pytest.mark.parametrize("cxx", ["g++", "clang++"])
def test_the_header_is_cpp11_and_computes_the_spec(cxx, tmp_path):
    """Hexadecimal float literals (C++17) once made the header fail as C++11. Every layer kind and
    output, in one program: -std=c++11 -Wall -Wextra -Werror -pedantic -Wconversion -Wshadow."""
    if shutil.which(cxx) is None:
        pytest.skip(f"{cxx} is not installed here")
    names = [
        "leaky-tensor",
        "sigmoid-4-layers",
        "tanh-fixed",
        "binary-sigmoid-output",
        "regression",
        "width-1",
        "no-hidden",
    ]
    runs = [(f"m{k}", MODELS[name], *small_inputs(MODELS[name], k)) for k, name in enumerate(names)]
    results = run_headers(runs, tmp_path, shutil.which(cxx), language="c++11")
    for (_, model, codes, raw), got in zip(runs, results):
        assert_computes_the_spec(model, got, codes, raw)


# --- names: no prefix can clash with a name the header uses -------------------------------------


def header_identifiers() -> set:
    """Every lowercase identifier in the code of the headers of all MODELS (comments and string
    literals left out), but the ones the prefix makes: the names a prefix could clash with."""
    words = set()
    for model in MODELS.values():
        code = re.sub(r"/\*.*?\*/|\"(?:\\.|[^\"\\])*\"", " ", export_c(model, "qq"), flags=re.S)
        code = re.sub(r"(?<!\w)\.?\d(?:[eEpP][+-]|[\w.])*", " ", code)  # C's preprocessing numbers
        words |= set(re.findall(r"\b[a-z_][a-z0-9_]*\b", code))
    return {w for w in words if not w.startswith("qq_")}


IDENTIFIERS = (
    "acc",
    "sum",
    "first",
    "count",
    "o",
    "i",
    "w",
    "r",
    "k",
    "best",
    "in",
    "out",
    "input",
    "scores",
    "scratch",
    "buffers",
    "total",
    "top",
    "u",
    "product",
    "magnitude",
    "value",
    "low",
    "high",
    "raw",
    "shift",
    "multiplier",
    "int8_t",
    "int32_t",
    "int64_t",
    "uint8_t",
    "expf",
    "const",
    "static",
    "int",
    "void",
    "float",
    "return",
)


@needs_cc
def test_a_prefix_equal_to_or_holding_any_name_the_header_uses_compiles_and_computes_the_spec(tmp_path):
    """The header was once made by replacing text ('acc' -> 'acc[o]'), so 'accel' broke it. Each
    identifier of the header's code, as the prefix and twice inside another (first, then last),
    on models that between them take every path of the templates; all in one C99 program."""
    names = sorted(header_identifiers())
    assert set(IDENTIFIERS) <= set(names), set(IDENTIFIERS) - set(names)
    shapes = [
        build((9, 7, 5, 4, 6, 3), ("leaky_relu", "sigmoid", "tanh", "relu")),
        build((5, 3, 1), output="sigmoid"),
        build((4, 6, 2), "tanh", task="regression", output="linear"),
    ]
    runs, seen = [], set()
    for k, word in enumerate(names):
        for shape, prefix in zip((shapes[k % 3], shapes[(k + 1) % 3]), (word, f"{word}x{word}")):
            if prefix in seen:
                continue
            try:
                check_prefix(prefix)
            except ExportError:
                continue  # '_' first, '__' inside: no prefix can
            seen.add(prefix)
            runs.append((prefix, shape, *small_inputs(shape, len(runs), 8)))
    assert {"acc", "accxacc", "in", "inxin", "i", "o", "w"} <= seen
    results = run_headers(runs, tmp_path, CC, sanitize=False, optimize="-O0")
    for (_, model, codes, raw), got in zip(runs, results):
        assert_computes_the_spec(model, got, codes, raw)


# --- the templates: packaged, every one used, and the emitter only fills holes --------------------

SRC = Path(__file__).resolve().parents[1] / "src" / "qmtik"


def test_the_templates_are_package_data():
    """An installed wheel must carry them: pyproject's package-data globs cover every template."""
    import fnmatch

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    pyproject = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["qmtik"]
    files = sorted(path.relative_to(SRC).as_posix() for path in (SRC / "templates").iterdir())
    assert files == [
        "templates/dense.h.in",
        "templates/harness.c.in",  # the emulated check's (cross.py)
        "templates/header.h.in",
        "templates/link.ld.in",
        "templates/outputs.h.in",
        "templates/requantize.h.in",
        "templates/startup.c.in",
        "templates/windows.h.in",
    ]
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)


def test_every_template_is_used_and_every_hole_filled(monkeypatch):
    """The models between them use each template of each file; a hole left out is one line."""
    import qmtik.export_c as ex
    from test_export_c_windows import NETWORKS

    used, real = set(), ex.fill

    def fill(name, section, **values):
        used.add((name, section))
        return real(name, section, **values)

    monkeypatch.setattr(ex, "fill", fill)
    single = build((5, 3, 1), output="sigmoid")
    single.layers[-1] = replace(single.layers[-1], output_offset=-128)
    named = build((4, 3, 3))
    named.class_names = ("a", "b", "c")
    for model in [*MODELS.values(), single, named, *NETWORKS.values()]:
        export_c(model, "net")
    every = {
        (name, section)
        for name in ("header.h.in", "requantize.h.in", "dense.h.in", "outputs.h.in", "windows.h.in")
        for section in ex.templates(name)
    }
    assert used == every and len(every) == 40  # windows.h.in: 5 kinds, 2 fused kernels and their 5 pool steps
    with pytest.raises(ExportError, match=r"^template dense.h.in, layer: no value for inputs$"):
        real("dense.h.in", "layer", p="p", n="n", outputs=1, requantize="", activate="", activation="")


def test_the_emitter_fills_holes_and_never_edits_generated_text():
    """The header was once made by replacing text in it ('acc' -> 'acc[o]'), which broke on the
    first prefix holding 'acc': no replace or re.sub on generated code may come back."""
    source = (SRC / "export_c.py").read_text()
    assert ".replace(" not in source and "re.sub(" not in source


def test_check_counts_each_disagreeing_sample_once(monkeypatch):
    """A sample whose scores and class both differ is one mismatched sample, not two."""
    from qmtik import c_check

    model = MODELS["relu-17-3"]
    x = np.random.default_rng(2).uniform(-1, 3, (6, model.inputs)).astype(np.float32)
    codes = model.quantize_inputs(x)
    want = intref.reference_scores(model.layers, codes)

    def header_output(model_, codes_, raw, folder, prefix="net"):
        scores = want.copy()
        scores[1] = np.where(scores[1] == 127, 126, scores[1] + 1)  # sample 1: scores and class
        classes = spec_classes(model, want)
        classes[1] = (classes[1] + 1) % model.outputs
        raw_codes = codes.copy()
        raw_codes[4, 0] = raw_codes[4, 0] ^ 1  # sample 4: an input code
        return {"scores": scores, "classes": classes, "raw_codes": raw_codes, "sanitized": False}

    monkeypatch.setattr(c_check, "run_header", header_output)
    result = c_check.check(model, x)
    assert (result["score_mismatches"], result["class_mismatches"], result["input_mismatches"]) == (1, 1, 1)
    assert result["mismatched_samples"] == 2


def test_save_header_writes_the_header_export_c_makes(tmp_path):
    model = MODELS["relu-17-3"]
    text = qmtik.save_header(tmp_path / "net.h", model, "net")
    assert text == export_c(model, "net") and (tmp_path / "net.h").read_text() == text


def test_the_header_names_its_model_by_the_qmt_files_own_crc():
    """The CRC macro is the .qmt file's CRC field (a CRC of a whole file that ends in its own
    CRC is the same constant for every file: the header named every model 0x2144df1c)."""
    import struct

    from qmtik import qmtfile

    texts = [export_c(build((5, 3, 2), "leaky_relu", seed=seed), "tiny") for seed in (11, 12)]
    crcs = [int(text.split("#define TINY_CRC32 0x")[1][:8], 16) for text in texts]
    assert crcs[0] != crcs[1]
    blob = qmtfile.encode(build((5, 3, 2), "leaky_relu", seed=11))
    assert crcs[0] == struct.unpack("<I", blob[-4:])[0]
