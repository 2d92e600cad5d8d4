"""Compile an exported header with the local C compiler: run it against Python, measure it.

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

from .errors import QmtikError
from .export_c import export_c
from .model import QuantizedModel, memory_needs

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-Wshadow"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover"]

DRIVER = Template(r"""
#define ${P}_IMPLEMENTATION
#include "${p}.h"
#include <stdio.h>
#include <stdlib.h>

/* stdin: int32 n, n inputs of int8 codes, int32 m, m raw float inputs.
   stdout: per code input the int8 scores and the int32 class; per raw input its int8 codes
   and the float probabilities of its scores. */
int main(void)
{
    int32_t n, m, i, c;
    int8_t input[${P}_INPUTS], scores[${P}_OUTPUTS];
    int8_t *scratch = malloc(${P}_SCRATCH_BYTES);    /* on the heap, so that ASan sees overruns */
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
""")   # the header of prefix p, as export-c writes it


class CompilerError(QmtikError, RuntimeError):
    """No C compiler, or the header did not compile or run."""


def first_error(stderr: str) -> str:
    """The compiler's first 'error:' line (or its first line), for a one-line message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if "error:" in line), lines[0] if lines else "no message")


def find_compiler() -> str | None:
    """The local C compiler: $CC, else gcc, cc or clang; None when there is none."""
    for name in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def sanitizers_work(cc: str, folder: Path) -> bool:
    """Whether cc can build with ASan and UBSan here (their runtimes installed)."""
    source = folder / "probe.c"
    source.write_text("int main(void) { return 0; }\n")
    return subprocess.run([cc, *SANITIZE, str(source), "-o", str(folder / "probe")],
                          capture_output=True).returncode == 0


def run_header(model: QuantizedModel, codes, raw, folder: Path, cc: str | None = None,
               sanitize: bool = True, prefix: str = "net") -> dict:
    """Compile the model's header of prefix (the very text export-c writes with it) with a
    driver (strict warnings, sanitizers when available), run it on int8 codes and raw float
    inputs, and return what it computed."""
    cc = cc or find_compiler()
    if cc is None:
        raise CompilerError("no C compiler found (tried $CC, gcc, cc, clang)")
    folder = Path(folder)
    (folder / f"{prefix}.h").write_text(export_c(model, prefix))
    (folder / "driver.c").write_text(DRIVER.substitute(p=prefix, P=prefix.upper()))
    flags = [*STRICT, "-O1"] + (SANITIZE if sanitize and sanitizers_work(cc, folder) else [])
    build = subprocess.run([cc, *flags, "driver.c", "-o", "driver", "-lm"], cwd=folder, capture_output=True,
                           text=True)
    if build.returncode != 0:
        raise CompilerError(f"the header did not compile: {first_error(build.stderr)}")
    codes = np.asarray(codes, dtype=np.int8).reshape(-1, model.inputs)
    raw = np.asarray(raw, dtype="<f4").reshape(-1, model.inputs)
    stdin = struct.pack("<i", len(codes)) + codes.tobytes() + struct.pack("<i", len(raw)) + raw.tobytes()
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"}
    run = subprocess.run([str(folder / "driver")], input=stdin, capture_output=True, env=env)
    if run.returncode != 0:
        raise CompilerError(f"the compiled header failed (exit {run.returncode}): "
                            f"{run.stderr.decode(errors='replace').strip()[:300]}")
    out = run.stdout
    per_code = model.outputs + 4
    rows = np.frombuffer(out, np.uint8, count=len(codes) * per_code).reshape(len(codes), per_code)
    per_raw = model.inputs + 4 * model.outputs
    rest = np.frombuffer(out, np.uint8, offset=len(codes) * per_code).reshape(len(raw), per_raw)
    return {"scores": rows[:, :model.outputs].view(np.int8),
            "classes": rows[:, model.outputs:].copy().view("<i4")[:, 0],
            "raw_codes": rest[:, :model.inputs].view(np.int8),
            "probabilities": rest[:, model.inputs:].copy().view("<f4"),
            "sanitized": "-fsanitize=address,undefined" in flags}


def check(model: QuantizedModel, x, prefix: str = "net") -> dict:
    """Compile the header of prefix and compare it with Python on raw inputs x: scores,
    classes, codes."""
    codes = model.quantize_inputs(x)
    with tempfile.TemporaryDirectory() as tmp:
        got = run_header(model, codes, np.asarray(x, dtype=np.float32).reshape(len(codes), -1), Path(tmp),
                         prefix=prefix)
    want = model.scores(codes)
    return {"samples": len(codes),
            "score_mismatches": int((got["scores"] != want).any(axis=1).sum()),
            "class_mismatches": int((got["classes"] != model.predict_index(x)).sum()),
            "input_mismatches": int((got["raw_codes"] != codes).any(axis=1).sum()),
            "sanitized": got["sanitized"]}


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
    need = memory_needs(model)
    return {"code": sizes.get("text", 0), "constants": sizes.get("rodata", need["constants"]),
            "stack": stack, "scratch": need["scratch"]}


def _section_sizes(cc: str, obj: Path) -> dict:
    """Section sizes of an object file, by the binutils `size` that goes with cc."""
    size_tool = None
    prefix = Path(cc).name[:-3] if Path(cc).name.endswith("gcc") else ""
    for name in (prefix + "size", "size", "llvm-size"):
        if shutil.which(name):
            size_tool = shutil.which(name)
            break
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
