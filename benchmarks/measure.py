"""The benchmark's measurements, each run by benchmarks/run.py in a process of its own.

    python benchmarks/measure.py train|inference|profile '{"dataset": ..., ...}'

takes what to measure as one JSON object and prints its figures as one JSON line, so that
each process's peak resident memory is its own measurement's. Progress goes to stderr.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

try:
    import qmtik
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import qmtik
from qmtik import backends  # noqa: E402  (after the checkout fallback)

# --- helpers -----------------------------------------------------------------------------------


def median_seconds(fn, repeats: int, clock=time.perf_counter) -> float:
    """Median wall time of fn() over `repeats` calls."""
    if repeats < 1:
        raise ValueError(f"repeats: {repeats}, expected at least 1")
    times = []
    for _ in range(repeats):
        began = clock()
        fn()
        times.append(clock() - began)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trained_samples(samples: int, validation_split: float) -> int:
    """How many of `samples` training trains on: what training.split_validation leaves."""
    return samples - int(round(samples * validation_split))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(spec: dict, part: str):
    """The spec's data set, part 'train' (cut to spec['samples']) or 'test': (inputs, labels)."""
    if spec["dataset"] == "digits":  # the bundled digits, for the tests
        train, test = qmtik.load_dataset("digits")
    else:
        from qmtik.data import load_idx_pair

        return (
            load_idx_pair(spec["directory"], "t10k")
            if part == "test"
            else _cut(load_idx_pair(spec["directory"], "train"), spec.get("samples"))
        )
    return test if part == "test" else _cut(train, spec.get("samples"))


def _cut(data, samples):
    x, y = data
    return (x[:samples], y[:samples]) if samples else (x, y)


def config_of(spec: dict, mode: str, seed: int) -> qmtik.Config:
    """The spec's topology with qmtik's defaults; int8 fake-quantizes from the first epoch,
    float never does."""
    config = qmtik.Config(
        network=qmtik.NetworkConfig(inputs=spec["inputs"], hidden=spec["hidden"], outputs=len(spec["classes"])),
        data=qmtik.DataConfig(input_range=spec["input_range"]),
    )
    for key, value in {
        "training.epochs": spec["epochs"],
        "training.seed": seed,
        "training.float_epochs": 0 if mode == "int8" else spec["epochs"],
    }.items():
        config = config.replace(key, value)
    return config


# --- training ----------------------------------------------------------------------------------


def measure_training(spec: dict) -> dict:
    """Train once (spec: mode, seed); test accuracy, times and peak memory. With spec['save'],
    also the integer model's file and how often it agrees with training's fake-quantized pass."""
    mode, seed = spec["mode"], spec["seed"]
    x, y = load(spec, "train")
    x_test, y_test = load(spec, "test")
    config = config_of(spec, mode, seed)
    began = time.perf_counter()
    net = qmtik.Network(config).fit(x, y, class_names=spec["classes"])
    seconds = time.perf_counter() - began
    out = {
        "mode": mode,
        "seed": seed,
        "test_accuracy": net.score(x_test, y_test),
        "train_seconds": seconds,
        "epoch_seconds": [r["seconds"] for r in net.history_["epochs"]],
        "epochs": spec["epochs"],
        "samples": len(x),
        "trained_samples": trained_samples(len(x), config.training.validation_split),
        "peak_rss_mb": peak_rss_mb(),
        "settings": {
            k: getattr(config.training, k)
            for k in ("optimizer", "learning_rate", "schedule", "batch_size", "validation_split")
        },
    }
    if spec.get("save"):
        model = net.quantize()
        qmtik.save_model(spec["save"], model)
        out["agreement"] = agreement(net, model, x_test)
    return out


def agreement(net, model, x_test) -> float:
    """Share of test samples whose integer-model class equals training's fake-quantized forward pass."""
    from qmtik.layers import QuantSpec
    from qmtik.passes import forward

    codes = model.quantize_inputs(x_test)
    spec = QuantSpec.from_config(net.config)
    fake = np.concatenate(
        [
            forward(net.layers_, codes[i : i + 1000], spec, quantized=True, training=False)[0]
            for i in range(0, len(codes), 1000)
        ]
    )
    return float((fake.argmax(axis=1) == model.predict_index(x_test)).mean())


# --- inference ---------------------------------------------------------------------------------


def measure_inference(spec: dict) -> dict:
    """The integer model in spec['model'] on the test set: peak memory of loading it and one
    batch predict, batch throughput, quantizing, single-sample latency in Python and in C."""
    repeats, calls = spec["repeats"], spec["single_calls"]
    baseline = peak_rss_mb()  # the interpreter, NumPy and qmtik
    x_test, y_test = load(spec, "test")
    model = qmtik.load_model(spec["model"])
    codes = model.quantize_inputs(x_test)
    model.scores(codes).argmax(axis=1)  # the batch predict the peak memory is of
    peak = peak_rss_mb()
    log(f"  {spec['dataset']}: timing the batch ({repeats} times) and one sample ({calls} times)")
    batch = median_seconds(lambda: model.scores(codes).argmax(axis=1), repeats)
    backend = (
        "onnxruntime int8 (the [fast] extra)"
        if backends.choose(model.backend, len(codes)) == "onnx"
        else "numpy (float32 BLAS)"
    )
    model.backend = "numpy"  # the same batch on the numpy backend alone
    numpy_batch = median_seconds(lambda: model.scores(codes).argmax(axis=1), repeats)
    model.backend = None
    quantize = median_seconds(lambda: model.quantize_inputs(x_test), repeats)
    one = x_test[:1]
    single = median_seconds(lambda: model.predict(one), calls)
    out = {
        "test_accuracy": model.score(x_test, y_test),
        "test_samples": len(codes),
        "file_bytes": Path(spec["model"]).stat().st_size,
        "float32_bytes": 4 * sum(layer.weights.size + layer.bias.size for layer in model.layers),
        "batch_seconds": batch,
        "samples_per_second": len(codes) / batch,
        "batch_backend": backend,
        "numpy_samples_per_second": len(codes) / numpy_batch,
        "quantize_seconds": quantize,
        "single_us": single * 1e6,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "layer_seconds": layer_seconds(model, codes, max(3, repeats - 2)),
    }
    log(f"  {spec['dataset']}: compiling and timing the C header")
    out["c_latency_us"], out["c_note"] = c_latency(model, codes, spec["c_rounds"])
    out["cortex_m4"] = cortex_m4_sizes(model)
    return out


def layer_seconds(model, codes, repeats: int) -> list:
    """Per layer, the batch's (matrix product, requantization and activation) seconds, in
    chunks of 1024 rows as the model computes it. Each part is timed on its own, on the
    same inputs (the requantization on the product's accumulators), so neither is a
    difference of two noisy timings, and neither can come out negative."""
    out = []
    h = codes
    for kernel in backends.numpy.Kernels(model.layers).kernels:
        chunks = [h[j : j + 1024].astype(kernel.weight_t.dtype) for j in range(0, len(h), 1024)]
        accumulators = [c @ kernel.weight_t for c in chunks]
        product = median_seconds(lambda k=kernel, cs=chunks: [c @ k.weight_t for c in cs], repeats)
        requantize = median_seconds(lambda k=kernel, accs=accumulators: [k.requantize(a) for a in accs], repeats)
        out.append([product, requantize])
        h = np.concatenate([kernel.requantize(a) for a in accumulators])
    return out


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

/* argv[1]: a file of n int8 input rows; argv[2]: rounds over them.
   Prints the median microseconds of one predict in the last round. */
int main(int argc, char **argv)
{
    static int8_t inputs[20000][NET_INPUTS];
    int8_t scores[NET_OUTPUTS], scratch[NET_SCRATCH_BYTES];
    static double times[20000];
    volatile int sink = 0;
    size_t n, i;
    int round, rounds = argc > 2 ? atoi(argv[2]) : 3;
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
    if (!f) return 2;
    n = fread(inputs, NET_INPUTS, 20000, f);
    fclose(f);
    if (n == 0) return 3;
    for (round = 0; round < rounds; ++round)
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


def c_latency(model, codes, rounds: int) -> tuple[dict, str]:
    """Median microseconds of one predict in the compiled header per build (the median over
    the test set, each run's last of `rounds` rounds; the median of 3 runs), and a note when
    there is no compiler."""
    import tempfile

    from qmtik.c_check import find_compiler
    from qmtik.export_c import export_c

    cc = find_compiler()
    if cc is None:
        return {}, "no C compiler found ($CC, gcc, cc, clang): C latency not measured"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "net.h").write_text(export_c(model, "net"))
        (folder / "time.c").write_text(TIMING_DRIVER)
        (folder / "inputs.bin").write_bytes(np.asarray(codes, np.int8).tobytes())
        for name, flags in C_BUILDS.items():
            subprocess.run([cc, "-std=c99", *flags, "time.c", "-o", "time", "-lm"], cwd=folder, check=True)
            runs = [
                float(
                    subprocess.run(
                        [str(folder / "time"), "inputs.bin", str(rounds)],
                        cwd=folder,
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                for _ in range(3)
            ]
            out[name.replace("gcc", Path(cc).name, 1)] = statistics.median(runs)
    return out, ""


def cortex_m4_sizes(model) -> dict | None:
    """Flash and RAM of the header built for a Cortex-M4 (Debian's gcc-arm-none-eabi), or None."""
    import shutil

    from qmtik.c_check import code_size

    if shutil.which("arm-none-eabi-gcc") is None:
        return None
    return code_size(model, shutil.which("arm-none-eabi-gcc"), ("-mcpu=cortex-m4", "-mthumb", "-Os"))


# --- profile -----------------------------------------------------------------------------------

PHASES = {  # phase -> the functions whose time is the phase's: (module, owner or None, name)
    "matrix products": [("layers", None, "product")],
    "weight quantization (codes, scales, bias)": [("layers", None, "step_weights")],
    "integer layer (multipliers, tables)": [("layers", None, "step_fields"), ("layers", None, "step_kernel")],
    "pre-activation, requantization, straight-through masks": [
        ("fused", None, "preactivate"),
        ("fused", None, "requantize_step"),
    ],
    "optimizer": [("optimizers", "Optimizer", "step")],
    "cost": [("training", None, "cost")],
    "validation (integer model)": [("training", None, "evaluate_split")],
}
OTHER = "other (activation derivatives, gradient sums, observers, batches, the loop)"


def measure_profile(spec: dict) -> dict:
    """Seconds of one int8 epoch (with its validation) by phase: each phase's functions timed
    where they are called (perf_counter around each call, no profiler's overhead), the rest of
    the epoch as OTHER."""
    import importlib

    timed: dict[str, float] = {}

    def timer(phase, function):
        def call(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timed[phase] = timed.get(phase, 0.0) + time.perf_counter() - began

        return call

    for phase, places in PHASES.items():
        for module, owner, name in places:
            where = importlib.import_module(f"qmtik.{module}")
            where = getattr(where, owner) if owner else where
            setattr(where, name, timer(phase, getattr(where, name)))
    x, y = load(spec, "train")
    net = qmtik.Network(config_of({**spec, "epochs": 1}, "int8", 0)).fit(x, y)
    epoch = net.history_["epochs"][0]["seconds"]
    phases = {**timed, OTHER: max(0.0, epoch - sum(timed.values()))}
    return dict(sorted(phases.items(), key=lambda kv: -kv[1]))


MEASUREMENTS = {"train": measure_training, "inference": measure_inference, "profile": measure_profile}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in MEASUREMENTS:
        print(f"usage: measure.py {'|'.join(MEASUREMENTS)} SPEC_JSON", file=sys.stderr)
        return 2
    try:
        result = MEASUREMENTS[argv[0]](json.loads(argv[1]))
    except qmtik.QmtikError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
