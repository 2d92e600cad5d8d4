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
    code_base: int = 140  # predict's frame and the shared requantization
    code_first: dict = field(default_factory=dict)  # the first layer of a kind run as its own kernel
    code_more: dict = field(default_factory=dict)  # each further one (-Os shares the kernel's code)
    code_fused_pool: tuple = (60, 15)  # a pool inside its convolution's kernel: the first, each further
    code_table: int = 110  # the sigmoid and tanh table lookup, once
    stack: int = 0  # predict's stack with window layers, stated: at or above the measured
    stack_dense: int = 0  # predict's stack, dense layers only
    stack_table: int = 0  # more stack when a layer looks up a sigmoid or tanh table

    def flags(self) -> list:
        """The compiler flags of this core (soft float: the harness builds with PREFIX_NO_FLOAT)."""
        return [f"-mcpu={self.cpu}", "-mthumb", "-mfloat-abi=soft"]


# Allowances: arm-none-eabi-gcc 12.2 -Os links one kernel per kind and calls it for each layer
# of that kind, so code grows with the kinds more than with the layers. The figures are the
# largest measured on the networks of tests/test_budget.py (every kind and activation, and the
# examples' networks), rounded up; that test holds them at or above the measured on every one,
# and within 15% on the examples' networks. Thumb-1 (M0) code came out within 5% of Thumb-2's,
# so one table serves every core; the stack differs.
_FIRST = {"dense": 420, "conv2d": 300, "depthwise_conv2d": 200, "max_pool": 100, "avg_pool": 120, "global_avg_pool": 80}
_MORE = {"dense": 70, "conv2d": 100, "depthwise_conv2d": 100, "max_pool": 60, "avg_pool": 60, "global_avg_pool": 60}
_BOARD = ((0x00000000, 0x400000), (0x20000000, 0x400000))  # mps2 an385/an386/an500: 4 MiB SSRAM each
_V7M = {"code_first": _FIRST, "code_more": _MORE, "stack": 210, "stack_dense": 150}
# issue 17's dot products (templates/dots.h.in): the SMLAD kernel on DSP cores is about 300
# bytes more, once, and the dense layers that call it smaller; ARMv6-M's about 100 more once;
# both take a deeper stack (measured on tests/test_budget.py's networks, as above).
_DSP = {
    **_V7M,
    "code_first": {**_FIRST, "dense": 725},
    "code_more": {**_MORE, "dense": 20},
    "code_table": 180,
    "stack": 215,
    "stack_dense": 200,
    "stack_table": 15,
}
_V6M = {**_V7M, "code_first": {**_FIRST, "dense": 525}, "stack": 245, "stack_dense": 232, "stack_table": 24}

TARGETS = {
    "cortex-m0": Target("cortex-m0", "cortex-m0", "UC_CPU_ARM_CORTEX_M0", None, *_BOARD, **_V6M),
    "cortex-m4": Target("cortex-m4", "cortex-m4", "UC_CPU_ARM_CORTEX_M4", "mps2-an386", *_BOARD, **_DSP),
    "cortex-m7": Target("cortex-m7", "cortex-m7", "UC_CPU_ARM_CORTEX_M7", "mps2-an500", *_BOARD, **_DSP),
    "cortex-m33": Target(  # mps2-an505 boots secure: SSRAM1's secure alias, SSRAM2's
        "cortex-m33",
        "cortex-m33",
        "UC_CPU_ARM_CORTEX_M33",
        "mps2-an505",
        (0x10000000, 0x400000),
        (0x38000000, 0x200000),
        **_DSP,
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
