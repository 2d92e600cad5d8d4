"""The header's dot products (templates/dots.h.in) on emulated cores: the SMLAD path (Cortex-M4,
M33) and the ARMv6-M path (Cortex-M0) give the spec's scores byte for byte at -O2 and -Os, on
shapes that leave rows and inputs over (not multiples of four, fewer than four), with extreme
inputs; the linked code really holds SMLAD or the LDRSB loop, and PREFIX_PORTABLE_DOTS the plain
loop; the dense layers of the 784-256-256-10 model stay within the issue's instructions per MAC.
Skipped (with the reason) without the cross toolchain or unicorn."""

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from qmtik.cross import build
from qmtik.emulate import check, problem
from qmtik.targets import TARGETS
from test_emulate import codes_for
from test_export_c import MODELS
from test_export_c import build as make

SHAPES = {
    "odd": make((9, 21, 7, 5), "relu", seed=12),  # 21 rows: five fours and one; 9 and 7 inputs: a word and a rest
    "narrow": make((3, 6, 2), "leaky_relu", seed=13),  # fewer than four inputs
    "tanh-fixed": MODELS["tanh-fixed"],
    "relu-one-wide": MODELS["relu-one-wide"],
}


def needs(target):
    why = problem(target)
    return pytest.mark.skipif(why is not None, reason=str(why))


@pytest.mark.parametrize("optimize", ["-O2", "-Os"])
@pytest.mark.parametrize("target", [pytest.param(t, marks=needs(t)) for t in ("cortex-m0", "cortex-m4", "cortex-m33")])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_path_equals_the_spec(name, target, optimize):
    model = SHAPES[name]
    got = check(model, target_name=target, codes=codes_for(model, 5, n=12), optimize=optimize, counted=0)
    assert got["mismatched_samples"] == 0 and got["samples"] == 12


def disassembly(target: str, extra=()) -> str:
    model = SHAPES["odd"]
    with tempfile.TemporaryDirectory() as tmp:
        built = build(model, np.zeros((1, model.inputs)), TARGETS[target], Path(tmp), "net", "-O2", extra=extra)
        return subprocess.run(["arm-none-eabi-objdump", "-d", str(built.elf)], capture_output=True, text=True).stdout


@needs("cortex-m4")
def test_the_paths_are_the_ones_linked():
    assert "smlad" in disassembly("cortex-m4") and "sxtb16" in disassembly("cortex-m4")
    assert "smlad" not in disassembly("cortex-m4", ["-DNET_PORTABLE_DOTS"])
    m0 = disassembly("cortex-m0")
    assert "<net__dot4>:" in m0 and "smlad" not in m0
    assert "<net__dot4>:" not in disassembly("cortex-m0", ["-DNET_PORTABLE_DOTS"])


@pytest.mark.parametrize("target, most", [pytest.param("cortex-m4", 1.8, marks=needs("cortex-m4")),
                                          pytest.param("cortex-m0", 5.0, marks=needs("cortex-m0"))])  # fmt: skip
def test_the_dense_layers_stay_within_the_instructions_per_mac(target, most):
    """Exact counts, not timings: 268,800 MACs per inference of the 784-256-256-10 model, -O2,
    the requantization included (measured: 1.68 and 4.06; the portable loops 5.12 and 7.32)."""
    model = make((784, 256, 256, 10), seed=1)
    got = check(model, target_name=target, codes=codes_for(model, 1, n=3), optimize="-O2", counted=3)
    assert got["mismatched_samples"] == 0
    assert got["instructions"][2] / 268_800 <= most
