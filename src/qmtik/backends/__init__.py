"""Backends: the forms of the integer spec (intref) a QuantizedModel can compute its scores with.

    reference   intref.reference_scores itself: int64, step by step; slow, the definition
    numpy       float32/float64 products and float64 requantization, provably exact (numpy.py;
                the window kinds, convolutions and pools, in windows.py)
    onnx        onnxruntime's int8 products (the [fast] extra), requantized as numpy does (onnx.py);
                dense layers only: "auto" picks numpy for a model with window layers
    auto        onnx for int8 batches of more than SMALL_BATCH samples when it is available,
                else numpy: the default

Every backend gives the same integers: tests/test_backends.py runs each registered one against
intref.reference_scores on extreme values, so registering a backend here is what tests it.
The user chooses with QuantizedModel(..., backend=name), the attribute model.backend, or the
environment: QMTIK_BACKEND=name sets the default instead of "auto", and QMTIK_INT8_GEMM=0
turns the onnx backend off (auto then picks numpy).
"""

from __future__ import annotations

import os

from .. import intref
from ..errors import ConfigError
from . import numpy, onnx
from .common import SMALL_BATCH

ENV = "QMTIK_BACKEND"  # the backend of models that name none; "auto" when unset


class Reference:
    """The spec itself as a backend: intref.reference_scores of the layers."""

    def __init__(self, layers):
        self.layers = layers

    def __call__(self, codes):
        return intref.reference_scores(self.layers, codes)


BACKENDS = {"reference": Reference, "numpy": numpy.Kernels, "onnx": onnx.Int8Network}  # name -> prepare(layers)
AVAILABLE = {"onnx": onnx.available}  # name -> whether it can run here (the others always can)
NAMES = ("auto", *BACKENDS)


def check_name(name, where: str = "backend") -> str:
    """name when it is one of NAMES, else a one-line ConfigError listing them."""
    if not isinstance(name, str) or name not in NAMES:
        raise ConfigError(f"{where} {name!r}: allowed {', '.join(NAMES)}")
    return name


def default() -> str:
    """The backend of a model that names none: QMTIK_BACKEND, else "auto"."""
    name = os.environ.get(ENV)
    return "auto" if name is None else check_name(name, ENV)


def choose(name, samples: int, layers=()) -> str:
    """The backend that computes a batch of int8 codes through layers: name itself (None: the
    default), or for "auto" onnx above SMALL_BATCH samples when available and the layers are
    all dense (single samples keep numpy's lower latency), else numpy. A backend asked for by
    name that cannot run, or cannot compute a layer's kind, is a one-line ConfigError."""
    name = default() if name is None else check_name(name)
    if name == "auto":
        return "onnx" if samples > SMALL_BATCH and onnx.available() and not onnx.unsupported(layers) else "numpy"
    if name in AVAILABLE and not AVAILABLE[name]():
        raise ConfigError(unavailable(name))
    if name == "onnx" and onnx.unsupported(layers):
        raise ConfigError(f"{onnx.unsupported(layers)} (choose backend 'numpy' or 'auto')")
    return name


def unavailable(name: str) -> str:
    """Why backend name cannot run here (onnx is the only one that may not)."""
    if os.environ.get(onnx.ENV) == "0":
        return f"backend {name!r} is turned off by {onnx.ENV}=0 in the environment"
    return (
        f"backend {name!r} needs onnxruntime with an exact int8 product: pip install 'qmtik[fast]' "
        "(or choose backend 'numpy')"
    )


def prepare(name: str, layers):
    """The layers prepared for backend name (not "auto"): a callable from int8 codes to int8 scores."""
    return BACKENDS[name](layers)
