"""Reading an ONNX file for import: what is refused before any node is translated, each in one
line (several inputs or outputs, dynamic shapes, opsets it cannot read, external data outside
the model's folder, graphs that are not one chain, files that are not ONNX)."""

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_helpers import Builder, dense, onnx
from qmtik import OnnxError
from qmtik.onnx_graph import chain, input_shape, read_model
from qmtik.onnx_import import import_onnx

DATA = Path(__file__).parent / "data"


def refused(path, match):
    with pytest.raises(OnnxError, match=match) as info:
        import_onnx(path, (0, 1))
    assert "\n" not in str(info.value)
    return str(info.value)


def small() -> Builder:
    b = Builder((4,))
    return dense(b, 4, 3, activation=None)


def test_the_fixture_reads_as_a_chain_of_steps():
    model = read_model(DATA / "onnx_mlp.onnx")
    assert input_shape(model, "m") == (12,)
    ops = [step.op for step in chain(model, "m")]
    assert ops == ["Sub", "Div", "Gemm", "Relu", "Dropout", "MatMul", "Add", "LeakyRelu", "Gemm", "Softmax"]


def test_two_inputs_are_refused(tmp_path):
    model = small().model()
    model.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4]))
    onnx.save(model, str(tmp_path / "m.onnx"))
    refused(tmp_path / "m.onnx", "2 inputs and 1 outputs; qmtik imports graphs of one input and one output")


def test_a_dynamic_axis_besides_the_batch_is_refused(tmp_path):
    b = small()
    b.sample = ("features",)
    refused(b.save(tmp_path / "m.onnx"), r"dynamic axis 1 \(features\).*fixed")


def test_a_fixed_batch_of_one_is_accepted(tmp_path):
    b = small()
    b.batch = 1  # torch.onnx.export without dynamic shapes
    assert import_onnx(b.save(tmp_path / "m.onnx"), (0, 1)).config.network.inputs == 4


def test_an_opset_newer_than_onnx_knows_is_refused(tmp_path):
    newest = onnx.defs.onnx_opset_version()
    model = small().model(opset=newest)
    model.opset_import[0].version = newest + 1
    onnx.save(model, str(tmp_path / "m.onnx"))
    refused(tmp_path / "m.onnx", f"opset version {newest + 1} cannot be read; this reads 7 to {newest}")


def test_external_data_beside_the_model_is_read(tmp_path):
    model = small().model()
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").exists()
    assert import_onnx(tmp_path / "m.onnx", (0, 1)).config.network.outputs == 3


def test_external_data_outside_the_folder_is_refused(tmp_path):
    model = small().model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../secret.bin")
    onnx.save(model, str(tmp_path / "m.onnx"))
    refused(tmp_path / "m.onnx", r"keeps its data at '\.\./secret\.bin', outside the model's folder")


def test_a_branching_graph_is_refused(tmp_path):
    b = small()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="left"),
        helper.make_node("Add", ["a", "x"], ["y"], name="join"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], b.inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save(model, str(tmp_path / "m.onnx"))
    refused(tmp_path / "m.onnx", "Add node 'join': takes 2 computed inputs; qmtik imports one chain of layers")


def test_a_constant_node_is_a_constant(tmp_path):
    b = Builder((4,))
    value = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    b.nodes.append(helper.make_node("Constant", [], ["w"], value=value))
    b.add("Gemm", "w", transB=1)
    assert import_onnx(b.save(tmp_path / "m.onnx"), (0, 1)).layers_[0].weight.shape == (3, 4)


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\xff\xff\xffnot a protobuf")
    refused(tmp_path / "m.onnx", "cannot be read as ONNX")
    refused(tmp_path / "missing.onnx", "no such file")


def test_an_integer_input_is_refused(tmp_path):
    model = small().model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT8
    onnx.save(model, str(tmp_path / "m.onnx"))
    refused(tmp_path / "m.onnx", "is not float32")
