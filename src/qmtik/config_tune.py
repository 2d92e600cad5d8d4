"""The config's [tune] section: the space `qmtik tune` searches, and how each trial trains.

A candidate network is `conv_layers` convolution blocks (conv2d with `channels` filters and a
`kernel_sizes` window, batch norm, then a 2x2 max pool; only over a 3-D network.input_shape),
a flatten, then `depth` dense layers of `widths` units, then the implied output layer. A
range is [low, high], both included; a list of choices is any non-empty list. Each trial
trains on at most `trial_samples` samples for one of `trial_epochs` epochs; the winner is
trained fully by `qmtik train` (or `qmtik tune --export`) with the config's [training].
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from . import config_values as check
from .config_values import documented
from .functions import HIDDEN_ACTIVATIONS
from .quantization import MAX_FAN_IN

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
SPACE_KEYS = (  # the keys that make the search space: a study resumed with others is refused
    "widths",
    "depth",
    "conv_layers",
    "channels",
    "kernel_sizes",
    "learning_rate",
    "batch_size",
    "trial_epochs",
    "activation",
    "trial_samples",
    "sampler",
    "pruner",
)


def _choices(key, value, lo, hi) -> tuple:
    """A non-empty list of distinct integers from lo to hi."""
    what = f"a non-empty list of distinct integers from {lo} to {hi}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        check.refuse(key, value, what)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not lo <= item <= hi:
            check.refuse(key, list(value), what)
    if len(set(value)) != len(value):
        check.refuse(key, list(value), what)
    return tuple(value)


def _range(key, value, lo, hi) -> tuple:
    """[low, high] integers with lo <= low <= high <= hi."""
    what = f"a range [low, high] of integers from {lo} to {hi}, low <= high"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        check.refuse(key, value, what)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not lo <= item <= hi:
            check.refuse(key, list(value), what)
    if value[0] > value[1]:
        check.refuse(key, list(value), what)
    return tuple(value)


@dataclass(frozen=True)
class TuneConfig:
    """What `qmtik tune` searches (ranges and choices) and how each trial trains."""

    widths: tuple = documented(
        [16, 32, 64, 128], "tune: choices of a dense hidden layer's width", "a non-empty list of integers >= 1"
    )
    depth: tuple = documented(
        [1, 2], "tune: dense hidden layers, [fewest, most]", "a range [low, high] of integers >= 0"
    )
    conv_layers: tuple = documented(
        [0, 0],
        "tune: convolution blocks (conv2d, batch norm, 2x2 max pool) before the dense layers, [fewest, most]; "
        "more than 0 needs a 3-D network.input_shape",
        "a range [low, high] of integers from 0 to 8",
    )
    channels: tuple = documented(
        [8, 16, 32], "tune: choices of a convolution's filters", "a non-empty list of integers >= 1"
    )
    kernel_sizes: tuple = documented(
        [3, 5], "tune: choices of a convolution's kernel side", "a non-empty list of integers from 1 to 15"
    )
    learning_rate: tuple = documented(
        [0.0005, 0.01], "tune: the learning rate's range, searched on a log scale", "[low, high], 0 < low <= high"
    )
    batch_size: tuple = documented([64, 128], "tune: choices of the batch size", "a non-empty list of integers >= 1")
    trial_epochs: tuple = documented(
        [3], "tune: choices of the epochs a trial trains (the winner trains training.epochs)", "integers >= 1"
    )
    activation: tuple = documented(
        ["relu"], "tune: choices of the hidden activation", "a non-empty list of " + " | ".join(HIDDEN_ACTIVATIONS)
    )
    trial_samples: int = documented(
        15000, "tune: training samples a trial uses at most (a fixed, seeded subset)", "an integer >= 1"
    )
    sampler: str = documented("tpe", "tune: how the engine (Optuna) picks candidates", " | ".join(SAMPLERS))
    pruner: str = documented(
        "median", "tune: stop a trial whose validation accuracy is below the median after an epoch", " | ".join(PRUNERS)
    )
    max_rejected: int = documented(
        1000, "tune: candidates over the budget a worker may reject before it gives up", "an integer >= 1"
    )
    heartbeat: int = documented(
        60, "tune: seconds between a running trial's heartbeats in the study", "an integer from 1 to 3600"
    )
    grace: int = documented(
        120,
        "tune: seconds without a heartbeat after which a trial counts as dead and is run again",
        "an integer from 1 to 86400",
    )

    def __post_init__(self):
        k = "tune."
        object.__setattr__(self, "widths", _choices(k + "widths", self.widths, 1, MAX_FAN_IN))
        object.__setattr__(self, "depth", _range(k + "depth", self.depth, 0, 64))
        object.__setattr__(self, "conv_layers", _range(k + "conv_layers", self.conv_layers, 0, 8))
        object.__setattr__(self, "channels", _choices(k + "channels", self.channels, 1, 4096))
        object.__setattr__(self, "kernel_sizes", _choices(k + "kernel_sizes", self.kernel_sizes, 1, 15))
        object.__setattr__(self, "batch_size", _choices(k + "batch_size", self.batch_size, 1, 1 << 20))
        object.__setattr__(self, "trial_epochs", _choices(k + "trial_epochs", self.trial_epochs, 1, 10000))
        rate = self.learning_rate
        if isinstance(rate, (str, bytes)) or not isinstance(rate, (list, tuple)) or len(rate) != 2:
            check.refuse(k + "learning_rate", rate, "[low, high], 0 < low <= high")
        low, high = (check.float32(k + "learning_rate", value) for value in rate)
        if low > high:
            check.refuse(k + "learning_rate", list(rate), "[low, high], 0 < low <= high")
        object.__setattr__(self, "learning_rate", (low, high))
        acts = self.activation
        if isinstance(acts, (str, bytes)) or not isinstance(acts, (list, tuple)) or not acts:
            check.refuse(k + "activation", acts, "a non-empty list of " + " | ".join(HIDDEN_ACTIVATIONS))
        for name in acts:
            check.choice(k + "activation", name, HIDDEN_ACTIVATIONS)
        object.__setattr__(self, "activation", tuple(dict.fromkeys(acts)))
        check.integer(k + "trial_samples", self.trial_samples, 1)
        check.choice(k + "sampler", self.sampler, SAMPLERS)
        check.choice(k + "pruner", self.pruner, PRUNERS)
        check.integer(k + "max_rejected", self.max_rejected, 1)
        check.integer(k + "heartbeat", self.heartbeat, 1, 3600)
        check.integer(k + "grace", self.grace, 1, 86400)
        if self.grace <= self.heartbeat:
            check.refuse(k + "grace", self.grace, f"more seconds than tune.heartbeat ({self.heartbeat})")

    def space(self) -> dict:
        """The keys that make the search space, as plain data (a study records it)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name in SPACE_KEYS}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
