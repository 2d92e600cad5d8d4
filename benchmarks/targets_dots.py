"""Instructions per multiply-accumulate of the header's kernels on emulated Cortex-M cores, its
self-test's cost, and a plain float32 C reference, all counted exactly in unicorn.

    python benchmarks/targets_dots.py                  # the Fashion-MNIST 784-256-256-10 shape
    python benchmarks/targets_dots.py --json dots.json

Dense: the 784-256-256-10 model (268,800 MACs; random codes laid out as the quantizer lays
them out: the instruction count hardly depends on them), arm-none-eabi-gcc -O2, each target's
own path (SMLAD on M4/M7/M33, the ARMv6-M loop on M0) and the portable one
(-DPREFIX_PORTABLE_DOTS), per inference and per MAC. Convolution: benchmarks/cnn.py's "main"
network (its convolutions run the portable loops). Self-test: its instructions and its flash
bytes (selftest_emulate.cost). Float32: the same dense network in plain float32 C on the M4's
FPU (-mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2). Instructions are not cycles: see docs/c-api.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from string import Template

import numpy as np

try:
    import qmtik  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TARGETS = ("cortex-m0", "cortex-m4", "cortex-m7", "cortex-m33")
MACS = 784 * 256 + 256 * 256 + 256 * 10


def fashion_model(seed: int = 1):
    """A 784-256-256-10 relu model with random codes, as tests/test_export_c.build makes one."""
    from qmtik import intref
    from qmtik import quantization as q
    from qmtik.integer_model import QuantizedModel

    rng, layers, scale, zero = np.random.default_rng(seed), [], q.INPUT_SCALE, q.INPUT_ZERO
    widths = (784, 256, 256, 10)
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        kind = "linear" if i == 2 else "relu"
        weight = rng.integers(-127, 128, (fan_out, fan_in)).astype(np.int8)
        w_scale = rng.uniform(0.5, 2, fan_out) / np.sqrt(fan_in) / 127
        observed = np.array([-3.0, 4.0]) if kind != "relu" else np.array([0.0, 4.0])
        out_scale, out_zero, pre = q.output_quantization(kind, observed, None)
        bias = rng.integers(-20000, 20000, fan_out)
        layers.append(intref.build_layer(weight, bias, w_scale, scale, zero, kind, out_scale, out_zero, pre, 0.1))
        scale, zero = out_scale, out_zero
    return QuantizedModel("classification", "softmax", (0.0, 1.0), layers)


def cnn_model():
    """benchmarks/cnn.py's "main" network (conv 32, pool, conv 64, pool, flatten, dense 10) after
    one epoch on random 28x28 images: its instruction count depends on the shapes."""
    import cnn  # beside this file
    import qmtik

    config = cnn.config_for({"dataset": "fashion-mnist", "epochs": 1}, "main", "int8", 0)
    config = config.replace_many({"training.validation_split": 0, "data.input_range": [0, 1]})
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (64, 784)).astype(np.float32), rng.integers(0, 10, 64)
    return qmtik.Network(config).fit(x, y).quantize()


def macs_of(model) -> dict:
    """Multiply-accumulates per inference by layer kind (dense, conv2d, depthwise_conv2d)."""
    out = {}
    for layer in model.layers:
        if hasattr(layer, "weights"):
            positions = int(np.prod(layer.output_shape[:2])) if layer.kind != "dense" else 1
            out[layer.kind] = out.get(layer.kind, 0) + positions * layer.weights.size
    return out


def int8_run(model, target: str, portable: bool, codes, optimize: str = "-O2") -> dict:
    """Instructions per inference (median of the samples) of the header on target, its flash."""
    from qmtik.emulate import check

    extra = ["-DNET_PORTABLE_DOTS"] if portable else []
    got = check(model, target_name=target, codes=codes, optimize=optimize, counted=len(codes), extra=extra)
    return {
        "mismatched": got["mismatched_samples"],
        "instructions": got["instructions"][1],
        "code": got["code"],
        "flash": got["flash"],
    }


def float_run(model, codes) -> dict:
    """The float32 reference's instructions per inference on the M4 with its FPU."""
    from qmtik.cross import CC, Build, symbols
    from qmtik.emulate import run_unicorn
    from qmtik.targets import TARGETS as T

    target = T["cortex-m4"]
    values = {}
    for k, layer in enumerate(model.layers):
        weights = layer.weights.astype(np.float32) * np.float32(0.01)
        values[f"w{k}"] = ",".join(f"{v:.6e}f" for v in weights.reshape(-1))
        values[f"b{k}"] = ",".join(f"{v:.6e}f" for v in (layer.bias * 1e-4).astype(np.float32))
    values["x"] = ",".join(f"{(int(c) + 128) / 255:.6e}f" for c in codes[0])
    folder = Path(tempfile.mkdtemp())
    here = Path(__file__).parent
    (folder / "ref.c").write_text(Template((here / "float_reference.c.in").read_text()).substitute(values))
    root = Path(__file__).resolve().parents[1] / "src" / "qmtik" / "templates"
    (folder / "startup.c").write_text((root / "startup.c.in").read_text())
    link = Template((root / "link.ld.in").read_text()).substitute(
        flash_origin=hex(target.flash[0]),
        flash_length=hex(target.flash[1]),
        ram_origin=hex(target.ram[0]),
        ram_length=hex(target.ram[1]),
        stack=16384,
    )
    (folder / "link.ld").write_text(link)
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-ffunction-sections"]
    flags += ["-fdata-sections", "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]
    subprocess.run([CC, *flags, "-T", "link.ld", "ref.c", "startup.c", "-o", "ref.elf"], cwd=folder, check=True)
    built = Build(folder / "ref.elf", symbols(folder / "ref.elf"), 1, 10, "qm")
    got = run_unicorn(built, target, 600.0, counted=None)
    marks = got["marks"]["qm_mark"]
    return {"instructions": int(marks[1] - marks[0])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="inputs per run (instructions: their median)")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--no-cnn", action="store_true", help="leave out the convolutional network")
    args = parser.parse_args(argv)

    from qmtik import selftest_emulate
    from qmtik.emulate import problem

    model, rng = fashion_model(), np.random.default_rng(0)
    codes = rng.integers(-128, 128, (args.samples, 784)).astype(np.int8)
    rows, figures = [], {"macs": MACS, "targets": {}}
    for target in TARGETS:
        why = problem(target)
        if why:
            print(f"{target}: skipped, {why}", file=sys.stderr)
            continue
        fast, plain = int8_run(model, target, False, codes), int8_run(model, target, True, codes)
        st = selftest_emulate.run(model, target, optimize="-O2")
        cost = {o: selftest_emulate.cost(model, target, o) for o in ("-Os", "-O2")}
        figures["targets"][target] = {"fast": fast, "portable": plain, "selftest": st, "selftest_flash": cost}
        rows.append(
            f"| {target} | {fast['instructions']:,} | {fast['instructions'] / MACS:.3f} | "
            f"{plain['instructions']:,} | {plain['instructions'] / MACS:.3f} | {fast['mismatched']} + "
            f"{plain['mismatched']} | {st['instructions'][0]:,} | {cost['-Os']['own']} / {cost['-O2']['own']} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    cnn_rows = []
    if not args.no_cnn:
        cnn = cnn_model()
        macs = macs_of(cnn)
        figures["cnn"] = {"macs": macs}
        for target in ("cortex-m0", "cortex-m4"):
            if problem(target):
                continue
            got = int8_run(cnn, target, False, codes[:1])
            small = int8_run(cnn, target, False, codes[:1], "-Os")
            cost = selftest_emulate.cost(cnn, target, "-Os")
            figures["cnn"][target] = {"-O2": got, "-Os": small, "selftest_flash": cost}
            cnn_rows.append(
                f"| {target} | {got['instructions']:,} | {got['instructions'] / sum(macs.values()):.3f} | "
                f"{got['mismatched']} | {small['flash']:,} | {small['flash'] + cost['image']:,} |"
            )
    if not problem("cortex-m4"):
        figures["float32_m4"] = float_run(model, codes)
    print(
        "| target | int8 instructions per inference (own path) | per MAC | portable path | per MAC | "
        "mismatched samples | self-test instructions | self-test flash bytes -Os / -O2 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    if cnn_rows:
        macs = figures["cnn"]["macs"]
        print(f"\nbenchmarks/cnn.py's main network ({', '.join(f'{k} {v:,}' for k, v in macs.items())} MACs; its ")
        print("convolutions run the portable loops, its dense layer the target's own):\n")
        print("| target | instructions (-O2) | per MAC | mismatched | flash -Os | flash -Os with self-test |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("\n".join(cnn_rows))
    if "float32_m4" in figures:
        n = figures["float32_m4"]["instructions"]
        print(f"\nfloat32 reference on cortex-m4 (FPU, -O2): {n:,} instructions per inference ({n / MACS:.3f} per MAC)")
        if "cortex-m4" in figures["targets"]:
            fast = figures["targets"]["cortex-m4"]
            print(
                f"int8 header on cortex-m4: {n / fast['fast']['instructions']:.2f}x fewer instructions (SMLAD), "
                f"{n / fast['portable']['instructions']:.2f}x (portable)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 1 if any(t["fast"]["mismatched"] or t["portable"]["mismatched"] for t in figures["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
