"""Import a float network from ONNX (PyTorch's torch.onnx.export, Keras through tf2onnx).

    net = qmtik.import_onnx("model.onnx", input_range=(0, 255))
    net.save("model.ckpt.npz")        # a float checkpoint: calibrate it (qmtik quantize --calibrate)

onnx_graph.py reads the file into one chain of nodes; this module turns the chain into qmtik's
layer tables and float weights, channels last:

- Gemm, MatMul (+ Add) are dense layers; Conv is conv2d, conv1d or depthwise_conv2d (group ==
  channels); MaxPool, AveragePool, GlobalAveragePool are the pools; Flatten, or a Reshape to
  (N, -1), flattens. The first dense layer after a flatten of a (C, H, W) tensor has its weight
  columns reordered from ONNX's C, H, W order to qmtik's H, W, C.
- BatchNormalization, and Add, Sub, Mul or Div by a constant, after a layer are folded into its
  weights and bias; Relu, LeakyRelu (one slope for the network), Sigmoid and Tanh become its
  activation (after max pools too: they commute). Dropout and Identity are dropped.
- Before the first layer, BatchNormalization and Sub, Add, Mul or Div by constants (scalars or
  per feature) are a normalization x -> a * x + b. qmtik's input is u = (x - low) / (high - low)
  in [0, 1] (its int8 codes), so the first layer takes a * (low + (high - low) * u) + b, folded
  into its weights and bias: raw inputs go in as they would on the device.
- The last layer must be dense with no activation (qmtik's output layer); a Softmax after it
  makes a classifier with softmax output, a Sigmoid a sigmoid output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import onnx_graph as og
from .config import Config
from .errors import ConfigError, OnnxError
from .layers import init_layers
from .network import Network
from .onnx_layers import Importer, channels_last_order, to_qmtik_inputs
from .quantization import input_range_problem

__all__ = ["channels_last_order", "import_onnx", "import_onnx_file", "float_layers", "onnxruntime_agreement",
           "to_qmtik_inputs"]  # fmt: skip


def float_layers(net: Network, x) -> list:
    """Every layer's float output (float64) for raw inputs x (qmtik's flat rows), the inputs
    mapped to [0, 1] without int8 rounding: the imported graph's own arithmetic, to compare
    with onnxruntime's or with the integer model's."""
    from .layers import QuantSpec
    from .window_layers import float_forward

    low, high = net.input_range_
    a = (np.asarray(x, np.float64) - low) / (high - low)
    spec, out = QuantSpec.from_config(net.config), []
    for layer in net.layers_:
        twin = layer.copy()
        twin.weight, twin.bias = twin.weight.astype(np.float64), twin.bias.astype(np.float64)
        a = float_forward(twin, a, spec, training=False)[0]
        out.append(a)
    return out


def import_onnx(path, input_range, task: str | None = None) -> Network:
    """A float qmtik Network (not yet calibrated: no observed ranges) from the ONNX model at path.

    input_range (low, high) is the raw inputs' range, as the device sees them: the
    normalization and the map to qmtik's [0, 1] input are folded into the first layer.
    Raises a one-line OnnxError for a graph qmtik cannot import.
    """
    low, high = (float(v) for v in input_range)
    problem = input_range_problem(low, high)
    if problem:
        raise OnnxError(f"input range [{low:g}, {high:g}]: {problem}")
    model = og.read_model(path)
    shape = og.input_shape(model, path)
    importer = Importer(shape, (low, high))
    importer.run(og.chain(model, path))
    records = importer.records
    weighted = [r for r in records if r.weight is not None]
    if not weighted or records[-1].table["kind"] != "dense" or records[-1].table.get("activation"):
        last = records[-1].step.where() if records else "its input"
        raise OnnxError(
            f"ONNX model {path}: ends with {last} ({importer.shape}); qmtik's networks end in a dense "
            "layer (Gemm or MatMul) with no activation, optionally followed by Softmax or Sigmoid"
        )
    outputs = records[-1].table["units"]
    config = Config.from_dict(_config_dict(shape, records, outputs, importer, task, (low, high)))
    layers = init_layers(config, np.random.default_rng(0))
    for layer, record in zip(layers, [r for r in records if r.table["kind"] != "flatten"]):
        if record.weight is not None:
            layer.weight[...] = record.weight.astype(np.float32)
            layer.bias[...] = record.bias.astype(np.float32)
    net = Network(config)
    net.layers_, net.quantized_, net.input_range_ = layers, False, (low, high)
    net.history_, net.class_names_ = {"epochs": [], "best_epoch": None, "first_loss": None}, None
    return net


def _config_dict(shape, records, outputs, importer: Importer, task, input_range) -> dict:
    head = importer.head
    if task is None:
        task = "regression" if outputs == 1 and head is None else "classification"
    output = {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(head, "softmax" if task == "classification" else "linear")
    cost = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(output, "mse")
    if task == "regression":
        cost = "mse"
    channels_last = importer.input_shape(shape)
    tables = [dict(r.table) for r in records[:-1]]
    for table in tables:  # layers with weights and no activation are linear
        if table["kind"] not in ("max_pool", "avg_pool", "global_avg_pool", "flatten"):
            table.setdefault("activation", "linear")
    network = {"outputs": int(outputs), "output": output, "cost": cost, "activation": "relu"}
    network.update({"input_shape": list(channels_last), "layers": tables} if channels_last else {"inputs": shape[0]})
    if not channels_last:
        network["layers"] = tables if tables else []
        if not tables:
            network["hidden"] = []
    if importer.slope is not None:
        network["leaky_slope"] = importer.slope
    try:
        Config.from_dict({"task": task, "network": network})
    except ConfigError as exc:
        raise OnnxError(f"the imported network does not make a qmtik config: {exc}") from None
    return {"task": task, "network": network, "data": {"input_range": list(input_range)}}


FINE_TUNING = {"epochs": 1, "float_epochs": 0, "learning_rate": 1e-4}  # the written config's [training]


def config_toml(config: Config, source) -> str:
    """The imported network's config as TOML (config_docs' one writer of values): [network],
    [training] set for fine-tuning (one epoch of QAT at a small learning rate), [data] with the
    input range its first layer takes in; a data set or files are the user's to add."""
    from .config_docs import toml_value

    data = config.to_dict()
    lines = [f"# imported from {Path(source).name} by qmtik import-onnx; add [data] dataset or train", ""]
    lines += [f"task = {toml_value(data['task'])}", "", "[network]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in data["network"].items() if k != "layers"]
    lines += ["layers = ["] + [f"    {toml_value(t)}," for t in data["network"].get("layers", [])] + ["]"]
    lines += ["", "[training]"] + [f"{k} = {toml_value(v)}" for k, v in FINE_TUNING.items()]
    lines += ["", "[data]", '# your data: dataset = "fashion-mnist" (a named set), or dataset = "" and train = "file"']
    lines.append(f"input_range = {toml_value(list(data['data']['input_range']))}")
    return "\n".join(lines) + "\n"


def input_range_of(x) -> tuple[float, float]:
    """The raw range of calibration inputs: their min and max (a constant input widened by 1)."""
    low, high = float(np.min(x)), float(np.max(x))
    return (low, high) if high > low else (low, low + 1.0)


def onnxruntime_agreement(path, net: Network, samples: int = 8, seed: int = 0):
    """(largest |qmtik - onnxruntime| / max(1, max|y|), same classes) of the imported float
    network on random inputs in its input range, run one at a time (exporters often fix the
    batch at 1); the graph's output is taken as scores or as their softmax or sigmoid, whichever
    it is. None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from .head import probabilities

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model = og.read_model(path)
    shape = og.input_shape(model, path)
    importer = Importer(shape, net.input_range_)
    importer.run(og.chain(model, path))  # which layout the input has
    x = np.random.default_rng(seed).uniform(*net.input_range_, (samples, *shape)).astype(np.float32)
    want = np.concatenate([session.run(None, {name: x[i : i + 1]})[0].reshape(1, -1) for i in range(samples)])
    rows = to_qmtik_inputs(x, shape, importer.channels_last_input)
    scores = float_layers(net, rows)[-1].reshape(samples, -1)
    scale = max(1.0, float(np.abs(want).max()))
    candidates = [scores, probabilities(net.config.network.output, scores)]
    got = min(candidates, key=lambda c: float(np.abs(c - want).max()))
    return float(np.abs(got - want).max()) / scale, bool((got.argmax(1) == want.argmax(1)).all())


def import_onnx_file(model_path, out, input_range, config_out=None, task=None) -> Network:
    """Import model_path (import_onnx) and write the float checkpoint at out, and its config
    (TOML) at config_out when given; returns the network."""
    from .output_files import write_atomic

    net = import_onnx(model_path, input_range, task)
    net.config = net.config.replace_many({"training." + k: v for k, v in FINE_TUNING.items()})
    net.save(out)
    if config_out is not None:
        text = config_toml(net.config, model_path).encode()
        write_atomic(config_out, lambda f: f.write(text))
    return net
