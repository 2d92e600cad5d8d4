"""The config's [deploy] section: the microcontroller a network is meant for and its budgets.

`qmtik train` checks the network against it from the topology alone, before reading any data
(budget.py); `qmtik export-c --max-flash/--max-ram` check the compiled header again. Sizes are
bytes, or a number with K, KiB, M or MiB (1 K = 1 KiB = 1,024 bytes); 0 is no budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import config_values as check
from .config_values import documented
from .errors import ConfigError
from .targets import TARGETS

MAX_SIZE = 1 << 32  # a Cortex-M's whole address space: any budget above is a mistake
SIZE = re.compile(r"(\d+)\s?(K|KiB|M|MiB)?")
UNITS = {None: 1, "K": 1024, "KiB": 1024, "M": 1024 * 1024, "MiB": 1024 * 1024}
SIZE_ALLOWED = "bytes (an integer), or a text such as '256K', '256 KiB', '1M' or '2MiB' (1 K = 1,024); 0: no budget"


def size_problem(value, key: str = "size") -> str | None:
    """Why value is no size (parse_size's forms), or None."""
    try:
        parse_size(value, key)
    except ConfigError as exc:
        return str(exc)
    return None


def parse_size(value, key: str = "size") -> int:
    """Bytes of a size: an integer, or digits with K, KiB, M or MiB; negative, fractional,
    other units and sizes above 4 GiB are refused in one line naming key."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        check.refuse(key, value, SIZE_ALLOWED)
    if isinstance(value, int):
        size = value
    else:
        match = SIZE.fullmatch(value.strip())
        if match is None:
            check.refuse(key, value, SIZE_ALLOWED)
        size = int(match.group(1)) * UNITS[match.group(2)]
    if size < 0 or size > MAX_SIZE:
        check.refuse(key, value, f"{SIZE_ALLOWED}; at most 4 GiB")
    return size


def show_size(size: int) -> str:
    """A budget as people write it: '256 KiB', '1 MiB', else '1,000 B'."""
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor:,} {unit}"
    return f"{size:,} B"


@dataclass(frozen=True)
class DeployConfig:
    """Where the network will run: the target and its flash and RAM budgets."""

    target: str = documented(
        "cortex-m4",
        "the microcontroller core the budgets are for (its code and stack allowances; "
        "qmtik info --target, export-c --target)",
        " | ".join(TARGETS),
    )
    max_flash: int = documented(
        0, "flash the model may take: constants, code (qmtik train checks it before training)", SIZE_ALLOWED
    )
    max_ram: int = documented(0, "RAM the model may take: its arena or scratch, and stack", SIZE_ALLOWED)

    def __post_init__(self):
        if not isinstance(self.target, str) or self.target not in TARGETS:
            check.refuse("deploy.target", self.target, " | ".join(TARGETS))
        for key in ("max_flash", "max_ram"):
            object.__setattr__(self, key, parse_size(getattr(self, key), f"deploy.{key}"))
