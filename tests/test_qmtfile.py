"""The .qmt file: round trips, its size, and strictness against damaged files."""
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qmtik
from qmtik import quantization as q
from qmtik.errors import ModelFormatError
from qmtik.model import QuantizedModel
from qmtik.qmtfile import HEADER, LAYER, decode, encode, load_model, save_model


def build(widths, activation="relu", per_channel=True, names=None, task="classification", output="softmax",
          seed=0):
    """A model with random codes, laid out as the quantizer lays one out."""
    rng = np.random.default_rng(seed)
    layers, scale, zero = [], q.INPUT_SCALE, q.INPUT_ZERO
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        kind = activation if i < len(widths) - 2 else "linear"
        weight = rng.integers(-127, 128, (fan_out, fan_in)).astype(np.int8)
        w_scale = rng.uniform(0.001, 0.01, fan_out) if per_channel else np.full(fan_out, 0.004)
        w_scale = w_scale.astype(np.float32).astype(np.float64)          # what the file keeps
        bias = rng.integers(-3000, 3000, fan_out)
        observed = (-1.0, 3.0) if kind != "relu" else (0.0, 3.0)
        out_scale, out_zero, pre = q.output_quantization(kind, np.array(observed))
        layers.append(q.build_layer(weight, bias, w_scale, scale, zero, kind, out_scale, out_zero, pre, 0.1))
        scale, zero = out_scale, out_zero
    return QuantizedModel(task, output, (0.0, 255.0), layers, names)


def with_crc(blob: bytes) -> bytes:
    """blob with its last 4 bytes replaced by the right CRC."""
    return blob[:-4] + struct.pack("<I", zlib.crc32(blob[:-4]))


def patched(blob: bytes, offset: int, raw: bytes) -> bytes:
    """blob with raw written at offset and the CRC made right again."""
    return with_crc(blob[:offset] + raw + blob[offset + len(raw):])


MODELS = [
    build((5, 3)),
    build((9, 17, 3), "relu"),
    build((9, 1, 4), "leaky_relu", per_channel=False),
    build((6, 3, 17, 2), "sigmoid"),
    build((4, 3, 3, 3, 5), "tanh", names=["ein", "zwei", "drei", "vier", "fünf"]),
    build((7, 8, 1), "relu", task="regression", output="linear"),
    build((7, 8, 1), "relu", output="sigmoid", names=["no", "yes"]),
]


@pytest.mark.parametrize("model", MODELS)
def test_round_trip_gives_the_same_bytes_and_the_same_scores(model):
    blob = encode(model)
    loaded = decode(blob)
    assert encode(loaded) == blob
    codes = np.random.default_rng(1).integers(-128, 128, (200, model.inputs)).astype(np.int8)
    np.testing.assert_array_equal(loaded.scores(codes), model.scores(codes))
    assert loaded.class_names == (tuple(model.class_names) if model.class_names else None)
    for a, b in zip(loaded.layers, model.layers):
        for name in ("weight", "bias", "multiplier", "shift", "neg_multiplier", "neg_shift", "table"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert (a.out_scale, a.out_zero, a.in_scale, a.in_zero) == (b.out_scale, b.out_zero, b.in_scale, b.in_zero)
        np.testing.assert_array_equal(a.weight_scale, b.weight_scale)


def test_a_784_256_256_10_model_is_a_quarter_of_float32():
    model = build((784, 256, 256, 10))
    size = len(encode(model))
    assert size == 40 + 2 + 3 * LAYER.size + 522 * 4 + 268_800 + 522 * 4 + 522 * 5 + 4 == 275_704
    assert size <= 277_000
    assert size / (4 * (268_800 + 522)) < 0.26


def test_save_and_load(tmp_path):
    path = tmp_path / "m.qmt"
    save_model(path, MODELS[1])
    assert path.read_bytes() == encode(MODELS[1])
    assert encode(load_model(path)) == encode(MODELS[1])


def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.qmt"
    save_model(path, MODELS[0])
    before = path.read_bytes()
    bad = build((5, 3))
    bad.layers[0].shift[0] = 99                         # refused while encoding
    with pytest.raises(ModelFormatError, match="layer 1"):
        save_model(path, bad)
    monkeypatch.setattr("qmtik.qmtfile.encode", lambda model: b"half" + 1 / 0)  # a crash midway
    with pytest.raises(ZeroDivisionError):
        save_model(path, MODELS[1])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.qmt"]


def test_a_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(ModelFormatError, match="not found"):
        load_model(tmp_path / "none.qmt")


BLOB = encode(MODELS[4])        # tanh: tables, class names, three hidden layers


def refused(blob, fragment):
    with pytest.raises(ModelFormatError) as info:
        decode(blob, "m.qmt")
    message = str(info.value)
    assert message.startswith("model file m.qmt: ") and "\n" not in message
    assert fragment in message, message


@pytest.mark.parametrize("length", [0, 5, 8, 39, 43, 44, 100, len(BLOB) - 1])
def test_truncated_files_are_refused(length):
    refused(BLOB[:length], "truncated" if 0 < length else "empty")


def test_damage_is_refused():
    refused(b"PK\x03\x04" + BLOB[4:], "not a qmtik model")
    refused(BLOB + b"\x00", "bytes after the end")
    flipped = bytearray(BLOB)
    flipped[300] ^= 0x01
    refused(bytes(flipped), "CRC mismatch")
    refused(patched(BLOB, 8, struct.pack("<H", 2)), "newer than this qmtik reads (1); upgrade qmtik")
    refused(patched(BLOB, 8, struct.pack("<H", 0)), "version 0")


def layer_offset(blob, index):
    """Offset of layer `index`'s record (0-based), walking the file as the format says."""
    pos = HEADER.size
    (count,) = struct.unpack_from("<H", blob, pos)
    pos += 2
    for _ in range(count):
        pos += 1 + blob[pos]
    fan_in = struct.unpack_from("<I", blob, 16)[0]
    for _ in range(index):
        outputs, kind, per_channel = struct.unpack_from("<IBB", blob, pos)
        pos += LAYER.size + 4 * (outputs if per_channel else 1) + outputs * fan_in + 9 * outputs
        pos += 5 * outputs if kind == 2 else 0
        pos += 256 if kind in (3, 4) else 0
        fan_in = outputs
    return pos


def test_values_out_of_range_are_refused_even_with_a_right_crc():
    first = layer_offset(BLOB, 0)
    outputs, kind, per_channel = struct.unpack_from("<IBB", BLOB, first)
    weights = first + LAYER.size + 4 * (outputs if per_channel else 1)
    shifts = weights + outputs * 4 + 4 * outputs + 4 * outputs
    refused(patched(BLOB, weights, b"\x80"), "weight -128")
    refused(patched(BLOB, shifts, b"\x3f"), "shift 63")
    refused(patched(BLOB, shifts - 4 * outputs, struct.pack("<I", 2**22)), "multiplier 4194304")
    refused(patched(BLOB, first + 4, b"\x09"), "activation code 9")
    refused(patched(BLOB, first + 4, b"\x00"), "the last layer must be linear")
    refused(patched(BLOB, 15, b"\x01"), "reserved header byte")
    refused(patched(BLOB, first + 7, b"\x01"), "reserved or flag byte")
    refused(patched(BLOB, HEADER.size, struct.pack("<H", 4)), "layer 1")    # the layout shifts by a name
    refused(patched(BLOB, HEADER.size + 3, b"\xff"), "not UTF-8")
    refused(patched(BLOB, first + 8, struct.pack("<d", float("nan"))), "output scale nan")
    refused(patched(BLOB, 20, struct.pack("<dd", 5.0, 5.0)), "input range [5.0, 5.0]")
    refused(patched(BLOB, 12, b"\x07"), "task code 7")


def test_class_names_must_match_the_classes():
    model = build((4, 3, 5), names=["a", "b", "c", "d", "e"])
    blob = encode(model)
    refused(patched(blob, 12, b"\x01"), "5 class names for a regression model")
    names_at = HEADER.size + 2 + 2 * 4                  # the fifth name's length byte
    shorter = blob[:names_at] + blob[names_at + 2:]     # drop the fifth name ...
    shorter = shorter[:HEADER.size] + struct.pack("<H", 4) + shorter[HEADER.size + 2:]
    shorter = shorter[:36] + struct.pack("<I", len(shorter)) + shorter[40:]
    refused(with_crc(shorter), "4 class names for a classification model with 5 classes")


SMALL = [encode(m) for m in MODELS[:5]]


def decodes_or_refuses(blob):
    try:
        decode(blob)
    except ModelFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(SMALL) - 1), data=st.data())
def test_any_truncation_is_a_format_error(which, data):
    blob = SMALL[which]
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(ModelFormatError):
        decode(blob[:cut])


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(SMALL) - 1), data=st.data())
def test_any_changed_byte_is_a_format_error(which, data):
    blob = bytearray(SMALL[which])
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ModelFormatError):
        decode(bytes(blob))


@settings(max_examples=500, deadline=None)
@given(which=st.integers(0, len(SMALL) - 1), data=st.data())
def test_any_changed_byte_with_a_right_crc_decodes_or_is_a_format_error(which, data):
    """Past the CRC, every field is still checked: nothing but ModelFormatError escapes, and
    what decodes is a model that runs."""
    blob = bytearray(SMALL[which])
    at = data.draw(st.integers(0, len(blob) - 5))
    blob[at] = data.draw(st.integers(0, 255))
    try:
        model = decode(with_crc(bytes(blob)))
    except ModelFormatError:
        return
    codes = np.zeros((2, model.inputs), np.int8)
    assert model.scores(codes).shape == (2, model.outputs)
