"""Plots: the numbers behind them exactly, then the pictures: valid images that show something,
written atomically, and one clear error without matplotlib or with an unknown suffix."""

import importlib
import struct
import sys

import numpy as np
import pytest

import qmtik
from qmtik import Config, PlotError, QuantizedModel, TrainingConfig, intref, plots
from qmtik.errors import DataError
from qmtik.output_files import OutputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hand_model():
    """2-2-1, relu then linear, requantization by exactly 1, inputs 0..255 so code = x - 128."""

    def layer(weight, activation, out_zero):
        weight = np.array(weight, dtype=np.int8)
        rows = len(weight)
        return intref.build_layer(
            weight, np.zeros(rows, dtype=np.int64), np.ones(rows), 1.0, -128, activation, 1.0, out_zero
        )

    return QuantizedModel(
        "regression", "linear", (0, 255), [layer([[127, 0], [0, -1]], "relu", -128), layer([[2, 1]], "linear", 0)]
    )


HAND_X = np.array([[128, 128], [129, 0], [255, 255]])  # codes [0, 0], [1, -128], [127, 127]


@pytest.fixture(scope="module")
def trained(digits):
    """A small network trained a few epochs, one of them in float, and its integer model."""
    (x, y), _ = digits
    config = Config(training=TrainingConfig(epochs=3, float_epochs=1, batch_size=32, learning_rate=0.003))
    net = qmtik.Network(config.replace("network.hidden", [16])).fit(x, y)
    return net, net.quantize()


def png_size(path) -> tuple[int, int]:
    """Check the PNG signature and IHDR chunk; return (width, height)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def pixels(path):
    """The image as (height, width, 3) bytes, checked against the IHDR size."""
    from matplotlib.image import imread

    width, height = png_size(path)
    assert 300 <= width <= 3000 and 300 <= height <= 3000
    image = imread(path)
    assert image.shape[:2] == (height, width)
    return (image[..., :3] * 255).round().astype(np.uint8)


def colour_share(image, rgb, tolerance=30) -> float:
    """The share of pixels within tolerance of the colour rgb."""
    return float((np.abs(image.astype(int) - rgb).max(axis=-1) <= tolerance).mean())


def has_colour(image, rgb, tolerance=30) -> bool:
    return colour_share(image, rgb, tolerance) > 0


def assert_drawn(image):
    """Not one colour: a white background, black text, and many shades between."""
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    assert has_colour(image, (255, 255, 255), 0) and has_colour(image, (0, 0, 0), 40)


# --- the numbers -------------------------------------------------------------------------------


def test_layer_statistics_of_a_hand_made_model():
    first, second = plots.layer_statistics(hand_model(), HAND_X)
    np.testing.assert_array_equal(first["weight_codes"], [127, 0, 0, -1])
    assert first["weight_clipped"] == 1 / 4 and second["weight_clipped"] == 0.0
    # relu: acc [0, 0], [127, 128], [16129, -127]; plus the zero point -128, clamped
    np.testing.assert_array_equal(first["output_codes"], [-128, -128, -1, 0, 127, -128])
    assert (first["output_low"], first["output_high"], first["output_clipped"]) == (3 / 6, 1 / 6, 1 / 6)
    # linear: 2 a + b of the relu codes: -384, -2, 126
    np.testing.assert_array_equal(second["output_codes"], [-128, -2, 126])
    assert (second["output_low"], second["output_high"], second["output_clipped"]) == (1 / 3, 0.0, 1 / 3)
    assert (first["layer"], first["activation"], first["shape"]) == (1, "relu", (2, 2))


def test_layer_statistics_without_data_have_weights_only():
    stats = plots.layer_statistics(hand_model())
    assert [s["output_codes"] for s in stats] == [None, None]
    assert stats[0]["weight_clipped"] == 1 / 4


def test_layer_statistics_follow_the_models_own_arithmetic(trained, digits):
    _, model = trained
    _, (x, _) = digits
    stats = plots.layer_statistics(model, x)
    last = stats[-1]["output_codes"].reshape(len(x), model.outputs)
    np.testing.assert_array_equal(last, model.scores(model.quantize_inputs(x)))
    for s, layer in zip(stats, model.layers):
        np.testing.assert_array_equal(s["weight_codes"], layer.weights.ravel())
        # automatic per-channel scales put exactly one weight of each channel at +-127
        assert s["weight_clipped"] == layer.weights.shape[0] / layer.weights.size
        assert 0 <= s["output_clipped"] <= s["output_low"] + s["output_high"] <= 1


def test_confusion_matrix_counts_rows_true_columns_predicted():
    counts, names = plots.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert names == ["0", "1", "2"]
    counts, names = plots.confusion_matrix(["cat", "dog"], ["dog", "dog"], ["dog", "cat", "eel"])
    np.testing.assert_array_equal(counts, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert names == ["dog", "cat", "eel"]
    with pytest.raises(DataError, match="3 true labels and 2 predictions"):
        plots.confusion_matrix([0, 1, 2], [0, 1])
    counts, names = plots.confusion_matrix([1, 0, 1], ["dog", "cat", "cat"], ["cat", "dog"])  # predict's names
    np.testing.assert_array_equal(counts, [[1, 0], [1, 1]])
    with pytest.raises(DataError, match=r"labels \['-1', 'owl'\] are neither class indices"):
        plots.confusion_matrix(["cat", -1], ["owl", "cat"], ["cat", "dog"])


# --- the pictures ------------------------------------------------------------------------------


def test_plot_history_draws_two_panels_with_float_epochs_and_the_best(trained, tmp_path):
    net, _ = trained
    path = tmp_path / "history.png"
    plots.plot_history(net.history_, path)
    image = pixels(path)
    width, height = png_size(path)
    assert width > 2 * height  # two panels side by side
    assert_drawn(image)
    assert colour_share(image, (217, 217, 217), 3) > 0.03  # the float epoch, shaded grey
    assert has_colour(image, (214, 39, 40), 20)  # the kept epoch, a red line


def test_plot_history_without_validation_or_float_epochs(tmp_path):
    records = [
        {"epoch": e, "loss": 1 / e, "train_metric": 0.1 * e, "val_loss": None, "val_metric": None, "quantized": True}
        for e in (1, 2, 3)
    ]
    plots.plot_history({"epochs": records, "best_epoch": None}, tmp_path / "h.png", task="regression")
    assert colour_share(pixels(tmp_path / "h.png"), (217, 217, 217), 3) < 0.005
    with pytest.raises(PlotError, match="no epochs"):
        plots.plot_history({"epochs": [], "best_epoch": None}, tmp_path / "empty.png")


def test_plot_confusion(trained, digits, tmp_path):
    _, model = trained
    _, (x, y) = digits
    path = tmp_path / "confusion.png"
    plots.plot_confusion(y, model.predict(x), path)
    image = pixels(path)
    assert_drawn(image)
    assert has_colour(image, (8, 48, 107), 25)  # the darkest blue: a full diagonal cell


def test_plot_layers_with_and_without_data(trained, digits, tmp_path):
    _, model = trained
    _, (x, _) = digits
    plots.plot_layers(model, tmp_path / "weights.png")
    plots.plot_layers(model, tmp_path / "layers.png", x[:100])
    both, weights = pixels(tmp_path / "layers.png"), pixels(tmp_path / "weights.png")
    assert_drawn(both)
    assert has_colour(both, (214, 39, 40), 20)  # the codes at the ends, in red
    assert both.shape[1] > 1.5 * weights.shape[1]  # a second column: the outputs


def test_the_same_plot_gives_the_same_bytes_and_other_formats_work(tmp_path):
    model = hand_model()
    plots.plot_layers(model, tmp_path / "a.png", HAND_X)
    plots.plot_layers(model, tmp_path / "b.png", HAND_X)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    plots.plot_layers(model, tmp_path / "a.svg", HAND_X)
    plots.plot_confusion([0, 1], [1, 1], tmp_path / "c.PDF")
    assert b"<svg" in (tmp_path / "a.svg").read_bytes()[:500]
    assert (tmp_path / "c.PDF").read_bytes()[:5] == b"%PDF-"


# --- failures ----------------------------------------------------------------------------------


def test_without_matplotlib_importing_works_and_plotting_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    module = importlib.reload(plots)
    calls = [
        module.check_plot_path,
        lambda p: module.plot_history({"epochs": [{"epoch": 1, "loss": 1.0, "train_metric": 0.5}]}, p),
        lambda p: module.plot_confusion([0, 1], [0, 1], p),
        lambda p: module.plot_layers(hand_model(), p, HAND_X),
    ]
    for call in calls:
        with pytest.raises(PlotError) as error:
            call(tmp_path / "plot.png")
        assert str(error.value) == "plots need matplotlib: pip install 'qmtik[plot]'"
    assert list(tmp_path.iterdir()) == []


def test_a_suffix_matplotlib_cannot_write_is_refused_by_name(tmp_path):
    for name in ("plot.xyz", "plot"):
        with pytest.raises(PlotError, match=f"plot {tmp_path / name}: suffix .* allowed .*png"):
            plots.plot_confusion([0, 1], [0, 1], tmp_path / name)
        with pytest.raises(PlotError, match=f"plot {tmp_path / name}: suffix"):
            plots.check_plot_path(tmp_path / name)
    assert plots.check_plot_path("a/b.PNG") == "png" and plots.check_plot_path("c.svg") == "svg"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="cannot be written"):
        plots.plot_confusion([0, 1], [0, 1], tmp_path / "missing" / "plot.png")


def test_a_failed_plot_keeps_the_previous_file(monkeypatch, tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"the previous plot")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken)  # failing while rendering
    with pytest.raises(OSError, match="disk full"):
        plots.plot_confusion([0, 1], [0, 1], path)
    monkeypatch.undo()
    monkeypatch.setattr("qmtik.output_files.os.replace", broken)  # failing while writing
    with pytest.raises(OSError, match="disk full"):
        plots.plot_layers(hand_model(), path, HAND_X)
    assert path.read_bytes() == b"the previous plot"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left
