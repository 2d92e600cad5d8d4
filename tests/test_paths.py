"""paths.py: where outputs go by default, and an unfinished run's checkpoint told by its table of contents."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from qmtik.paths import (
    convert_outputs,
    curves_path,
    default_checkpoint,
    history_path,
    made_from,
    qmt_path,
    run_name,
    unfinished_run,
)


def test_a_run_is_named_by_its_config_and_its_files_sit_beside_the_checkpoint():
    ckpt = default_checkpoint("runs/digits.toml")
    assert ckpt == Path("runs/digits.ckpt.npz")
    assert run_name(ckpt) == "digits"
    assert history_path(ckpt) == Path("runs/digits.history.json")
    assert curves_path(ckpt) == Path("runs/digits.curves.png")
    assert qmt_path(ckpt) == Path("runs/digits.qmt")


@pytest.mark.parametrize(
    "checkpoint, name",
    [
        ("m.ckpt.npz", "m"),
        ("m.npz", "m"),
        ("m.ckpt", "m"),
        ("m", "m"),
        ("a.b.ckpt.npz", "a.b"),
        ("m.npz.ckpt", "m.npz"),
    ],
)
def test_the_run_name_drops_npz_then_ckpt_only(checkpoint, name):
    assert run_name(checkpoint) == name
    assert qmt_path(checkpoint) == Path(name + ".qmt")


def test_files_made_from_a_model_take_its_name_up_to_the_first_dot_here():
    assert made_from("runs/net.ckpt.npz", ".h") == Path("net.h")
    assert made_from("net.qmt", ".layers.png") == Path("net.layers.png")
    assert made_from("data/train.csv", "") == Path("train")


def test_convert_outputs_follow_the_split():
    assert convert_outputs(Path("out/m"), "npz", 1) == [Path("out/m.npz")]
    assert convert_outputs("m", "qmtik-bin", 0.8) == [Path("m_train.bin"), Path("m_test.bin")]


def test_an_unfinished_run_is_a_zip_holding_the_resume_epoch(tmp_path):
    running, done = tmp_path / "running.npz", tmp_path / "done.npz"
    np.savez(running, **{"resume.epoch": np.array(3), "w": np.zeros(2)})
    np.savez(done, w=np.zeros(2))
    assert unfinished_run(running) and not unfinished_run(done)


def test_what_is_no_zip_or_no_file_is_no_unfinished_run(tmp_path):
    (tmp_path / "text.npz").write_text("resume.epoch.npy")
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as archive:
        archive.writestr("resume.epoch.npy", b"x")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:-30])  # its directory cut off
    assert not unfinished_run(tmp_path / "text.npz")
    assert not unfinished_run(tmp_path / "cut.npz")
    assert not unfinished_run(tmp_path / "missing.npz")
    assert not unfinished_run(tmp_path)  # a folder
    assert not unfinished_run("/dev/null")  # a device is not opened
