"""A model's header on each Cortex-M target: mismatches, instructions per inference, flash, RAM, stack.

    python benchmarks/targets.py MODEL.qmt                  # Fashion-MNIST's first 200 test images
    python benchmarks/targets.py MODEL.qmt --data DATA --samples 50 --targets cortex-m0 cortex-m4
    python benchmarks/targets.py MODEL.qmt --json runs.jsonl

For each target the header is cross-compiled (arm-none-eabi-gcc -Os, our harness, start-up and
linker script) and run in unicorn on the samples' int8 codes, which counts every instruction of
the first --counted inferences exactly (the call included); then, where qemu has a board for the
core (mps2-an386, -an500, -an505), the same ELF runs there too and its outputs are compared as
well. Beside the measured flash and RAM: qmtik's estimate from the topology (budget.py). One JSON
line per run goes to --json as each finishes; the markdown table to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

NAMES = ("cortex-m0", "cortex-m4", "cortex-m33", "cortex-m7")


def run(model, x, target: str, emulator: str, counted: int) -> dict:
    """One emulated check with its estimate and its wall time."""
    from qmtik.budget import estimate
    from qmtik.emulate import check

    start = time.perf_counter()
    result = check(model, x, target, emulator, counted=counted, timeout=3600)
    guess = estimate(model, target)
    return {
        **result,
        "seconds": round(time.perf_counter() - start, 2),
        "estimate": {key: guess[key] for key in ("flash", "code", "constants", "ram", "arena", "stack")},
    }


def row(run: dict) -> str:
    """One line of the markdown table."""
    counts = run["instructions"]
    instructions = f"{counts[1]:,} ({counts[0]:,} to {counts[2]:,}, {run['counted']} counted)" if counts else "-"
    guess = run["estimate"]
    return (
        f"| {run['target']} | {run['emulator']} | {run['samples']} | {run['mismatched_samples']} | {instructions} | "
        f"{run['flash']:,} ({run['code']:,} + {run['constants']:,}) | {run['ram']:,} ({run['scratch']:,} + "
        f"{run['stack']:,}) | {guess['flash']:,} / {guess['ram']:,} |"
    )


HEADER = [
    "| target | emulator | samples | mismatched | instructions per inference, median (range) | flash: code + "
    "constants | RAM: scratch + stack | estimated flash / RAM |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .qmt model or a training checkpoint")
    parser.add_argument("--data", default="fashion-mnist", help="inputs, as qmtik eval's DATA (default fashion-mnist)")
    parser.add_argument("--samples", type=int, default=200, help="the first N samples of DATA (default 200)")
    parser.add_argument("--counted", type=int, default=16, help="inferences whose instructions are counted")
    parser.add_argument("--targets", nargs="+", default=list(NAMES), choices=NAMES)
    parser.add_argument("--no-qemu", action="store_true", help="unicorn only")
    parser.add_argument("--json", help="append one JSON line per run to this file")
    args = parser.parse_args(argv)

    from qmtik import workflow
    from qmtik.emulate import problem
    from qmtik.targets import TARGETS

    model = workflow.load_integer_model(args.model)
    x = workflow.load_inputs(args.data, model)[0][: args.samples]
    runs = []
    for target in args.targets:
        emulators = ["unicorn"] + ([] if args.no_qemu or TARGETS[target].qemu_machine is None else ["qemu"])
        for emulator in emulators:
            why = problem(target, emulator)
            if why:
                print(f"{target} ({emulator}): skipped, {why}", file=sys.stderr)
                continue
            runs.append(run(model, x, target, emulator, args.counted))
            print(f"{target} ({emulator}): {runs[-1]['seconds']} s", file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as out:
                    out.write(json.dumps(runs[-1]) + "\n")
    print("\n".join([*HEADER, *(row(r) for r in runs)]))
    return 1 if any(r["mismatched_samples"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
