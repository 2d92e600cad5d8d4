"""The numbers of the header's self-test (templates/selftest.h.in), computed by the spec.

PREFIX_selftest checks two CRC-32s (zlib's): one of the model's constant arrays, over their
little-endian bytes in the order the header defines them (constant_arrays, the one list the
header's arrays and its CRC calls both follow), and one of the scores of a few inputs the
header generates itself from (pattern, seed) pairs with xorshift32 (case_inputs, line for line
the C). The expected scores come from intref.reference_scores, the spec; the seeds are the
first of a few candidates that drive the most layers to the int8 limits (saturation).
"""

from __future__ import annotations

import zlib

import numpy as np

from . import intref

FILL, UNIFORM, EXTREMES = 0, 1, 2  # the patterns, as selftest.h.in numbers them
SEEDS = tuple(0x9E3779B9 ^ (k * 0x01000193) for k in range(1, 17))  # tried per random pattern; nonzero


def constant_arrays(layer) -> list:
    """A layer's constant arrays as the header defines them: [(name suffix, C type, values)]
    (weights, bias, multiplier, shift, leaky relu's two, the table); none for a pool."""
    if not isinstance(layer, intref.IntegerLayer):
        return []
    arrays = [
        ("weights", "int8", layer.weights),
        ("bias", "int32", layer.bias),
        ("multiplier", "int32", layer.output_multiplier),
        ("shift", "uint8", layer.output_shift),
    ]
    if layer.activation == "leaky_relu":
        arrays += [("neg_multiplier", "int32", layer.negative_multiplier), ("neg_shift", "uint8", layer.negative_shift)]
    if layer.table is not None:
        arrays.append(("table", "int8", layer.table))
    return arrays


def constants_crc(layers) -> int:
    """CRC-32 of every constant array's little-endian bytes, layer by layer (PREFIX_CONSTANTS_CRC32)."""
    crc = 0
    for layer in layers:
        for _, kind, values in constant_arrays(layer):
            crc = zlib.crc32(
                np.asarray(values).astype({"int8": "<i1", "int32": "<i4", "uint8": "<u1"}[kind]).tobytes(), crc
            )
    return crc


def xorshift_codes(pattern: int, seed: int, count: int) -> np.ndarray:
    """The int8 input the header's selftest_input writes for (pattern, seed)."""
    if pattern == FILL:
        return np.full(count, seed - 128, dtype=np.int8)
    x, words = seed, np.empty(count, dtype=np.uint32)
    for i in range(count):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        words[i] = x
    if pattern == UNIFORM:
        return ((words >> 24).astype(np.int32) - 128).astype(np.int8)
    return np.where(words >> 31, 127, -128).astype(np.int8)


def case_inputs(cases, inputs: int) -> np.ndarray:
    """The cases' int8 inputs, one row each."""
    return np.stack([xorshift_codes(pattern, seed, inputs) for pattern, seed in cases])


def limits(layer) -> tuple:
    """The lowest and highest codes a layer's activation can write: its clamps (relu's floor is
    the zero point) or its table's ends."""
    if layer.table is not None:
        return int(layer.table.min()), int(layer.table.max())
    return (layer.output_offset if layer.activation == "relu" else -128), 127


def saturated_layers(layers, codes) -> np.ndarray:
    """For each row of codes, how many layers with weights write a code at one of their limits."""
    codes = np.asarray(codes, dtype=np.int64)
    count = np.zeros(len(codes), dtype=np.int64)
    for layer in layers:
        codes = intref.layer_forward(codes, layer)
        if isinstance(layer, intref.IntegerLayer):
            count += np.isin(codes, limits(layer)).any(axis=1)
    return count


def choose_cases(model) -> list:
    """The self-test's (pattern, seed) pairs: all -128, all 127, and of the candidate seeds for
    uniform codes and for random extremes the first that brings the most layers to one of
    their limits (saturation)."""
    cases = [(FILL, 0), (FILL, 255)]
    for pattern in (UNIFORM, EXTREMES):
        tries = saturated_layers(model.layers, case_inputs([(pattern, s) for s in SEEDS], model.inputs))
        cases.append((pattern, SEEDS[int(np.argmax(tries))]))
    return cases


def holes(model, p: str, kind: str, fill) -> dict:
    """selftest.h.in's texts for the header (macros, declaration, implementation), filled by
    export_c's fill; kind: the header's workspace (scratch or arena). Layer i's arrays are
    prefix__li_* (a pool fused into the convolution before it has none of its own)."""
    cases = choose_cases(model)
    calls = [
        fill(
            "selftest.h.in", "crc_words" if c_type == "int32" else "crc_bytes", P=p.upper(), array=f"{p}__l{i}_{suffix}"
        )
        for i, layer in enumerate(model.layers)
        for suffix, c_type, _ in constant_arrays(layer)
    ]
    extra = model.outputs + (model.inputs if kind == "scratch" else 0)  # the arena holds the input
    values = {
        "p": p,
        "P": p.upper(),
        "cases": len(cases),
        "constants_crc": f"{constants_crc(model.layers):08x}",
        "outputs_crc": f"{outputs_crc(model, cases):08x}",
        "selftest_bytes": extra,
        "selftest_room": "the inputs and scores after the scratch"
        if kind == "scratch"
        else "the scores after the arena",
        "input": f"(int8_t *)scratch + {p.upper()}_SCRATCH_BYTES" if kind == "scratch" else "(int8_t *)scratch",
        "scores_offset": f"{p.upper()}_INPUTS" if kind == "scratch" else f"{p.upper()}_ARENA_BYTES",
        "nibbles": ",\n".join(
            "    " + ", ".join(f"0x{v:08x}u" for v in nibble_table()[i : i + 4]) for i in range(0, 16, 4)
        ),
        "case_rows": ",\n".join(f"    {{{pattern}, 0x{seed:08x}u}}" for pattern, seed in cases),
        "crc_calls": ",\n".join(calls),
        "array_count": len(calls),
    }
    return {
        "selftest_macros": fill("selftest.h.in", "macros", **values),
        "selftest_declaration": fill("selftest.h.in", "declaration", **values),
        "selftest": fill("selftest.h.in", "implementation", **values),
    }


def outputs_crc(model, cases) -> int:
    """CRC-32 of the spec's int8 scores of the cases, one after another."""
    scores = intref.reference_scores(model.layers, case_inputs(cases, model.inputs))
    return zlib.crc32(scores.astype(np.int8).tobytes())


def nibble_table() -> list:
    """zlib's CRC-32 by nibbles: the 16 entries selftest.h.in's crc reads."""
    table = []
    for n in range(16):
        c = n
        for _ in range(4):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        table.append(c)
    return table
