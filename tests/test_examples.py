"""The examples in examples/: each README's shell commands, run as written (with fewer epochs and
smaller data), and each main.c's output checked against Python. The commands come from the
README itself, so the README cannot drift from what the test runs."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik.c_check import STRICT, find_compiler
from qmtik.cli import main
from qmtik.data_formats import read_csv_table

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CC = find_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler ($CC, gcc, cc or clang) to build main.c with")


def readme_commands(readme: Path) -> list[str]:
    """The command lines of a README's fenced ```sh blocks, in order (blank lines and comments left out)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def reduced(commands: list[str], substitutions: dict[str, str]) -> list[str]:
    """The commands with the test's substitutions; each must still match the README."""
    for old in substitutions:
        assert any(old in command for command in commands), f"the README no longer has {old!r}"
    out = []
    for command in commands:
        for old, new in substitutions.items():
            command = command.replace(old, new)
        out.append(command)
    return out


def run_commands(commands: list[str], folder: Path, capsys) -> dict[str, str]:
    """Run each command in folder: qmtik in-process, python3 and the C compiler as they are,
    ./program as built; returns each command's stdout by the command's line as run."""
    outputs = {}
    for line in commands:
        for command in (part.strip() for part in line.split("&&")):
            words = shlex.split(command)
            if words[0] == "qmtik":
                code = main(words[1:])
                captured = capsys.readouterr()
                assert code == 0, f"{command}: exit {code}: {captured.err}"
                outputs[command] = captured.out
                continue
            if words[0] == "python3":
                words[0] = sys.executable
            elif words[0] == "cc":
                words[0:1] = [CC, *STRICT]  # the README's line, warnings as errors
            elif not words[0].startswith("./"):
                raise AssertionError(f"the test does not know how to run {command!r}")
            result = subprocess.run(words, cwd=folder, capture_output=True, text=True)
            assert result.returncode == 0, f"{command}: exit {result.returncode}: {result.stderr}"
            outputs[command] = result.stdout
    return outputs


# --- examples/mnist ----------------------------------------------------------------------------


def test_the_mnist_config_is_the_c_librarys_headline_example():
    config = qmtik.load_config(EXAMPLES / "mnist" / "mnist.toml")
    assert (config.network.inputs, list(config.network.hidden), config.network.outputs) == (784, [256, 256], 10)
    assert config.data.dataset == "mnist" and tuple(config.data.input_range) == (0.0, 255.0)


@needs_cc
def test_the_mnist_example_prints_the_accuracy_qmtik_eval_prints(tmp_path, monkeypatch, capsys, fake_mnist):
    folder = tmp_path / "mnist"
    shutil.copytree(EXAMPLES / "mnist", folder)
    cache = fake_mnist(train=300, test=97, seed=5)  # offline: never downloads
    monkeypatch.chdir(folder)
    commands = reduced(
        readme_commands(folder / "README.md"),
        {
            "qmtik train mnist.toml --qmt mnist.qmt": "qmtik train mnist.toml --qmt mnist.qmt "
            "--set network.hidden=[16,16] --epochs 1 -q",
            "~/.cache/qmtik/mnist": str(cache),
        },
    )
    out = run_commands(commands, folder, capsys)

    assert out["qmtik data get mnist"] == f"mnist: {cache}\n"
    check = out["qmtik export-c mnist.qmt -o mnist_model.h --check mnist:test --report"]
    assert "wrote mnist_model.h" in check and "prefix mnist_model" in check
    assert "check: 97 samples, 0 score, 0 class and 0 input-code mismatches" in check
    device = out["./mnist mnist_test.bin"]
    assert re.fullmatch(r"accuracy \d+\.\d\d% on 97 samples\n", device)
    python = out["qmtik eval mnist.qmt mnist"]
    assert python.startswith(device.rstrip("\n") + " (int8 arithmetic), ")  # the same accuracy, to the digit

    # the file main.c read holds the codes the model computes from the pixels
    model = qmtik.load_model(folder / "mnist.qmt")
    (_, _), (x, y) = qmtik.load_dataset("mnist")
    record = np.frombuffer((folder / "mnist_test.bin").read_bytes(), np.int8).reshape(-1, 794)
    np.testing.assert_array_equal(record[:, :784], model.quantize_inputs(x))
    np.testing.assert_array_equal(record[:, 784:].argmax(axis=1), y)
    assert main(["eval", "mnist.qmt", "mnist_test.bin"]) == 0
    assert capsys.readouterr().out == python


# --- examples/sensor ---------------------------------------------------------------------------

SENSOR = EXAMPLES / "sensor"


def test_the_sensor_config_is_a_regression_on_its_csv():
    config = qmtik.load_config(SENSOR / "sensor.toml")
    assert (config.task, config.network.output, config.network.cost) == ("regression", "linear", "mse")
    assert config.network.outputs == 1 and config.network.inputs == 3
    assert (SENSOR / "sensor_train.csv").stat().st_size + (SENSOR / "sensor_test.csv").stat().st_size < 100_000


@needs_cc
def test_the_sensor_example_prints_what_python_predicts(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "sensor"
    shutil.copytree(SENSOR, folder)
    monkeypatch.chdir(folder)
    commands = reduced(
        readme_commands(folder / "README.md"),
        {  # overrides are checked together
            "qmtik train sensor.toml --qmt sensor.qmt": "qmtik train sensor.toml --qmt sensor.qmt "
            "--epochs 4 --float-epochs 2 -q",
            "--float-epochs 200": "--float-epochs 4 --epochs 4 -q",
        },
    )
    out = run_commands(commands, folder, capsys)

    for name in ("sensor_train.csv", "sensor_test.csv", "rows.csv"):  # make_data.py is deterministic
        assert (folder / name).read_bytes() == (SENSOR / name).read_bytes(), f"make_data.py changed {name}"
    assert "(int8 arithmetic)" in out["qmtik eval sensor.qmt sensor_test.csv"]
    assert "(float arithmetic)" in out["qmtik eval sensor_float.ckpt.npz"]
    assert "(int8 arithmetic)" in out["qmtik eval sensor_float.qmt sensor_test.csv"]
    check = out["qmtik export-c sensor.qmt -o sensor.h --check sensor_test.csv --report"]
    assert "check: 500 samples, 0 score, 0 class and 0 input-code mismatches" in check

    rows = read_csv_table(folder / "rows.csv")
    model = qmtik.load_model(folder / "sensor.qmt")
    codes, values = model.quantize_inputs(rows), model.predict(rows)
    scores = model.scores(codes)[:, 0]
    printed = [float(v) for v in out["qmtik predict sensor.qmt rows.csv"].split()]
    np.testing.assert_allclose(printed, values, rtol=1e-6)

    lines = out["./sensor"].splitlines()
    assert len(lines) == len(rows)
    pattern = r"raw (\S+) (\S+) (\S+) -> codes (-?\d+) (-?\d+) (-?\d+) -> score (-?\d+) -> t_true (-?\d+\.\d\d) C"
    for line, row, code, score, value in zip(lines, rows, codes, scores, values):
        match = re.fullmatch(pattern, line)
        assert match, line
        assert list(match.groups()[:3]) == [f"{v:.2f}" for v in row]  # main.c holds rows.csv's rows
        assert [int(g) for g in match.groups()[3:6]] == code.tolist()  # quantized on the device as in Python
        assert int(match.group(7)) == score  # the int8 score, exactly
        assert abs(float(match.group(8)) - value) <= 0.005 + 1e-5  # predict's value, to the printed digit


# --- examples/gestures -------------------------------------------------------------------------

GESTURES = EXAMPLES / "gestures"


def test_the_gestures_config_is_a_small_conv1d_network_on_its_csv():
    config = qmtik.load_config(GESTURES / "gestures.toml")
    assert list(config.network.input_shape) == [48, 3] and config.network.outputs == 6
    kinds = [layer.kind for layer in config.network.layers]
    assert kinds == ["conv1d", "max_pool", "conv1d", "max_pool", "conv1d", "global_avg_pool"]
    assert tuple(config.data.input_range) == (-128.0, 127.0)  # the int8 code of a count is the count
    sizes = [(GESTURES / name).stat().st_size for name in ("gestures_train.csv", "gestures_test.csv")]
    assert sum(sizes) < 450_000  # small enough to commit


def main_c_windows(path: Path) -> np.ndarray:
    """The int8 windows main.c holds, one row per window."""
    body = re.search(r"windows\[WINDOWS\]\[GESTURES_INPUTS\] = \{(.*?)\n\};", path.read_text(), re.S)
    blocks = re.findall(r"\{(.*?)\}", re.sub(r"/\*.*?\*/", "", body.group(1)), re.S)
    return np.array([[int(v) for v in re.findall(r"-?\d+", block)] for block in blocks])


@needs_cc
def test_the_gestures_example_prints_what_python_predicts(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "gestures"
    shutil.copytree(GESTURES, folder)
    monkeypatch.chdir(folder)
    commands = reduced(
        readme_commands(folder / "README.md"),
        {
            "qmtik train gestures.toml --qmt gestures.qmt": "qmtik train gestures.toml --qmt gestures.qmt "
            "--epochs 5 --float-epochs 3 --learning-rate 0.01 -q",
            "--float-epochs 40": "--float-epochs 1 --epochs 1 -q",
        },
    )
    out = run_commands(commands, folder, capsys)

    for name in ("gestures_train.csv", "gestures_test.csv", "windows.csv"):  # make_data.py is deterministic
        assert (folder / name).read_bytes() == (GESTURES / name).read_bytes(), f"make_data.py changed {name}"
    evaluation = re.match(
        r"accuracy (\d+\.\d\d)% on 300 samples \(int8 arithmetic\)", out["qmtik eval gestures.qmt gestures_test.csv"]
    )
    assert evaluation and float(evaluation.group(1)) >= 85.0  # 92.67% on x86-64 after these 5 epochs
    assert "(float arithmetic)" in out["qmtik eval gestures_float.ckpt.npz"]
    assert "(int8 arithmetic)" in out["qmtik eval gestures_float.qmt gestures_test.csv"]
    check = out["qmtik export-c gestures.qmt -o gestures.h --check gestures_test.csv --report"]
    assert "check: 300 samples, 0 score, 0 class and 0 input-code mismatches" in check
    flash, ram = (
        int(re.search(rf"{what}: ([\d,]+) bytes", check).group(1).replace(",", "")) for what in ("flash", "RAM")
    )
    assert flash <= 16 * 1024 and ram <= 4 * 1024  # the budget for this example (local compiler, -Os)

    windows = read_csv_table(folder / "windows.csv")
    np.testing.assert_array_equal(main_c_windows(folder / "main.c"), windows)  # main.c holds windows.csv
    model = qmtik.load_model(folder / "gestures.qmt")
    codes = model.quantize_inputs(windows)
    np.testing.assert_array_equal(codes, windows)  # no scaling: the counts are the codes
    scores, classes = model.scores(codes), model.predict(windows)
    assert out["qmtik predict gestures.qmt windows.csv"].split() == [str(c) for c in classes]

    names = ["idle", "shake", "circle", "tap", "wave", "flip"]
    lines = out["./gestures"].splitlines()
    assert len(lines) == len(windows) == len(names)
    for line, name, score, cls in zip(lines, names, scores, classes):
        match = re.fullmatch(r"(\w+) window -> scores ((?:-?\d+ ?){6}) -> (\w+) \(probability [01]\.\d\d\)", line)
        assert match, line
        assert match.group(1) == name  # a test window of each class, in class order
        assert [int(s) for s in match.group(2).split()] == score.tolist()  # the int8 scores, exactly
        assert match.group(3) == names[cls]  # the class predict gives
