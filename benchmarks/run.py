"""qmtik's benchmark: accuracy, training time and memory on Fashion-MNIST, printed as a table.

    python benchmarks/run.py            # 784-256-256-10, 8 epochs, 3 seeds, int8 QAT and float
    python benchmarks/run.py --quick    # 1 seed, 2 epochs, 10000 training samples: a smoke run
    python benchmarks/run.py --profile  # where one epoch's time goes

Every training run is its own process, so that its peak resident memory is its own. Times are
medians over the seeds. Needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import qmtik
from qmtik.data import FASHION_MNIST_CLASSES, load_fashion_mnist

HIDDEN = [256, 256]


def benchmark_config(epochs: int, float_epochs: int, seed: int) -> qmtik.Config:
    """784-256-256-10 with qmtik's defaults for everything the issue does not fix."""
    config = qmtik.Config(network=qmtik.NetworkConfig(inputs=784, hidden=HIDDEN, outputs=10),
                          data=qmtik.DataConfig(input_range=[0, 255]))
    for key, value in {"training.epochs": epochs, "training.float_epochs": float_epochs,
                       "training.seed": seed}.items():
        config = config.replace(key, value)
    return config


def one_run(mode: str, seed: int, epochs: int, samples: int | None) -> dict:
    """Train once in this process and return its figures."""
    began = time.perf_counter()
    (x, y), (x_test, y_test) = load_fashion_mnist()
    if samples:
        x, y = x[:samples], y[:samples]
    loaded = time.perf_counter()
    config = benchmark_config(epochs, 0 if mode == "int8" else epochs, seed)
    net = qmtik.Network(config).fit(x, y)
    trained = time.perf_counter()
    accuracy = net.score(x_test, y_test)
    return {"mode": mode, "seed": seed, "test_accuracy": accuracy, "train_seconds": trained - began - (loaded - began),
            "load_seconds": loaded - began, "epoch_seconds": [r["seconds"] for r in net.history_["epochs"]],
            "samples": len(x), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_in_child(mode: str, seed: int, epochs: int, samples: int | None) -> dict:
    cmd = [sys.executable, __file__, "--one", mode, "--seed", str(seed), "--epochs", str(epochs)]
    if samples:
        cmd += ["--samples", str(samples)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of fn() over repeats calls."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def inference(epochs: int, samples: int | None) -> dict:
    """Train one int8 network, quantize it, and measure the integer model on the test set."""
    import tempfile

    from qmtik.layers import QuantSpec, forward
    (x, y), (x_test, y_test) = load_fashion_mnist()
    if samples:
        x, y = x[:samples], y[:samples]
    net = qmtik.Network(benchmark_config(epochs, 0, 0)).fit(x, y, class_names=FASHION_MNIST_CLASSES)
    model = net.quantize()
    codes = model.quantize_inputs(x_test)
    # fidelity: the integer model against training's own fake-quantized forward pass
    spec = QuantSpec.from_config(net.config)
    fake = np.concatenate([forward(net.layers_, codes[i:i + 1000], spec, quantized=True, training=False)[0]
                           for i in range(0, len(codes), 1000)])
    agree = float((fake.argmax(axis=1) == model.predict_index(x_test)).mean())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.qmt"
        model.save(path)
        file_bytes = path.stat().st_size
    batch = median_seconds(lambda: model.scores(codes), 9)
    quantize = median_seconds(lambda: model.quantize_inputs(x_test), 9)
    one = x_test[:1]
    model.predict(one)
    single = median_seconds(lambda: model.predict(one), 2000)
    kernels = model._kernels
    layer_times = []
    for i, kernel in enumerate(kernels):
        inputs = codes.astype(kernel.weight_t.dtype)
        for previous in kernels[:i]:
            inputs = np.concatenate([previous(inputs[j:j + 1024]) for j in range(0, len(inputs), 1024)])
        chunks = [inputs[j:j + 1024] for j in range(0, len(inputs), 1024)]
        product = median_seconds(lambda: [c @ kernel.weight_t for c in chunks], 7)
        whole = median_seconds(lambda: [kernel(c) for c in chunks], 7)
        layer_times.append((product, whole - product))
    return {"test_accuracy": model.score(x_test, y_test), "agreement": agree, "file_bytes": file_bytes,
            "c_latency_us": c_latency(model, codes), "cortex_m4": cortex_m4_sizes(model),
            "float32_bytes": 4 * sum(l.weight.size + l.bias.size for l in model.layers),
            "batch_seconds": batch, "samples_per_second": len(codes) / batch,
            "quantize_inputs_seconds": quantize, "single_predict_us": single * 1e6,
            "layer_seconds": layer_times, "test_samples": len(codes)}


def inference_table(r: dict) -> str:
    lines = ["| integer model (784-256-256-10) | figure |", "| --- | --- |",
             f"| test accuracy | {100 * r['test_accuracy']:.2f}% |",
             f"| predictions equal to training's fake-quantized forward pass | {100 * r['agreement']:.2f}% "
             f"of {r['test_samples']} |",
             f"| .qmt file | {r['file_bytes']:,} bytes (float32: {r['float32_bytes']:,}) |",
             f"| batch of {r['test_samples']}, int8 inputs to int8 scores (median of 9) | "
             f"{1e3 * r['batch_seconds']:.1f} ms, {r['samples_per_second']:,.0f} samples/s |",
             f"| quantizing the float inputs of that batch (median of 9) | {1e3 * r['quantize_inputs_seconds']:.1f} ms |",
             f"| one sample, predict from raw inputs to class (median of 2000) | {r['single_predict_us']:.1f} µs |"]
    for build, micros in r["c_latency_us"].items():
        lines.append(f"| C header, one sample, `{build}` (median over the test set, 3 runs) | {micros:.1f} µs |")
    if r["cortex_m4"]:
        m4 = r["cortex_m4"]
        lines.append(f"| Cortex-M4 build (`arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os`) | flash "
                     f"{m4['code'] + m4['constants']:,} bytes (code {m4['code']:,}, constants {m4['constants']:,}); "
                     f"RAM {m4['scratch'] + m4['stack']:,} bytes (scratch {m4['scratch']}, stack {m4['stack']}) |")
    for i, (product, rest) in enumerate(r["layer_seconds"], 1):
        lines.append(f"| layer {i}: matrix product / requantization and activation | "
                     f"{1e3 * product:.1f} ms / {1e3 * rest:.1f} ms |")
    return "\n".join(lines)


TIMING_DRIVER = r"""
#define _POSIX_C_SOURCE 199309L
#define NET_IMPLEMENTATION
#include "net.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* argv[1]: a file of n int8 input rows. Prints the median microseconds of one predict. */
int main(int argc, char **argv)
{
    static int8_t inputs[20000][NET_INPUTS];
    int8_t scores[NET_OUTPUTS], scratch[NET_SCRATCH_BYTES];
    double times[20000];
    volatile int sink = 0;
    size_t n, i;
    int round;
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
    if (!f) return 2;
    n = fread(inputs, NET_INPUTS, 20000, f);
    fclose(f);
    for (round = 0; round < 3; ++round)
        for (i = 0; i < n; ++i) {
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            sink += net_predict(inputs[i], scores, scratch);
            clock_gettime(CLOCK_MONOTONIC, &b);
            times[i] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
        }
    qsort(times, n, sizeof times[0], compare);
    printf("%.3f\n", times[n / 2]);
    return sink < 0;
}
"""

C_BUILDS = {"gcc -O3 -march=native": ["-O3", "-march=native"], "gcc -O2": ["-O2"]}


def c_latency(model, codes) -> dict:
    """Median microseconds of one predict in the compiled header, per build line."""
    import subprocess
    import tempfile

    from qmtik.c_check import find_compiler
    from qmtik.export_c import export_c
    cc = find_compiler()
    if cc is None:
        return {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "net.h").write_text(export_c(model, "net"))
        (folder / "time.c").write_text(TIMING_DRIVER)
        (folder / "inputs.bin").write_bytes(np.asarray(codes, np.int8).tobytes())
        for name, flags in C_BUILDS.items():
            subprocess.run([cc, "-std=c99", *flags, "time.c", "-o", "time", "-lm"], cwd=folder, check=True)
            runs = [float(subprocess.run([str(folder / "time"), "inputs.bin"], cwd=folder, capture_output=True, text=True,
                                         check=True).stdout) for _ in range(3)]
            out[name] = statistics.median(runs)
    return out


def cortex_m4_sizes(model) -> dict | None:
    """Flash and RAM of the header built for a Cortex-M4 (Debian's gcc-arm-none-eabi), or None."""
    import shutil

    from qmtik.c_check import code_size
    if shutil.which("arm-none-eabi-gcc") is None:
        return None
    return code_size(model, shutil.which("arm-none-eabi-gcc"), ("-mcpu=cortex-m4", "-mthumb", "-Os"))


def machine() -> dict:
    """CPU model, core count, Python, NumPy and its BLAS."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "unknown"
    try:
        config = np.show_config(mode="dicts")
        info = config["Build Dependencies"]["blas"]
        blas = f"{info.get('name')} {info.get('version')}"
    except Exception:   # noqa: BLE001 - the description is best effort
        pass
    import os
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas, "qmtik": qmtik.__version__}


def table(results: list[dict]) -> str:
    """Markdown table of medians per mode."""
    lines = ["| arithmetic | test accuracy (median) | accuracies | training time (median) | per epoch (median) "
             "| per sample | peak RSS |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode in ("int8", "float"):
        runs = [r for r in results if r["mode"] == mode]
        if not runs:
            continue
        acc = statistics.median(r["test_accuracy"] for r in runs)
        secs = statistics.median(r["train_seconds"] for r in runs)
        epoch = statistics.median(s for r in runs for s in r["epoch_seconds"])
        per_sample = epoch / runs[0]["samples"] * 1e6
        rss = max(r["peak_rss_mb"] for r in runs)
        accs = ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in runs)
        lines.append(f"| {mode} | {100 * acc:.2f}% | {accs} | {secs:.1f} s | {epoch:.2f} s | {per_sample:.1f} µs "
                     f"| {rss:.0f} MB |")
    return "\n".join(lines)


PHASES = {  # function name -> phase, for --profile
    "accumulate": "matrix products", "backward": "matrix products",
    "update": "optimizer", "step": "optimizer",
    "round_half_away": "quantization", "quantize": "quantization", "rounding_shift": "quantization",
    "requantize": "quantization", "activate": "quantization", "quantize_multiplier": "quantization",
    "weight_scales": "quantization", "quantize_bias": "quantization", "build_layer": "quantization",
    "output_quantization": "quantization", "activation_table": "quantization", "_clip": "quantization",
}


def profile(samples: int | None) -> str:
    """Share of one int8 epoch's time by phase (cProfile, so approximate)."""
    import cProfile
    import pstats
    (x, y), _ = load_fashion_mnist()
    if samples:
        x, y = x[:samples], y[:samples]
    config = benchmark_config(1, 0, 0)
    profiler = cProfile.Profile()
    profiler.runcall(qmtik.Network(config).fit, x, y)
    stats = pstats.Stats(profiler).stats
    phases: dict[str, float] = {}
    total = 0.0
    for (_, _, name), (_, _, tottime, _, _) in stats.items():
        total += tottime
        phase = PHASES.get(name, "other (data, activations, cost, bookkeeping)")
        phases[phase] = phases.get(phase, 0.0) + tottime
    lines = ["| phase | seconds | share |", "| --- | --- | --- |"]
    for phase, secs in sorted(phases.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {phase} | {secs:.2f} | {100 * secs / total:.0f}% |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, 10000 samples")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=None, help="use only this many training samples")
    parser.add_argument("--json", default="benchmarks/results.json", help="where to write the figures")
    parser.add_argument("--profile", action="store_true", help="where one int8 epoch's time goes")
    parser.add_argument("--inference", action="store_true", help="only the integer model's figures")
    parser.add_argument("--one", choices=["int8", "float"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.one:
            print(json.dumps(one_run(args.one, args.seed, args.epochs, args.samples)))
            return 0
        if args.quick:
            args.seeds, args.epochs, args.samples = 1, 2, args.samples or 10000
        if args.profile:
            print(profile(args.samples))
            return 0
        results = [] if args.inference else [run_in_child(mode, seed, args.epochs, args.samples)
                                             for seed in range(args.seeds) for mode in ("int8", "float")]
        integer = inference(args.epochs, args.samples)
    except qmtik.QmtikError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"benchmark: {' '.join(map(str, exc.cmd[:3]))} failed:\n{exc.stderr}", file=sys.stderr)
        return 1
    info = machine()
    print(f"Fashion-MNIST, 784-{'-'.join(map(str, HIDDEN))}-10, {args.epochs} epochs, {args.seeds} seed(s), "
          f"qmtik defaults (adam, cosine, batch 128)")
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, NumPy {info['numpy']} "
          f"({info['blas']})\n")
    if results:
        print(table(results) + "\n")
    print(inference_table(integer))
    Path(args.json).write_text(json.dumps({"machine": info, "epochs": args.epochs, "runs": results,
                                           "integer_model": integer}, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
