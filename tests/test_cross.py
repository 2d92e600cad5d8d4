"""qmtik.cross: the header linked with our harness, start-up and linker script for each Cortex-M
target, and the sizes read from the ELF: constants exactly the header's, code the header's own
functions. Skipped (with the reason) without arm-none-eabi-gcc and newlib."""

import shutil

import numpy as np
import pytest

from qmtik import cross
from qmtik.cross import build, model_sizes, sections, toolchain_problem
from qmtik.errors import CompilerError
from qmtik.export_c import export_c
from qmtik.integer_model import memory_needs
from qmtik.targets import TARGETS
from test_c_check import main_cnn
from test_export_c import MODELS

needs_toolchain = pytest.mark.skipif(toolchain_problem() is not None, reason=str(toolchain_problem()))


@needs_toolchain
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", ["relu-one-wide", "main_cnn"])
def test_the_linked_constants_are_the_headers_exactly(target, name, tmp_path):
    model = main_cnn() if name == "main_cnn" else MODELS[name]
    built = build(model, np.zeros((2, model.inputs)), TARGETS[target], tmp_path)
    sizes = model_sizes(built)
    assert sizes["constants"] == memory_needs(model)["constants"]
    assert f"#define NET_CONSTANT_BYTES {sizes['constants']}\n" in export_c(model, "net")
    assert sizes["scratch"] == memory_needs(model)["scratch"]
    assert 300 < sizes["code"] < 2000
    image = sections(built.elf)
    assert cross.STACK <= image[".stack"] < cross.STACK + 8 and image[".rodata"] >= sizes["constants"]
    origin = TARGETS[target].flash[0]
    assert built.symbols["qm_reset"][0] & ~1 >= origin  # linked at the board's code memory


@needs_toolchain
def test_a_build_failure_is_one_line(tmp_path):
    model = MODELS["relu-17-3"]
    with pytest.raises(CompilerError, match=r"^the header did not build for cortex-m4: [^\n]*$"):
        build(model, np.zeros((1, model.inputs)), TARGETS["cortex-m4"], tmp_path, extra=("-mno-such-flag",))
    with pytest.raises(CompilerError, match="at least one input"):
        build(model, np.zeros((0, model.inputs)), TARGETS["cortex-m4"], tmp_path)


def test_a_missing_toolchain_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert toolchain_problem() == (
        "arm-none-eabi-gcc is not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)"
    )
    model = MODELS["relu-17-3"]
    with pytest.raises(CompilerError, match="^arm-none-eabi-gcc is not installed"):
        build(model, np.zeros((1, model.inputs)), TARGETS["cortex-m4"], tmp_path)


def test_a_missing_newlib_says_what_to_install(monkeypatch):
    class Done:
        stdout = "nano.specs\n"  # what gcc -print-file-name prints for a file it does not find

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(cross.subprocess, "run", lambda *args, **kwargs: Done())
    cross._newlib_problem.cache_clear()
    try:
        assert toolchain_problem() == (
            "newlib for arm-none-eabi-gcc is not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)"
        )
    finally:
        cross._newlib_problem.cache_clear()
