"""Data file formats: IDX, CSV and the C library's qmtik-bin, read, written and refused."""

import gzip

import numpy as np
import pytest

from qmtik import DataError
from qmtik.data_formats import (
    format_of,
    idx_bytes,
    labels_of_targets,
    one_hot_targets,
    qmtik_bin_bytes,
    read_csv,
    read_csv_table,
    read_idx,
    read_qmtik_bin,
)


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "name, kind",
    [
        ("d.npz", "npz"),
        ("x.npy", "npy"),
        ("mnist_784.csv", "csv"),
        ("t.csv.gz", "csv"),
        ("train-images-idx3-ubyte.gz", "idx"),
        ("train-labels-idx1-ubyte", "idx"),
        ("t10k-images.idx3-ubyte", "idx"),
        ("a.idx", "idx"),
        ("mnist_train.bin", "qmtik-bin"),
        ("x.txt", None),
        ("x.npy.gz", None),
        ("model.qmt", None),
    ],
)
def test_format_of_reads_the_name(name, kind):
    assert format_of(name) == kind


# --- IDX files ---------------------------------------------------------------------------------


def idx_with(array: np.ndarray, magic=(0, 0, 8)) -> bytes:
    header = bytes([*magic, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return (np.arange(2 * 3 * 5) * 7 % 256).astype(np.uint8).reshape(2, 3, 5)  # odd, asymmetric shape


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_reads_a_good_file(tmp_path, images, gz):
    blob = idx_bytes(images)
    path = tmp_path / ("images.idx.gz" if gz else "images.idx")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, images)


def test_read_idx_reads_one_dimensional_labels(tmp_path):
    labels = np.array([3, 0, 9, 1], dtype=np.uint8)
    path = tmp_path / "labels.idx"
    path.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(path), labels)


@pytest.mark.parametrize("magic", [(1, 0, 8), (0, 0, 0x0A), (0, 1, 8)])
def test_read_idx_refuses_a_bad_magic_number(tmp_path, images, magic):
    path = tmp_path / "bad.idx"
    path.write_bytes(idx_with(images, magic))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = one_line(info)
    assert str(path) in message and "magic" in message


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_refuses_a_truncated_file(tmp_path, images, gz):
    blob = idx_bytes(images)[:-4]  # header 16 bytes + 30 - 4 = 42 bytes
    path = tmp_path / ("cut.idx.gz" if gz else "cut.idx")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = one_line(info)
    assert str(path) in message
    assert "46" in message and "42" in message  # bytes needed, bytes there
    assert "(2, 3, 5)" in message


def test_read_idx_refuses_dimensions_that_do_not_match_the_data(tmp_path, images):
    blob = bytearray(idx_bytes(images))
    blob[4:8] = (3).to_bytes(4, "big")  # claims 3 images, holds 2
    path = tmp_path / "dims.idx"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = one_line(info)
    assert "(3, 3, 5)" in message and "61" in message and "46" in message


def test_read_idx_refuses_a_truncated_header(tmp_path):
    path = tmp_path / "head.idx"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2]))
    with pytest.raises(DataError, match="truncated header"):
        read_idx(path)


def test_read_idx_refuses_dimensions_whose_product_overflows_int64(tmp_path):
    # 2**16 to the 4th is 2**64: np.prod wraps it to 0 bytes, which this empty body would match
    path = tmp_path / "huge.idx"
    path.write_bytes(bytes([0, 0, 8, 4]) + (2**16).to_bytes(4, "big") * 4)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "(65536, 65536, 65536, 65536)" in one_line(info) and str(path) in one_line(info)


@pytest.mark.parametrize("name, blob", [("missing.idx", None), ("broken.idx.gz", b"\x1f\x8b not gzip")])
def test_read_idx_refuses_unreadable_files(tmp_path, name, blob):
    path = tmp_path / name
    if blob is not None:
        path.write_bytes(blob)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in one_line(info)


def test_read_idx_reads_other_element_types_big_endian(tmp_path):
    values = np.array([[1.5, -2.25], [1e6, -0.0]], dtype=">f4")
    path = tmp_path / "floats.idx"
    path.write_bytes(bytes([0, 0, 0x0D, 2]) + (2).to_bytes(4, "big") * 2 + values.tobytes())
    out = read_idx(path)
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values.astype(np.float32))
    shorts = np.array([-300, 7, 32767], dtype=">i2")
    path.write_bytes(bytes([0, 0, 0x0B, 1]) + (3).to_bytes(4, "big") + shorts.tobytes())
    np.testing.assert_array_equal(read_idx(path), [-300, 7, 32767])


def test_idx_bytes_round_trips_and_refuses_other_types(tmp_path, images):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(path), images)
    assert idx_bytes(images) == idx_with(images)
    with pytest.raises(DataError):
        idx_bytes(images.astype(np.int16))


# --- CSV -------------------------------------------------------------------------------------------


def write(path, text):
    path.write_text(text)
    return path


def test_read_csv_takes_the_last_column_as_label_and_skips_a_header(tmp_path):
    path = write(tmp_path / "m.csv", "pixel1,pixel2,pixel3,class\n0,255,3,'5'\n7,8,9,'0'\n")
    x, y = read_csv(path)
    np.testing.assert_array_equal(x, [[0, 255, 3], [7, 8, 9]])
    np.testing.assert_array_equal(y, [5, 0])


def test_read_csv_label_column_is_configurable(tmp_path):
    path = write(tmp_path / "m.csv", "1,10,20\n0,30,40\n")
    x, y = read_csv(path, label_column=0)
    np.testing.assert_array_equal(y, [1, 0])
    np.testing.assert_array_equal(x, [[10, 20], [30, 40]])
    x, y = read_csv(path, label_column=-2)
    np.testing.assert_array_equal(y, [10, 30])
    np.testing.assert_array_equal(x, [[1, 20], [0, 40]])
    with pytest.raises(DataError) as info:
        read_csv(path, label_column=3)
    assert "label column 3" in one_line(info) and "3 columns" in one_line(info)


def test_read_csv_reads_gzip(tmp_path):
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress(b"a,b,label\n1,2,1\n3,4,0\n"))
    x, y = read_csv(path)
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("a,b,c\n1,2,3\n4,5\n6,7,8\n", 3, "2 columns, expected 3"),
        ("1,2,3\n4,5,6\n7,x,9\n", 3, "'x' is not a number"),
        ("1,2,3\n\n4,5,6,7\n", 3, "4 columns, expected 3"),
    ],
)
def test_read_csv_names_the_bad_line(tmp_path, text, line, problem):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as info:
        read_csv(path)
    message = one_line(info)
    assert f"{path}, line {line}: {problem}" in message


@pytest.mark.parametrize("text", ["", "\n\n", "a,b,c\n"])
def test_read_csv_refuses_a_file_without_samples(tmp_path, text):
    path = write(tmp_path / "empty.csv", text)
    with pytest.raises(DataError) as info:
        read_csv(path)
    assert "no samples" in one_line(info)


def test_read_csv_keeps_nan_for_the_checks_to_name(tmp_path):
    table = read_csv_table(write(tmp_path / "n.csv", "1,nan,3\n4,5,inf\n"))
    assert np.isnan(table[0, 1]) and np.isinf(table[1, 2])


def test_read_csv_refuses_a_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        read_csv(tmp_path / "nope.csv")
    assert "nope.csv: not found" in one_line(info)


@pytest.mark.parametrize("reader", [read_csv, read_idx])
def test_a_corrupt_gzip_stream_is_refused_naming_the_file(tmp_path, reader):
    blob = gzip.compress(bytes(range(256)) * 64)
    path = tmp_path / ("d.csv.gz" if reader is read_csv else "d-idx1-ubyte.gz")
    path.write_bytes(blob[:20] + b"\xff" * 20 + blob[40:])  # zlib.error, not BadGzipFile
    with pytest.raises(DataError) as info:
        reader(path)
    assert f"{path}: not a readable gzip file" in one_line(info)


BAD_CELLS = ["", "0x10", " ", "\x00", "1e", "--1"]


@pytest.mark.parametrize("cell", BAD_CELLS)
@pytest.mark.parametrize("row", [1, 4])
def test_a_bad_cell_in_any_row_is_an_error_naming_its_line(tmp_path, cell, row):
    """The first row is a header only when none of its cells is a number or empty: a first row
    with a bad cell among numbers is a sample with an error, never a sample lost as a header."""
    rows = [f"{i},{i + 1},{i % 2}" for i in range(5)]
    rows[row - 1] = f"{row},{cell},1"
    path = write(tmp_path / "bad.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        read_csv(path)
    assert f"{path}, line {row}: {cell.strip()!r} is not a number" in one_line(info)  # cells are stripped
    if row == 1:
        assert "not a header" in one_line(info)


@pytest.mark.parametrize("first", ["a,b,c", "pixel1,pixel2,class", "'x',\"y\",z"])
def test_a_first_row_without_numbers_or_empty_cells_is_a_header(tmp_path, first):
    x, y = read_csv(write(tmp_path / "h.csv", first + "\n1,2,0\n3,4,1\n"))
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])


@pytest.mark.parametrize("first", ["1,x,3", "0,1,label", "a,,c"])
def test_a_first_row_with_a_number_or_an_empty_cell_is_a_sample(tmp_path, first):
    path = write(tmp_path / "h.csv", first + "\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError) as info:
        read_csv(path)
    assert f"{path}, line 1: " in one_line(info)


def test_csv_lines_end_only_at_line_breaks(tmp_path):
    """A form feed inside the header is not a line break that would hide the first sample."""
    path = write(tmp_path / "f.csv", "a,b,c\x0c1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match="line 1: "):
        read_csv(path)
    table = read_csv_table(write(tmp_path / "r.csv", "a,b\r1,2\r\n3,4\r"))
    np.testing.assert_array_equal(table, [[1, 2], [3, 4]])


# --- qmtik-bin -------------------------------------------------------------------------------------


def test_qmtik_bin_round_trips_pixels_and_one_hot_targets(tmp_path):
    pixels = np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)
    codes = (pixels.astype(np.int16) - 128).astype(np.int8)
    targets = one_hot_targets([2, 0], 4)
    np.testing.assert_array_equal(targets, [[0, 0, 127, 0], [127, 0, 0, 0]])
    path = tmp_path / "s.bin"
    path.write_bytes(qmtik_bin_bytes(codes, targets))
    assert path.stat().st_size == 2 * (3 + 4)
    assert path.read_bytes()[:7] == bytes([0x80, 0x00, 0x7F, 0, 0, 127, 0])  # pixel - 128, then targets
    got_pixels, got_targets = read_qmtik_bin(path, 3, 4)
    np.testing.assert_array_equal(got_pixels, pixels)
    np.testing.assert_array_equal(got_targets, targets)
    np.testing.assert_array_equal(labels_of_targets(got_targets, path), [2, 0])


def test_qmtik_bin_refuses_a_length_that_is_not_whole_samples(tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(bytes(15))
    with pytest.raises(DataError) as info:
        read_qmtik_bin(path, 3, 4)
    message = one_line(info)
    assert str(path) in message and "15 bytes" in message and "3 input and 4 target" in message
    path.write_bytes(b"")
    with pytest.raises(DataError) as info:
        read_qmtik_bin(path, 3, 4)
    assert "no samples" in one_line(info)


def test_targets_that_are_not_one_hot_are_refused(tmp_path):
    with pytest.raises(DataError) as info:
        labels_of_targets(np.array([[0, 127], [127, 127]], dtype=np.int8), "s.bin")
    assert "sample 1" in one_line(info)


# --- bounded (issue 15): a gzip inflates no further than its header declares --------------------


def peak_bytes(call) -> int:
    """The most memory Python allocated while call() ran (tracemalloc: bytes, bytearrays, arrays)."""
    import tracemalloc

    tracemalloc.start()
    try:
        call()
    except DataError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_a_gzip_idx_bomb_is_refused_after_its_declared_bytes(tmp_path):
    """A small gzip whose header declares 10 labels but which inflates to 200 MB: it was
    inflated whole (2.6 GB from 1.27 MB) before the 16-byte header was read."""
    path = tmp_path / "bomb-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big"))
        for _ in range(200):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 400_000
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert one_line(info) == f"IDX file {path}: dimensions (10,) need 18 bytes, the file has more"
    assert peak_bytes(lambda: read_idx(path)) < 4 << 20


def test_a_gzip_idx_declaring_more_than_its_stream_can_hold_is_refused_uninflated(tmp_path):
    path = tmp_path / "claims-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert one_line(info).startswith(
        f"IDX file {path}: dimensions (60000, 28, 28) need 47040016 bytes, the file has at most "
    )
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 2]) + (2**31).to_bytes(4, "big") * 2))
    with pytest.raises(
        DataError, match=r"need 4,611,686,018,427,387,916 bytes, more than the 4,294,967,296 qmtik reads"
    ):
        read_idx(path)


def test_a_raw_idx_is_checked_against_its_size_before_its_body_is_read(tmp_path):
    path = tmp_path / "big.idx"
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big"))
        f.truncate(1 << 30)  # 1 GB, sparse: was read whole to report the length
    with pytest.raises(DataError, match=r"dimensions \(10,\) need 18 bytes, the file has 1073741824$"):
        read_idx(path)
    assert peak_bytes(lambda: read_idx(path)) < 1 << 20


@pytest.mark.parametrize("name", ["d.csv", "d.bin", "d.idx", "d.csv.gz"])
def test_a_link_to_dev_zero_is_refused_unread(tmp_path, name):
    (tmp_path / name).symlink_to("/dev/zero")  # was: MemoryError
    reader = {"d.csv": read_csv, "d.csv.gz": read_csv, "d.idx": read_idx, "d.bin": lambda p: read_qmtik_bin(p, 3, 2)}
    with pytest.raises(DataError, match="a device; qmtik reads regular files, FIFOs and pipes$"):
        reader[name](tmp_path / name)


def test_an_idx_of_255_dimensions_is_named_in_a_short_line(tmp_path):
    path = tmp_path / "many.idx"
    path.write_bytes(bytes([0, 0, 8, 255]) + (3_000_000_000).to_bytes(4, "big") * 255)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert len(one_line(info)) < 300 and "(3000000000, 3000000000" in one_line(info)
