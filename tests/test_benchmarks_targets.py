"""benchmarks/targets.py: a model on each Cortex-M target, one JSON line per run and the table."""

import json

import numpy as np
import pytest

from qmtik.emulate import problem
from qmtik.qmtfile import save_model
from test_benchmarks import load
from test_export_c import MODELS


@pytest.mark.skipif(problem("cortex-m0") is not None, reason=str(problem("cortex-m0")))
def test_the_table_has_a_row_per_run_and_the_json_a_line(tmp_path, capsys):
    targets = load("targets")
    model = MODELS["relu-17-3"]
    save_model(tmp_path / "m.qmt", model)
    x = np.random.default_rng(0).uniform(-1, 3, (9, model.inputs)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(9) % 4)
    argv = [str(tmp_path / "m.qmt"), "--data", str(tmp_path / "x.npz"), "--samples", "5", "--counted", "2"]
    assert targets.main([*argv, "--targets", "cortex-m0", "--no-qemu", "--json", str(tmp_path / "r.jsonl")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[:2] == targets.HEADER and len(table) == 3
    assert table[2].startswith("| cortex-m0 | unicorn | 5 | 0 | ") and "2 counted" in table[2]
    run = json.loads((tmp_path / "r.jsonl").read_text())
    assert run["samples"] == 5 and run["estimate"]["code"] >= run["code"]
