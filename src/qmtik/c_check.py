"""Compile an exported header with the local C or C++ compiler: run it against the spec, measure it.

Used by `qmtik export-c --check` and `--report`, by the tests and by the benchmark. Nothing
here is needed to use a header; it only proves and measures one.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from string import Template

import numpy as np

from . import intref
from .errors import CompilerError
from .export_c import export_c
from .integer_model import QuantizedModel, arena_plan, layer_memory, memory_needs

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-Wshadow"]
STRICT_CXX11 = ["-std=c++11", *STRICT[1:]]  # the header is C++ too: its declarations are extern "C"
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover"]
LANGUAGES = {"c": (STRICT, ".c"), "c++11": (STRICT_CXX11, ".cpp")}

RUNNER = Template(r"""
#define ${P}_IMPLEMENTATION
#include "${p}.h"

/* stdin: int32 n, n inputs of int8 codes, int32 m, m raw float inputs.
   stdout: per code input the int8 scores and the int32 class; per raw input its int8 codes
   and the float probabilities of its scores. */
static int run_${p}(void)
{
    int32_t n, m, i, c;
    int8_t input[${P}_INPUTS], scores[${P}_OUTPUTS];
    int8_t *scratch = (int8_t *)malloc(${P}_SCRATCH_BYTES);   /* on the heap, so that ASan sees overruns */
    float raw[${P}_INPUTS], probabilities[${P}_OUTPUTS];
    if (!scratch || fread(&n, 4, 1, stdin) != 1) return 2;
    for (i = 0; i < n; ++i) {
        if (fread(input, 1, ${P}_INPUTS, stdin) != ${P}_INPUTS) return 3;
        c = ${p}_predict(input, scores, scratch);
        fwrite(scores, 1, ${P}_OUTPUTS, stdout);
        fwrite(&c, 4, 1, stdout);
    }
    if (fread(&m, 4, 1, stdin) != 1) return 4;
    for (i = 0; i < m; ++i) {
        if (fread(raw, 4, ${P}_INPUTS, stdin) != ${P}_INPUTS) return 5;
        ${p}_quantize_input(raw, input);
        ${p}_predict(input, scores, scratch);
        ${p}_probabilities(scores, probabilities);
        fwrite(input, 1, ${P}_INPUTS, stdout);
        fwrite(probabilities, 4, ${P}_OUTPUTS, stdout);
    }
    free(scratch);
    return 0;
}
""")  # one header of prefix p, as export-c writes it, run on its part of stdin (C99 and C++11)

MAIN = Template(r"""
int main(void)
{
    static int (*const runs[])(void) = { ${runs} };
    size_t k;
    for (k = 0; k < sizeof runs / sizeof runs[0]; ++k) {
        int status = runs[k]();
        if (status != 0) {
            fprintf(stderr, "header %d of %d: input ended early (%d)\n", (int)k + 1,
                    (int)(sizeof runs / sizeof runs[0]), status);
            return status;
        }
    }
    return 0;
}
""")  # the headers in turn, each reading its own part of stdin


def first_error(stderr: str) -> str:
    """The compiler's first 'error:' line (or its first line), for a one-line message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if "error:" in line), lines[0] if lines else "no message")


def find_compiler(language: str = "c") -> str | None:
    """The local compiler of language ("c": $CC, else gcc, cc or clang; "c++11": $CXX, else
    g++, c++ or clang++); None when there is none."""
    names = ("CC", "gcc", "cc", "clang") if language == "c" else ("CXX", "g++", "c++", "clang++")
    for name in (os.environ.get(names[0]), *names[1:]):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def sanitizers_work(cc: str, folder: Path, language: str = "c") -> bool:
    """Whether cc can build with ASan and UBSan here (their runtimes installed)."""
    source = folder / ("probe" + LANGUAGES[language][1])
    source.write_text("int main(void) { return 0; }\n")
    return (
        subprocess.run([cc, *SANITIZE, str(source), "-o", str(folder / "probe")], capture_output=True).returncode == 0
    )


def run_header(
    model: QuantizedModel,
    codes,
    raw,
    folder: Path,
    cc: str | None = None,
    sanitize: bool = True,
    prefix: str = "net",
    language: str = "c",
) -> dict:
    """Compile the model's header of prefix (the very text export-c writes with it) with a
    driver in language, "c" (C99) or "c++11" (strict warnings, sanitizers when available),
    run it on int8 codes and raw float inputs, and return what it computed."""
    return run_headers([(prefix, model, codes, raw)], folder, cc, sanitize, language)[0]


def run_headers(
    runs, folder: Path, cc: str | None = None, sanitize: bool = True, language: str = "c", optimize: str = "-O1"
) -> list:
    """run_header for several (prefix, model, codes, raw), all headers in one program (so
    their names must not clash): one compile, one run, one result per header."""
    flags, suffix = LANGUAGES[language]
    cc = cc or find_compiler(language)
    if cc is None:
        raise CompilerError(
            f"no {language.upper()} compiler found (tried "
            f"{'$CC, gcc, cc, clang' if language == 'c' else '$CXX, g++, c++, clang++'})"
        )
    folder = Path(folder)
    stdin, parts = b"", []
    for prefix, model, codes, raw in runs:
        (folder / f"{prefix}.h").write_text(export_c(model, prefix))
        codes = np.asarray(codes, dtype=np.int8).reshape(-1, model.inputs)
        raw = np.asarray(raw, dtype="<f4").reshape(-1, model.inputs)
        stdin += struct.pack("<i", len(codes)) + codes.tobytes() + struct.pack("<i", len(raw)) + raw.tobytes()
        parts.append((model, len(codes), len(raw)))
    driver = (
        "#include <stdio.h>\n#include <stdlib.h>\n"
        + "".join(RUNNER.substitute(p=prefix, P=prefix.upper()) for prefix, *_ in runs)
        + MAIN.substitute(runs=", ".join(f"run_{prefix}" for prefix, *_ in runs))
    )
    (folder / ("driver" + suffix)).write_text(driver)
    flags = [*flags, optimize] + (SANITIZE if sanitize and sanitizers_work(cc, folder, language) else [])
    build = subprocess.run(
        [cc, *flags, "driver" + suffix, "-o", "driver", "-lm"], cwd=folder, capture_output=True, text=True
    )
    if build.returncode != 0:
        raise CompilerError(f"the header did not compile: {first_error(build.stderr)}")
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"}
    run = subprocess.run([str(folder / "driver")], input=stdin, capture_output=True, env=env)
    if run.returncode != 0:
        raise CompilerError(
            f"the compiled header failed (exit {run.returncode}): {run.stderr.decode(errors='replace').strip()[:300]}"
        )
    results, offset = [], 0
    for model, n, m in parts:
        result, offset = _read_results(run.stdout, offset, model, n, m)
        results.append({**result, "sanitized": "-fsanitize=address,undefined" in flags})
    return results


def _read_results(out: bytes, offset: int, model: QuantizedModel, n: int, m: int) -> tuple[dict, int]:
    """One header's part of the driver's stdout from offset: its results and the next offset."""
    per_code, per_raw = model.outputs + 4, model.inputs + 4 * model.outputs
    rows = np.frombuffer(out, np.uint8, count=n * per_code, offset=offset).reshape(n, per_code)
    offset += n * per_code
    rest = np.frombuffer(out, np.uint8, count=m * per_raw, offset=offset).reshape(m, per_raw)
    return {
        "scores": rows[:, : model.outputs].view(np.int8),
        "classes": rows[:, model.outputs :].copy().view("<i4")[:, 0],
        "raw_codes": rest[:, : model.inputs].view(np.int8),
        "probabilities": rest[:, model.inputs :].copy().view("<f4"),
    }, offset + m * per_raw


def spec_classes(model: QuantizedModel, scores) -> np.ndarray:
    """The class predict must return for the spec's int8 scores: the first highest score; with
    one output, 1 when the score is at least the output zero point."""
    return model.classes(np.asarray(scores))


def check(model: QuantizedModel, x, prefix: str = "net") -> dict:
    """Compile the header of prefix and compare it with the spec (intref) on raw inputs x:
    scores, classes, input codes."""
    codes = model.quantize_inputs(x)
    with tempfile.TemporaryDirectory() as tmp:
        got = run_header(
            model, codes, np.asarray(x, dtype=np.float32).reshape(len(codes), -1), Path(tmp), prefix=prefix
        )
    want = intref.reference_scores(model.layers, codes)
    scores = (got["scores"] != want).any(axis=1)
    classes = got["classes"] != spec_classes(model, want)
    inputs = (got["raw_codes"] != codes).any(axis=1)
    return {
        "samples": len(codes),
        "score_mismatches": int(scores.sum()),
        "class_mismatches": int(classes.sum()),
        "input_mismatches": int(inputs.sum()),
        "mismatched_samples": int((scores | classes | inputs).sum()),
        "sanitized": got["sanitized"],
    }


def code_size(model: QuantizedModel, cc: str | None = None, flags=("-Os",), prefix: str = "net") -> dict | None:
    """Flash and stack of the compiled header of prefix: .text (code), .rodata (constants),
    stack of the predict path, from `cc -c` with -fstack-usage without the float helpers; None
    without a compiler. The whole header, float helpers included, must compile too: a
    CompilerError otherwise."""
    cc = cc or find_compiler()
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / f"{prefix}.h").write_text(export_c(model, prefix))
        implementation = f'#define {prefix.upper()}_IMPLEMENTATION\n#include "{prefix}.h"\n'
        (folder / "whole.c").write_text(implementation)
        (folder / "net.c").write_text(f"#define {prefix.upper()}_NO_FLOAT\n" + implementation)
        for source, options in (("whole.c", ["-fsyntax-only"]), ("net.c", ["-fstack-usage", "-c", "-o", "net.o"])):
            build = subprocess.run([cc, *STRICT, *flags, *options, source], cwd=folder, capture_output=True, text=True)
            if build.returncode != 0:
                raise CompilerError(f"the header did not compile: {first_error(build.stderr)}")
        sizes = _section_sizes(cc, folder / "net.o")
        stack = 0
        usage = folder / "net.su"
        if usage.exists():
            stack = sum(int(m.group(1)) for m in re.finditer(r"\t(\d+)\t", usage.read_text()))
        functions = _function_sizes(cc, [*STRICT, *flags], folder, prefix)
    need = memory_needs(model)
    return {
        "code": sizes.get("text", 0),
        "constants": sizes.get("rodata", need["constants"]),
        "stack": stack,
        "scratch": need["scratch"],
        "arena": need["arena"],
        "layers": per_layer(model, functions, prefix),
    }


def per_layer(model: QuantizedModel, functions: dict, prefix: str = "net") -> list:
    """--report's figures per layer: {'layer', 'kind', 'fused' (the number of the layer its
    kernel is fused with, or None), 'code' (its kernel's bytes, None when unmeasured; a pool
    fused into the convolution before it: 0, the kernel counted there), 'constants', 'ram' (the
    bytes of the arena step it runs in; dense layers only: its input and output buffers)}
    from integer_model.layer_memory, arena_plan's steps and the kernels' sizes."""
    layers, rows = model.layers, []
    dense = all(layer.kind == "dense" for layer in layers)
    steps = {i: step for step, *_ in ([] if dense else arena_plan(layers)[1]) for i in step}
    for i, (layer, memory) in enumerate(zip(layers, layer_memory(layers))):
        step = steps.get(i, (i,))
        rows.append(
            {
                "layer": i + 1,
                "kind": layer.kind,
                "fused": next((j + 1 for j in step if j != i), None),
                "code": functions.get(f"{prefix}__l{i}") if step[0] == i else 0,
                "constants": sum(memory["constants"].values()),
                "ram": memory["ram"],
            }
        )
    return rows


def layer_lines(rows: list) -> list:
    """export-c --report's lines per layer (per_layer's rows): flash (code and constants) and the
    RAM of its step."""
    lines = []
    for row in rows:
        code = "code ?" if row["code"] is None else f"code {row['code']:,}"
        flash = "?" if row["code"] is None else f"{row['code'] + row['constants']:,}"
        fused = f", fused with layer {row['fused']}" if row["fused"] else ""
        lines.append(
            f"  layer {row['layer']} {row['kind']}{fused}: flash {flash} bytes ({code}, constants "
            f"{row['constants']:,}); RAM {row['ram']:,} bytes"
        )
    return lines


def _function_sizes(cc: str, flags: list, folder: Path, prefix: str) -> dict:
    """{function name: bytes} of the layer kernels, from the header compiled (without the float
    helpers) with -fno-inline, each function in its own section, by the nm that goes with cc: a
    layer's own code (in the header proper most are inlined into predict, so the total is
    measured apart). {} when that fails or there is no nm."""
    tool = _binutil(cc, ("nm", "llvm-nm"))
    options = ["-fno-inline", "-ffunction-sections", "-c", "-o", "layers.o"]
    build = subprocess.run([cc, *flags, *options, "net.c"], cwd=folder, capture_output=True, text=True)
    if tool is None or build.returncode != 0:
        return {}
    out = subprocess.run([tool, "-S", str(folder / "layers.o")], capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and re.fullmatch(rf"{prefix}__l\d+", parts[3]):
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def _binutil(cc: str, names) -> str | None:
    """The binutils tool (size, nm) that goes with cc: arm-none-eabi-nm for arm-none-eabi-gcc."""
    prefix = Path(cc).name[:-3] if Path(cc).name.endswith("gcc") else ""
    for name in (prefix + names[0], *names):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _section_sizes(cc: str, obj: Path) -> dict:
    """Section sizes of an object file, by the binutils `size` that goes with cc."""
    size_tool = _binutil(cc, ("size", "llvm-size"))
    if size_tool is None:
        return {}
    out = subprocess.run([size_tool, "-A", str(obj)], capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and parts[0].startswith("."):
            key = "text" if parts[0].startswith(".text") else "rodata" if parts[0].startswith(".rodata") else None
            if key:
                sizes[key] = sizes.get(key, 0) + int(parts[1])
    return sizes
