"""qmtik's benchmark: accuracy, training and inference time, file size and memory, as one table.

    python benchmarks/run.py                 # everything, on every data set present (the README's table)
    python benchmarks/run.py --quick         # a smoke run: 1 seed, 2 epochs, 10000 samples, fewer repeats
    python benchmarks/run.py --dataset mnist # one data set: fashion-mnist | mnist | all (the default)
    python benchmarks/run.py --inference     # only the integer model's figures (trains one int8 network)
    python benchmarks/run.py --profile       # only where one int8 epoch's time goes
    python benchmarks/run.py --side-by-side  # only training beside PyTorch's float and QAT
                                             # (benchmarks/torch_side_by_side.py; torch==2.13.0 installed)
    python benchmarks/run.py --targets       # only the emulated Cortex-M instruction counts per MAC,
                                             # the self-test's cost, the float32 reference
                                             # (benchmarks/targets_dots.py; arm-none-eabi-gcc, unicorn)

On Fashion-MNIST (Debian's dataset-fashion-mnist) and on MNIST when qmtik's cache holds it
(`qmtik data get mnist`): 784-256-256-10 trained int8 (fake quantization from the first epoch)
and float with qmtik's defaults, each seed in a process of its own, so that its peak resident
memory is its own; then seed 0's integer model in another process: its file, batch
throughput, single-sample latency in Python and in the compiled C header, its peak memory.
When torch is installed, the full run (no part chosen, not --quick) ends with the side by side with
PyTorch, whose runs resume from their JSON files; without it that part says why it is skipped.
Times are medians. The markdown table goes to stdout, progress to stderr, and everything, with
the machine's description, to --json (benchmarks/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import qmtik
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import qmtik
from qmtik.data import FASHION_MNIST_CLASSES
from qmtik.output_files import check_writable, write_json

MEASURE = Path(__file__).resolve().with_name("measure.py")  # runs each measurement in its own process
DEFAULT_JSON = Path(__file__).resolve().with_name("results.json")

DIGIT_CLASSES = tuple(str(d) for d in range(10))
DATASETS = {  # name -> what is trained on it
    "fashion-mnist": {
        "title": "Fashion-MNIST",
        "inputs": 784,
        "input_range": [0, 255],
        "hidden": [256, 256],
        "classes": FASHION_MNIST_CLASSES,
    },
    "mnist": {"title": "MNIST", "inputs": 784, "input_range": [0, 255], "hidden": [256, 256], "classes": DIGIT_CLASSES},
    "digits": {
        "title": "digits",
        "inputs": 64,
        "input_range": [0, 16],
        "hidden": [32],  # for the tests
        "classes": DIGIT_CLASSES,
    },
}

C_LIBRARY = {  # what the C library qmtik.h claimed, on MNIST
    "test_accuracy": 0.90,
    "model_bytes": 300_000,
    "inference_ms": 0.5,
    "train_sample_ms": 15.0,
}

FULL = {"seeds": 3, "epochs": 8, "samples": None, "repeats": 9, "single_calls": 2000, "c_rounds": 3}
QUICK = {"seeds": 1, "epochs": 2, "samples": 10000, "repeats": 5, "single_calls": 300, "c_rounds": 1}
PARTS = ("training", "inference", "profile")


class BenchmarkError(Exception):
    """A benchmark that cannot run: no data set, or a measurement that failed."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the machine -------------------------------------------------------------------------------


def machine() -> dict:
    """CPU model, cores, platform, Python, NumPy and its BLAS, the C compiler."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if cpu == "unknown":
        cpu = platform.processor() or platform.machine() or "unknown"
    blas = lapack = "unknown"
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]
        blas, lapack = (f"{deps[k].get('name')} {deps[k].get('version')}" for k in ("blas", "lapack"))
    except Exception:  # noqa: BLE001 - NumPy < 1.26 has no mode="dicts"; the description is best effort
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = {
        k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
    }
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "lapack": lapack,
        "blas_threads_env": threads,
        "c_compiler": compiler_version(),
        "qmtik": qmtik.__version__,
    }


def compiler_version() -> str | None:
    """The first line of the local C compiler's --version, or None without one."""
    from qmtik.c_check import find_compiler

    cc = find_compiler()
    if cc is None:
        return None
    out = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return (out.stdout.splitlines() or [cc])[0]


# --- which data sets ---------------------------------------------------------------------------


def dataset_directory(name: str) -> tuple[str | None, str]:
    """Where a data set's IDX files are, or None and why not."""
    if name == "digits":
        return "bundled", ""
    try:
        from qmtik.download import find_dataset  # being written: absent means "not present"
    except ImportError:
        find_dataset, why = None, "qmtik.download is not available"
    else:
        why = f"not in qmtik's cache (fetch it with 'qmtik data get {name}')"
    found = find_dataset(name) if find_dataset else None
    if found is not None:
        return str(found), ""
    debian = Path("/usr/share/datasets/fashion-mnist")
    if name == "fashion-mnist":
        if (debian / "train-images-idx3-ubyte.gz").is_file():
            return str(debian), ""
        why = f"not found in {debian} (apt-get install dataset-fashion-mnist)"
    return None, why


def choose_datasets(choice: str) -> tuple[dict, dict]:
    """({name: directory} to measure, {name: why not} of those absent); an explicitly chosen
    data set that is absent is an error."""
    names = ["fashion-mnist", "mnist"] if choice == "all" else [choice]
    found, absent = {}, {}
    for name in names:
        directory, why = dataset_directory(name)
        if directory:
            found[name] = directory
        else:
            absent[name] = why
    if not found:
        raise BenchmarkError("no data set to measure: " + "; ".join(f"{name}: {why}" for name, why in absent.items()))
    return found, absent


# --- measuring, each part in its own process ---------------------------------------------------


def run_child(kind: str, spec: dict) -> dict:
    """Run one measurement (measure.py) in a fresh process; its figures."""
    out = subprocess.run([sys.executable, str(MEASURE), kind, json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise BenchmarkError(f"the {kind} measurement on {spec['dataset']} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_runs(spec: dict, seeds: int, modes, model_path: Path) -> list[dict]:
    """Every (seed, mode) trained in its own process; seed 0's int8 network saved to model_path."""
    runs = []
    jobs = [(seed, mode) for seed in range(seeds) for mode in modes]
    for i, (seed, mode) in enumerate(jobs, 1):
        log(f"{spec['dataset']}: training {mode}, seed {seed} ({i} of {len(jobs)})")
        save = str(model_path) if (seed, mode) == (0, "int8") else None
        run = run_child("train", {**spec, "mode": mode, "seed": seed, "save": save})
        log(f"  {run['train_seconds']:.1f} s, test accuracy {100 * run['test_accuracy']:.2f}%")
        runs.append(run)
    return runs


def benchmark_dataset(name: str, directory: str, settings: dict, parts) -> dict:
    """All chosen parts on one data set."""
    spec = {
        "dataset": name,
        "directory": directory,
        **{k: v for k, v in DATASETS[name].items() if k != "title"},
        **{k: settings[k] for k in ("epochs", "samples", "repeats", "single_calls", "c_rounds")},
    }
    result = {
        "title": DATASETS[name]["title"],
        "directory": directory,
        "topology": "-".join(map(str, [spec["inputs"], *spec["hidden"], len(spec["classes"])])),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / f"{name}.qmt"
        if "training" in parts or "inference" in parts:
            modes = ("int8", "float") if "training" in parts else ("int8",)
            seeds = settings["seeds"] if "training" in parts else 1
            runs = training_runs(spec, seeds, modes, model_path)
            result["settings"] = runs[0]["settings"]
            result["agreement"] = next(r["agreement"] for r in runs if "agreement" in r)
            if "training" in parts:
                result["training"] = {mode: summarize([r for r in runs if r["mode"] == mode]) for mode in modes}
        if "inference" in parts:
            log(f"{name}: the integer model, in its own process")
            result["inference"] = run_child("inference", {**spec, "model": str(model_path)})
    if "profile" in parts:
        log(f"{name}: profiling one int8 epoch")
        result["profile"] = run_child("profile", spec)
    return result


def per_sample_us(seconds: float, epochs: int, samples: int) -> float:
    """Training microseconds per sample seen: seconds / (epochs * samples trained on)."""
    return seconds / (epochs * samples) * 1e6


def summarize(runs: list[dict]) -> dict:
    """One mode's runs (one per seed): medians, the peak memory's maximum, and the runs."""
    seconds = statistics.median(r["train_seconds"] for r in runs)
    return {
        "test_accuracy": statistics.median(r["test_accuracy"] for r in runs),
        "train_seconds": seconds,
        "epoch_seconds": statistics.median(s for r in runs for s in r["epoch_seconds"]),
        "per_sample_us": per_sample_us(seconds, runs[0]["epochs"], runs[0]["trained_samples"]),
        "trained_samples": runs[0]["trained_samples"],
        "samples": runs[0]["samples"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "runs": runs,
    }


# --- the tables --------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _accuracy(d: dict, mode: str) -> str | None:
    t = d.get("training", {}).get(mode)
    if t is None:
        return None
    seeds = [r["test_accuracy"] for r in t["runs"]]
    return _pct(t["test_accuracy"]) + (f" ({', '.join(f'{100 * a:.2f}' for a in seeds)})" if len(seeds) > 1 else "")


def _training_time(d: dict, mode: str) -> str | None:
    t = d.get("training", {}).get(mode)
    return t and (
        f"{t['train_seconds']:.1f} s ({t['epoch_seconds']:.2f} s per epoch of {t['trained_samples']:,} samples)"
    )


def _per_sample(d: dict, mode: str) -> str | None:
    t = d.get("training", {}).get(mode)
    return t and f"{t['per_sample_us']:.1f} µs"


def _training_memory(d: dict) -> str | None:
    t = d.get("training")
    return t and " / ".join(f"{t[m]['peak_rss_mb']:.0f} MB" for m in ("int8", "float") if m in t)


def _integer_accuracy(d: dict) -> str | None:
    i = d.get("inference")
    return i and (
        f"{_pct(i['test_accuracy'])}; {_pct(d['agreement'])} of its classes equal training's "
        f"fake-quantized forward pass"
    )


def _file(d: dict) -> str | None:
    i = d.get("inference")
    return i and (
        f"{i['file_bytes']:,} bytes (float32 weights and biases: {i['float32_bytes']:,}; "
        f"{100 * i['file_bytes'] / i['float32_bytes']:.1f}%)"
    )


def _batch(d: dict) -> str | None:
    i = d.get("inference")
    return i and (
        f"{i['samples_per_second']:,.0f} samples/s ({i['test_samples']:,} in "
        f"{1e3 * i['batch_seconds']:.1f} ms; {i.get('batch_backend', 'numpy')})"
    )


def _numpy_batch(d: dict) -> str | None:
    i = d.get("inference")
    return i and i.get("numpy_samples_per_second") and f"{i['numpy_samples_per_second']:,.0f} samples/s"


def _c_latency(build: str):
    def cell(d: dict) -> str | None:
        i = d.get("inference")
        if i is None:
            return None
        micros = i["c_latency_us"].get(build)
        return f"{micros:.1f} µs" if micros is not None else f"not measured: {i['c_note'] or 'no such build'}"

    return cell


def _inference_memory(d: dict) -> str | None:
    i = d.get("inference")
    return i and f"{i['peak_rss_mb']:.0f} MB (interpreter, NumPy and qmtik alone: {i['baseline_rss_mb']:.0f} MB)"


def _cortex_m4(d: dict) -> str | None:
    m4 = (d.get("inference") or {}).get("cortex_m4")
    return m4 and (
        f"flash {m4['code'] + m4['constants']:,} bytes (code {m4['code']:,}); RAM "
        f"{m4['scratch'] + m4['stack']:,} bytes (scratch {m4['scratch']}, stack {m4['stack']})"
    )


def rows(results: dict) -> list[tuple]:
    """The main table's rows: (what, cell of a data set's results or None, the C library's claim)."""
    s, c = results["settings"], results["c_library_claims"]
    seeds = f"median of {s['seeds']} seeds" if s["seeds"] > 1 else "1 seed"
    builds = sorted(
        {b for d in results["datasets"].values() for b in (d.get("inference") or {}).get("c_latency_us", {})},
        key=lambda b: "-O2" in b,
    ) or ["gcc"]
    claim_ms = f"{c['inference_ms']} ms"
    out = [
        (
            f"test accuracy, int8 ({seeds})",
            lambda d: _accuracy(d, "int8"),
            f"about {100 * c['test_accuracy']:.0f}% (MNIST)",
        ),
        (f"test accuracy, float, same settings ({seeds})", lambda d: _accuracy(d, "float"), ""),
        ("test accuracy, integer model (.qmt) of seed 0", _integer_accuracy, ""),
        (f"training, int8, {s['epochs']} epochs", lambda d: _training_time(d, "int8"), ""),
        (f"training, float, {s['epochs']} epochs", lambda d: _training_time(d, "float"), ""),
        ("training time per sample, int8", lambda d: _per_sample(d, "int8"), f"{c['train_sample_ms']:g} ms"),
        ("training time per sample, float", lambda d: _per_sample(d, "float"), ""),
        ("peak memory, training (int8 / float)", _training_memory, ""),
        ("model file (.qmt)", _file, f"about {c['model_bytes'] // 1000} KB"),
        (
            "batch inference, int8 codes to classes",
            _batch,
            f"{1000 / c['inference_ms']:,.0f} samples/s (at {claim_ms} each)",
        ),
        ("batch inference, numpy alone (QMTIK_INT8_GEMM=0)", _numpy_batch, ""),
        (
            "quantizing that batch's raw inputs to int8",
            lambda d: d.get("inference") and f"{1e3 * d['inference']['quantize_seconds']:.1f} ms",
            "",
        ),
        (
            "one sample in Python, raw inputs to class",
            lambda d: d.get("inference") and f"{d['inference']['single_us']:.1f} µs",
            claim_ms,
        ),
        *[(f"one sample in the C header, `{b}`", _c_latency(b), claim_ms) for b in builds],
        ("peak memory, inference (load the .qmt, predict the batch)", _inference_memory, ""),
        ("C header for a Cortex-M4 (`arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os`)", _cortex_m4, ""),
    ]
    return out


def markdown_table(results: dict) -> str:
    """The results as one markdown table: a row per figure, a column per data set and one for the
    C library's claims; rows that no data set measured are left out."""
    datasets = list(results["datasets"].values())
    head = ["measurement", *(f"{d['title']} ({d['topology']})" for d in datasets), "C library qmtik.h (claimed)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for what, cell, claim in rows(results):
        cells = [cell(d) for d in datasets]
        if all(c is None for c in cells):
            continue
        lines.append("| " + " | ".join([what, *(c or "" for c in cells), claim]) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def layer_table(d: dict) -> str:
    """Where the integer model's batch time goes, layer by layer."""
    lines = [
        f"| {d['title']}: integer model, batch of {d['inference']['test_samples']:,} | matrix product "
        "| requantization and activation |",
        "| --- | --- | --- |",
    ]
    for i, (product, rest) in enumerate(d["inference"]["layer_seconds"], 1):
        lines.append(f"| layer {i} | {1e3 * product:.1f} ms | {1e3 * rest:.1f} ms |")
    return "\n".join(lines)


def profile_table(d: dict) -> str:
    """Where one int8 training epoch's time goes (cProfile)."""
    total = sum(d["profile"].values()) or 1.0
    lines = [f"| {d['title']}: one int8 epoch, by phase | seconds | share |", "| --- | --- | --- |"]
    for phase, secs in d["profile"].items():
        lines.append(f"| {phase} | {secs:.2f} | {100 * secs / total:.0f}% |")
    return "\n".join(lines)


def describe(results: dict) -> str:
    """The lines above the table: what was run, how times were taken, on what machine."""
    s, m = results["settings"], results["machine"]
    first = next(iter(results["datasets"].values()))
    t = first.get("settings")
    lines = [
        f"qmtik {m['qmtik']}, {s['epochs']} epochs, {s['seeds']} seed(s)"
        + (f", {s['samples']:,} training samples" if s["samples"] else "")
        + (
            f"; qmtik's defaults: {t['optimizer']}, learning rate {t['learning_rate']} ({t['schedule']}), "
            f"batch {t['batch_size']}, {100 * t['validation_split']:.0f}% held out for validation; "
            "int8 = fake quantization from the first epoch"
            if t
            else ""
        )
        + (" (--quick: a smoke run, not figures to quote)" if s["quick"] else ""),
        f"times: training, medians over the seeds; batch and quantizing, medians of {s['repeats']} runs; "
        f"one sample in Python, the median of {s['single_calls']} calls; in C, the median over the test "
        f"set ({s['c_rounds']} round(s) each, median of 3 runs)",
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['platform']}, "
        f"Python {m['python']}, NumPy {m['numpy']} (BLAS {m['blas']}), {m['c_compiler'] or 'no C compiler'}",
    ]
    lines += [f"{DATASETS[name]['title']}: not present, {why}" for name, why in results["not_present"].items()]
    return "\n".join(lines)


def report(results: dict) -> str:
    """Everything printed on stdout: the description, the table, the secondary tables."""
    parts = [describe(results), markdown_table(results)]
    for d in results["datasets"].values():
        if "inference" in d:
            parts.append(layer_table(d))
        if "profile" in d:
            parts.append(profile_table(d))
    return "\n\n".join(p for p in parts if p)


# --- the command line --------------------------------------------------------------------------


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 seed, 2 epochs, 10000 training samples, fewer timing repeats",
    )
    parser.add_argument(
        "--dataset",
        default="all",
        choices=["fashion-mnist", "mnist", "all", "digits"],
        metavar="fashion-mnist|mnist|all",
        help="default: every one present",
    )
    parser.add_argument(
        "--json",
        default=str(DEFAULT_JSON),
        metavar="PATH",
        help="where to write the results (default: benchmarks/results.json)",
    )
    parser.add_argument("--inference", action="store_true", help="only the integer model's figures")
    parser.add_argument("--profile", action="store_true", help="only where one int8 epoch's time goes")
    parser.add_argument(
        "--side-by-side", action="store_true", help="only training beside PyTorch (torch==2.13.0 installed)"
    )
    parser.add_argument(
        "--targets", action="store_true", help="only the emulated Cortex-M figures (benchmarks/targets_dots.py)"
    )
    parser.add_argument("--seeds", type=int, help="seeds of each arithmetic (default 3; --quick 1)")
    parser.add_argument("--epochs", type=int, help="default 8; --quick 2")
    parser.add_argument("--samples", type=int, help="use only this many training samples (--quick 10000)")
    return parser.parse_args(argv)


def settings_of(args) -> dict:
    settings = dict(QUICK if args.quick else FULL, quick=args.quick)
    for key in ("seeds", "epochs", "samples"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


def side_by_side(args, whole_run: bool) -> int:
    """Training beside PyTorch's (benchmarks/torch_side_by_side.py, which prints its table):
    asked for with --side-by-side, or at the end of a full run when torch is installed."""
    import torch_side_by_side  # beside this file; imports this module, so imported here

    why = torch_side_by_side.torch_missing()
    if why and whole_run:
        log(f"side by side with PyTorch: skipped: {why}")
        return 0
    chosen = [] if args.dataset == "all" else ["--dataset", args.dataset]  # its default: Fashion-MNIST
    return torch_side_by_side.main(["--quick"] if args.quick else chosen)


def main(argv=None) -> int:
    args = parse(argv)
    if args.side_by_side:
        return side_by_side(args, whole_run=False)
    if args.targets:
        import targets_dots  # beside this file

        return targets_dots.main(["--no-cnn"] if args.quick else [])
    settings = settings_of(args)
    parts = [p for p, only in (("inference", args.inference), ("profile", args.profile)) if only] or list(PARTS)
    try:
        check_writable(args.json)
    except qmtik.QmtikError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        found, absent = choose_datasets(args.dataset)
        for name, why in absent.items():
            log(f"{name}: not present, {why}")
        datasets = {name: benchmark_dataset(name, directory, settings, parts) for name, directory in found.items()}
    except (BenchmarkError, qmtik.QmtikError) as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 1
    results = {
        "machine": machine(),
        "settings": {**settings, "parts": parts},
        "c_library_claims": C_LIBRARY,
        "datasets": datasets,
        "not_present": absent,
    }
    results["table"] = markdown_table(results)
    text = report(results)
    write_json(args.json, results)
    print(text)
    log(f"wrote {args.json} ({time.perf_counter() - began:.0f} s in all)")
    if parts == list(PARTS) and not args.quick:  # a smoke run stays one
        print()
        return side_by_side(args, whole_run=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
