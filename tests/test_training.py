"""The training loop on real data: accuracy, determinism, the kept epoch, divergence."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik import quantization as q
from qmtik.config import DIGITS_STARTER
from qmtik.layers import QuantSpec, integer_layers
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
    assert trained.score(x_test, y_test) >= 0.93      # held-out part, on the int8 arithmetic


def test_validation_accuracy_is_the_integer_models(trained, digits):
    """The figure training reports is what the integer layers compute, recomputed independently."""
    (x, y), _ = digits
    config = trained.config
    codes = quantize_inputs(x, trained.input_range_)
    _, val = split_validation(Split(codes, np.eye(10, dtype=np.float32)[y]), config.training.validation_split,
                              config.training.seed)
    out = val.codes
    for layer in integer_layers(trained.layers_, QuantSpec.from_config(config)):
        out = q.integer_forward(out, layer)
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
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
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
    config = digits_config(**{"training.optimizer": optimizer, "training.learning_rate": lr,
                              "training.epochs": 8, "training.nesterov": optimizer == "sgd"})
    net = qmtik.Network(config).fit(x, y)
    assert max(r["val_metric"] for r in net.history_["epochs"]) >= 0.9


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_every_schedule_with_warmup_learns_the_digits(digits, schedule):
    (x, y), _ = digits
    config = digits_config(**{"training.schedule": schedule, "training.warmup_epochs": 1.5,
                              "training.epochs": 8, "training.step_size": 4})
    net = qmtik.Network(config).fit(x, y)
    rates = [r["learning_rate"] for r in net.history_["epochs"]]
    if schedule == "constant":
        assert rates[-1] == pytest.approx(0.003)
    if schedule == "step":
        assert rates[3] == pytest.approx(0.003) and rates[4] == pytest.approx(0.0003)
    assert max(r["val_metric"] for r in net.history_["epochs"]) >= 0.9
