"""benchmarks/tune.py --quick: a search on the digits, its JSON per part, read back instead of run again."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("optuna", reason="the benchmark searches with the [tune] extra (optuna)")
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "tune.py"


def load():
    spec = importlib.util.spec_from_file_location("qmtik_benchmark_tune", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_a_part_json_and_resumes_from_it(tmp_path, capsys):
    bench = load()
    assert bench.main(["--quick", "--parts", "mlp", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "mlp.json").read_text())
    counts = result["counts"]
    assert counts["complete"] + counts["pruned"] >= 4 and result["workers"] == 1
    assert 0 <= result["rejected_share"] < 1 and result["trials_per_hour"] > 0
    assert result["winner"]["flash"] <= 32 * 1024 and 0 < result["winner"]["test_accuracy_int8"] <= 1
    assert "qmtik tune" in result["command"] and "--max-flash 32768" in result["command"]
    table = capsys.readouterr().out
    assert "| mlp | 32 / 16 KiB | 1 |" in table and "hand-designed CNN" in table
    (tmp_path / "mlp.tune.db").unlink()  # read back from the JSON, not searched again
    assert bench.main(["--quick", "--parts", "mlp", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "mlp.tune.db").exists()


def test_a_part_searched_only_goes_on_with_its_winner_and_keeps_the_searchs_figures(tmp_path):
    bench = load()
    assert bench.main(["--quick", "--parts", "mlp", "--out", str(tmp_path), "--search-only"]) == 0
    searched = json.loads((tmp_path / "mlp.json").read_text())
    assert searched["winner"] is None
    (tmp_path / "mlp.tune.db").unlink()  # the search is not run again: no study is opened
    assert bench.main(["--quick", "--parts", "mlp", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "mlp.json").read_text())
    assert not (tmp_path / "mlp.tune.db").exists()
    assert result["search_seconds"] == searched["search_seconds"] and result["best_trial"] == searched["best_trial"]
    assert result["winner"]["trial"] == searched["best_trial"]["number"]


def test_unknown_parts_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        load().main(["--parts", "gpu", "--out", str(tmp_path)])
