"""The translation of ONNX nodes into qmtik layers: the channels-last reorder of a dense layer after
a flatten, and each refusal in one line naming the operator, the node and what is supported."""

import numpy as np
import pytest

from onnx_helpers import Builder, conv, dense
from qmtik import OnnxError
from qmtik.onnx_import import import_onnx
from qmtik.onnx_layers import channels_last_order


def test_channels_last_order_maps_hwc_positions_to_chw_indices():
    # (C, H, W) = (2, 1, 3): channels-first index c * 3 + w; channels-last position w * 2 + c
    assert channels_last_order((2, 1, 3)).tolist() == [0, 3, 1, 4, 2, 5]
    assert channels_last_order((2, 3)).tolist() == [0, 3, 1, 4, 2, 5]  # (C, L)


def refusal(tmp_path, builder: Builder, input_range=(0, 1)) -> str:
    with pytest.raises(OnnxError) as info:
        import_onnx(builder.save(tmp_path / "m.onnx"), input_range)
    message = str(info.value)
    assert "\n" not in message
    return message


def cnn_start(**attrs) -> Builder:
    return conv(Builder((2, 6, 6)), 2, 3, (3, 3), **attrs)


def reshaped(shape) -> Builder:
    b = cnn_start()
    return b.add("Reshape", b.const(np.array(shape), np.int64))


@pytest.mark.parametrize(
    "make, wanted",
    [
        (lambda: dense(Builder((4,)), 4, 3, activation=None).add("LogSoftmax"),
         r"LogSoftmax node 'n\d+_LogSoftmax': not supported \(use Softmax, or export the logits\); supported: Gemm"),
        (lambda: cnn_start().add("MaxPool", kernel_shape=[2, 2], ceil_mode=1),
         r"MaxPool node .*: not supported \(ceil_mode = 1; export with ceil_mode=False\)"),
        (lambda: cnn_start(dilations=[2, 2]), r"Conv node .*: not supported \(dilations \[2, 2\]\)"),
        (lambda: cnn_start().add("AveragePool", kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
         r"AveragePool node .*pads \[1, 1, 1, 1\]: qmtik's average pool takes whole windows only"),
        (lambda: conv(Builder((4, 6, 6)), 2, 4, (3, 3), group=2), r"group 2: only 1, or depthwise"),
        (lambda: dense(Builder((4,)), 4, 3, activation="Clip"), r"Clip node .*ReLU6 and clipping"),
        (lambda: dense(Builder((4,)), 4, 3, activation="Relu"),
         r"qmtik's networks end in a dense layer .* no activation"),
        (lambda: dense(dense(Builder((4,)), 4, 3, activation="Softmax"), 3, 2),
         r"Gemm node .*: not supported \(after the network's Softmax"),
        (lambda: Builder((4,)).add("Relu"), "an activation must follow a Gemm, MatMul or Conv"),
        (lambda: dense(dense(Builder((4,)), 4, 3, activation=None).add("LeakyRelu", alpha=0.1), 3, 3,
                       activation=None).add("LeakyRelu", alpha=0.2),
         "alpha 0.2 differs from 0.1 before; qmtik has one leaky slope"),
        (lambda: Builder((2, 6, 6)).add("MaxPool", kernel_shape=[2, 2]),
         "qmtik's first layer is a Gemm, MatMul or Conv"),
        (lambda: reshaped([-1, 3, 16]), r"a reshape to \[-1, 3, 16\]: only the flatten"),
        (lambda: dense(Builder((4,)), 4, 3, activation=None).add("com.example.Mystery"), "not supported"),
        (lambda: cnn_start().add("Transpose", perm=[0, 1, 3, 2]), r"perm \[0, 1, 3, 2\]: only channels last to first"),
        (lambda: cnn_start().add("Transpose", perm=[0, 2, 3, 1]).add("Relu"), "must come right before a flatten"),
    ],
)  # fmt: skip
def test_unsupported_nodes_are_refused_by_name(tmp_path, make, wanted):
    import re

    message = refusal(tmp_path, make())
    assert re.search(wanted, message), message


def test_a_padded_first_conv_refuses_an_offset_it_cannot_fold(tmp_path):
    b = Builder((2, 6, 6))
    b.add("Sub", b.const(np.float32(0.5)))
    conv(b, 2, 3, (3, 3), pads=[1, 1, 1, 1])
    message = refusal(tmp_path, b)
    assert "pads its input" in message and "--input-range 0 HIGH" in message


def test_a_padded_first_conv_takes_a_range_from_zero(tmp_path):
    b = conv(Builder((2, 6, 6)), 2, 3, (3, 3), pads=[1, 1, 1, 1])
    b.add("Flatten")
    dense(b, 3 * 36, 2, activation=None)
    net = import_onnx(b.save(tmp_path / "m.onnx"), (0, 255))
    assert net.config.network.layer_specs[0].padding == (1, 1, 1, 1)


def test_a_fold_after_an_activation_is_refused(tmp_path):
    b = dense(Builder((4,)), 4, 3, activation="Relu")
    b.add("Mul", b.const(np.float32(2)))
    dense(b, 3, 2, activation=None)
    assert "a fold needs a Gemm, MatMul or Conv without activation right before it" in refusal(tmp_path, b)
