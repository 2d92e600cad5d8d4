"""qmtik: train small neural networks with int8 fake quantization, run them in integers.

    import qmtik
    config = qmtik.load_config("digits.toml")            # or qmtik.Config(...)
    (x, y), (x_test, y_test) = qmtik.load_dataset("digits")  # or "mnist" after qmtik.get_dataset("mnist")
    net = qmtik.Network(config).fit(x, y, verbose=True)
    print(net.score(x_test, y_test))                     # on the int8 arithmetic
    net.save("digits.ckpt.npz"); net = qmtik.Network.load("digits.ckpt.npz")
    model = net.quantize()                               # integer-only: int8 in, int8 scores out
    qmtik.save_model("digits.qmt", model); model = qmtik.load_model("digits.qmt")
    qmtik.save_header("digits.h", model, "digits")     # the model as one C header

Every error qmtik raises on purpose is a QmtikError, one of those listed below (errors.py).
"""

from .config import Config, DataConfig, NetworkConfig, QuantizationConfig, TrainingConfig, load_config
from .data import load_arrays, load_dataset, load_digits, load_file
from .download import get_dataset
from .errors import (
    CheckFailed,
    CheckpointError,
    CompilerError,
    ConfigError,
    DataError,
    DownloadError,
    ExportError,
    ModelFormatError,
    NotFittedError,
    OnnxError,
    OutputError,
    PlotError,
    QmtikError,
    QuantizationError,
    ShapeError,
    TrainingError,
    TuneError,
    UsageError,
)
from .export_c import save_header
from .integer_model import QuantizedModel
from .network import Network
from .onnx_import import import_onnx
from .qmtfile import load_model, save_model
from .version import __version__

__all__ = [
    "Config",
    "NetworkConfig",
    "QuantizationConfig",
    "TrainingConfig",
    "DataConfig",
    "load_config",
    "Network",
    "import_onnx",
    "QuantizedModel",
    "load_model",
    "save_model",
    "save_header",
    "load_dataset",
    "load_digits",
    "load_arrays",
    "load_file",
    "get_dataset",
    "QmtikError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "QuantizationError",
    "ShapeError",
    "ModelFormatError",
    "DownloadError",
    "PlotError",
    "NotFittedError",
    "ExportError",
    "CompilerError",
    "OutputError",
    "TuneError",
    "UsageError",
    "OnnxError",
    "CheckFailed",
    "__version__",
]
