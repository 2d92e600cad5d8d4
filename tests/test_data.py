"""Data: the bundled digits, IDX files, NumPy files (never unpickled), input and label checks."""

import gzip
from collections import Counter

import numpy as np
import pytest

import qmtik
from qmtik import Config, DataError
from qmtik.config import NAMED_DATASETS
from qmtik.data import (
    data_name,
    load_arrays,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_named_or_path,
    read_inputs,
)
from qmtik.validate import check_inputs, encode_targets


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- the bundled digits ------------------------------------------------------------------------


def test_load_digits():
    x, y = load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.min() == 0 and x.max() == 16
    np.testing.assert_array_equal(x, np.round(x))  # whole pixel counts
    assert y.dtype.kind == "i"
    assert sorted(set(y.tolist())) == list(range(10))
    assert min(Counter(y.tolist()).values()) > 150  # every class well represented


def test_the_digits_split_is_a_partition():
    x, y = load_digits()
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    assert len(x_train) == len(y_train) == 1438
    assert len(x_test) == len(y_test) == 359

    # each sample of the bundled set is in exactly one part: the rows (with labels) are the same multiset
    def rows(a, b):
        return Counter(row.tobytes() for row in np.column_stack([a, b]).astype(np.int64))

    assert rows(x, y) == rows(x_train, y_train) + rows(x_test, y_test)
    assert set(y_test.tolist()) == set(range(10))


def test_an_unknown_named_dataset_is_refused():
    with pytest.raises(DataError) as info:
        load_dataset("cifar")
    assert "'cifar'" in one_line(info) and ", ".join(NAMED_DATASETS) in one_line(info)


def idx_bytes(array: np.ndarray, magic=(0, 0, 8)) -> bytes:
    header = bytes([*magic, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


# --- MNIST-style sets ------------------------------------------------------------------------------


def test_load_fashion_mnist_without_the_package_says_how_to_install_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path / "fashion-mnist")
    message = one_line(info)
    assert str(tmp_path / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_load_fashion_mnist_reads_the_four_files(tmp_path):
    rng = np.random.default_rng(1)
    parts = {"train": 5, "t10k": 3}
    for prefix, n in parts.items():
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        )
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(n) % 10)))
    (x, y), (x_test, y_test) = load_fashion_mnist(tmp_path)
    assert x.shape == (5, 784) and x_test.shape == (3, 784) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(y_test, [0, 1, 2])


# --- NumPy files -------------------------------------------------------------------------------


def test_load_arrays_reads_an_npz(tmp_path):
    x, y = np.arange(12.0).reshape(4, 3), np.array([1, 0, 1, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    got_x, got_y = load_arrays(tmp_path / "d.npz")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_load_arrays_refuses_an_npz_without_y(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3)), labels=np.zeros(2))
    with pytest.raises(DataError) as info:
        load_arrays(tmp_path / "d.npz")
    message = one_line(info)
    assert str(tmp_path / "d.npz") in message and "'y'" in message and "labels" in message


def test_load_arrays_reads_an_npy_pair(tmp_path):
    x, y = np.arange(6, dtype=np.uint8).reshape(2, 3), np.array([0.5, -1.5])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    got_x, got_y = load_arrays(tmp_path / "x.npy", tmp_path / "y.npy")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.dtype == np.uint8


def test_load_arrays_needs_labels_for_an_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    with pytest.raises(DataError, match="labels"):
        load_arrays(tmp_path / "x.npy")


class Trap:
    """Unpickling this creates the marker file: proof that a loader unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_pickled_object_arrays_are_refused_unopened(tmp_path, kind):
    marker = tmp_path / "unpickled"
    trap = np.empty(2, dtype=object)
    trap[0], trap[1] = Trap(marker), Trap(marker)
    if kind == "npy":
        np.save(tmp_path / "x.npy", trap, allow_pickle=True)
        np.save(tmp_path / "y.npy", np.zeros(2))
        paths = (tmp_path / "x.npy", tmp_path / "y.npy")
    else:
        np.savez(tmp_path / "d.npz", x=trap, y=np.zeros(2))
        paths = (tmp_path / "d.npz",)
    assert not marker.exists()
    with pytest.raises(DataError) as info:
        load_arrays(*paths)
    assert "unsafely" not in one_line(info) and "Python objects" in one_line(info)  # no advice to unpickle
    assert not marker.exists()


@pytest.mark.parametrize("name", ["d.npz", "x.npy"])
def test_a_file_that_is_not_numpy_gets_no_advice_to_unpickle_it(tmp_path, name):
    (tmp_path / name).write_bytes(b"some text, not numpy\n")
    np.save(tmp_path / "y.npy", np.zeros(2))
    with pytest.raises(DataError) as info:
        load_arrays(tmp_path / name, tmp_path / "y.npy" if name.endswith(".npy") else "")
    assert "unsafely" not in one_line(info) and f"{name}: not a NumPy file" in one_line(info)


@pytest.mark.parametrize("which", ["x", "labels"])
def test_load_arrays_refuses_a_missing_file(tmp_path, which):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    x_path = tmp_path / ("x.npy" if which == "labels" else "nope.npy")
    labels = tmp_path / "nolabels.npy"
    with pytest.raises(DataError) as info:
        load_arrays(x_path, labels)
    message = one_line(info)
    assert "not found" in message
    assert str(labels if which == "labels" else x_path) in message


def test_load_arrays_refuses_a_missing_npz(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_arrays(tmp_path / "nope.npz")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_load_arrays_refuses_a_damaged_npz(tmp_path, damage):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(400.0).reshape(100, 4), y=np.zeros(100))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"PK\x03\x04" + bytes(300))
    with pytest.raises(DataError) as info:
        load_arrays(path)
    assert str(path) in one_line(info)


@pytest.mark.parametrize("how", ["encrypted", "method", "deflate"])
def test_a_hostile_npz_is_refused_by_every_reader(tmp_path, how):
    """zipfile's RuntimeError (encrypted), NotImplementedError (unknown compression) and
    zlib.error (corrupt stream) end as a DataError naming the file, wherever an .npz is read."""
    from conftest import hostile_npz
    from qmtik.data import class_names_of

    path = tmp_path / "d.npz"
    hostile_npz(path, how, x=np.zeros((3, 64)), y=np.arange(3), class_names=np.array(list("abcdefghij")))
    config = Config.from_dict({"data": {"dataset": "", "train": str(path)}})
    for call in (lambda: load_arrays(path), lambda: qmtik.load_file(path), lambda: class_names_of(config)):
        with pytest.raises(DataError) as info:
            call()
        assert f"data file {path}: cannot be read as an .npz archive" in one_line(info)


def test_an_npz_named_npy_is_refused_not_returned(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 64)))
    (tmp_path / "d.npz").rename(tmp_path / "x.npy")
    np.save(tmp_path / "y.npy", np.zeros(3))
    for call in (lambda: read_inputs(tmp_path / "x.npy"), lambda: load_arrays(tmp_path / "x.npy", tmp_path / "y.npy")):
        with pytest.raises(DataError) as info:
            call()
        assert "x.npy: an .npz archive, not a single NumPy array" in one_line(info)


@pytest.mark.parametrize("shape", [(5, 0), (5, 0, 3)])
def test_data_convert_of_samples_without_features_is_refused(tmp_path, shape):
    from qmtik.data import convert_file

    np.savez(tmp_path / "e.npz", x=np.zeros(shape), y=np.arange(5) % 2)
    for to in ("npz", "qmtik-bin"):
        with pytest.raises(DataError) as info:
            convert_file(tmp_path / "e.npz", to, tmp_path / "out")
        assert "e.npz: inputs: the samples have no features" in one_line(info)
    assert not list(tmp_path.glob("out*"))


def test_data_convert_of_samples_without_features_exits_1_with_one_line(tmp_path, capsys):
    from qmtik.cli import main

    np.savez(tmp_path / "e.npz", x=np.zeros((5, 0)), y=np.arange(5) % 2)
    assert main(["data", "convert", str(tmp_path / "e.npz"), "--to", "npz", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no features" in err


# --- input checks ------------------------------------------------------------------------------


def test_check_inputs_passes_good_inputs_through():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = check_inputs(x, 4)
    np.testing.assert_array_equal(out, x)
    assert check_inputs([[1, 2], [3, 4]], 2).shape == (2, 2)


def test_check_inputs_refuses_the_wrong_feature_count():
    with pytest.raises(DataError) as info:
        check_inputs(np.zeros((3, 63)), 64, "test inputs")
    message = one_line(info)
    assert message.startswith("test inputs:") and "63" in message and "64" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_inputs_names_the_sample_with_a_non_finite_value(bad):
    x = np.zeros((6, 4))
    x[4, 2] = bad
    with pytest.raises(DataError) as info:
        check_inputs(x, 4)
    assert "sample 4" in one_line(info)


@pytest.mark.parametrize("x", [np.zeros((0, 4)), np.zeros((0, 2, 2)), np.array([]), np.array(3), np.array(3.5)])
def test_check_inputs_refuses_no_samples(x):
    with pytest.raises(DataError) as info:
        check_inputs(x, 4, "digits:test inputs")
    assert one_line(info) == "digits:test inputs: no samples"


def test_check_inputs_flattens_images():
    images = np.arange(5 * 8 * 8).reshape(5, 8, 8)
    out = check_inputs(images, 64)
    assert out.shape == (5, 64)
    np.testing.assert_array_equal(out[3], images[3].ravel())


@pytest.mark.parametrize("x", [np.array([["a", "b"]]), np.array([[None, 1]], dtype=object), np.array([[1 + 2j, 0]])])
def test_check_inputs_refuses_non_numbers(x):
    with pytest.raises(DataError) as info:
        check_inputs(x, 2)
    assert "expected numbers" in one_line(info)


def test_check_inputs_refuses_a_single_vector():
    with pytest.raises(DataError, match="2-D"):
        check_inputs(np.zeros(64), 64)


# --- targets -----------------------------------------------------------------------------------

CLASSES = Config()
BINARY = Config.from_dict({"network": {"outputs": 1, "output": "sigmoid", "cost": "binary_cross_entropy"}})


def regression(outputs):
    return Config.from_dict({"task": "regression", "network": {"outputs": outputs, "output": "linear", "cost": "mse"}})


def test_encode_targets_one_hot():
    out = encode_targets(np.array([3, 0, 9]), CLASSES.task, CLASSES.network.outputs, 3)
    expected = np.zeros((3, 10), np.float32)
    expected[0, 3] = expected[1, 0] = expected[2, 9] = 1
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(
        encode_targets(np.array([3.0, 0.0]), CLASSES.task, CLASSES.network.outputs, 2), expected[:2]
    )


@pytest.mark.parametrize("label", [10, -1])
def test_encode_targets_names_the_label_out_of_range_and_its_sample(label):
    with pytest.raises(DataError) as info:
        encode_targets(np.array([0, 1, label, 2]), CLASSES.task, CLASSES.network.outputs, 4)
    message = one_line(info)
    assert f"label {label} of sample 2" in message and "0..9" in message


@pytest.mark.parametrize("y", [np.array([0, 1.5, 2]), np.array([[0], [1], [2]])])
def test_encode_targets_refuses_labels_that_are_not_integers(y):
    with pytest.raises(DataError, match="integers"):
        encode_targets(y, CLASSES.task, CLASSES.network.outputs, 3)


def test_encode_targets_refuses_the_wrong_count():
    with pytest.raises(DataError) as info:
        encode_targets(np.array([0, 1]), CLASSES.task, CLASSES.network.outputs, 3, "test labels")
    message = one_line(info)
    assert message.startswith("test labels:") and "2 labels for 3 samples" in message


def test_encode_targets_refuses_nan_and_text():
    with pytest.raises(DataError, match="label 1"):
        encode_targets(np.array([0.0, np.nan]), CLASSES.task, CLASSES.network.outputs, 2)
    with pytest.raises(DataError, match="expected numbers"):
        encode_targets(np.array(["0", "1"]), CLASSES.task, CLASSES.network.outputs, 2)


def test_encode_targets_for_regression():
    out = encode_targets(np.array([0.5, -2.0, 3.25]), regression(1).task, regression(1).network.outputs, 3)
    assert out.dtype == np.float32 and out.shape == (3, 1)
    np.testing.assert_array_equal(out[:, 0], [0.5, -2.0, 3.25])
    y = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(encode_targets(y, regression(3).task, regression(3).network.outputs, 2), y)
    with pytest.raises(DataError) as info:
        encode_targets(np.zeros((2, 2)), regression(3).task, regression(3).network.outputs, 2)
    message = one_line(info)
    assert "2 targets per sample" in message and "3 outputs" in message


def test_encode_targets_single_sigmoid_output_gives_a_column():
    out = encode_targets(np.array([0, 1, 1, 0]), BINARY.task, BINARY.network.outputs, 4)
    assert out.shape == (4, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], [0, 1, 1, 0])
    with pytest.raises(DataError, match="label 2 of sample 1"):
        encode_targets(np.array([0, 2]), BINARY.task, BINARY.network.outputs, 2)


# --- review findings --------------------------------------------------------------------------


def test_a_single_label_value_is_refused():
    with pytest.raises(qmtik.DataError, match="one label per sample, got a single value"):
        encode_targets(np.array(3), "classification", 10, 1)


def test_a_csv_with_a_bom_keeps_its_first_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbf1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(read_inputs(path), [[1, 2, 3], [4, 5, 6]])


def test_a_first_row_without_numbers_or_empty_cells_is_a_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    np.testing.assert_array_equal(read_inputs(path), [[1, 2, 3]])
    path.write_text("1,x,3\n4,5,6\n")  # a number: a sample, with a bad cell
    with pytest.raises(qmtik.DataError, match="line 1: 'x' is not a number"):
        read_inputs(path)
    path.write_text("1,2,3\n4,x,6\n")
    with pytest.raises(qmtik.DataError, match="line 2: 'x' is not a number"):
        read_inputs(path)


def test_labels_are_only_for_an_npy_of_inputs_and_other_files_are_named():
    from qmtik.data import load_named_or_path

    with pytest.raises(DataError, match="labels y.npy: only for an .npy or IDX file of inputs; digits brings its own"):
        load_named_or_path("digits", "y.npy")
    with pytest.raises(DataError, match="data file x.txt: expected a named data set"):
        load_named_or_path("x.txt")


@pytest.mark.parametrize("spec", ["digits:train", "fashion-mnist"])
def test_labels_with_a_named_data_set_are_refused(spec):
    with pytest.raises(DataError) as info:
        load_named_or_path(spec, "y.npy")
    assert one_line(info) == f"labels y.npy: only for an .npy or IDX file of inputs; {spec} brings its own labels"


def test_labels_with_an_npz_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3)), y=np.zeros(2))
    np.save(tmp_path / "y.npy", np.ones(2))
    for load in (load_named_or_path, load_arrays):
        with pytest.raises(DataError) as info:
            load(str(tmp_path / "d.npz"), str(tmp_path / "y.npy"))
        assert one_line(info).startswith(f"labels {tmp_path / 'y.npy'}: only for an .npy or IDX file of inputs; ")
        assert "d.npz brings its own labels" in one_line(info)


def test_a_text_file_as_data_says_what_is_accepted(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1,2\n")
    for labels in ("", str(tmp_path / "y.npy")):
        with pytest.raises(DataError) as info:
            load_named_or_path(str(path), labels)
        message = one_line(info)
        assert message.startswith(f"data file {path}: expected ") and "an .npz (arrays x and y)" in message
        assert "a .csv" in message and "qmtik-bin" in message
        with pytest.raises(DataError) as info:
            load_arrays(path, labels)
        message = one_line(info)
        assert message.startswith(f"data file {path}: expected an .npz with arrays x and y, or an .npy of inputs")


def test_a_csv_with_labels_beside_it_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2\n")
    with pytest.raises(DataError) as info:
        load_named_or_path(str(path), "y.npy")
    assert one_line(info) == f"labels y.npy: only for an .npy or IDX file of inputs; {path} brings its own labels"


@pytest.mark.parametrize(
    "spec, labels, name",
    [
        ("digits", "", "digits:test"),
        ("digits:train", "", "digits:train"),
        ("fashion-mnist:test", "", "fashion-mnist:test"),
        ("data/d.npz", "", "data/d.npz"),
        ("x.npy", "y.npy", "x.npy with labels y.npy"),
    ],
)
def test_data_name_names_what_load_named_or_path_reads(spec, labels, name):
    assert data_name(spec, labels) == name


def test_data_name_goes_into_the_check_errors():
    x, y = load_named_or_path("digits")
    with pytest.raises(DataError) as info:
        check_inputs(x, 65, f"{data_name('digits')} inputs")
    assert one_line(info).startswith("digits:test inputs: 64 features per sample")
    with pytest.raises(DataError) as info:
        encode_targets(y[:-1], "classification", 10, len(x), f"{data_name('digits')} labels")
    assert one_line(info) == f"digits:test labels: {len(y) - 1} labels for {len(x)} samples"


# --- every format through load_file and the config ---------------------------------------------


def small_set(tmp_path):
    """Six 4-pixel samples of 3 classes in every format qmtik reads; returns (x, y, paths)."""
    from qmtik.data_formats import idx_bytes, one_hot_targets, qmtik_bin_bytes

    x = (np.arange(24).reshape(6, 4) * 11 % 256).astype(np.uint8)
    y = np.array([0, 1, 2, 2, 1, 0])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "x-idx2-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
    (tmp_path / "y-idx1-ubyte").write_bytes(idx_bytes(y.astype(np.uint8)))
    rows = "\n".join(",".join(map(str, [*r, c])) for r, c in zip(x.tolist(), y.tolist()))
    (tmp_path / "d.csv").write_text("p1,p2,p3,p4,class\n" + rows + "\n")
    codes = (x.astype(np.int16) - 128).astype(np.int8)
    (tmp_path / "d.bin").write_bytes(qmtik_bin_bytes(codes, one_hot_targets(y, 3)))
    return x, y


@pytest.mark.parametrize(
    "data, labels",
    [
        ("d.npz", ""),
        ("x.npy", "y.npy"),
        ("x-idx2-ubyte.gz", "y-idx1-ubyte"),
        ("x.npy", "y-idx1-ubyte"),
        ("d.csv", ""),
        ("d.bin", ""),
    ],
)
def test_load_file_reads_every_format_alike(tmp_path, data, labels):
    from qmtik.data import load_file

    x, y = small_set(tmp_path)
    got_x, got_y = load_file(tmp_path / data, tmp_path / labels if labels else "", inputs=4, outputs=3)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_a_qmtik_bin_file_needs_the_network_shape(tmp_path):
    from qmtik.data import load_file

    small_set(tmp_path)
    with pytest.raises(DataError) as info:
        load_file(tmp_path / "d.bin")
    assert "inputs and outputs" in one_line(info)
    with pytest.raises(DataError) as info:  # 6 samples of 7 bytes are not samples of 4 + 4
        load_file(tmp_path / "d.bin", inputs=4, outputs=4)
    assert "42 bytes" in one_line(info)


def test_an_idx_file_of_inputs_needs_labels(tmp_path):
    from qmtik.data import load_file

    small_set(tmp_path)
    with pytest.raises(DataError) as info:
        load_file(tmp_path / "x-idx2-ubyte.gz")
    assert "needs a labels file" in one_line(info)


def test_training_reads_a_csv_named_in_the_config(tmp_path):
    from qmtik.data import load_data

    x, y = small_set(tmp_path)
    config = Config(
        network=qmtik.NetworkConfig(inputs=4, hidden=[3], outputs=3),
        data=qmtik.DataConfig(dataset="", train=str(tmp_path / "d.csv"), test=str(tmp_path / "d.bin")),
    )
    (got_x, got_y), (test_x, test_y) = load_data(config)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(test_y, y)
    np.testing.assert_array_equal(test_x, x)


def test_mnist_not_yet_downloaded_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    assert one_line(info) == "data set mnist: not downloaded yet; fetch it with 'qmtik data get mnist'"


@pytest.mark.parametrize("value", [1e300, -3.5e38, np.longdouble("1e400")])
def test_inputs_beyond_float32_are_refused_naming_the_sample(value):
    """The model and the C API take float32 inputs: a float64 of 1e300 would become inf there
    (numpy's overflow warning in the C check; predict took it silently)."""
    import warnings

    x = np.zeros((3, 4), dtype=np.longdouble if isinstance(value, np.longdouble) else np.float64)
    x[2, 1] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as info:
            check_inputs(x, 4, "data file big.npz: inputs")
    assert one_line(info).startswith("data file big.npz: inputs: value ") and "sample 2 is beyond float32" in one_line(
        info
    )
    assert check_inputs(np.full((1, 4), 3.4e38), 4).shape == (1, 4)
    assert check_inputs(np.full((1, 4), 2**62, dtype=np.int64), 4).shape == (1, 4)
    assert check_inputs(np.full((1, 4), 60000, dtype=np.float16), 4).shape == (1, 4)


@pytest.mark.parametrize(
    "names, fragment",
    [
        (list("abcdefghia"), "class name 10 'a' is also class name 1"),
        (["a\nb"] + list("bcdefghij"), "class name 1 'a\\nb' holds a control character"),
        (list("abcdefghi") + ["tab\t"], "class name 10 'tab\\t' holds a control character"),
        (["x" * 256] + list("abcdefghi"), "is 256 bytes of UTF-8; 1 to 255 are allowed"),
        (list("abc"), "3 class names for 10 classes"),
        ([], "none given, the network has 10 classes"),
    ],
)
def test_class_names_to_train_with_follow_the_model_files_rule(names, fragment):
    """Training with names the checkpoint then refuses (duplicates) would lose the run."""
    from qmtik.data import check_class_names

    with pytest.raises(DataError) as info:
        check_class_names(names, Config())
    assert one_line(info).startswith("class names: ") and fragment in one_line(info)
    assert check_class_names(list("abcdefghij"), Config()) == tuple("abcdefghij")


def test_the_data_loaders_refuse_an_npy_declaring_8_tib_by_its_header(tmp_path):
    """A 17 KB .npy whose header declares shape (2**40,): numpy tried to allocate 8 TiB."""
    import io

    from qmtik.data import load_file, read_inputs

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    (tmp_path / "x.npy").write_bytes(header.getvalue() + bytes(16384))
    np.save(tmp_path / "y.npy", np.zeros(3))
    for call in (lambda: load_file(tmp_path / "x.npy", tmp_path / "y.npy"), lambda: read_inputs(tmp_path / "x.npy")):
        with pytest.raises(DataError, match=r"needs 8,796,093,022,208 bytes, it holds 16,384$"):
            call()


def test_a_5_gb_csv_is_refused_by_its_size(tmp_path):
    from qmtik.data import load_file

    with open(tmp_path / "big.csv", "wb") as f:
        f.truncate(5 << 30)  # sparse; was: MemoryError
    with pytest.raises(DataError, match="5,368,709,120 bytes, more than the 4,294,967,296 qmtik reads"):
        load_file(tmp_path / "big.csv")
