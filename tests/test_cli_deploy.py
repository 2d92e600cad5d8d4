"""qmtik.cli.deploy: `export-c --target` (the header built for a Cortex-M, run in an emulator,
compared and measured), `--max-flash/--max-ram` (exit 1 on an overshoot; the flags override a
checkpoint's [deploy]) and `info --target` (estimates, labelled so, from a config before training)."""

import os

import numpy as np
import pytest

from qmtik.cli import main
from qmtik.emulate import problem
from qmtik.errors import ConfigError
from qmtik.qmtfile import save_model
from qmtik.workflow import load_integer_model
from test_cli import TINY, fails
from test_workflow import through_fifo

needs_m0 = pytest.mark.skipif(problem("cortex-m0") is not None, reason=str(problem("cortex-m0")))


@pytest.fixture
def trained(tmp_path, monkeypatch, capsys):
    """The starter config (digits, 64 inputs) trained for one epoch with a small hidden layer."""
    monkeypatch.chdir(tmp_path)
    assert main(["init", "net.toml"]) == 0
    assert main(["train", "net.toml", "--epochs", "1", *TINY]) == 0
    np.savez("few.npz", x=np.random.default_rng(0).uniform(0, 16, (12, 64)), y=np.arange(12) % 10)
    capsys.readouterr()
    return tmp_path / "net.ckpt.npz"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system (os.mkfifo)")
def test_export_c_reads_its_model_once_so_it_can_come_through_a_pipe(trained, capsys):
    """budgets_of loaded the model for its [deploy], then export-c loaded it again: from a pipe
    the second read found nothing ('checkpoint /dev/stdin: a FIFO or pipe')."""
    save_model(trained.parent / "net.qmt", load_integer_model(trained))
    blob = (trained.parent / "net.qmt").read_bytes()
    out = through_fifo(trained.parent / "model.pipe", blob, lambda path: main(["export-c", str(path), "-o", "p.h"]))
    assert out == {"value": 0}, out
    piped = (trained.parent / "p.h").read_bytes()
    assert main(["export-c", str(trained.parent / "net.qmt"), "-o", "p.h"]) == 0
    assert piped == (trained.parent / "p.h").read_bytes()


@needs_m0
def test_export_c_on_a_target_compares_counts_and_measures(trained, capsys):
    assert main(["export-c", str(trained), "-o", "net.h", "--check", "few.npz", "--target", "cortex-m0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("wrote net.h (")
    assert lines[1] == (
        "check on cortex-m0 (unicorn): 12 samples, 0 score and 0 class mismatches between the emulated C and Python"
    )
    assert "instructions per inference (min " in lines[2] and "counted exactly)" in lines[2]
    assert lines[3].startswith("cortex-m0 (unicorn): flash ") and "stack " in lines[3] and "painted" in lines[3]


@needs_m0
def test_export_c_report_on_a_target_says_each_layers_estimate_under_the_measured_totals(trained, capsys):
    """--report with --target printed only the target's total line, not the per-layer lines it prints for the host."""
    from qmtik.budget import estimate
    from qmtik.workflow import load_integer_model

    assert main(["export-c", str(trained), "-o", "net.h", "--target", "cortex-m0", "--report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    total = next(i for i, line in enumerate(lines) if line.startswith("cortex-m0 (unicorn): flash "))
    assert lines[total + 1] == (
        "cortex-m0 (unicorn) per layer, estimated (constants and RAM exact, code an allowance for "
        "arm-none-eabi-gcc -Os; the totals above are measured):"
    )
    rows = estimate(load_integer_model(trained), "cortex-m0")["layers"]
    assert len(rows) == 2  # the starter's hidden layer and its output layer
    assert lines[total + 2 :] == [
        f"  layer {row['layer']} dense: flash ≈ {row['flash']:,} bytes (constants {row['constants']:,}, "
        f"code ≈ {row['code']:,}); RAM {row['ram']:,} bytes"
        for row in rows
    ]
    assert main(["export-c", str(trained), "-o", "net.h", "--target", "cortex-m0"]) == 0  # without --report: totals
    assert not any(" per layer" in line or line.startswith("  layer ") for line in capsys.readouterr().out.splitlines())


@needs_m0
def test_a_budget_overshoot_exits_1_and_the_flags_override_the_config(trained, capsys):
    line = fails(capsys, ["export-c", str(trained), "-o", "net.h", "--target", "cortex-m0", "--max-flash", "1K"], 1)
    assert line.startswith("qmtik: error: on cortex-m0: the header needs ")
    assert "B of flash (constants " in line and "the budget is 1 KiB; layer 1 holds" in line
    assert "exact" not in line  # measured, not estimated
    assert main(["export-c", str(trained), "-o", "net.h", "--target", "cortex-m0", "--max-ram", "64K"]) == 0
    # a checkpoint whose [deploy] sets a budget is checked on its target without a flag
    assert main(["train", "net.toml", "--epochs", "1", *TINY, "--set", "deploy.max_ram=1K", "--force"]) == 0
    capsys.readouterr()
    assert main(["export-c", str(trained), "-o", "net.h"]) == 0
    assert "cortex-m4 (unicorn): flash " in capsys.readouterr().out
    line = fails(capsys, ["export-c", str(trained), "-o", "net.h", "--max-ram", "100"], 1)  # the flag wins
    assert line.startswith("qmtik: error: on cortex-m4: the header needs ") and "B of RAM (scratch 16, stack" in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "cortex-m9"], "unknown target 'cortex-m9': choose one of host, cortex-m0, cortex-m4"),
        (["--max-flash", "1.5M"], "config key --max-flash: got '1.5M'"),
        (["--max-ram", "-1"], "config key --max-ram: got '-1'"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(trained, capsys, argv, message):
    assert message in fails(capsys, ["export-c", str(trained), "-o", "net.h", *argv], 2)


def test_info_target_estimates_a_config_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "net.toml"]) == 0
    capsys.readouterr()
    assert main(["info", "net.toml", "--target", "cortex-m0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("estimates for cortex-m0, before compiling (constants and arena exact;")
    assert lines[1].startswith("  flash ≈ ") and "constants " in lines[1] and "stack ≈ 232" in lines[1]
    assert [line.split(":")[0] for line in lines[2:]] == ["  layer 1 dense", "  layer 2 dense"]
    assert "unknown target 'm0'" in fails(capsys, ["info", "net.toml", "--target", "m0"], 2)
    assert "choose one of cortex-m0" in fails(capsys, ["info", "net.toml", "--target", "host"], 2)


def test_the_config_refuses_a_bad_deploy_section(tmp_path):
    from qmtik.config import load_config

    path = tmp_path / "net.toml"
    path.write_text('[deploy]\nmax_flash = "256 kB"\n')
    with pytest.raises(ConfigError, match="^config key deploy.max_flash: got '256 kB'"):
        load_config(path)


def test_an_emulator_that_cannot_run_is_one_line_before_anything_is_written(trained, capsys):
    line = fails(capsys, ["export-c", str(trained), "-o", "net.h", "--target", "cortex-m0", "--emulator", "qemu"], 1)
    assert line in (
        "qmtik: error: qemu has no cortex-m0 board; use the unicorn emulator",
        f"qmtik: error: {problem('cortex-m0', 'qemu')}",
    )
    assert not (trained.parent / "net.h").exists()
