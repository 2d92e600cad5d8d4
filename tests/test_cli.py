"""The command line, run in-process through main(argv): outputs, files, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik import Config, load_config
from qmtik.c_check import find_compiler
from qmtik.cli import main
from qmtik.progress import Reporter

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--set", "network.hidden=[8]", "-q"]


def fails(capsys, argv, code: int) -> str:
    """Run main(argv), expect exit code `code` and one error line on stderr; return that line."""
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qmtik: error: ")
    assert "Traceback" not in err
    return lines[0]


def arrays_of(path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


@pytest.fixture
def config(tmp_path, monkeypatch, capsys):
    """A starter config (digits) written by `qmtik init` in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    assert main(["init", "net.toml"]) == 0
    capsys.readouterr()
    return tmp_path / "net.toml"


@pytest.fixture
def trained(config, capsys):
    assert main(["train", "net.toml", "--epochs", "2", *TINY]) == 0
    capsys.readouterr()
    return config.with_name("net.ckpt.npz")


# --- init --------------------------------------------------------------------------------------


def test_init_writes_a_config_that_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert "qmtik.toml" in capsys.readouterr().out
    config = load_config(tmp_path / "qmtik.toml")
    assert config.training.epochs == 30 and config.data.dataset == "digits"
    assert config.network == Config().network


def test_init_refuses_to_overwrite_without_force(config, capsys):
    config.write_text("# mine\n")
    line = fails(capsys, ["init", "net.toml"], 2)
    assert "net.toml" in line and "--force" in line
    assert config.read_text() == "# mine\n"
    assert main(["init", "net.toml", "--force"]) == 0
    assert load_config(config).training.epochs == 30


# --- train -------------------------------------------------------------------------------------


def test_train_writes_checkpoint_and_history_beside_the_config(config, capsys):
    assert main(["train", "net.toml", "--epochs", "2", *TINY]) == 0
    out = capsys.readouterr().out
    ckpt, history = config.with_name("net.ckpt.npz"), config.with_name("net.history.json")
    assert ckpt.is_file() and history.is_file()
    assert "net.ckpt.npz" in out and "test accuracy" in out
    assert "epoch 1/2" not in out  # -q: no epoch lines
    records = json.loads(history.read_text())
    assert [r["epoch"] for r in records["epochs"]] == [1, 2]
    assert records["best_epoch"] in (1, 2)
    net = qmtik.Network.load(ckpt)
    assert net.config.network.hidden == (8,) and net.config.training.epochs == 2
    assert net.history_["best_epoch"] == records["best_epoch"]
    assert not [p for p in config.parent.iterdir() if p.name.endswith(".tmp")]


def test_train_prints_epoch_lines_unless_quiet(config, capsys):
    assert main(["train", "net.toml", "--epochs", "2", "--set", "network.hidden=[8]"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "kept epoch" in out


def test_train_out_puts_the_files_there(config, capsys):
    (config.parent / "models").mkdir()
    assert main(["train", "net.toml", "--epochs", "2", "-o", "models/m.ckpt.npz", *TINY]) == 0
    assert (config.parent / "models" / "m.ckpt.npz").is_file()
    assert (config.parent / "models" / "m.history.json").is_file()
    assert not config.with_name("net.ckpt.npz").exists()


def test_train_out_into_a_missing_directory_is_a_usage_error(config, capsys):
    line = fails(capsys, ["train", "net.toml", "--epochs", "2", "-o", "nowhere/m.ckpt.npz", *TINY], 2)
    assert "nowhere" in line


def test_train_flags_override_the_config(config, capsys):
    argv = [
        "train",
        "net.toml",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--optimizer",
        "sgd",
        "--learning-rate",
        "0.05",
        "--seed",
        "3",
        "--float-epochs",
        "1",
        *TINY,
    ]
    assert main(argv) == 0
    tc = qmtik.Network.load(config.with_name("net.ckpt.npz")).config.training
    assert (tc.epochs, tc.batch_size, tc.optimizer, tc.learning_rate, tc.seed, tc.float_epochs) == (
        2,
        64,
        "sgd",
        0.05,
        3,
        1,
    )


# --- eval --------------------------------------------------------------------------------------


def test_eval_prints_the_accuracy(trained, capsys):
    assert main(["eval", str(trained)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("accuracy ") and "% on 359 samples" in out and "int8 arithmetic" in out


def test_eval_json(trained, capsys):
    assert main(["eval", str(trained), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["accuracy"] <= 1 and result["samples"] == 359 and result["int8"] is True
    # the same figure as the library's
    (_, _), (x, y) = qmtik.load_dataset("digits")
    assert result["accuracy"] == qmtik.Network.load(trained).score(x, y)


def test_eval_on_other_data(trained, capsys):
    assert main(["eval", str(trained), "--data", "digits:train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 1438


def test_a_config_with_data_paths_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (x, y), (x_test, y_test) = qmtik.load_dataset("digits")
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.save(tmp_path / "test_x.npy", x_test)
    np.save(tmp_path / "test_y.npy", y_test)
    (tmp_path / "p.toml").write_text("[data]\ndataset = ''\ntrain = 'train.npz'\n")
    assert main(["train", "p.toml", "--epochs", "2", *TINY]) == 0
    assert "test accuracy" not in capsys.readouterr().out
    line = fails(capsys, ["eval", "p.ckpt.npz"], 2)  # no test data named anywhere
    assert "--data" in line
    assert main(["eval", "p.ckpt.npz", "--data", "test_x.npy", "--labels", "test_y.npy"]) == 0
    assert "on 359 samples" in capsys.readouterr().out


# --- errors ------------------------------------------------------------------------------------


def test_an_unknown_key_via_set_exits_2(config, capsys):
    line = fails(capsys, ["train", "net.toml", "--set", "training.epoch=2", "-q"], 2)
    assert "training.epoch" in line and "did you mean 'training.epochs'" in line


def test_an_unknown_section_via_set_exits_2(config, capsys):
    line = fails(capsys, ["train", "net.toml", "--set", "trainig.epochs=2", "-q"], 2)
    assert "trainig.epochs" in line


def test_a_missing_config_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, ["train", "nope.toml", "-q"], 2)
    assert "nope.toml" in line and "not found" in line


@pytest.mark.parametrize(
    "argv, key",
    [
        (["--epochs", "0"], "training.epochs"),
        (["--set", "training.optimizer=adamm"], "training.optimizer"),
        (["--set", "network.hidden=8"], "network.hidden"),
        (["--set", "epochs"], "KEY=VALUE"),
    ],
)
def test_a_bad_value_exits_2(config, capsys, argv, key):
    assert key in fails(capsys, ["train", "net.toml", *argv, "-q"], 2)
    assert not config.with_name("net.ckpt.npz").exists()


def test_eval_of_a_missing_checkpoint_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, ["eval", "nope.ckpt.npz"], 1)
    assert "nope.ckpt.npz" in line and "not found" in line


def test_eval_of_a_damaged_checkpoint_exits_1(trained, capsys):
    blob = trained.read_bytes()
    trained.write_bytes(blob[: len(blob) // 2])
    assert str(trained.name) in fails(capsys, ["eval", str(trained)], 1)


def test_divergence_exits_1_and_writes_no_checkpoint(config, capsys):
    line = fails(capsys, ["train", "net.toml", "--epochs", "2", "--learning-rate", "1e6", *TINY], 1)
    assert "diverged" in line and "learning_rate" in line
    assert sorted(p.name for p in config.parent.iterdir()) == ["net.toml"]


def test_divergence_keeps_the_previous_checkpoint(trained, capsys):
    before = trained.read_bytes()
    fails(capsys, ["train", "net.toml", "--epochs", "2", "--learning-rate", "1e6", *TINY], 1)
    assert trained.read_bytes() == before


@pytest.mark.parametrize(
    "argv", [["train", "net.toml", "--bogus"], [], ["fly"], ["train"], ["train", "net.toml", "--epochs", "two"]]
)
def test_usage_errors_exit_2_through_argparse(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: qmtik" in err and "Traceback" not in err


def test_version_through_python_m(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "qmtik", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"qmtik {qmtik.__version__}"


# --- interrupt and resume ----------------------------------------------------------------------


def interrupt_at(monkeypatch, epoch: int):
    """Make training stop with KeyboardInterrupt when epoch `epoch` ends (after its checkpoint)."""
    original = Reporter.end_epoch

    def end_epoch(self, record):
        if record["epoch"] == epoch:
            raise KeyboardInterrupt
        original(self, record)

    monkeypatch.setattr(Reporter, "end_epoch", end_epoch)


@pytest.mark.parametrize("stop_after", [1, 2])
def test_resume_finishes_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch, capsys, stop_after):
    argv = ["train", "net.toml", "--epochs", "3", *TINY]
    for name in ("whole", "resumed"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        assert main(["init", "net.toml"]) == 0

    monkeypatch.chdir(tmp_path / "whole")
    assert main(argv) == 0

    monkeypatch.chdir(tmp_path / "resumed")
    with monkeypatch.context() as m:
        interrupt_at(m, stop_after)
        capsys.readouterr()
        assert main(argv) == 130
        err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    partial = arrays_of(tmp_path / "resumed" / "net.ckpt.npz")
    assert int(partial["resume.epoch"]) == stop_after
    assert main([*argv, "--resume"]) == 0

    whole, resumed = arrays_of(tmp_path / "whole" / "net.ckpt.npz"), arrays_of(tmp_path / "resumed" / "net.ckpt.npz")
    assert sorted(whole) == sorted(resumed)
    assert not any(k.startswith(("resume.", "optimizer.")) for k in resumed)  # a finished run
    for key in whole:
        if key != "history":
            assert np.array_equal(whole[key], resumed[key]), key
    h_whole, h_resumed = json.loads(str(whole["history"])), json.loads(str(resumed["history"]))
    assert h_whole["best_epoch"] == h_resumed["best_epoch"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h["epochs"]]  # noqa: E731
    assert strip(h_whole) == strip(h_resumed) and len(strip(h_whole)) == 3


def test_resume_without_a_checkpoint_trains_from_the_start(config, capsys):
    assert main(["train", "net.toml", "--epochs", "2", "--resume", *TINY]) == 0
    assert len(qmtik.Network.load(config.with_name("net.ckpt.npz")).history_["epochs"]) == 2


@pytest.mark.parametrize("damage", ["missing", "scalar"])
def test_resume_with_a_damaged_optimizer_state_exits_1(config, monkeypatch, capsys, damage):
    argv = ["train", "net.toml", "--epochs", "3", *TINY]
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        assert main(argv) == 130
    path = config.with_name("net.ckpt.npz")
    arrays = arrays_of(path)
    key = sorted(k for k in arrays if k.startswith("optimizer.") and k != "optimizer.steps")[0]
    if damage == "missing":
        del arrays[key]
    else:
        arrays[key] = np.array(0.5, dtype=arrays[key].dtype)  # would broadcast silently
    path.unlink()
    np.savez(path, **arrays)
    line = fails(capsys, [*argv, "--resume"], 1)
    assert "net.ckpt.npz" in line and key in line


def test_resume_of_a_different_network_exits_1(config, monkeypatch, capsys):
    argv = ["train", "net.toml", "--epochs", "3", *TINY]
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        assert main(argv) == 130
    line = fails(capsys, ["train", "net.toml", "--epochs", "3", "--set", "network.hidden=[9]", "-q", "--resume"], 1)
    assert "cannot resume" in line


# --- the integer model: quantize, info, eval, predict, train --qmt ------------------------------


@pytest.fixture
def qmt(trained, capsys):
    assert main(["quantize", "net.ckpt.npz"]) == 0
    assert "net.qmt" in capsys.readouterr().out
    return trained.with_name("net.qmt")


def test_quantize_writes_a_model_that_predicts_as_the_checkpoint(qmt, trained):
    model = qmtik.load_model(qmt)
    net = qmtik.Network.load(trained)
    _, (x, _) = qmtik.load_dataset("digits")
    np.testing.assert_array_equal(model.predict(x), net.predict(x))


def test_train_with_qmt_writes_the_integer_model_too(config, capsys):
    assert main(["train", "net.toml", "--epochs", "1", "--qmt", "m.qmt", *TINY]) == 0
    assert "m.qmt" in capsys.readouterr().out
    assert qmtik.load_model(config.with_name("m.qmt")).widths == (64, 8, 10)


def test_info_describes_the_model(qmt, capsys):
    assert main(["info", "net.qmt"]) == 0
    out = capsys.readouterr().out
    assert "64-8-10" in out and "file:" in out and "scratch 16 bytes" in out
    assert "layer 1: 64 -> 8 relu" in out and "layer 2: 8 -> 10 linear" in out


def test_eval_of_a_qmt_needs_data_and_matches_the_checkpoint(qmt, capsys):
    line = fails(capsys, ["eval", "net.qmt"], 2)
    assert "carries no data" in line
    assert main(["eval", "net.qmt", "digits:test", "--json"]) == 0
    from_qmt = json.loads(capsys.readouterr().out)
    assert main(["eval", "net.ckpt.npz", "digits:test", "--json"]) == 0
    from_ckpt = json.loads(capsys.readouterr().out)
    assert from_qmt["accuracy"] == from_ckpt["accuracy"] and from_qmt["samples"] == 359


def test_predict_prints_or_writes_classes(qmt, tmp_path, capsys):
    _, (x, _) = qmtik.load_dataset("digits")
    np.save(tmp_path / "x.npy", x[:7])
    (tmp_path / "x.csv").write_text(
        ",".join(f"p{i}" for i in range(64))
        + "\n"
        + "\n".join(",".join(str(int(v)) for v in row) for row in x[:7])
        + "\n"
    )
    expected = qmtik.load_model(qmt).predict(x[:7])
    assert main(["predict", "net.qmt", "x.npy"]) == 0
    assert capsys.readouterr().out.split() == [str(c) for c in expected]
    assert main(["predict", "net.qmt", "x.csv", "-o", "out.npy"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_predict_refuses_bad_input_files(qmt, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5\n")
    assert "line 2: 2 columns, expected 3" in fails(capsys, ["predict", "net.qmt", "bad.csv"], 1)
    np.save(tmp_path / "short.npy", np.zeros((2, 5)))
    assert "5 features" in fails(capsys, ["predict", "net.qmt", "short.npy"], 1)
    assert "expected an .npy or a .csv" in fails(capsys, ["predict", "net.qmt", "x.txt"], 1)


def test_a_damaged_qmt_is_one_line_and_exit_1(qmt, capsys):
    blob = bytearray(qmt.read_bytes())
    blob[100] ^= 0xFF
    qmt.write_bytes(bytes(blob))
    for argv in (["info", "net.qmt"], ["eval", "net.qmt", "digits"], ["predict", "net.qmt", "x.npy"]):
        assert "net.qmt" in fails(capsys, argv, 1)


# --- export-c ------------------------------------------------------------------------------------


def test_export_c_writes_a_header_named_after_its_file(qmt, capsys):
    assert main(["export-c", "net.qmt", "-o", "digits.h"]) == 0
    assert "prefix digits" in capsys.readouterr().out
    text = qmt.with_name("digits.h").read_text()
    assert "int digits_predict(const int8_t *input, int8_t *scores, void *scratch);" in text


def test_export_c_refuses_a_bad_prefix_as_usage(qmt, capsys):
    assert "C identifier" in fails(capsys, ["export-c", "net.qmt", "--prefix", "9lives"], 2)


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler on this machine")
def test_export_c_check_and_report(qmt, capsys):
    assert main(["export-c", "net.ckpt.npz", "-o", "d.h", "--check", "digits:test", "--report"]) == 0
    out = capsys.readouterr().out
    assert "check: 359 samples, 0 score, 0 class and 0 input-code mismatches" in out
    assert "flash:" in out and "scratch 16" in out


def test_export_c_check_without_a_compiler_says_so(qmt, capsys, monkeypatch):
    monkeypatch.setattr("qmtik.workflow.find_compiler", lambda: None)
    assert main(["export-c", "net.qmt", "--check", "digits:test"]) == 0
    assert "no C compiler found" in capsys.readouterr().out


# --- review findings: outputs checked first, files told apart by content, test data first ------


def test_outputs_in_missing_folders_are_refused_before_training(config, capsys):
    assert "folder nowhere does not exist" in fails(capsys, ["train", "net.toml", "--qmt", "nowhere/m.qmt", *TINY], 2)
    assert not config.with_name("net.ckpt.npz").exists()


def test_a_qmt_given_to_quantize_is_named_for_what_it_is(qmt, capsys):
    assert "is an integer model (.qmt)" in fails(capsys, ["quantize", "net.qmt"], 2)
    qmt.rename(qmt.with_name("model.bin"))
    assert main(["info", "model.bin"]) == 0  # told apart by its magic, not its name


def test_bad_test_data_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _, (x, y) = qmtik.load_dataset("digits")
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x, y=y.astype(float) + 0.5)
    (tmp_path / "c.toml").write_text(
        '[data]\ndataset = ""\ntrain = "train.npz"\ntest = "test.npz"\n[network]\nhidden = [4]\n'
    )
    assert "test labels" in fails(capsys, ["train", "c.toml", "-q"], 1)
    assert not (tmp_path / "c.ckpt.npz").exists()


def test_eval_names_the_cost_of_its_loss(qmt, capsys):
    assert main(["eval", "net.qmt", "digits:test"]) == 0
    assert "cross entropy" in capsys.readouterr().out


def test_data_errors_name_the_data(qmt, tmp_path, capsys):
    np.save(tmp_path / "short.npy", np.zeros((2, 5)))
    assert "input file short.npy: 5 features" in fails(capsys, ["predict", "net.qmt", "short.npy"], 1)
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 64)), y=np.array([0, 12]))
    assert "bad.npz: labels: label 12" in fails(capsys, ["eval", "net.qmt", "bad.npz"], 1)


# --- data convert, demo ------------------------------------------------------------------------


def mnist_784_like_csv(path, rows: int = 10):
    """OpenML's mnist_784 layout on a small scale: a header, 64 pixel columns, then a quoted class."""
    x, y = qmtik.load_digits()
    pixels = (x[:rows] * 255 / 16).round().astype(int)
    header = ",".join([f"pixel{i + 1}" for i in range(64)] + ["class"])
    body = "".join(",".join(map(str, p)) + f",'{c}'\n" for p, c in zip(pixels.tolist(), y[:rows].tolist()))
    path.write_text(header + "\n" + body)
    return pixels, y[:rows]


def test_data_convert_writes_the_c_library_samples_with_its_80_20_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pixels, labels = mnist_784_like_csv(tmp_path / "mnist_784.csv")
    assert main(["data", "convert", "mnist_784.csv", "--to", "qmtik-bin", "--input-range", "0", "255"]) == 0
    out = capsys.readouterr().out
    assert "mnist_784_train.bin (8 samples" in out and "mnist_784_test.bin (2 samples" in out
    blob = (tmp_path / "mnist_784_train.bin").read_bytes()
    assert len(blob) == 8 * (64 + 10)
    first = np.frombuffer(blob[:74], dtype=np.int8)
    np.testing.assert_array_equal(first[:64], pixels[0] - 128)  # pixel - 128
    np.testing.assert_array_equal(first[64:], np.eye(10, dtype=np.int8)[labels[0]] * 127)
    from qmtik.data import load_file

    x, y = load_file(tmp_path / "mnist_784_test.bin", inputs=64, outputs=10)
    np.testing.assert_array_equal(x, pixels[8:])
    np.testing.assert_array_equal(y, labels[8:])


def test_data_convert_to_npz_in_one_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pixels, labels = mnist_784_like_csv(tmp_path / "m.csv", rows=5)
    assert main(["data", "convert", "m.csv", "--to", "npz", "--split", "1", "-o", "all"]) == 0
    got = arrays_of(tmp_path / "all.npz")
    np.testing.assert_array_equal(got["x"], pixels)
    np.testing.assert_array_equal(got["y"], labels)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "convert", "none.csv", "--to", "npz"], "data file none.csv: not found"),
        (["data", "convert", "m.csv", "--to", "npz", "--split", "0"], "split 0.0: the share"),
        (["data", "convert", "bad.csv", "--to", "npz"], "bad.csv, line 3: 2 columns, expected 3"),
        (["data", "convert", "m.csv", "--to", "npz", "-o", "nodir/x"], "folder nodir does not exist"),
    ],
)
def test_data_convert_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    mnist_784_like_csv(tmp_path / "m.csv", rows=5)
    (tmp_path / "bad.csv").write_text("1,2,0\n3,4,1\n5,6\n")
    assert message in fails(capsys, argv, 1 if "folder" not in message else 2)


def test_eval_reads_a_qmtik_bin_file_for_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mnist_784_like_csv(tmp_path / "m.csv", rows=40)
    assert main(["data", "convert", "m.csv", "--to", "qmtik-bin", "--split", "1", "--input-range", "0", "255"]) == 0
    x, y = qmtik.load_dataset("digits")[0]
    config = Config(
        network=qmtik.NetworkConfig(inputs=64, hidden=[16], outputs=10), data=qmtik.DataConfig(input_range=[0, 255])
    )
    model = qmtik.Network(config.replace("training.epochs", 2)).fit(x * 255 / 16, y).quantize()
    qmtik.save_model(tmp_path / "m.qmt", model)
    capsys.readouterr()
    assert main(["eval", "m.qmt", "m.bin", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    pixels, labels = mnist_784_like_csv(tmp_path / "again.csv", rows=40)
    assert result["samples"] == 40
    assert result["accuracy"] == pytest.approx(model.score(pixels, labels))


def test_demo_on_the_digits_writes_a_model_a_header_and_a_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--dataset", "digits", "-o", "out"]) == 0
    out = capsys.readouterr().out
    model = qmtik.load_model(tmp_path / "out" / "digits.qmt")
    assert "#define DIGITS_INPUTS 64" in (tmp_path / "out" / "digits.h").read_text()
    x, y = qmtik.load_dataset("digits")[1]
    assert f"| test accuracy, int8 | {100 * model.score(x, y):.2f}% |" in out
    assert "| model file (.qmt) | " in out and "C library qmtik.h claimed" in out
    if find_compiler():
        assert "| C header agrees with Python | 359 of 359 test samples byte for byte" in out
    assert out.strip().endswith("out/digits.h")


# --- pictures ----------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def test_train_eval_and_info_draw_their_plots(trained, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the [plot] extra is not installed")
    assert main(["train", "net.toml", "--epochs", "2", *TINY, "--plot"]) == 0
    assert "net.curves.png" in capsys.readouterr().out
    assert (tmp_path / "net.curves.png").read_bytes().startswith(PNG)
    assert main(["quantize", "net.ckpt.npz"]) == 0
    assert main(["eval", "net.qmt", "digits", "--plot", "cm.png"]) == 0
    assert "wrote cm.png" in capsys.readouterr().out
    assert (tmp_path / "cm.png").read_bytes().startswith(PNG)
    assert main(["info", "net.qmt", "--plot", "--data", "digits:test"]) == 0
    assert "wrote net.layers.png" in capsys.readouterr().out
    assert (tmp_path / "net.layers.png").read_bytes().startswith(PNG)


def test_plots_without_matplotlib_say_how_to_install_it_before_any_work(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    before = trained.read_bytes()
    for argv in (
        ["train", "net.toml", "--plot"],
        ["eval", "net.ckpt.npz", "--plot"],
        ["info", "net.ckpt.npz", "--plot"],
    ):
        message = fails(capsys, argv, 1)
        assert "pip install 'qmtik[plot]'" in message
    assert trained.read_bytes() == before  # no training ran
    assert not list(tmp_path.glob("*.png"))


def test_info_data_without_plot_is_a_usage_error(trained, capsys):
    assert "--data goes with --plot" in fails(capsys, ["info", "net.ckpt.npz", "--data", "digits"], 2)


def test_a_plot_path_matplotlib_cannot_write_is_a_usage_error(trained, capsys):
    pytest.importorskip("matplotlib", reason="the [plot] extra is not installed")
    assert "suffix '.xyz'" in fails(capsys, ["eval", "net.ckpt.npz", "--plot", "cm.xyz"], 2)


def test_data_convert_refuses_values_that_are_not_pixels_without_a_range(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.csv").write_text("0.5,-3,1\n2,300,0\n")
    message = fails(capsys, ["data", "convert", "s.csv", "--to", "qmtik-bin"], 1)
    assert "values from -3 to 300 are not pixels 0..255" in message and "--input-range" in message
    assert main(["data", "convert", "s.csv", "--to", "qmtik-bin", "--split", "1", "--input-range", "-3", "300"]) == 0
    assert np.frombuffer((tmp_path / "s.bin").read_bytes(), dtype=np.int8)[:2].tolist() == [
        -125,
        -128,
    ]  # round(3.5 * 255 / 303) - 128, then the low end


# --- carrying over from the C library ----------------------------------------------------------

C_HEADER = """#define QMTIK_I 64
#define QMTIK_H 16
#define QMTIK_L 1
#define QMTIK_O 10
#define QMTIK_RELU_ACTV
#define QMTIK_SOFT_MAX_PP
#define QMTIK_CROSS_ENTROPY_COST
#define QMTIK_W_SCALE 0.02f
#define QMTIK_A_SCALE 0.125f
#define QMTIK_EPOCHS 3
#define QMTIK_ALPHA 0.001f
"""


def test_config_from_header_prints_a_config_that_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qmtik_config.h").write_text(C_HEADER)
    assert main(["config", "from-header", "qmtik_config.h"]) == 0
    (tmp_path / "net.toml").write_text(capsys.readouterr().out)
    config = load_config(tmp_path / "net.toml")
    assert (config.network.inputs, config.network.hidden, config.network.outputs) == (64, (16, 16), 10)
    assert config.training.epochs == 3 and config.training.learning_rate == pytest.approx(0.001)
    assert main(["config", "from-header", "qmtik_config.h", "-o", "again.toml"]) == 0
    assert load_config(tmp_path / "again.toml") == config


def test_config_from_header_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.h").write_text(C_HEADER.replace("#define QMTIK_H 16", "#define QMTIK_H sixteen"))
    assert "line 2" in fails(capsys, ["config", "from-header", "bad.h"], 2)
    assert "none.h" in fails(capsys, ["config", "from-header", "none.h"], 2)


def test_import_c_model_converts_and_checks_against_the_c_arithmetic(tmp_path, monkeypatch, capsys):
    from qmtik import legacy

    monkeypatch.chdir(tmp_path)
    (tmp_path / "qmtik_config.h").write_text(C_HEADER)
    rng = np.random.default_rng(5)
    widths = (64, 16, 16, 10)
    layers = [
        (rng.integers(-128, 128, (o, i)).astype(np.int8), rng.integers(-20, 20, o).astype(np.int8))
        for i, o in zip(widths[:-1], widths[1:])
    ]
    legacy.write_c_model(tmp_path / "model.bin", layers)
    x, y = qmtik.load_dataset("digits")[1]
    pixels = (x * 255 / 16).round().astype(np.uint8)
    np.savez(tmp_path / "test.npz", x=pixels, y=y)
    assert (
        main(["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt", "--check", "test.npz"]) == 0
    )
    out = capsys.readouterr().out
    model = qmtik.load_model(tmp_path / "m.qmt")
    c_model = legacy.load_c_model(tmp_path / "model.bin", tmp_path / "qmtik_config.h")
    same = int((c_model.predict(pixels.astype(np.int16) - 128) == model.predict_index(pixels)).sum())
    assert f"check: {same} of 359 classes equal" in out and same >= 0.95 * 359
    assert "wrote m.qmt" in out and "64-16-16-10" in out
    (tmp_path / "short.bin").write_bytes((tmp_path / "model.bin").read_bytes()[:-1])
    before = (tmp_path / "m.qmt").read_bytes()
    assert "short.bin" in fails(capsys, ["import-c-model", "short.bin", "--header", "qmtik_config.h", "-o", "m.qmt"], 1)
    assert (tmp_path / "m.qmt").read_bytes() == before


@pytest.mark.parametrize(
    "labels, options, message",
    [
        ([0, 1, 1, 0, 1], ["--outputs", "1"], "outputs 1: the number of classes must be 2 to 65536"),
        ([0, 1, 1, 0, 1], ["--outputs", "-1"], "outputs -1: the number of classes must be 2 to 65536"),
        ([0, 3, 1, 0, 1], ["--outputs", "2"], "outputs 2: the labels of two.npz reach 3, so at least 4 are needed"),
        ([0, np.nan, 1, 0, 1], [], "label nan of sample 1 is not a class number"),
        ([0, 1.5, 1, 0, 1], [], "label 1.5 of sample 1 is not a class number"),
        ([0, -1, 1, 0, 1], [], "label -1.0 of sample 1 is not a class number"),
        ([0, 1e300, 1, 0, 1], [], "label 1e+300 of sample 1 is not a class number"),
        ([0, 1, 1, 0, 1], ["--split", "0.01"], "split 0.01: of 5 samples it leaves a part empty"),
        ([0, 1, 1, 0, 1], ["--split", "0.95"], "split 0.95: of 5 samples it leaves a part empty"),
    ],
)
def test_data_convert_refuses_bad_labels_and_class_counts_in_one_line(
    tmp_path, monkeypatch, capsys, labels, options, message
):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "two.npz", x=np.arange(10).reshape(5, 2), y=np.array(labels, dtype=float))
    assert message in fails(capsys, ["data", "convert", "two.npz", "--to", "qmtik-bin", *options], 1)
    assert not list(tmp_path.glob("*.bin"))


@pytest.mark.parametrize("out", [".", "..", "/"])
def test_data_convert_needs_an_output_name(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "two.npz", x=np.arange(10).reshape(5, 2), y=np.array([0, 1, 1, 0, 1]))
    assert "needs a file name" in fails(capsys, ["data", "convert", "two.npz", "--to", "npz", "-o", out], 2)


def test_data_convert_reads_upper_case_names_and_refuses_a_first_row_with_numbers(tmp_path, monkeypatch, capsys):
    import gzip

    monkeypatch.chdir(tmp_path)
    text = ",".join([str(i) for i in range(4)] + ["label"]) + "\n1,2,3,4,1\n5,6,7,8,0\n"
    (tmp_path / "UP.CSV.GZ").write_bytes(gzip.compress(text.encode()))
    assert "UP.CSV.GZ, line 1: 'label' is not a number" in fails(  # a sample, not a header
        capsys, ["data", "convert", "UP.CSV.GZ", "--to", "npz", "--split", "1", "-o", "up"], 1
    )
    (tmp_path / "UP.CSV.GZ").write_bytes(gzip.compress(text.replace("0,1,2,3,", "a,b,c,d,").encode()))
    assert main(["data", "convert", "UP.CSV.GZ", "--to", "npz", "--split", "1", "-o", "up"]) == 0
    assert "(2 samples of 2 classes" in capsys.readouterr().out
    got = arrays_of(tmp_path / "up.npz")
    np.testing.assert_array_equal(got["x"], [[1, 2, 3, 4], [5, 6, 7, 8]])
    with open(tmp_path / "W.NPZ", "wb") as f:  # savez would add .npz
        np.savez(f, x=got["x"], y=got["y"])
    from qmtik.data import load_file

    np.testing.assert_array_equal(load_file(tmp_path / "W.NPZ")[1], [1, 0])


# --- outputs: nothing is lost --------------------------------------------------------------------


def files_in(folder) -> dict:
    """Every regular file under folder with its bytes (links and devices left out)."""
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.fixture
def paths_config(tmp_path, monkeypatch):
    """p.toml training on train.npz, testing on test_x.npy with test_y.npy, all in the working directory."""
    monkeypatch.chdir(tmp_path)
    (x, y), (x_test, y_test) = qmtik.load_dataset("digits")
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.save(tmp_path / "test_x.npy", x_test)
    np.save(tmp_path / "test_y.npy", y_test)
    (tmp_path / "p.toml").write_text(
        "[data]\ndataset = ''\ntrain = 'train.npz'\ntest = 'test_x.npy'\ntest_labels = 'test_y.npy'\n"
    )
    (tmp_path / "sub").mkdir()
    os.link(tmp_path / "train.npz", tmp_path / "hard.npz")
    return tmp_path


@pytest.mark.parametrize(
    "argv, clash",
    [
        (["-o", "train.npz"], "data.train"),
        (["-o", "./sub/../train.npz"], "data.train"),
        (["-o", "hard.npz"], "data.train"),  # a hard link to it
        (["-o", "test_x.npy"], "data.test"),
        (["-o", "test_y.npy"], "data.test_labels"),
        (["-o", "p.toml"], "the config"),
        (["-o", "x.ckpt.npz", "--qmt", "x.ckpt.npz"], "output"),
        (["-o", "x.ckpt.npz", "--qmt", "x.history.json"], "the history"),
        (["-o", "x.ckpt.npz", "--qmt", "train.npz"], "data.train"),
        (["-o", "x.ckpt.npz", "--qmt", "c.png", "--plot", "c.png"], "--qmt"),
    ],
)
def test_train_refuses_an_output_that_is_an_input_or_another_output(paths_config, capsys, argv, clash):
    before = files_in(paths_config)
    line = fails(capsys, ["train", "p.toml", "--epochs", "1", *TINY, *argv], 2)
    assert f"the same file as {clash} " in line and "overwrite" in line
    assert files_in(paths_config) == before


def test_the_history_beside_the_checkpoint_may_not_be_an_input(paths_config, capsys):
    os.replace("p.toml", "m.history.json")  # a config by any other name
    line = fails(capsys, ["train", "m.history.json", "-o", "m.ckpt.npz", "--epochs", "1", *TINY], 2)
    assert "the history m.history.json: the same file as the config" in line


@pytest.fixture
def workshop(qmt, capsys):
    """The trained files (net.ckpt.npz, net.qmt) and inputs of every other command beside them."""
    folder = qmt.parent
    x, _ = qmtik.load_digits()
    np.savetxt(folder / "in.csv", x[:5], delimiter=",", fmt="%g")
    (folder / "net.png").write_bytes(qmt.read_bytes())  # a model by an odd name
    (folder / "h.h").write_text(C_HEADER)
    (folder / "model.bin").write_bytes(bytes(100))
    for name in ("d.npz", "d_train.npz"):
        np.savez(folder / name, x=x[:10], y=np.arange(10) % 2)
    os.symlink("net.ckpt.npz", folder / "link.npz")
    return folder


@pytest.mark.parametrize(
    "argv, clash",
    [
        (["quantize", "net.ckpt.npz", "-o", "net.ckpt.npz"], "the checkpoint"),
        (["quantize", "net.ckpt.npz", "-o", "link.npz"], "the checkpoint"),
        (["quantize", "link.npz", "-o", "net.ckpt.npz"], "the checkpoint"),
        (["predict", "net.qmt", "in.csv", "-o", "in.csv"], "the input"),
        (["predict", "net.qmt", "in.csv", "-o", "net.qmt"], "the model"),
        (["export-c", "net.qmt", "-o", "net.qmt"], "the model"),
        (["export-c", "net.qmt", "-o", "in.csv", "--check", "in.csv"], "--check"),
        (["eval", "net.png", "digits", "--plot", "net.png"], "the model"),
        (["info", "net.png", "--plot", "net.png"], "the model"),
        (["config", "from-header", "h.h", "-o", "h.h"], "the header"),
        (["import-c-model", "model.bin", "--header", "h.h", "-o", "model.bin"], "the model"),
        (["import-c-model", "model.bin", "--header", "h.h", "-o", "h.h"], "--header"),
        (["data", "convert", "d.npz", "--to", "npz", "--split", "1", "-o", "d"], "the input"),
        (["data", "convert", "d_train.npz", "--to", "npz", "-o", "d"], "the input"),
    ],
)
def test_every_command_refuses_an_output_that_is_one_of_its_inputs(workshop, capsys, argv, clash):
    before = files_in(workshop)
    line = fails(capsys, argv, 2)
    assert f"the same file as {clash} " in line
    assert files_in(workshop) == before and os.path.islink(workshop / "link.npz")


def device_node(path):
    """A character device like /dev/null at path (skips where mknod is not permitted)."""
    import stat

    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    return path


def test_outputs_to_a_device_are_written_through_it(workshop, capsys):
    import stat

    null = device_node(workshop / "null")
    before = files_in(workshop)
    assert main(["quantize", "net.ckpt.npz", "-o", "null"]) == 0
    assert capsys.readouterr().out == "wrote null\n"  # not "(0 bytes)"
    assert main(["predict", "net.qmt", "in.csv", "-o", "null"]) == 0
    assert main(["train", "net.toml", "--epochs", "1", "-o", "null", "--qmt", "null", *TINY]) == 0
    assert "wrote null, null\n" in capsys.readouterr().out  # no null.history.json
    assert stat.S_ISCHR(os.stat(null).st_mode) and files_in(workshop) == before
    assert "--plot needs a path" in fails(capsys, ["train", "net.toml", "-o", "null", "--plot", *TINY], 2)


def test_output_to_a_link_writes_its_target_and_keeps_the_link(workshop, capsys):
    (workshop / "models").mkdir()
    os.symlink("models/real.qmt", workshop / "latest.qmt")
    assert main(["quantize", "net.ckpt.npz", "-o", "latest.qmt"]) == 0
    assert os.readlink(workshop / "latest.qmt") == "models/real.qmt"
    assert qmtik.load_model(workshop / "models" / "real.qmt").widths == (64, 8, 10)


def test_output_to_an_open_descriptor_goes_into_it(workshop, capsys):
    """-o /dev/stdout with stdout sent to a file: into that file, which is not replaced (a link
    to /proc/self/fd/N stands in for /dev/stdout; test_files checks the order of the lines)."""
    with open(workshop / "sent.txt", "wb") as sent:
        os.symlink(f"/proc/self/fd/{sent.fileno()}", workshop / "stdout")
        sent.write(b"before\n")
        sent.flush()
        assert main(["predict", "net.qmt", "in.csv", "-o", "stdout"]) == 0
    x, _ = qmtik.load_digits()
    expected = "".join(f"{c}\n" for c in qmtik.load_model(workshop / "net.qmt").predict(x[:5]))
    assert (workshop / "sent.txt").read_text() == "before\n" + expected
    assert os.path.islink(workshop / "stdout")


@pytest.mark.parametrize(
    "argv",
    [
        ["quantize", "net.ckpt.npz", "-o", "ro.qmt"],
        ["train", "net.toml", "--epochs", "1", "--qmt", "ro.qmt", *TINY],
        ["export-c", "net.qmt", "-o", "ro.qmt"],
        ["predict", "net.qmt", "in.csv", "-o", "ro.qmt"],
    ],
)
def test_a_read_only_output_is_refused_before_any_work(workshop, capsys, argv):
    (workshop / "ro.qmt").write_bytes(b"keep")
    (workshop / "ro.qmt").chmod(0o444)
    before = files_in(workshop)
    assert "ro.qmt: is read-only (mode 0444)" in fails(capsys, argv, 2)
    assert files_in(workshop) == before and (workshop / "ro.qmt").stat().st_mode & 0o777 == 0o444


def test_a_socket_or_a_folder_as_output_is_refused(workshop, capsys):
    import socket

    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(workshop / "sock"))
        assert "sock: is a socket" in fails(capsys, ["predict", "net.qmt", "in.csv", "-o", "sock"], 2)
        assert "sock: is a socket" in fails(capsys, ["quantize", "net.ckpt.npz", "-o", "sock"], 2)
    assert "is a directory" in fails(capsys, ["export-c", "net.qmt", "-o", str(workshop)], 2)


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "nodir/x.toml"],
        ["predict", "net.qmt", "in.csv", "-o", "nodir/p.csv"],
        ["config", "from-header", "h.h", "-o", "nodir/c.toml"],
    ],
)
def test_a_missing_folder_is_a_usage_error_for_every_command(workshop, capsys, argv):
    assert "folder nodir does not exist" in fails(capsys, argv, 2)


def test_train_refuses_to_overwrite_an_unfinished_run_without_resume_or_force(config, monkeypatch, capsys):
    argv = ["train", "net.toml", "--epochs", "3", *TINY]
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        assert main(argv) == 130
    checkpoint = config.with_name("net.ckpt.npz")
    before = checkpoint.read_bytes()
    line = fails(capsys, argv, 2)
    assert "net.ckpt.npz holds an unfinished run" in line and "--resume" in line and "--force" in line
    assert checkpoint.read_bytes() == before
    assert "give one of them" in fails(capsys, [*argv, "--resume", "--force"], 2)
    assert main([*argv, "--force"]) == 0  # starts over
    assert "resume.epoch" not in arrays_of(checkpoint)
    assert main(argv) == 0  # a finished run: retrained as asked
    checkpoint.write_bytes(b"PK\x03\x04 not a checkpoint")  # not one: overwritten as any output
    assert main(argv) == 0 and "resume.epoch" not in arrays_of(checkpoint)


# --- issue 10, round 2: outputs that are devices, pipes, descriptors or unfinished runs -------------


def test_data_convert_writes_an_npz_through_a_device_or_a_link_to_one(workshop, capsys):
    """np.savez seeks to finish its archive, which a device cannot: struct.error from zipfile."""
    device_node(workshop / "null.npz")
    os.symlink(os.devnull, workshop / "void.npz")
    before = files_in(workshop)
    for out in ("null", "void"):
        assert main(["data", "convert", "d.npz", "--to", "npz", "--split", "1", "-o", out]) == 0
        assert capsys.readouterr().out == f"wrote {out}.npz (10 samples of 2 classes)\n"
    assert files_in(workshop) == before


@pytest.mark.parametrize("out", ["pipe", "/dev/stdout", "/dev/fd/2"])
def test_train_refuses_a_checkpoint_output_that_takes_one_write(config, capsys, out):
    """train writes its checkpoint after every epoch: a FIFO blocked on the second write, and
    /dev/stdout received every epoch's checkpoint one after another."""
    os.mkfifo(config.parent / "pipe")
    reader = os.open(config.parent / "pipe", os.O_RDONLY | os.O_NONBLOCK)  # so that no write blocks
    try:
        line = fails(capsys, ["train", "net.toml", "-o", out, "--epochs", "2", *TINY], 2)
    finally:
        os.close(reader)
    assert f"output {out}: a checkpoint is written after every epoch, so it must be a file" in line


def with_stdout_in(path, argv, mode: str = "w+b") -> tuple[int, bytes]:
    """main(argv) with file descriptor 1 (what /dev/stdout opens) sent to the file path, opened
    in mode: the exit code and the bytes the file holds after."""
    saved = os.dup(1)
    try:
        with open(path, mode) as f:
            os.dup2(f.fileno(), 1)
            code = main(argv)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return code, Path(path).read_bytes()


@pytest.mark.parametrize(
    "argv",
    [
        ["quantize", "net.ckpt.npz", "-o", "/dev/stdout"],
        ["export-c", "net.qmt", "-o", "/dev/stdout", "--prefix", "net", "--check", "d.npz"],
        ["predict", "net.qmt", "in.csv", "-o", "/dev/stdout"],
        ["config", "from-header", "h.h", "-o", "/dev/stdout"],
        [
            "train",
            "net.toml",
            "--epochs",
            "1",
            "--set",
            "network.hidden=[8]",
            "-o",
            "t.ckpt.npz",
            "--qmt",
            "/dev/stdout",
        ],
        ["init", "/dev/stdout"],
    ],
    ids=["quantize", "export-c", "predict", "from-header", "train", "init"],
)
def test_an_output_to_stdout_is_all_stdout_holds(workshop, capsys, argv):
    """What a command says ('wrote /dev/stdout', train's epochs) goes to stderr then: it once
    followed the data on stdout, and a .qmt with a line of text after it is no .qmt."""
    if argv[0] == "export-c" and find_compiler() is None:
        pytest.skip("no C compiler")
    assert main([str(workshop / "reference") if a == "/dev/stdout" else a for a in argv]) == 0
    expected = (workshop / "reference").read_bytes()
    capsys.readouterr()
    code, written = with_stdout_in(workshop / "stdout.bin", argv)
    said = capsys.readouterr()
    assert code == 0 and written == expected
    assert said.out == "" and said.err.startswith(("wrote", "epoch")) and "/dev/stdout" in said.err


@pytest.mark.parametrize(
    "mode, argv",
    [
        ("ab", ["predict", "net.qmt", "in.csv", "-o", "FD"]),
        ("r+b", ["quantize", "net.ckpt.npz", "-o", "FD"]),
        ("r+b", ["export-c", "in.csv", "-o", "FD"]),
    ],
)
def test_a_descriptor_output_on_an_input_file_is_refused(workshop, capsys, mode, argv):
    """`-o /dev/stdout >> in.csv` appended to the input; `1<> c.ckpt.npz` overwrote the checkpoint."""
    before = files_in(workshop)
    victim = workshop / argv[1 if argv[0] == "export-c" else 2 if argv[0] == "predict" else 1]
    with open(victim, mode) as held:
        argv = [f"/dev/fd/{held.fileno()}" if a == "FD" else a for a in argv]
        assert "the same file as " in fails(capsys, argv, 2)
    assert files_in(workshop) == before


@pytest.mark.parametrize(
    "argv", [["predict", "net.qmt", "in.csv"], ["eval", "net.qmt", "in.csv", "--label-column", "0"], ["info", "in.csv"]]
)
def test_standard_output_on_an_input_file_is_refused(workshop, capsys, argv):
    """`qmtik predict m.qmt in.csv >> in.csv` appended the predictions to the input."""
    before = (workshop / "in.csv").read_bytes()
    code, after = with_stdout_in(workshop / "in.csv", argv, "ab")
    assert code == 2 and after == before
    assert "standard output /dev/stdout: the same file as " in capsys.readouterr().err


def unfinished_copy(checkpoint, path):
    """A copy of a checkpoint that says its run is unfinished (what train's refusal reads)."""
    with open(path, "wb") as f:  # np.savez(name) would add .npz to the name
        np.savez(f, **arrays_of(checkpoint), **{"resume.epoch": np.array(1)})
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "net.toml", "--epochs", "1", "-o", "other.ckpt.npz", "--qmt", "unf.ckpt.npz", *TINY],
        ["train", "net.toml", "--epochs", "1", "-o", "other.ckpt.npz", "--qmt", "unf.ckpt.npz", "--force", *TINY],
        ["train", "net.toml", "--epochs", "1", "-o", "unf.npz", *TINY],  # its history: unf.history.json
        ["quantize", "net.ckpt.npz", "-o", "unf.ckpt.npz"],
        ["export-c", "net.qmt", "-o", "unf.ckpt.npz"],
        ["predict", "net.qmt", "in.csv", "-o", "unf.ckpt.npz"],
        ["init", "unf.ckpt.npz", "--force"],
    ],
)
def test_no_output_replaces_an_unfinished_run(workshop, capsys, argv):
    unfinished_copy(workshop / "net.ckpt.npz", workshop / "unf.ckpt.npz")
    unfinished_copy(workshop / "net.ckpt.npz", workshop / "unf.history.json")
    before = files_in(workshop)
    line = fails(capsys, argv, 2)
    assert "holds an unfinished training run" in line and "qmtik train --resume" in line
    assert files_in(workshop) == before


def test_a_whole_section_through_set_is_one_line(config, capsys):
    for argv in (
        ["--set", "training=1", "--epochs", "1"],
        ["--set", "training=[1]", "--set", "training.seed=1"],
        ["--set", "network=1", "--set", "network.inputs=3"],
        ["--set", "network={hidden=[3]}"],
    ):
        line = fails(capsys, ["train", "net.toml", *argv, "-q"], 2)
        assert "a section, not a key" in line


def test_a_float16_checkpoint_is_one_line_and_no_warning(trained, capsys):
    arrays = arrays_of(trained)
    arrays["model.0.weight"] = arrays["model.0.weight"].astype(np.float16)
    np.savez(trained.with_name("half.ckpt.npz"), **arrays)
    assert "model.0.weight is float16" in fails(capsys, ["quantize", "half.ckpt.npz"], 1)


def test_inputs_beyond_float32_are_one_line_and_nothing_is_written(workshop, capsys):
    x, _ = qmtik.load_digits()
    big = x[:4].astype(np.float64)
    big[1, 5] = 1e300
    np.savez(workshop / "big.npz", x=big, y=np.arange(4))
    np.savetxt(workshop / "big.csv", big, delimiter=",")
    for argv in (
        ["export-c", "net.qmt", "-o", "big.h", "--check", "big.npz"],
        ["predict", "net.qmt", "big.csv"],
        ["eval", "net.qmt", "big.npz"],
        ["eval", "net.ckpt.npz", "big.npz"],
    ):
        assert "value 1.e+300 of sample 1 is beyond float32" in fails(capsys, argv, 1)
    assert not (workshop / "big.h").exists()


def test_export_c_reads_its_check_data_before_writing_the_header(workshop, capsys):
    np.savez(workshop / "bad.npz", x=np.zeros((3, 7)), y=np.zeros(3))
    assert "7 features per sample" in fails(capsys, ["export-c", "net.qmt", "-o", "n.h", "--check", "bad.npz"], 1)
    assert not (workshop / "n.h").exists()


def test_a_failed_write_names_its_output(workshop, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    line = fails(capsys, ["quantize", "net.ckpt.npz", "-o", "/dev/full"], 1)
    assert line == "qmtik: error: output /dev/full: cannot be written (No space left on device)"


def test_a_reader_that_has_gone_ends_the_command_quietly(workshop, capsys, monkeypatch):
    """qmtik predict ... | head -c1 printed 'qmtik: error: Broken pipe'; a command that loses its
    reader stops as cat does, exit 141 (128 + SIGPIPE), without a word."""
    import io

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", Gone())
    assert main(["predict", "net.qmt", "in.csv"]) == 141
    monkeypatch.undo()
    assert capsys.readouterr().err == ""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-m", "qmtik", "predict", "net.qmt", "in.csv"],
        cwd=workshop,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    child.stdout.close()  # the reader has gone before the first line
    assert child.wait(60) == 141 and child.stderr.read() == b""
    child.stderr.close()


def test_an_os_error_is_one_line_naming_its_file_when_it_has_one():
    from qmtik.cli import os_error_line

    assert (
        os_error_line(FileNotFoundError(2, "No such file or directory", "x.npz")) == "x.npz: No such file or directory"
    )
    assert os_error_line(OSError(28, "No space left on device")) == "No space left on device"
    assert os_error_line(OSError("odd")) == "odd"


def test_info_of_a_large_file_or_a_device_is_one_line_read_no_further(tmp_path, capsys):
    """`qmtik info` of a 1.5 GB file read all of it to report wrong magic; a link to /dev/zero
    ended in MemoryError."""
    big = tmp_path / "big.qmt"
    with open(big, "wb") as f:
        f.truncate(1_500_000_000)
    (tmp_path / "zero.qmt").symlink_to("/dev/zero")
    for name, problem in [("big.qmt", "not a qmtik model (wrong magic bytes)"), ("zero.qmt", "a device")]:
        assert main(["info", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err and "Traceback" not in err
