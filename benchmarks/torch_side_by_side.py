"""qmtik's training side by side with PyTorch's, on the same network, data, batch and epochs.

    python benchmarks/torch_side_by_side.py                  # Fashion-MNIST, 8 epochs, 3 pairs
    python benchmarks/torch_side_by_side.py --quick          # digits, 2 epochs, 1 pair: seconds
    python benchmarks/torch_side_by_side.py --without-torch  # qmtik's runs only

Each pair runs, back to back and each in a process of its own: qmtik int8 (fake quantization
from the first epoch), qmtik float, PyTorch float and PyTorch's eager quantization-aware
training (torch.ao.quantization.prepare_qat), with qmtik's defaults on both sides: Adam,
learning rate 0.002 on the same cosine schedule (qmtik's own function, step by step), batch
128, the same 10% held out and evaluated after every epoch, the same input values, the same
number of threads (BLAS and torch.set_num_threads). Every process also times a 128x784 @
784x256 float32 matrix product in its library (GFLOP/s), so that a reader sees the host's
state. The figure compared is each run's fastest epoch per sample (the least disturbed on a
shared host), its median over the pairs; the ratio is the median of the pairs' ratios.

PyTorch is not a dependency of qmtik: install it for this benchmark only, pinned
(`pip install torch==2.13.0`, a CPU build; an unpinned torch pulls a multi-GB CUDA build).
Without it the PyTorch runs are skipped with the reason. Each run's figures are one JSON file
in --out (benchmarks/side_by_side/ by default); a run whose file exists is not run again, so
an interrupted benchmark resumes (--fresh runs everything again).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure import config_of, load, trained_samples  # noqa: E402  (benchmarks/ on the path)
from run import DATASETS, dataset_directory  # noqa: E402

KINDS = ("qmtik-int8", "qmtik-float", "torch-float", "torch-qat")
TITLES = {
    "qmtik-int8": "qmtik int8 (fake-quantized)",
    "qmtik-float": "qmtik float",
    "torch-float": "PyTorch float",
    "torch-qat": "PyTorch eager QAT (prepare_qat)",
}
TORCH_PIN = "torch==2.13.0"
FULL = {"dataset": "fashion-mnist", "epochs": 8, "pairs": 3}
QUICK = {"dataset": "digits", "epochs": 2, "pairs": 1}
MATMUL = (128, 784, 256)  # rows x inputs @ inputs x outputs: the first layer's forward product


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def torch_missing() -> str | None:
    """Why the PyTorch runs cannot run here, or None when they can."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return f"PyTorch is not installed (pip install {TORCH_PIN}; never a dependency of qmtik)"
    return None


# --- the runs, each in a process of its own ------------------------------------------------------


def matmul_gflops(product, repeats: int = 200) -> float:
    """GFLOP/s of product() (a MATMUL-shaped float32 product): the median of repeats calls."""
    for _ in range(10):
        product()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        product()
        times.append(time.perf_counter() - began)
    rows, inner, cols = MATMUL
    return 2 * rows * inner * cols / statistics.median(times) / 1e9


def numpy_gflops() -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(MATMUL[:2]).astype(np.float32)
    b = rng.standard_normal(MATMUL[1:]).astype(np.float32)
    return matmul_gflops(lambda: a @ b)


def run_qmtik(spec: dict, mode: str) -> dict:
    """qmtik trained in mode int8 or float: its epochs' seconds (each with its validation)."""
    import qmtik

    x, y = load(spec, "train")
    x_test, y_test = load(spec, "test")
    config = config_of(spec, mode, spec["seed"])
    net = qmtik.Network(config).fit(x, y)
    return {
        "epoch_seconds": [r["seconds"] for r in net.history_["epochs"]],
        "trained_samples": trained_samples(len(x), config.training.validation_split),
        "test_accuracy": net.score(x_test, y_test),
        "gflops": numpy_gflops(),
        "library": qmtik.__version__,
    }


def torch_data(spec: dict):
    """The inputs as the float network sees them (code + 128) / 255, split as qmtik splits."""
    from qmtik.quantization import quantize_inputs
    from qmtik.training import Split, split_validation

    x, y = load(spec, "train")
    x_test, y_test = load(spec, "test")
    config = config_of(spec, "float", spec["seed"])

    def values(inputs):
        codes = quantize_inputs(inputs.reshape(len(inputs), -1), spec["input_range"])
        return (codes.astype(np.float32) + 128) / 255

    train, val = split_validation(
        Split(values(x), np.asarray(y, np.int64)), config.training.validation_split, config.training.seed
    )
    return config, train, val, (values(x_test), np.asarray(y_test, np.int64))


def torch_network(spec: dict, qat: bool):
    """784-256-256-10 (the spec's widths), relu; for QAT wrapped in quant stubs and prepared."""
    import torch
    from torch import nn

    widths = [spec["inputs"], *spec["hidden"], len(spec["classes"])]
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    body = nn.Sequential(*layers[:-1])
    if not qat:
        return body
    with warnings.catch_warnings():  # its deprecation notices, not our figures
        warnings.simplefilter("ignore")
        import torch.ao.quantization as tq

        model = nn.Sequential(tq.QuantStub(), body, tq.DeQuantStub())
        engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        model.qconfig = tq.get_default_qat_qconfig(engine)
        return tq.prepare_qat(model.train())


def run_torch(spec: dict, qat: bool) -> dict:
    """PyTorch's float or eager QAT training with qmtik's settings: the epochs' seconds, each
    with the same validation pass qmtik makes."""
    import torch

    from qmtik.optimizers import learning_rate

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    config, train, val, test = torch_data(spec)
    tc = config.training
    model = torch_network(spec, qat)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.learning_rate, betas=(tc.beta1, tc.beta2), eps=tc.eps)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(train.codes), torch.from_numpy(train.targets)
    steps = -(-len(x) // tc.batch_size)
    seconds = []
    for epoch in range(tc.epochs):
        began = time.perf_counter()
        model.train()
        order = torch.from_numpy(np.random.default_rng([tc.seed, epoch]).permutation(len(x)))
        for step in range(steps):
            batch = order[step * tc.batch_size : (step + 1) * tc.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(tc, epoch * steps + step, steps)
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        if val is not None:
            torch_accuracy(model, val.codes, val.targets)
        seconds.append(time.perf_counter() - began)
    a = torch.randn(MATMUL[:2])
    b = torch.randn(MATMUL[1:])
    return {
        "epoch_seconds": seconds,
        "trained_samples": len(x),
        "test_accuracy": torch_accuracy(model, *test),
        "gflops": matmul_gflops(lambda: torch.mm(a, b)),
        "library": torch.__version__,
    }


def torch_accuracy(model, inputs, labels) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(inputs)).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def child(kind: str, spec: dict) -> dict:
    """One run of kind, measured in this process."""
    if kind.startswith("qmtik"):
        out = run_qmtik(spec, kind.split("-")[1])
    else:
        out = run_torch(spec, qat=kind == "torch-qat")
    return {
        "kind": kind,
        "pair": spec["pair"],
        "threads": spec["threads"],
        "epochs": spec["epochs"],
        "dataset": spec["dataset"],
        **out,
    }


def run_file(out: Path, spec: dict, kind: str) -> Path:
    return out / f"{spec['dataset']}-e{spec['epochs']}-t{spec['threads']}-pair{spec['pair']}-{kind}.json"


def run_all(settings: dict, kinds, out: Path, fresh: bool) -> list[dict]:
    """Every pair's runs of kinds, back to back, each in its own process; those already in out
    are read, not run again."""
    directory, why = dataset_directory(settings["dataset"])
    if directory is None:
        raise SystemExit(f"side by side: {settings['dataset']}: {why}")
    name = settings["dataset"]
    base = {
        "dataset": name,
        "directory": directory,
        **{k: v for k, v in DATASETS[name].items() if k != "title"},
        "epochs": settings["epochs"],
        "samples": None,
        "threads": settings["threads"],
    }
    env = {
        **os.environ,
        **{k: str(settings["threads"]) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for pair in range(settings["pairs"]):
        for kind in kinds:
            spec = {**base, "pair": pair, "seed": pair}
            path = run_file(out, spec, kind)
            if path.exists() and not fresh:
                log(f"pair {pair + 1}: {kind}: read {path}")
            else:
                log(f"pair {pair + 1} of {settings['pairs']}: {kind}")
                done = subprocess.run(
                    [sys.executable, __file__, "--child", kind, json.dumps(spec)],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                if done.returncode != 0:
                    raise SystemExit(f"side by side: the {kind} run of pair {pair + 1} failed (exit {done.returncode})")
                path.write_text(done.stdout.strip().splitlines()[-1] + "\n")
            runs.append(json.loads(path.read_text()))
    return runs


# --- the arithmetic of the table ---------------------------------------------------------------


def fastest_us(run: dict) -> float:
    """A run's fastest epoch, in microseconds per trained sample."""
    return min(run["epoch_seconds"]) / run["trained_samples"] * 1e6


def summarize(runs: list[dict]) -> dict:
    """Per kind: the fastest epoch per sample of each pair and their median, the median test
    accuracy and matrix-product speed; per kind but torch float, the median over the pairs of
    its ratio to the same pair's PyTorch float (None without those runs)."""
    kinds = [k for k in KINDS if any(r["kind"] == k for r in runs)]
    by_pair = {(r["kind"], r["pair"]): r for r in runs}
    out = {}
    for kind in kinds:
        mine = sorted((r for r in runs if r["kind"] == kind), key=lambda r: r["pair"])
        ratios = [
            fastest_us(r) / fastest_us(by_pair[("torch-float", r["pair"])])
            for r in mine
            if ("torch-float", r["pair"]) in by_pair
        ]
        out[kind] = {
            "fastest_us": statistics.median(fastest_us(r) for r in mine),
            "per_pair_us": [fastest_us(r) for r in mine],
            "test_accuracy": statistics.median(r["test_accuracy"] for r in mine),
            "gflops": statistics.median(r["gflops"] for r in mine),
            "to_torch_float": statistics.median(ratios) if ratios else None,
        }
    return out


def markdown(summary: dict, skipped: dict) -> str:
    """The side-by-side table: a row per kind run, then a row per kind skipped, with why."""
    lines = [
        "| training | fastest epoch per sample (median of pairs) | each pair | to PyTorch float "
        "| test accuracy (median) | 128x784 @ 784x256 float32 |",
        "|" + " --- |" * 6,
    ]
    for kind, s in summary.items():
        ratio = "" if s["to_torch_float"] is None else f"{s['to_torch_float']:.2f}x"
        pairs = ", ".join(f"{us:.1f}" for us in s["per_pair_us"])
        lines.append(
            f"| {TITLES[kind]} | {s['fastest_us']:.1f} µs | {pairs} | {ratio} | "
            f"{100 * s['test_accuracy']:.2f}% | {s['gflops']:.1f} GFLOP/s |"
        )
    lines += [f"| {TITLES[kind]} | skipped: {why} | | | | |" for kind, why in skipped.items()]
    return "\n".join(lines)


# --- the command line --------------------------------------------------------------------------


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, 2 epochs, 1 pair: a smoke run")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="default fashion-mnist (--quick: digits)")
    parser.add_argument("--epochs", type=int, help="default 8 (--quick: 2)")
    parser.add_argument("--pairs", type=int, help="default 3 (--quick: 1)")
    parser.add_argument("--threads", type=int, help="BLAS and torch threads (default: the usable cores)")
    parser.add_argument("--without-torch", action="store_true", help="qmtik's runs only")
    parser.add_argument("--kinds", help=f"only these runs, comma-separated: {','.join(KINDS)}")
    parser.add_argument("--out", default=str(HERE / "side_by_side"), help="the folder of the runs' JSON files")
    parser.add_argument("--fresh", action="store_true", help="run again the runs whose files exist")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return 0
    settings = dict(QUICK if args.quick else FULL)
    for key in ("dataset", "epochs", "pairs"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings["threads"] = args.threads or usable
    why = "--without-torch" if args.without_torch else torch_missing()
    chosen = args.kinds.split(",") if args.kinds else KINDS
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        raise SystemExit(f"side by side: --kinds: {', '.join(unknown)} unknown; choose from {', '.join(KINDS)}")
    kinds = [k for k in KINDS if k in chosen and not (why and k.startswith("torch"))]
    skipped = {k: why for k in KINDS if k in chosen and k not in kinds}
    for kind, reason in skipped.items():
        log(f"{kind}: skipped: {reason}")
    runs = run_all(settings, kinds, Path(args.out), args.fresh)
    summary = summarize(runs)
    print(
        f"{DATASETS[settings['dataset']]['title']}, {settings['epochs']} epochs, {settings['pairs']} pair(s), "
        f"batch 128, {settings['threads']} thread(s) on each side\n"
    )
    print(markdown(summary, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
