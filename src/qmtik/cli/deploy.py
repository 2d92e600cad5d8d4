"""The commands' microcontroller parts: `export-c --target/--max-flash/--max-ram` (the header
built for a Cortex-M, run in an emulator, compared and measured, its budgets checked) and
`info --target` (flash and RAM per layer, estimated before compiling)."""

from __future__ import annotations

from pathlib import Path

from .. import workflow
from ..budget import estimate, overshoot
from ..c_check import code_size
from ..config import load_config
from ..config_deploy import parse_size
from ..emulate import check as emulated_check
from ..emulate import problem as emulation_problem
from ..errors import CheckFailed, CompilerError, ConfigError, UsageError
from ..network import Network
from ..targets import HOST, TARGETS, target_problem
from .console import say


def target_of(name: str | None) -> str | None:
    """--target's value checked (None when not given); an unknown one refused with the list."""
    if name is not None and target_problem(name):
        raise UsageError(target_problem(name))
    return name


def budgets_of(args, loaded) -> tuple[str, int, int]:
    """(target, max_flash, max_ram) for export-c: the flags, else a checkpoint's [deploy] (its
    target only when it sets a budget and --target is not given); host and no budgets else.
    loaded: what workflow.load_any gave (the model is read once: it may come through a pipe)."""
    try:
        flash = parse_size(args.max_flash, "--max-flash") if args.max_flash is not None else None
        ram = parse_size(args.max_ram, "--max-ram") if args.max_ram is not None else None
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    target = args.target
    if isinstance(loaded, Network):
        deploy = loaded.config.deploy
        flash = deploy.max_flash if flash is None else flash
        ram = deploy.max_ram if ram is None else ram
        if target is None and (deploy.max_flash or deploy.max_ram):
            target = deploy.target
    target = target or HOST
    why = None if target == HOST else emulation_problem(target, args.emulator)
    if why:  # before anything is written
        raise CompilerError(why)
    return target, flash or 0, ram or 0


def on_target(model, x, prefix: str, target: str, emulator: str, max_flash: int, max_ram: int, report=False) -> int:
    """export-c on a Cortex-M target: build, run in the emulator on DATA's inputs (x; without
    DATA one input of zeros, for the stack and the count), compare, measure, check the budgets;
    report: each layer's estimated flash and RAM too (budget.estimate), under the measured totals."""
    codes = None if x is not None else [[0] * model.inputs]
    result = emulated_check(model, x, target, emulator, prefix, codes=codes)
    where = f"{target} ({emulator})"
    if x is not None:
        say(
            f"check on {where}: {result['samples']} samples, {result['score_mismatches']} score and "
            f"{result['class_mismatches']} class mismatches between the emulated C and Python"
        )
    if result["instructions"]:
        low, median, high = result["instructions"]
        over = "" if result["counted"] == result["samples"] else f" over the first {result['counted']} of them"
        say(f"{where}: {median:,} instructions per inference (min {low:,}, max {high:,}; counted exactly{over})")
    say(
        f"{where}: flash {result['flash']:,} bytes (code {result['code']:,}, constants {result['constants']:,}; "
        f"linked, -Os); RAM {result['ram']:,} bytes (scratch {result['scratch']:,}, stack {result['stack']:,} "
        "painted)"
    )
    rows = estimate(model, target)["layers"]
    if report:
        say(
            f"{where} per layer, estimated (constants and RAM exact, code an allowance for arm-none-eabi-gcc "
            "-Os; the totals above are measured):"
        )
        say("\n".join(_layer_estimate(row) for row in rows))
    figures = {**result, "arena": result["scratch"], "layers": rows}  # exact per layer
    problem = overshoot(figures, max_flash, max_ram, exact=True)
    if result["mismatched_samples"]:
        raise CheckFailed(f"the emulated header disagrees with Python on {result['mismatched_samples']} samples")
    if problem:
        raise CheckFailed(f"on {target}: the header {problem}")
    return 0


def host_budgets(model, prefix: str, max_flash: int, max_ram: int) -> None:
    """The budgets checked with the local compiler (-Os; stack from -fstack-usage)."""
    sizes = code_size(model, prefix=prefix)
    if sizes is None:
        raise CheckFailed("no C compiler found, so the budgets cannot be checked; pass --target")
    figures = {
        **sizes,
        "flash": sizes["code"] + sizes["constants"],
        "ram": sizes["scratch"] + sizes["stack"],
        "arena": sizes["scratch"],
        "layers": [],
    }
    problem = overshoot(figures, max_flash, max_ram, exact=True)
    if problem:
        raise CheckFailed(f"on the host compiler: the header {problem}")
    say(f"budgets met on the host compiler: flash {figures['flash']:,} bytes, RAM {figures['ram']:,} bytes")


def estimate_lines(what, target: str) -> list:
    """info --target's lines: flash and RAM per layer, estimated before compiling."""
    figures = estimate(what, target)
    lines = [
        f"estimates for {figures['target']}, before compiling (constants and arena exact; code and stack "
        "allowances, arm-none-eabi-gcc -Os):",
        f"  flash ≈ {figures['flash']:,} bytes (constants {figures['constants']:,}, code ≈ {figures['code']:,}); "
        f"RAM ≈ {figures['ram']:,} bytes (arena {figures['arena']:,}, stack ≈ {figures['stack']:,})",
    ]
    return lines + [_layer_estimate(row) for row in figures["layers"]]


def _layer_estimate(row: dict) -> str:
    """One layer's estimate line (a row of budget.estimate)."""
    return (
        f"  layer {row['layer']} {row['kind']}: flash ≈ {row['flash']:,} bytes (constants "
        f"{row['constants']:,}, code ≈ {row['code']:,}); RAM {row['ram']:,} bytes"
    )


def info_target(model_path, target: str) -> int:
    """qmtik info MODEL --target T: a config (.toml: nothing trained), a checkpoint or a .qmt."""
    if target == HOST:
        raise UsageError(f"info --target estimates for a microcontroller: choose one of {', '.join(TARGETS)}")
    what = load_config(model_path) if Path(model_path).suffix == ".toml" else workflow.load_any(model_path)
    say("\n".join(estimate_lines(what, target)))
    return 0
