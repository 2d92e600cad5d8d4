"""The commands of models from elsewhere, run in-process: import-onnx, quantize --calibrate and
--compare, info --compare, train --init, export-onnx, and export-c --check of an imported model
(bit-exact with Python, as every header). Refusals are one line on stderr, exit 2."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the ONNX import needs the onnx package (the [onnx] extra)")

import qmtik  # noqa: E402
from qmtik.cli import main  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with data for the MLP fixture (12 raw values in [0, 10], 3 classes it predicts)."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, (400, 12)).astype(np.float32)
    net = qmtik.import_onnx(DATA / "onnx_mlp.onnx", (0, 10))
    from qmtik.onnx_import import float_layers

    y = float_layers(net, x)[-1].argmax(1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return tmp_path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def imported(capsys, *extra):
    code, out, err = run(capsys, "import-onnx", DATA / "onnx_mlp.onnx", "-o", "m.ckpt.npz", *extra)
    assert code == 0, err
    return out


def test_import_then_quantize_with_calibration_and_comparison(work, capsys):
    out = imported(capsys, "--config", "m.toml", "--input-range", "0", "10")
    assert "imported 3 layers, input range [0, 10]: dense -> dense -> dense" in out
    assert "against onnxruntime's on 8 random inputs" in out and "the same classes" in out
    assert (work / "m.toml").exists()
    code, _, err = run(capsys, "quantize", "m.ckpt.npz")
    assert code == 2 and "without observed activation ranges" in err and "--calibrate DATA" in err
    assert err.count("\n") == 1
    code, out, err = run(capsys, "quantize", "m.ckpt.npz", "--calibrate", "d.npz", "--observer", "percentile",
                         "--samples", "200", "--compare", "d.npz")  # fmt: skip
    assert code == 0, err
    assert "wrote m.qmt" in out and "3 dense linear" in out and "accuracy on 400 samples: float 100.00%" in out
    model = qmtik.load_model(work / "m.qmt")
    assert model.inputs == 12 and model.outputs == 3


def test_import_takes_the_input_range_from_data_and_refuses_without_one(work, capsys):
    assert "input range [" in imported(capsys, "--calibrate", "d.npz")
    code, _, err = run(capsys, "import-onnx", DATA / "onnx_mlp.onnx", "-o", "n.ckpt.npz")
    assert code == 2 and "--input-range LOW HIGH" in err
    code, _, err = run(capsys, "import-onnx", DATA / "onnx_mlp.onnx", "--input-range", "0", "1", "--calibrate", "d.npz")
    assert code == 2 and "give one" in err


def test_an_unsupported_graph_is_one_line_exit_1(work, capsys):
    (work / "bad.onnx").write_bytes(b"not onnx at all")
    code, _, err = run(capsys, "import-onnx", "bad.onnx", "--input-range", "0", "1")
    assert code == 1 and err.startswith("qmtik: error: ONNX model bad.onnx: cannot be read") and err.count("\n") == 1


def test_observer_without_calibrate_is_refused(work, capsys):
    imported(capsys, "--input-range", "0", "10")
    code, _, err = run(capsys, "quantize", "m.ckpt.npz", "--observer", "mse")
    assert code == 2 and "give --calibrate" in err


def test_info_compare_needs_a_checkpoint_with_ranges(work, capsys):
    imported(capsys, "--input-range", "0", "10")
    code, _, err = run(capsys, "info", "m.ckpt.npz", "--compare", "d.npz")
    assert code == 1 and "calibrate" in err
    net = qmtik.Network.load("m.ckpt.npz")
    from qmtik.calibrate import calibrate

    calibrate(net, np.load("d.npz")["x"])
    net.save("c.ckpt.npz")
    code, out, err = run(capsys, "info", "c.ckpt.npz", "--compare", "d.npz")
    assert code == 0 and "1 dense relu" in out and "int8" in out
    code, _, err = run(capsys, "info", "c.ckpt.npz", "--compare-plot")
    assert code == 2 and "give --compare DATA" in err
    pytest.importorskip("matplotlib", reason="the plot needs the [plot] extra")
    code, out, err = run(capsys, "info", "c.ckpt.npz", "--compare", "d.npz", "--compare-plot", "c.png")
    assert code == 0 and "wrote c.png" in out and (work / "c.png").stat().st_size > 1000


def test_fine_tuning_from_an_import(work, capsys):
    imported(capsys, "--config", "m.toml", "--input-range", "0", "10")
    with open("m.toml", "a") as f:
        f.write('dataset = ""\ntrain = "d.npz"\n')  # [data] is the file's last table
    code, out, err = run(capsys, "train", "m.toml", "--init", "m.ckpt.npz", "-o", "t.ckpt.npz", "--qmt", "t.qmt", "-q")
    assert code == 0, err
    tuned = qmtik.Network.load("t.ckpt.npz")
    assert tuned.quantized_ and tuned.input_range_ == (0.0, 10.0)
    x, y = np.load("d.npz")["x"], np.load("d.npz")["y"]
    assert tuned.score(x, y) > 0.9  # one epoch at 1e-4 keeps what the import knew
    code, _, err = run(capsys, "train", "m.toml", "--init", "m.ckpt.npz", "--resume", "-o", "t.ckpt.npz")
    assert code == 2 and "--init starts a run from other weights and --resume" in err


def test_fine_tuning_refuses_another_topology(work, capsys):
    imported(capsys, "--config", "m.toml", "--input-range", "0", "10")
    with open("m.toml", "a") as f:
        f.write('dataset = ""\ntrain = "d.npz"\n')
    code, _, err = run(capsys, "train", "m.toml", "--init", "m.ckpt.npz", "--set", "network.outputs=4", "-o", "t.npz")
    assert code == 2 and "differs from the config's" in err and err.count("\n") == 1
    code, _, err = run(
        capsys, "train", "m.toml", "--init", "m.ckpt.npz", "--set", "data.input_range=[0,5]", "-o", "t.npz"
    )
    assert code == 2 and "input range [0.0, 10.0] differs" in err


def test_export_onnx_and_the_header_of_an_imported_model(work, capsys):
    pytest.importorskip("onnxruntime")
    imported(capsys, "--input-range", "0", "10")
    assert run(capsys, "quantize", "m.ckpt.npz", "--calibrate", "d.npz")[0] == 0
    code, out, err = run(capsys, "export-onnx", "m.qmt", "-o", "m.int8.onnx")
    assert code == 0 and "wrote m.int8.onnx" in out, err
    from qmtik.export_onnx import run_onnx

    model = qmtik.load_model("m.qmt")
    codes = model.quantize_inputs(np.load("d.npz")["x"])
    np.testing.assert_array_equal(run_onnx(work / "m.int8.onnx", codes), model.scores(codes))
    from qmtik.c_check import find_compiler

    if find_compiler() is None:
        pytest.skip("no C compiler: export-c --check cannot run here")
    code, out, err = run(capsys, "export-c", "m.qmt", "-o", "m.h", "--check", "d.npz")
    assert code == 0, err
    assert "400" in out
