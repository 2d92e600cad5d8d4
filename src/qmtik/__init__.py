"""qmtik: train small neural networks with int8 fake quantization, run them in integers.

    import qmtik
    config = qmtik.load_config("digits.toml")            # or qmtik.Config(...)
    (x, y), (x_test, y_test) = qmtik.load_dataset("digits")  # or "mnist" after qmtik.get_dataset("mnist")
    net = qmtik.Network(config).fit(x, y, verbose=True)
    print(net.score(x_test, y_test))                     # on the int8 arithmetic
    net.save("digits.ckpt.npz"); net = qmtik.Network.load("digits.ckpt.npz")
    model = net.quantize()                               # integer-only: int8 in, int8 scores out
    model.save("digits.qmt"); model = qmtik.load_model("digits.qmt")
"""
from .config import (Config, DataConfig, NetworkConfig, QuantizationConfig, TrainingConfig,
                     load_config)
from .data import load_arrays, load_digits, load_file, named_dataset as load_dataset
from .download import get_dataset
from .errors import (CheckpointError, ConfigError, DataError, DownloadError, ModelFormatError,
                     PlotError, QmtikError, QuantizationError, TrainingError)
from .model import QuantizedModel
from .network import Network, NotFittedError
from .qmtfile import load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "Config", "NetworkConfig", "QuantizationConfig", "TrainingConfig", "DataConfig", "load_config",
    "Network", "QuantizedModel", "load_model", "save_model", "load_dataset", "load_digits", "load_arrays",
    "load_file", "get_dataset",
    "QmtikError", "ConfigError", "DataError", "CheckpointError", "TrainingError", "QuantizationError",
    "ModelFormatError", "DownloadError", "PlotError",
    "NotFittedError", "__version__",
]
