"""Optimizers, in order of increasing complexity, and the learning-rate schedule.

An optimizer updates a list of parameter arrays in place from their gradients. Weight decay
applies to weights only (decay[i] is True for them), never to biases: as an L2 term added to
the gradient for sgd, adam and rmsprop, decoupled from it for adamw.
"""

from __future__ import annotations

import math

import numpy as np

from . import fused
from .config import TrainingConfig


class Optimizer:
    """Shared bookkeeping: the parameters, which of them decay, and named state arrays."""

    slots: tuple = ()
    nonnegative: tuple = ()  # slots that hold second moments, never below 0

    def __init__(self, params, decay, config: TrainingConfig):
        self.params, self.decay, self.config = params, decay, config
        self.state = {slot: [np.zeros_like(p) for p in params] for slot in self.slots}
        self.steps = 0

    def step(self, grads, lr: float) -> None:
        """Apply one update with learning rate lr."""
        self.steps += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            wd = self.config.weight_decay if self.decay[i] else 0.0
            self.update(i, p, g, lr, wd)

    def update(self, i, p, g, lr, wd):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_arrays(self) -> dict:
        """State as flat named arrays, for the checkpoint."""
        out = {"steps": np.array(self.steps)}
        for slot, arrays in self.state.items():
            out.update({f"{slot}.{i}": a for i, a in enumerate(arrays)})
        return out

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore state written by state_arrays (checked by checkpoint.load)."""
        self.steps = int(arrays["steps"])
        for slot, values in self.state.items():
            for i in range(len(values)):
                values[i][...] = arrays[f"{slot}.{i}"]


class SGD(Optimizer):
    """Plain sgd, or with (Nesterov) momentum when momentum > 0."""

    slots = ("velocity",)

    def update(self, i, p, g, lr, wd):
        if wd:
            g = g + wd * p
        m = self.config.momentum
        if m:
            v = self.state["velocity"][i]
            v *= m
            v += g
            g = g + m * v if self.config.nesterov else v
        p -= p.dtype.type(lr) * g


class RMSprop(Optimizer):
    """Divides each step by a moving root mean square of the gradient."""

    slots = ("square",)
    nonnegative = ("square",)

    def update(self, i, p, g, lr, wd):
        if wd:
            g = g + wd * p
        sq = self.state["square"][i]
        rho = self.config.rho
        sq *= rho
        sq += (1 - rho) * g * g
        p -= p.dtype.type(lr) * g / (np.sqrt(sq) + self.config.eps)


class Adam(Optimizer):
    """Adam with bias-corrected moments; weight decay as L2 added to the gradient."""

    slots = ("mean", "square")
    nonnegative = ("square",)
    decoupled = False

    def update(self, i, p, g, lr, wd):
        c = self.config
        if wd and self.decoupled:
            p -= p.dtype.type(lr * wd) * p
        elif wd:
            g = g + wd * p
        step = lr * math.sqrt(1 - c.beta2**self.steps) / (1 - c.beta1**self.steps)
        m, v = self.state["mean"][i], self.state["square"][i]
        fused.adam_update(p, g, m, v, c.beta1, c.beta2, c.eps, step, *self.buffers(i, p))

    def buffers(self, i, p):
        """Two scratch arrays of p's shape, made once, for the NumPy form of the update."""
        if not hasattr(self, "_buffers"):
            self._buffers = {}
        if i not in self._buffers:
            self._buffers[i] = (np.empty_like(p), np.empty_like(p))
        return self._buffers[i]


class AdamW(Adam):
    """Adam with weight decay decoupled from the gradient (Loshchilov and Hutter)."""

    decoupled = True


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def make_optimizer(config: TrainingConfig, params, decay) -> Optimizer:
    """The optimizer the config names, over these parameters."""
    return OPTIMIZERS[config.optimizer](params, decay, config)


def learning_rate(config: TrainingConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of a global step: linear warm-up, then constant, step or cosine."""
    lr = config.learning_rate
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return lr * (step + 1) / warmup
    if config.schedule == "step":
        return lr * config.gamma ** ((step // steps_per_epoch) // config.step_size)
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        t = (step - warmup) / max(total - warmup, 1)
        return config.min_learning_rate + (lr - config.min_learning_rate) * 0.5 * (1 + math.cos(math.pi * t))
    return lr
