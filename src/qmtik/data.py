"""Data: the bundled digits, Fashion-MNIST from Debian's package, NumPy files, and checks.

Every loader returns (inputs, labels) as NumPy arrays, inputs two-dimensional (samples x
features). Bad data raises DataError naming the file and the problem.
"""
from __future__ import annotations

import gzip
import io
import math
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from .config import NAMED_DATASETS, Config
from .errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
DIGITS_TEST_EVERY = 5       # every 5th bundled digit (index 4, 9, ...) is in its test part


# --- named data sets ---------------------------------------------------------------------------

def load_digits():
    """The bundled UCI optdigits test set: 1797 8x8 digits, pixels 0..16, labels 0..9.

    E. Alpaydin, C. Kaynak (1998), UCI Machine Learning Repository, CC BY 4.0.
    """
    raw = resources.files("qmtik").joinpath("datasets/optdigits-test-8x8.csv.gz").read_bytes()
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    return table[:, :64].astype(np.float32), table[:, 64]


def read_idx(path) -> np.ndarray:
    """An IDX file (raw or .gz) of unsigned bytes, its dimensions checked against its length."""
    path = Path(path)
    try:
        blob = path.read_bytes()
        if path.suffix == ".gz":
            blob = gzip.decompress(blob)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"IDX file {path}: cannot be read ({exc})") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != 0x08:
        raise DataError(f"IDX file {path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = blob[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(blob) < header:
        raise DataError(f"IDX file {path}: truncated header")
    shape = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)
    if len(blob) != expected:
        raise DataError(f"IDX file {path}: dimensions {shape} need {expected} bytes, the file has {len(blob)}")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(directory=FASHION_MNIST_DIR):
    """Fashion-MNIST's ((train inputs, labels), (test inputs, labels)), inputs as uint8 rows of 784."""
    directory = Path(directory)
    if not (directory / "train-images-idx3-ubyte.gz").is_file():
        raise DataError(f"data set fashion-mnist: not found in {directory}; install it with "
                        "'apt-get install dataset-fashion-mnist'")
    parts = []
    for prefix in ("train", "t10k"):
        images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
        parts.append((images.reshape(len(images), -1), labels.astype(np.int64)))
    return parts[0], parts[1]


def named_dataset(name: str):
    """A named data set's ((train inputs, labels), (test inputs, labels))."""
    if name == "digits":
        x, y = load_digits()
        test = np.arange(len(x)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
        return (x[~test], y[~test]), (x[test], y[test])
    if name == "fashion-mnist":
        return load_fashion_mnist()
    raise DataError(f"data set {name!r}: unknown (known: {', '.join(NAMED_DATASETS)})")


# --- files -------------------------------------------------------------------------------------

def load_arrays(path, labels_path=""):
    """(inputs, labels) from an .npz holding arrays x and y, or from two .npy files.

    Pickled object arrays are refused: files are read with allow_pickle=False.
    """
    path = Path(path)
    if path.suffix not in (".npz", ".npy"):
        raise DataError(f"data file {path}: expected an .npz with arrays x and y, or an .npy of inputs with a labels .npy")
    if path.suffix == ".npz" and labels_path:
        raise DataError(f"labels {labels_path}: only for an .npy of inputs; {path} brings its own labels")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                missing = [k for k in ("x", "y") if k not in archive.files]
                if missing:
                    raise DataError(f"data file {path}: has arrays {archive.files}, needs 'x' (inputs) and 'y' (labels)")
                return archive["x"], archive["y"]
        if not labels_path:
            raise DataError(f"data file {path}: an .npy of inputs needs a labels .npy beside it")
        return np.load(path, allow_pickle=False), np.load(labels_path, allow_pickle=False)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"data file {exc.filename or path}: not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"data file {path}: cannot be read as NumPy data ({exc})") from None


def load_data(config: Config):
    """The config's ((train inputs, labels), (test inputs, labels) or None)."""
    d = config.data
    if d.dataset:
        return named_dataset(d.dataset)
    train = load_arrays(d.train, d.train_labels)
    test = load_arrays(d.test, d.test_labels) if d.test else None
    return train, test


def class_names_of(config: Config):
    """The class names the config's data brings: a named set's, or an .npz's 'class_names'."""
    d = config.data
    if d.dataset == "fashion-mnist":
        return FASHION_MNIST_CLASSES
    if d.train.endswith(".npz"):
        try:
            with np.load(d.train, allow_pickle=False) as archive:
                if "class_names" in archive.files:
                    return tuple(str(n) for n in archive["class_names"].reshape(-1))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"data file {d.train}: cannot be read as NumPy data ({exc})") from None
    return None


def check_class_names(names, config: Config):
    """Class names as a tuple of strings, one per class, or None; refused otherwise."""
    if names is None:
        return None
    names = tuple(str(n) for n in names)
    classes = max(config.network.outputs, 2)
    if config.task != "classification":
        raise DataError("class names: a regression network has no classes")
    if len(names) != classes:
        raise DataError(f"class names: {len(names)} given, the network has {classes} classes")
    if any(not n or len(n.encode()) > 255 for n in names):
        raise DataError("class names: each must be 1 to 255 bytes of text")
    return names


def load_named_or_path(spec: str, labels: str = ""):
    """(inputs, labels) of a data set named on the command line: 'digits', 'digits:train', a path."""
    name, _, part = spec.partition(":")
    if name in NAMED_DATASETS:
        if labels:
            raise DataError(f"labels {labels}: only for an .npy of inputs; {spec} brings its own labels")
        if part not in ("", "train", "test"):
            raise DataError(f"data set {spec!r}: the part must be 'train' or 'test'")
        train, test = named_dataset(name)
        return train if part == "train" else test
    if not spec.endswith((".npz", ".npy")):
        raise DataError(f"data file {spec}: expected a named data set ({', '.join(NAMED_DATASETS)}), "
                        "an .npz with arrays x and y, or an .npy of inputs with --labels")
    return load_arrays(spec, labels)


def data_name(spec: str, labels: str = "") -> str:
    """How errors name the data load_named_or_path(spec, labels) reads: 'digits:test' for a
    named set (its test part unless ':train' is given), else the path, with its labels file."""
    name, _, part = spec.partition(":")
    if name in NAMED_DATASETS:
        return f"{name}:{part or 'test'}"
    return f"{spec} with labels {labels}" if labels else spec


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_inputs(path) -> np.ndarray:
    """Samples to predict: an .npy array, or a .csv of numbers (a header row is skipped)."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"input file {path}: not found") from None
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"input file {path}: cannot be read as NumPy data ({exc})") from None
    if path.suffix != ".csv":
        raise DataError(f"input file {path}: expected an .npy or a .csv")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()      # a BOM (Excel) is not data
    except FileNotFoundError:
        raise DataError(f"input file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"input file {path}: cannot be read ({exc})") from None
    rows, width = [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cells = line.split(",")
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if number == 1 and not any(_is_number(c) for c in cells):
                continue                      # a header row: no cell is a number
            raise DataError(f"input file {path}, line {number}: not a row of numbers") from None
        if width is not None and len(values) != width:
            raise DataError(f"input file {path}, line {number}: {len(values)} columns, expected {width}")
        width = len(values)
        rows.append(values)
    if not rows:
        raise DataError(f"input file {path}: no samples")
    return np.array(rows, dtype=np.float64)


# --- checks ------------------------------------------------------------------------------------

def check_inputs(x, inputs: int, name: str = "inputs") -> np.ndarray:
    """Inputs as a 2-D array of `inputs` columns, numeric, finite and not empty."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected numbers, got an array of {x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{name}: no samples")
    if x.ndim > 2:
        x = x.reshape(len(x), -1)
    if x.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (samples x features), got shape {x.shape}")
    if x.shape[1] != inputs:
        raise DataError(f"{name}: {x.shape[1]} features per sample, the network has {inputs} inputs")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(f"{name}: NaN or infinite value in sample {bad}")
    return x


def encode_targets(y, task: str, outputs: int, samples: int, name: str = "labels") -> np.ndarray:
    """Labels as the float32 targets the cost compares with (one-hot for classes)."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected numbers, got an array of {y.dtype}")
    if y.ndim == 0:
        raise DataError(f"{name}: expected one label per sample, got a single value")
    if len(y) != samples:
        raise DataError(f"{name}: {len(y)} labels for {samples} samples")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{name}: NaN or infinite value in label {int(np.argwhere(~np.isfinite(y))[0][0])}")
    if task == "regression":
        y = y.reshape(samples, -1) if y.ndim > 1 else y.reshape(samples, 1)
        if y.shape[1] != outputs:
            raise DataError(f"{name}: {y.shape[1]} targets per sample, the network has {outputs} outputs")
        return y.astype(np.float32)
    classes = max(outputs, 2)
    if y.ndim != 1 or (y != np.round(y)).any():
        raise DataError(f"{name}: class labels must be a 1-D array of integers")
    if y.min() < 0 or y.max() >= classes:
        bad = int(np.argmax((y < 0) | (y >= classes)))
        raise DataError(f"{name}: label {y[bad].item()!r} of sample {bad} is out of range 0..{classes - 1}")
    labels = y.astype(np.int64)
    if outputs == 1:
        return labels.astype(np.float32)[:, None]
    return np.eye(outputs, dtype=np.float32)[labels]
