"""qmtik.emulate: the header cross-compiled for Cortex-M0 and Cortex-M4 (unicorn) and for the
qemu boards (Cortex-M4, M7, M33) equals the spec byte for byte, on models of every layer and
activation kind and of the three output kinds, with extreme inputs; the instruction count is
exact; every failure is one line. Skipped (with the reason) without the toolchain or emulator."""

import numpy as np
import pytest

from qmtik import emulate
from qmtik.cross import build
from qmtik.emulate import check, problem, run_qemu, run_unicorn
from qmtik.errors import CompilerError
from qmtik.targets import TARGETS
from test_export_c import MODELS
from test_export_c_windows import NETWORKS


def needs(target, emulator="unicorn"):
    why = problem(target, emulator)
    return pytest.mark.skipif(why is not None, reason=str(why))


# dense: relu, leaky relu (per tensor), sigmoid, tanh; outputs softmax, sigmoid (one output) and
# linear (regression); windows: conv2d, pointwise, conv1d, depthwise, max, average and global
# average pools (test_export_c_windows.NETWORKS covers each, fused and not)
KINDS = {name: MODELS[name] for name in MODELS if name != "relu-one-wide"} | NETWORKS


def codes_for(model, seed, n=24):
    """A few inputs, the extremes first: all -128, all 127, all 0, then rows of only -128 and 127."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, (n, model.inputs))
    codes[0], codes[1], codes[2] = -128, 127, 0
    codes[3:12] = rng.choice([-128, 127], codes[3:12].shape)
    return codes.astype(np.int8)


def test_the_models_cover_every_kind():
    kinds = {layer.kind for model in KINDS.values() for layer in model.layers}
    assert kinds == {"dense", "conv2d", "depthwise_conv2d", "max_pool", "avg_pool", "global_avg_pool"}
    activations = {layer.activation for model in KINDS.values() for layer in model.layers if hasattr(layer, "bias")}
    assert activations >= {"relu", "leaky_relu", "sigmoid", "tanh", "linear"}
    assert {model.output for model in KINDS.values()} == {"softmax", "sigmoid", "linear"}


@pytest.mark.parametrize("target", ["cortex-m0", "cortex-m4"])
@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_emulated_header_equals_the_spec(target, name):
    if problem(target):
        pytest.skip(problem(target))
    model = KINDS[name]
    result = check(model, target_name=target, codes=codes_for(model, len(name)), counted=2)
    assert (result["score_mismatches"], result["class_mismatches"], result["mismatched_samples"]) == (0, 0, 0)
    assert result["samples"] == 24 and result["counted"] == 2
    low, median, high = result["instructions"]
    assert 100 < low <= median <= high
    assert 0 < result["stack"] <= TARGETS[target].stack  # the stated allowance holds (tests/test_budget.py)
    assert result["ram"] == result["scratch"] + result["stack"]


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7", "cortex-m33"])
def test_qemu_boards_agree_with_unicorn(target):
    if problem(target, "qemu") or problem(target):
        pytest.skip(problem(target, "qemu") or problem(target))
    model = NETWORKS["2d"]
    codes = codes_for(model, 5)
    on_qemu = check(model, target_name=target, emulator="qemu", codes=codes)
    on_unicorn = check(model, target_name=target, codes=codes, counted=0)
    assert on_qemu["mismatched_samples"] == 0 and on_qemu["instructions"] is None
    assert {k: v for k, v in on_qemu.items() if k not in ("emulator", "instructions", "counted")} == {
        k: v for k, v in on_unicorn.items() if k not in ("emulator", "instructions", "counted")
    }  # the same ELF: the same sizes and the same painted stack


@needs("cortex-m0")
def test_the_block_count_is_exact(tmp_path):
    """On the Cortex-M0 (no IT blocks) a hook on every instruction is the oracle: the block
    hook's counts equal it at every mark. (unicorn's per-instruction hook skips one instruction
    of each Thumb-2 IT block, which a block's decoded length counts, as the core executes it.)"""
    model = KINDS["tiny"]
    built = build(model, codes_for(model, 1, 3), TARGETS["cortex-m0"], tmp_path)
    by_block = run_unicorn(built, TARGETS["cortex-m0"], counted=None)["marks"]["qm_mark"]
    by_instruction = run_unicorn(built, TARGETS["cortex-m0"], counted=None, per_instruction=True)["marks"]["qm_mark"]
    assert len(by_block) == 6 and by_block == by_instruction
    m4 = build(model, codes_for(model, 1, 3), TARGETS["cortex-m4"], tmp_path)
    blocks = np.diff(run_unicorn(m4, TARGETS["cortex-m4"], counted=None)["marks"]["qm_mark"])
    hooked = np.diff(run_unicorn(m4, TARGETS["cortex-m4"], counted=None, per_instruction=True)["marks"]["qm_mark"])
    assert (blocks >= hooked).all()


def test_thumb_instructions_are_counted_by_their_first_halfword():
    # movs r0, #1 (16-bit); bl (32-bit, 0xf000 0xf81c); bic.w (32-bit, 0xf022); it hi (16-bit)
    code = bytes.fromhex("0120") + bytes.fromhex("00f01cf8") + bytes.fromhex("22f00302") + bytes.fromhex("88bf")
    assert emulate._thumb_count(code) == 4


@needs("cortex-m0")
def test_the_cortex_m0_refuses_thumb2_code_in_one_line(tmp_path):
    """unicorn's M0 model is strict: an ARMv7-M build faults on it (so an M0 run proves ARMv6-M code)."""
    model = KINDS["relu-17-3"]
    built = build(model, codes_for(model, 1, 3), TARGETS["cortex-m4"], tmp_path)
    with pytest.raises(
        CompilerError, match=r"^the emulated run on cortex-m0 failed at 0x[0-9a-f]+: Invalid instruction"
    ):
        run_unicorn(built, TARGETS["cortex-m0"])


@needs("cortex-m4")
def test_a_run_that_does_not_finish_in_time_is_one_line(tmp_path):
    model = NETWORKS["2d"]
    built = build(model, codes_for(model, 1, 24), TARGETS["cortex-m4"], tmp_path)
    with pytest.raises(CompilerError, match=r"^the emulated run on cortex-m4 did not finish within 0.001 s$"):
        run_unicorn(built, TARGETS["cortex-m4"], timeout=0.001, counted=0)
    if problem("cortex-m4", "qemu") is None:
        with pytest.raises(CompilerError, match=r"^the emulated run on cortex-m4 \(qemu\) did not finish within"):
            run_qemu(built, TARGETS["cortex-m4"], timeout=0.01)


def test_what_cannot_run_is_one_line(monkeypatch):
    assert problem("cortex-m0", "qemu") in (
        "qemu has no cortex-m0 board; use the unicorn emulator",
        problem("cortex-m0", "qemu"),  # (or the toolchain's line, where it is missing)
    )
    assert emulate.emulator_problem("bochs", TARGETS["cortex-m4"]).startswith("unknown emulator 'bochs'")
    monkeypatch.setattr(emulate.shutil, "which", lambda name: None)
    assert emulate.emulator_problem("qemu", TARGETS["cortex-m4"]) == (
        "qemu-system-arm is not installed (apt-get install qemu-system-arm)"
    )
    with pytest.raises(CompilerError, match="host target runs no emulator"):
        check(KINDS["relu-17-3"], target_name="host", codes=np.zeros((1, 17)))


def test_the_timeout_grows_with_the_work():
    from test_export_c import build as dense

    model = dense((784, 256, 256, 10))
    assert emulate.timeout_for(model, 0) == emulate.TIMEOUT
    macs = 784 * 256 + 256 * 256 + 256 * 10
    assert emulate.timeout_for(model, 10) == emulate.TIMEOUT + 10 * macs / emulate.SLOWEST
    assert emulate.timeout_for(NETWORKS["2d"], 10) > emulate.timeout_for(NETWORKS["2d"], 1)
