"""Carry users of the C library qmtik.h over: its config header and its stored models.

- `read_header` reads a `qmtik_config.h` (its `#define`s); `config_from_header` and
  `header_toml` turn it into the equivalent qmtik Config and TOML text.
- `load_c_model` reads the raw int8 dump `QMTIK_store_model` wrote; `CLibraryModel` runs it
  with the C library's own float32 arithmetic (`QMTIK_infer_forward`), so its classes are the
  C library's, sample for sample; `to_quantized_model` converts it to qmtik's integer-only
  scheme, and `import_c_model` writes that as a .qmt file.

docs/c-library.md says which defines are read, how the conversion is done and how close it comes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import intref
from . import quantization as q
from .c_preprocessor import header_defines
from .config import Config
from .config_docs import toml_value
from .errors import ConfigError, ModelFormatError, QuantizationError
from .functions import combination_problem
from .model import QuantizedModel
from .qmtfile import save_model

f32 = np.float32
C_LEAK = 0.01  # qmtik.h's QMTIK_LEAK
C_CLAMP = 88.0  # qmtik.h clamps the arguments of sigmoid and tanh to +-88
ROWS_PER_LOOP = 2048  # samples per pass of the float32 loop: keeps the accumulators in cache
SWITCHES = {  # switch: (value-style define, {normalised choice: qmtik name}, flag suffix)
    "activation": (
        "QMTIK_ACTIVATION",
        {"RELU": "relu", "LEAKYRELU": "leaky_relu", "SIGMOID": "sigmoid", "TANH": "tanh"},
        "_ACTV",
    ),
    "output": ("QMTIK_OUTPUT", {"LINEAR": "linear", "SOFTMAX": "softmax", "SIGMOID": "sigmoid"}, "_PP"),
    "cost": ("QMTIK_COST", {"MSE": "mse", "CROSSENTROPY": "cross_entropy"}, "_COST"),
    "optimizer": ("QMTIK_OPTIMIZER", {"ADAM": "adam", "SGD": "sgd", "MOMENTUM": "sgd"}, "_OPT"),
}
AMBIGUOUS_FLAGS = {"SIGMOID"}  # a bare QMTIK_SIGMOID could be the activation or the output
NUMBERS = {
    "QMTIK_I": int,
    "QMTIK_H": int,
    "QMTIK_L": int,
    "QMTIK_O": int,
    "QMTIK_W_SCALE": float,
    "QMTIK_A_SCALE": float,
    "QMTIK_EPOCHS": int,
    "QMTIK_BATCH_SIZE": int,
    "QMTIK_ALPHA": float,
    "QMTIK_INIT_ALPHA": float,
    "QMTIK_BETA1": float,
    "QMTIK_BETA2": float,
    "QMTIK_EPS": float,
    "QMTIK_MOMENTUM": float,
    "QMTIK_LEAK": float,
}
MAY_BE_ZERO = ("QMTIK_BETA1", "QMTIK_BETA2", "QMTIK_MOMENTUM")
REQUIRED = ("QMTIK_I", "QMTIK_H", "QMTIK_L", "QMTIK_O", "QMTIK_W_SCALE", "QMTIK_A_SCALE")


# --- the header --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CHeader:
    """What a qmtik.h config header says: sizes, scales, switches and training numbers."""

    path: str
    inputs: int
    hidden: int
    hh_layers: int  # QMTIK_L: hidden-to-hidden layers after the input-to-hidden one
    outputs: int
    w_scale: float
    a_scale: float
    activation: str
    output: str
    cost: str
    optimizer: str = "adam"
    leak: float = C_LEAK
    numbers: dict = field(default_factory=dict)  # every numeric define read, by name
    ignored: tuple = ()  # QMTIK_ defines with no meaning here

    def __post_init__(self):
        """Refuse an output processing, cost and width that qmtik refuses to train
        (functions.combination_problem): one rule for `config from-header` and `import-c-model`,
        whose model of softmax over QMTIK_O 1 disagreed with the C library."""
        cost = qmtik_cost(self.cost, self.output)
        problem = combination_problem("classification", self.output, cost, self.outputs)
        if problem:
            raise ConfigError(
                f"C header {self.path}: QMTIK_O {self.outputs}, {self.output} output, {cost} cost: {problem}"
            )

    @property
    def widths(self) -> tuple:
        return (self.inputs, *[self.hidden] * (self.hh_layers + 1), self.outputs)


def qmtik_cost(cost: str, output: str) -> str:
    """qmtik's name of the C library's cost: its cross entropy with a sigmoid output is qmtik's
    binary cross entropy."""
    return "binary_cross_entropy" if cost == "cross_entropy" and output == "sigmoid" else cost


CAST = re.compile(
    r"\(\s*(?:const\s+)?(?:(?:unsigned|signed)\s+)?(?:float|double|int|long|short|char|"
    r"size_t|u?int\d+_t)\s*\)"
)


def _unwrap(text: str) -> str:
    """Drop outer parentheses and C casts: '((float)0.25f)' -> '0.25f'. One pass: the leading
    '(' and casts, then as many trailing ')' as '(' were dropped; unbalanced text is returned
    as it is (not a number). A value nested 100,000 deep costs no more than its length."""
    pos, opens = 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        cast = CAST.match(text, pos)
        if cast:
            pos = cast.end()
        elif text.startswith("(", pos):
            pos, opens = pos + 1, opens + 1
        else:
            break
    end = len(text)
    for _ in range(opens):
        while end > pos and text[end - 1].isspace():
            end -= 1
        if end == pos or text[end - 1] != ")":
            return text
        end -= 1
    return text[pos:end].strip()


def _number(text: str, kind):
    """A C integer (decimal, 0x hexadecimal, 0 octal) or floating literal (suffixes, casts,
    parentheses allowed), or None; None too for a decimal beyond Python's int-digit limit."""
    text = _unwrap(text)
    if kind is int:
        m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)[uUlL]*", text)
        if not m:
            return None
        sign, digits = m.groups()
        base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10
        try:
            value = int(digits, base)
        except ValueError:  # more than sys.get_int_max_str_digits() digits
            return None
        return -value if sign == "-" else value
    m = re.fullmatch(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[fFlL]?", text)
    return float(m.group(1)) if m else None


def _choice(switch: str, defines: dict, path, used: set) -> str | None:
    """The qmtik name of a switch from `#define QMTIK_OUTPUT QMTIK_SOFTMAX` or a flag define
    (the defines it reads are added to used)."""
    key, choices, suffix = SWITCHES[switch]
    normal = lambda name: re.sub(r"^QMTIK_|_", "", re.sub(suffix + "$", "", name.upper()))  # noqa: E731
    if key in defines:
        line, value = defines[key]
        used.add(key)
        if normal(_unwrap(value)) not in choices:
            raise ConfigError(f"C header {path}, line {line}: {key} {value!r} is not one of {', '.join(choices)}")
        return choices[normal(_unwrap(value))]
    found = {}
    for name, (_line, value) in defines.items():
        flag = name.endswith(suffix) or (not value and normal(name) not in AMBIGUOUS_FLAGS)
        if name.startswith("QMTIK_") and flag and normal(name) in choices:
            found[name] = choices[normal(name)]
    if len(set(found.values())) > 1:
        raise ConfigError(f"C header {path}: more than one {switch} defined ({', '.join(found)})")
    used.update(found)
    return next(iter(found.values()), None)


def read_header(path) -> CHeader:
    """Read a qmtik.h config header: the defines it leaves in force, as the C build sees them
    (c_preprocessor.header_defines: #if, #ifdef, #else and #undef count). A missing define or a
    bad value is a ConfigError naming the header, the line and the define. Defines it does not
    know are ignored."""
    path = Path(path)
    defines = header_defines(path)
    numbers = {}
    for name, kind in NUMBERS.items():
        if name in defines:
            line, value = defines[name]
            numbers[name] = _number(value, kind)
            value_ok = numbers[name] is not None and (numbers[name] > 0 or (name in MAY_BE_ZERO and numbers[name] == 0))
            if value_ok and kind is float:  # the C library computes in float32
                with np.errstate(over="ignore"):
                    as_f32 = f32(numbers[name])
                value_ok = bool(np.isfinite(as_f32)) and (numbers[name] == 0 or abs(as_f32) >= np.finfo(f32).tiny)
            if not value_ok:
                wanted = (
                    "a positive integer"
                    if kind is int
                    else "a normal, finite float32 " + (">= 0" if name in MAY_BE_ZERO else "> 0")
                )
                shown = repr(value) if len(value) <= 40 else repr(value[:40]) + f"... ({len(value)} characters)"
                raise ConfigError(f"C header {path}, line {line}: {name} {shown} is not {wanted}")
    used = set(numbers)
    switches = {s: _choice(s, defines, path, used) for s in SWITCHES}
    missing = [n for n in REQUIRED if n not in numbers] + [
        f"the {s} (such as {SWITCHES[s][0]} or a *{SWITCHES[s][2]} flag)"
        for s in ("activation", "output", "cost")
        if switches[s] is None
    ]
    if missing:
        raise ConfigError(f"C header {path}: {missing[0]} is not defined")
    _check_scales(path, defines, numbers)
    if switches["optimizer"] is None:
        switches["optimizer"] = "sgd" if "QMTIK_MOMENTUM" in numbers else "adam"
    used.add("QMTIK_LR_NO_DECAY")  # qmtik.h's constant rate: schedule = "constant"
    ignored = tuple(n for n in defines if n.startswith("QMTIK_") and n not in used)
    return CHeader(
        str(path),
        numbers["QMTIK_I"],
        numbers["QMTIK_H"],
        numbers["QMTIK_L"],
        numbers["QMTIK_O"],
        numbers["QMTIK_W_SCALE"],
        numbers["QMTIK_A_SCALE"],
        switches["activation"],
        switches["output"],
        switches["cost"],
        switches["optimizer"],
        numbers.get("QMTIK_LEAK", C_LEAK),
        numbers,
        ignored,
    )


def _check_scales(path, defines: dict, numbers: dict) -> None:
    """Refuse a QMTIK_W_SCALE or QMTIK_A_SCALE that quantization.scale_problem refuses (they
    become the config's fixed scales and the imported model's), and a pair with which the C
    library's own float32 arithmetic overflows: a layer's largest sum, (inputs + 1) products
    of 128 weight steps by 128 activation steps, and that sum over A_SCALE must stay finite."""
    w, a = numbers["QMTIK_W_SCALE"], numbers["QMTIK_A_SCALE"]
    for name, value in (("QMTIK_W_SCALE", w), ("QMTIK_A_SCALE", a)):
        problem = q.scale_problem(value)
        if problem:
            line, text = defines[name]
            shown = repr(text) if len(text) <= 40 else repr(text[:40]) + f"... ({len(text)} characters)"
            raise ConfigError(f"C header {path}, line {line}: {name} {shown} {problem}")
    terms = min(max(numbers["QMTIK_I"], numbers["QMTIK_H"]), 2**64) + 1  # no real file is wider
    largest = terms * (128 * w) * (128 * a)  # float64: finite for any two float32 scales
    if largest > q.F32_MAX or largest / a > q.F32_MAX:
        raise ConfigError(
            f"C header {path}: QMTIK_W_SCALE {w:g} and QMTIK_A_SCALE {a:g} overflow float32 in the "
            f"C library's arithmetic (a layer's sum reaches {largest:.3g}, {largest / a:.3g} in "
            "activation steps)"
        )


# --- the equivalent qmtik config ---------------------------------------------------------------


def _config_entries(h: CHeader) -> list:
    """(section, key, value, comment) of the equivalent config; value None: a comment line only."""
    n, train = h.numbers, Config().training
    cost = qmtik_cost(h.cost, h.output)
    rate_name = "QMTIK_ALPHA" if "QMTIK_ALPHA" in n else "QMTIK_INIT_ALPHA"
    rate = n.get(rate_name)
    mnist = (h.inputs, h.outputs) == (784, 10)  # the C library's example: 784 pixels, 10 digits
    entries = [
        ("", "task", "classification", "the C library scores classes (the largest output)"),
        ("network", "inputs", h.inputs, "QMTIK_I"),
        (
            "network",
            "hidden",
            [h.hidden] * (h.hh_layers + 1),
            f"QMTIK_H; QMTIK_L = {h.hh_layers} hidden-to-hidden layers after the input-to-hidden one",
        ),
        ("network", "outputs", h.outputs, "QMTIK_O"),
        ("network", "activation", h.activation, "the *_ACTV switch"),
        ("network", "output", h.output, "the *_PP switch"),
        ("network", "cost", cost, "the *_COST switch"),
        ("quantization", "weight_scale", h.w_scale, "QMTIK_W_SCALE, fixed, one scale for every weight"),
        (
            "quantization",
            "activation_scale",
            h.a_scale,
            "QMTIK_A_SCALE; qmtik's inputs keep their own scale 1/255 and relu outputs use zero point -128",
        ),
        ("training", "epochs", n.get("QMTIK_EPOCHS", train.epochs), "QMTIK_EPOCHS"),
        (
            "training",
            "optimizer",
            h.optimizer,
            "qmtik.h trains with Adam"
            if h.optimizer == "adam"
            else "momentum SGD: QMTIK_MOMENTUM or the optimizer switch",
        ),
        ("training", "learning_rate", rate if rate is not None else train.learning_rate, rate_name),
        ("training", "schedule", "constant", "qmtik.h keeps the learning rate constant"),
        ("training", "float_epochs", 0, "qmtik.h fake-quantizes from the first step"),
        ("training", "validation_split", 0.0, "qmtik.h trains on every sample and keeps the last epoch"),
    ]
    if h.activation == "leaky_relu":
        entries.insert(5, ("network", "leaky_slope", h.leak, "QMTIK_LEAK"))
    if h.optimizer == "adam":
        entries += [
            ("training", k.lower(), n.get("QMTIK_" + k, getattr(train, k.lower())), "QMTIK_" + k)
            for k in ("BETA1", "BETA2", "EPS")
        ]
    else:
        entries.append(("training", "momentum", n.get("QMTIK_MOMENTUM", train.momentum), "QMTIK_MOMENTUM"))
    if "QMTIK_BATCH_SIZE" in n:
        entries.append(
            (
                "training",
                "batch_size",
                n["QMTIK_BATCH_SIZE"],
                "QMTIK_BATCH_SIZE, not a qmtik.h define: qmtik.h updates after every sample, batch_size = 1",
            )
        )
    entries.append(
        (
            "data",
            "dataset",
            "mnist" if mnist else "digits",
            "the C library's MNIST example"
            if mnist
            else "set your data here: dataset = '' and train = 'your_train.bin' (qmtik-bin samples)",
        )
    )
    entries.append(
        (
            "data",
            "input_range",
            [0, 255] if mnist else "auto",
            "the C library's inputs: pixel - 128"
            if mnist
            else "the digits' own range; for pixels 0..255 of your own, [0, 255] is the C library's pixel - 128",
        )
    )
    entries += [("", name, None, "no qmtik equivalent; ignored") for name in h.ignored]
    return entries


def header_toml(path) -> str:
    """The qmtik config TOML equivalent to a qmtik.h config header (`qmtik config from-header`)."""
    h = read_header(path)
    config_from_header(path)  # refuse a header qmtik cannot train
    lines = [f"# qmtik config converted from the C library header {h.path}", "# see docs/c-library.md"]
    current, notes = "", []
    for section, key, value, comment in _config_entries(h):
        if value is None:
            notes.append(f"# {key}: {comment}")
            continue
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        lines.append(f"{key} = {toml_value(value)}    # {comment}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def config_from_header(path) -> Config:
    """The qmtik Config equivalent to a qmtik.h config header: what header_toml's text loads as."""
    data: dict = {}
    for section, key, value, _ in _config_entries(read_header(path)):
        if value is not None:
            (data.setdefault(section, {}) if section else data)[key] = value
    try:
        return Config.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"C header {path}: {exc}") from None


# --- the stored model and its own arithmetic --------------------------------------------------


@functools.cache
def libm():
    """expf and tanhf of the C library's libm, or None when libm cannot be found; loaded on first
    use (not when qmtik is imported), once."""
    name = ctypes.util.find_library("m")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if lib is None:
        return None
    for fn in (lib.expf, lib.tanhf):
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return {"exp": lib.expf, "tanh": lib.tanhf}


def c_round(x):
    """C's roundf on float32 values: halves away from zero (numpy's np.round would go to even)."""
    return q.round_half_away(np.asarray(x, dtype=f32))


def c_codes(x):
    """(int8_t)fmaxf(-128, fminf(127, roundf(x))): the C library's quantization of a float."""
    return np.clip(c_round(x), q.QMIN, q.QMAX).astype(np.int8)


class CLibraryModel:
    """A model stored by qmtik.h, run with the C library's own float32 arithmetic.

    Each layer starts from bias*W_SCALE and adds (w*W_SCALE)*(a*A_SCALE) one input at a time,
    in index order, each product rounded to float32 (no fused multiply-add); hidden outputs are
    clamp(roundf(act(acc)/A_SCALE)), the output layer's clamp(roundf(acc/A_SCALE)), then the
    output processing. expf and tanhf come from libm (use_libm=True, when found), else numpy.
    """

    def __init__(self, header: CHeader, layers: list, use_libm: bool = True):
        self.header, self.layers = header, layers  # layers: [(weights int8 (out, in), biases int8)]
        self.libm = libm() if use_libm else None
        self.w, self.a, self.leak = f32(header.w_scale), f32(header.a_scale), f32(header.leak)

    def _fn(self, name: str, x):
        """expf or tanhf of float32 x: libm on each distinct value, or numpy's float32 version."""
        if self.libm is None:
            return getattr(np, name)(x).astype(f32)
        values, inverse = np.unique(x, return_inverse=True)
        fn = self.libm[name]
        return np.fromiter((fn(v) for v in values.tolist()), f32, len(values))[inverse].reshape(x.shape)

    def accumulate(self, codes, weights, biases):
        """The float32 accumulators of one layer, added in the C library's order."""
        wt = np.ascontiguousarray((weights.astype(f32) * self.w).T)  # (in, out)
        acc = np.empty((len(codes), weights.shape[0]), dtype=f32)
        for start in range(0, len(codes), ROWS_PER_LOOP):
            a = np.ascontiguousarray((codes[start : start + ROWS_PER_LOOP].astype(f32) * self.a).T)  # (in, n)
            part, tmp = acc[start : start + ROWS_PER_LOOP], np.empty((a.shape[1], wt.shape[1]), dtype=f32)
            part[:] = biases.astype(f32) * self.w
            for j in range(len(wt)):
                np.multiply(a[j][:, None], wt[j][None, :], out=tmp)
                part += tmp
        return acc

    def hidden_codes(self, acc):
        """clamp(roundf(act(acc) / A_SCALE)): a hidden layer's int8 outputs from float32 accumulators."""
        acc, kind = np.asarray(acc, dtype=f32), self.header.activation
        if kind == "relu":
            y = np.where(acc > 0, acc, f32(0))
        elif kind == "leaky_relu":
            y = np.where(acc > 0, acc, self.leak * acc)
        elif kind == "sigmoid":
            y = f32(1) / (f32(1) + self._fn("exp", -np.clip(acc, f32(-C_CLAMP), f32(C_CLAMP))))
        else:
            y = self._fn("tanh", np.clip(acc, f32(-C_CLAMP), f32(C_CLAMP)))
        return c_codes(y / self.a)

    def raw_scores(self, codes) -> np.ndarray:
        """The output layer's int8 codes before output processing (QMTIK_infer_forward's q_o_z)."""
        h = np.asarray(codes, dtype=np.int8)
        for weights, biases in self.layers[:-1]:
            h = self.hidden_codes(self.accumulate(h, weights, biases))
        return c_codes(self.accumulate(h, *self.layers[-1]) / self.a)

    def post_process(self, z) -> np.ndarray:
        """QMTIK_infer_post_process: softmax or sigmoid of z*A_SCALE, as roundf(p*127); linear: z."""
        z = np.asarray(z, dtype=np.int8)
        real = z.astype(f32) * self.a
        if self.header.output == "softmax":
            e = self._fn("exp", real - real.max(axis=1, keepdims=True))
            total = np.zeros(len(z), dtype=f32)
            for i in range(z.shape[1]):  # summed in index order
                total += e[:, i]
            return c_round((e / total[:, None]) * f32(127)).astype(np.int8)
        if self.header.output == "sigmoid":
            e = self._fn("exp", -np.clip(real, f32(-C_CLAMP), f32(C_CLAMP)))
            return c_round((f32(1) / (f32(1) + e)) * f32(127)).astype(np.int8)
        return z

    def outputs(self, codes) -> np.ndarray:
        """The int8 outputs QMTIK_infer_forward leaves in q_o_z for int8 sample inputs."""
        return self.post_process(self.raw_scores(codes))

    def predict(self, codes) -> np.ndarray:
        """The C library's classes: the first index of the largest output."""
        return self.outputs(codes).argmax(axis=1)

    # --- conversion to qmtik's integer-only model ---

    def table_scale(self) -> float:
        """Input scale of a sigmoid/tanh table: 127 steps reach just past the last input at which
        the C library's output code still changes."""
        x = np.linspace(-20, 20, 40001, dtype=f32)
        changes = x[1:][np.diff(self.hidden_codes(x).astype(np.int16)) != 0]
        reach = float(np.abs(changes).max()) + 0.002 if changes.size else 1.0
        return reach * 129 / 127 / 127

    def to_quantized_model(self, class_names=None) -> QuantizedModel:
        """The model in qmtik's integer-only scheme: int8 weights at W_SCALE (-128 clipped to
        -127), int32 biases at A_SCALE*W_SCALE, every activation at A_SCALE with zero point 0."""
        a, w = float(self.a), float(self.w)
        kinds = [self.header.activation] * (len(self.layers) - 1) + ["linear"]
        layers = []
        for (weights, biases), kind in zip(self.layers, kinds):
            codes = np.maximum(weights, -q.WMAX).astype(np.int8)
            scales = np.full(len(codes), w)
            bias = q.quantize_bias((biases.astype(f32) * self.w).astype(np.float64), a, 0, codes, scales)
            pre = self.table_scale() if kind in q.TABLE_ACTIVATIONS else None
            try:
                layer = intref.build_layer(codes, bias, scales, a, 0, kind, a, 0, pre, slope=float(self.leak))
            except QuantizationError as exc:  # W_SCALE / A_SCALE beyond qmtik's multipliers
                raise ConfigError(
                    f"C header {self.header.path}: QMTIK_W_SCALE {w:g} and QMTIK_A_SCALE {a:g} "
                    f"cannot be converted: {exc}"
                ) from None
            if pre is not None:  # the C library's codes, not qmtik's fixed-scale table
                layer = replace(layer, table=self.hidden_codes(f32(pre) * np.arange(q.QMIN, q.QMAX + 1, dtype=f32)))
            layers.append(layer)
        return QuantizedModel("classification", self.header.output, (0.0, 255.0), layers, class_names)


def c_model_size(header: CHeader) -> int:
    """Bytes of QMTIK_Model: int8 weights and biases of every layer."""
    widths = header.widths
    return sum(n_out * (n_in + 1) for n_in, n_out in zip(widths[:-1], widths[1:]))


def load_c_model(model_path, header, use_libm: bool = True) -> CLibraryModel:
    """Read the raw int8 dump of QMTIK_store_model: [H][I] weights, [H] biases, [L][H][H],
    [L][H], [O][H], [O]. header is a CHeader or the path of its qmtik_config.h."""
    header = header if isinstance(header, CHeader) else read_header(header)
    try:
        blob = Path(model_path).read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"C model file {model_path}: cannot be read ({exc.strerror or exc})") from None
    expected = c_model_size(header)
    if len(blob) != expected:
        raise ModelFormatError(
            f"C model file {model_path}: {len(blob):,} bytes, expected {expected:,} for "
            f"{'-'.join(map(str, header.widths))} (from {header.path})"
        )
    data, pos, h, i, n, o = (
        np.frombuffer(blob, dtype=np.int8),
        0,
        header.hidden,
        header.inputs,
        header.hh_layers,
        header.outputs,
    )

    def take(*shape):
        nonlocal pos
        size = int(np.prod(shape))
        pos += size
        return data[pos - size : pos].reshape(shape)

    first = (take(h, i), take(h))
    hh_w, hh_b = take(n, h, h), take(n, h)
    last = (take(o, h), take(o))
    return CLibraryModel(header, [first, *zip(hh_w, hh_b), last], use_libm)


def write_c_model(path, layers) -> None:
    """Write layers [(weights, biases)] as QMTIK_store_model would (for tests and tools)."""
    first, *middle, last = layers
    parts = [first[0], first[1], *[w for w, _ in middle], *[b for _, b in middle], last[0], last[1]]
    Path(path).write_bytes(b"".join(np.asarray(p, dtype=np.int8).tobytes() for p in parts))


def import_c_model(model_path, header_path, out_path, class_names=None) -> QuantizedModel:
    """`qmtik import-c-model`: read a C library model, convert it, write it as a .qmt file."""
    model = load_c_model(model_path, header_path).to_quantized_model(class_names)
    save_model(out_path, model)
    return model
