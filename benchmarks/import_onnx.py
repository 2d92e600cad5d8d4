"""Bring your own model: a PyTorch network trained in float, exported to ONNX, imported by qmtik,
quantized after training (PTQ) and fine-tuned for one epoch under fake quantization; beside
PyTorch's own post-training static quantization (torch.ao.quantization, eager) of the same model.

    python benchmarks/import_onnx.py                 # MLP and CNN, Fashion-MNIST, seeds 0 1 2
    python benchmarks/import_onnx.py --models mlp    # the MLP only
    python benchmarks/import_onnx.py --quick         # digits, one seed, one float epoch: seconds

For each model and seed: PyTorch trains the float model (Adam, learning rate 0.001, batch 128,
FLOAT_EPOCHS epochs, on pixels / 255), torch.onnx.export writes it with the division by 255 inside
(so the graph takes raw pixels, and qmtik folds the division into the first layer), qmtik
imports it with input range [0, 255] and checks its float outputs against onnxruntime's; then:

- qmtik PTQ: activation ranges from CALIBRATION training samples (a seeded choice) with each
  observer (minmax, percentile, mse), int8 test accuracy of the integer model;
- qmtik fine-tuned: one epoch of quantization-aware training (float_epochs 0) from the
  imported weights with the minmax-calibrated ranges, Adam at FINE_TUNE_RATE (cosine schedule),
  batch 128, qmtik's 10% held out for keeping the best (here: the only) epoch;
- PyTorch PTQ: QuantStub/DeQuantStub, conv/linear + relu fused, the x86 default qconfig,
  calibrated on the same samples, converted, test accuracy.

MLP: 784-256-256-10, relu (the README's MLP). CNN: benchmarks/cnn.py's "main" (two 3x3
convolutions of 32 and 64 filters with batch norm and relu, each followed by a 2x2 max pool,
then the dense output layer). PyTorch (torch==2.13.0, CPU) and onnxscript are needed for this
script only, never by qmtik. Each run is one JSON file in --out (benchmarks/import_runs/), read
back when it exists, so an interrupted benchmark resumes; the table gives medians over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FLOAT_EPOCHS = 5
FINE_TUNE_RATE = 1e-4
CALIBRATION = 1000
OBSERVERS = ("minmax", "percentile", "mse")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def data(dataset: str):
    """((x, y) train, (x, y) test), pixels as float32 in [0, 255]."""
    import qmtik

    if dataset == "digits":
        (x, y), (xt, yt) = qmtik.load_dataset("digits")
        return (x.astype(np.float32) * (255.0 / 16.0), y), (xt.astype(np.float32) * (255.0 / 16.0), yt)
    from qmtik.data import load_idx_pair
    from qmtik.download import find_dataset

    directory = find_dataset("fashion-mnist")
    if directory is None:
        raise SystemExit("import_onnx benchmark: Fashion-MNIST is not present; run 'qmtik data get fashion-mnist'")
    (x, y), (xt, yt) = load_idx_pair(directory, "train"), load_idx_pair(directory, "t10k")
    return (x.reshape(len(x), -1).astype(np.float32), y), (xt.reshape(len(xt), -1).astype(np.float32), yt)


def torch_model(kind: str, side: int):
    """The float model on pixels / 255 (channels first), and the lists of modules to fuse."""
    from torch import nn

    if kind == "mlp":
        body = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))  # fmt: skip
        return body, [["1", "2"], ["3", "4"]]
    modules = [nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
               nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
               nn.Flatten(), nn.Linear(64 * (side // 4) ** 2, 10)]  # fmt: skip
    return nn.Sequential(*modules), [["0", "1", "2"], ["4", "5", "6"]]


def as_images(x, side: int):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), 1, side, side), np.float32))


def train_float(model, x, y, side: int, epochs: int, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = as_images(x / 255.0, side), torch.from_numpy(np.asarray(y, np.int64))
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(images)))
        for start in range(0, len(images), 128):
            batch = order[start : start + 128]
            optimizer.zero_grad()
            loss_fn(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()


def torch_accuracy(model, x, y, side: int) -> float:
    import torch

    with torch.no_grad():
        predicted = np.concatenate(
            [model(as_images(x[i : i + 1000] / 255.0, side)).argmax(1).numpy() for i in range(0, len(x), 1000)]
        )
    return float(np.mean(predicted == np.asarray(y)))


def torch_ptq(model, fuse, calibration, x_test, y_test, side: int) -> float:
    """PyTorch's eager post-training static quantization of a copy of the model."""
    import copy

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.quantization as tq

        quantized = copy.deepcopy(model).eval()
        tq.fuse_modules(quantized, fuse, inplace=True)
        quantized = torch.nn.Sequential(tq.QuantStub(), quantized, tq.DeQuantStub()).eval()
        engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        torch.backends.quantized.engine = engine
        quantized.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(quantized, inplace=True)
        with torch.no_grad():
            quantized(as_images(calibration / 255.0, side))
        tq.convert(quantized, inplace=True)
        return torch_accuracy(quantized, x_test, y_test, side)


def raw_module(body):
    """The module torch.onnx.export writes: pixels in, the division by 255 inside."""
    import torch

    class Raw(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x / 255.0)

    return Raw().eval()


def run_one(kind: str, seed: int, settings: dict) -> dict:
    import onnxruntime as ort
    import torch

    import qmtik
    from qmtik.calibrate import calibrate
    from qmtik.onnx_import import float_layers, import_onnx

    torch.set_num_threads(settings["threads"])
    (x, y), (x_test, y_test) = data(settings["dataset"])
    side = int(round(np.sqrt(x.shape[1])))
    began = time.perf_counter()
    model, fuse = torch_model(kind, side)
    train_float(model, x, y, side, settings["float_epochs"], seed)
    result = {"model": kind, "seed": seed, "float": torch_accuracy(model, x_test, y_test, side)}
    result["float_seconds"] = time.perf_counter() - began
    calibration = x[np.sort(np.random.default_rng([seed, 7]).choice(len(x), settings["calibration"], replace=False))]
    result["torch_ptq"] = torch_ptq(model, fuse, calibration, x_test, y_test, side)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{kind}.onnx")
        with warnings.catch_warnings(), open(os.devnull, "w") as quiet:
            warnings.simplefilter("ignore")
            stdout, sys.stdout = sys.stdout, quiet
            try:
                torch.onnx.export(raw_module(model), (as_images(x[:1], side),), path, dynamo=True)
            finally:
                sys.stdout = stdout
        net = import_onnx(path, (0, 255))
        session = ort.InferenceSession(path)
        probe = x_test[:200]
        onnx_scores = np.concatenate([session.run(None, {session.get_inputs()[0].name: as_images(probe[i : i + 1],
                                      side).numpy()})[0] for i in range(len(probe))])  # fmt: skip
    ours = float_layers(net, probe)[-1]
    result["float_max_error"] = float(np.abs(ours - onnx_scores).max() / max(1.0, np.abs(onnx_scores).max()))
    result["float_same_classes"] = bool((ours.argmax(1) == onnx_scores.argmax(1)).all())
    for observer in OBSERVERS:
        calibrate(net, calibration, observer)
        result[f"ptq_{observer}"] = net.quantize().score(x_test, y_test)
    calibrate(net, calibration, "minmax")
    config = net.config.replace_many(
        {
            "training.epochs": 1,
            "training.float_epochs": 0,
            "training.learning_rate": FINE_TUNE_RATE,
            "training.seed": seed,
        }  # fmt: skip
    )
    began = time.perf_counter()
    tuned = qmtik.Network(config).fit(x, y, init=net.layers_)
    result["fine_tune_seconds"] = time.perf_counter() - began
    result["fine_tuned"] = tuned.score(x_test, y_test)
    result["fine_tune_rate"] = FINE_TUNE_RATE
    return result


def table(runs: list, dataset: str) -> str:
    columns = ["float", "torch_ptq", *(f"ptq_{o}" for o in OBSERVERS), "fine_tuned"]
    titles = ["float (PyTorch)", "PyTorch PTQ", "qmtik PTQ minmax", "qmtik PTQ percentile", "qmtik PTQ mse",
              "qmtik PTQ + 1 epoch QAT"]  # fmt: skip
    lines = [f"{dataset} test accuracy (%), median over seeds; per-seed values in brackets", "",
             "| model | seeds | " + " | ".join(titles) + " |", "|" + " --- |" * (len(titles) + 2)]  # fmt: skip
    for kind in ("mlp", "cnn"):
        mine = [r for r in runs if r["model"] == kind]
        if not mine:
            continue
        cells = []
        for column in columns:
            values = [100 * r[column] for r in mine]
            cells.append(f"{statistics.median(values):.2f} [{', '.join(f'{v:.2f}' for v in values)}]")
        lines.append(f"| {kind} | {len(mine)} | " + " | ".join(cells) + " |")
    worst = max((r["float_max_error"] for r in runs), default=0.0)
    same = all(r["float_same_classes"] for r in runs)
    lines += ["", f"import vs onnxruntime: largest float error {worst:.2e} x max(1, max|y|); classes equal: {same}; "
              f"fine-tuning: Adam, learning rate {FINE_TUNE_RATE:g}"]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="digits, one seed, one float epoch")
    parser.add_argument("--out", type=Path, default=HERE / "import_runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    settings = {"dataset": "fashion-mnist", "float_epochs": FLOAT_EPOCHS, "calibration": CALIBRATION,
                "threads": args.threads}  # fmt: skip
    if args.quick:
        settings.update(dataset="digits", float_epochs=1, calibration=200)
        args.seeds = args.seeds[:1]
    runs = []
    for kind in args.models:
        for seed in args.seeds:
            path = args.out / f"{settings['dataset']}-{kind}-seed{seed}.json"
            if path.exists():
                runs.append(json.loads(path.read_text()))
                continue
            log(f"{kind} seed {seed}: running")
            result = run_one(kind, seed, settings)
            args.out.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(json.dumps(result, indent=1))
            os.replace(path.with_suffix(".tmp"), path)
            log(f"{kind} seed {seed}: {json.dumps(result)}")
            runs.append(result)
    print(table(runs, settings["dataset"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
