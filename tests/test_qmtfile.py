"""The .qmt file: round trips, its size, atomic saves, and strictness against damaged files.

`walk` below follows docs/format.md on its own (it does not use qmtfile), so the layout the
writer produces (version 2) is checked against the documentation, not against itself.
`encode_v1` is version 1's writer, kept here (and one frozen version-1 file, TINY_V1) so that
version-1 files are proven to load. Every .qmt the whole suite encodes is also checked to be
canonical, encode(decode(b)) == b, by the autouse fixture in conftest.py.
"""

import os
import re
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmtik import intref, qmtfile
from qmtik import quantization as q
from qmtik.errors import ModelFormatError, QuantizationError
from qmtik.export_c import export_c
from qmtik.integer_model import QuantizedModel
from qmtik.qmtfile import decode, encode, load_model, save_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "format.md"
pytestmark = pytest.mark.filterwarnings("error")  # a RuntimeWarning from numpy is a bug here too


def build(
    widths,
    activation="relu",
    per_channel=True,
    names=None,
    task="classification",
    output="softmax",
    seed=0,
    input_range=(0.0, 255.0),
):
    """A model with random codes, laid out as layers.integer_layers lays one out; activation
    is that of every hidden layer, or a list of one per hidden layer."""
    rng = np.random.default_rng(seed)
    layers, scale, zero = [], q.INPUT_SCALE, q.INPUT_ZERO
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        kinds = [activation] * (len(widths) - 2) if isinstance(activation, str) else list(activation)
        kind = kinds[i] if i < len(widths) - 2 else "linear"
        weight = rng.integers(-127, 128, (fan_out, fan_in)).astype(np.int8)
        spread = rng.uniform(0.5, 2.0, fan_out) if per_channel else np.ones(fan_out)
        w_scale = (spread / (127 * np.sqrt(fan_in))).astype(np.float32).astype(np.float64)  # as the file keeps them
        bias = q.quantize_bias(rng.normal(0, 0.5, fan_out), scale, zero, weight, w_scale)
        observed = np.array([0.0 if kind == "relu" else rng.uniform(-4, -0.5), rng.uniform(0.5, 4)])
        out_scale, out_zero, pre = q.output_quantization(kind, observed)
        layers.append(intref.build_layer(weight, bias, w_scale, scale, zero, kind, out_scale, out_zero, pre, 0.1))
        scale, zero = out_scale, out_zero
    return QuantizedModel(task, output, input_range, layers, names)


FIVE = ["ein", "zwei", "drei", "vier", "fünf"]
MODELS = {
    "no-hidden": build((5, 3)),
    "width-1": build((1, 1), task="regression", output="linear"),
    "relu-17": build((9, 17, 3), "relu", seed=1),
    "leaky-tensor-1": build((9, 1, 4), "leaky_relu", per_channel=False, seed=2),
    "leaky-3-hidden": build((17, 3, 1, 3, 2), "leaky_relu", seed=3, input_range=(-1.5, 2.0)),
    "sigmoid-2-hidden": build((6, 3, 17, 2), "sigmoid", per_channel=False, seed=4),
    "tanh-3-hidden-names": build((4, 3, 3, 17, 5), "tanh", names=FIVE, seed=5),
    "non-ascii-names": build((3, 17, 3), "relu", names=["猫", "Ωmega", "🙂 smile"], seed=6),
    "binary-sigmoid-names": build((7, 8, 1), output="sigmoid", names=["no", "yes"], seed=7),
    "regression": build((7, 8, 2), "tanh", task="regression", output="linear", seed=8, input_range=(-3.0, 1e6)),
}


def with_crc(blob: bytes) -> bytes:
    """blob with its last 4 bytes replaced by the right CRC."""
    return blob[:-4] + struct.pack("<I", zlib.crc32(blob[:-4]))


def patched(blob: bytes, offset: int, raw: bytes) -> bytes:
    """blob with raw written at offset and the CRC made right again."""
    return with_crc(blob[:offset] + raw + blob[offset + len(raw) :])


def rebuilt(blob_without_crc: bytes) -> bytes:
    """A file of other length: its size field and its CRC made right."""
    blob = blob_without_crc[:36] + struct.pack("<I", len(blob_without_crc) + 4) + blob_without_crc[40:]
    return blob + struct.pack("<I", zlib.crc32(blob))


SIZES = {
    "scales": 4,
    "weights": 1,
    "biases": 4,
    "multipliers": 4,
    "shifts": 1,
    "neg_multipliers": 4,
    "neg_shifts": 1,
    "pre_scale": 8,
    "table": 1,
}
SCALES, REQUANT, NEGATIVE = 1, 2, 4  # the flag bits of a dense record


def walk(blob: bytes):
    """The offsets of the fields of a version-2 file, found by following docs/format.md:
    (name offsets, layers, end)."""
    (inputs,) = struct.unpack_from("<I", blob, 16)
    pos, names = 42, []
    for _ in range(struct.unpack_from("<H", blob, 40)[0]):
        names.append(pos)
        pos += 1 + blob[pos]
    layers, fan_in = [], inputs
    for _ in range(blob[14]):
        kind, length, outputs, activation, flags = struct.unpack_from("<BIIBB", blob, pos)
        assert kind == 0  # dense (the window kinds: tests/test_qmtfile_windows.py)
        at = {
            "outputs": outputs,
            "fan_in": fan_in,
            "record": pos,
            "kind": pos,
            "length": pos + 1,
            "n": pos + 5,
            "activation": pos + 9,
            "flags": pos + 10,
            "out_zero": pos + 11,
            "out_scale": pos + 12,
        }
        count = {bit: outputs if flags & bit else 1 for bit in (SCALES, REQUANT, NEGATIVE)}
        fields = [
            ("scales", count[SCALES]),
            ("weights", outputs * fan_in),
            ("biases", outputs),
            ("multipliers", count[REQUANT]),
            ("shifts", count[REQUANT]),
        ]
        if activation == 2:
            fields += [("neg_multipliers", count[NEGATIVE]), ("neg_shifts", count[NEGATIVE])]
        if activation in (3, 4):
            fields += [("pre_scale", 1), ("table", 256)]
        pos += 20
        for field, number in fields:
            at[field] = pos
            pos += SIZES[field] * number
        assert pos == at["record"] + length  # the record length covers the record
        layers.append(at)
        fan_in = outputs
    return names, layers, pos


def dense_size(outputs, fan_in, activation="relu", scales=1, requant=1, negative=1) -> int:
    """Bytes of a version-2 dense record by docs/format.md's formula; scales, requant and
    negative are how many weight scales and (multiplier, shift) pairs it stores: 1 or outputs."""
    return (
        20
        + 4 * scales
        + outputs * fan_in
        + 4 * outputs
        + 5 * requant
        + (5 * negative if activation == "leaky_relu" else 0)
        + (8 + 256 if activation in ("sigmoid", "tanh") else 0)
    )


# --- version 1, read only: its writer and one frozen file ---------------------------------------


def encode_v1(model, per_channel=None) -> bytes:
    """The version-1 bytes of model, as qmtik wrote them before version 2 (docs/format.md, "Version 1");
    per_channel=True writes every weight scale even when all are equal (v1 allowed it)."""
    body = [struct.pack("<H", len(model.class_names or ()))]
    for name in model.class_names or ():
        body += [bytes([len(name.encode())]), name.encode()]
    for layer in model.layers:
        scales = layer.weight_scales.astype("<f4")
        flag = bool((scales != scales[0]).any()) if per_channel is None else per_channel
        table = layer.activation in ("sigmoid", "tanh")
        body += [
            struct.pack(
                "<IBBbBdd",
                layer.outputs,
                intref.ACTIVATIONS.index(layer.activation),
                flag,
                layer.output_offset,
                0,
                layer.output_scale,
                layer.table_input_scale if table else 0.0,
            ),
            (scales if flag else scales[:1]).tobytes(),
            layer.weights.tobytes(),
            layer.bias.astype("<i4").tobytes(),
            layer.output_multiplier.astype("<u4").tobytes(),
            layer.output_shift.astype("u1").tobytes(),
        ]
        if layer.activation == "leaky_relu":
            body += [layer.negative_multiplier.astype("<u4").tobytes(), layer.negative_shift.astype("u1").tobytes()]
        if table:
            body.append(layer.table.tobytes())
    body = b"".join(body)
    size = 40 + len(body) + 4
    head = struct.pack(
        "<8sHHBBBBIddI",
        b"\x89QMT\r\n\x1a\n",
        1,
        40,
        ("classification", "regression").index(model.task),
        ("linear", "softmax", "sigmoid").index(model.output),
        len(model.layers),
        0,
        model.inputs,
        *model.input_range,
        size,
    )
    return head + body + struct.pack("<I", zlib.crc32(head + body))


TINY_V1 = bytes.fromhex(  # tiny() below as qmtik wrote it in version 1, frozen
    "89514d540d0a1a0a0100280000010200020000000000000000000000000000000000f03f9d0000000200026e6f037965"
    "730200000001018000000000000000b03f00000000000000000000003c0000803c01fe030464000000ceffffff202020"
    "0020202000201f0200000000000000000000000000c03f00000000000000000000003d05fa0708000000000a00000000"
    "002000000020001b1bd19bf244"
)


# --- round trips ---------------------------------------------------------------------------------


def same_layers(a: intref.IntegerLayer, b: intref.IntegerLayer):
    for name in (
        "weights",
        "bias",
        "output_multiplier",
        "output_shift",
        "weight_scales",
        "negative_multiplier",
        "negative_shift",
        "table",
    ):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)
    for name in ("activation", "input_scale", "input_zero_point", "output_scale", "output_offset", "table_input_scale"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("key", MODELS)
def test_round_trip_gives_the_same_model_scores_and_bytes(key):
    model = MODELS[key]
    blob = encode(model)
    loaded = decode(blob)
    assert encode(loaded) == blob
    assert (loaded.task, loaded.output, loaded.input_range) == (model.task, model.output, model.input_range)
    assert loaded.class_names == model.class_names
    assert len(loaded.layers) == len(model.layers)
    for a, b in zip(loaded.layers, model.layers):
        same_layers(a, b)
    codes = np.random.default_rng(1).integers(-128, 128, (300, model.inputs)).astype(np.int8)
    codes[0], codes[1] = -128, 127
    np.testing.assert_array_equal(loaded.scores(codes), model.scores(codes))
    raw = np.random.default_rng(2).uniform(*model.input_range, (20, model.inputs))
    np.testing.assert_array_equal(loaded.predict(raw), model.predict(raw))


@pytest.mark.parametrize("key", MODELS)
def test_decoded_arrays_have_the_documented_types(key):
    model = decode(encode(MODELS[key]))
    scale, zero = q.INPUT_SCALE, q.INPUT_ZERO
    for layer in model.layers:
        outputs, fan_in = layer.weights.shape
        assert layer.weights.dtype == np.int8 and not layer.weights.flags.writeable  # a layer stays valid
        assert layer.bias.dtype == layer.output_multiplier.dtype == layer.output_shift.dtype == np.int64
        assert layer.bias.shape == layer.output_multiplier.shape == layer.output_shift.shape == (outputs,)
        assert layer.weight_scales.dtype == np.float64 and layer.weight_scales.shape == (outputs,)
        assert (layer.input_scale, layer.input_zero_point) == (scale, zero)
        scale, zero = layer.output_scale, layer.output_offset
        assert (layer.negative_multiplier is not None) == (layer.activation == "leaky_relu")
        assert (
            (layer.table is not None)
            == (layer.table_input_scale is not None)
            == (layer.activation in ("sigmoid", "tanh"))
        )
        if layer.table is not None:
            assert layer.table.dtype == np.int8 and layer.table.shape == (256,)


@pytest.mark.parametrize("key", MODELS)
def test_the_layout_is_the_documented_one(key):
    """An independent walk of the bytes by docs/format.md ends at the CRC; flags and values sit
    where the page says."""
    model = MODELS[key]
    blob = encode(model)
    names, layers, end = walk(blob)
    assert blob[:8] == b"\x89QMT\r\n\x1a\n" and struct.unpack_from("<HH", blob, 8) == (2, 40)
    assert end == len(blob) - 4 == struct.unpack_from("<I", blob, 36)[0] - 4
    assert struct.unpack_from("<dd", blob, 20) == model.input_range
    assert [blob[at + 1 : at + 1 + blob[at]].decode() for at in names] == list(model.class_names or [])
    for at, layer in zip(layers, model.layers):
        varies = lambda *arrays: any(len(set(a)) > 1 for a in arrays)  # noqa: E731
        expected = (
            SCALES * varies(layer.weight_scales.astype(np.float32))
            + REQUANT * varies(layer.output_multiplier, layer.output_shift)
            + NEGATIVE * (layer.activation == "leaky_relu" and varies(layer.negative_multiplier, layer.negative_shift))
        )
        assert blob[at["flags"]] == expected
        weights = np.frombuffer(blob, np.int8, at["outputs"] * at["fan_in"], at["weights"])
        np.testing.assert_array_equal(weights, layer.weights.reshape(-1))
        assert struct.unpack_from("<i", blob, at["biases"] + 4 * (at["outputs"] - 1))[0] == layer.bias[-1]
        assert struct.unpack_from("<I", blob, at["multipliers"])[0] == layer.output_multiplier[0]
        if layer.table is not None:
            assert struct.unpack_from("<d", blob, at["pre_scale"])[0] == layer.table_input_scale


def flags(blob: bytes) -> list:
    """The flags byte of every layer record."""
    return [blob[at["flags"]] for at in walk(blob)[1]]


def test_per_channel_and_per_tensor_values_cost_what_the_page_says():
    per_channel, per_tensor = build((9, 17, 3), seed=1), build((9, 17, 3), per_channel=False, seed=1)
    assert len(encode(per_channel)) - len(encode(per_tensor)) == (4 + 5) * (17 - 1) + (4 + 5) * (3 - 1)
    assert flags(encode(per_channel)) == [SCALES | REQUANT] * 2 and flags(encode(per_tensor)) == [0, 0]


def model_size(model, names_bytes=0) -> int:
    """A version-2 file's size by docs/format.md: header, names, records, CRC; each record stores
    one value or one per channel, as its values vary."""

    def count(*arrays):
        return len(arrays[0]) if arrays[0] is not None and any(len(set(a)) > 1 for a in arrays) else 1

    records = sum(
        dense_size(
            layer.outputs,
            layer.inputs,
            layer.activation,
            count(layer.weight_scales.astype(np.float32)),
            count(layer.output_multiplier, layer.output_shift),
            count(layer.negative_multiplier, layer.negative_shift),
        )
        for layer in model.layers
    )
    return 40 + 2 + names_bytes + records + 4


def test_a_784_256_256_10_model_has_the_size_the_page_gives():
    model = build((784, 256, 256, 10))
    size = len(encode(model))
    header, names, records, outputs = 40, 2, 3 * 20, 256 + 256 + 10
    weights = 784 * 256 + 256 * 256 + 256 * 10
    expected = header + names + records + 4 * outputs + weights + 4 * outputs + 4 * outputs + outputs + 4
    assert size == expected == model_size(model) == 275_692
    assert size == len(encode_v1(model)) - 3 * 4  # version 1's 24-byte records: 275,704
    tensor = build((784, 256, 256, 10), per_channel=False)
    assert len(encode(tensor)) == 275_692 - (4 + 5) * (outputs - 3) == model_size(tensor) == 271_021
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert len(encode(build((784, 256, 256, 10), names=fashion))) == 275_692 + 76
    text = DOC.read_text()
    assert all(figure in text for figure in ("275,692", "271,021", "275,768", "275,704"))


# --- the bug of issue 11: a model imported from qmtik.h stored its one requantization per channel --

QMTIK_H_EXAMPLE = Path(os.environ.get("QMTIK_H_EXAMPLE", "/work/shared/qmtik-h-example"))
MNIST_784_HEADER = """#define QMTIK_I 784
#define QMTIK_H 256
#define QMTIK_L 2
#define QMTIK_O 10
#define QMTIK_LEAKY_RELU_ACTV
#define QMTIK_SOFT_MAX_PP
#define QMTIK_CROSS_ENTROPY_COST
#define QMTIK_W_SCALE 0.05f
#define QMTIK_A_SCALE 0.5f
"""


def c_library_files(source, tmp_path):
    """(model, header) of the C library's MNIST example: the real files (when present) or
    random int8 arrays of the same shapes under the same header."""
    if source == "real":
        if not (QMTIK_H_EXAMPLE / "mnist_784_model").exists():
            pytest.skip(f"the C library's example is not at {QMTIK_H_EXAMPLE} (set QMTIK_H_EXAMPLE)")
        return QMTIK_H_EXAMPLE / "mnist_784_model", QMTIK_H_EXAMPLE / "qmtik_config.h"
    from qmtik import legacy

    rng = np.random.default_rng(0)
    widths = (784, 256, 256, 256, 10)
    layers = [(rng.integers(-128, 128, (n, m)), rng.integers(-128, 128, n)) for m, n in zip(widths, widths[1:])]
    (tmp_path / "qmtik_config.h").write_text(MNIST_784_HEADER)
    legacy.write_c_model(tmp_path / "mnist_784_model", layers)
    return tmp_path / "mnist_784_model", tmp_path / "qmtik_config.h"


@pytest.mark.parametrize("source", ["random", "real"])
def test_an_imported_qmtik_h_model_stores_its_requantization_once(source, tmp_path):
    """qmtik.h has one weight scale and one activation scale: every record is per tensor (v1 wrote
    345,336 bytes for the C library's 335,114-byte model; version 2 writes 337,625)."""
    from qmtik import legacy

    model_path, header_path = c_library_files(source, tmp_path)
    model = legacy.import_c_model(model_path, header_path, tmp_path / "x.qmt")
    blob = (tmp_path / "x.qmt").read_bytes()
    assert model.widths == (784, 256, 256, 256, 10)
    per_tensor = (
        40
        + 2
        + sum(dense_size(n, m, layer.activation) for m, n, layer in zip(model.widths, model.widths[1:], model.layers))
        + 4
    )
    per_channel = (
        40
        + 2
        + sum(
            dense_size(n, m, layer.activation, n, n, n)
            for m, n, layer in zip(model.widths, model.widths[1:], model.layers)
        )
        + 4
    )
    assert len(blob) == per_tensor == model_size(model)
    assert flags(blob) == [0, 0, 0, 0]
    assert per_channel - per_tensor == (4 + 5) * (3 * 256 + 10 - 4) + 5 * (3 * 256 - 3)
    assert len(encode_v1(model)) - len(blob) == 4 * 4 + 5 * (3 * 256 + 10 - 4) + 5 * (3 * 256 - 3)  # v1: 24-byte
    # records, requantization per channel
    assert encode(load_model(tmp_path / "x.qmt")) == blob


# --- the worked example of docs/format.md ----------------------------------------------------------


def tiny():
    """The model of the page's annotated dump: 2 inputs, 2 relu, 2 softmax outputs, names."""
    hidden = intref.build_layer(
        np.array([[1, -2], [3, 4]], np.int8),
        np.array([100, -50]),
        np.array([2.0**-7, 2.0**-6]),
        q.INPUT_SCALE,
        q.INPUT_ZERO,
        "relu",
        2.0**-4,
        -128,
    )
    out = intref.build_layer(
        np.array([[5, -6], [7, 8]], np.int8),
        np.array([0, 10]),
        np.array([2.0**-5, 2.0**-5]),
        2.0**-4,
        -128,
        "linear",
        2.0**-3,
        0,
    )
    return QuantizedModel("classification", "softmax", (0.0, 1.0), [hidden, out], ["no", "yes"])


def test_the_annotated_dump_of_the_page_is_what_encode_writes():
    block = DOC.read_text().split("<!-- dump of tiny() in tests/test_qmtfile.py -->")[1].split("```")[1]
    data, offsets = b"", []
    for line in block.strip("\n").splitlines()[1:]:  # the first line names the columns
        offset, hexes = line[:6], line[8:56]
        offsets.append((int(offset), len(data)))
        data += bytes.fromhex(hexes)
    assert all(a == b for a, b in offsets)
    assert data == encode(tiny())
    assert f"{zlib.crc32(data[:-4]):08x}" in DOC.read_text()


def test_the_crc_is_zlibs_crc32():
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the check value the page gives
    assert "0xCBF43926" in DOC.read_text()


# --- version 1 still loads; version 2 has one encoding per model -----------------------------------


def test_the_frozen_version_1_file_loads_as_the_model_it_was_written_from():
    assert encode_v1(tiny()) == TINY_V1  # the test's v1 writer is version 1's
    loaded, model = decode(TINY_V1), tiny()
    for a, b in zip(loaded.layers, model.layers):
        same_layers(a, b)
    assert (loaded.class_names, loaded.input_range, loaded.output) == (("no", "yes"), (0.0, 1.0), "softmax")
    assert encode(loaded) == encode(model)  # and is written again as version 2


@pytest.mark.parametrize("key", MODELS)
@pytest.mark.parametrize("per_channel", [None, True])
def test_version_1_files_still_load(key, per_channel):
    """Every model written as version 1 (with the flag as qmtik set it, or with every weight scale
    written even when all are equal, which version 1 allowed) loads as the same model."""
    model = MODELS[key]
    loaded = decode(encode_v1(model, per_channel))
    for a, b in zip(loaded.layers, model.layers):
        same_layers(a, b)
    assert loaded.class_names == model.class_names and loaded.input_range == model.input_range
    assert encode(loaded) == encode(model)


def spread(blob: bytes, number: int, bit: int) -> bytes:
    """blob with layer `number`'s once-stored values of flag `bit` written once per channel
    (the flag set, the record length, file size and CRC made right): the same model, encoded
    a second way."""
    at = walk(blob)[1][number - 1]
    assert not blob[at["flags"]] & bit
    fields = {SCALES: ["scales"], REQUANT: ["multipliers", "shifts"], NEGATIVE: ["neg_multipliers", "neg_shifts"]}[bit]
    out, extra = bytearray(blob[:-4]), 0
    for field in reversed(fields):  # the later field first: earlier offsets hold
        one = out[at[field] : at[field] + SIZES[field]]
        out[at[field] : at[field] + SIZES[field]] = one * at["outputs"]
        extra += SIZES[field] * (at["outputs"] - 1)
    out[at["flags"]] |= bit
    struct.pack_into("<I", out, at["length"], struct.unpack_from("<I", out, at["length"])[0] + extra)
    return rebuilt(bytes(out))


@pytest.mark.parametrize(
    "bit, words",
    [
        (SCALES, "flag 1 stores weight scales per channel, but all 3 channels share one"),
        (REQUANT, "flag 2 stores requantization per channel, but all 3 channels share one"),
        (NEGATIVE, "flag 4 stores negative-side requantization per channel, but all 3 channels share one"),
    ],
)
def test_version_2_refuses_values_stored_per_channel_when_they_are_all_equal(bit, words):
    """The bug of issue 11: the reader took a weight-scale flag of 1 with all scales equal, so
    encode(decode(b)) != b. Version 1 still loads such files; version 2 has one encoding."""
    model = build((5, 3, 2), "leaky_relu", per_channel=False, seed=12)
    blob = encode(model)
    assert flags(blob) == [0, 0]
    other = spread(blob, 1, bit)
    assert len(other) == len(blob) + {SCALES: 4, REQUANT: 5, NEGATIVE: 5}[bit] * 2
    refused(other, f"layer 1: {words} (version 2 stores a shared value once)")
    assert encode(decode(encode_v1(model, per_channel=True))) == blob


def test_the_suites_canonical_check_can_fail(monkeypatch):
    """conftest.py decodes and encodes again every file a test encodes: with a writer that sets
    a flag it should not, encode itself fails in every test (the check runs and can fail)."""
    model = build((5, 3, 2), per_channel=False, seed=12)
    monkeypatch.setattr(qmtfile, "_flags", lambda arrays: SCALES)
    with pytest.raises(ModelFormatError, match="layer 1: flag 1 stores weight scales per channel, but all 3"):
        encode(model)


def test_a_one_output_layer_stores_its_values_once():
    blob = encode(MODELS["width-1"])
    assert flags(blob) == [0]
    refused(
        patched(blob, walk(blob)[1][0]["flags"], bytes([SCALES])),
        "layer 1: flag 1 stores weight scales per channel, but all 1 channels share one",
    )


@pytest.mark.parametrize(
    "activation, value, expected",
    [
        (
            "relu",
            NEGATIVE,
            "layer 1: flags 0x04 set bit 2, which relu does not use (bits: 0 weight scales, "
            "1 requantization, 2 negative-side requantization, the last for leaky_relu)",
        ),
        ("leaky_relu", 8, "layer 1: flags 0x08 set bit 3, which leaky_relu does not use"),
        ("tanh", 0x80, "layer 1: flags 0x80 set bit 7, which tanh does not use"),
    ],
)
def test_unknown_flag_bits_are_refused(activation, value, expected):
    blob = encode(build((4, 3, 2), activation, per_channel=False, seed=13))
    refused(patched(blob, walk(blob)[1][0]["flags"], bytes([value])), expected)


def test_negative_zero_in_the_input_range_is_written_and_read_as_plus_zero():
    model = build((3, 2), input_range=(-0.0, 1.0))
    blob = encode(model)
    assert blob[20:28] == bytes(8)  # +0.0: one encoding of the zero
    refused(patched(blob, 20, struct.pack("<d", -0.0)), "input range low -0.0: version 2 writes a zero as +0.0")
    refused(patched(blob, 28, struct.pack("<d", -0.0)), "input range [0.0, -0.0] must be finite with low < high")
    assert decode(encode_v1(model)).input_range == (-0.0, 1.0)  # version 1 took it


def test_a_record_of_an_unknown_kind_is_refused_by_its_kind():
    blob = encode(MODELS["relu-17"])
    at = walk(blob)[1][0]
    refused(
        patched(blob, at["kind"], b"\x06"),
        "layer 1: layer kind 6 is unknown to this qmtik (it reads 0 dense, 1 conv2d, 2 depthwise_conv2d, "
        "3 max_pool, 4 avg_pool, 5 global_avg_pool): a newer qmtik may read it",
    )
    refused(patched(blob, at["kind"], b"\xff"), "layer 1: layer kind 255 is unknown")


@pytest.mark.parametrize(
    "length, expected",
    [
        (lambda n: n - 1, lambda n: "layer 1 table runs past the end of its record (256 bytes at offset "),
        (lambda n: n + 1, lambda n: f"layer 1: record length {n + 1} bytes, but its fields take {n}"),
        (lambda n: 4, lambda n: "layer 1: record length 4 bytes, shorter than its kind and length (5 bytes)"),
        (lambda n: 10, lambda n: "layer 1 dense fields runs past the end of its record (15 bytes at offset"),
        (lambda n: 2**32 - 1, lambda n: "layer 1 record runs past the end of the data"),
    ],
)
def test_a_record_length_that_disagrees_with_the_fields_is_refused(length, expected):
    (n,) = struct.unpack_from("<I", BLOB, FIRST["length"])
    refused(patched(BLOB, FIRST["length"], struct.pack("<I", length(n))), expected(n))


def test_a_record_of_other_length_is_refused_even_when_the_file_is_consistent():
    """The last record one byte longer than its fields, the file rebuilt around it."""
    (n,) = struct.unpack_from("<I", BLOB, LAST["length"])
    longer = bytearray(BLOB[:-4])
    longer.insert(LAST["record"] + n, 0)
    struct.pack_into("<I", longer, LAST["length"], n + 1)
    refused(rebuilt(bytes(longer)), f"layer 4: record length {n + 1} bytes, but its fields take {n}")


# --- saving and loading ---------------------------------------------------------------------------


def test_save_and_load(tmp_path):
    path = tmp_path / "m.qmt"
    save_model(path, MODELS["tanh-3-hidden-names"])
    assert path.read_bytes() == encode(MODELS["tanh-3-hidden-names"])
    assert encode(load_model(path)) == path.read_bytes()
    save_model(str(path), MODELS["no-hidden"])  # replaces, and takes a str
    assert load_model(str(path)).widths == (5, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.qmt"]


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.qmt"
    save_model(path, MODELS["relu-17"])
    return path, path.read_bytes()


def unchanged(path, before):
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_save_that_fails_while_encoding_leaves_the_previous_file(saved, monkeypatch):
    path, before = saved
    bad = build((5, 3))
    bad.layers.append(bad.layers[0])
    with pytest.raises(ModelFormatError, match="layer 2 has 5 inputs, but layer 1 has 3 outputs"):
        save_model(path, bad)
    unchanged(path, before)
    monkeypatch.setattr(qmtfile, "encode", lambda model: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        save_model(path, MODELS["no-hidden"])
    unchanged(path, before)


def test_a_save_that_fails_while_writing_leaves_the_previous_file(saved, monkeypatch):
    path, before = saved
    real = qmtfile.write_atomic
    seen = []

    class HalfThenFail:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            seen.extend(p.name for p in path.parent.iterdir())
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(qmtfile, "write_atomic", lambda p, write: real(p, lambda f: write(HalfThenFail(f))))
    with pytest.raises(OSError, match="No space"):
        save_model(path, MODELS["no-hidden"])
    assert any(name.endswith(".tmp") for name in seen)  # the half file was a temporary one
    unchanged(path, before)


def test_a_save_that_fails_at_fsync_leaves_the_previous_file(saved, monkeypatch):
    path, before = saved

    def fail(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output"):
        save_model(path, MODELS["no-hidden"])
    unchanged(path, before)


def test_missing_unreadable_and_foreign_files_are_format_errors(tmp_path):
    with pytest.raises(ModelFormatError, match=r"^model file .*none\.qmt: not found$"):
        load_model(tmp_path / "none.qmt")
    with pytest.raises(ModelFormatError, match=r"^model file .*: is a directory$"):
        load_model(tmp_path)
    (tmp_path / "notes.txt").write_text("hello, this is not a model at all, just some text")
    with pytest.raises(ModelFormatError, match=r"^model file .*notes\.txt: not a qmtik model"):
        load_model(tmp_path / "notes.txt")
    with pytest.raises(TypeError):
        decode("not bytes")


# --- strictness ----------------------------------------------------------------------------------

BLOB = encode(MODELS["tanh-3-hidden-names"])  # tables, names, three hidden layers
OUTSIDE = "must lie from 1.18e-38 (the smallest normal float32) to 1.33e+36"  # a scale beyond float32's
NAMES, LAYERS, _ = walk(BLOB)
FIRST, LAST = LAYERS[0], LAYERS[-1]


def refused(blob, expected):
    """decode refuses blob with one line "model file m.qmt: problem" that contains expected."""
    with pytest.raises(ModelFormatError) as info:
        decode(blob, "m.qmt")
    message = str(info.value)
    assert message.startswith("model file m.qmt: ") and "\n" not in message, message
    assert expected in message, message


@pytest.mark.parametrize("length", [0, 1, 8, 39])
def test_files_shorter_than_a_header_are_truncated(length):
    found = f"{length} bytes" if length else "an empty file"
    refused(BLOB[:length], f"model file m.qmt: truncated: {found}, fewer than the 44 bytes of a header and a CRC")


@pytest.mark.parametrize("length", [44, 100, len(BLOB) - 4, len(BLOB) - 1])
def test_longer_truncations_are_truncated_too(length):
    refused(BLOB[:length], f"truncated: the header gives {len(BLOB):,} bytes, the file has {length:,}")


def test_trailing_bytes_are_refused():
    refused(BLOB + b"\x00", f"trailing data: 1 bytes after the {len(BLOB):,} the header gives")
    refused(rebuilt(BLOB[:-4] + b"\x00\x00"), "2 bytes left over between the last layer and the CRC")


@pytest.mark.parametrize("offset", [16, 20, 41, 300, len(BLOB) - 5, len(BLOB) - 1])
def test_a_flipped_byte_is_a_crc_mismatch(offset):
    blob = bytearray(BLOB)
    blob[offset] ^= 0x10
    refused(bytes(blob), "corrupted: CRC mismatch (stored 0x")


def test_the_header_is_checked_in_order():
    refused(b"PK\x03\x04" + BLOB[4:], "model file m.qmt: not a qmtik model (wrong magic bytes)")
    refused(b"hello", "not a qmtik model")
    refused(BLOB.replace(b"\r\n", b"\n", 1), "not a qmtik model")  # a text-mode transfer
    refused(
        BLOB[:8] + struct.pack("<H", 3) + BLOB[10:],
        "format version 3 is newer than this qmtik reads (1 and 2): upgrade qmtik",
    )
    refused(BLOB[:8] + struct.pack("<H", 65535) + BLOB[10:], "upgrade qmtik")
    refused(patched(BLOB, 8, struct.pack("<H", 0)), "format version 0 is not valid")
    refused(patched(BLOB, 10, struct.pack("<H", 48)), "header size 48, expected 40")
    refused(BLOB[:-1] + bytes([BLOB[-1] ^ 1]), "CRC mismatch")


@pytest.mark.parametrize(
    "offset, raw, expected",
    [
        (12, b"\x07", "task code 7 is unknown (0 classification, 1 regression)"),
        (13, b"\x03", "output code 3 is unknown (0 linear, 1 softmax, 2 sigmoid)"),
        (14, b"\x00", "0 layers; a model has 1 to 255"),
        (14, b"\x05", "layer 4: activation linear, but a hidden layer must not be linear"),
        (14, b"\x03", "layer 3: activation tanh, but the last layer must be linear"),
        (15, b"\x01", "reserved header byte is 1, must be 0"),
        (16, struct.pack("<I", 0), "0 inputs, outside 1..65536"),
        (16, struct.pack("<I", 65537), "65,537 inputs, outside 1..65536"),
        (20, struct.pack("<dd", 5.0, 5.0), "input range [5.0, 5.0] must be finite with low < high"),
        (20, struct.pack("<dd", 6.0, 5.0), "input range [6.0, 5.0] must be finite"),
        (20, struct.pack("<d", float("nan")), "input range [nan, "),
        (28, struct.pack("<d", float("inf")), "input range [0.0, inf] must be finite"),
        (20, struct.pack("<dd", -1e300, 1e300), "input range [-1e+300, 1e+300] must stay finite in float32"),
        (20, struct.pack("<dd", 0.0, 1e-300), "input range [0.0, 1e-300] must stay finite in float32, with a finite"),
        (20, struct.pack("<dd", -3.5e38, 0.0), "input range [-3.5e+38, 0.0] must stay finite in float32"),
    ],
)
def test_header_values_are_checked_after_the_crc(offset, raw, expected):
    refused(patched(BLOB, offset, raw), expected)


@pytest.mark.parametrize(
    "field, index, raw, expected",
    [
        ("weights", 0, b"\x80", "layer 1: weights -128 at [0, 0] is outside -127..127"),
        ("weights", 5, b"\x80", "layer 1: weights -128 at [1, 1] is outside -127..127"),
        ("shifts", 0, b"\x3f", "layer 1: output_shift 63 at [0] is outside 0..62"),
        ("shifts", 2, b"\xff", "layer 1: output_shift 255 at [2] is outside 0..62"),
        ("multipliers", 0, struct.pack("<I", 2**22), "layer 1: output_multiplier 4194304 at [0] is outside 0..4194303"),
        ("multipliers", 0, struct.pack("<I", 0), "layer 1: output_multiplier 0 at [0] has output_shift"),
        ("biases", 0, struct.pack("<i", q.bias_limit(4) + 1), f"layer 1: bias {q.bias_limit(4) + 1} at [0] is outside"),
        ("biases", 0, struct.pack("<i", -(2**31)), "layer 1: bias -2147483648 at [0] is outside"),
        ("activation", 0, b"\x09", "layer 1: activation code 9 is unknown (0 linear, 1 relu, 2 leaky_relu, 3 sigmoid"),
        ("activation", 0, b"\x00", "layer 1: activation linear, but a hidden layer must not be linear"),
        ("flags", 0, b"\x08", "layer 1: flags 0x08 set bit 3, which tanh does not use"),
        ("flags", 0, b"\x07", "layer 1: flags 0x07 set bit 2, which tanh does not use"),
        ("out_scale", 0, struct.pack("<d", float("nan")), "layer 1: output_scale nan is not a finite positive number"),
        ("out_scale", 0, struct.pack("<d", -1.0), "layer 1: output_scale -1.0 is not a finite positive number"),
        ("pre_scale", 0, struct.pack("<d", 0.0), "layer 1: table_input_scale 0.0 is not a finite positive number"),
        ("pre_scale", 0, struct.pack("<d", float("inf")), "layer 1: table_input_scale inf is not"),
        ("out_scale", 0, struct.pack("<d", 1e300), "layer 1: output_scale 1e+300 " + OUTSIDE),
        ("out_scale", 0, struct.pack("<d", 1e-300), "layer 1: output_scale 1e-300 " + OUTSIDE),
        ("out_scale", 0, struct.pack("<d", 1e-40), "layer 1: output_scale 1e-40 must lie from"),  # a subnormal float32
        ("pre_scale", 0, struct.pack("<d", 1e300), "layer 1: table_input_scale 1e+300 " + OUTSIDE),
        (
            "scales",
            0,
            struct.pack("<f", float("nan")),
            "layer 1: weight_scales nan at [0] is not a finite positive float32",
        ),
        ("scales", 0, struct.pack("<I", 0x7F800001), "layer 1: weight_scales nan at [0] is not"),  # signalling NaN
        ("scales", 0, struct.pack("<f", 0.0), "layer 1: weight_scales 0.0 at [0] is not a finite positive float32"),
        ("n", 0, struct.pack("<I", 0), "layer 1: 0 outputs, outside 1..65536"),
        ("n", 0, struct.pack("<I", 65537), "layer 1: 65,537 outputs, outside 1..65536"),
        ("n", 0, struct.pack("<I", 65536), "layer 1 weight scales runs past the end of its record"),
    ],
)
def test_layer_values_are_refused_even_with_a_right_crc(field, index, raw, expected):
    size = {"multipliers": 4, "biases": 4, "scales": 4}.get(field, 1)
    at = FIRST[field] + (index if field == "weights" else size * index)
    refused(patched(BLOB, at, raw), expected)


def test_an_output_scale_beyond_float32_is_refused_in_the_last_layer_too():
    refused(patched(BLOB, LAST["out_scale"], struct.pack("<d", 1e300)), "layer 4: output_scale 1e+300 must lie from")


def test_the_last_layer_must_be_linear():
    refused(patched(BLOB, LAST["activation"], b"\x01"), "layer 4: activation relu, but the last layer must be linear")
    refused(patched(BLOB, LAST["activation"], b"\x04"), "layer 4: activation tanh, but the last layer must be linear")


def test_leaky_relu_checks_its_negative_side():
    blob = encode(MODELS["leaky-tensor-1"])
    at = walk(blob)[1][0]
    refused(patched(blob, at["neg_shifts"], b"\x3f"), "layer 1: negative_shift 63 at [0] is outside 0..62")
    refused(
        patched(blob, at["neg_multipliers"], struct.pack("<I", 2**31)),
        "layer 1: negative_multiplier 2147483648 at [0] is outside 0..4194303",
    )


def test_class_names_are_checked():
    refused(patched(BLOB, NAMES[0] + 1, b"\xff"), "class name 1 (b'\\xffin') is not UTF-8")
    refused(patched(BLOB, NAMES[4] + 1, "ü".encode()[:1]), "class name 5")  # half a character
    refused(patched(BLOB, 12, b"\x01"), "5 class names for a regression model; only classification has class names")
    four = BLOB[:40] + struct.pack("<H", 4) + BLOB[42 : NAMES[4]] + BLOB[NAMES[4] + 1 + len("fünf".encode()) : -4]
    refused(rebuilt(four), "4 class names for 5 classes (one name per class, or none)")
    empty = BLOB[: NAMES[4]] + b"\x00" + BLOB[NAMES[4] + 1 + len("fünf".encode()) : -4]
    refused(rebuilt(empty), "class name 5 '' is 0 bytes of UTF-8; 1 to 255 are allowed")
    none = BLOB[:40] + struct.pack("<H", 0) + BLOB[LAYERS[0]["record"] : -4]
    assert decode(rebuilt(none)).class_names is None


def test_a_binary_classifier_may_name_two_classes_with_one_output():
    blob = encode(MODELS["binary-sigmoid-names"])
    assert decode(blob).class_names == ("no", "yes")
    names, layers, _ = walk(blob)
    one = blob[:40] + struct.pack("<H", 1) + blob[42 : names[1]] + blob[layers[0]["record"] : -4]
    refused(rebuilt(one), "1 class names for 2 classes")


# --- what encode refuses ----------------------------------------------------------------------------


def put(number, **changes):
    """Layer `number` (1-based) replaced by a copy with changes (a layer is valid by construction:
    tests/test_intref.py checks that each field's rule refuses; here, the file's own rules)."""

    def change(model):
        model.layers[number - 1] = replace(model.layers[number - 1], **changes)

    return change


def model_field(name, value):
    return lambda model: setattr(model, name, value)


@pytest.mark.parametrize(
    "change, expected",
    [
        (put(3, activation="relu"), "layer 3: activation relu, but the last layer must be linear"),
        (
            put(1, activation="linear", negative_multiplier=None, negative_shift=None),
            "layer 1: activation linear, but a hidden layer must not be linear",
        ),
        (put(2, weights=np.ones((3, 5), np.int8)), "layer 2 has 5 inputs, but layer 1 has 3 outputs"),
        (model_field("class_names", ("a", "b")), "2 class names for 5 classes (one name per class, or none)"),
        (model_field("class_names", ("a", "b", "c", "d", "é" * 128)), "class name 5 'éééé"),
        (model_field("class_names", ("a", "b", "c", "d", "")), "class name 5 '' is 0 bytes of UTF-8; 1 to 255"),
        (
            model_field("class_names", ("a", "b", "c", "d", "\ud800")),
            "class name 5 '\\ud800' cannot be written as UTF-8",
        ),
        (model_field("task", "regression"), "5 class names for a regression model"),
        (model_field("output", "relu"), "output 'relu' is not one of linear, softmax, sigmoid"),
        (model_field("input_range", (1.0, 1.0)), "input range [1.0, 1.0] must be finite with low < high"),
        (model_field("input_range", (0.0, float("inf"))), "input range [0.0, inf] must be finite with low < high"),
        (model_field("input_range", (-1e300, 1e300)), "input range [-1e+300, 1e+300] must stay finite in float32"),
        (model_field("layers", []), "0 layers; a model has 1 to 255"),
        (model_field("layers", ["not a layer"]), "layer 1 is a str, not an intref.IntegerLayer"),
    ],
)
def test_encode_refuses_what_the_format_cannot_hold(change, expected):
    model = build((4, 3, 3, 5), "leaky_relu", names=FIVE, seed=9)
    change(model)
    with pytest.raises(ModelFormatError) as info:
        encode(model)
    message = str(info.value)
    assert message.startswith("cannot encode model: ") and "\n" not in message, message
    assert expected in message, message


def test_a_layers_values_are_refused_when_it_is_made_not_when_it_is_saved():
    layer = build((4, 3, 2)).layers[0]
    with pytest.raises(QuantizationError, match=r"^output_shift 63 at \[0\] is outside 0..62$"):
        replace(layer, output_shift=np.full(3, 63))
    with pytest.raises(ValueError, match="read-only"):
        layer.output_shift[0] = 63


def test_a_regression_model_or_an_unnamed_classifier_encodes_without_names():
    model = build((4, 3, 2), task="regression", output="linear")
    assert decode(encode(model)).class_names is None
    assert struct.unpack_from("<H", encode(model), 40) == (0,)


# --- properties: whatever the damage, a model or a ModelFormatError ------------------------------------


@st.composite
def small_models(draw):
    hidden = draw(st.lists(st.integers(1, 5), max_size=3))
    widths = (draw(st.integers(1, 6)), *hidden, draw(st.integers(1, 4)))
    task = draw(st.sampled_from(["classification", "regression"]))
    names = None
    if task == "classification" and draw(st.booleans()):
        names = [f"klasse-{i}-ä" for i in range(max(widths[-1], 2))]
    return build(
        widths,
        draw(st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh"])),
        draw(st.booleans()),
        names,
        task,
        draw(st.sampled_from(["linear", "softmax", "sigmoid"])),
        draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=300, deadline=None)
@given(model=small_models(), data=st.data())
def test_any_truncation_is_a_format_error(model, data):
    blob = encode(model)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(ModelFormatError):
        decode(blob[:cut])


@settings(max_examples=300, deadline=None)
@given(model=small_models(), data=st.data())
def test_any_changed_byte_is_a_format_error(model, data):
    blob = bytearray(encode(model))
    blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ModelFormatError):
        decode(bytes(blob))


def decodes_or_refuses(blob: bytes):
    """decode gives a model that runs, with finite real outputs even at the ends of its input
    range, exports as C without a non-finite literal and encodes again to a fixed point; or a
    ModelFormatError (numpy warnings are errors in this module)."""
    try:
        model = decode(blob)
    except ModelFormatError as exc:
        assert "\n" not in str(exc)
        return None
    encode(model)  # conftest.py checks that it decodes and encodes to itself
    scores = model.scores(np.array([[-128] * model.inputs, [127] * model.inputs], np.int8))
    assert scores.dtype == np.int8 and scores.shape == (2, model.outputs)
    low, high = model.input_range
    raw = np.array([[low] * model.inputs, [high] * model.inputs, [(low + high) / 2] * model.inputs])
    assert np.isfinite(model.predict_proba(raw)).all()
    assert not re.search(r"\b(inf|nan)f?\b", export_c(model, "m"))
    return model


@settings(max_examples=300, deadline=None)
@given(model=small_models(), data=st.data())
def test_any_changed_byte_with_a_right_crc_decodes_or_is_a_format_error(model, data):
    blob = bytearray(encode(model))
    blob[data.draw(st.integers(0, len(blob) - 5))] = data.draw(st.integers(0, 255))
    decodes_or_refuses(with_crc(bytes(blob)))


def test_every_byte_of_a_small_file_changed_with_a_right_crc():
    """Exhaustively over positions, for a model with a table, names, a leaky layer and both
    scale layouts: nothing but a model or a ModelFormatError comes out."""
    model = build((2, 2, 2, 1), ("tanh", "leaky_relu"), names=["x", "ÿ"], seed=11)
    blob = encode(model)
    assert flags(blob) == [SCALES | REQUANT, SCALES | REQUANT | NEGATIVE, 0]
    table = walk(blob)[1][0]["table"]
    sweep(blob, skip=range(table + 2, table + 254))  # any table entry is valid: its ends stand for all


def test_every_byte_of_a_small_version_1_file_changed_with_a_right_crc():
    """Version 1, every weight scale written (flag 1) as version 1 allowed."""
    sweep(encode_v1(build((2, 2, 1), "leaky_relu", names=["x", "ÿ"], seed=11), per_channel=True), (0x00, 0xFF))


def sweep(blob: bytes, values=(0x00, 0xFF, 0x80, 0x7F), skip=()):
    """Every byte of blob (but the CRC and those in skip) set to each of values and to itself
    with its low bit flipped, the CRC made right: a model or a ModelFormatError each time; and
    every truncation refused."""
    decoded = 0
    for at in sorted(set(range(len(blob) - 4)) - set(skip)):
        for value in {*values, blob[at] ^ 0x01}:
            decoded += decodes_or_refuses(patched(blob, at, bytes([value]))) is not None
    assert decoded > 0  # some changes (weights, tables) are valid models
    for cut in range(len(blob)):
        with pytest.raises(ModelFormatError):
            decode(blob[:cut])


# --- bounded (issue 15): the header against os.stat before the body ------------------------------


def peak_bytes(call) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        call()
    except ModelFormatError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_a_large_file_of_another_kind_is_refused_after_its_first_bytes(tmp_path):
    path = tmp_path / "big.qmt"
    with open(path, "wb") as f:
        f.write(b"not a model at all, " * 4)
        f.truncate(1_500_000_000)  # sparse; `qmtik info` read all 1.5 GB to say "wrong magic"
    with pytest.raises(ModelFormatError, match=r"big\.qmt: not a qmtik model \(wrong magic bytes\)$"):
        load_model(path)
    assert peak_bytes(lambda: load_model(path)) < 1 << 20


def test_a_file_longer_than_its_header_says_is_refused_before_its_body(tmp_path):
    blob = encode(build([4, 3, 2]))
    path = tmp_path / "long.qmt"
    with open(path, "wb") as f:
        f.write(blob)
        f.truncate(2 << 30)  # 2 GB, sparse: read whole before
    with pytest.raises(ModelFormatError, match=rf"trailing data: {(2 << 30) - len(blob):,} bytes after the"):
        load_model(path)
    assert peak_bytes(lambda: load_model(path)) < 1 << 20
    with open(path, "r+b") as f:
        f.truncate(5 << 30)  # 5 GB: MemoryError
    with pytest.raises(ModelFormatError, match="5,368,709,120 bytes, more than the 4,294,967,296 qmtik reads"):
        load_model(path)


def test_a_device_or_a_fifo_past_the_stream_limit_is_refused(tmp_path, monkeypatch):
    import threading

    (tmp_path / "zero.qmt").symlink_to("/dev/zero")
    with pytest.raises(ModelFormatError, match=r"zero\.qmt: a device; qmtik reads regular files, FIFOs and pipes$"):
        load_model(tmp_path / "zero.qmt")
    blob = encode(build([4, 3, 2]))
    fifo = tmp_path / "pipe.qmt"
    os.mkfifo(fifo)

    def feed(data):
        with open(fifo, "wb") as f:
            try:
                f.write(data)
            except BrokenPipeError:
                pass

    thread = threading.Thread(target=feed, args=(blob,))
    thread.start()
    assert encode(load_model(fifo)) == blob
    thread.join()
    monkeypatch.setenv("QMTIK_MAX_STREAM_BYTES", str(len(blob) - 1))
    thread = threading.Thread(target=feed, args=(blob,))
    thread.start()
    with pytest.raises(
        ModelFormatError,
        match=r"qmtik reads \(raise it with QMTIK_MAX_STREAM_BYTES=BYTES\)$",
    ):
        load_model(fifo)
    thread.join()
