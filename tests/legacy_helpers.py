"""Headers and models shared by the tests of qmtik.legacy (test_legacy_*.py)."""

from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).parent / "data" / "qmtik-h-example"  # MIT, shinymonitor/qmtik 743f3d9

MNIST_HEADER = """#define QMTIK_I 784
#define QMTIK_H 256
#define QMTIK_L 2
#define QMTIK_O 10
#define QMTIK_LEAKY_RELU_ACTV
#define QMTIK_SOFT_MAX_PP
#define QMTIK_CROSS_ENTROPY_COST
#define QMTIK_A_SCALE 0.25f
#define QMTIK_W_SCALE 0.02f
#define QMTIK_EPOCHS 8
#define QMTIK_BATCH_SIZE 32
#define QMTIK_ALPHA 0.001f
#define QMTIK_BETA1 0.9f
#define QMTIK_BETA2 0.999f
#define QMTIK_EPS 1e-8f
#define QMTIK_TRAIN_DEBUG
"""


def header(tmp_path, text, name="qmtik_config.h"):
    path = tmp_path / name
    path.write_text(text)
    return path


def small_header(tmp_path, act="RELU", out="SOFT_MAX", i=5, h=3, layers=1, o=4, w=0.05, a=0.125):
    return header(
        tmp_path,
        f"#define QMTIK_I {i}\n#define QMTIK_H {h}\n#define QMTIK_L {layers}\n"
        f"#define QMTIK_O {o}\n#define QMTIK_W_SCALE {w!r}f\n#define QMTIK_A_SCALE {a!r}f\n"
        f"#define QMTIK_{act}_ACTV\n#define QMTIK_{out}_PP\n#define QMTIK_MSE_COST\n",
    )


def random_layers(widths, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(-128, 128, (n_out, n_in)).astype(np.int8), rng.integers(-128, 128, n_out).astype(np.int8))
        for n_in, n_out in zip(widths[:-1], widths[1:])
    ]


def one_line(capsys, argv, code: int) -> str:
    """main(argv) exits with code and writes exactly one line, the error, to stderr."""
    from qmtik.cli import main

    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qmtik: error: ") and "Traceback" not in err, err
    return err.strip()
