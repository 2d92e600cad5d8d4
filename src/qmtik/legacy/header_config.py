"""The qmtik config equivalent to a qmtik.h config header (`qmtik config from-header`).

`_config_entries` lists each key with the define it comes from; `header_toml` writes them as
commented TOML (with config_docs.toml_value, the one TOML writer) and `config_from_header` loads
the same entries as a Config, so the text and the object cannot disagree.
"""

from __future__ import annotations

from ..config import Config
from ..config_docs import toml_value
from ..errors import ConfigError
from .header import CHeader, qmtik_cost, read_header


def _config_entries(h: CHeader) -> list:
    """(section, key, value, comment) of the equivalent config; value None: a comment line only."""
    n, train = h.numbers, Config().training
    cost = qmtik_cost(h.cost, h.output)
    rate_name = "QMTIK_ALPHA" if "QMTIK_ALPHA" in n else "QMTIK_INIT_ALPHA"
    rate = n.get(rate_name)
    mnist = (h.inputs, h.outputs) == (784, 10)  # the C library's example: 784 pixels, 10 digits
    entries = [
        ("", "task", "classification", "the C library scores classes (the largest output)"),
        ("network", "inputs", h.inputs, "QMTIK_I"),
        (
            "network",
            "hidden",
            [h.hidden] * (h.hh_layers + 1),
            f"QMTIK_H; QMTIK_L = {h.hh_layers} hidden-to-hidden layers after the input-to-hidden one",
        ),
        ("network", "outputs", h.outputs, "QMTIK_O"),
        ("network", "activation", h.activation, "the *_ACTV switch"),
        ("network", "output", h.output, "the *_PP switch"),
        ("network", "cost", cost, "the *_COST switch"),
        ("quantization", "weight_scale", h.w_scale, "QMTIK_W_SCALE, fixed, one scale for every weight"),
        (
            "quantization",
            "activation_scale",
            h.a_scale,
            "QMTIK_A_SCALE; qmtik's inputs keep their own scale 1/255 and relu outputs use zero point -128",
        ),
        ("training", "epochs", n.get("QMTIK_EPOCHS", train.epochs), "QMTIK_EPOCHS"),
        (
            "training",
            "optimizer",
            h.optimizer,
            "qmtik.h trains with Adam"
            if h.optimizer == "adam"
            else "momentum SGD: QMTIK_MOMENTUM or the optimizer switch",
        ),
        ("training", "learning_rate", rate if rate is not None else train.learning_rate, rate_name),
        ("training", "schedule", "constant", "qmtik.h keeps the learning rate constant"),
        ("training", "float_epochs", 0, "qmtik.h fake-quantizes from the first step"),
        ("training", "validation_split", 0.0, "qmtik.h trains on every sample and keeps the last epoch"),
    ]
    if h.activation == "leaky_relu":
        entries.insert(5, ("network", "leaky_slope", h.leak, "QMTIK_LEAK"))
    if h.optimizer == "adam":
        entries += [
            ("training", k.lower(), n.get("QMTIK_" + k, getattr(train, k.lower())), "QMTIK_" + k)
            for k in ("BETA1", "BETA2", "EPS")
        ]
    else:
        entries.append(("training", "momentum", n.get("QMTIK_MOMENTUM", train.momentum), "QMTIK_MOMENTUM"))
    if "QMTIK_BATCH_SIZE" in n:
        entries.append(
            (
                "training",
                "batch_size",
                n["QMTIK_BATCH_SIZE"],
                "QMTIK_BATCH_SIZE, not a qmtik.h define: qmtik.h updates after every sample, batch_size = 1",
            )
        )
    entries.append(
        (
            "data",
            "dataset",
            "mnist" if mnist else "digits",
            "the C library's MNIST example"
            if mnist
            else "set your data here: dataset = '' and train = 'your_train.bin' (qmtik-bin samples)",
        )
    )
    entries.append(
        (
            "data",
            "input_range",
            [0, 255] if mnist else "auto",
            "the C library's inputs: pixel - 128"
            if mnist
            else "the digits' own range; for pixels 0..255 of your own, [0, 255] is the C library's pixel - 128",
        )
    )
    entries += [("", name, None, "no qmtik equivalent; ignored") for name in h.ignored]
    return entries


def header_toml(path) -> str:
    """The qmtik config TOML equivalent to a qmtik.h config header (`qmtik config from-header`)."""
    h = read_header(path)
    config_from_header(path)  # refuse a header qmtik cannot train
    lines = [f"# qmtik config converted from the C library header {h.path}", "# see docs/c-library.md"]
    current, notes = "", []
    for section, key, value, comment in _config_entries(h):
        if value is None:
            notes.append(f"# {key}: {comment}")
            continue
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        lines.append(f"{key} = {toml_value(value)}    # {comment}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def config_from_header(path) -> Config:
    """The qmtik Config equivalent to a qmtik.h config header: what header_toml's text loads as."""
    data: dict = {}
    for section, key, value, _ in _config_entries(read_header(path)):
        if value is not None:
            (data.setdefault(section, {}) if section else data)[key] = value
    try:
        return Config.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"C header {path}: {exc}") from None
