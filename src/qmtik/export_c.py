"""Export an integer model as one dependency-free, stb-style C header, from templates.

The C is in templates/*.h.in (string.Template, named holes): header.h.in the whole file,
requantize.h.in the shared arithmetic, one template per layer kind (dense.h.in), outputs.h.in
the class and the probabilities, windows.h.in the convolutions and pools (over flat NHWC
rows). This module computes the values and fills the holes; it
never edits generated text. The header holds the model as `static const` arrays (so they
live in flash) and the integer kernels; it is C99 and C++11, needs <stdint.h>, allocates
nothing, keeps no mutable state, and computes exactly what intref.py, the spec, computes
(docs/quantization.md). Generated text is deterministic: fixed order, no timestamps, the
kit's version and the model's CRC-32 recorded.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from string import Template

import numpy as np

from . import intref, intref_windows, selftest
from .errors import ExportError
from .integer_model import QuantizedModel, arena_plan, memory_needs
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
            raise ExportError(f"layer {number} is a {layer.kind} layer, which the C export has no kernel for")
    steps = _steps(model.layers)
    parts = [_step(p, model.layers, step, order) for step, _, order in steps]
    values = _document(model, p)
    kind = "scratch" if _dense_only(model.layers) else "arena"
    return (
        fill(
            "header.h.in",
            "header",
            **values,
            **_outputs(model, p),
            **_workspace(steps, p, values, kind),
            **selftest.holes(model, p, kind, fill),
            arrays="\n".join(constants for constants, _ in parts if constants),
            arithmetic=_arithmetic(model, p),
            layers="\n\n".join(function for _, function in parts),
        )
        + "\n"
    )


def _arithmetic(model: QuantizedModel, p: str) -> str:
    """The shared arithmetic: requantization, and the dot products when a dense layer uses them."""
    text = fill("requantize.h.in", "requantize", p=p, saturation=intref.SATURATION)
    if any(layer.kind == "dense" for layer in model.layers):
        text += "\n\n" + fill("dots.h.in", "dots", p=p, P=p.upper())
    return text


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
        "crc": f"{int.from_bytes(encode(model)[-4:], 'little'):08x}",  # the .qmt file's own CRC-32
        "widths": "-".join(map(str, model.widths)),
        "task": model.task,
        "output": model.output,
        "activations": ", ".join(_layer_word(layer) for layer in model.layers),
        **{key: f"{need[key]:,}" for key in ("constants", "weights", "biases", "requantization", "tables")},
        "constant_bytes": need["constants"],
        "scratch_bytes": need["scratch"],
        "arena_bytes": need["arena"],
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


def _layer_word(layer) -> str:
    """The doc block's word for a layer: a dense layer's activation (as ever), a window layer's
    kind too ('conv2d relu', 'max_pool')."""
    if layer.kind == "dense":
        return layer.activation
    return layer.kind + (f" {layer.activation}" if isinstance(layer, intref.IntegerLayer) else "")


def _dense(p: str, n: str, layer: intref.IntegerLayer, order=None) -> tuple[str, str]:
    """A dense layer's constants and its function (templates/dense.h.in), named n (never in place)."""
    outputs, inputs = layer.weights.shape
    constants, requantize, activate = _requantized(p, n, layer, "acc[o]", "first + o")
    return constants, fill(
        "dense.h.in",
        "layer",
        p=p,
        n=n,
        outputs=outputs,
        inputs=inputs,
        requantize=requantize,
        activate=activate,
        activation=layer.activation,
    )


def _requantized(p: str, n: str, layer: intref.IntegerLayer, acc: str, channel: str) -> tuple[str, str, str]:
    """The constants of a layer with weights (dense and the convolutions: dense.h.in's), and
    the C expressions of r and of the output code from the accumulator acc of output channel."""
    outputs, inputs = layer.weights.shape
    shape = {"p": p, "n": n, "outputs": outputs, "inputs": inputs, "acc": acc, "channel": channel}
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
    return "\n".join(constants), requantize, activate


def _window(p: str, n: str, layer, order: str | None) -> tuple[str, str]:
    """A window layer's constants (convolutions: dense.h.in's; pools: none) and its function
    (templates/windows.h.in), named n, its sizes written in; a pool's loops in order
    ("reverse": from the last output, when it runs in place at the arena's end)."""
    sizes = _sizes(p, n, layer)
    if not isinstance(layer, intref.IntegerLayer):  # a pool: integers only, nothing to requantize
        (out_h, out_w, channels), reverse = layer.output_shape, order == "reverse"
        loops = [_loop(name, size, reverse) for name, size in (("oy", out_h), ("ox", out_w), ("o", channels))]
        note = {None: "", "forward": ",\n   in place", "reverse": ",\n   in place, from the last output"}[order]
        sizes["title"] += note
        count = layer.kernel[0] * layer.kernel[1]
        return "", fill(
            "windows.h.in", layer.kind, **sizes, count=count, rows=loops[0], columns=loops[1], depth=loops[2]
        )
    constants, convolution = _convolution(p, n, layer)
    section = "depthwise" if layer.kind == "depthwise_conv2d" else "conv2d"
    return constants, fill("windows.h.in", section, **sizes, **convolution)


def _fused(p: str, n: str, conv, pool) -> tuple[str, str]:
    """A convolution and the pool after it as one kernel (windows.h.in's conv2d_pool or
    depthwise_pool), named n: the conv's constants, and a function that pools each conv output
    as it computes it (integer_model.fusions says when)."""
    sizes = _sizes(p, n, conv)
    (pool_h, pool_w, _), (pkh, pkw), (psh, psw) = pool.output_shape, pool.kernel, pool.stride
    sizes["title"] += ",\n   fused with " + _sizes(p, n, pool)["title"]
    kind = "max_pool" if pool.kind == "max_pool" else "avg_pool"
    steps = {"count": pkh * pkw, "out_h": conv.output_shape[0], "out_w": conv.output_shape[1]}
    skip = fill("windows.h.in", "skip_padding", **steps) + "\n" if any(pool.pads) else ""
    constants, convolution = _convolution(p, n, conv)
    section = "depthwise_pool" if conv.kind == "depthwise_conv2d" else "conv2d_pool"
    return constants, fill(
        "windows.h.in",
        section,
        **sizes,
        **convolution,
        pool_h=pool_h,
        pool_w=pool_w,
        pkh=pkh,
        pkw=pkw,
        pool_sh=psh,
        pool_sw=psw,
        pool_top=pool.pads[0],
        pool_left=pool.pads[2],
        start=-128 if kind == "max_pool" else 0,
        skip=skip,
        take=fill("windows.h.in", "take_" + kind),
        finish=fill("windows.h.in", "finish_" + kind, **steps),
    )


def _sizes(p: str, n: str, layer) -> dict:
    """A window layer's holes: names, sizes, window and a title saying them."""
    (in_h, in_w, in_c), (out_h, out_w, channels) = layer.input_shape, layer.output_shape
    (kh, kw), (sh, sw), (top, bottom, left, right) = layer.kernel, layer.stride, layer.pads
    title = f"{layer.kind} {kh}x{kw}, stride {sh}x{sw}, pads {top} {bottom} {left} {right}: "
    title += f"{in_h}x{in_w}x{in_c} -> {out_h}x{out_w}x{channels}"
    sizes = dict(p=p, n=n, title=title, in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w)
    sizes.update(channels=channels, kh=kh, kw=kw, stride_h=sh, stride_w=sw, pad_top=top, pad_left=left)
    return sizes


def _convolution(p: str, n: str, layer) -> tuple[str, dict]:
    """A convolution's constants and the holes of its arithmetic (taps, zero, requantize, activate)."""
    constants, requantize, activate = _requantized(p, n, layer, "acc", "o")
    holes = dict(taps=layer.weights.shape[1], zero=layer.input_zero_point, activation=layer.activation)
    return constants, dict(holes, requantize=requantize, activate=activate)


def _steps(layers) -> list:
    """predict's calls: (layer indices, target, order) per step. Dense layers only: one layer a
    step, the scratch's halves in turn; with window layers arena_plan's steps (a convolution
    fused with its pool is one), each output at its offset; the last step's target is None (the
    scores)."""
    if _dense_only(layers):
        return [((i,), f"buffers[{i % 2}]", None) for i in range(len(layers))]
    plan = arena_plan(layers)[1]
    return [(step, None if offset is None else f"bytes + {offset}", order) for step, _, offset, order in plan]


def _dense_only(layers) -> bool:
    """Whether a network is dense layers only (its header keeps the scratch, as ever)."""
    return all(layer.kind == "dense" for layer in layers)


def _step(p: str, layers, step: tuple, order) -> tuple[str, str]:
    """One step's constants and function, named for its first layer (prefix__l3)."""
    if len(step) == 2:
        return _fused(p, f"{p}__l{step[0]}", layers[step[0]], layers[step[1]])
    layer = layers[step[0]]
    return LAYER_KINDS[layer.kind](p, f"{p}__l{step[0]}", layer, order)


LAYER_KINDS = {"dense": _dense, **dict.fromkeys(intref_windows.KINDS, _window)}  # kind -> constants, function


def _loop(index: str, size: int, reverse: bool) -> str:
    """A for loop's head over index in 0..size-1, upward or (reverse) downward."""
    return (
        f"for ({index} = {size - 1}; {index} >= 0; --{index})"
        if reverse
        else f"for ({index} = 0; {index} < {size}; ++{index})"
    )


def _workspace(steps: list, p: str, values: dict, kind: str) -> dict:
    """The header's text on predict's memory: a network of dense layers keeps its scratch (two
    halves used in turn, the input the caller's); one with window layers takes an arena, the
    input included, each step writing where arena_plan places its output (_steps)."""
    calls, source = [], "input"
    for k, (step, target, _) in enumerate(steps):
        target = "scores" if k == len(steps) - 1 else target
        calls.append(fill("header.h.in", "call", layer=f"{p}__l{step[0]}", source=source, target=target))
        source = target
    return {
        "workspace": kind,
        **{
            hole: fill("header.h.in", f"{section}_{kind}", **values)
            for hole, section in (("usage", "usage"), ("ram", "ram"), ("memory_macros", "macros"))
        },
        "workspace_doc": fill("header.h.in", f"workspace_{kind}", **values),
        "predict": fill("header.h.in", f"predict_{kind}", **values, calls="\n".join(calls)),
    }


def _outputs(model: QuantizedModel, p: str) -> dict:
    """predict's classify and the probabilities function (templates/outputs.h.in)."""
    last = model.layers[-1]
    values = {"p": p, "P": p.upper(), "zero": last.output_offset, "scale": c_float(last.output_scale, "output scale")}
    classify = "argmax" if model.outputs > 1 else "always" if last.output_offset == -128 else "threshold"
    return {
        "classify": fill("outputs.h.in", "classify_" + classify, **values),
        "probabilities": fill("outputs.h.in", "probabilities_" + model.output, **values),
    }
