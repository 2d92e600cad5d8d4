"""What the config says about itself: the commented starter file (`qmtik init`) and the config
reference page (docs/config.md, `python -m qmtik.config_docs > docs/config.md`), both generated
from the fields' own help and allowed values in config.py, so neither can drift from it."""

from __future__ import annotations

import dataclasses
import json

from .config import SECTIONS, Config
from .functions import COSTS, HIDDEN_ACTIVATIONS, OUTPUTS, TASKS, combination_problem


def toml_value(value) -> str:
    """A TOML literal of a config value: the one TOML writer (legacy.header_config writes with it too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
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
        value = values[section][f.name] if section else values[f.name]
        key = f"{section}.{f.name}" if section else f.name
        note = ""
        if key in changes:
            note = f" [default {toml_value(defaults[section][f.name] if section else defaults[f.name])}]"
        lines.append(f"# {f.metadata['help']} ({f.metadata['allowed']}){note}")
        lines.append(f"{f.name} = {toml_value(value)}")
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
    return "\n".join(lines) + "\n\n" + combinations_markdown()


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
