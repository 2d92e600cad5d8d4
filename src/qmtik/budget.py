"""Flash and RAM of a network on a target, from its topology alone, and the check of a budget.

`estimate(what, target)` takes a Config (nothing trained: the layers are laid out from the
topology, as training would, and turned into integer layers whose sizes do not depend on their
values), a Network or a QuantizedModel. Constants and arena are exact (the header's constant
arrays, integer_model.layer_memory and memory_needs: PREFIX_CONSTANT_BYTES and the arena or
scratch); code and stack are the target's stated allowances (targets.py), at or above what
arm-none-eabi-gcc -Os links (tests/test_budget.py holds them within 15% of the measured).
`qmtik train` calls `check_config` before reading data; the budget-aware search can call
`estimate` to reject a candidate without training it.
"""

from __future__ import annotations

import numpy as np

from .config import Config
from .config_deploy import show_size
from .errors import ConfigError
from .integer_model import QuantizedModel, arena_plan, layer_memory, memory_needs
from .layers import QuantSpec, init_layers
from .network import Network
from .passes import integer_layers
from .targets import TARGETS, Target, get_target


def model_of(what) -> QuantizedModel:
    """The integer model of a Config (laid out, untrained), a Network (fitted or not) or a
    QuantizedModel; its sizes are those of the trained one."""
    if isinstance(what, QuantizedModel):
        return what
    if isinstance(what, Network):
        if getattr(what, "layers_", None) is not None:
            return what.quantize()
        what = what.config
    if not isinstance(what, Config):
        raise ConfigError(f"estimate: got a {type(what).__name__}; allowed: a Config, a Network or a QuantizedModel")
    layers = init_layers(what, np.random.default_rng(0))
    for layer in layers:  # no data seen: any range gives the same sizes
        if hasattr(layer, "observed"):
            layer.observed = np.array([-1.0, 1.0])
    integer = integer_layers(layers, QuantSpec.from_config(what))
    return QuantizedModel(what.task, what.network.output, (0.0, 1.0), integer)


def _kernels(layers) -> list:
    """The index of the layer whose kernel runs each layer (a pool fused into its convolution:
    the convolution's), as export_c lays out its steps."""
    if all(layer.kind == "dense" for layer in layers):
        return list(range(len(layers)))
    owner = list(range(len(layers)))
    for step, *_ in arena_plan(layers)[1]:
        for i in step:
            owner[i] = step[0]
    return owner


def estimate(what, target: str | Target = "cortex-m4") -> dict:
    """{'target', 'layers': [{'layer', 'kind', 'constants' (exact), 'code' (allowance), 'flash',
    'ram' (its step's, exact)}], 'constants', 'code', 'flash', 'arena', 'stack', 'ram'}: bytes
    on target (a name or a Target). RAM is the arena (dense networks: the input and the two
    scratch buffers; with window layers PREFIX_ARENA_BYTES) plus the stack allowance."""
    target = target if isinstance(target, Target) else get_target(target) or TARGETS["cortex-m4"]
    model = model_of(what)
    layers, rows, seen = model.layers, [], set()
    owner = _kernels(layers)
    for i, (layer, memory) in enumerate(zip(layers, layer_memory(layers))):
        kernel = layer.kind if owner[i] == i else "fused " + layer.kind
        if owner[i] != i:
            code = target.code_fused_pool[kernel in seen]
        else:
            code = (target.code_more if kernel in seen else target.code_first)[layer.kind]
        seen.add(kernel)
        if getattr(layer, "table", None) is not None and "table" not in seen:
            code += target.code_table
            seen.add("table")
        constants = sum(memory["constants"].values())
        rows.append(
            {"layer": i + 1, "kind": layer.kind, "constants": constants, "code": code, "flash": constants + code}
            | {"ram": memory["ram"]}
        )
    need = memory_needs(model)
    code = target.code_base + sum(row["code"] for row in rows)
    stack = target.stack_dense if all(layer.kind == "dense" for layer in layers) else target.stack
    return {
        "target": target.name,
        "layers": rows,
        "constants": need["constants"],
        "code": code,
        "flash": need["constants"] + code,
        "arena": need["arena"],
        "stack": stack,
        "ram": need["arena"] + stack,
    }


def overshoot(figures: dict, max_flash: int = 0, max_ram: int = 0, exact: bool = False) -> str | None:
    """One line saying what exceeds a budget (0: none), the heaviest layer named; or None.
    figures: estimate's (exact False: code and stack are allowances) or a measurement's."""
    approx, known = ("", "") if exact else ("≈ ", " exact")
    for what, budget in (("flash", max_flash), ("RAM", max_ram)):
        need = figures["flash" if what == "flash" else "ram"]
        if not budget or need <= budget:
            continue
        if what == "flash":
            parts = f"constants {figures['constants']:,}{known}, code {approx}{figures['code']:,}"
            key = "constants"
        else:
            buffer = "scratch" if exact else "arena"  # measured: the buffer predict is given
            parts = f"{buffer} {figures['arena']:,}{known}, stack {approx}{figures['stack']:,}"
            key = "ram"
        line = f"needs {need:,} B of {what} ({parts}), the budget is {show_size(budget)}"
        rows = figures.get("layers") or []
        if rows:
            top = max(rows, key=lambda row: row[key])
            line += f"; layer {top['layer']} holds {top[key]:,} of them"
        return line
    return None


def check_config(config: Config) -> dict | None:
    """estimate() of the config on its [deploy] target; a ConfigError (one line) when it exceeds
    [deploy]'s max_flash or max_ram. None when [deploy] sets no budget (nothing is laid out)."""
    deploy = config.deploy
    if not (deploy.max_flash or deploy.max_ram):
        return None
    figures = estimate(config, deploy.target)
    problem = overshoot(figures, deploy.max_flash, deploy.max_ram)
    if problem:
        raise ConfigError(f"[deploy] on {figures['target']}: the network {problem}")
    return figures
