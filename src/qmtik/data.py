"""Data: the named data sets, data files in every format qmtik reads, and the checks on them.

Every loader returns (inputs, labels) as NumPy arrays, inputs two-dimensional (samples x
features). Bad data raises DataError naming the file and the problem. The formats themselves
(IDX, CSV, qmtik-bin) are read in data_formats.py.
"""

from __future__ import annotations

import gzip
import io
from importlib import resources
from pathlib import Path

import numpy as np

from .config import NAMED_DATASETS, Config
from .data_formats import (
    format_of,
    labels_of_targets,
    one_hot_targets,
    qmtik_bin_bytes,
    read_csv,
    read_csv_table,
    read_idx,
    read_qmtik_bin,
)
from .errors import DataError
from .head import class_count
from .output_files import write_atomic
from .parsing import load_npy, load_npz
from .quantization import input_range_problem, quantize_inputs
from .validate import check_inputs, class_names_problem

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS_TEST_EVERY = 5  # every 5th bundled digit (index 4, 9, ...) is in its test part


# --- named data sets ---------------------------------------------------------------------------


def load_digits():
    """The bundled UCI optdigits test set: 1797 8x8 digits, pixels 0..16, labels 0..9.

    E. Alpaydin, C. Kaynak (1998), UCI Machine Learning Repository, CC BY 4.0.
    """
    raw = resources.files("qmtik").joinpath("datasets/optdigits-test-8x8.csv.gz").read_bytes()
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    return table[:, :64].astype(np.float32), table[:, 64]


def load_idx_pair(directory, prefix: str):
    """(inputs as uint8 rows, int64 labels) of one part of an MNIST-style IDX set in directory."""
    images = read_idx(Path(directory) / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(Path(directory) / f"{prefix}-labels-idx1-ubyte.gz")
    if len(images) != len(labels):
        raise DataError(f"IDX files in {directory}: {len(images)} {prefix} images but {len(labels)} labels")
    return images.reshape(len(images), -1), labels.astype(np.int64)


def load_fashion_mnist(directory=None):
    """Fashion-MNIST's ((train inputs, labels), (test inputs, labels)), inputs as uint8 rows of 784."""
    return load_mnist_like("fashion-mnist", directory)


def load_mnist_like(name: str, directory=None):
    """MNIST or Fashion-MNIST: from the directory given (read as it is), else from the cache or
    Debian's package with every file's checksum verified; never downloading."""
    if directory is not None:
        if not (Path(directory) / "train-images-idx3-ubyte.gz").is_file():
            hint = "; install it with 'apt-get install dataset-fashion-mnist'" if name == "fashion-mnist" else ""
            raise DataError(f"data set {name}: not found in {directory}{hint}")
        found = Path(directory)
    else:
        from .download import find_dataset  # the download code loads only when needed

        found = find_dataset(name)
    if found is None:
        hint = " (or 'apt-get install dataset-fashion-mnist')" if name == "fashion-mnist" else ""
        raise DataError(f"data set {name}: not downloaded yet; fetch it with 'qmtik data get {name}'{hint}")
    return load_idx_pair(found, "train"), load_idx_pair(found, "t10k")


def load_dataset(name: str):
    """A named data set's ((train inputs, labels), (test inputs, labels))."""
    if name == "digits":
        x, y = load_digits()
        test = np.arange(len(x)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
        return (x[~test], y[~test]), (x[test], y[test])
    if name in NAMED_DATASETS:  # the downloaded ones
        return load_mnist_like(name)
    raise DataError(f"data set {name!r}: unknown (known: {', '.join(NAMED_DATASETS)})")


# --- files -------------------------------------------------------------------------------------

READABLE = "an .npz (arrays x and y), an .npy or IDX file of inputs with its labels file, a .csv, or a qmtik-bin .bin"


def load_arrays(path, labels_path=""):
    """(inputs, labels) from an .npz holding arrays x and y, or from two .npy files.

    Pickled object arrays are refused: files are read with allow_pickle=False.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise DataError(
            f"data file {path}: expected an .npz with arrays x and y, or an .npy of inputs with a labels .npy"
        )
    if suffix == ".npz" and labels_path:
        raise DataError(f"labels {labels_path}: only for an .npy or IDX file of inputs; {path} brings its own labels")
    if suffix == ".npy" and not labels_path:
        raise DataError(f"data file {path}: an .npy of inputs needs a labels .npy beside it")
    if suffix == ".npz":
        arrays = load_npz(path, f"data file {path}", DataError, keys=("x", "y"))
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise DataError(f"data file {path}: needs arrays 'x' (inputs) and 'y' (labels); it has no {missing[0]!r}")
        return arrays["x"], arrays["y"]
    return _numpy_file(path), _numpy_file(labels_path)


def _numpy_file(path):
    """An .npy array read without pickles, its errors as DataError naming the file."""
    return load_npy(path, f"data file {path}", DataError)


def _labels_file(path):
    """Labels from an .npy or an IDX file."""
    if format_of(path) == "idx":
        return read_idx(path)
    if format_of(path) == "npy":
        return _numpy_file(path)
    raise DataError(f"labels {path}: expected an .npy or an IDX file")


def load_file(
    path,
    labels_path="",
    *,
    label_column: int = -1,
    inputs: int | None = None,
    outputs: int | None = None,
    task: str = "classification",
):
    """(inputs, labels) from a data file in any format qmtik reads (see data_formats.format_of).

    An .npy or IDX file of inputs needs labels_path; a CSV holds its labels in label_column; a
    qmtik-bin file needs the network's inputs and outputs to know where a sample ends.
    """
    kind = format_of(path)
    if kind is None:
        raise DataError(f"data file {path}: expected {READABLE}")
    if kind in ("npz", "csv", "qmtik-bin") and labels_path:
        raise DataError(f"labels {labels_path}: only for an .npy or IDX file of inputs; {path} brings its own labels")
    if kind in ("npy", "idx") and not labels_path:
        raise DataError(f"data file {path}: an .{kind} file of inputs needs a labels file beside it")
    if kind == "npz":
        return load_arrays(path)
    if kind == "csv":
        return read_csv(path, label_column)
    if kind == "qmtik-bin":
        if inputs is None or outputs is None:
            raise DataError(
                f"data file {path}: a qmtik-bin file is read for a network, whose inputs and outputs are needed"
            )
        x, targets = read_qmtik_bin(path, inputs, outputs)
        return x, (labels_of_targets(targets, path) if task == "classification" else targets.astype(np.float32))
    x = _numpy_file(path) if kind == "npy" else read_idx(path)
    return x, _labels_file(labels_path)


CONVERT_TO = ("qmtik-bin", "npz")
C_LIBRARY_SPLIT = 0.8  # mnist_784_data_prep.py's share of samples for training
PIXEL_RANGE = (0.0, 255.0)  # the C library's inputs: pixel - 128


MAX_CLASSES = 65536


def class_labels(y, samples: int, name: str) -> np.ndarray:
    """Labels as int64 classes 0..MAX_CLASSES-1, one per sample; anything else refused."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf" or y.ndim != 1 or len(y) != samples:
        raise DataError(f"{name}: expected one class number per sample ({samples}), got shape {y.shape}")
    bad = ~np.isfinite(y) if y.dtype.kind == "f" else np.zeros(len(y), bool)
    bad |= np.where(bad, 0, y) != np.round(np.where(bad, 0, y))
    bad |= (np.where(bad, 0, y) < 0) | (np.where(bad, 0, y) >= MAX_CLASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{name}: label {y[i].item()!r} of sample {i} is not a class number 0..{MAX_CLASSES - 1}")
    return y.astype(np.int64)


def convert_file(
    source,
    to: str,
    out_stem,
    *,
    labels_path="",
    label_column: int = -1,
    split: float = C_LIBRARY_SPLIT,
    input_range=None,
    outputs: int | None = None,
) -> list[tuple[Path, int, int]]:
    """Convert a classification data file to qmtik-bin (the C library's samples) or .npz.

    As the C library's mnist_784_data_prep.py did: the first `split` of the samples (in file
    order) go to OUT_train, the rest to OUT_test; split 1 writes one file, OUT. qmtik-bin inputs
    are quantized as qmtik quantizes them, from input_range (default: pixels 0..255, that is
    pixel - 128, the C library's convention; other values need a range). Returns [(path, samples,
    classes)] of the files written.
    """
    if to not in CONVERT_TO:
        raise DataError(f"conversion target {to!r}: unknown (known: {', '.join(CONVERT_TO)})")
    if not 0 < split <= 1:
        raise DataError(f"split {split}: the share of samples for training must be in (0, 1]")
    x, y = load_file(source, labels_path, label_column=label_column)
    x = np.asarray(x)
    x = check_inputs(x, int(np.prod(x.shape[1:])) if x.ndim > 1 else 0, f"data file {source}: inputs")
    y = class_labels(y, len(x), f"data file {source}: labels")
    if outputs is not None and not 2 <= outputs <= MAX_CLASSES:
        raise DataError(f"outputs {outputs}: the number of classes must be 2 to {MAX_CLASSES}")
    if outputs is not None and y.max() >= outputs:
        raise DataError(
            f"outputs {outputs}: the labels of {source} reach {y.max()}, so at least {y.max() + 1} are needed"
        )
    classes = outputs if outputs is not None else max(int(y.max()) + 1, 2)
    low, high = input_range if input_range is not None else PIXEL_RANGE
    if input_range is None and (x.min() < low or x.max() > high):
        raise DataError(
            f"data file {source}: values from {x.min():g} to {x.max():g} are not pixels 0..255; "
            "give the range that maps to int8 -128..127 with --input-range LOW HIGH"
        )
    problem = input_range_problem(low, high)
    if problem:
        raise DataError(f"input range [{low:g}, {high:g}] of {source}: {problem}; give one with --input-range")
    cut = len(x) if split == 1 else int(round(len(x) * split))
    if not 0 < cut <= len(x) or (split < 1 and cut == len(x)):
        raise DataError(f"split {split}: of {len(x)} samples it leaves a part empty")
    out_stem = Path(out_stem)
    parts = (
        [(out_stem, slice(None))]
        if split == 1
        else [
            (out_stem.with_name(out_stem.name + "_train"), slice(0, cut)),
            (out_stem.with_name(out_stem.name + "_test"), slice(cut, None)),
        ]
    )
    written = []
    for stem, rows in parts:
        if to == "npz":
            path = stem.with_name(stem.name + ".npz")
            write_atomic(path, lambda f, r=rows: np.savez(f, x=x[r], y=y[r]))
        else:
            path = stem.with_name(stem.name + ".bin")
            blob = qmtik_bin_bytes(quantize_inputs(x[rows], (low, high)), one_hot_targets(y[rows], classes))
            write_atomic(path, lambda f, b=blob: f.write(b))
        written.append((path, len(x[rows]), classes))
    return written


def load_data(config: Config):
    """The config's ((train inputs, labels), (test inputs, labels) or None)."""
    d = config.data
    if d.dataset:
        return load_dataset(d.dataset)
    shape = dict(
        label_column=d.label_column, inputs=config.network.inputs, outputs=config.network.outputs, task=config.task
    )
    train = load_file(d.train, d.train_labels, **shape)
    test = load_file(d.test, d.test_labels, **shape) if d.test else None
    return train, test


def class_names_of(config: Config):
    """The class names the config's data brings: a named set's, or an .npz's 'class_names'."""
    d = config.data
    if d.dataset == "fashion-mnist":
        return FASHION_MNIST_CLASSES
    if format_of(d.train) == "npz":
        arrays = load_npz(d.train, f"data file {d.train}", DataError, keys=("class_names",))
        if "class_names" in arrays:
            return tuple(str(n) for n in arrays["class_names"].reshape(-1))
    return None


def check_class_names(names, config: Config):
    """Class names as a tuple of strings, one per class, or None; refused by the model file's
    rule (validate.class_names_problem), the one rule for class names, so that a network trains only with names
    its checkpoint and its .qmt can hold."""
    if names is None:
        return None
    names = tuple(str(n) for n in names)
    if config.task != "classification":
        raise DataError("class names: a regression network has no classes")
    if not names:
        raise DataError(f"class names: none given, the network has {class_count(config.network.outputs)} classes")
    problem = class_names_problem(config.task, names, config.network.outputs)
    if problem:
        raise DataError(f"class names: {problem}")
    return names


def load_named_or_path(
    spec: str,
    labels: str = "",
    *,
    label_column: int = -1,
    inputs: int | None = None,
    outputs: int | None = None,
    task: str = "classification",
):
    """(inputs, labels) of a data set named on the command line: 'digits', 'digits:train', a path."""
    name, _, part = spec.partition(":")
    if name in NAMED_DATASETS:
        if labels:
            raise DataError(f"labels {labels}: only for an .npy or IDX file of inputs; {spec} brings its own labels")
        if part not in ("", "train", "test"):
            raise DataError(f"data set {spec!r}: the part must be 'train' or 'test'")
        train, test = load_dataset(name)
        return train if part == "train" else test
    if format_of(spec) is None:
        raise DataError(f"data file {spec}: expected a named data set ({', '.join(NAMED_DATASETS)}), or {READABLE}")
    return load_file(spec, labels, label_column=label_column, inputs=inputs, outputs=outputs, task=task)


def data_name(spec: str, labels: str = "") -> str:
    """How errors name the data load_named_or_path(spec, labels) reads: 'digits:test' for a
    named set (its test part unless ':train' is given), else the path, with its labels file."""
    name, _, part = spec.partition(":")
    if name in NAMED_DATASETS:
        return f"{name}:{part or 'test'}"
    return f"{spec} with labels {labels}" if labels else spec


def read_inputs(path) -> np.ndarray:
    """Samples to predict: an .npy array, or a .csv of numbers (a header row is skipped)."""
    kind = format_of(path)
    if kind == "npy":
        return load_npy(path, f"input file {path}", DataError)
    if kind != "csv":
        raise DataError(f"input file {path}: expected an .npy or a .csv")
    return read_csv_table(path, "input file")
