"""The microcontrollers a header is built and emulated for, and what each needs beside the model.

One table: each target's compiler flags, its emulators (unicorn's CPU model, and qemu's board
where qemu has one), the memory map the harness is linked for (the board's), and the
allowances the budget adds to the exact constants and arena before anything is compiled
(budget.py): code by layer kind, and stack. `host` is the local compiler (c_check.py), with
no emulator and no allowances of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class Target:
    """One Cortex-M core: how to compile for it, where it runs, and its allowances (bytes)."""

    name: str
    cpu: str  # -mcpu
    unicorn_cpu: str  # unicorn.arm_const's UC_CPU_ARM_* name
    qemu_machine: str | None  # qemu-system-arm -M, None where no board has this core
    flash: tuple  # (origin, length) the harness is linked at: the board's code memory
    ram: tuple  # (origin, length): the board's data memory
    code_base: int  # predict's frame and the shared requantization
    code_per_kind: dict = field(default_factory=dict)  # each layer that runs as its own kernel, by kind
    code_fused_pool: int = 0  # a pool computed inside its convolution's kernel
    stack: int = 0  # predict's stack, stated: at or above the measured for every kind

    def flags(self) -> list:
        """The compiler flags of this core (soft float: the harness builds with PREFIX_NO_FLOAT)."""
        return [f"-mcpu={self.cpu}", "-mthumb", "-mfloat-abi=soft"]


# Allowances: arm-none-eabi-gcc 12.2 -Os links each layer's kernel inline into predict, so code
# grows by layer, not by kind; the figures are the largest measured on the networks of
# tests/test_budget.py, rounded up (that test holds them at or above the measured on every one,
# and within 15% on the examples' networks). Thumb-1 (M0) code came out within 3% of Thumb-2's.
_CODE = {
    "dense": 175,
    "conv2d": 275,
    "depthwise_conv2d": 250,
    "max_pool": 120,
    "avg_pool": 130,
    "global_avg_pool": 100,
}
_BOARD = ((0x00000000, 0x400000), (0x20000000, 0x400000))  # mps2 an385/an386/an500: 4 MiB SSRAM each

TARGETS = {
    "cortex-m0": Target("cortex-m0", "cortex-m0", "UC_CPU_ARM_CORTEX_M0", None, *_BOARD, 140, _CODE, 55, 240),
    "cortex-m4": Target("cortex-m4", "cortex-m4", "UC_CPU_ARM_CORTEX_M4", "mps2-an386", *_BOARD, 140, _CODE, 55, 210),
    "cortex-m7": Target("cortex-m7", "cortex-m7", "UC_CPU_ARM_CORTEX_M7", "mps2-an500", *_BOARD, 140, _CODE, 55, 210),
    "cortex-m33": Target(  # mps2-an505 boots secure: SSRAM1's secure alias, SSRAM2's
        "cortex-m33",
        "cortex-m33",
        "UC_CPU_ARM_CORTEX_M33",
        "mps2-an505",
        (0x10000000, 0x400000),
        (0x38000000, 0x200000),
        140,
        _CODE,
        55,
        210,
    ),
}
HOST = "host"
NAMES = (HOST, *TARGETS)


def target_problem(name) -> str | None:
    """Why name is no target (the list of those there are), or None."""
    if name in NAMES:
        return None
    return f"unknown target {name!r}: choose one of {', '.join(NAMES)}"


def get_target(name: str) -> Target | None:
    """The target of that name (None for host); an unknown one is refused with the list."""
    problem = target_problem(name)
    if problem:
        raise ConfigError(problem)
    return TARGETS.get(name)
