"""qmtik.selftest and the header's PREFIX_selftest on the host: the constants' CRC-32 is zlib's
over their little-endian bytes, the generated inputs are xorshift32's, the chosen cases drive
every layer to an int8 limit, and the compiled self-test passes on every model kind (ASan and
UBSan) and fails, with the code of the check, on a flipped constant and on a wrong kernel."""

import re
import struct
import subprocess
import zlib

import numpy as np
import pytest

from qmtik import intref, selftest
from qmtik.c_check import SANITIZE, STRICT, STRICT_CXX11, find_compiler, sanitizers_work
from qmtik.export_c import export_c
from test_export_c import MODELS, build
from test_export_c_windows import NETWORKS

CC = find_compiler("c")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")
ALL = {**MODELS, **{f"cnn-{name}": model for name, model in NETWORKS.items()}}


def test_the_constants_crc_is_zlibs_over_the_arrays_little_endian_bytes():
    """Packed here value by value with struct, in the header's order: weights, bias,
    multiplier, shift, leaky relu's two, the table."""
    for model in (MODELS["leaky-tensor"], MODELS["sigmoid-4-layers"], NETWORKS["2d"]):
        blob = b""
        for layer in model.layers:
            if not isinstance(layer, intref.IntegerLayer):
                continue
            blob += struct.pack(f"<{layer.weights.size}b", *layer.weights.reshape(-1).tolist())
            blob += struct.pack(f"<{layer.bias.size}i", *layer.bias.tolist())
            blob += struct.pack(f"<{layer.output_multiplier.size}i", *layer.output_multiplier.tolist())
            blob += struct.pack(f"<{layer.output_shift.size}B", *layer.output_shift.tolist())
            if layer.activation == "leaky_relu":
                blob += struct.pack(f"<{layer.negative_multiplier.size}i", *layer.negative_multiplier.tolist())
                blob += struct.pack(f"<{layer.negative_shift.size}B", *layer.negative_shift.tolist())
            if layer.table is not None:
                blob += struct.pack("<256b", *layer.table.tolist())
        assert selftest.constants_crc(model.layers) == zlib.crc32(blob)
        assert f"#define NET_CONSTANTS_CRC32 0x{zlib.crc32(blob):08x}u\n" in export_c(model, "net")


def test_the_inputs_are_xorshift32s():
    """xorshift32 from 1 gives 270369, 67634689, 2647435461 (by hand: 1 ^ 1 << 13 = 8193, >> 17
    changes nothing, ^ << 5 makes 270369): uniform codes are the top bytes less 128, extremes the
    top bits; a fill is seed - 128."""
    words = np.array([270369, 67634689, 2647435461])
    assert selftest.xorshift_codes(selftest.UNIFORM, 1, 3).tolist() == ((words >> 24) - 128).tolist()
    assert selftest.xorshift_codes(selftest.EXTREMES, 1, 3).tolist() == [-128, -128, 127]
    assert selftest.xorshift_codes(selftest.FILL, 255, 2).tolist() == [127, 127]


def test_the_crc_table_is_zlibs_by_nibbles():
    table = selftest.nibble_table()
    data, crc = bytes(range(256)) * 3, 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        crc = (crc >> 4) ^ table[crc & 15]
        crc = (crc >> 4) ^ table[crc & 15]
    assert crc ^ 0xFFFFFFFF == zlib.crc32(data)


def reached(model, cases) -> list:
    """Per layer with weights, whether the cases' codes reach one of its limits."""
    codes, out = selftest.case_inputs(cases, model.inputs), []
    for layer in model.layers:
        codes = intref.layer_forward(codes, layer)
        if isinstance(layer, intref.IntegerLayer):  # a pool has no clamp
            low, high = selftest.limits(layer)
            out.append(bool(((codes == low) | (codes == high)).any()))
    return out


@pytest.mark.parametrize("name", ["relu-17-3", "binary-sigmoid-output", "relu-one-wide", "cnn-1d", "cnn-2d"])
def test_the_chosen_seeds_bring_the_most_layers_to_a_limit(name):
    """Among the candidates, the chosen uniform and extreme seeds reach the most layers' limits
    (saturation); on these random models every layer or the first ones (their weights are small
    against their output ranges: a trained model's are not)."""
    model = ALL[name]
    cases = selftest.choose_cases(model)
    assert cases[:2] == [(selftest.FILL, 0), (selftest.FILL, 255)] and len(cases) == 4
    for pattern, seed in cases[2:]:
        best = max(sum(reached(model, [(pattern, s)])) for s in selftest.SEEDS)
        assert sum(reached(model, [(pattern, seed)])) == best
    got = reached(model, cases)
    assert all(got) if name in ("relu-17-3", "binary-sigmoid-output") else got[0]


def program(headers: dict, tmp_path, flags=(), runner=None) -> subprocess.CompletedProcess:
    """One program holding every header (prefix: text), printing each self-test's result."""
    lines = []
    for prefix, text in headers.items():
        (tmp_path / f"{prefix}.h").write_text(text)
        lines.append(f'#define {prefix.upper()}_IMPLEMENTATION\n#include "{prefix}.h"')
    calls = "".join(
        f"    {{ static int8_t s[{p.upper()}_SCRATCH_BYTES + {p.upper()}_SELFTEST_SCRATCH_BYTES];"
        f' printf("%d\\n", {p}_selftest(s)); }}\n'
        for p in headers
    )
    source = (
        "#include <stdio.h>\n" + "\n".join(lines) + "\nint main(void)\n{\n" + (runner or calls) + "    return 0;\n}\n"
    )
    (tmp_path / "main.c").write_text(source)
    done = subprocess.run(
        [CC, *STRICT, *flags, "main.c", "-o", "main", "-lm"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True, timeout=60)


@needs_cc
def test_every_models_selftest_passes_under_sanitizers(tmp_path):
    """Dense (every activation and output kind) and convolutional (arena) headers, one program."""
    flags = [*SANITIZE, "-O1"] if sanitizers_work(CC, tmp_path) else ["-O1"]
    headers = {f"m{k}": export_c(model, f"m{k}") for k, model in enumerate(ALL.values())}
    run = program(headers, tmp_path, flags)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0"] * len(ALL)


def flipped(text: str, prefix: str) -> str:
    """The header with one weight changed by one (a constant flipped in flash)."""
    head, tail = text.split(f"{prefix}__l0_weights[", 1)
    size, rest = tail.split("] = {\n    ", 1)
    first, rest = rest.split(",", 1)
    return f"{head}{prefix}__l0_weights[{size}] = {{\n    {int(first) ^ 1},{rest}"


def off_by_one_shift(text: str) -> str:
    """The header with a rounding shift off by one: a deliberately wrong kernel."""
    line = "product) + half) >> shift;"
    assert text.count(line) == 1
    return text.replace(line, "product) + half) >> (shift + 1);")


@needs_cc
def test_a_flipped_constant_and_a_wrong_kernel_are_caught_and_named(tmp_path):
    model = build((23, 9, 4), "tanh", seed=8)
    text = export_c(model, "a")
    headers = {
        "a": text,
        "b": flipped(export_c(model, "b"), "b"),
        "c": off_by_one_shift(export_c(model, "c")),
        "d": off_by_one_shift(flipped(export_c(model, "d"), "d")),
    }
    run = program(headers, tmp_path, ["-O1"])
    assert run.stdout.split()[0] == "0" and run.stdout.split()[2:] == ["2", "3"]
    assert run.stdout.split()[1] in ("1", "3")  # a flipped weight may change the scores too
    assert re.search(r"#define A_SELFTEST_CONSTANTS 1\n#define A_SELFTEST_OUTPUTS 2\n", text)


@needs_cc
def test_no_selftest_leaves_it_out_and_the_rest_compiles_as_cpp(tmp_path):
    model = MODELS["regression"]
    text = export_c(model, "net")
    (tmp_path / "net.h").write_text(text)
    (tmp_path / "a.c").write_text('#define NET_NO_SELFTEST\n#define NET_IMPLEMENTATION\n#include "net.h"\n')
    done = subprocess.run([CC, *STRICT, "-c", "a.c"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = subprocess.run(["nm", "a.o"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "net_predict" in names and "selftest" not in names and "crc" not in names
    cxx = find_compiler("c++11")
    if cxx:
        (tmp_path / "b.cpp").write_text(
            '#define NET_IMPLEMENTATION\n#include "net.h"\nint main() { static int8_t '
            "s[NET_SCRATCH_BYTES + NET_SELFTEST_SCRATCH_BYTES]; return net_selftest(s); }\n"
        )
        done = subprocess.run([cxx, *STRICT_CXX11, "b.cpp", "-o", "b"], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert subprocess.run(["./b"], cwd=tmp_path).returncode == 0


def test_the_extra_scratch_is_the_input_and_scores_or_the_scores_after_an_arena():
    dense, cnn = MODELS["relu-one-wide"], NETWORKS["2d"]
    assert f"#define NET_SELFTEST_SCRATCH_BYTES {dense.inputs + dense.outputs}\n" in export_c(dense, "net")
    assert f"#define NET_SELFTEST_SCRATCH_BYTES {cnn.outputs}\n" in export_c(cnn, "net")
