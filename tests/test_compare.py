"""The per-layer report of what quantization costs: SQNR in dB against hand-checked values, one row
per layer, the share clipped, float against int8 accuracy, and its plot."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the float networks here are imported from ONNX (the [onnx] extra)")

from qmtik.calibrate import calibrate  # noqa: E402
from qmtik.compare import INFINITE_DB, compare, plot_comparison, report_lines, sqnr_db  # noqa: E402
from qmtik.onnx_import import import_onnx  # noqa: E402

DATA = Path(__file__).parent / "data"


def test_sqnr_of_known_signals():
    signal = np.array([3.0, 4.0])  # power 25
    assert sqnr_db(signal, signal + np.array([0.5, 0.0])) == pytest.approx(10 * np.log10(25 / 0.25))  # 20 dB
    assert sqnr_db(signal, signal) == INFINITE_DB


@pytest.fixture
def calibrated():
    net = import_onnx(DATA / "onnx_cnn.onnx", (0, 1))
    x = np.random.default_rng(0).uniform(0, 1, (300, 84)).astype(np.float32)
    calibrate(net, x[:100])
    return net, x


def test_compare_gives_a_row_per_layer_and_the_accuracies(calibrated):
    net, x = calibrated
    y = np.random.default_rng(1).integers(0, 5, len(x))
    rows, summary = compare(net, x, y)
    assert [r["layer"] for r in rows] == [
        "1 conv2d relu",
        "2 max_pool",
        "3 depthwise_conv2d tanh",
        "4 global_avg_pool",
        "5 dense linear",
    ]
    assert all(15 < r["sqnr_db"] < INFINITE_DB for r in rows)  # int8 is some 20 to 50 dB from float
    assert all(0 <= r["clipped"] < 0.05 for r in rows)
    model = net.quantize()
    assert summary["int8"] == pytest.approx(float(np.mean(model.predict_index(x) == y)))
    assert summary["metric"] == "accuracy" and summary["samples"] == 300
    lines = report_lines(rows, summary)
    assert lines[0].split() == ["layer", "SQNR", "(dB)", "clipped"] and lines[-1].startswith("accuracy on 300 samples")


def test_a_narrow_range_shows_as_clipping(calibrated):
    net, x = calibrated
    first = net.layers_[0]
    first.observed = first.observed * np.array([1.0, 0.25])  # a quarter of the range: the top clips
    rows, _ = compare(net, x)
    assert rows[0]["clipped"] > 0.01


def test_the_comparison_draws(calibrated, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs the [plot] extra")
    net, x = calibrated
    rows, summary = compare(net, x, np.zeros(len(x), np.int64))
    plot_comparison(rows, summary, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figures_do_not_depend_on_the_chunks(calibrated, monkeypatch):
    import qmtik.compare

    net, x = calibrated
    y = np.random.default_rng(2).integers(0, 5, len(x))
    whole = compare(net, x, y)
    monkeypatch.setattr(qmtik.compare, "CHUNK", 7)
    rows, summary = compare(net, x, y)
    assert summary == whole[1]
    for a, b in zip(rows, whole[0]):
        assert a["layer"] == b["layer"] and a["clipped"] == b["clipped"]
        assert a["sqnr_db"] == pytest.approx(b["sqnr_db"], rel=1e-9)
