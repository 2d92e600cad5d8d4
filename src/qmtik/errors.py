"""The exceptions qmtik raises. Every message is one line that names the thing and the problem."""


class QmtikError(Exception):
    """Base class of every error qmtik raises on purpose."""


class ConfigError(QmtikError, ValueError):
    """A configuration value, key or combination that qmtik refuses."""


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
