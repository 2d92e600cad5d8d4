"""How long the float convolution passes take on a training batch (a speed check, not a test).

    python benchmarks/conv_ops_speed.py [--repeats 20]

Times conv_ops.conv2d_forward + conv2d_backward in float32 for a batch of 128, the two
convolutions of a small MNIST-sized CNN, and prints a table of the median milliseconds of the
forward, the backward and of im2col alone. BLAS threads are numpy's default; on a small or
busy machine OPENBLAS_NUM_THREADS=1 gives steadier (and there, faster) figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    import qmtik  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from qmtik import conv_ops, spatial  # noqa: E402  (after the checkout fallback)

CASES = [  # (name, input (h, w, c), kernel, output channels, stride, padding)
    ("28x28x1 -> 3x3x16 same", (28, 28, 1), 3, 16, 1, "same"),
    ("14x14x16 -> 3x3x32 same", (14, 14, 16), 3, 32, 1, "same"),
]
BATCH = 128


def median_ms(call, repeats: int) -> float:
    """The median wall time of call() in milliseconds, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(shape, kernel, out_c, stride, padding, repeats: int) -> tuple[float, float, float]:
    """(im2col, forward, backward) median milliseconds of one case."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *shape), dtype=np.float32)
    w = (rng.standard_normal((out_c, kernel, kernel, shape[2])) * 0.1).astype(np.float32)
    b = np.zeros(out_c, np.float32)
    geo = spatial.geometry(shape[:2], kernel, stride, padding)
    y, cache = conv_ops.conv2d_forward(x, w, b, stride, padding)
    grad = rng.standard_normal(y.shape, dtype=np.float32)
    return (
        median_ms(lambda: spatial.im2col(x, geo), repeats),
        median_ms(lambda: conv_ops.conv2d_forward(x, w, b, stride, padding), repeats),
        median_ms(lambda: conv_ops.conv2d_backward(grad, cache), repeats),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"conv2d, float32, batch {BATCH}, numpy {np.__version__}, BLAS threads {threads}, median of {args.repeats}")
    print(f"| {'case':<26} | im2col ms | forward ms | backward ms | total ms |")
    print(f"| {'-' * 26} | --------- | ---------- | ----------- | -------- |")
    for name, shape, kernel, out_c, stride, padding in CASES:
        cols, forward, backward = measure(shape, kernel, out_c, stride, padding, args.repeats)
        print(f"| {name:<26} | {cols:9.2f} | {forward:10.2f} | {backward:11.2f} | {forward + backward:8.2f} |")


if __name__ == "__main__":
    main()
