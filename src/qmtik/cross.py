"""Cross-compile a header for a Cortex-M target: the header, a harness and our own start-up and
linker script (templates/harness.c.in, startup.c.in, link.ld.in) linked into one bare-metal ELF,
and what the ELF says about the model: its code, constants, RAM and the image's sections.

emulate.py runs the ELF; this module only builds and measures it. The toolchain is Debian's
gcc-arm-none-eabi with libnewlib-arm-none-eabi (one line says so when missing).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from .errors import CompilerError
from .export_c import export_c
from .integer_model import QuantizedModel
from .targets import Target

CC = "arm-none-eabi-gcc"
INSTALL = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
STACK = 16 * 1024  # the harness's stack region, painted before each inference
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-Wconversion", "-Wshadow"]


@dataclass
class Build:
    """A linked harness: the ELF, its symbols {name: (address, size)}, and the samples it holds."""

    elf: Path
    symbols: dict
    samples: int
    outputs: int
    prefix: str

    def address(self, name: str) -> int:
        """A symbol's address (the Thumb bit cleared)."""
        return self.symbols[name][0] & ~1


def toolchain_problem() -> str | None:
    """Why the cross toolchain cannot be used here (what to install), or None."""
    if shutil.which(CC) is None or shutil.which("arm-none-eabi-nm") is None:
        return f"{CC} is not installed ({INSTALL})"
    return _newlib_problem()


@lru_cache(maxsize=1)
def _newlib_problem() -> str | None:
    """Whether the cross compiler finds newlib's nano.specs (libnewlib-arm-none-eabi)."""
    found = subprocess.run([CC, "-print-file-name=nano.specs"], capture_output=True, text=True).stdout.strip()
    return None if Path(found).is_absolute() else f"newlib for {CC} is not installed ({INSTALL})"


def _template(name: str) -> str:
    return resources.files("qmtik").joinpath("templates", name).read_text()


def _rows(codes: np.ndarray) -> str:
    return ",\n".join("    {" + ", ".join(map(str, row)) + "}" for row in codes.tolist())


def build(
    model: QuantizedModel, codes, target: Target, folder, prefix: str = "net", optimize: str = "-Os", extra=()
) -> Build:
    """Link the model's header (the very text export-c writes) with the harness for target,
    its inputs (int8 codes, one row a sample) compiled in; extra: more compiler flags."""
    problem = toolchain_problem()
    if problem:
        raise CompilerError(problem)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    codes = np.asarray(codes, dtype=np.int8).reshape(-1, model.inputs)
    if len(codes) == 0:
        raise CompilerError("the emulated check needs at least one input")
    (folder / f"{prefix}.h").write_text(export_c(model, prefix))
    harness = Template(_template("harness.c.in")).substitute(
        p=prefix, P=prefix.upper(), samples=len(codes), inputs=_rows(codes)
    )
    (folder / "harness.c").write_text(harness)
    (folder / "startup.c").write_text(_template("startup.c.in"))
    (folder / "link.ld").write_text(
        Template(_template("link.ld.in")).substitute(
            flash_origin=hex(target.flash[0]),
            flash_length=hex(target.flash[1]),
            ram_origin=hex(target.ram[0]),
            ram_length=hex(target.ram[1]),
            stack=STACK,
        )
    )
    command = [
        CC,
        *target.flags(),
        *WARNINGS,
        optimize,
        *extra,
        "-ffunction-sections",
        "-fdata-sections",
        "-nostartfiles",
        "--specs=nano.specs",
        "--specs=nosys.specs",
        "-Wl,--gc-sections",
        "-T",
        "link.ld",
        "harness.c",
        "startup.c",
        "-o",
        "harness.elf",
    ]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines() or ["?"]
        raise CompilerError(f"the header did not build for {target.name}: {lines[0].strip()}")
    return Build(folder / "harness.elf", symbols(folder / "harness.elf"), len(codes), model.outputs, prefix)


def symbols(elf: Path) -> dict:
    """{name: (address, size, type letter)} of the ELF's defined symbols, by arm-none-eabi-nm."""
    out = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            table[parts[3]] = (int(parts[0], 16), int(parts[1], 16), parts[2])
        elif len(parts) == 3:
            table[parts[2]] = (int(parts[0], 16), 0, parts[1])
    return table


def sections(elf: Path) -> dict:
    """{section: bytes} of the linked image (arm-none-eabi-size -A)."""
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\S+)\s+(\d+)", out, re.M)}


def model_sizes(built: Build) -> dict:
    """The model's part of the linked image: code (every function of the header: predict and its
    kernels, as linked), constants (its const arrays), scratch (the buffer predict is given);
    and the image's sections (flash: .text with its constants, RAM: .data, .bss, .stack), which
    also hold the harness and its inputs."""
    own = re.compile(rf"{built.prefix}_")
    code = sum(size for name, (_, size, kind) in built.symbols.items() if own.match(name) and kind in "tT")
    constants = sum(size for name, (_, size, kind) in built.symbols.items() if own.match(name) and kind in "rR")
    image = sections(built.elf)
    return {
        "code": code,
        "constants": constants,
        "scratch": built.symbols["qm_scratch"][1],
        "image_flash": sum(image.get(name, 0) for name in (".text", ".rodata", ".ARM.exidx", ".data")),
        "image_ram": image.get(".data", 0) + image.get(".bss", 0) + image.get(".stack", 0),
    }
