"""Export an integer model as one dependency-free, stb-style C header, from templates.

The C is in templates/*.h.in (string.Template, named holes): header.h.in the whole file,
requantize.h.in the shared arithmetic, one template per layer kind (dense.h.in), outputs.h.in
the class and the probabilities. This module computes the values and fills the holes; it
never edits generated text. The header holds the model as `static const` arrays (so they
live in flash) and the integer kernels; it is C99 and C++11, needs <stdint.h>, allocates
nothing, keeps no mutable state, and computes exactly what intref.py, the spec, computes
(docs/quantization.md). Generated text is deterministic: fixed order, no timestamps, the
kit's version and the model's CRC-32 recorded.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from importlib import resources
from string import Template

import numpy as np

from . import intref
from .errors import ExportError
from .integer_model import QuantizedModel, memory_needs
from .output_files import write_atomic
from .qmtfile import encode
from .version import __version__

PREFIX = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")  # matched whole: no newline slips through
MAX_PREFIX = 41
SECTION = re.compile(r"^/\*@ (\w+)\b.*?\*/[ \t]*$", re.M)  # a template's marker line in a .h.in
PROBABILITIES = {"softmax": "softmax (softmax)", "sigmoid": "sigmoid (sigmoid)", "linear": "values (dequantized)"}


def check_prefix(prefix: str) -> str:
    """The prefix of every name: a lowercase C identifier that no reserved name can come of.

    Lowercase, so that two prefixes never give the same upper-case macros (net and Net would);
    a letter first and no double or trailing underscore, because C reserves names that start
    with an underscore (glibc's guard is _STDINT_H) and C++ any name holding a double one, and
    prefix__ starts the header's private names.
    """
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX or not PREFIX.fullmatch(prefix):
        raise ExportError(
            f"prefix {prefix!r}: must be a lowercase C identifier (a-z first, then a-z, 0-9 and "
            f"single underscores inside), at most {MAX_PREFIX} characters"
        )
    return prefix


def prefix_from_name(name: str) -> str:
    """The default prefix for a header file name: 'Net-2.h' -> 'net_2'; 'model' when nothing is left."""
    words = re.findall(r"[a-z0-9]+", str(name).split(".")[0].lower())
    prefix = "_".join(words).lstrip("0123456789_")[:MAX_PREFIX].rstrip("_")
    return prefix or "model"


def _c_string(text: str) -> str:
    """A C string literal of text: printable ASCII as is (but ? and the quote characters), every
    other byte of its UTF-8 as an octal escape, so no trigraph or newline can break it."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_float(value: float, what: str) -> str:
    """A C float literal, in decimal, of value as a float32 (what names it in the error).

    Decimal, because hexadecimal float literals are C99 and C++17 but not C++11, and the header
    is both C and C++. Nine significant digits give back every float32 ('%.9g'); the decimal
    lies so close to the float32 that rounding it through float64 cannot change which float32
    it is, so the check below is the compiler's own reading. A value that float32 cannot hold
    is refused, never written as inff or nanf, which do not compile.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        single = np.float32(value)
    if not np.isfinite(single):
        raise ExportError(f"cannot export the model: its {what} {value!r} is not a finite float32")
    digits = "%.9g" % single
    literal = digits if any(c in digits for c in ".e") else digits + ".0"  # '1' is an int; '1.0f' a float
    if np.float32(float(literal)) != single:
        raise ExportError(f"cannot export the model: its {what} {value!r} has no exact decimal float32 literal")
    return literal + "f"


@lru_cache(maxsize=None)
def templates(name: str) -> dict:
    """The templates of templates/name (string.Template, holes ${name}): each runs from the line
    after its /*@ name ... */ marker to the next, blank lines at either end left out; the text
    before the first marker is a note for the reader."""
    text = resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")
    parts = SECTION.split(text)[1:]
    return {key: Template(body.strip("\n")) for key, body in zip(parts[::2], parts[1::2])}


def fill(name: str, section: str, **values) -> str:
    """Template section of templates/name with its holes filled; a missing template or a hole
    without a value is a bug of this module, said in one line."""
    template = templates(name).get(section)
    if template is None:
        raise ExportError(f"template {name} has no section {section}")
    try:
        return template.substitute(values)
    except KeyError as exc:
        raise ExportError(f"template {name}, {section}: no value for {exc.args[0]}") from None


def numbers(values, per_line: int = 24) -> str:
    """An array initializer's body: the integers, per_line to an indented line."""
    values = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    return ",\n".join("    " + ", ".join(values[i : i + per_line]) for i in range(0, len(values), per_line))


def export_c(model: QuantizedModel, prefix: str = "model") -> str:
    """The C header text of model; public names start with prefix_, private ones prefix__.
    A layer of a kind without a template (LAYER_KINDS) is refused, never written as dense."""
    p = check_prefix(prefix)
    for number, layer in enumerate(model.layers, 1):
        if layer.kind not in LAYER_KINDS:
            raise ExportError(
                f"layer {number} is a {layer.kind} layer: the C export has dense layers only "
                "(convolutions come with the next release)"
            )
    names = [f"{p}__l{i}" for i in range(len(model.layers))]
    layers = [LAYER_KINDS[layer.kind](p, n, layer) for n, layer in zip(names, model.layers)]
    return (
        fill(
            "header.h.in",
            "header",
            **_document(model, p),
            **_outputs(model, p),
            arrays="\n".join(constants for constants, _ in layers),
            arithmetic=fill("requantize.h.in", "requantize", p=p, saturation=intref.SATURATION),
            layers="\n\n".join(function for _, function in layers),
            calls="\n".join(_calls(names)),
        )
        + "\n"
    )


def save_header(path, model: QuantizedModel, prefix: str = "model") -> str:
    """Write model's C header (export_c) to path, atomically; returns its text."""
    text = export_c(model, prefix)
    write_atomic(path, lambda f: f.write(text.encode()))
    return text


def _document(model: QuantizedModel, p: str) -> dict:
    """The documentation block's values, the macros' and quantize_input's."""
    need = memory_needs(model)
    low, high = model.input_range
    gain = 255.0 / (high - low)  # float32 in C and in quantize_inputs
    names = ", ".join(map(_c_string, model.class_names or ()))
    return {
        "p": p,
        "P": p.upper(),
        "version": __version__,
        "crc": f"{zlib.crc32(encode(model)):08x}",
        "widths": "-".join(map(str, model.widths)),
        "task": model.task,
        "output": model.output,
        "activations": ", ".join(layer.activation for layer in model.layers),
        **{key: f"{need[key]:,}" for key in ("constants", "weights", "biases", "requantization", "tables")},
        "constant_bytes": need["constants"],
        "scratch_bytes": need["scratch"],
        "inputs": model.inputs,
        "outputs": model.outputs,
        "layer_count": len(model.layers),
        "class_names": fill("header.h.in", "class_names", P=p.upper(), names=names) if names else "",
        "probabilities_are": PROBABILITIES[model.output],
        "low": f"{low:g}",
        "span": f"{high - low:g}",
        "low_literal": c_float(low, "input range's low end"),
        "gain_literal": c_float(gain, "input gain 255 / (high - low)"),
    }


def _dense(p: str, n: str, layer: intref.IntegerLayer) -> tuple[str, str]:
    """A dense layer's constants and its function (templates/dense.h.in), named n."""
    outputs, inputs = layer.weights.shape
    shape = {"p": p, "n": n, "outputs": outputs, "inputs": inputs}
    constants = [
        fill(
            "dense.h.in",
            "constants",
            **shape,
            weight_count=layer.weights.size,
            weights=numbers(layer.weights),
            bias=numbers(layer.bias),
            multiplier=numbers(layer.output_multiplier),
            shift=numbers(layer.output_shift),
        )
    ]
    if layer.activation == "leaky_relu":
        constants.append(
            fill(
                "dense.h.in",
                "constants_leaky",
                **shape,
                neg_multiplier=numbers(layer.negative_multiplier),
                neg_shift=numbers(layer.negative_shift),
            )
        )
    if layer.table is not None:
        constants.append(fill("dense.h.in", "constants_table", **shape, table=numbers(layer.table, 16)))
        activate = fill("dense.h.in", "activate_table", **shape)
    else:
        low = layer.output_offset if layer.activation == "relu" else -128  # relu is this clamp
        activate = fill("dense.h.in", "activate_clamp", **shape, output_offset=layer.output_offset, low=low)
    requantize = fill("dense.h.in", "requantize_leaky" if layer.activation == "leaky_relu" else "requantize", **shape)
    return "\n".join(constants), fill(
        "dense.h.in", "layer", **shape, requantize=requantize, activate=activate, activation=layer.activation
    )


LAYER_KINDS = {"dense": _dense}  # IntegerLayer.kind -> its constants and function


def _calls(names: list) -> list:
    """predict's calls of the layers in turn, through the two halves of the scratch."""
    calls, source = [], "input"
    for i, name in enumerate(names):
        target = "scores" if i == len(names) - 1 else f"buffers[{i % 2}]"
        calls.append(fill("header.h.in", "call", layer=name, source=source, target=target))
        source = target
    return calls


def _outputs(model: QuantizedModel, p: str) -> dict:
    """predict's classify and the probabilities function (templates/outputs.h.in)."""
    last = model.layers[-1]
    values = {"p": p, "P": p.upper(), "zero": last.output_offset, "scale": c_float(last.output_scale, "output scale")}
    classify = "argmax" if model.outputs > 1 else "always" if last.output_offset == -128 else "threshold"
    return {
        "classify": fill("outputs.h.in", "classify_" + classify, **values),
        "probabilities": fill("outputs.h.in", "probabilities_" + model.output, **values),
    }
