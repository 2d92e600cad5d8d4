"""qmtik.c_check's measures: `qmtik export-c --report` gives flash and RAM in total and per
layer (a layer's kernel and constants; the arena step it runs in), the totals as before."""

import re

import pytest

import qmtik
from qmtik.c_check import code_size, find_compiler, layer_lines, per_layer
from qmtik.integer_model import arena_bytes, layer_memory, memory_needs
from test_export_c import build, run_cli
from test_export_c_windows import Chain

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler on this machine")


def main_cnn():
    """benchmarks/cnn.py's "main" shapes: conv 32 same, max pool 2, conv 64 same, max pool 2, dense 10."""
    c = Chain((28, 28, 1), seed=0).conv(32, 3, 1, "same").pool("max_pool", 2).conv(64, 3, 1, "same")
    return c.pool("max_pool", 2).dense(10).model()


def test_per_layer_memory_adds_up_to_the_totals():
    """Constants per layer sum to the header's; each layer's RAM is its step's: the fused pairs
    share input + pooled output, and the largest is the arena."""
    model = main_cnn()
    rows = per_layer(model, {"net__l0": 300, "net__l2": 400, "net__l4": 100})
    assert [(r["kind"], r["fused"], r["code"], r["ram"]) for r in rows] == [
        ("conv2d", 2, 300, 784 + 6_272),
        ("max_pool", 1, 0, 784 + 6_272),  # computed in layer 1's kernel
        ("conv2d", 4, 400, 6_272 + 3_136),
        ("max_pool", 3, 0, 6_272 + 3_136),
        ("dense", None, 100, 3_136),  # the last layer: its input (the scores are the caller's)
    ]
    assert sum(r["constants"] for r in rows) == memory_needs(model)["constants"]
    assert [r["constants"] for r in rows] == [32 * 9 + 32 * 9, 0, 64 * 288 + 64 * 9, 0, 10 * 3136 + 10 * 9]
    assert max(r["ram"] for r in rows) == arena_bytes(model.layers) == memory_needs(model)["arena"] == 9_408
    assert per_layer(model, {})[0]["code"] is None  # unmeasured, not 0
    assert "arena 9,408 bytes (the input included); layers 1 and 2 run as one kernel; layers 3 and 4" in model.info()
    lines = layer_lines(rows)
    assert (
        lines[0] == "  layer 1 conv2d, fused with layer 2: flash 876 bytes (code 300, constants 576); RAM 7,056 bytes"
    )
    assert lines[4] == "  layer 5 dense: flash 31,550 bytes (code 100, constants 31,450); RAM 3,136 bytes"
    assert "flash ? bytes (code ?" in layer_lines(per_layer(model, {}))[0]


def test_dense_layers_need_their_input_and_output_buffers():
    """A dense network keeps its scratch halves: a layer needs its input (the first's is the
    caller's) and its output (the last's are the scores), never more than the scratch."""
    model = build((12, 7, 5, 3))
    assert [part["ram"] for part in layer_memory(model.layers)] == [7, 7 + 5, 5]
    assert max(part["ram"] for part in layer_memory(model.layers)) <= memory_needs(model)["scratch"] == 14


@needs_cc
def test_code_size_measures_each_kernel_and_keeps_the_totals():
    """The local compiler: each kernel's code measured apart (-fno-inline), a fused pool's 0;
    the totals as before (code, constants, stack, scratch = arena)."""
    model = main_cnn()
    sizes = code_size(model)
    assert {"code", "constants", "stack", "scratch", "arena"} <= set(sizes)
    assert sizes["scratch"] == sizes["arena"] == 9_408 and sizes["constants"] >= memory_needs(model)["constants"]
    codes = [row["code"] for row in sizes["layers"]]
    assert codes[1] == codes[3] == 0 and all(code > 0 for code in codes[::2])


@needs_cc
def test_export_c_report_says_flash_and_ram_per_layer(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    qmtik.save_model("cnn.qmt", main_cnn())
    code, err, out = run_cli(capsys, ["export-c", "cnn.qmt", "-o", "cnn.h", "--report"])
    assert (code, err) == (0, [])
    total = re.search(r"flash: ([\d,]+) bytes \(code ([\d,]+), constants ([\d,]+); local compiler, -Os\); RAM: ", out)
    assert total and "(scratch 9,408, stack " in out
    layers = re.findall(
        r"^  layer (\d) (\w+)(, fused with layer \d)?: flash ([\d,]+) bytes .* RAM ([\d,]+) bytes$", out, re.M
    )
    assert [(n, kind, ram) for n, kind, _, _, ram in layers] == [
        ("1", "conv2d", "7,056"),
        ("2", "max_pool", "7,056"),
        ("3", "conv2d", "9,408"),
        ("4", "max_pool", "9,408"),
        ("5", "dense", "3,136"),
    ]
