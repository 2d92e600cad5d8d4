"""What the config says about itself: the commented starter file (`qmtik init`) and the config
reference page (docs/config.md, `python -m qmtik.config_docs > docs/config.md`), both generated
from the fields' own help and allowed values in config.py, so neither can drift from it."""

from __future__ import annotations

import dataclasses
import json

from .config import SECTIONS, Config
from .config_layers import KEY_DOCS, KIND_KEYS, KINDS
from .functions import COSTS, HIDDEN_ACTIVATIONS, OUTPUTS, TASKS, combination_problem
from .limits import LIMITS, env_name


def toml_value(value) -> str:
    """A TOML literal of a config value: the one TOML writer (legacy.header_config writes with it too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: a layer of network.layers
        return "{" + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _documented_fields():
    """(section or '', field) for every config field, in file order."""
    yield "", next(f for f in dataclasses.fields(Config) if f.name == "task")
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield name, f


def starter_toml(changes: dict | None = None) -> str:
    """A commented config file with every key: the defaults, with `changes` ('section.key':
    value) applied and marked as such."""
    changes = changes or {}
    config = Config()
    for key, value in changes.items():
        config = config.replace(key, value)
    values, defaults = config.to_dict(), Config().to_dict()
    lines = [
        "# qmtik network description: every key, with its default unless marked. Delete what",
        "# you do not change. Reference: docs/config.md",
        "",
    ]
    current = ""
    for section, f in _documented_fields():
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        if section and f.name not in values[section]:
            continue  # derived or unused here (inputs and hidden beside network.layers)
        value = values[section][f.name] if section else values[f.name]
        key = f"{section}.{f.name}" if section else f.name
        note = ""
        if key in changes:
            note = f" [default {toml_value(defaults[section][f.name] if section else defaults[f.name])}]"
        lines.append(f"# {f.metadata['help']} ({f.metadata['allowed']}){note}")
        line = f"{f.name} = {toml_value(value)}"
        if key == "network.layers" and not value:  # left as a comment, [[network.layers]] tables can follow
            line = f"# {line}    (or [[network.layers]] tables after the last key of [network])"
        lines.append(line)
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """The config reference page: every key, its type, default and meaning."""
    defaults = Config().to_dict()
    lines = [
        "# Config reference",
        "",
        "Generated from `qmtik/config_sections.py` (`python -m qmtik.config_docs > docs/config.md`); "
        "a test keeps it current.",
        "Keys outside a table go at the top of the file; the rest belong to the table named.",
        "",
        "| key | allowed | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for section, f in _documented_fields():
        key = f"{section}.{f.name}" if section else f.name
        default = defaults[section][f.name] if section else defaults[f.name]
        lines.append(f"| `{key}` | {f.metadata['allowed']} | `{toml_value(default)}` | {f.metadata['help']} |")
    return "\n".join(lines) + "\n\n" + layers_markdown() + "\n" + limits_markdown() + "\n" + combinations_markdown()


def limits_markdown() -> str:
    """The [limits] section: how its keys and the QMTIK_MAX_* variables bound a network."""
    rows = [f"`{key}` or `{env_name(key)}`" for key, *_ in LIMITS.values()]
    return (
        "## Limits\n\n"
        "A network is checked against four limits when its config loads, before any data is read:\n"
        "a config over one is refused in one line naming the figure, its value, the limit and how to\n"
        f"raise it: {', '.join(rows)}.\n"
        "An environment variable, when set, wins over the `[limits]` key (the environment is the\n"
        "operator's, a config file may come from anyone); C headers and model files are checked\n"
        "against the same limits, raised by the environment only. Every limit, its default and why:\n"
        "[limits.md](limits.md).\n"
    )


def layers_markdown() -> str:
    """The keys of a `[[network.layers]]` table: which kinds take each, what it allows, its default."""
    lines = [
        "## Layer tables",
        "",
        "`network.layers` is a list of tables, one per layer, input side first, each written as a",
        '`[[network.layers]]` table (or inline, `layers = [{kind = "flatten"}, ...]`, as `--set` takes it).',
        "The output layer (dense, `outputs` units, linear scores) is implied after them, and a dense",
        "layer flattens a spatial input. Shapes are channels last; a 1-D network's input is",
        "`[length, channels]`, and its kernels, strides and pool sizes are integers. Each layer's",
        "shape is checked when the config loads. A key its kind does not take is refused.",
        "",
        "| key | kinds | allowed | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, (allowed, default, meaning) in KEY_DOCS.items():
        kinds = [kind for kind in KINDS if key in KIND_KEYS[kind]] if key != "kind" else ["all"]
        lines.append(f"| `{key}` | {', '.join(kinds)} | {allowed} | {default} | {meaning} |")
    lines += [
        "",
        "A layer's output: conv2d and conv1d have `filters` channels, depthwise_conv2d keeps its input's",
        "(one filter per channel), pointwise is a 1x1 conv2d, pools keep the channels, global_avg_pool",
        "leaves `[channels]`, flatten `[height * width * channels]`, dense `[units]`. With padding",
        '"same" a window of stride s leaves ceil(size / s) positions (TensorFlow\'s rule: an odd',
        "padding puts the extra row or column at the bottom or right); otherwise",
        "floor((size + pads - window) / stride) + 1.",
        "",
        "```toml",
        "[network]",
        "input_shape = [8, 8, 1]",
        "outputs = 10",
        "",
        "[[network.layers]]",
        'kind = "conv2d"',
        "filters = 8",
        "kernel = 3",
        'padding = "same"',
        "batch_norm = true",
        "",
        "[[network.layers]]",
        'kind = "max_pool"',
        "size = 2",
        "",
        "[[network.layers]]",
        'kind = "global_avg_pool"',
        "```",
    ]
    return "\n".join(lines) + "\n"


def combinations_markdown() -> str:
    """Which task x output x cost combinations train, and why the others are refused.

    Every hidden activation works with every combination that does, so it is not a column.
    """
    lines = [
        "## Output and cost combinations",
        "",
        "Every hidden activation (" + ", ".join(HIDDEN_ACTIVATIONS) + ") works with every "
        "combination marked as working; the others are refused with the reason shown.",
        "",
        "| task | output | cost | |",
        "| --- | --- | --- | --- |",
    ]
    for task in TASKS:
        for output in OUTPUTS:
            for cost in COSTS:
                problem = combination_problem(task, output, cost, outputs=10)
                lines.append(
                    f"| {task} | {output} | {cost} | {'works' if problem is None else 'refused: ' + problem} |"
                )
    lines += [
        "",
        'A classifier with a single output must use `output = "sigmoid"` (a yes/no class: '
        "class 1 when the probability is at least 0.5); softmax needs at least 2 outputs.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
