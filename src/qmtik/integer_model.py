"""QuantizedModel: the integer-only network that ships to devices.

int8 codes in, int8 scores out, int32 accumulators between: nothing else. It computes exactly
what the spec (intref.py, docs/quantization.md) says, through a backend (backends/: the spec
itself, numpy or onnxruntime) that tests compare with the spec on extreme values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import backends, head, intref, intref_windows
from . import quantization as q
from .errors import DataError, QuantizationError
from .functions import TASKS
from .validate import check_inputs, encode_targets

LAYER_KINDS = ("dense", *intref_windows.KINDS)  # what a QuantizedModel computes
FILE_KINDS = LAYER_KINDS  # what the .qmt file holds: every kind (qmtfile_layout.KINDS, codes 0 .. 5)
LAYER_TYPES = (intref.IntegerLayer, intref_windows.PoolLayer)  # every layer class: valid by construction


def model_problem(input_range, layers, kinds=FILE_KINDS, inputs=None) -> str | None:
    """Why these layers and input range cannot make a model, or None: the input range must map
    raw inputs to int8 codes in float32 (input_range_problem, training's own rule), each layer
    (an intref or intref_windows layer, valid by construction) must be of a kind in kinds and
    read as many inputs (flat codes per sample) as the previous one has outputs, the first as
    many as inputs when given. One rule for QuantizedModel (kinds=LAYER_KINDS) and the .qmt
    file's checks (qmtfile_layout.check_model, with the file's kinds, which are all of them)."""
    low, high = input_range
    problem = q.input_range_problem(low, high)
    if problem:
        return f"input range [{low}, {high}] {problem}"
    if not layers:
        return "no layers"
    for number, layer in enumerate(layers, 1):
        if not isinstance(layer, LAYER_TYPES):
            return (
                f"layer {number} is a {type(layer).__name__}, not an intref.IntegerLayer (or an intref_windows layer)"
            )
        if layer.kind not in kinds:
            return f"layer {number} is a {layer.kind} layer, which is not one of {', '.join(kinds)}"
        if number == 1 and inputs is not None and layer.inputs != inputs:
            return f"layer 1 has {layer.inputs} inputs, but the model has {inputs}"
        if number > 1 and layer.inputs != layers[number - 2].outputs:
            previous = layers[number - 2].outputs
            return f"layer {number} has {layer.inputs} inputs, but layer {number - 1} has {previous} outputs"
    return None


@dataclass(eq=False)
class QuantizedModel:
    """An integer-only network: how raw inputs become int8, its integer layers, its outputs.

    predict gives classes (or their names) or regression values; predict_proba the softmax
    or sigmoid of the int8 scores; scores the int8 scores themselves.

    backend names the form of the arithmetic that computes them (backends.NAMES: "reference",
    "numpy", "onnx" or "auto"); None, the default, takes QMTIK_BACKEND, else "auto". All give
    the same integers; it may be set on the model at any time (model.backend = "reference").
    """

    task: str
    output: str
    input_range: tuple
    layers: list
    class_names: tuple | None = None
    backend: str | None = None
    _prepared: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _names: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.task not in TASKS:
            raise DataError(f"model task {self.task!r}: allowed {', '.join(TASKS)}")
        if self.backend is not None:
            backends.check_name(self.backend)
        self.input_range = (float(self.input_range[0]), float(self.input_range[1]))
        problem = model_problem(self.input_range, self.layers, LAYER_KINDS)
        if problem:
            raise QuantizationError(f"integer model: {problem}")
        if self.class_names is not None:
            self.class_names = tuple(str(n) for n in self.class_names)

    # --- shape ---

    @property
    def inputs(self) -> int:
        return self.layers[0].inputs

    @property
    def outputs(self) -> int:
        return self.layers[-1].outputs

    @property
    def widths(self) -> tuple:
        return (self.inputs, *(layer.outputs for layer in self.layers))

    # --- integer inference ---

    def quantize_inputs(self, x) -> np.ndarray:
        """Raw inputs (floats or uint8 pixels) to the int8 codes the model computes with.

        An input so far from a wide range that x - low overflows float32 becomes +-inf, which
        the clamp makes code -128 or 127, exactly as in C: that overflow is no error.
        """
        x = check_inputs(x, self.inputs)
        with np.errstate(over="ignore"):
            return q.quantize_inputs(x, self.input_range)

    def scores(self, codes) -> np.ndarray:
        """int8 scores (samples x outputs) of int8 input codes, computed exactly by the backend
        (backends.choose), which is prepared on its first use."""
        codes = _int8_codes(codes, self.inputs)
        name = backends.choose(self.backend, len(codes), self.layers)
        if name not in self._prepared:
            self._prepared[name] = backends.prepare(name, self.layers)
        return self._prepared[name](codes)

    def decision_function(self, x) -> np.ndarray:
        """The real values of the int8 scores: output_scale * (score - output_offset), as float32."""
        return self._real_scores(x).astype(np.float32)

    def _real_scores(self, x) -> np.ndarray:
        """output_scale * (score - output_offset) in float64, where the differences and squares of
        the largest real scores (255 steps of a scale up to float32's max / 256) stay finite."""
        last = self.layers[-1]
        return last.output_scale * (self.scores(self.quantize_inputs(x)).astype(np.float64) - last.output_offset)

    def predict_proba(self, x) -> np.ndarray:
        """Softmax or sigmoid of the real scores (the scores for a linear output), as float32."""
        return head.probabilities(self.output, self._real_scores(x)).astype(np.float32)

    def predict(self, x) -> np.ndarray:
        """Class indices (names, when the model has them) or regression values."""
        if self.task == "classification":
            return head.named(self.predict_index(x), self._names_array())
        return head.values(self.output, self._real_scores(x)).astype(np.float32)

    def _names_array(self) -> np.ndarray | None:
        """The class names as an array, made once per tuple of names (it costs more than a predict)."""
        if not self.class_names:
            return None
        if self._names is None or self._names[0] is not self.class_names:
            self._names = (self.class_names, np.asarray(self.class_names))
        return self._names[1]

    def predict_index(self, x) -> np.ndarray:
        """Class indices of raw inputs (classification only): see classes."""
        return self.classes(self.scores(self.quantize_inputs(x)))

    def classes(self, scores) -> np.ndarray:
        """Class indices of int8 scores: the first highest score; with one output, 1 when the
        score is at least the output zero point (where the real score, so the sigmoid's, is 0.5)."""
        return head.classes(scores, self.layers[-1].output_offset)

    def evaluate(self, x, y) -> dict:
        """{'loss', 'accuracy'} (classification) or {'loss', 'mse', 'mae'} (regression); the loss
        is the natural cost of the output (the file does not record the training cost)."""
        scores = self._real_scores(x)  # float64: the figures cannot overflow
        targets = encode_targets(y, self.task, self.outputs, len(scores))
        return {**head.figures(self.task, self.output, self.cost_for_loss, scores, targets), "int8": True}

    def score(self, x, y) -> float:
        """Accuracy (classification) or R^2 (regression) on the integer arithmetic."""
        scores = self._real_scores(x)  # float64, as in evaluate
        targets = encode_targets(y, self.task, self.outputs, len(scores)).astype(np.float64)
        return head.score(self.task, self.output, scores, targets)

    def info(self, file_bytes: int | None = None) -> str:
        """A readable description: topology, sizes, scales, requantization, memory needs."""
        return describe(self, file_bytes)

    @property
    def cost_for_loss(self) -> str:
        """The cost reported as loss: the natural one of the output processing."""
        return head.natural_cost(self.task, self.output)


def _int8_codes(codes, inputs: int) -> np.ndarray:
    """codes as an int8 array of shape (samples, inputs), or a one-line DataError: integers
    outside -128..127 are refused rather than wrapped, so that every backend sees the same codes."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != inputs:
        raise DataError(f"input codes: expected shape (samples, {inputs}), got {codes.shape}")
    if codes.dtype == np.int8:
        return codes
    if codes.dtype.kind not in "iu":
        raise DataError(f"input codes: dtype {codes.dtype}, expected integers in {q.QMIN}..{q.QMAX}")
    if codes.size and (codes.min() < q.QMIN or codes.max() > q.QMAX):
        raise DataError(f"input codes: values {codes.min()}..{codes.max()}, expected {q.QMIN}..{q.QMAX}")
    return codes.astype(np.int8)


def _span(values, fmt="{:.3g}") -> str:
    """'a' when all values are equal, else 'a..b'."""
    lo, hi = np.min(values), np.max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}..{fmt.format(hi)}"


def in_place(layer, end: int) -> str | None:
    """How a layer whose input lies at this end of the arena (0: its start, 1: its end) may
    write its output over its input, flush with the same end: "forward", "reverse" or None.
    Only pools may. A pool's kernel reads each output's window before writing that output.
    Forward (start end; top and left pads 0): outputs in increasing order; each tap (y, x)
    of output (oy, ox) has y >= oy, x >= ox and W >= out_w, so it lies at or after the
    output's own place, never on one written before. Reverse (the far end; no padding):
    outputs in decreasing order, the output k at (arena - out + k); its last tap lies at most
    in - out codes after k (equal at the last output, the offset grows with oy and ox since
    W >= out_w and the stride >= 1), so at or before the output's own place."""
    if layer.kind not in intref_windows.POOLS:
        return None
    if end == 0 and layer.pads[0] == layer.pads[2] == 0:
        return "forward"
    return "reverse" if end == 1 and not any(layer.pads) else None


def fusable(layers) -> list:
    """The indices i where a convolution (conv2d, depthwise) is followed by a pool (max, average
    or global average): the pairs the header may run as one kernel, the conv's output never stored."""
    return [
        i
        for i in range(len(layers) - 1)
        if layers[i].kind in intref_windows.CONVOLUTIONS and layers[i + 1].kind in intref_windows.POOLS
    ]


def overlapping(pool) -> bool:
    """Whether a pool's windows overlap (a stride below the window): fused, the convolution then
    computes the outputs they share once per window."""
    return any(s < k for s, k in zip(pool.stride, pool.kernel))


def fusions(layers) -> frozenset:
    """The fusable pairs (fusable's i) the plan fuses. Pools whose windows do not overlap are
    fused (each conv output computed at most once: never slower, and the step needs input +
    pooled output instead of input + conv output), unless the plan without that fusion is
    smaller (a later pool then runs in place at the other end); overlapping ones only when the
    plan with the fusion is smaller, since they recompute. Decided pair by pair, in order, from
    all fused."""
    chosen = set(fusable(layers))
    for i in fusable(layers):
        with_it, without = _plan(layers, chosen)[0], _plan(layers, chosen - {i})[0]
        if without < with_it or (overlapping(layers[i + 1]) and without == with_it):
            chosen.discard(i)
    return frozenset(chosen)


def _plan(layers, fused) -> tuple:
    """arena_plan's (bytes, steps) with the pairs fused (a set of fusable's indices)."""
    steps, i = [], 0
    while i < len(layers):
        steps.append(tuple(range(i, i + (2 if i in fused else 1))))
        i += len(steps[-1])
    end, size_in, needs, placed = 0, layers[0].inputs, [], []
    for step in steps[:-1]:
        last = layers[step[-1]]
        order = in_place(last, end) if len(step) == 1 else None
        needs.append(size_in if order else size_in + last.outputs)
        end = end if order else 1 - end
        size_in = last.outputs
        placed.append((step, end, size_in, order))
    size = max(needs + [size_in])
    return size, [(step, end, 0 if end == 0 else size - n, order) for step, end, n, order in placed] + [
        (steps[-1], None, None, None)
    ]


def arena_plan(layers) -> tuple:
    """(arena bytes, [(step, end, offset, order)]) of a network with window layers, the input
    at the arena's start. A step is a tuple of layer indices: one layer, or a convolution and
    the pool fused with it (fusions), whose output is the pool's. Each step reads its input at
    one end of the arena and writes its output flush with the other (order None), or, a pool,
    over its input flush with the same end (in_place's order). A step needs its input plus its
    output (in place: its input), the last step its input (the scores are the caller's, so its
    end, offset and order are None); the arena is the largest need: the plan's peak, exactly."""
    return _plan(layers, fusions(layers))


def arena_bytes(layers) -> int:
    """The arena of arena_plan: bytes of activations, the input included."""
    return arena_plan(layers)[0]


def layer_memory(layers) -> list:
    """Per layer, {'constants': its bytes in flash (weights, biases, multipliers, shifts,
    table; a pool none), 'ram': the bytes its step needs while it runs}. With window layers
    that is its arena_plan step's (input + output; in place or last: input; both layers of a
    fused pair name their step's); dense layers only, its input (the first's is the
    caller's, so 0) plus its output (the last's: the scores, the caller's)."""
    if all(layer.kind == "dense" for layer in layers):
        ram = [(i > 0) * layer.inputs + (i < len(layers) - 1) * layer.outputs for i, layer in enumerate(layers)]
    else:
        plan, ram, size_in = arena_plan(layers)[1], [0] * len(layers), layers[0].inputs
        for k, (step, _, _, order) in enumerate(plan):
            out = layers[step[-1]].outputs
            for i in step:
                ram[i] = size_in if order or k == len(plan) - 1 else size_in + out
            size_in = out
    return [{"constants": _constants(layer), "ram": need} for layer, need in zip(layers, ram)]


def _constants(layer) -> dict:
    """A layer's constants in bytes, by kind: weights (int8), biases (int32), requantization
    (an int32 multiplier and a uint8 shift per output, twice for leaky relu), table (256)."""
    if not isinstance(layer, intref.IntegerLayer):
        return {"weights": 0, "biases": 0, "requantization": 0, "tables": 0}
    twice = 2 if layer.negative_multiplier is not None else 1
    return {
        "weights": layer.weights.size,
        "biases": 4 * layer.bias.size,
        "requantization": 5 * layer.output_multiplier.size * twice,
        "tables": 256 if layer.table is not None else 0,
    }


def memory_needs(model: "QuantizedModel") -> dict:
    """Bytes an integer inference needs: constants (weights, biases, multipliers, shifts,
    tables), the scratch predict takes and the arena of activations, the input included.
    Dense layers only: the scratch is two int8 buffers of the widest hidden layer, used in
    turn, and the input is the caller's (arena = inputs + scratch). With window layers the
    scratch is the arena (arena_bytes), which holds the input too. Pools have no constants;
    no kernel needs a buffer besides its input and output (no im2col)."""
    dense = all(layer.kind == "dense" for layer in model.layers)
    scratch = 2 * max(model.widths[1:-1], default=1) if dense else arena_bytes(model.layers)
    parts = [_constants(layer) for layer in model.layers]
    need = {key: sum(part[key] for part in parts) for key in ("weights", "biases", "requantization", "tables")}
    need["constants"] = sum(need.values())
    return {**need, "scratch": scratch, "arena": model.inputs + scratch if dense else scratch}


def describe(model: "QuantizedModel", file_bytes: int | None = None) -> str:
    """What `qmtik info` prints: topology, sizes, each layer's scales and requantization, memory."""
    params = sum(layer.weights.size + layer.bias.size for layer in _weighted(model.layers))
    need = memory_needs(model)
    dense = all(layer.kind == "dense" for layer in model.layers)
    low, high = model.input_range
    lines = [
        f"qmtik integer model: {model.task}, {model.output} output, {'-'.join(map(str, model.widths))}",
        f"parameters: {params:,} (int8 weights {need['weights']:,}, int32 biases {params - need['weights']:,})",
    ]
    if file_bytes is not None:
        lines.append(f"file: {file_bytes:,} bytes (float32 weights and biases would be {4 * params:,})")
    lines.append(f"inputs: raw range [{low:g}, {high:g}] to int8 codes: (x - {low:g}) * 255/{high - low:g} - 128")
    for i, layer in enumerate(model.layers, 1):
        lead = f"layer {i}: "
        if layer.kind != "dense":  # its window first, then (convolutions) the dense figures per window
            lines.append(lead + _window_text(layer))
            lead = "  "
        if not isinstance(layer, intref.IntegerLayer):  # a pool: its scale passes through
            lines.append(f"{lead}scale {layer.output_scale:.4g}, zero point {layer.output_offset} (the input's)")
            continue
        fan_out, fan_in = layer.weights.shape
        granularity = "per channel" if len(np.unique(layer.weight_scales)) > 1 else "per tensor"
        lines.append(
            f"{lead}{fan_in} -> {fan_out} {layer.activation}; weight scale {granularity} "
            f"{_span(layer.weight_scales)}; output scale {layer.output_scale:.4g}, zero point {layer.output_offset}"
        )
        lines.append(
            f"  requantization: multiplier {_span(layer.output_multiplier, '{:d}')}"
            f" / 2^{_span(layer.output_shift, '{:d}')}"
            + (
                f"; negative side {_span(layer.negative_multiplier, '{:d}')} / 2^{_span(layer.negative_shift, '{:d}')}"
                if layer.negative_multiplier is not None
                else ""
            )
            + (f"; table input scale {layer.table_input_scale:.4g}" if layer.table is not None else "")
        )
    lines.append(
        f"memory: {need['constants']:,} bytes of constants (weights {need['weights']:,}, biases "
        f"{need['biases']:,}, requantization {need['requantization']:,}, tables {need['tables']:,}); "
        + (f"scratch {need['scratch']:,} bytes" if dense else f"arena {need['arena']:,} bytes (the input included)")
        + "".join(f"; layers {i + 1} and {i + 2} run as one kernel" for i in sorted(fusions(model.layers)))
    )
    if model.class_names:
        lines.append("classes: " + ", ".join(model.class_names))
    return "\n".join(lines)


def _weighted(layers) -> list:
    """The layers that have weights, biases and requantization (dense and the convolutions)."""
    return [layer for layer in layers if isinstance(layer, intref.IntegerLayer)]


def _window_text(layer) -> str:
    """'conv2d 3x3 stride 1x1 pads (1, 1, 1, 1): 28x28x1 -> 28x28x16' for a window layer."""
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    shapes = "x".join(map(str, layer.input_shape)), "x".join(map(str, layer.output_shape))
    return f"{layer.kind} {kh}x{kw} stride {sh}x{sw} pads {layer.pads}: {shapes[0]} -> {shapes[1]}"
