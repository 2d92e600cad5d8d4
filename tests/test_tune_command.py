"""qmtik tune on the command line, in-process: its outputs beside the config, checked first;
its refusals in one line; --resume, --export and --plot."""

import sys

import pytest

from qmtik.cli import main
from qmtik.cli.tune_command import parse_timeout
from qmtik.config import load_config
from qmtik.errors import UsageError

pytest.importorskip("optuna", reason="qmtik tune needs the [tune] extra (optuna)")

CONFIG = """\
[data]
dataset = "digits"

[training]
epochs = 2

[deploy]
max_flash = "2K"

[tune]
widths = [4, 8, 32]
depth = [1, 1]
trial_epochs = [1]
trial_samples = 400
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(CONFIG)
    return path


def fails(capsys, argv, code):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_search_writes_the_study_and_the_best_config_beside_the_config(config, capsys):
    assert main(["tune", str(config), "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "budget flash 2,048 B, RAM any on cortex-m4" in out  # [deploy]'s
    assert "this worker: 3 trials trained" in out and "Pareto front" in out
    assert (config.parent / "net.tune.db").is_file()
    best = load_config(config.parent / "net.best.toml")
    assert best.deploy.max_flash == 2048 and best.training.epochs == 2 and best.network.hidden in ((4,), (8,))


def test_an_existing_study_needs_resume_and_resume_needs_one(config, capsys):
    assert "no study file" in fails(capsys, ["tune", str(config), "--trials", "2", "--resume"], 2)
    assert main(["tune", str(config), "--trials", "2", "-q"]) == 0
    capsys.readouterr()
    assert "pass --resume" in fails(capsys, ["tune", str(config), "--trials", "3"], 2)
    assert main(["tune", str(config), "--trials", "3", "--resume", "-q"]) == 0
    assert "this worker: 1 trials trained" in capsys.readouterr().out
    err = fails(capsys, ["tune", str(config), "--trials", "4", "--resume", "--max-flash", "4K"], 1)
    assert "searched over another space (changed: budget.max_flash)" in err


def test_flags_override_the_budget(config, capsys):
    assert main(["tune", str(config), "--trials", "1", "--max-flash", "64K", "--target", "cortex-m0", "-q"]) == 0
    assert "budget flash 65,536 B, RAM any on cortex-m0" in capsys.readouterr().out


def test_bad_arguments_are_refused_before_any_work(config, capsys):
    assert "--max-flash" in fails(capsys, ["tune", str(config), "--trials", "1", "--max-flash", "64Q"], 2)
    assert "--timeout" in fails(capsys, ["tune", str(config), "--trials", "1", "--timeout", "soon"], 2)
    assert "--trials 0" in fails(capsys, ["tune", str(config), "--trials", "0"], 2)
    assert "the config" in fails(capsys, ["tune", str(config), "--trials", "1", "-o", str(config)], 2)
    assert not (config.parent / "net.tune.db").exists()


def test_an_unknown_tune_key_and_an_unreachable_storage_are_one_line(config, capsys):
    config.write_text(CONFIG + "sampler_seed = 3\n")
    assert "tune.sampler_seed: unknown key" in fails(capsys, ["tune", str(config), "--trials", "1"], 2)
    config.write_text(CONFIG)
    err = fails(capsys, ["tune", str(config), "--trials", "1", "--storage", "postgresql://a:pw@127.0.0.1:1/x"], 1)
    assert "cannot be opened" in err and "pw" not in err


def test_export_trains_the_winner_and_writes_its_model_and_header(config, capsys):
    assert main(["tune", str(config), "--trials", "2", "--export", "-q"]) == 0
    out = capsys.readouterr().out
    assert "the winner, trained fully: test accuracy" in out
    for suffix in (".best.ckpt.npz", ".best.qmt", ".best.h"):
        assert (config.parent / f"net{suffix}").is_file()
    header = (config.parent / "net.best.h").read_text()
    assert "NET_IMPLEMENTATION" in header and "classification network in int8 arithmetic" in header


def test_plot_draws_the_front(config, capsys):
    pytest.importorskip("matplotlib", reason="the plot needs the [plot] extra")
    assert main(["tune", str(config), "--trials", "2", "--plot", "-q"]) == 0
    assert (config.parent / "net.front.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("1.5h", 5400)])
def test_timeouts(text, seconds):
    assert parse_timeout(text) == seconds


def test_a_zero_timeout_is_refused():
    with pytest.raises(UsageError):
        parse_timeout("0")


def test_without_the_extra_the_command_says_how_to_install_it_and_writes_nothing(config, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    err = fails(capsys, ["tune", str(config), "--trials", "1"], 1)
    assert "qmtik tune needs the [tune] extra (Optuna): pip install 'qmtik[tune]'" in err
    assert sorted(p.name for p in config.parent.iterdir()) == ["net.toml"]
