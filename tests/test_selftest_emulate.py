"""qmtik.selftest_emulate: the header's self-test on emulated Cortex-M4 (the DSP kernels) and
Cortex-M0 passes, catches every one of more than 100 bit flips in the constants (in one
emulated run, each flip undone after its call) and a deliberately wrong kernel, and costs less
than 1 KiB of flash for the Fashion-MNIST 784-256-256-10 model. Skipped (with the reason)
without the cross toolchain or unicorn."""

import pytest

from qmtik import selftest_emulate
from qmtik.emulate import problem
from qmtik.export_c import export_c
from test_export_c import build
from test_selftest import off_by_one_shift

TARGETS = ["cortex-m0", "cortex-m4"]


def needs(target):
    why = problem(target)
    return pytest.mark.skipif(why is not None, reason=str(why))


@pytest.mark.parametrize("target", [pytest.param(t, marks=needs(t)) for t in TARGETS])
def test_every_flipped_bit_of_the_constants_is_caught(target):
    """120 flips over every array (leaky relu's and the table's too), in one run; the calls
    before and after (the bit restored) pass."""
    model = build((37, 12, 9, 5), ["leaky_relu", "sigmoid"], seed=6)
    got = selftest_emulate.run(model, target, flips=120, seed=1)
    assert got["results"][0] == 0 and got["results"][-1] == 0
    assert len(got["results"]) == 122
    assert all(code & 1 for code in got["results"][1:-1])  # PREFIX_SELFTEST_CONSTANTS
    names = {site[0] for site in got["sites"]}
    assert {"net__l0_weights", "net__l0_neg_shift", "net__l1_table", "net__l2_multiplier"} <= names
    first, last = got["instructions"][0], got["instructions"][-1]
    assert first == last > 10_000 and got["stack"] > 0  # a flip may change the branches taken


def wrong_dsp_kernel(text: str) -> str:
    """smlad -> smladx: the DSP loop's second row pairs the wrong halves."""
    line = '"smlad %[s1], %[t1], %[even], %[s1]\\n\\t"'
    assert text.count(line) == 1
    return text.replace(line, '"smladx %[s1], %[t1], %[even], %[s1]\\n\\t"')


def wrong_m0_kernel(text: str) -> str:
    """The ARMv6-M loop adds row 1's product to row 0's sum."""
    line = '"add r9, r7\\n\\t"'
    assert text.count(line) == 1
    return text.replace(line, '"add r8, r7\\n\\t"')


@pytest.mark.parametrize(
    "target, wrong",
    [
        pytest.param("cortex-m4", off_by_one_shift, marks=needs("cortex-m4")),
        pytest.param("cortex-m4", wrong_dsp_kernel, marks=needs("cortex-m4")),
        pytest.param("cortex-m0", off_by_one_shift, marks=needs("cortex-m0")),
        pytest.param("cortex-m0", wrong_m0_kernel, marks=needs("cortex-m0")),
    ],
)
def test_a_wrong_kernel_is_caught(target, wrong):
    model = build((41, 16, 6), "relu", seed=9)
    assert selftest_emulate.run(model, target)["results"] == [0, 0]
    assert selftest_emulate.run(model, target, header=wrong(export_c(model, "net")))["results"] == [2, 2]


@pytest.mark.parametrize("target", [pytest.param(t, marks=needs(t)) for t in TARGETS])
def test_the_selftest_of_the_fashion_model_costs_less_than_a_kib_of_flash(target):
    model = build((784, 256, 256, 10), seed=1)
    for optimize in ("-Os", "-O2"):
        cost = selftest_emulate.cost(model, target, optimize)
        assert 300 < cost["own"] <= cost["image"] <= 1024
