"""Convolutional networks on Fashion-MNIST: accuracy against size, and training time beside PyTorch.

    python benchmarks/cnn.py                 # the CNN, 3 seeds int8 and float, then the sizes, then PyTorch
    python benchmarks/cnn.py --quick         # digits (8x8), a tiny CNN, 1 seed, 2 epochs: seconds
    python benchmarks/cnn.py --parts sizes   # only some parts: main, sizes, torch

The networks (NETWORKS below) are 3x3 convolutions with batch norm and 2x2 max pools, ending in
a flatten or a global average pool, then the output layer; "main" (two convolutions, flatten)
is the one the figures are quoted for, "gap-16" is examples/fashion_cnn.toml's. Each run (a
network, an arithmetic, a seed) is one process and one JSON file in --out (benchmarks/cnn_runs/
by default); a run whose file exists is read, not run again, so an interrupted benchmark
resumes (--fresh runs everything again). PyTorch's float and eager QAT epochs of
the same network (conv, batch norm and relu fused for QAT, as PyTorch's
flow has it) are timed when torch is installed (torch==2.13.0, a benchmark-only install), back
to back with two int8 and two float epochs of qmtik's (the "torch" part; the faster epoch of each
is quoted): `--parts torch --fresh` measures the four again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "fashion_cnn.toml"


def conv(filters: int) -> dict:
    return {"kind": "conv2d", "filters": filters, "kernel": 3, "padding": "same", "batch_norm": True}


POOL = {"kind": "max_pool", "size": 2}
NETWORKS = {  # name -> its layer tables (the output layer, dense 10, is implied)
    "main": [conv(32), POOL, conv(64), POOL, {"kind": "flatten"}],  # 50,504 bytes of weights and biases
    "gap-16": [conv(16), POOL, conv(32), POOL, conv(64), {"kind": "global_avg_pool"}],  # examples/fashion_cnn.toml
    "gap-8": [conv(8), POOL, conv(16), POOL, conv(32), {"kind": "global_avg_pool"}],
}
TINY = [conv(8), POOL, conv(16), {"kind": "global_avg_pool"}]  # --quick: 8x8 digits
FULL = {"dataset": "fashion-mnist", "epochs": 10, "seeds": 3, "samples": None}
QUICK = {"dataset": "digits", "epochs": 2, "seeds": 1, "samples": None}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def config_for(settings: dict, network: str, mode: str, seed: int):
    """The named network (or a tiny one on 8x8 digits) with the example's other settings and
    the settings' epochs and seed; int8 fake-quantizes from the first epoch, float never does."""
    import qmtik

    config = qmtik.load_config(EXAMPLE)
    if settings["dataset"] == "digits":
        config = config.replace_many(
            {"network.input_shape": [8, 8, 1], "network.layers": TINY, "data.input_range": [0, 16]}
        )
    else:
        config = config.replace("network.layers", NETWORKS[network])
    return config.replace_many(
        {
            "training.epochs": settings["epochs"],
            "training.seed": seed,
            "training.float_epochs": 0 if mode == "int8" else settings["epochs"],
        }  # fmt: skip
    )


def data(settings: dict):
    """((x, y) train, (x, y) test) of the settings' data set."""
    import qmtik

    if settings["dataset"] == "digits":
        return qmtik.load_dataset("digits")
    from qmtik.data import load_idx_pair
    from qmtik.download import find_dataset

    directory = find_dataset("fashion-mnist")  # the cache, or Debian's dataset-fashion-mnist
    if directory is None:
        raise SystemExit("cnn benchmark: Fashion-MNIST is not present; run 'qmtik data get fashion-mnist'")
    return load_idx_pair(directory, "train"), load_idx_pair(directory, "t10k")


def run_qmtik(settings: dict, size: str, mode: str, seed: int) -> dict:
    """Train one network; its accuracy, sizes and epoch times."""
    import qmtik

    (x, y), (x_test, y_test) = data(settings)
    config = config_for(settings, size, mode, seed)
    began = time.perf_counter()
    net = qmtik.Network(config).fit(x, y)
    seconds = time.perf_counter() - began
    shapes = config.network.shapes
    return {
        "size": size,
        "mode": mode,
        "seed": seed,
        "test_accuracy": net.score(x_test, y_test),
        "train_seconds": seconds,
        "epoch_seconds": [r["seconds"] for r in net.history_["epochs"]],
        "weight_bytes": sum(s.weights for s in shapes) + 4 * sum(s.biases for s in shapes),
        "activation_bytes": max(math.prod(s.in_shape) + s.activation_bytes for s in shapes),
        "trained_samples": len(x) - int(round(len(x) * config.training.validation_split)),
    }


def run_torch(settings: dict, size: str, qat: bool) -> dict:
    """PyTorch's float or eager QAT epochs of the same network (the example's, at this size)."""
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.manual_seed(0)
    config = config_for(settings, size, "float", 0)
    h, w, c = config.network.input_shape
    modules, channels, fuse = [], c, []
    features = channels
    for shape in config.network.shapes[:-1]:
        spec = shape.spec
        if spec.kind == "conv2d":
            fuse.append([str(len(modules)), str(len(modules) + 1), str(len(modules) + 2)])
            modules += [nn.Conv2d(channels, spec.filters, 3, padding=1, bias=False), nn.BatchNorm2d(spec.filters),
                        nn.ReLU()]  # fmt: skip
            channels = spec.filters
        elif spec.kind == "max_pool":
            modules.append(nn.MaxPool2d(2))
        elif spec.kind == "global_avg_pool":
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif spec.kind == "flatten":
            modules.append(nn.Flatten())
        features = math.prod(shape.out_shape)
    modules.append(nn.Linear(features, config.network.outputs))
    model = nn.Sequential(*modules)
    if qat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch.ao.quantization as tq

            model.eval()
            tq.fuse_modules(model, fuse, inplace=True)
            model = nn.Sequential(tq.QuantStub(), model, tq.DeQuantStub())
            model.qconfig = tq.get_default_qat_qconfig("x86")
            model = tq.prepare_qat(model.train())
    (x, y), _ = data(settings)
    x = torch.from_numpy((np.asarray(x, np.float32).reshape(len(x), h, w, c) / 255).transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(np.asarray(y, np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seconds = []
    for _ in range(2):  # two epochs: the faster is quoted
        began = time.perf_counter()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 128):
            batch = order[start : start + 128]
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - began)
    return {"size": size, "mode": "torch-qat" if qat else "torch-float", "epoch_seconds": seconds,
            "trained_samples": len(x), "library": torch.__version__}  # fmt: skip


def device_sizes(settings: dict, network: str) -> dict | None:
    """The Cortex-M4 header's flash and RAM (arm-none-eabi-gcc -Os, else the local compiler;
    None without one) of the network: its integer model after one epoch on 256 samples, since
    flash and RAM depend on the shapes, not on the weights' values."""
    import shutil

    import qmtik
    from qmtik.c_check import code_size

    (x, y), _ = data(settings)
    config = config_for(settings, network, "int8", 0).replace_many(
        {"training.epochs": 1, "training.validation_split": 0}
    )
    model = qmtik.Network(config).fit(x[:256], y[:256]).quantize()
    cc = shutil.which("arm-none-eabi-gcc")
    flags = ("-Os", "-mcpu=cortex-m4", "-mthumb") if cc else ("-Os",)
    sizes = code_size(model, cc, flags)
    if sizes is None:
        return None
    return {"flash": sizes["code"] + sizes["constants"], "ram": sizes["arena"] + sizes["stack"],
            "compiler": "Cortex-M4" if cc else "local"}  # fmt: skip


def child(kind: str, spec: dict) -> dict:
    if kind == "qmtik":
        result = run_qmtik(spec["settings"], spec["size"], spec["mode"], spec["seed"])
        return {**result, "timing": True} if spec.get("timing") else result
    if kind == "device":
        return {
            "size": spec["size"],
            "mode": "device",
            "seed": 0,
            **(device_sizes(spec["settings"], spec["size"]) or {}),
        }
    return run_torch(spec["settings"], spec["size"], spec["mode"] == "torch-qat")


def run(out: Path, name: str, kind: str, spec: dict, fresh: bool) -> dict | None:
    """One run in a process of its own, its JSON kept in out/name.json (read back if there)."""
    path = out / f"{name}.json"
    if path.exists() and not fresh:
        log(f"{name}: read {path}")
        return json.loads(path.read_text())
    log(f"{name}: running")
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        log(f"{name}: failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result


def torch_missing() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (pip install torch==2.13.0, for this benchmark only)"
    return None


def per_sample_us(r: dict) -> float:
    return 1e6 * min(r["epoch_seconds"]) / r["trained_samples"]


def layers_text(name: str) -> str:
    """A network's layers in a few characters: c32 p c64 p f."""
    short = {"conv2d": "c", "max_pool": "p", "flatten": "f", "global_avg_pool": "g"}
    return " ".join(short[t["kind"]] + str(t.get("filters", "")) for t in NETWORKS[name])


def tables(runs: list[dict], settings: dict) -> str:
    """The accuracy table (median over seeds), the sizes table, the speed table."""
    lines = [f"{settings['dataset']}, {settings['epochs']} epochs, {settings['seeds']} seed(s)", ""]
    timing = [r for r in runs if r.get("timing")]  # only the speed table quotes them
    runs = [r for r in runs if not r.get("timing")]
    main = [r for r in runs if r["size"] == "main" and r["mode"] in ("int8", "float")]
    lines += ["| main network | test accuracy (median) | each seed | weights and biases | fastest epoch per sample |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for mode in ("int8", "float"):
        these = sorted((r for r in main if r["mode"] == mode), key=lambda r: r["seed"])
        if these:
            accuracy = statistics.median(r["test_accuracy"] for r in these)
            each = ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in these)
            lines.append(f"| {mode} | {100 * accuracy:.2f}% | {each} | {these[0]['weight_bytes']:,} bytes | "
                         f"{statistics.median(per_sample_us(r) for r in these):.0f} µs |")  # fmt: skip
    sizes = [r for r in runs if r["mode"] == "int8" and r["seed"] == 0]
    device = {r["size"]: r for r in runs if r["mode"] == "device" and "flash" in r}
    header = (
        "| network (int8, seed 0) | layers | test accuracy | weights and biases | a layer's input + output "
        "| header flash | header RAM (arena + stack) |"
    )
    lines += ["", header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for size in NETWORKS:
        for r in (r for r in sizes if r["size"] == size):
            d = device.get(size)
            on_device = f"{d['flash']:,} bytes ({d['compiler']}) | {d['ram']:,} bytes" if d else "— | —"
            lines.append(f"| {size} | {layers_text(size)} | {100 * r['test_accuracy']:.2f}% | "
                         f"{r['weight_bytes']:,} bytes | {r['activation_bytes']:,} bytes | {on_device} |")  # fmt: skip
    speed = {}  # mode -> run: the timing runs beside PyTorch's first, else seed 0 of the accuracy runs
    for r in runs + timing:
        if r["size"] == "main" and r.get("seed", 0) == 0 and "epoch_seconds" in r:
            if r.get("timing") or r["mode"] not in speed:
                speed[r["mode"]] = r
    if "torch-qat" in speed:
        qat = per_sample_us(speed["torch-qat"])
        lines += [
            "",
            "| training (main network, fastest epoch) | epoch | per sample | to PyTorch eager QAT |",
            "| --- | --- | --- | --- |",
        ]
        for mode in ("int8", "float", "torch-float", "torch-qat"):
            if mode in speed:
                r = speed[mode]
                lines.append(f"| {mode} | {min(r['epoch_seconds']):.1f} s | {per_sample_us(r):.0f} µs | "
                             f"{per_sample_us(r) / qat:.2f}x |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, a tiny CNN, 1 seed, 2 epochs")
    parser.add_argument("--parts", default="main,sizes,torch", help="comma-separated: main, sizes, torch")
    parser.add_argument("--seeds", type=int, help="default 3 (--quick 1)")
    parser.add_argument("--epochs", type=int, help="default 10 (--quick 2)")
    parser.add_argument("--out", default=str(HERE / "cnn_runs"), help="the folder of the runs' JSON files")
    parser.add_argument("--fresh", action="store_true", help="run again the runs whose files exist")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return 0
    settings = dict(QUICK if args.quick else FULL)
    for key in ("seeds", "epochs"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    parts = set(args.parts.split(","))
    out, tag = Path(args.out), f"{settings['dataset']}-e{settings['epochs']}"
    plan = []  # seed 0 of everything first, so that an interrupted run has every table's first row
    if "main" in parts:
        plan += [("qmtik", "main", mode, 0) for mode in ("int8", "float")]
    if "torch" in parts:
        why = torch_missing()
        if why:
            log(f"PyTorch: skipped: {why}")
        else:  # back to back: qmtik's int8 and float epochs (2 each, the faster quoted, as PyTorch's) beside PyTorch's
            plan += [("qmtik", "main", "int8", "timing"), ("torch", "main", "torch-qat", 0)]
            plan += [("qmtik", "main", "float", "timing"), ("torch", "main", "torch-float", 0)]
    if "sizes" in parts:
        plan += [("qmtik", size, "int8", 0) for size in NETWORKS if size != "main"]
        plan += [("device", size, "device", 0) for size in NETWORKS]
    if "main" in parts:
        plan += [("qmtik", "main", mode, seed) for mode in ("int8", "float") for seed in range(1, settings["seeds"])]
    runs = []
    for kind, size, mode, seed in plan:
        spec = {"settings": settings, "size": size, "mode": mode, "seed": seed}
        name = f"{tag}-{size}-{mode}-s{seed}"
        if seed == "timing":
            spec = {**spec, "settings": {**settings, "epochs": 2}, "seed": 0, "timing": True}
            name = f"{settings['dataset']}-timing-{size}-{mode}"
        result = run(out, name, kind, spec, args.fresh)
        if result is not None:
            runs.append(result)
    print(tables(runs, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
