"""A qmtik.h config header (`qmtik_config.h`) read as the C library's build reads it.

`read_header` takes the defines the header leaves in force (preprocessor.header_defines), reads
its C literals (integers in any base, floats with suffixes, casts and parentheses) and its
switches (`#define QMTIK_OUTPUT QMTIK_SOFTMAX` or flag defines such as `QMTIK_SOFT_MAX_PP`), and
refuses, in one line naming the header, the line and the define, what the C library or qmtik
could not use. header_config.py turns the result into a qmtik Config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import limits
from .. import quantization as q
from ..errors import ConfigError
from ..functions import combination_problem
from .preprocessor import header_defines

f32 = np.float32
C_LEAK = 0.01  # qmtik.h's QMTIK_LEAK
SWITCHES = {  # switch: (value-style define, {normalised choice: qmtik name}, flag suffix)
    "activation": (
        "QMTIK_ACTIVATION",
        {"RELU": "relu", "LEAKYRELU": "leaky_relu", "SIGMOID": "sigmoid", "TANH": "tanh"},
        "_ACTV",
    ),
    "output": ("QMTIK_OUTPUT", {"LINEAR": "linear", "SOFTMAX": "softmax", "SIGMOID": "sigmoid"}, "_PP"),
    "cost": ("QMTIK_COST", {"MSE": "mse", "CROSSENTROPY": "cross_entropy"}, "_COST"),
    "optimizer": ("QMTIK_OPTIMIZER", {"ADAM": "adam", "SGD": "sgd", "MOMENTUM": "sgd"}, "_OPT"),
}
AMBIGUOUS_FLAGS = {"SIGMOID"}  # a bare QMTIK_SIGMOID could be the activation or the output
NUMBERS = {
    "QMTIK_I": int,
    "QMTIK_H": int,
    "QMTIK_L": int,
    "QMTIK_O": int,
    "QMTIK_W_SCALE": float,
    "QMTIK_A_SCALE": float,
    "QMTIK_EPOCHS": int,
    "QMTIK_BATCH_SIZE": int,
    "QMTIK_ALPHA": float,
    "QMTIK_INIT_ALPHA": float,
    "QMTIK_BETA1": float,
    "QMTIK_BETA2": float,
    "QMTIK_EPS": float,
    "QMTIK_MOMENTUM": float,
    "QMTIK_LEAK": float,
}
MAY_BE_ZERO = ("QMTIK_BETA1", "QMTIK_BETA2", "QMTIK_MOMENTUM")
REQUIRED = ("QMTIK_I", "QMTIK_H", "QMTIK_L", "QMTIK_O", "QMTIK_W_SCALE", "QMTIK_A_SCALE")


@dataclass(frozen=True)
class CHeader:
    """What a qmtik.h config header says: sizes, scales, switches and training numbers."""

    path: str
    inputs: int
    hidden: int
    hh_layers: int  # QMTIK_L: hidden-to-hidden layers after the input-to-hidden one
    outputs: int
    w_scale: float
    a_scale: float
    activation: str
    output: str
    cost: str
    optimizer: str = "adam"
    leak: float = C_LEAK
    numbers: dict = field(default_factory=dict)  # every numeric define read, by name
    ignored: tuple = ()  # QMTIK_ defines with no meaning here

    def __post_init__(self):
        """Refuse a network over the limits (limits.py: QMTIK_L 1000000000 is a count, never a
        list), and an output processing, cost and width that qmtik refuses to train
        (functions.combination_problem): one rule for `config from-header` and `import-c-model`,
        whose model of softmax over QMTIK_O 1 disagreed with the C library."""
        figures = limits.repeated_mlp_figures(self.inputs, self.hidden, self.hh_layers, self.outputs)
        limits.check(figures, f"C header {self.path}: the network", config_keys=False)  # before any list
        cost = qmtik_cost(self.cost, self.output)
        problem = combination_problem("classification", self.output, cost, self.outputs)
        if problem:
            raise ConfigError(
                f"C header {self.path}: QMTIK_O {self.outputs}, {self.output} output, {cost} cost: {problem}"
            )

    @property
    def widths(self) -> tuple:
        return (self.inputs, *[self.hidden] * (self.hh_layers + 1), self.outputs)


def qmtik_cost(cost: str, output: str) -> str:
    """qmtik's name of the C library's cost: its cross entropy with a sigmoid output is qmtik's
    binary cross entropy."""
    return "binary_cross_entropy" if cost == "cross_entropy" and output == "sigmoid" else cost


CAST = re.compile(
    r"\(\s*(?:const\s+)?(?:(?:unsigned|signed)\s+)?(?:float|double|int|long|short|char|"
    r"size_t|u?int\d+_t)\s*\)"
)


def _unwrap(text: str) -> str:
    """Drop outer parentheses and C casts: '((float)0.25f)' -> '0.25f'. One pass: the leading
    '(' and casts, then as many trailing ')' as '(' were dropped; unbalanced text is returned
    as it is (not a number). A value nested 100,000 deep costs no more than its length."""
    pos, opens = 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        cast = CAST.match(text, pos)
        if cast:
            pos = cast.end()
        elif text.startswith("(", pos):
            pos, opens = pos + 1, opens + 1
        else:
            break
    end = len(text)
    for _ in range(opens):
        while end > pos and text[end - 1].isspace():
            end -= 1
        if end == pos or text[end - 1] != ")":
            return text
        end -= 1
    return text[pos:end].strip()


# Each part of these can match a character one way only, so a failed match costs its length, not
# its square (\d+\.?\d* would try every split of 20,000 digits followed by an x: 17.8 s).
INTEGER = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)[uUlL]*")
FLOAT = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)[fFlL]?")


def _number(text: str, kind):
    """A C integer (decimal, 0x hexadecimal, 0 octal) or floating literal (suffixes, casts,
    parentheses allowed), or None; None too for a decimal beyond Python's int-digit limit."""
    text = _unwrap(text)
    if kind is int:
        m = INTEGER.fullmatch(text)
        if not m:
            return None
        sign, digits = m.groups()
        base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10
        try:
            value = int(digits, base)
        except ValueError:  # more than sys.get_int_max_str_digits() digits
            return None
        return -value if sign == "-" else value
    m = FLOAT.fullmatch(text)
    return float(m.group(1)) if m else None


def _choice(switch: str, defines: dict, path, used: set) -> str | None:
    """The qmtik name of a switch from `#define QMTIK_OUTPUT QMTIK_SOFTMAX` or a flag define
    (the defines it reads are added to used)."""
    key, choices, suffix = SWITCHES[switch]
    normal = lambda name: re.sub(r"^QMTIK_|_", "", re.sub(suffix + "$", "", name.upper()))  # noqa: E731
    if key in defines:
        line, value = defines[key]
        used.add(key)
        if normal(_unwrap(value)) not in choices:
            raise ConfigError(f"C header {path}, line {line}: {key} {value!r} is not one of {', '.join(choices)}")
        return choices[normal(_unwrap(value))]
    found = {}
    for name, (_line, value) in defines.items():
        flag = name.endswith(suffix) or (not value and normal(name) not in AMBIGUOUS_FLAGS)
        if name.startswith("QMTIK_") and flag and normal(name) in choices:
            found[name] = choices[normal(name)]
    if len(set(found.values())) > 1:
        raise ConfigError(f"C header {path}: more than one {switch} defined ({', '.join(found)})")
    used.update(found)
    return next(iter(found.values()), None)


def read_header(path) -> CHeader:
    """Read a qmtik.h config header: the defines it leaves in force, as the C build sees them
    (preprocessor.header_defines: #if, #ifdef, #else and #undef count). A missing define or a
    bad value is a ConfigError naming the header, the line and the define. Defines it does not
    know are ignored."""
    path = Path(path)
    defines = header_defines(path)
    numbers = {}
    for name, kind in NUMBERS.items():
        if name in defines:
            line, value = defines[name]
            numbers[name] = _number(value, kind)
            value_ok = numbers[name] is not None and (numbers[name] > 0 or (name in MAY_BE_ZERO and numbers[name] == 0))
            if value_ok and kind is float:  # the C library computes in float32
                with np.errstate(over="ignore"):
                    as_f32 = f32(numbers[name])
                value_ok = bool(np.isfinite(as_f32)) and (numbers[name] == 0 or abs(as_f32) >= np.finfo(f32).tiny)
            if not value_ok:
                wanted = (
                    "a positive integer"
                    if kind is int
                    else "a normal, finite float32 " + (">= 0" if name in MAY_BE_ZERO else "> 0")
                )
                shown = repr(value) if len(value) <= 40 else repr(value[:40]) + f"... ({len(value)} characters)"
                raise ConfigError(f"C header {path}, line {line}: {name} {shown} is not {wanted}")
    used = set(numbers)
    switches = {s: _choice(s, defines, path, used) for s in SWITCHES}
    missing = [n for n in REQUIRED if n not in numbers] + [
        f"the {s} (such as {SWITCHES[s][0]} or a *{SWITCHES[s][2]} flag)"
        for s in ("activation", "output", "cost")
        if switches[s] is None
    ]
    if missing:
        raise ConfigError(f"C header {path}: {missing[0]} is not defined")
    _check_scales(path, defines, numbers)
    if switches["optimizer"] is None:
        switches["optimizer"] = "sgd" if "QMTIK_MOMENTUM" in numbers else "adam"
    used.add("QMTIK_LR_NO_DECAY")  # qmtik.h's constant rate: schedule = "constant"
    ignored = tuple(n for n in defines if n.startswith("QMTIK_") and n not in used)
    return CHeader(
        str(path),
        numbers["QMTIK_I"],
        numbers["QMTIK_H"],
        numbers["QMTIK_L"],
        numbers["QMTIK_O"],
        numbers["QMTIK_W_SCALE"],
        numbers["QMTIK_A_SCALE"],
        switches["activation"],
        switches["output"],
        switches["cost"],
        switches["optimizer"],
        numbers.get("QMTIK_LEAK", C_LEAK),
        numbers,
        ignored,
    )


def _check_scales(path, defines: dict, numbers: dict) -> None:
    """Refuse a QMTIK_W_SCALE or QMTIK_A_SCALE that quantization.scale_problem refuses (they
    become the config's fixed scales and the imported model's), and a pair with which the C
    library's own float32 arithmetic overflows: a layer's largest sum, (inputs + 1) products
    of 128 weight steps by 128 activation steps, and that sum over A_SCALE must stay finite."""
    w, a = numbers["QMTIK_W_SCALE"], numbers["QMTIK_A_SCALE"]
    for name, value in (("QMTIK_W_SCALE", w), ("QMTIK_A_SCALE", a)):
        problem = q.scale_problem(value)
        if problem:
            line, text = defines[name]
            shown = repr(text) if len(text) <= 40 else repr(text[:40]) + f"... ({len(text)} characters)"
            raise ConfigError(f"C header {path}, line {line}: {name} {shown} {problem}")
    terms = min(max(numbers["QMTIK_I"], numbers["QMTIK_H"]), 2**64) + 1  # no real file is wider
    largest = terms * (128 * w) * (128 * a)  # float64: finite for any two float32 scales
    if largest > q.F32_MAX or largest / a > q.F32_MAX:
        raise ConfigError(
            f"C header {path}: QMTIK_W_SCALE {w:g} and QMTIK_A_SCALE {a:g} overflow float32 in the "
            f"C library's arithmetic (a layer's sum reaches {largest:.3g}, {largest / a:.3g} in "
            "activation steps)"
        )
