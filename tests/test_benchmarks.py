"""benchmarks/run.py and measure.py: the table, the JSON, the arithmetic, and a quick run on digits."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"qmtik_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = load("run")
measure = load("measure")


def training_run(mode, seed, accuracy, seconds, rss):
    return {
        "mode": mode,
        "seed": seed,
        "test_accuracy": accuracy,
        "train_seconds": seconds,
        "epoch_seconds": [seconds / 8] * 8,
        "epochs": 8,
        "samples": 60000,
        "trained_samples": 54000,
        "peak_rss_mb": rss,
    }


def inference_figures(**change):
    figures = {
        "test_accuracy": 0.8905,
        "test_samples": 10000,
        "file_bytes": 275780,
        "float32_bytes": 1077288,
        "batch_seconds": 0.05,
        "samples_per_second": 200000.0,
        "quantize_seconds": 0.014,
        "single_us": 49.0,
        "peak_rss_mb": 60.2,
        "baseline_rss_mb": 33.4,
        "layer_seconds": [[0.02, 0.01]],
        "c_latency_us": {"gcc -O3 -march=native": 14.04, "gcc -O2": 26.2},
        "c_note": "",
        "cortex_m4": {"code": 620, "constants": 273498, "stack": 136, "scratch": 512},
    }
    return {**figures, **change}


@pytest.fixture
def results():
    """Results as main() assembles them, for two data sets, with made-up figures."""
    fashion = [
        training_run("int8", s, a, t, 190 + s) for s, a, t in ((0, 0.8905, 14.0), (1, 0.8918, 13.9), (2, 0.8926, 13.5))
    ]
    fashion += [training_run("float", s, 0.889 + s / 1000, 7.2, 185) for s in range(3)]
    mnist = [training_run(m, 0, 0.98, 10.0, 180) for m in ("int8", "float")]
    datasets = {
        "fashion-mnist": {
            "title": "Fashion-MNIST",
            "topology": "784-256-256-10",
            "agreement": 1.0,
            "training": {m: run.summarize([r for r in fashion if r["mode"] == m]) for m in ("int8", "float")},
            "inference": inference_figures(),
            "profile": {"matrix products": 1.5, "optimizer": 0.5},
        },
        "mnist": {
            "title": "MNIST",
            "topology": "784-256-256-10",
            "agreement": 0.999,
            "training": {m: run.summarize([r for r in mnist if r["mode"] == m]) for m in ("int8", "float")},
            "inference": inference_figures(c_latency_us={}, c_note="no C compiler found", cortex_m4=None),
        },
    }
    return {
        "machine": run.machine(),
        "settings": {**run.FULL, "quick": False, "parts": list(run.PARTS)},
        "c_library_claims": run.C_LIBRARY,
        "datasets": datasets,
        "not_present": {},
    }


def table_rows(table):
    """{first cell: the other cells} of a markdown table, checking every row has as many cells."""
    lines = table.splitlines()
    width = lines[0].count("|")
    assert all(line.startswith("| ") and line.endswith(" |") and line.count("|") == width for line in lines)
    assert set(lines[1].replace("|", "").split()) == {"---"}
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in lines[2:])}


def test_table_has_a_row_per_figure_and_a_column_per_data_set_and_the_c_library(results):
    table = run.markdown_table(results)
    header = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
    assert header == [
        "measurement",
        "Fashion-MNIST (784-256-256-10)",
        "MNIST (784-256-256-10)",
        "C library qmtik.h (claimed)",
    ]
    rows = table_rows(table)
    assert rows["test accuracy, int8 (median of 3 seeds)"] == [
        "89.18% (89.05, 89.18, 89.26)",
        "98.00%",
        "about 90% (MNIST)",
    ]
    assert rows["training, int8, 8 epochs"][0] == "13.9 s (1.74 s per epoch of 54,000 samples)"
    assert rows["training time per sample, int8"] == ["32.2 µs", "23.1 µs", "15 ms"]
    assert rows["peak memory, training (int8 / float)"][0] == "192 MB / 185 MB"
    assert rows["model file (.qmt)"] == ["275,780 bytes (float32 weights and biases: 1,077,288; 25.6%)"] * 2 + [
        "about 300 KB"
    ]
    assert rows["batch inference, int8 codes to classes"][0] == "200,000 samples/s (10,000 in 50.0 ms; numpy)"
    assert rows["batch inference, int8 codes to classes"][2] == "2,000 samples/s (at 0.5 ms each)"
    assert rows["one sample in Python, raw inputs to class"] == ["49.0 µs", "49.0 µs", "0.5 ms"]
    assert rows["one sample in the C header, `gcc -O3 -march=native`"] == [
        "14.0 µs",
        "not measured: no C compiler found",
        "0.5 ms",
    ]
    assert "one sample in the C header, `gcc -O2`" in rows
    assert rows["test accuracy, integer model (.qmt) of seed 0"][1].startswith("89.05%; 99.90% of its classes")
    assert rows["peak memory, inference (load the .qmt, predict the batch)"][0] == (
        "60 MB (interpreter, NumPy and qmtik alone: 33 MB)"
    )
    m4 = rows["C header for a Cortex-M4 (`arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os`)"]
    assert m4[:2] == ["flash 274,118 bytes (code 620); RAM 648 bytes (scratch 512, stack 136)", ""]


def test_rows_no_data_set_measured_are_left_out(results):
    for d in results["datasets"].values():
        del d["training"]
    rows = table_rows(run.markdown_table(results))
    assert not any(what.startswith(("training", "test accuracy, int8", "peak memory, training")) for what in rows)
    assert "model file (.qmt)" in rows
    for d in results["datasets"].values():
        del d["inference"]
    assert run.markdown_table(results) == ""


def test_report_says_which_data_sets_are_absent_and_shows_the_profile(results):
    results["not_present"] = {"mnist": "qmtik.download is not available"}
    text = run.report(results)
    assert "MNIST: not present, qmtik.download is not available" in text
    assert "| matrix products | 1.50 | 75% |" in text
    assert "| layer 1 | 20.0 ms | 10.0 ms |" in text


def test_machine_description_has_cpu_cores_platform_numpy_and_blas():
    m = run.machine()
    assert {"cpu", "cores", "usable_cores", "platform", "python", "numpy", "blas", "c_compiler", "qmtik"} <= set(m)
    assert m["cores"] >= 1 and m["numpy"] == np.__version__
    json.dumps(m)


def test_median_seconds_is_the_median_of_the_calls():
    ticks = iter([0, 5, 10, 11, 20, 23])  # calls take 5, 1 and 3 seconds
    calls = []
    assert measure.median_seconds(lambda: calls.append(1), 3, clock=lambda: next(ticks)) == 3
    assert len(calls) == 3
    with pytest.raises(ValueError):
        measure.median_seconds(lambda: None, 0)


def test_per_sample_and_summary_arithmetic():
    assert run.per_sample_us(13.5, 8, 54000) == pytest.approx(31.25)
    runs = [
        training_run("int8", s, a, t, r) for s, a, t, r in ((0, 0.5, 10.0, 100), (1, 0.7, 30.0, 90), (2, 0.6, 20.0, 95))
    ]
    summary = run.summarize(runs)
    assert summary["test_accuracy"] == 0.6 and summary["train_seconds"] == 20.0
    assert summary["per_sample_us"] == pytest.approx(20.0 / (8 * 54000) * 1e6)
    assert summary["peak_rss_mb"] == 100 and summary["epoch_seconds"] == 2.5


@pytest.mark.parametrize("samples", [10000, 60000, 1437, 7])
def test_trained_samples_is_what_training_trains_on(samples):
    from qmtik.training import Split, split_validation

    data = Split(np.zeros((samples, 1), np.float32), np.zeros((samples, 1), np.float32))
    trained, _ = split_validation(data, 0.1, 0)
    assert measure.trained_samples(samples, 0.1) == len(trained)


def test_an_absent_data_set_asked_for_by_name_is_an_error_and_all_skips_it(monkeypatch):
    monkeypatch.setattr(
        run,
        "dataset_directory",
        lambda name: ("/data/fm", "") if name == "fashion-mnist" else (None, "not in the cache"),
    )
    assert run.choose_datasets("all") == ({"fashion-mnist": "/data/fm"}, {"mnist": "not in the cache"})
    with pytest.raises(run.BenchmarkError, match="mnist: not in the cache"):
        run.choose_datasets("mnist")


def test_quick_flags_and_overrides():
    settings = run.settings_of(run.parse(["--quick", "--epochs", "3"]))
    assert (settings["seeds"], settings["epochs"], settings["samples"], settings["quick"]) == (1, 3, 10000, True)
    assert run.settings_of(run.parse([]))["seeds"] == 3


def test_a_json_path_in_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    assert run.main(["--dataset", "digits", "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_quick_run_on_the_bundled_digits_end_to_end(tmp_path, capfd):
    path = tmp_path / "results.json"
    assert run.main(["--quick", "--dataset", "digits", "--json", str(path)]) == 0
    out = capfd.readouterr().out
    results = json.loads(path.read_text())
    assert results["table"] in out and "| measurement | digits (64-32-10) |" in out
    assert results["settings"]["quick"] and results["settings"]["parts"] == list(run.PARTS)
    d = results["datasets"]["digits"]
    int8 = d["training"]["int8"]
    assert [r["mode"] for r in int8["runs"]] == ["int8"] and int8["trained_samples"] == 1294
    assert d["agreement"] == 1.0  # the integer model is training's arithmetic
    assert d["inference"]["test_accuracy"] == int8["test_accuracy"]
    assert d["inference"]["test_samples"] == 359
    assert d["inference"]["float32_bytes"] == 4 * (64 * 32 + 32 + 32 * 10 + 10)
    assert 0 < d["inference"]["file_bytes"] < d["inference"]["float32_bytes"]
    assert d["inference"]["peak_rss_mb"] >= d["inference"]["baseline_rss_mb"] > 0
    assert bool(d["inference"]["c_latency_us"]) != bool(d["inference"]["c_note"])
    assert set(d["profile"]) <= set(measure.PHASES) | {measure.OTHER}
    assert "matrix products" in d["profile"] and min(d["profile"].values()) >= 0
    assert set(results["machine"]) >= {"cpu", "cores", "platform", "numpy", "blas"}


def test_a_failing_measurement_is_reported_not_a_traceback(capsys):
    with pytest.raises(run.BenchmarkError, match="the train measurement on digits failed"):
        run.run_child("train", {"dataset": "digits"})  # a spec missing its keys
    assert measure.main(["nonsense", "{}"]) == 2
    assert "usage: measure.py" in capsys.readouterr().err


def test_without_a_compiler_the_c_latency_is_a_note(monkeypatch):
    import qmtik.c_check

    monkeypatch.setattr(qmtik.c_check, "find_compiler", lambda: None)
    assert measure.c_latency(None, np.zeros((1, 4), np.int8), 1) == (
        {},
        "no C compiler found ($CC, gcc, cc, clang): C latency not measured",
    )


def test_each_layer_part_is_timed_directly_never_as_a_difference(monkeypatch, digits):
    """The per-layer table once printed a negative requantization time: the whole layer's
    time minus the product's, two noisy medians. Each part is now a timing of its own: a
    noisy clock that makes the second timing shorter than the first shows it."""
    import qmtik

    config = qmtik.Config.from_dict(
        {
            "network": {"inputs": 64, "hidden": [8], "outputs": 10},
            "training": {"epochs": 1},
            "data": {"dataset": "digits"},
        }
    )
    (x, y), _ = digits
    model = qmtik.Network(config).fit(x[:200], y[:200]).quantize()
    timings = iter([0.5, 0.3, 0.4, 0.2])  # product, requantization, per layer
    calls = []

    def noisy(fn, repeats, clock=None):
        calls.append(fn())
        return next(timings)

    monkeypatch.setattr(measure, "median_seconds", noisy)
    seconds = measure.layer_seconds(model, model.quantize_inputs(x[:100]), 3)
    assert seconds == [[0.5, 0.3], [0.4, 0.2]]
    assert len(calls) == 4


# --- the side by side with PyTorch (its arithmetic; no run is timed here) ------------------------

side = load("torch_side_by_side")


def side_run(kind, pair, epoch_seconds, accuracy=0.88, gflops=100.0, samples=54000):
    return {
        "kind": kind,
        "pair": pair,
        "epoch_seconds": epoch_seconds,
        "trained_samples": samples,
        "test_accuracy": accuracy,
        "gflops": gflops,
    }


def test_side_by_side_compares_fastest_epochs_per_sample_and_medians_the_pairs_ratios():
    runs = [
        side_run("qmtik-int8", 0, [1.2, 0.54, 0.6], 0.89, 90.0),
        side_run("torch-float", 0, [0.5, 0.27]),
        side_run("qmtik-int8", 1, [0.81, 0.9], 0.891, 110.0),
        side_run("torch-float", 1, [0.54, 0.6]),
        side_run("qmtik-int8", 2, [1.08], 0.885, 100.0),
        side_run("torch-float", 2, [0.27, 0.9]),
    ]
    summary = side.summarize(runs)
    assert list(summary) == ["qmtik-int8", "torch-float"]  # in KINDS' order, only those run
    int8 = summary["qmtik-int8"]
    assert int8["per_pair_us"] == pytest.approx([10.0, 15.0, 20.0])  # 0.54 s / 54,000 samples = 10 µs
    assert int8["fastest_us"] == pytest.approx(15.0)
    assert summary["torch-float"]["per_pair_us"] == pytest.approx([5.0, 10.0, 5.0])
    assert int8["to_torch_float"] == pytest.approx(2.0)  # pairs' ratios 2, 1.5, 4: median 2
    assert summary["torch-float"]["to_torch_float"] == pytest.approx(1.0)
    assert int8["test_accuracy"] == 0.89 and int8["gflops"] == 100.0
    table = side.markdown(summary, {"torch-qat": "PyTorch is not installed"})
    rows = table_rows(table)
    assert rows["qmtik int8 (fake-quantized)"] == ["15.0 µs", "10.0, 15.0, 20.0", "2.00x", "89.00%", "100.0 GFLOP/s"]
    assert rows["PyTorch eager QAT (prepare_qat)"] == ["skipped: PyTorch is not installed", "", "", "", ""]


def test_side_by_side_without_torch_runs_has_no_ratio():
    summary = side.summarize([side_run("qmtik-float", 0, [0.27])])
    assert summary["qmtik-float"]["to_torch_float"] is None
    assert table_rows(side.markdown(summary, {}))["qmtik float"][2] == ""


def test_side_by_side_resumes_from_the_runs_files(tmp_path):
    """A run whose JSON file exists is read, not run again (no process is started here)."""
    settings = {"dataset": "digits", "epochs": 2, "pairs": 1, "threads": 1}
    base = {"dataset": "digits", "epochs": 2, "threads": 1, "pair": 0}
    for kind in ("qmtik-int8", "qmtik-float"):
        side.run_file(tmp_path, base, kind).write_text(json.dumps(side_run(kind, 0, [0.1])))
    runs = side.run_all(settings, ["qmtik-int8", "qmtik-float"], tmp_path, fresh=False)
    assert [r["kind"] for r in runs] == ["qmtik-int8", "qmtik-float"]


def test_side_by_side_names_why_torch_is_skipped(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert "pip install torch==2.13.0" in side.torch_missing()


def test_the_cnn_benchmark_quick_run_trains_each_arithmetic_and_resumes_from_its_files(tmp_path, capsys):
    """benchmarks/cnn.py --quick: a tiny CNN on the digits, int8 and float, one JSON per run,
    the table printed; run again, it reads the files instead of training."""
    cnn = load("cnn")
    out = tmp_path / "runs"
    assert cnn.main(["--quick", "--parts", "main", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == ["digits-e2-main-float-s0.json", "digits-e2-main-int8-s0.json"]
    run = json.loads((out / "digits-e2-main-int8-s0.json").read_text())
    assert 0 <= run["test_accuracy"] <= 1 and len(run["epoch_seconds"]) == 2 and run["weight_bytes"] == 1520
    table = capsys.readouterr().out
    assert "| int8 |" in table and "| float |" in table
    assert cnn.main(["--quick", "--parts", "main", "--out", str(out)]) == 0
    assert "read" in capsys.readouterr().err


def test_the_cnn_benchmarks_main_network_is_the_flat_example():
    """examples/fashion_cnn_flat.toml is the network benchmarks/cnn.py quotes as "main", and
    examples/fashion_cnn.toml its "gap-16": the figures a user reproduces are the README's."""
    import qmtik

    cnn = load("cnn")
    examples = BENCHMARKS.parent / "examples"
    for name, file in (("main", "fashion_cnn_flat.toml"), ("gap-16", "fashion_cnn.toml")):
        example = qmtik.load_config(examples / file)
        benchmark = cnn.config_for({"dataset": "fashion-mnist", "epochs": 10}, name, "int8", 0)
        assert example.network.layers == benchmark.network.layers
        assert example.training.epochs == 10 and example.network.input_shape == (28, 28, 1)


def test_the_import_benchmark_table_gives_medians_and_the_seeds():
    import_onnx = load("import_onnx")
    figures = {"torch_ptq": 0.87, "ptq_minmax": 0.871, "ptq_percentile": 0.872, "ptq_mse": 0.873, "fine_tuned": 0.88}
    runs = [
        {"model": "mlp", "seed": s, "float": 0.87 + s / 1000, "float_max_error": 1e-7 * (s + 1),
         "float_same_classes": True, **figures}
        for s in (0, 1, 2)
    ]  # fmt: skip
    text = import_onnx.table(runs, "fashion-mnist")
    row = next(line for line in text.splitlines() if line.startswith("| mlp |"))
    assert "| 3 | 87.10 [87.00, 87.10, 87.20] | 87.00 [87.00, 87.00, 87.00] |" in row
    assert "largest float error 3.00e-07" in text and "learning rate 0.0001" in text
    assert "| cnn |" not in text


def test_the_targets_benchmark_counts_the_fashion_models_macs():
    """benchmarks/targets_dots.py: 268,800 multiply-accumulates in the 784-256-256-10 model it
    emulates, its layers a relu model's; its float32 reference has a hole for every layer."""
    dots = load("targets_dots")
    model = dots.fashion_model()
    assert dots.macs_of(model) == {"dense": dots.MACS} and dots.MACS == 268_800
    assert [layer.activation for layer in model.layers] == ["relu", "relu", "linear"]
    text = (BENCHMARKS / "float_reference.c.in").read_text()
    assert all(f"${{{hole}}}" in text for hole in ("w0", "b0", "w1", "b1", "w2", "b2", "x"))


def test_the_cnn_benchmarks_speed_table_quotes_the_timing_runs_beside_pytorchs():
    """The "torch" part's qmtik runs (two epochs each, back to back with PyTorch's) give the
    speed table its int8 and float rows, and stay out of the accuracy tables."""
    cnn = load("cnn")

    def run(mode, seconds, **extra):
        sizes = {"trained_samples": 1000, "weight_bytes": 10, "activation_bytes": 4}
        return {"size": "main", "mode": mode, "seed": 0, "epoch_seconds": [seconds + 1, seconds],
                "test_accuracy": 0.5, **sizes, **extra}  # fmt: skip

    runs = [run("int8", 9.0), run("int8", 2.0, timing=True), run("float", 1.0, timing=True)]
    runs += [run("torch-qat", 4.0), run("torch-float", 1.0)]
    table = cnn.tables(runs, {"dataset": "fashion-mnist", "epochs": 10, "seeds": 1})
    assert "| int8 | 2.0 s | 2000 µs | 0.50x |" in table
    assert "| float | 1.0 s | 1000 µs | 0.25x |" in table and "| torch-qat | 4.0 s | 4000 µs | 1.00x |" in table
    assert "| float | 50.00%" not in table and "| int8 | 50.00% | 50.00 |" in table  # seed 0's accuracy only
