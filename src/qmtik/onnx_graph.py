"""Reading an ONNX model for import: the file, its checks, and its nodes as one chain.

The file is read with the `onnx` package (the [onnx] extra; the onnxruntime backend writes its
own small graphs without it). Before any node is looked at, the model must have one input and
one output, a float input of fixed shape (the batch axis aside), an opset of the default domain
this reads, and any external data inside the model's folder. The nodes must then form one chain
from the input to the output: each takes the tensor the one before made, plus constants
(initializers or Constant nodes), which come back as numpy arrays. onnx_import.py turns that
chain into qmtik layers; every refusal is one OnnxError line naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OnnxError

MIN_OPSET = 7  # Gemm, BatchNormalization and the pools as imported here exist from opset 7
SUPPORTED = (
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Softmax (last)",
    "Flatten",
    "Reshape (to flatten)",
    "Conv (1-D, 2-D, depthwise)",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Dropout",
    "Identity",
    "Transpose (NHWC to NCHW first, back before a flatten)",
)
FLOAT = 1  # TensorProto.FLOAT


@dataclass
class Step:
    """One node of the chain: its operator, a name for messages, its attributes, and its
    constant inputs in order (the data input's place holds None)."""

    op: str
    name: str
    attrs: dict = field(default_factory=dict)
    consts: list = field(default_factory=list)
    outputs: int = 1

    def where(self) -> str:
        return f"{self.op} node {self.name!r}"

    def refuse(self, problem: str) -> OnnxError:
        return OnnxError(f"{self.where()}: {problem}")


def supported_text() -> str:
    return "supported: " + ", ".join(SUPPORTED)


def unsupported(step: Step, why: str = "") -> OnnxError:
    """The refusal of a node outside the supported set."""
    extra = f" ({why})" if why else ""
    return step.refuse(f"not supported{extra}; {supported_text()}")


def read_model(path):
    """The ModelProto at path, checked as the module says, external data loaded."""
    try:
        import onnx
    except ImportError:
        raise OnnxError("reading ONNX needs the onnx package: pip install 'qmtik[onnx]'") from None
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise OnnxError(f"ONNX model {path}: no such file") from None
    except Exception as exc:  # a protobuf that does not parse, a folder, ...
        raise OnnxError(f"ONNX model {path}: cannot be read as ONNX ({type(exc).__name__})") from None
    _check_opsets(model, path)
    _check_external(model, path)
    if any(_external_tensors(model)):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise OnnxError(f"ONNX model {path}: its external data cannot be read ({exc})") from None
    return model


def _check_opsets(model, path) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise OnnxError(f"ONNX model {path}: imports no opset of the default domain")
    for version in versions:
        if not MIN_OPSET <= version <= newest:
            raise OnnxError(
                f"ONNX model {path}: opset version {version} cannot be read; this reads {MIN_OPSET} to {newest}"
            )


def _external_tensors(model):
    from onnx import TensorProto

    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    return [t for t in tensors if t.data_location == TensorProto.EXTERNAL]


def _check_external(model, path) -> None:
    """Every external data file must lie inside the model's folder (no '..', no absolute path)."""
    folder = path.resolve().parent
    for tensor in _external_tensors(model):
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise OnnxError(
                f"ONNX model {path}: tensor {tensor.name!r} keeps its data at {location!r}, outside the "
                "model's folder; external data must sit beside the model"
            )


def input_shape(model, path) -> tuple:
    """One sample's shape as the graph gives it (channels first), the batch axis left out."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxError(
            f"ONNX model {path}: has {len(inputs)} inputs and {len(graph.output)} outputs; qmtik imports "
            "graphs of one input and one output"
        )
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != FLOAT:
        raise OnnxError(f"ONNX model {path}: input {inputs[0].name!r} is not float32 (elem_type {tensor.elem_type})")
    dims = list(tensor.shape.dim)
    if len(dims) < 2 or len(dims) > 4:
        raise OnnxError(
            f"ONNX model {path}: input {inputs[0].name!r} has {len(dims)} axes; qmtik imports (N, features), "
            "(N, C, L) and (N, C, H, W)"
        )
    shape = []
    for axis, dim in enumerate(dims[1:], 1):
        if not dim.HasField("dim_value") or dim.dim_value < 1:
            raise OnnxError(
                f"ONNX model {path}: input {inputs[0].name!r} has a dynamic axis {axis} "
                f"({dim.dim_param or '?'}); qmtik needs fixed sizes besides the batch: export with a fixed input size"
            )
        shape.append(int(dim.dim_value))
    return tuple(shape)


def chain(model, path) -> list:
    """The graph's nodes as Steps, in order from the input to the output; a graph that
    branches, joins or computes shapes from data is refused in one line."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constant_names = set(consts)
    current = next(i.name for i in graph.input if i.name not in constant_names)
    steps = []
    for index, node in enumerate(graph.node):
        name = node.name or f"#{index}"
        step = Step(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}", name)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            consts[node.output[0]] = _constant_value(node, step)
            continue
        data = [i for i in node.input if i and i not in consts]
        if data != [current]:
            if current not in node.input:
                raise step.refuse(
                    "does not take the output of the node before it; qmtik imports one chain of layers "
                    f"(inputs {list(node.input)})"
                )
            raise step.refuse(f"takes {len(data)} computed inputs; qmtik imports one chain of layers")
        step.consts = [None if i == current else (consts[i] if i else None) for i in node.input]
        step.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        step.outputs = len([o for o in node.output if o])
        if step.op not in ("Dropout",) and step.outputs != 1:
            raise unsupported(step, f"{step.outputs} outputs")
        current = node.output[0]
        steps.append(step)
    if current != graph.output[0].name:
        raise OnnxError(f"ONNX model {path}: its output {graph.output[0].name!r} is not the end of the chain")
    return steps


def _constant_value(node, step: Step) -> np.ndarray:
    from onnx import helper, numpy_helper

    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return numpy_helper.to_array(value)
        if attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.asarray(value)
    raise step.refuse("holds no tensor, number or list of numbers")
