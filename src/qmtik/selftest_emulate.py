"""The header's self-test on an emulated Cortex-M: what it costs and what it catches.

run() cross-compiles the header with templates/selftest_harness.c.in (one predict, then a
number of self-test calls) and runs it in unicorn (emulate.run_unicorn), which counts each
call's instructions exactly and, between calls, flips one bit of a constant array in the
emulated flash and restores it after: many flips in one run. cost() gives the self-test's flash
bytes on a target, exactly: the linked image with it, less the emulated check's image without
it (the same predict; the linker drops an unreferenced selftest), and its own symbols' bytes.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from .cross import build, model_sizes
from .emulate import run_unicorn
from .errors import CompilerError
from .selftest import constant_arrays
from .targets import get_target

OWN = (
    "selftest",
    "_crc",
    "_crc_words",
    "_crc_nibbles",
    "_selftest_cases",
    "_selftest_arrays",
    "_selftest_input",
)  # after prefix_ or prefix__


def arrays(model, prefix: str, built) -> list:
    """[(name, address, bytes)] of the header's constant arrays in the linked ELF."""
    names = [
        f"{prefix}__l{i}_{suffix}" for i, layer in enumerate(model.layers) for suffix, _, _ in constant_arrays(layer)
    ]
    missing = [name for name in names if name not in built.symbols]
    if missing:
        raise CompilerError(f"the linked self-test has no symbol {missing[0]}")
    return [(name, built.address(name), built.symbols[name][1]) for name in names]


def flip_sites(model, prefix: str, built, count: int, seed: int = 0) -> list:
    """count (array, address, bit) sites: every array once, the rest uniform over all the bytes."""
    rng, table = np.random.default_rng(seed), arrays(model, prefix, built)
    sizes = np.array([size for _, _, size in table])
    picks = list(range(len(table))) + list(rng.choice(len(table), max(0, count - len(table)), p=sizes / sizes.sum()))
    return [(table[k][0], table[k][1] + int(rng.integers(table[k][2])), int(rng.integers(8))) for k in picks[:count]]


def run(
    model,
    target_name: str = "cortex-m4",
    flips: int = 0,
    seed: int = 0,
    optimize: str = "-Os",
    header=None,
    prefix="net",
) -> dict:
    """Call the self-test once, then once per flip (flip_sites: that bit flipped for that call
    only), then once more: {"results": [return codes], "instructions": [per call], "stack":
    bytes, "sites": the flips}."""
    target = get_target(target_name)
    calls = flips + 2
    with tempfile.TemporaryDirectory() as tmp:
        built = build(
            model,
            np.zeros((1, model.inputs), np.int8),
            target,
            Path(tmp),
            prefix,
            optimize,
            extra=[f"-DQM_CALLS={calls}"],
            harness="selftest_harness.c.in",
            header=header,
        )
        sites = [None, *flip_sites(model, prefix, built, flips, seed), None]

        def on_mark(uc, k):
            site = sites[k // 2]
            if site is not None:  # before the call (k even) flip the bit, after it flip it back
                address = site[1]
                uc.mem_write(address, bytes([uc.mem_read(address, 1)[0] ^ (1 << site[2])]))

        got = run_unicorn(dataclasses.replace(built, samples=calls + 1), target, 600.0, counted=None, on_mark=on_mark)
    marks = got["marks"]["qm_mark"]
    return {
        "results": [int(v) for v in got["classes"][1:]],
        "instructions": [int(v) for v in np.diff(marks)[::2]],
        "stack": got["stack"],
        "sites": sites[1:-1],
    }


def cost(model, target_name: str = "cortex-m4", optimize: str = "-Os", prefix: str = "net") -> dict:
    """The self-test's flash bytes on target: image (the linked image with it less without it)
    and own (the sizes of its functions and tables as linked)."""
    target = get_target(target_name)
    codes = np.zeros((1, model.inputs), np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        plain = model_sizes(build(model, codes, target, Path(tmp) / "plain", prefix, optimize))
        built = build(model, codes, target, Path(tmp) / "self", prefix, optimize, harness="selftest_harness.c.in")
        sizes = model_sizes(built)
    names = {f"{prefix}_selftest", *(f"{prefix}_{suffix}" for suffix in OWN)}
    own = sum(size for name, (_, size, _) in built.symbols.items() if name in names)
    return {
        "image": sizes["image_flash"] - plain["image_flash"],
        "own": own,
        "flash_with": sizes["code"] + sizes["constants"],
    }
