"""How often qmtik's integer rounding and the C library's float32 arithmetic give different
scores, on the C library's shipped MNIST model (tests/data/qmtik-h-example) and on a model of
our own (docs/migration.md quotes the figures):

    python benchmarks/c_library_ties.py

Inputs: the 1,797 bundled digits, 8x8 pixels 0..16 scaled to 0..255 and enlarged to a 20x20
box in a 28x28 image as MNIST's digits are, then pixel - 128 (the C library's input bytes).
"""

from pathlib import Path

import numpy as np

import qmtik
from qmtik import legacy as c

EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "qmtik-h-example"


def mnist_like(x8: np.ndarray) -> np.ndarray:
    """8x8 digits (0..16) as 28x28 MNIST-like int8 input bytes (pixel - 128)."""
    pixels = (x8.reshape(-1, 8, 8) * 255 / 16).round()
    rows = np.minimum((np.arange(20) * 8) // 20, 7)
    big = np.zeros((len(pixels), 28, 28))
    big[:, 4:24, 4:24] = pixels[:, rows][:, :, rows]
    return (big.reshape(-1, 784) - 128).astype(np.int8)


def differing(c_model, codes) -> tuple:
    """(score rows, classes) where the converted model differs from the C arithmetic, and the
    score rows that differ against the C arithmetic run on the clipped weights (-128 -> -127),
    so that only rounding is left."""
    model = c_model.to_quantized_model()
    scores, c_scores = model.scores(codes), c_model.raw_scores(codes)
    clipped = c.CLibraryModel(c_model.header, [(np.maximum(w, -127).astype(np.int8), b) for w, b in c_model.layers])
    rounding_only = (scores != clipped.raw_scores(codes)).any(axis=1).mean()
    return (scores != c_scores).any(axis=1).mean(), (scores.argmax(1) != c_model.predict(codes)).mean(), rounding_only


def main() -> None:
    (x, y), (xt, yt) = qmtik.load_dataset("digits")
    x8, labels = np.concatenate([x, xt]), np.concatenate([y, yt])
    real = c.load_c_model(EXAMPLE / "mnist_784_model", EXAMPLE / "qmtik_config.h")
    codes = mnist_like(x8)
    rows, classes, rounding = differing(real, codes)
    print(
        f"C library's MNIST model, {len(codes)} MNIST-like digits: "
        f"accuracy {100 * (real.predict(codes) == labels).mean():.1f}%;"
        f" score rows differing {100 * rows:.1f}% (rounding alone {100 * rounding:.1f}%), classes {100 * classes:.2f}%"
    )
    noise = np.random.default_rng(0).integers(-128, 128, (2000, 784)).astype(np.int8)
    rows, classes, rounding = differing(real, noise)
    print(
        f"C library's MNIST model, 2000 random inputs: score rows differing {100 * rows:.1f}% "
        f"(rounding alone {100 * rounding:.1f}%), classes {100 * classes:.2f}%"
    )


if __name__ == "__main__":
    main()
