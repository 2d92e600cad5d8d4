"""The budget-aware search on Fashion-MNIST: the best int8 network within a budget, found in N trials.

    python benchmarks/tune.py --parts mlp          # MLPs only, 32 KiB flash and 16 KiB RAM, 30 trials
    python benchmarks/tune.py --parts cnn          # convolutions allowed, 64 KiB flash and 16 KiB RAM
    python benchmarks/tune.py --parts mlp2         # the MLP search again with two workers on one study
    python benchmarks/tune.py --parts cnn2         # the CNN search again with two workers on one study
    python benchmarks/tune.py --quick              # digits, 4 trials: seconds

Each part runs `qmtik tune` in worker processes (one BLAS thread each) on a SQLite study in
--out, then trains the winner fully (the config's 10 epochs on all the training data) and
scores its integer model on the test set. Each part is one JSON file in --out
(benchmarks/tune_runs/ by default), written when the search ends and again with the winner; a
part whose file exists is not searched again (only its winner is trained, if it has none yet),
and an interrupted search goes on from its study (--resume). The table compares the winners with the
hand-designed CNN of benchmarks/cnn.py ("main"), whose flash and RAM budget.estimate gives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CNN_MAIN = {"accuracy": 0.9197, "source": "benchmarks/cnn.py 'main', int8 median of 3 seeds (README)"}
BASE = {
    "task": "classification",
    "network": {"input_shape": [28, 28, 1], "outputs": 10},
    "training": {"epochs": 10, "batch_size": 128},
    "data": {"dataset": "fashion-mnist", "input_range": [0, 255]},
}
MLP_SPACE = {"widths": [8, 16, 24, 32, 48, 64, 96, 128], "depth": [1, 3], "conv_layers": [0, 0]}
CNN_SPACE = {
    "widths": [16, 32, 64, 128],
    "depth": [0, 2],
    "conv_layers": [0, 2],
    "channels": [4, 8, 16, 32],
    "kernel_sizes": [3, 5],
}
TRIAL = {"trial_samples": 15000, "trial_epochs": [3], "batch_size": [64, 128], "learning_rate": [0.0005, 0.01]}
PARTS = {  # name -> (space, flash, RAM, workers)
    "mlp": (MLP_SPACE, 32 * 1024, 16 * 1024, 1),
    "cnn": (CNN_SPACE, 64 * 1024, 16 * 1024, 1),
    "mlp2": (MLP_SPACE, 32 * 1024, 16 * 1024, 2),
    "cnn2": (CNN_SPACE, 64 * 1024, 16 * 1024, 2),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_config(path: Path, space: dict, quick: bool) -> None:
    from qmtik.config_docs import toml_value

    base = json.loads(json.dumps(BASE))
    tune = {**TRIAL, **space}
    if quick:
        base["network"] = {"inputs": 64, "outputs": 10}
        base["data"] = {"dataset": "digits"}
        base["training"]["epochs"] = 3
        tune |= {"trial_samples": 1000, "trial_epochs": [1], "conv_layers": [0, 0]}
    lines = [f"task = {toml_value(base.pop('task'))}"]
    for section, values in [*base.items(), ("tune", tune)]:
        lines += ["", f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


def search(out: Path, name: str, trials: int, quick: bool) -> dict:
    """Run the part's workers to the end; wall time and the study's records."""
    import optuna

    from qmtik import tune_front

    space, flash, ram, workers = PARTS[name]
    config = out / f"{name}.toml"
    write_config(config, space, quick)
    study_file = out / f"{name}.tune.db"
    command = [sys.executable, "-m", "qmtik", "tune", str(config), "--trials", str(trials)]
    command += ["--max-flash", str(flash), "--max-ram", str(ram), "--target", "cortex-m4", "-q", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    started = time.monotonic()
    procs = []
    for worker in range(workers):
        resume = study_file.exists()
        procs.append(subprocess.Popen(command + (["--resume"] if resume else []), env=env, stdout=subprocess.PIPE))
        if worker + 1 < workers:
            wait_for_study(study_file, name)  # the next worker resumes it instead of racing to create it
    outputs = [p.communicate()[0].decode() for p in procs]
    seconds = time.monotonic() - started
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed: {outputs}")
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_file}")
    study = optuna.load_study(study_name=name, storage=storage)
    records = [tune_front.record(t) for t in study.get_trials()]
    return {"seconds": seconds, "records": records, "workers": workers, "command": " ".join(command)}


def wait_for_study(study_file: Path, name: str, seconds: float = 120.0) -> None:
    """Return once the first worker has created the study in study_file. The file is read with
    sqlite3, read-only: opening it with Optuna would create the tables, racing the worker."""
    import sqlite3
    from contextlib import closing

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with closing(sqlite3.connect(f"file:{study_file}?mode=ro", uri=True)) as db:
                if db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone():
                    return
        except sqlite3.Error:  # no file, or no tables yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the first worker did not create study {name!r} in {study_file} within {seconds:.0f} s")


def winner(out: Path, name: str, records: list) -> dict:
    """The best trial's config trained fully, its integer model scored on the test set."""
    from qmtik import tune_front, workflow
    from qmtik.budget import estimate
    from qmtik.config import load_config

    best = tune_front.best(records)
    path = out / f"{name}.best.toml"
    tune_front.write_best(path, best, name)
    config = load_config(path)
    started = time.monotonic()
    run = workflow.train(config, out / f"{name}.best.ckpt.npz")
    sizes = estimate(run.network.quantize(), "cortex-m4")
    return {
        "trial": best["number"],
        "network": best["network"],
        "val_accuracy_trial": best["accuracy"],
        "test_accuracy_int8": run.test["accuracy"],
        "flash": sizes["flash"],
        "ram": sizes["ram"],
        "train_seconds": time.monotonic() - started,
    }


def run_part(out: Path, name: str, trials: int, quick: bool, fresh: bool, search_only: bool = False) -> dict:
    """The part's JSON: its search's figures, written as soon as the search ends, then its winner
    trained fully. A part whose winner is missing (--search-only, or a run stopped in the
    winner's training) goes on with the winner, keeping the search's wall time."""
    path = out / f"{name}.json"
    if path.exists() and not fresh:
        result = json.loads(path.read_text())
    else:
        result = search_figures(out, name, trials, quick) | {"winner": None}
        path.write_text(json.dumps(result, indent=1) + "\n")
    if result["winner"] is None and not search_only:
        log(f"{name}: training the winner fully")
        result["winner"] = winner(out, name, result["records"])
        path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def search_figures(out: Path, name: str, trials: int, quick: bool) -> dict:
    """Run the part's search; its wall time, rate, rejected share, front and trial records."""
    from qmtik import tune_front

    log(f"{name}: searching ({trials} trials, {PARTS[name][3]} worker(s))")
    found = search(out, name, trials, quick)
    counts = tune_front.counts(found["records"])
    trained = counts["complete"] + counts["pruned"]
    best = tune_front.best(found["records"])
    return {
        "part": name,
        "trials": trials,
        "budget": {"flash": PARTS[name][1], "ram": PARTS[name][2], "target": "cortex-m4"},
        "workers": found["workers"],
        "command": found["command"],
        "search_seconds": round(found["seconds"], 1),
        "trials_per_hour": round(3600 * trained / found["seconds"], 1),
        "counts": counts,
        "rejected_share": round(counts["rejected"] / max(1, counts["rejected"] + trained), 3),
        "front": [
            {k: r[k] for k in ("number", "accuracy", "flash", "ram", "network")}
            for r in tune_front.front(found["records"])
        ],
        "best_trial": {k: best[k] for k in ("number", "accuracy", "flash", "ram", "network")},
        "records": found["records"],
    }


def cnn_main_sizes() -> dict:
    import qmtik
    from qmtik.budget import estimate

    figures = estimate(qmtik.load_config(HERE.parent / "examples" / "fashion_cnn_flat.toml"), "cortex-m4")
    return {"flash": figures["flash"], "ram": figures["ram"]}


def table(results: list) -> str:
    main = cnn_main_sizes()
    lines = [
        "| search | budget (flash / RAM) | workers | trials/h | rejected before training | search time | "
        "winner | flash / RAM | int8 test accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        w = r["winner"] or r["best_trial"]
        score = (
            f"{100 * w['test_accuracy_int8']:.2f}%"
            if r["winner"]
            else f"not trained fully (trial: {100 * w['accuracy']:.2f}% val)"
        )
        lines.append(
            f"| {r['part']} | {r['budget']['flash'] // 1024} / {r['budget']['ram'] // 1024} KiB | {r['workers']} | "
            f"{r['trials_per_hour']} | {100 * r['rejected_share']:.0f}% | {r['search_seconds'] / 60:.1f} min | "
            f"{w['network']} | {w['flash']:,} / {w['ram']:,} B | {score} |"
        )
    lines.append(
        f"| hand-designed CNN (cnn.py main) | - | - | - | - | - | conv32-pool-conv64-pool-flatten-10 | "
        f"{main['flash']:,} / {main['ram']:,} B | {100 * CNN_MAIN['accuracy']:.2f}% |"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="mlp,cnn,mlp2", help="comma-separated: " + ", ".join(PARTS))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "tune_runs")
    parser.add_argument("--quick", action="store_true", help="digits, 4 trials, MLPs only")
    parser.add_argument("--fresh", action="store_true", help="run every part again")
    parser.add_argument("--search-only", action="store_true", help="leave the winners untrained (the trials' figures)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    trials = 4 if args.quick else args.trials
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_part(args.out, part, trials, args.quick, args.fresh, args.search_only) for part in parts]
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
