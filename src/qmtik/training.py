"""The training loop: mini-batches, fake quantization after the float epochs, validation on
the integer arithmetic, the best epoch kept, checkpoints to resume from, divergence stopped."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .config import Config
from .errors import CheckpointError, QuantizationError, TrainingError
from .functions import cost, process_output
from .fused_windows import set_threads
from .head import accuracy
from .layers import QuantSpec, init_layers
from .optimizers import learning_rate, make_optimizer
from .passes import backward, forward, parameters, predict_scores
from .progress import Reporter, Silent


@dataclass
class Split:
    """Int8 input codes and float targets of one part of the data."""

    codes: np.ndarray
    targets: np.ndarray

    def __len__(self):
        return len(self.codes)


def split_validation(data: Split, share: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out a seeded random share of the samples for validation (none when share is 0)."""
    n_val = int(round(len(data) * share))
    if share == 0 or n_val == 0:
        return data, None
    if n_val >= len(data):
        raise TrainingError(f"training.validation_split = {share} leaves no training samples out of {len(data)}")
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(data))
    train, val = np.sort(order[n_val:]), np.sort(order[:n_val])
    return (Split(data.codes[train], data.targets[train]), Split(data.codes[val], data.targets[val]))


def metric(config: Config, scores, targets) -> float:
    """Accuracy for classification, mean squared error of the outputs for regression."""
    if config.task == "classification":
        return accuracy(scores, targets)
    return float(((process_output(config.network.output, scores) - targets) ** 2).mean())


def is_better(config: Config, record: dict, best: dict | None) -> bool:
    """Higher validation accuracy (then lower loss) wins for classes, lower loss for regression."""
    if best is None:
        return True
    if config.task == "classification":
        return (record["val_metric"], -record["val_loss"]) > (best["val_metric"], -best["val_loss"])
    return record["val_loss"] < best["val_loss"]


def evaluate_split(config, layers, spec, data: Split, quantized: bool) -> tuple[float, float]:
    """(loss, metric) of the network on data, on the integer arithmetic when quantized."""
    scores = predict_scores(layers, data.codes, spec, quantized)
    loss, _ = cost(config.network.cost, config.network.output, scores, data.targets)
    return float(loss), metric(config, scores, data.targets)


DIVERGENCE_FACTOR = 1e4  # a batch loss this many times the first epoch's first one has diverged


def diverged(where: str, what: str, config: Config) -> TrainingError:
    """The one error of a diverged run: where (epoch and step), what blew up, what to lower."""
    tc = config.training
    knobs = f"training.learning_rate (now {tc.learning_rate:g})"
    if tc.weight_decay:
        knobs += f" or training.weight_decay (now {tc.weight_decay:g})"
    return TrainingError(f"training diverged at {where}: {what}; lower {knobs}")


def check_divergence(loss: float, reference: float, epoch: int, step: int, config: Config) -> None:
    """Stop with TrainingError when the loss is NaN or infinite or has exploded."""
    if np.isfinite(loss) and loss <= DIVERGENCE_FACTOR * max(reference, 1.0):
        return
    what = f"became {loss}" if not np.isfinite(loss) else f"grew to {loss:.3g} from {reference:.3g}"
    raise diverged(f"epoch {epoch + 1}, step {step + 1}", f"the loss {what}", config)


@contextmanager
def watched(where: str, what: str, config: Config):
    """Run a part of training with numpy's overflow, invalid operation and division by zero
    raising: weights, gradients, moments or observed ranges that leave float32 (or become NaN)
    there mean the run diverged, and it stops with that error before anything is saved.

    So does a requantization multiplier out of range when both scales are automatic: only
    weights grown far beyond their layer's range make one (a fixed scale may be the cause
    instead, and its QuantizationError says to check it).
    """
    qc = config.quantization
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            yield
    except FloatingPointError as exc:
        raise diverged(where, f"{what} overflowed float32 or became NaN ({exc})", config) from None
    except QuantizationError as exc:
        if qc.weight_scale == "auto" and qc.activation_scale == "auto":
            raise diverged(where, f"{what}: {exc}", config) from None
        raise


def run_epoch(
    config, layers, optimizer, spec, data: Split, epoch: int, quantized: bool, reporter, reference: list
) -> tuple[float, float, float]:
    """One pass over data in a seeded order; returns (mean loss, metric, last learning rate).

    reference holds the first batch loss of the run (set by the first step), for divergence.
    """
    tc = config.training
    steps = -(-len(data) // tc.batch_size)
    order = np.random.default_rng([tc.seed, epoch]).permutation(len(data))
    total_loss, hits, lr = 0.0, 0.0, tc.learning_rate
    reporter.start_epoch(epoch + 1, tc.epochs, steps)
    for step in range(steps):
        batch = order[step * tc.batch_size : (step + 1) * tc.batch_size]
        targets = data.targets[batch]
        where = f"epoch {epoch + 1}, step {step + 1}"
        with watched(where, "the forward pass", config):
            scores, caches = forward(layers, data.codes[batch], spec, quantized, training=True)
            loss, grad = cost(config.network.cost, config.network.output, scores, targets)
            hits += metric(config, scores, targets) * len(batch)
        if not reference:
            reference.append(float(loss))
        check_divergence(float(loss), reference[0], epoch, step, config)
        with watched(where, "the gradients", config):
            grads = backward(layers, caches, grad.astype(scores.dtype, copy=False), spec)
        lr = learning_rate(tc, epoch * steps + step, steps)
        with watched(where, "the weight update", config):
            optimizer.step([g for pair in grads for g in pair], lr)
        total_loss += float(loss) * len(batch)
        reporter.step(step + 1)
    return total_loss / len(data), hits / len(data), lr


def statistics_frozen_from(tc) -> int:
    """The first epoch (counted from 0 here, from 1 in the config) whose steps normalize with
    the moving statistics, frozen: training.freeze_bn_epoch, or by default the last two epochs
    (never the first), so that the epochs kept train on exactly the arithmetic that ships."""
    if tc.freeze_bn_epoch == "auto":
        return max(tc.epochs - 2, 1)
    return tc.freeze_bn_epoch - 1


def freeze_statistics(layers, frozen: bool) -> None:
    """Set whether the layers' batch normalizations use the moving statistics."""
    for layer in layers:
        if layer.norm is not None:
            layer.norm.frozen = frozen


def checked_resume(checkpoint, config: Config, input_range, train_data: Split, val_data: Split | None) -> dict:
    """The checked state of an unfinished run (checkpoint.load checks every field) that this
    run can go on from: the same config and input range, the same number of steps per epoch
    (the same training data), and validation figures exactly when this run validates."""
    state = ckpt.load(checkpoint)
    if state["resume"] is None:
        raise CheckpointError(f"checkpoint {checkpoint}: its run finished; nothing to resume")
    saved = state["config"]
    changed = [
        name
        for name in ("task", "network", "quantization", "training", "data")
        if getattr(saved, name) != getattr(config, name)
    ]
    if changed or tuple(state["input_range"]) != tuple(input_range):
        raise CheckpointError(
            f"checkpoint {checkpoint}: cannot resume it with another config "
            f"({', '.join(changed) or 'input range'} differ); resume with the same one"
        )
    epoch, steps = state["resume"]["epoch"], int(state["resume"]["optimizer"]["steps"])
    per_epoch = -(-len(train_data) // config.training.batch_size)
    if steps != epoch * per_epoch:
        raise CheckpointError(
            f"checkpoint {checkpoint}: its {epoch} epochs took {steps} steps, where this "
            f"training data takes {per_epoch} an epoch; resume with the same data"
        )
    validated = state["history"]["epochs"][0]["val_loss"] is not None
    if validated != (val_data is not None):
        raise CheckpointError(
            f"checkpoint {checkpoint}: its run {'had' if validated else 'had no'} validation "
            f"data and this one {'has' if val_data is not None else 'has none'}; "
            "resume with the same"
        )
    return state


def train(
    config: Config,
    input_range,
    train_data: Split,
    val_data: Split | None = None,
    *,
    checkpoint=None,
    resume: bool = False,
    reporter: Reporter | None = None,
    class_names=None,
    init=None,
):
    """Train a network; returns (kept layers, whether they ran fake-quantized, history).

    init, a list of layers of the config's topology (a float import's), is where the weights
    start instead of random ones (their observed ranges too: none yet means the first step's).

    The kept epoch is the best by validation among the epochs trained in the final mode (with
    fake quantization when any epoch uses it), or the last when there is no validation data.
    With a checkpoint path, the state is saved after every epoch; resume goes on from it.
    """
    set_threads(strict=True)  # a bad QMTIK_THREADS is refused before any work
    reporter = reporter or Silent()
    tc = config.training
    spec = QuantSpec.from_config(config)
    layers = init_layers(config, np.random.default_rng(tc.seed))
    for layer, start_from in zip(layers, init or ()):
        layer.load_state(start_from.state())
    params, decay = parameters(layers)
    optimizer = make_optimizer(tc, params, decay)
    history, best, kept, start, reference = {"epochs": [], "best_epoch": None, "first_loss": None}, None, None, 0, []
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = checked_resume(checkpoint, config, input_range, train_data, val_data)
        for layer, saved in zip(layers, state["resume"]["layers"]):
            layer.load_state(saved.state())
        optimizer.load_state_arrays(state["resume"]["optimizer"])
        history, start = state["history"], state["resume"]["epoch"]
        reference.append(history["first_loss"])
        kept = (state["layers"], state["quantized"])
        if history["best_epoch"] is not None:
            best = history["epochs"][history["best_epoch"] - 1]
        reporter.message(f"resuming after epoch {start} from {checkpoint}")
    for epoch in range(start, tc.epochs):
        quantized = epoch >= tc.float_epochs
        freeze_statistics(layers, epoch >= statistics_frozen_from(tc))
        began = time.perf_counter()
        loss, train_metric, lr = run_epoch(
            config, layers, optimizer, spec, train_data, epoch, quantized, reporter, reference
        )
        history["first_loss"] = reference[0]
        record = {
            "epoch": epoch + 1,
            "loss": loss,
            "train_metric": train_metric,
            "val_loss": None,
            "val_metric": None,
            "quantized": quantized,
            "learning_rate": lr,
        }
        if val_data is not None:
            with watched(f"epoch {epoch + 1}", "the validation", config):
                record["val_loss"], record["val_metric"] = evaluate_split(config, layers, spec, val_data, quantized)
        record["seconds"] = time.perf_counter() - began
        history["epochs"].append(record)
        final_mode = quantized == (tc.float_epochs < tc.epochs)
        if final_mode and (val_data is None or is_better(config, record, best)):
            best, kept = record, ([layer.copy() for layer in layers], quantized)
            history["best_epoch"] = epoch + 1
        if checkpoint is not None:
            resume_state = (
                None
                if epoch + 1 == tc.epochs
                else {"epoch": epoch + 1, "layers": layers, "optimizer": optimizer.state_arrays()}
            )
            chosen = kept or ([layer.copy() for layer in layers], quantized)
            ckpt.save(checkpoint, config, input_range, chosen[0], chosen[1], history, resume_state, class_names)
        reporter.end_epoch(record)
    return kept[0], kept[1], history
