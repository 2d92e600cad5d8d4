"""The .qmt records of the window kinds (qmtfile_windows.py; docs/format.md, "Window records"):
round trips of models holding each kind, the layout walked by the page alone, the worked size,
each field corrupted (one line naming the layer and the field), every truncation and every
changed byte of a small CNN file. conftest.py checks that every file encoded here is canonical.
"""

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmtik import intref
from qmtik import intref_windows as iw
from qmtik import quantization as q
from qmtik.errors import ModelFormatError
from qmtik.integer_model import QuantizedModel
from qmtik.qmtfile import decode, encode
from test_qmtfile import patched, rebuilt, refused, same_layers, with_crc

pytestmark = pytest.mark.filterwarnings("error")
POOLS = ("max_pool", "avg_pool", "global_avg_pool")


def chain(input_shape, specs, seed=0, task="classification", output="softmax", names=None, start=None):
    """A model of input_shape (H, W, C) through specs, one dict per layer ({"kind": ..., and the
    builder's window arguments}), with random codes and scales chained as training chains them;
    start: the (scale, zero point) of the codes the first layer reads (default: the raw inputs')."""
    rng = np.random.default_rng(seed)
    scale, zero = start or (q.INPUT_SCALE, q.INPUT_ZERO)
    layers, shape = [], tuple(input_shape)
    for number, spec in enumerate(specs, 1):
        spec = dict(spec)
        kind = spec.pop("kind")
        if kind in POOLS:
            layer = iw.build_pool(kind, shape, scale, zero, **spec)
        else:
            last = number == len(specs)
            activation = spec.pop("activation", "linear" if last else "relu")
            per_channel = spec.pop("per_channel", True)
            outputs = {"dense": spec.pop("units", 0), "conv2d": spec.pop("filters", 0)}.get(kind, shape[2])
            kernel = iw.spatial.pair(spec.get("kernel", 1), "kernel")
            fan_in = {"dense": int(np.prod(shape)), "conv2d": kernel[0] * kernel[1] * shape[2]}.get(
                kind, kernel[0] * kernel[1]
            )
            weights = rng.integers(-127, 128, (outputs, fan_in)).astype(np.int8)
            spread = rng.uniform(0.5, 2.0, outputs) if per_channel else np.ones(outputs)
            w_scale = (spread / (127 * np.sqrt(fan_in))).astype(np.float32).astype(np.float64)
            bias = q.quantize_bias(rng.normal(0, 0.5, outputs), scale, zero, weights, w_scale)
            observed = np.array([0.0 if activation == "relu" else rng.uniform(-4, -0.5), rng.uniform(0.5, 4)])
            out_scale, out_zero, pre = q.output_quantization(activation, observed)
            args = (weights, bias, w_scale, scale, zero, activation, out_scale, out_zero, pre, 0.1)
            if kind == "dense":
                layer = intref.build_layer(*args)
            else:
                build = iw.build_conv if kind == "conv2d" else iw.build_depthwise
                layer = build(*args, input_shape=shape, **spec)
        layers.append(layer)
        scale, zero, shape = layer.output_scale, layer.output_offset, getattr(layer, "output_shape", None)
    return QuantizedModel(task, output, (0.0, 255.0), layers, names)


def conv(filters, kernel=3, **kw):
    return {"kind": "conv2d", "filters": filters, "kernel": kernel, **kw}


def dense(units, **kw):
    return {"kind": "dense", "units": units, **kw}


def pool(kind, size=None, **kw):
    return {"kind": kind, **({"size": size} if size is not None else {}), **kw}


MODELS = {
    "conv-pool-dense": lambda: chain(
        (6, 6, 1), [conv(4, padding="same"), pool("max_pool", 2), dense(3)], names=["a", "b", "c"]
    ),
    "depthwise-separable": lambda: chain(
        (6, 6, 3),
        [
            {"kind": "depthwise_conv2d", "kernel": 3, "stride": 2, "padding": [1, 1, 1, 1], "activation": "leaky_relu"},
            conv(5, 1),  # pointwise
            pool("global_avg_pool"),
            dense(4),
        ],
        seed=1,
    ),
    "conv1d-tanh-per-tensor": lambda: chain(
        (1, 12, 2),
        [
            conv(3, (1, 3), stride=(1, 2), padding="same", activation="tanh", per_channel=False),
            pool("max_pool", (1, 2)),
            dense(2),
        ],
        seed=2,
        task="regression",
        output="linear",
    ),
    "all-convolutional": lambda: chain(
        (5, 5, 2),
        [conv(3, activation="sigmoid"), conv(4, 1, activation="linear"), pool("global_avg_pool")],
        seed=3,
    ),
    "pools-first": lambda: chain(
        (5, 5, 1),
        [pool("max_pool", 2, padding="same"), pool("avg_pool", (3, 1), stride=1), dense(2)],
        seed=4,
        output="sigmoid",
    ),
    "dense-then-window": lambda: dense_then_window(),
}


def dense_then_window():
    """12 inputs -> dense 16, whose codes a 2x2 conv reads as 4x4x1 -> avg pool 3 -> dense 3."""
    first = chain((1, 1, 12), [dense(16, activation="relu")], seed=5).layers
    specs = [conv(2, 2, activation="relu"), pool("avg_pool", 3), dense(3)]
    rest = chain((4, 4, 1), specs, seed=6, start=(first[-1].output_scale, first[-1].output_offset)).layers
    return QuantizedModel("classification", "linear", (0.0, 255.0), first + rest)


def same_model(a: QuantizedModel, b: QuantizedModel):
    assert (a.task, a.output, a.input_range, a.class_names) == (b.task, b.output, b.input_range, b.class_names)
    assert [layer.kind for layer in a.layers] == [layer.kind for layer in b.layers]
    for x, y in zip(a.layers, b.layers):
        assert type(x) is type(y)
        if x.kind != "dense":
            assert (x.input_shape, x.kernel, x.stride, x.pads) == (y.input_shape, y.kernel, y.stride, y.pads)
        if isinstance(x, intref.IntegerLayer):
            same_layers(x, y)
        else:
            assert (x.scale, x.zero_point) == (y.scale, y.zero_point)


@pytest.mark.parametrize("key", MODELS)
def test_round_trip_gives_the_same_model_scores_and_bytes(key):
    model = MODELS[key]()
    blob = encode(model)
    loaded = decode(blob)
    same_model(loaded, model)
    assert encode(loaded) == blob
    codes = np.random.default_rng(1).integers(-128, 128, (60, model.inputs)).astype(np.int8)
    codes[0], codes[1] = -128, 127
    np.testing.assert_array_equal(loaded.scores(codes), intref.reference_scores(model.layers, codes))
    assert walk(blob)[1] == len(blob) - 4  # the page's layout, walked independently


def test_every_kind_has_its_code_and_each_model_above_holds_them_all():
    kinds = {layer.kind for make in MODELS.values() for layer in make().layers}
    assert kinds == {"dense", *iw.KINDS}
    codes = {
        layer.kind: walk(encode(make()))[0][i]["code"]
        for make in MODELS.values()
        for i, layer in enumerate(make().layers)
    }
    assert codes == {"dense": 0, "conv2d": 1, "depthwise_conv2d": 2, "max_pool": 3, "avg_pool": 4, "global_avg_pool": 5}


# --- the layout, by docs/format.md alone ---------------------------------------------------------

WINDOW = ("height", "width", "channels", "kh", "kw", "sh", "sw", "top", "bottom", "left", "right")
SIZES = {"scales": 4, "weights": 1, "biases": 4, "multipliers": 4, "shifts": 1, "neg_multipliers": 4,
         "neg_shifts": 1, "pre_scale": 8, "table": 1}  # fmt: skip


def walk(blob: bytes):
    """(the offsets of every record's fields, where the records end), following docs/format.md."""
    pos, fan_in, layers = 42, struct.unpack_from("<I", blob, 16)[0], []
    for _ in range(struct.unpack_from("<H", blob, 40)[0]):
        pos += 1 + blob[pos]
    for _ in range(blob[14]):
        code, length = struct.unpack_from("<BI", blob, pos)
        at, body = {"code": code, "record": pos, "kind": pos, "length": pos + 1}, pos + 5
        if code in (1, 2, 3, 4):
            values = struct.unpack_from("<11I", blob, body)
            at.update({name: body + 4 * i for i, name in enumerate(WINDOW)})
            body += 44
        elif code == 5:
            h, w, c = struct.unpack_from("<3I", blob, body)
            values = (h, w, c, h, w, h, w, 0, 0, 0, 0)
            at.update({name: body + 4 * i for i, name in enumerate(WINDOW[:3])})
            body += 12
        if code:
            h, w, c, kh, kw, sh, sw, top, bottom, left, right = values
            assert h * w * c == fan_in
            out_hw = ((h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1)
            fan_in, taps = out_hw[0] * out_hw[1] * c, (kh * kw * c if code == 1 else kh * kw)
        if code in (0, 1, 2):
            n, activation, flags = struct.unpack_from("<IBB", blob, body)
            at.update(n=body, activation=body + 4, flags=body + 5, out_zero=body + 6, out_scale=body + 7)
            taps = fan_in if code == 0 else taps
            count = {bit: n if flags & bit else 1 for bit in (1, 2, 4)}
            fields = [("scales", count[1]), ("weights", n * taps), ("biases", n), ("multipliers", count[2]),
                      ("shifts", count[2])]  # fmt: skip
            fields += [("neg_multipliers", count[4]), ("neg_shifts", count[4])] if activation == 2 else []
            fields += [("pre_scale", 1), ("table", 256)] if activation in (3, 4) else []
            body += 15
            for field, number in fields:
                at[field] = body
                body += SIZES[field] * number
            fan_in = n if code == 0 else out_hw[0] * out_hw[1] * n
        assert body == pos + length, (code, body - pos, length)
        layers.append(at)
        pos = body
    return layers, pos


def record_size(layer) -> int:
    """A record's bytes by the page's formulas."""
    if layer.kind in ("max_pool", "avg_pool"):
        return 49
    if layer.kind == "global_avg_pool":
        return 17
    n, taps = layer.weights.shape

    def count(*arrays):
        return n if arrays[0] is not None and any(len(set(a)) > 1 for a in arrays) else 1

    s, r = count(layer.weight_scales.astype(np.float32)), count(layer.output_multiplier, layer.output_shift)
    g = count(layer.negative_multiplier, layer.negative_shift) if layer.activation == "leaky_relu" else 0
    table = 8 + 256 if layer.table is not None else 0
    return (20 if layer.kind == "dense" else 64) + 4 * s + n * taps + 4 * n + 5 * r + 5 * g + table


@pytest.mark.parametrize("key", MODELS)
def test_each_record_has_the_size_the_page_gives(key):
    model = MODELS[key]()
    names = sum(1 + len(name.encode()) for name in model.class_names or ())
    assert len(encode(model)) == 40 + 2 + names + sum(map(record_size, model.layers)) + 4


def fashion_cnn(seed=0):
    """examples/fashion_cnn.toml's network: the page's worked example."""
    return chain(
        (28, 28, 1),
        [
            conv(16, padding="same"),
            pool("max_pool", 2),
            conv(32, padding="same"),
            pool("max_pool", 2),
            conv(64, padding="same"),
            pool("global_avg_pool"),
            dense(10),
        ],
        seed,
    )


def test_the_small_cnn_of_the_page_has_the_size_it_gives():
    blob = encode(fashion_cnn())
    records = [416, 49, 5_088, 49, 19_328, 17, 790]
    assert [at["code"] for at in walk(blob)[0]] == [1, 3, 1, 3, 1, 5, 0]
    sizes = [struct.unpack_from("<I", blob, at["length"])[0] for at in walk(blob)[0]]
    assert sizes == records and len(blob) == 40 + 2 + sum(records) + 4 == 25_783
    text = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    assert all(figure in text for figure in ("25,783", "5,088", "19,328", "23,824"))


# --- strictness: each field corrupted, with a right CRC ------------------------------------------

CNN = encode(MODELS["conv-pool-dense"]())  # 6x6x1 -> conv 3x3 same (6x6x4) -> max pool 2 (3x3x4) -> dense 3
CONV, POOL, DENSE = walk(CNN)[0]
SEPARABLE = encode(MODELS["depthwise-separable"]())  # depthwise 6x6x3 -> 3x3x3, pointwise -> 3x3x5, global, dense
DEPTHWISE, POINTWISE, GLOBAL, _ = walk(SEPARABLE)[0]
POOLS_FIRST = encode(MODELS["pools-first"]())  # max pool 2 same (5x5x1 -> 3x3x1), avg pool 3x1 stride 1
MAX_FIRST, AVG, _ = walk(POOLS_FIRST)[0]
DENSE_FIRST = encode(MODELS["dense-then-window"]())  # dense 16 -> conv reading 4x4x1 -> avg pool 3 -> dense
WINDOWED = walk(DENSE_FIRST)[0][1]


def u32(value):
    return struct.pack("<I", value)


@pytest.mark.parametrize(
    "blob, at, raw, expected",
    [
        (CNN, CONV["kind"], b"\x06", "layer 1: layer kind 6 is unknown to this qmtik (it reads 0 dense, 1 conv2d, "
         "2 depthwise_conv2d, 3 max_pool, 4 avg_pool, 5 global_avg_pool): a newer qmtik may read it"),
        (CNN, CONV["height"], u32(0), "layer 1: input shape 0x6x1: each size must be 1 to 65536"),
        (CNN, CONV["channels"], u32(65537), "layer 1: input shape 6x6x65537: each size must be 1 to 65536"),
        (CNN, CONV["height"], u32(3), "layer 1: input shape 3x6x1 is 18 codes, but the model has 36 inputs"),
        (CNN, CONV["kh"], u32(0), "layer 1: kernel 0x3: each size must be at least 1"),
        (CNN, CONV["sw"], u32(0), "layer 1: stride 1x0: each size must be at least 1"),
        (CNN, CONV["kh"], u32(9), "layer 1: kernel 9x3, stride 1x1, pads (1, 1, 1, 1): a 9x3 window of stride 1x1 "
         "over a 6x6 input (padding [1, 1, 1, 1]): height has a window of 9 larger than its padded input of 8"),
        (CNN, CONV["n"], u32(0), "layer 1: 0 outputs, outside 1..65536"),
        (CNN, CONV["n"], u32(2000), "layer 1: output 6x6x2000 is 72,000 codes, more than 65536"),
        (CNN, CONV["top"], u32(2**32 - 1), "layer 1: output 4294967300x6x4 is 103,079,215,200 codes, more than 65536"),
        (CNN, CONV["activation"], b"\x00", None),  # a hidden convolution may be linear: the model decodes
        (CNN, CONV["activation"], b"\x07", "layer 1: activation code 7 is unknown (0 linear, 1 relu, 2 leaky_relu"),
        (CNN, CONV["flags"], b"\x04", "layer 1: flags 0x04 set bit 2, which relu does not use"),
        (CNN, CONV["weights"] + 7, b"\x80", "layer 1: weights -128 at [0, 7] is outside -127..127"),
        (CNN, CONV["biases"], struct.pack("<i", q.bias_limit(9) + 1), f"layer 1: bias {q.bias_limit(9) + 1} at [0]"),
        (CNN, CONV["shifts"] + 1, b"\x3f", "layer 1: output_shift 63 at [1] is outside 0..62"),
        (CNN, CONV["out_scale"], struct.pack("<d", 0.0), "layer 1: output_scale 0.0 is not a finite positive number"),
        (CNN, CONV["scales"], struct.pack("<f", -1.0), "layer 1: weight_scales -1.0 at [0] is not a finite positive"),
        (CNN, POOL["height"], u32(3), "layer 2: input shape 3x6x4, but layer 1 writes 6x6x4"),
        (CNN, POOL["height"], u32(3) + u32(12), "layer 2: input shape 3x12x4, but layer 1 writes 6x6x4"),
        (CNN, POOL["top"], u32(2), "layer 2: pads (2, 0, 0, 0): each must be smaller than the kernel (2, 2)"),
        (CNN, POOL["kh"], u32(1), None),  # a 1x2 window of stride 2: 3x3x4 still, another valid model
        (CNN, POOL["kh"], u32(4), "layer 3: bias "),  # 2x3x4: its weights end early
        (CNN, DENSE["n"], u32(4), "layer 3 weights runs past the end of its record"),
        (DENSE_FIRST, WINDOWED["height"], u32(2), "layer 2: input shape 2x4x1 is 8 codes, but layer 1 writes 16 codes"),
        (SEPARABLE, DEPTHWISE["n"], u32(4), "layer 1: 4 outputs, but a depthwise_conv2d layer has one per input "
         "channel (3)"),
        (SEPARABLE, DEPTHWISE["kw"], u32(4), "layer 1 negative multiplier runs past the end of its record"),
        (SEPARABLE, DEPTHWISE["activation"], b"\x01", "layer 1: flags 0x07 set bit 2, which relu does not use"),
        (SEPARABLE, POINTWISE["kh"], u32(2), "layer 2 output multiplier runs past the end of its record"),
        (SEPARABLE, GLOBAL["height"], u32(1) + u32(9), "layer 3: input shape 1x9x5, but layer 2 writes 3x3x5"),
        (SEPARABLE, GLOBAL["channels"], u32(4), "layer 3: input shape 3x3x4, but layer 2 writes 3x3x5"),
        (POOLS_FIRST, MAX_FIRST["left"], u32(5), "layer 1: pads (0, 1, 5, 1): each must be smaller than the kernel"),
        (POOLS_FIRST, AVG["bottom"], u32(1), "layer 2: pads (0, 1, 0, 0): an average pool has full windows only"),
        (POOLS_FIRST, AVG["kh"], u32(300), "layer 2: kernel 300x1, stride 1x1, pads (0, 0, 0, 0): a 300x1 window"),
        (POOLS_FIRST, AVG["kh"], u32(2**16) + u32(2), "layer 2: kernel 65536x2, stride 1x1, pads (0, 0, 0, 0)"),
    ],
)  # fmt: skip
def test_each_window_field_is_checked_even_with_a_right_crc(blob, at, raw, expected):
    changed = patched(blob, at, raw)
    if expected is None:
        decode(changed)
    else:
        refused(changed, expected)


def test_a_window_of_more_than_65536_taps_is_refused_before_its_weights_are_read():
    # a 256x257 kernel over 6x6 input padded to 256x257: 65,792 taps
    window = u32(256) + u32(257) + u32(1) + u32(1) + u32(250) + u32(0) + u32(251) + u32(0)
    refused(patched(CNN, CONV["kh"], window), "layer 1: kernel 256x257 over 1 channels: 65,792 taps per window, more")


@pytest.mark.parametrize("at, delta", [(CONV, 1), (CONV, -1), (POOL, 1), (POOL, -1), (GLOBAL, 1), (GLOBAL, -1)])
def test_a_window_record_length_that_disagrees_with_its_fields_is_refused(at, delta):
    blob = SEPARABLE if at is GLOBAL else CNN
    (n,) = struct.unpack_from("<I", blob, at["length"])
    number = 3 if at is GLOBAL else 1 if at is CONV else 2
    expected = f"layer {number}: record length {n + 1:,} bytes, but its fields take {n:,}" if delta > 0 else "runs past"
    refused(patched(blob, at["length"], u32(n + delta)), expected)


def test_values_stored_per_channel_when_all_equal_are_refused_in_a_convolution_too():
    blob = encode(MODELS["conv1d-tanh-per-tensor"]())
    at = walk(blob)[0][0]
    assert blob[at["flags"]] == 0
    out = bytearray(blob[:-4])
    one = out[at["scales"] : at["scales"] + 4]
    out[at["scales"] : at["scales"] + 4] = one * 3
    out[at["flags"]] = 1
    struct.pack_into("<I", out, at["length"], struct.unpack_from("<I", out, at["length"])[0] + 8)
    refused(rebuilt(bytes(out)), "layer 1: flag 1 stores weight scales per channel, but all 3 channels share one")


# --- what encode refuses -------------------------------------------------------------------------


def encoding_refused(model, expected):
    with pytest.raises(ModelFormatError) as info:
        encode(model)
    message = str(info.value)
    assert message.startswith("cannot encode model: ") and "\n" not in message, message
    assert expected in message, message


def test_encode_refuses_a_window_layer_the_file_would_read_back_otherwise():
    model = MODELS["conv-pool-dense"]()
    conv_layer, pool_layer, last = model.layers
    other = replace(pool_layer, scale=pool_layer.scale * 2)
    encoding_refused(
        QuantizedModel("classification", "softmax", (0.0, 255.0), [conv_layer, other, last]),
        f"layer 2: a max_pool layer with input scale {other.scale!r} and zero point -128, but the codes it reads "
        f"have {conv_layer.output_scale!r} and -128",
    )
    shifted = replace(conv_layer, input_zero_point=0)  # it would pad with 0, and be read back padding with -128
    encoding_refused(
        QuantizedModel("classification", "softmax", (0.0, 255.0), [shifted, pool_layer, last]),
        "layer 1: a conv2d layer with input scale 0.00392156862745098 and zero point 0, but the codes it reads have",
    )
    reshaped = replace(pool_layer, input_shape=(3, 12, 4), kernel=(1, 2), stride=(1, 2))  # 144 codes as 3x12x4
    encoding_refused(
        QuantizedModel("classification", "softmax", (0.0, 255.0), [conv_layer, reshaped, dense_after(reshaped, last)]),
        "layer 2: input shape 3x12x4, but layer 1 writes 6x6x4",
    )
    encoding_refused(
        QuantizedModel("regression", "linear", (0.0, 255.0), [conv_layer]),
        "layer 1: activation relu, but the last layer must be linear",
    )


def dense_after(layer, dense_layer):
    """dense_layer's values over layer's outputs (its weights cut or tiled to fit)."""
    weights = np.resize(dense_layer.weights, (dense_layer.outputs, layer.outputs))
    return replace(dense_layer, weights=weights, bias=np.zeros(dense_layer.outputs, np.int64))


# --- whatever the damage: a model or one line ----------------------------------------------------

SMALL = encode(
    chain(
        (3, 4, 2),
        [
            {"kind": "depthwise_conv2d", "kernel": 2, "padding": "same", "activation": "leaky_relu"},
            conv(2, (2, 1), stride=(1, 2), activation="tanh", per_channel=False),
            pool("max_pool", (2, 1), padding=[0, 1, 0, 0]),
            pool("avg_pool", 1),
            pool("global_avg_pool"),
            dense(2),
        ],
        seed=7,
        names=["x", "ÿ"],
    )
)


def decodes_or_refuses(blob: bytes):
    """A model that computes on the extreme codes and encodes again (conftest.py checks it is
    canonical), or a one-line ModelFormatError."""
    try:
        model = decode(blob)
    except ModelFormatError as exc:
        assert "\n" not in str(exc)
        return None
    encode(model)
    scores = model.scores(np.array([[-128] * model.inputs, [127] * model.inputs], np.int8))
    assert scores.shape == (2, model.outputs)
    assert np.isfinite(model.predict_proba(np.array([[0.0] * model.inputs, [255.0] * model.inputs]))).all()
    return model


def test_every_truncation_of_a_small_cnn_file_is_refused():
    assert {at["code"] for at in walk(SMALL)[0]} == {0, 1, 2, 3, 4, 5}
    for cut in range(len(SMALL)):
        with pytest.raises(ModelFormatError):
            decode(SMALL[:cut])


def test_every_byte_of_a_small_cnn_file_changed_with_a_right_crc():
    table = walk(SMALL)[0][1]["table"]
    decoded = 0
    for at in sorted(set(range(len(SMALL) - 4)) - set(range(table + 2, table + 254))):
        for value in {0x00, 0xFF, 0x80, SMALL[at] ^ 0x01}:
            decoded += decodes_or_refuses(patched(SMALL, at, bytes([value]))) is not None
    assert decoded > 0


def test_changed_window_fields_decode_as_another_valid_model_or_are_refused():
    """Each window field of each record set to every small value, the CRC made right."""
    for at in walk(SMALL)[0]:
        for name in WINDOW:
            if name in at:
                for value in range(0, 9):
                    decodes_or_refuses(with_crc(SMALL[: at[name]] + u32(value) + SMALL[at[name] + 4 :]))


# --- properties: random window models -------------------------------------------------------------


@st.composite
def window_models(draw):
    """A random small CNN: 1 to 3 window layers of any kind, window and padding, then a dense layer."""
    first = shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3)))
    specs = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv2d", "depthwise_conv2d", *POOLS]))
        kernel = (draw(st.integers(1, shape[0])), draw(st.integers(1, shape[1])))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        padding = "valid" if kind == "avg_pool" else draw(st.sampled_from(["valid", "same"]))
        if kind == "global_avg_pool":
            spec, shape = pool(kind), (1, 1, shape[2])
        else:
            if kind == "max_pool" or kind == "avg_pool":
                spec = pool(kind, kernel, stride=stride, padding=padding)
            else:
                spec = {"kind": kind, "kernel": kernel, "stride": stride, "padding": padding}
                spec["activation"] = draw(st.sampled_from(["linear", "relu", "leaky_relu", "sigmoid", "tanh"]))
                spec["per_channel"] = draw(st.booleans())
                if kind == "conv2d":
                    spec["filters"] = draw(st.integers(1, 3))
            out_hw = iw.spatial.geometry(shape[:2], kernel, stride, padding).out_hw
            shape = (*out_hw, spec.get("filters", shape[2]))
        specs.append(spec)
    specs.append(dense(draw(st.integers(1, 3))))
    return chain(first, specs, draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=100, deadline=None)
@given(model=window_models(), data=st.data())
def test_random_window_models_round_trip_and_refuse_damage(model, data):
    blob = encode(model)
    loaded = decode(blob)
    same_model(loaded, model)
    assert walk(blob)[1] == len(blob) - 4
    codes = np.random.default_rng(0).integers(-128, 128, (4, model.inputs)).astype(np.int8)
    np.testing.assert_array_equal(loaded.scores(codes), intref.reference_scores(model.layers, codes))
    with pytest.raises(ModelFormatError):
        decode(blob[: data.draw(st.integers(0, len(blob) - 1))])
    at = data.draw(st.integers(0, len(blob) - 5))
    decodes_or_refuses(patched(blob, at, bytes([data.draw(st.integers(0, 255))])))


# --- limits (issue 15): a window layer's cost is not bounded by the file's size ----------------


def test_a_model_has_the_figures_of_the_config_it_comes_from():
    from qmtik import limits
    from qmtik.config import load_config

    config = load_config(Path(__file__).parents[1] / "examples" / "fashion_cnn.toml")
    figures = limits.model_figures(fashion_cnn().layers)
    assert figures == limits.network_figures(config.network.shapes)
    assert figures == limits.Figures(23_946, 110_056, 1_941_824, 7)


def test_a_pool_of_272_million_comparisons_in_a_small_file_is_refused_on_load(monkeypatch):
    """A 128x128 max pool of stride 1 over 256x256 codes: 44 bytes of window, 16,641 outputs of
    16,384 taps each, more than the default QMTIK_MAX_MACS, refused before the model can run."""
    monkeypatch.setenv("QMTIK_MAX_MACS", str(2**40))  # to encode it (conftest decodes every file)
    blob = encode(chain((256, 256, 1), [pool("max_pool", (128, 128), stride=1), dense(2)]))
    assert len(blob) < 40_000 and decode(blob).layers[0].output_shape == (129, 129, 1)
    monkeypatch.delenv("QMTIK_MAX_MACS")
    with pytest.raises(ModelFormatError) as info:
        decode(blob, "pool.qmt")
    assert str(info.value) == (
        "model file pool.qmt: the model needs 272,679,426 multiply-accumulates per sample, "
        "the limit is 134,217,728; raise it with QMTIK_MAX_MACS"
    )


def test_a_model_deeper_than_qmtik_max_layers_is_refused_before_its_records(monkeypatch):
    blob = encode(MODELS["conv-pool-dense"]())
    monkeypatch.setenv("QMTIK_MAX_LAYERS", "2")
    with pytest.raises(ModelFormatError, match="the model needs 3 layers, the limit is 2, set by QMTIK_MAX_LAYERS; "):
        decode(blob)
    monkeypatch.setenv("QMTIK_MAX_LAYERS", "3")
    assert len(decode(blob).layers) == 3
