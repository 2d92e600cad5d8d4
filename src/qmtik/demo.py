"""`qmtik demo`: the whole promise in one command.

Train with fake quantization (and a float twin with the same settings, for comparison),
quantize, evaluate both side by side, write the .qmt model and a C header, compile the header
where a C compiler exists and confirm that C and Python agree byte for byte on the test set,
and end with a short table and the paths written.

MNIST (784-256-256-10, the C library's headline example) when it is in the cache or can be
downloaded; otherwise the bundled digits, with a line saying why. Offline, the download attempt
gives up within a few seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .c_check import check, code_size, find_compiler
from .config import DIGITS_STARTER, Config, DataConfig, NetworkConfig
from .data import load_dataset
from .errors import QmtikError
from .export_c import export_c
from .network import Network
from .output_files import write_atomic
from .qmtfile import save_model

DEMO_DATASETS = ("mnist", "fashion-mnist", "digits")
DOWNLOAD_TIMEOUT = 2.0  # seconds per mirror before the demo falls back to the digits
MNIST_SETTINGS = {"training.epochs": 5}
C_LIBRARY_CLAIMS = {"accuracy": "about 90% (MNIST)", "model": "300 KB", "inference": "0.5 ms"}


def demo_config(dataset: str) -> Config:
    """The demo's network: the C library's 784-256-256-10 for the 28x28 sets, the starter for digits."""
    if dataset == "digits":
        config, changes = Config(), DIGITS_STARTER
    else:
        config = Config(
            network=NetworkConfig(inputs=784, hidden=[256, 256], outputs=10),
            data=DataConfig(dataset=dataset, input_range=[0, 255]),
        )
        changes = MNIST_SETTINGS
    for key, value in changes.items():
        config = config.replace(key, value)
    return config


def choose_dataset(requested: str | None, say) -> str:
    """The requested set (fetched when it is not there yet); else MNIST when cached or
    downloadable in a few seconds; else the bundled digits."""
    from .download import find_dataset, get_dataset

    if requested:
        if requested != "digits" and find_dataset(requested) is None:
            get_dataset(requested)  # asked for by name: a failure is the demo's error
        return requested
    if find_dataset("mnist") is not None:
        return "mnist"
    try:
        get_dataset("mnist", timeout=DOWNLOAD_TIMEOUT, progress=False)
        return "mnist"
    except QmtikError as exc:
        say(f"MNIST is not available ({exc}); using the bundled 8x8 digits instead")
        return "digits"


def train_pair(config: Config, x, y, say):
    """The int8 (fake-quantized) network and its float twin, trained on the same data and seed."""
    nets = {}
    for mode, float_epochs in (("float", config.training.epochs), ("int8", 0)):
        began = time.perf_counter()
        nets[mode] = Network(config.replace("training.float_epochs", float_epochs)).fit(x, y)
        say(f"trained the {mode} network in {time.perf_counter() - began:.1f} s")
    return nets["float"], nets["int8"]


def inference_speed(model, x) -> dict:
    """Batch throughput (samples/s, int8 codes to classes) and single-sample latency (µs), medians."""
    codes = model.quantize_inputs(x)
    batch = []
    for _ in range(5):
        began = time.perf_counter()
        model.scores(codes)
        batch.append(time.perf_counter() - began)
    one = x[:1]
    single = []
    for _ in range(300):
        began = time.perf_counter()
        model.predict(one)
        single.append(time.perf_counter() - began)
    return {"samples_per_second": len(codes) / float(np.median(batch)), "single_us": 1e6 * float(np.median(single))}


def run_demo(dataset: str | None = None, out_dir="qmtik-demo", say=print) -> dict:
    """Run the demo, writing into out_dir; returns its figures and the paths it wrote."""
    dataset = choose_dataset(dataset, say)
    config = demo_config(dataset)
    (x, y), (x_test, y_test) = load_dataset(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = config.network
    say(
        f"data set {dataset}: {len(x)} training and {len(x_test)} test samples; network "
        f"{'-'.join(map(str, [net.inputs, *net.hidden, net.outputs]))}, {config.training.epochs} epochs"
    )
    float_net, int8_net = train_pair(config, x, y, say)
    model = int8_net.quantize()
    stem = out / dataset
    paths = {"model": stem.with_suffix(".qmt"), "header": stem.with_suffix(".h")}
    save_model(paths["model"], model)
    prefix = dataset.replace("-", "_")
    header = export_c(model, prefix)
    write_atomic(paths["header"], lambda f: f.write(header.encode()))
    figures = {
        "dataset": dataset,
        "float_accuracy": float_net.score(x_test, y_test),
        "int8_accuracy": model.score(x_test, y_test),
        "qmt_bytes": paths["model"].stat().st_size,
        "float32_bytes": 4 * sum(layer.weights.size + layer.bias.size for layer in model.layers),
        **inference_speed(model, x_test),
        "c_check": None,
        "flash": None,
        "ram": None,
        "paths": paths,
    }
    if find_compiler() is None:
        say("no C compiler found ($CC, gcc, cc, clang): the header was written but not compiled")
    else:
        figures["c_check"] = check(model, x_test, prefix)  # the header written, compiled
        sizes = code_size(model, prefix=prefix)
        figures["flash"] = sizes["code"] + sizes["constants"]
        figures["ram"] = sizes["scratch"] + sizes["stack"]
    say(summary_table(figures))
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return figures


def summary_table(f: dict) -> str:
    """The demo's closing table, in markdown, beside what the C library claimed."""
    c = f["c_check"]
    if c is None:
        agreement = "not compiled (no C compiler)"
    else:
        bad = c["mismatched_samples"]
        agreement = f"{c['samples'] - bad:,} of {c['samples']:,} test samples byte for byte" + (
            " (under ASan and UBSan)" if c["sanitized"] else ""
        )
    rows = [
        ("test accuracy, float", f"{100 * f['float_accuracy']:.2f}%", ""),
        ("test accuracy, int8", f"{100 * f['int8_accuracy']:.2f}%", C_LIBRARY_CLAIMS["accuracy"]),
        (
            "model file (.qmt)",
            f"{f['qmt_bytes']:,} B ({f['qmt_bytes'] / f['float32_bytes']:.0%} of float32's {f['float32_bytes']:,} B)",
            C_LIBRARY_CLAIMS["model"],
        ),
        ("inference, Python, one sample", f"{f['single_us']:.0f} µs", C_LIBRARY_CLAIMS["inference"]),
        ("inference, Python, batch", f"{f['samples_per_second']:,.0f} samples/s", ""),
        ("C header agrees with Python", agreement, ""),
        (
            "flash / RAM the header needs",
            "unknown (no C compiler)"
            if f["flash"] is None
            else f"{f['flash']:,} B / {f['ram']:,} B (local compiler, -Os)",
            "",
        ),
    ]
    lines = [f"| {f['dataset']} | qmtik | C library qmtik.h claimed |", "| --- | --- | --- |"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])
