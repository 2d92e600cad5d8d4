"""The checks of config values, and the messages that say what each key allows.

Each check returns the value (normalised: numbers as float, lists as tuples) or raises
ConfigError naming the key, the value given (cut short: a hostile file's value can be 100 kB)
and what is allowed. config_sections.py calls them as each section is built.
"""

from __future__ import annotations

import difflib
import reprlib
from dataclasses import field

from .errors import ConfigError
from .quantization import F32_MAX, F32_TINY, SCALE_MAX, input_range_problem, scale_problem

INT64_MAX = 2**63 - 1
INPUT_RANGE_ALLOWED = "'auto' or [low, high], finite in float32, with low < high"
FLOAT32_ALLOWED = f"a number from {F32_TINY:.3g} to {F32_MAX:.3g} (a normal float32: training computes in float32)"
SCALE_ALLOWED = (
    f"'auto' or a number from {F32_TINY:.3g} to {SCALE_MAX:.3g} (a normal float32 whose 256 steps stay finite)"
)


def documented(default, help: str, allowed: str):
    """A dataclass field with the help text and allowed values the docs and starter config show."""
    if isinstance(default, list):
        return field(default_factory=lambda: tuple(default), metadata={"help": help, "allowed": allowed})
    return field(default=default, metadata={"help": help, "allowed": allowed})


class _Shown(reprlib.Repr):
    """repr cut short: a hostile file's value can be a 100,000-character string, a list nested
    hundreds deep or a hexadecimal integer too long for repr (Python's int-digit limit)."""

    def repr_int(self, value, level):
        if value.bit_length() > 128:
            return f"<an integer of {len(hex(abs(value))) - 2} hexadecimal digits>"
        return repr(value)


_SHOWN = _Shown()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 3, 8, 8


def shown(value) -> str:
    """A value as an error message shows it, cut short, with its TOML kind: "'x' (a string)"."""
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        tuple: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    return f"{_SHOWN.repr(value)} ({kind})"


def refuse(key: str, value, allowed: str):
    """Raise the one-line ConfigError of a bad value: the key, the value given, what is allowed."""
    raise ConfigError(f"config key {key}: got {shown(value)}; allowed: {allowed}")


def integer(key, value, lo=None, hi=None):
    """An integer (not a boolean) from lo to hi, within int64."""
    allowed = (
        "an integer"
        + (f" >= {lo}" if lo is not None else "")
        + (f" and <= {_SHOWN.repr(hi)}" if hi is not None else "")
    )  # hi may be another key's value
    if isinstance(value, bool) or not isinstance(value, int):
        refuse(key, value, allowed)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        refuse(key, value, allowed)
    if abs(value) > INT64_MAX:  # JSON (the checkpoint) and numpy must hold it
        refuse(key, value, f"{allowed}, within int64")
    return value


def number(key, value, lo=None, hi=None, lo_open=False, hi_open=False):
    """A finite number as a float, within lo and hi (each bound open or closed)."""
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_SHOWN.repr(hi)}")  # hi may be another key's value
    allowed = "a number" + (" " + " and ".join(parts) if parts else "")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value
        or value in (float("inf"), float("-inf"))
    ):
        refuse(key, value, allowed)
    try:
        value = float(value)
    except OverflowError:
        refuse(key, value, allowed)
    if lo is not None and (value <= lo if lo_open else value < lo):
        refuse(key, value, allowed)
    if hi is not None and (value >= hi if hi_open else value > hi):
        refuse(key, value, allowed)
    return value


def choice(key, value, choices):
    """One of choices; a near miss is named in the message ("did you mean 'relu'?")."""
    if not isinstance(value, str) or value not in choices:
        hint = ""
        if isinstance(value, str):
            close = [c for c in choices if c.lower() == value.lower()] or difflib.get_close_matches(value, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        refuse(key, value, ", ".join(repr(c) for c in choices) + hint)
    return value


def boolean(key, value):
    """true or false (not 0 or 1)."""
    if not isinstance(value, bool):
        refuse(key, value, "true or false")
    return value


def float32(key, value, zero_ok: bool = False):
    """A number training's float32 arithmetic holds without making it 0 or infinite: a normal
    float32 (or exactly 0 when zero_ok). An eps of 1e-320 would be 0 there (and 0 / 0 NaN)."""
    allowed = ("0 or " if zero_ok else "") + FLOAT32_ALLOWED
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        refuse(key, value, allowed)
    try:
        as_float = float(value)
    except OverflowError:
        refuse(key, value, allowed)
    if not ((zero_ok and as_float == 0) or F32_TINY <= as_float <= F32_MAX):
        refuse(key, value, allowed)
    return as_float


def auto_or_scale(key, value):
    """'auto', or a fixed scale that int8 codes can step by (quantization.scale_problem)."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
        refuse(key, value, SCALE_ALLOWED)
    try:
        as_float = float(value)
    except OverflowError:
        refuse(key, value, SCALE_ALLOWED)
    if as_float != as_float or scale_problem(as_float):
        refuse(key, value, SCALE_ALLOWED)
    return as_float


def text(key, value):
    """A string."""
    if not isinstance(value, str):
        refuse(key, value, "a string")
    return value


def unknown(key: str, allowed, prefix: str = "", listed=None):
    """Raise the ConfigError of an unknown key, naming the closest allowed one, then listing
    the allowed keys (or listed, a shorter summary of them: every key of every section would
    make a line over a thousand characters)."""
    name = key[len(prefix) :] if prefix else key
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
    short = key if key.isprintable() else repr(key)  # a newline in a key stays on one line
    short = short if len(short) <= 80 else short[:80] + "..."  # a hostile file's key can be 100 kB
    shown = ", ".join(allowed if listed is None else listed)
    raise ConfigError(f"config key {short}: unknown key{hint} (allowed: {shown})")


def input_range(key, value):
    """'auto', or [low, high] as a tuple of floats that int8 input codes can map
    (quantization.input_range_problem)."""
    if value == "auto":
        return value
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        refuse(key, value, INPUT_RANGE_ALLOWED)
    try:
        low, high = float(value[0]), float(value[1])
    except OverflowError:
        refuse(key, value, INPUT_RANGE_ALLOWED)
    if input_range_problem(low, high):
        refuse(key, value, INPUT_RANGE_ALLOWED)
    return (low, high)
