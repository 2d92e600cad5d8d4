"""The training loop on real data: accuracy, determinism, the kept epoch, divergence."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik import intref
from qmtik.config import DIGITS_STARTER
from qmtik.layers import QuantSpec
from qmtik.passes import integer_layers
from qmtik.quantization import quantize_inputs
from qmtik.training import Split, split_validation

SRC = Path(__file__).resolve().parents[1] / "src"


def digits_config(**changes):
    config = qmtik.Config()
    for key, value in {**DIGITS_STARTER, **changes}.items():
        config = config.replace(key, value)
    return config


@pytest.fixture(scope="module")
def trained(digits):
    (x, y), _ = digits
    return qmtik.Network(digits_config()).fit(x, y)


def test_bundled_digits_reach_95_percent_validation_accuracy(trained, digits):
    best = trained.history_["epochs"][trained.history_["best_epoch"] - 1]
    assert best["quantized"] is True
    assert best["val_metric"] >= 0.95
    _, (x_test, y_test) = digits
    assert trained.score(x_test, y_test) >= 0.93  # held-out part, on the int8 arithmetic


def test_validation_accuracy_is_the_integer_models(trained, digits):
    """The figure training reports is what the integer layers compute, recomputed independently."""
    (x, y), _ = digits
    config = trained.config
    codes = quantize_inputs(x, trained.input_range_)
    _, val = split_validation(
        Split(codes, np.eye(10, dtype=np.float32)[y]), config.training.validation_split, config.training.seed
    )
    out = val.codes
    for layer in integer_layers(trained.layers_, QuantSpec.from_config(config)):
        out = intref.layer_forward(out, layer)
    accuracy = (out.argmax(axis=1) == val.targets.argmax(axis=1)).mean()
    best = trained.history_["epochs"][trained.history_["best_epoch"] - 1]
    assert accuracy == best["val_metric"]


def test_the_best_epoch_by_validation_is_kept(trained):
    records = trained.history_["epochs"]
    best = trained.history_["best_epoch"]
    assert records[best - 1]["val_metric"] == max(r["val_metric"] for r in records)
    assert len(records) == 30


def test_same_seed_gives_the_same_bits(digits):
    (x, y), _ = digits
    config = digits_config(**{"training.epochs": 3})
    a = qmtik.Network(config).fit(x, y)
    b = qmtik.Network(config).fit(x, y)
    for la, lb in zip(a.layers_, b.layers_):
        assert la.weight.tobytes() == lb.weight.tobytes()
        assert la.bias.tobytes() == lb.bias.tobytes()
        assert la.observed.tobytes() == lb.observed.tobytes()
    c = qmtik.Network(config.replace("training.seed", 1)).fit(x, y)
    assert c.layers_[0].weight.tobytes() != a.layers_[0].weight.tobytes()


SCRIPT = """
import hashlib, sys, qmtik
(x, y), _ = qmtik.load_dataset("digits")
config = qmtik.Config().replace("training.epochs", 2).replace("training.batch_size", 32)
net = qmtik.Network(config).fit(x, y)
h = hashlib.sha256()
for layer in net.layers_:
    h.update(layer.weight.tobytes()); h.update(layer.bias.tobytes()); h.update(layer.observed.tobytes())
print(h.hexdigest())
"""


def test_same_seed_and_thread_count_give_the_same_bits_across_processes():
    """BLAS may split a sum differently for another thread count, so the count is pinned."""
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    runs = [
        subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert len(runs[0].stdout.strip()) == 64
    assert runs[0].stdout == runs[1].stdout


def test_float_epochs_come_first_and_only_int8_epochs_are_kept(digits):
    (x, y), _ = digits
    net = qmtik.Network(digits_config(**{"training.epochs": 4, "training.float_epochs": 2})).fit(x, y)
    assert [r["quantized"] for r in net.history_["epochs"]] == [False, False, True, True]
    assert net.history_["best_epoch"] in (3, 4)
    assert net.quantized_ is True


def test_all_float_training_runs_in_float(digits):
    (x, y), _ = digits
    net = qmtik.Network(digits_config(**{"training.epochs": 2, "training.float_epochs": 2})).fit(x, y)
    assert net.quantized_ is False
    assert net.evaluate(x, y)["int8"] is False


def test_without_validation_the_last_epoch_is_kept(digits):
    (x, y), _ = digits
    net = qmtik.Network(digits_config(**{"training.epochs": 3, "training.validation_split": 0.0})).fit(x, y)
    assert net.history_["best_epoch"] == 3
    assert all(r["val_metric"] is None for r in net.history_["epochs"])


def test_divergence_stops_with_a_clear_error(digits):
    (x, y), _ = digits
    config = digits_config(**{"training.learning_rate": 1e6, "training.epochs": 2})
    with pytest.raises(qmtik.TrainingError, match="diverged at epoch 1.*learning_rate"):
        qmtik.Network(config).fit(x, y)


def test_divergence_keeps_the_previous_checkpoint(digits, tmp_path):
    (x, y), _ = digits
    path = tmp_path / "run.ckpt.npz"
    qmtik.Network(digits_config(**{"training.epochs": 1})).fit(x, y, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(qmtik.TrainingError):
        qmtik.Network(digits_config(**{"training.learning_rate": 1e6})).fit(x, y, checkpoint=path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_learns_the_digits(digits, optimizer):
    (x, y), _ = digits
    lr = {"sgd": 0.05, "rmsprop": 0.001}.get(optimizer, 0.003)
    config = digits_config(
        **{
            "training.optimizer": optimizer,
            "training.learning_rate": lr,
            "training.epochs": 8,
            "training.nesterov": optimizer == "sgd",
        }
    )
    net = qmtik.Network(config).fit(x, y)
    assert max(r["val_metric"] for r in net.history_["epochs"]) >= 0.9


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_every_schedule_with_warmup_learns_the_digits(digits, schedule):
    (x, y), _ = digits
    config = digits_config(
        **{"training.schedule": schedule, "training.warmup_epochs": 1.5, "training.epochs": 8, "training.step_size": 4}
    )
    net = qmtik.Network(config).fit(x, y)
    rates = [r["learning_rate"] for r in net.history_["epochs"]]
    if schedule == "constant":
        assert rates[-1] == pytest.approx(0.003)
    if schedule == "step":
        assert rates[3] == pytest.approx(0.003) and rates[4] == pytest.approx(0.0003)
    assert max(r["val_metric"] for r in net.history_["epochs"]) >= 0.9


# --- issue 10: every blow-up is divergence, every resume field is checked ----------------------

import json  # noqa: E402
import warnings  # noqa: E402

from qmtik.progress import Silent  # noqa: E402

SMALL = {"network.hidden": [6], "training.batch_size": 256}


class StopAfter(Silent):
    """A reporter that interrupts training when epoch `epoch` ends (after its checkpoint)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.stop = epoch

    def end_epoch(self, record):
        if record["epoch"] == self.stop:
            raise KeyboardInterrupt


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "changes",
    [
        {"training.learning_rate": 1e20},
        {"training.learning_rate": 1e20, "training.float_epochs": 2},
        {"training.learning_rate": 3e38, "training.optimizer": "sgd", "training.momentum": 0.0},
        {"training.weight_decay": 1e30, "training.optimizer": "adam"},
        {"training.weight_decay": 1e30, "training.optimizer": "sgd"},
        {"training.learning_rate": 1e20, "network.activation": "sigmoid"},
        {"training.learning_rate": 1e20, "network.activation": "tanh", "training.float_epochs": 1},
    ],
    ids=["lr-int8", "lr-float", "lr-sgd", "decay-adam", "decay-sgd", "lr-sigmoid", "lr-tanh-then-int8"],
)
def test_a_blow_up_is_divergence_and_keeps_the_checkpoint(digits, tmp_path, changes):
    """Weights, gradients or observed ranges that leave float32 stop training with the one
    'training diverged' error (no ValueError from affine_params, no numpy warning), and the
    previous checkpoint stays as it was."""
    (x, y), _ = digits
    path = tmp_path / "run.ckpt.npz"
    qmtik.Network(digits_config(**SMALL, **{"training.epochs": 1})).fit(x, y, checkpoint=path)
    before = path.read_bytes()
    config = digits_config(**SMALL, **{"training.epochs": 2, **changes})
    with pytest.raises(qmtik.TrainingError) as info:
        qmtik.Network(config).fit(x, y, checkpoint=path)
    message = str(info.value)
    assert message.startswith("training diverged at epoch ") and "lower training.learning_rate" in message
    assert "\n" not in message
    if "training.weight_decay" in changes:
        assert "training.weight_decay (now 1e+30)" in message
    assert path.read_bytes() == before


def interrupted_run(digits, tmp_path, **changes):
    """A checkpoint of a run of 3 epochs stopped after the first, and the config it ran."""
    (x, y), _ = digits
    config = digits_config(**SMALL, **{"training.epochs": 3, **changes})
    path = tmp_path / "run.ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        qmtik.Network(config).fit(x, y, checkpoint=path, reporter=StopAfter(1))
    return path, config


def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays.update(changes)
    path.unlink()
    np.savez(path, **arrays)


def history_with(path, change) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        history = json.loads(str(archive["history"]))
    change(history)
    return np.array(json.dumps(history))


def test_an_interrupted_run_resumes(digits, tmp_path):
    (x, y), _ = digits
    path, config = interrupted_run(digits, tmp_path)
    net = qmtik.Network(config).fit(x, y, checkpoint=path, resume=True)
    assert [r["epoch"] for r in net.history_["epochs"]] == [1, 2, 3]


@pytest.mark.parametrize(
    "hostile, fragment",
    [
        (lambda p: {"history": history_with(p, lambda h: h["epochs"][0].pop("val_metric"))}, "val_metric None"),
        (lambda p: {"history": history_with(p, lambda h: h["epochs"][0].update(loss="low"))}, "loss 'low'"),
        (lambda p: {"history": history_with(p, lambda h: h.update(first_loss=True))}, "first_loss True"),
        (lambda p: {"optimizer.steps": np.array(-1)}, "optimizer.steps -1"),
        (lambda p: {"optimizer.steps": np.array(0)}, "optimizer.steps 0"),
        (lambda p: {"optimizer.steps": np.array(4.0)}, "optimizer.steps is float64"),
        (lambda p: {"optimizer.square.0": np.full((6, 64), -1.0, np.float32)}, "optimizer.square.0 holds negative"),
        (
            lambda p: {"optimizer.mean.1": np.full(6, 1e300)},
            "optimizer.mean.1 holds values that are not finite in float32",
        ),
        (lambda p: {"resume.0.weight": np.full((6, 64), 1e300)}, "resume.0.weight holds values beyond float32"),
        (lambda p: {"resume.1.observed": np.array([-3e38, 3e38])}, "resume.1.observed [-3e+38, 3e+38] is wider"),
    ],
    ids=[
        "no-val_metric",
        "loss-text",
        "first_loss-bool",
        "steps-1",
        "steps0",
        "steps-float",
        "moment-negative",
        "moment-1e300",
        "weights-1e300",
        "observed-wide",
    ],
)
def test_a_hostile_resume_state_is_refused_naming_the_field(digits, tmp_path, hostile, fragment):
    """Fields training reads on resume used to fail as KeyError (a record without val_metric),
    ZeroDivisionError (optimizer.steps -1) or a float32 overflow; each is a CheckpointError."""
    (x, y), _ = digits
    path, config = interrupted_run(digits, tmp_path)
    rewrite(path, **hostile(path))
    with pytest.raises(qmtik.CheckpointError) as info:
        qmtik.Network(config).fit(x, y, checkpoint=path, resume=True)
    assert str(info.value).startswith(f"checkpoint {path}: ") and fragment in str(info.value)


def test_resume_needs_the_steps_of_this_training_data(digits, tmp_path):
    (x, y), _ = digits
    path, config = interrupted_run(digits, tmp_path)
    rewrite(path, **{"optimizer.steps": np.array(5)})  # the data takes 6 steps an epoch
    with pytest.raises(
        qmtik.CheckpointError, match="its 1 epochs took 5 steps, where this training data takes 6 an epoch"
    ):
        qmtik.Network(config).fit(x, y, checkpoint=path, resume=True)


def test_resume_needs_validation_exactly_when_the_run_had_it(digits, tmp_path):
    (x, y), _ = digits
    path, config = interrupted_run(digits, tmp_path)
    rewrite(path, history=history_with(path, lambda h: h["epochs"][0].update(val_loss=None, val_metric=None)))
    with pytest.raises(qmtik.CheckpointError, match="its run had no validation data and this one has"):
        qmtik.Network(config).fit(x, y, checkpoint=path, resume=True)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("key", ["resume.0.weight", "optimizer.mean.0"])
@pytest.mark.parametrize("float_epochs", [0, 3])
def test_a_resume_state_at_the_float32_limit_is_divergence(digits, tmp_path, key, float_epochs):
    """Weights or moments finite in float32 but far too large make the first step overflow:
    'training diverged', with the checkpoint kept, not a ValueError or a numpy warning."""
    (x, y), _ = digits
    path, config = interrupted_run(digits, tmp_path, **{"training.float_epochs": float_epochs})
    shape = (6, 64)
    rewrite(path, **{key: np.full(shape, 3e38, np.float32)})
    before = path.read_bytes()
    with pytest.raises(qmtik.TrainingError, match="^training diverged at epoch 2, step 1: "):
        qmtik.Network(config).fit(x, y, checkpoint=path, resume=True)
    assert path.read_bytes() == before


# --- from the command line: one line on stderr, or nothing --------------------------------------


def run_cli(capsys, argv) -> tuple[int, str]:
    """main(argv) with every warning an error: (exit code, stderr)."""
    from qmtik.cli import main

    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, code, fragment",
    [
        (["--learning-rate", "1e20"], 1, "training diverged at epoch 1"),
        (["--set", "training.weight_decay=1e30"], 1, "training diverged at epoch 1"),
        (["--set", "training.eps=1e-320"], 2, "config key training.eps: got 1e-320"),
        (["--set", "training.weight_decay=1e300"], 2, "config key training.weight_decay: got 1e+300"),
        (["--set", "quantization.weight_scale=1e300"], 2, "config key quantization.weight_scale: got 1e+300"),
        (["--set", "quantization.activation_scale=1e-320"], 2, "config key quantization.activation_scale: got 1e-320"),
        (["--set", "training.schedule=cosin"], 2, "config key training.schedule: got 'cosin'"),
    ],
)
def test_extreme_values_from_the_command_line_end_in_one_line(tmp_path, monkeypatch, capsys, argv, code, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.toml").write_text("[network]\nhidden = [6]\n[training]\nepochs = 2\nbatch_size = 256\n")
    status, err = run_cli(capsys, ["train", "t.toml", "-q", *argv])
    assert status == code and err.startswith("qmtik: error: ") and fragment in err
    assert len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.toml"]


@pytest.mark.parametrize(
    "changes",
    [
        ["--set", "network.activation='sigmoid'", "--set", "quantization.activation_scale=1e30"],
        ["--set", "quantization.weight_scale=1.2e-38", "--set", "network.activation='tanh'"],
        ["--set", "training.eps=1.2e-38", "--set", "training.float_epochs=1", "--learning-rate", "1e-30"],
    ],
    ids=["sigmoid-table-of-1e30", "tiny-weight-scale", "tiny-eps-and-rate"],
)
def test_successful_commands_write_nothing_on_stderr(tmp_path, monkeypatch, capsys, changes):
    """Extreme but accepted values: train, eval, quantize, info, export-c and predict succeed
    with stderr empty (numpy warnings used to appear there)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.toml").write_text("[network]\nhidden = [6]\n[training]\nepochs = 1\nbatch_size = 256\n")
    np.savetxt(tmp_path / "in.csv", np.random.default_rng(0).uniform(0, 16, (4, 64)), delimiter=",")
    for argv in (
        ["train", "t.toml", "-q", "--qmt", "t.qmt", *changes],
        ["eval", "t.ckpt.npz"],
        ["eval", "t.qmt", "digits"],
        ["quantize", "t.ckpt.npz", "-o", "u.qmt"],
        ["info", "t.ckpt.npz"],
        ["export-c", "t.qmt", "-o", "t.h"],
        ["predict", "t.ckpt.npz", "in.csv"],
        ["predict", "t.qmt", "in.csv"],
    ):
        assert run_cli(capsys, argv) == (0, ""), argv


@pytest.mark.parametrize("epochs, chosen, first_frozen", [(10, "auto", 8), (2, "auto", 1), (1, "auto", 1), (10, 3, 2)])
def test_batch_statistics_freeze_from_the_chosen_epoch(epochs, chosen, first_frozen):
    """'auto' freezes the last two epochs but never the first; a number is the first frozen
    epoch counted from 1 (the config's), returned counted from 0 (the loop's)."""
    from qmtik.training import statistics_frozen_from

    config = qmtik.Config().replace_many({"training.epochs": epochs, "training.freeze_bn_epoch": chosen})
    assert statistics_frozen_from(config.training) == first_frozen


@pytest.mark.parametrize("bad", [0, -1, 1.5, "last", True])
def test_freeze_bn_epoch_refuses_what_is_not_auto_or_an_epoch(bad):
    with pytest.raises(qmtik.ConfigError, match="training.freeze_bn_epoch.*'auto' or an integer >= 1"):
        qmtik.Config().replace("training.freeze_bn_epoch", bad)


def test_a_cnn_trains_its_batch_norm_then_freezes_it_and_the_kept_model_is_the_integer_one():
    """A tiny CNN on the digits, 3 epochs: the moving statistics move during the first two
    (batch statistics) and stay in the last (frozen); the integer model's predictions equal the
    network's fake-quantized ones."""
    x, y = qmtik.load_dataset("digits")[0]
    layers = [
        {"kind": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "batch_norm": True},
        {"kind": "max_pool", "size": 2},
        {"kind": "global_avg_pool"},
    ]
    config = qmtik.Config().replace_many(
        {"network.input_shape": [8, 8, 1], "network.layers": layers, "training.epochs": 3, "data.input_range": [0, 16]}
    )
    net = qmtik.Network(config).fit(x[:400], y[:400])
    norm = net.layers_[0].norm
    assert norm is not None and norm.frozen and not np.allclose(norm.var, 1.0)
    model = net.quantize()
    np.testing.assert_array_equal(model.predict(x), net.predict(x))


def test_a_bad_qmtik_threads_is_refused_before_training(digits, monkeypatch):
    (x, y), _ = digits
    monkeypatch.setenv("QMTIK_THREADS", "lots")
    with pytest.raises(qmtik.ConfigError, match=r"^environment variable QMTIK_THREADS: got 'lots'; allowed: an "):
        qmtik.Network(digits_config(**{"training.epochs": 1})).fit(x, y)
