"""The candidates of a search: a network drawn from the [tune] space, and whether it fits.

`candidate(config, ask)` builds the Config of one trial from the answers of `ask(name, kind,
values)`, which the engine's trial gives (tune.py: Optuna's suggest_*), so this module needs
no engine and a test can feed it answers by hand. `fits(candidate, budget)` says from the
topology alone (budget.estimate) what a candidate needs and why it cannot fit, before any
training.
"""

from __future__ import annotations

from dataclasses import dataclass

from .budget import estimate, overshoot
from .config import Config
from .errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """Where the network must fit: a target (budget.py's name) and its limits in bytes (0: none)."""

    target: str = "cortex-m4"
    max_flash: int = 0
    max_ram: int = 0

    @classmethod
    def of(cls, config: Config, target=None, max_flash=None, max_ram=None) -> "Budget":
        """The config's [deploy] budget, each part overridden where given (the command's flags)."""
        deploy = config.deploy
        target = target if target is not None else deploy.target
        return cls(
            "cortex-m4" if target == "host" else target,
            deploy.max_flash if max_flash is None else max_flash,
            deploy.max_ram if max_ram is None else max_ram,
        )

    def to_dict(self) -> dict:
        return {"target": self.target, "max_flash": self.max_flash, "max_ram": self.max_ram}


def space_problem(config: Config) -> str | None:
    """Why the config's [tune] space cannot be searched, or None."""
    tune = config.tune
    if config.task != "classification":
        return "qmtik tune scores the integer model's validation accuracy: it needs task = 'classification'"
    if tune.conv_layers[1] and len(config.network.input_shape) != 3:
        return (
            f"config key tune.conv_layers: got {list(tune.conv_layers)}, but convolutions need a 3-D "
            f"network.input_shape [height, width, channels] (it is {list(config.network.input_shape)})"
        )
    return None


def candidate(config: Config, ask) -> Config:
    """The Config of one trial: the [tune] space's answers (ask(name, kind, values), kind
    'int' for a range, 'choice' for a list of choices, 'log' for a log-scale float range)
    written into the base config's [network] and [training]."""
    tune = config.tune
    blocks = ask("conv_layers", "int", tune.conv_layers)
    layers = []
    for i in range(blocks):
        filters = ask(f"channels_{i}", "choice", tune.channels)
        kernel = ask(f"kernel_{i}", "choice", tune.kernel_sizes)
        layers.append({"kind": "conv2d", "filters": filters, "kernel": kernel, "padding": "same", "batch_norm": True})
        layers.append({"kind": "max_pool", "size": 2})
    depth = ask("depth", "int", tune.depth)
    widths = [ask(f"width_{i}", "choice", tune.widths) for i in range(depth)]
    changes = {
        "network.activation": ask("activation", "choice", tune.activation),
        "training.learning_rate": ask("learning_rate", "log", tune.learning_rate),
        "training.batch_size": ask("batch_size", "choice", tune.batch_size),
    }
    if layers:
        layers.append({"kind": "flatten"})
        layers += [{"kind": "dense", "units": width} for width in widths]
        changes |= {"network.layers": layers, "network.hidden": []}
    else:
        changes |= {"network.layers": [], "network.hidden": widths}
    try:
        return config.replace_many(changes)
    except ConfigError as exc:  # a window larger than what is left of the input, say
        raise Unfit(f"no such network: {exc}") from None


class Unfit(Exception):
    """A candidate that cannot be built or cannot fit the budget; its message says why."""


def fits(candidate_config: Config, budget: Budget) -> dict:
    """The candidate's flash and RAM on the budget's target (budget.estimate); Unfit when they
    exceed the budget, saying by how much."""
    figures = estimate(candidate_config, budget.target)
    problem = overshoot(figures, budget.max_flash, budget.max_ram)
    if problem:
        raise Unfit(problem)
    return figures


def network_line(config: Config) -> str:
    """A candidate's topology in one line: 'conv8k3-pool-flatten-64-10' or '64-32-10'."""
    parts = []
    for spec in config.network.layer_specs:
        if spec.kind == "conv2d":
            parts.append(f"conv{spec.filters}k{spec.kernel[0] if isinstance(spec.kernel, tuple) else spec.kernel}")
        elif spec.kind == "dense":
            parts.append(str(spec.units))
        else:
            parts.append(spec.kind.replace("max_", ""))
    return "-".join(parts)
