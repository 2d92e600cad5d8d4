"""qmtik demo: which data set it picks, and the table it ends with."""

from qmtik import demo


def test_offline_the_demo_says_why_and_takes_the_digits(offline_cache):
    said = []
    assert demo.choose_dataset(None, said.append) == "digits"
    assert len(said) == 1 and said[0].startswith("MNIST is not available (")
    assert said[0].endswith("using the bundled 8x8 digits instead")


def test_mnist_in_the_cache_is_the_default(fake_mnist):
    fake_mnist()
    said = []
    assert demo.choose_dataset(None, said.append) == "mnist"
    assert said == []
    assert demo.choose_dataset("digits", said.append) == "digits"  # asked for explicitly


def test_the_demo_network_is_the_c_librarys_headline_example():
    config = demo.demo_config("mnist")
    assert (config.network.inputs, list(config.network.hidden), config.network.outputs) == (784, [256, 256], 10)
    assert tuple(config.data.input_range) == (0.0, 255.0)  # the C library's pixel - 128
    assert demo.demo_config("digits").network.inputs == 64


def test_a_demo_on_cached_mnist_runs_end_to_end(fake_mnist, monkeypatch, tmp_path):
    fake_mnist()
    monkeypatch.setitem(demo.MNIST_SETTINGS, "training.epochs", 1)
    said = []
    figures = demo.run_demo(None, tmp_path / "out", said.append)
    assert figures["dataset"] == "mnist"
    assert figures["paths"]["model"].name == "mnist.qmt" and figures["paths"]["header"].name == "mnist.h"
    assert 0 <= figures["int8_accuracy"] <= 1
    assert figures["float32_bytes"] == 4 * (784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10)
    assert any("| mnist | qmtik |" in line for line in said)


def test_the_table_names_every_figure_beside_the_c_library():
    figures = {
        "dataset": "digits",
        "float_accuracy": 0.97214,
        "int8_accuracy": 0.96657,
        "qmt_bytes": 5792,
        "float32_bytes": 19240,
        "single_us": 21.6,
        "samples_per_second": 45164.2,
        "c_check": {
            "samples": 359,
            "score_mismatches": 0,
            "class_mismatches": 0,
            "input_mismatches": 0,
            "mismatched_samples": 0,
            "sanitized": False,
        },
        "flash": 5952,
        "ram": 184,
    }
    table = demo.summary_table(figures)
    assert "| test accuracy, float | 97.21% |  |" in table
    assert "| test accuracy, int8 | 96.66% | about 90% (MNIST) |" in table
    assert "| model file (.qmt) | 5,792 B (30% of float32's 19,240 B) | 300 KB |" in table
    assert "| inference, Python, one sample | 22 µs | 0.5 ms |" in table
    assert "| C header agrees with Python | 359 of 359 test samples byte for byte |  |" in table
    assert "| flash / RAM the header needs | 5,952 B / 184 B (local compiler, -Os) |  |" in table
    figures.update(c_check=None, flash=None, ram=None)
    table = demo.summary_table(figures)
    assert "not compiled (no C compiler)" in table and "unknown (no C compiler)" in table


def test_a_data_set_asked_for_by_name_is_fetched_or_its_failure_reported(offline_cache):
    import pytest

    from qmtik import DownloadError

    with pytest.raises(DownloadError, match="cannot download"):
        demo.choose_dataset("mnist", print)
    assert demo.choose_dataset("digits", print) == "digits"
