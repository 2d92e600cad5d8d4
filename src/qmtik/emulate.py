"""Run a cross-compiled harness (cross.py) in an emulator and compare it with the spec.

Two emulators run the same ELF. unicorn (the `unicorn` wheel, the `[emulate]` extra) runs every
target, Cortex-M0 included, and counts instructions exactly: a block hook adds each translated
block's instruction count (its Thumb halfwords decoded once), and the harness calls qm_mark
before and after each inference. qemu-system-arm runs the mps2 boards (an386: Cortex-M4, an500:
Cortex-M7, an505: Cortex-M33) and prints the results by semihosting; it counts nothing here.
Every run has a timeout, and every failure is one line (CompilerError).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from . import intref
from .cross import Build, build, model_sizes, toolchain_problem
from .errors import CompilerError
from .integer_model import QuantizedModel
from .targets import TARGETS, Target, get_target

EMULATORS = ("unicorn", "qemu")
TIMEOUT = 120.0  # seconds a run may take besides its inferences': a miscompiled kernel may loop
SLOWEST = 2e6  # multiply-accumulates per second an inference is allowed at least (a loaded machine)


def timeout_for(model: QuantizedModel, samples: int) -> float:
    """A run's timeout: TIMEOUT plus its inferences at SLOWEST (a Cortex-M0 takes about 11
    instructions per multiply-accumulate; unicorn runs tens of millions a second)."""
    macs = 0
    for layer in model.layers:
        weights = getattr(layer, "weights", None)
        channels = len(getattr(layer, "bias", ())) or 1
        macs += layer.inputs if weights is None else weights.size * max(1, layer.outputs // channels)
    return TIMEOUT + samples * macs / SLOWEST


def emulator_problem(emulator: str, target: Target) -> str | None:
    """Why emulator cannot run target here (what to install), or None."""
    if emulator == "unicorn":
        try:
            import unicorn  # noqa: F401
        except ImportError:
            return "the unicorn emulator is not installed (pip install 'qmtik[emulate]')"
        return None
    if emulator == "qemu":
        if target.qemu_machine is None:
            return f"qemu has no {target.name} board; use the unicorn emulator"
        if shutil.which("qemu-system-arm") is None:
            return "qemu-system-arm is not installed (apt-get install qemu-system-arm)"
        return None
    return f"unknown emulator {emulator!r}: choose one of {', '.join(EMULATORS)}"


def problem(target_name: str, emulator: str = "unicorn") -> str | None:
    """Why an emulated run on target_name cannot happen here, or None: for the tests' skips."""
    target = TARGETS.get(target_name)
    if target is None:
        return f"unknown target {target_name!r}"
    return toolchain_problem() or emulator_problem(emulator, target)


def _load(elf: Path):
    """The ELF's loadable segments: [(physical address, bytes, memory size)]."""
    data = elf.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1:
        raise CompilerError(f"{elf}: not a 32-bit ELF")
    phoff, phentsize, phnum = struct.unpack_from("<I", data, 0x1C)[0], *struct.unpack_from("<HH", data, 0x2A)
    segments = []
    for k in range(phnum):
        kind, offset, _, paddr, filesz, memsz = struct.unpack_from("<6I", data, phoff + k * phentsize)
        if kind == 1 and memsz:
            segments.append((paddr, data[offset : offset + filesz], memsz))
    return segments


def _thumb_count(code: bytes) -> int:
    """Instructions in a run of Thumb code: a halfword starting 0b11101, 0b11110 or 0b11111 begins
    a 32-bit instruction."""
    count, i = 0, 0
    while i + 1 < len(code):
        i += 4 if code[i + 1] >> 3 in (0b11101, 0b11110, 0b11111) else 2
        count += 1
    return count


def run_unicorn(
    built: Build,
    target: Target,
    timeout: float = TIMEOUT,
    marks=("qm_mark",),
    counted: int | None = 16,
    per_instruction: bool = False,
) -> dict:
    """Run the harness on unicorn's model of target's core until it reaches qm_exit: the scores,
    classes and stack it left in RAM, and the instruction count at each entry to a function of
    marks ({name: [counts]}). Counting costs a Python call per block: the first `counted`
    inferences are counted (None: all; 0: none), the rest run at unicorn's full speed.
    per_instruction: count with a hook on every instruction instead (slow: the tests' oracle)."""
    import unicorn
    from unicorn import arm_const

    # not UC_MODE_MCLASS: unicorn 2 then runs a Cortex-M33 whatever model is set; the model alone
    # makes the core an M-profile one (the M0 refuses Thumb-2, tests/test_emulate.py)
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB)
    uc.ctl_set_cpu_model(getattr(arm_const, target.unicorn_cpu))
    for origin, length in (target.flash, target.ram):
        uc.mem_map(origin, length)
    for address, data, _ in _load(built.elf):
        uc.mem_write(address, data)
    vectors = struct.unpack("<2I", bytes(uc.mem_read(target.flash[0], 8)))
    uc.reg_write(arm_const.UC_ARM_REG_SP, vectors[0])
    watched = {built.address(name): name for name in marks}
    counts, seen, at = [0], {}, {name: [] for name in marks}
    stop_after = None if counted is None or "qm_mark" not in marks else 2 * counted

    def on_block(uc, address, size, _):
        n = seen.get((address, size))
        if n is None:
            n = seen[(address, size)] = 1 if per_instruction else _thumb_count(bytes(uc.mem_read(address, size)))
        if address in watched:
            at[watched[address]].append(counts[0])
            if stop_after is not None and len(at["qm_mark"]) == stop_after:
                uc.emu_stop()
        counts[0] += n

    hook = (
        None
        if counted == 0
        else uc.hook_add(unicorn.UC_HOOK_CODE if per_instruction else unicorn.UC_HOOK_BLOCK, on_block)
    )
    end, start, deadline = built.address("qm_exit"), vectors[1] | 1, time.monotonic() + timeout
    for _ in range(2):  # counting, then (when stopped early) the rest without the hook
        left = deadline - time.monotonic()
        try:
            if left > 0:
                uc.emu_start(start, end, timeout=int(left * 1e6))
        except unicorn.UcError as exc:
            pc = uc.reg_read(arm_const.UC_ARM_REG_PC)
            raise CompilerError(f"the emulated run on {target.name} failed at {pc:#x}: {exc}") from None
        pc = uc.reg_read(arm_const.UC_ARM_REG_PC) & ~1
        if pc == end or time.monotonic() >= deadline or hook is None:
            break
        uc.hook_del(hook)
        start = pc | 1
    if pc != end:
        raise CompilerError(f"the emulated run on {target.name} did not finish within {timeout:g} s")

    def read(name, size):
        return bytes(uc.mem_read(built.address(name), size))

    return {
        "scores": np.frombuffer(read("qm_scores", built.samples * built.outputs), np.int8).reshape(built.samples, -1),
        "classes": np.frombuffer(read("qm_classes", 4 * built.samples), "<i4"),
        "stack": struct.unpack("<I", read("qm_stack", 4))[0],
        "marks": at,
    }


def run_qemu(built: Build, target: Target, timeout: float = TIMEOUT) -> dict:
    """Run the harness on qemu's board of target (semihosting prints the results in hex)."""
    command = qemu_command(target, built.elf)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CompilerError(f"the emulated run on {target.name} (qemu) did not finish within {timeout:g} s") from None
    lines = {}
    for line in (done.stdout + done.stderr).splitlines():  # semihosting writes to qemu's stderr
        if line[:2] in ("s ", "c ", "k "):
            lines[line[0]] = lines.get(line[0], "") + line[2:].strip()
    if done.returncode != 0 or set(lines) != {"s", "c", "k"}:
        other = [line for line in done.stderr.splitlines() if line.strip() and line[:2] not in ("s ", "c ", "k ")]
        why = (other or [f"exit {done.returncode}, no results"])[0]
        raise CompilerError(f"the emulated run on {target.name} (qemu) failed: {why}")
    scores = np.frombuffer(bytes.fromhex(lines["s"]), np.int8)
    return {
        "scores": scores.reshape(built.samples, -1),
        "classes": np.frombuffer(bytes.fromhex(lines["c"]), "<i4"),
        "stack": struct.unpack("<I", bytes.fromhex(lines["k"]))[0],
        "marks": {},
    }


def qemu_command(target: Target, elf) -> list:
    """The qemu-system-arm command line that runs a harness ELF on target's board."""
    return [
        "qemu-system-arm",
        "-M",
        target.qemu_machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        str(elf),
    ]


def check(
    model: QuantizedModel,
    x=None,
    target_name: str = "cortex-m4",
    emulator: str = "unicorn",
    prefix: str = "net",
    codes=None,
    timeout: float | None = None,
    optimize: str = "-Os",
    counted: int | None = 16,
) -> dict:
    """Build the header for target, run it in the emulator on raw inputs x (or int8 codes) and
    compare every score byte and class with the spec (intref.reference_scores); with the
    instructions per inference (unicorn; min, median, max over the first `counted`, the call
    included), the model's
    flash (code and constants, from the linked ELF) and RAM (scratch, and the stack measured by
    painting). timeout: seconds (None: timeout_for the model and the inputs)."""
    target = get_target(target_name)
    if target is None:
        raise CompilerError("the host target runs no emulator (c_check.py compiles for the host)")
    why = toolchain_problem() or emulator_problem(emulator, target)
    if why:
        raise CompilerError(why)
    codes = model.quantize_inputs(x) if codes is None else np.asarray(codes, dtype=np.int8)
    timeout = timeout_for(model, len(codes)) if timeout is None else timeout
    with tempfile.TemporaryDirectory() as tmp:
        built = build(model, codes, target, Path(tmp), prefix, optimize)
        sizes = model_sizes(built)
        if emulator == "unicorn":
            got = run_unicorn(built, target, timeout, counted=counted)
        else:
            got = run_qemu(built, target, timeout)
    want = intref.reference_scores(model.layers, codes)
    scores = (got["scores"] != want).any(axis=1)
    classes = got["classes"] != model.classes(want)
    marks = got["marks"].get("qm_mark", [])
    per = np.diff(marks)[::2] if len(marks) >= 2 else np.array([])
    return {
        "target": target.name,
        "emulator": emulator,
        "samples": len(codes),
        "score_mismatches": int(scores.sum()),
        "class_mismatches": int(classes.sum()),
        "mismatched_samples": int((scores | classes).sum()),
        "instructions": [int(per.min()), int(np.median(per)), int(per.max())] if len(per) else None,
        "counted": len(per),
        **sizes,
        "flash": sizes["code"] + sizes["constants"],
        "stack": got["stack"],
        "ram": sizes["scratch"] + got["stack"],
    }
