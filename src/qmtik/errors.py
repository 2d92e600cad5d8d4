"""The exceptions qmtik raises, all of them (tests/test_errors.py holds it so). Every message is
one line that names the thing and the problem."""


class QmtikError(Exception):
    """Base class of every error qmtik raises on purpose."""


class ConfigError(QmtikError, ValueError):
    """A configuration value, key or combination that qmtik refuses."""


class ShapeError(QmtikError, ValueError):
    """A window (convolution, pooling) that does not fit its input, or an array of the wrong shape."""


class DataError(QmtikError, ValueError):
    """Data that cannot be used: missing file, wrong shape, NaN, labels out of range."""


class CheckpointError(QmtikError, ValueError):
    """A checkpoint file that is missing, corrupt, of another version or another network."""


class TrainingError(QmtikError, RuntimeError):
    """Training that cannot go on, such as a loss that became NaN or infinite."""


class QuantizationError(QmtikError, ValueError):
    """Scales or values that the integer arithmetic cannot represent."""


class ModelFormatError(QmtikError, ValueError):
    """A .qmt model file that is truncated, corrupted, of another version or not a model."""


class DownloadError(QmtikError, OSError):
    """A data set that cannot be fetched: offline, a server error, or a file failing its checksum."""


class PlotError(QmtikError, RuntimeError):
    """A plot that cannot be drawn, most often because matplotlib (the [plot] extra) is missing."""


class NotFittedError(QmtikError, AttributeError):
    """A Network used before it is trained (fit) or loaded."""


class ExportError(QmtikError, ValueError):
    """A model or prefix that cannot be exported as a C header."""


class CompilerError(QmtikError, RuntimeError):
    """No C compiler, or a generated header that did not compile or run."""


class CheckFailed(QmtikError):
    """A compiled header whose results differ from the Python reference's (exit code 1)."""


class OutputError(QmtikError, OSError):
    """An output file that cannot be written where it was asked for."""


class TuneError(QmtikError, RuntimeError):
    """A search that cannot run: the [tune] extra missing, a storage out of reach, a study of another space."""


class UsageError(QmtikError):
    """A command line that asks for something impossible (exit code 2)."""


class OnnxError(QmtikError, ValueError):
    """An ONNX graph that cannot be imported (an operator, a shape or a file qmtik does not take)."""
