"""Parsing what qmtik did not write: every way Python's readers fail ends as one line of ours."""

import gzip
import io
import zipfile

import numpy as np
import pytest

from conftest import hostile_npz
from qmtik import CheckpointError, ConfigError, DataError
from qmtik.parsing import gunzip, load_json, load_npy, load_npz, load_toml, one_line

DEEP = 100_000
BIG = "1" * 5000  # beyond Python's int-digit limit (4300 by default)


def message(info) -> str:
    text = str(info.value)
    assert "\n" not in text and len(text) < 400, text
    return text


# --- JSON and TOML -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[" * DEEP + "]" * DEEP, "nested too deeply"),
        ('{"a": ' * DEEP + "1" + "}" * DEEP, "nested too deeply"),
        ('{"epochs": ' + BIG + "}", "an integer of more than 4300 digits"),
        ('{"epochs": -' + BIG + "}", "an integer of more than 4300 digits"),
        ('{"epochs": 1,', "not valid JSON"),
    ],
)
def test_load_json_ends_every_failure_in_one_line(text, problem):
    with pytest.raises(CheckpointError) as info:
        load_json(text, "checkpoint c.npz: history", CheckpointError)
    assert message(info).startswith("checkpoint c.npz: history: ") and problem in message(info)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a = " + "[" * DEEP + "]" * DEEP, "nested too deeply"),
        ("a = " + "{b = " * DEEP + "1" + "}" * DEEP, "nested too deeply"),
        ("[training]\nepochs = " + BIG, "an integer of more than 4300 digits"),
        ("[training\n", "not valid TOML"),
    ],
)
def test_load_toml_ends_every_failure_in_one_line(text, problem):
    with pytest.raises(ConfigError) as info:
        load_toml(text, "config file c.toml", ConfigError)
    assert message(info).startswith("config file c.toml: ") and problem in message(info)


def test_lenient_toml_gives_none_for_text_that_is_not_toml_only():
    assert load_toml("v = a/b.npz", "override x", ConfigError, lenient=True) is None
    assert load_toml("v = [1, 2]", "override x", ConfigError, lenient=True) == {"v": [1, 2]}
    for text in ("v = " + "[" * DEEP + "]" * DEEP, "v = " + BIG):
        with pytest.raises(ConfigError, match="override x: "):
            load_toml(text, "override x", ConfigError, lenient=True)


def test_values_within_the_limits_are_read():
    assert load_json('{"a": [1, 2.5, "x"], "n": ' + "9" * 4300 + "}", "x", CheckpointError)["n"] == int("9" * 4300)
    value, depth = load_toml("a = " + "[" * 50 + "]" * 50, "x", ConfigError)["a"], 1
    while value:
        value, depth = value[0], depth + 1
    assert depth == 50


def test_a_long_library_message_is_cut_to_one_short_line():
    text = one_line(ValueError("bad\n" + "x" * 10_000))
    assert "\n" not in text and text.startswith("bad x") and len(text) < 250


# --- gzip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "not gzip"])
def test_gunzip_refuses_a_damaged_stream(damage):
    blob = gzip.compress(b"1,2,3\n" * 1000)
    blob = {
        "corrupt": blob[:20] + b"\xff" * 20 + blob[40:],
        "truncated": blob[: len(blob) // 2],
        "not gzip": b"1,2,3\n",
    }[damage]
    with pytest.raises(DataError) as info:
        gunzip(blob, "data file d.csv.gz", DataError)
    assert message(info).startswith("data file d.csv.gz: not a readable gzip file")


# --- .npz and .npy -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["encrypted", "method", "deflate"])
def test_load_npz_refuses_a_hostile_member(tmp_path, how):
    path = tmp_path / "d.npz"
    hostile_npz(path, how, x=np.zeros((3, 4)), y=np.arange(3))
    with pytest.raises(DataError) as info:
        load_npz(path, f"data file {path}", DataError)
    assert message(info).startswith(f"data file {path}: cannot be read as an .npz archive")


def test_load_npz_refuses_an_array_header_that_claims_terabytes(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue())
    with pytest.raises(CheckpointError) as info:
        load_npz(tmp_path / "d.npz", "checkpoint d.npz", CheckpointError)
    assert message(info) == (
        "checkpoint d.npz: member 'x': an array of shape (1000000000000,) and float64 needs "
        "8,000,000,000,000 bytes, it holds 0"
    )


def test_load_npz_reads_the_keys_asked_for(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(3), y=np.ones(2), z=np.zeros(1))
    arrays = load_npz(tmp_path / "d.npz", "d", DataError, keys=("x", "y", "w"))
    assert sorted(arrays) == ["x", "y"]
    np.testing.assert_array_equal(arrays["x"], [0, 1, 2])
    assert sorted(load_npz(tmp_path / "d.npz", "d", DataError)) == ["x", "y", "z"]


def test_an_npy_is_not_an_npz_and_an_npz_not_an_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3))
    np.savez(tmp_path / "b.npz", x=np.arange(3))
    with pytest.raises(DataError, match="a single NumPy array"):
        load_npz(tmp_path / "a.npy", "d", DataError)
    with pytest.raises(DataError, match="an .npz archive, not a single NumPy array"):
        load_npy(tmp_path / "b.npz", "d", DataError)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy", "d", DataError), [0, 1, 2])


@pytest.mark.parametrize("loader", [load_npz, load_npy])
def test_a_missing_file_or_a_directory_is_named(tmp_path, loader):
    with pytest.raises(DataError, match="d: not found"):
        loader(tmp_path / "nope", "d", DataError)
    with pytest.raises(DataError, match="d: is a directory"):
        loader(tmp_path, "d", DataError)


# --- bounded inputs (issue 15): declared sizes, devices, FIFOs ----------------------------------


def npy_claiming(shape, descr="<f8") -> bytes:
    """An .npy whose header declares shape but which holds 16 KB of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue() + bytes(16384)


def test_an_npy_declaring_8_tib_is_refused_by_its_header(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(npy_claiming((2**40,)))  # 17 KB; numpy tried to allocate 8 TiB
    with pytest.raises(DataError) as info:
        load_npy(path, "d", DataError)
    assert (
        message(info)
        == "d: an array of shape (1099511627776,) and float64 needs 8,796,093,022,208 bytes, it holds 16,384"
    )


def test_an_npz_member_declaring_8_tib_is_refused_before_inflating(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_claiming((2**40,)))
    with pytest.raises(DataError) as info:
        load_npz(tmp_path / "d.npz", "d", DataError)
    assert message(info).startswith("d: member 'x': an array of shape (1099511627776,) and float64 needs")


def test_a_member_claiming_more_than_deflate_can_hold_is_refused(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros(1000))
    blob = bytearray((tmp_path / "d.npz").read_bytes())
    central = blob.index(b"PK\x01\x02")
    blob[central + 24 : central + 28] = (10**9).to_bytes(4, "little")  # uncompressed size, 1 GB
    (tmp_path / "d.npz").write_bytes(bytes(blob))
    with pytest.raises(DataError) as info:
        load_npz(tmp_path / "d.npz", "d", DataError)
    assert "member 'x' claims 1,000,000,000 bytes from" in message(info)


def test_a_device_is_refused_unread(tmp_path):
    (tmp_path / "zero.npy").symlink_to("/dev/zero")  # was: MemoryError
    for loader in (load_npy, load_npz):
        with pytest.raises(DataError, match="^d: a device; qmtik reads regular files, FIFOs and pipes$"):
            loader(tmp_path / "zero.npy", "d", DataError)


def test_a_fifo_is_read_up_to_the_stream_limit(tmp_path, monkeypatch):
    import os
    import threading

    from qmtik.parsing import read_input

    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)

    def feed(size):
        with open(fifo, "wb") as f:
            try:
                f.write(b"1" * size)
            except BrokenPipeError:
                pass

    monkeypatch.setenv("QMTIK_MAX_STREAM_BYTES", "1000")
    thread = threading.Thread(target=feed, args=(999,))
    thread.start()
    assert read_input(fifo, "d", DataError) == b"1" * 999
    thread.join()
    thread = threading.Thread(target=feed, args=(100_000,))
    thread.start()
    with pytest.raises(DataError) as info:
        read_input(fifo, "d", DataError)
    thread.join()
    assert (
        message(info)
        == "d: more than 1,000 bytes, more than the 1,000 qmtik reads (raise it with QMTIK_MAX_STREAM_BYTES=BYTES)"
    )


def test_a_file_past_the_read_limit_is_refused_by_its_size(tmp_path, monkeypatch):
    from qmtik.parsing import read_input

    path = tmp_path / "big.csv"
    with open(path, "wb") as f:
        f.truncate(5 << 30)  # 5 GB, sparse; was: MemoryError
    with pytest.raises(DataError) as info:
        read_input(path, "d", DataError)
    assert message(info) == (
        "d: 5,368,709,120 bytes, more than the 4,294,967,296 qmtik reads (raise it with QMTIK_MAX_READ_BYTES=BYTES)"
    )
    monkeypatch.setenv("QMTIK_MAX_READ_BYTES", "lots")
    with pytest.raises(ConfigError) as info:
        read_input(path, "d", DataError)
    assert message(info) == (
        "environment variable QMTIK_MAX_READ_BYTES: got 'lots'; allowed: an integer from 1 to 9223372036854775807"
    )


@pytest.mark.parametrize("value", ["lots", "-1", "0", "1e9", "²", "1.5", "9" * 40, "0x10"])
def test_every_max_variable_refuses_a_bad_value_in_the_same_line(monkeypatch, value):
    """One parser (parsing.env_count) reads the byte limits here and limits.py's network limits."""
    from qmtik import limits
    from qmtik.parsing import READ_LIMIT, STREAM_LIMIT, limit

    for name, read in [
        (READ_LIMIT[0], lambda: limit(READ_LIMIT)),
        (STREAM_LIMIT[0], lambda: limit(STREAM_LIMIT)),
        ("QMTIK_MAX_MACS", limits.in_force),
        ("QMTIK_MAX_PARAMETERS", limits.in_force),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError) as info:
            read()
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        assert message(info) == f"environment variable {name}: got {shown}; allowed: an integer from 1 to {2**63 - 1}"
        monkeypatch.delenv(name)


def test_every_max_variable_reads_underscores_and_blanks_alike(monkeypatch):
    from qmtik import limits
    from qmtik.parsing import READ_LIMIT, env_count, limit

    monkeypatch.setenv("QMTIK_MAX_READ_BYTES", " 16_777_216 ")
    monkeypatch.setenv("QMTIK_MAX_MACS", " 16_777_216 ")
    assert limit(READ_LIMIT) == limits.in_force()["macs"][0] == 16_777_216
    monkeypatch.setenv("QMTIK_MAX_READ_BYTES", "  ")
    assert limit(READ_LIMIT) == 4 << 30 and env_count("QMTIK_MAX_READ_BYTES") is None
    monkeypatch.setenv("QMTIK_MAX_LAYERS", "256")
    with pytest.raises(
        ConfigError,
        match=r"^environment variable QMTIK_MAX_LAYERS: got '256'; allowed: an integer "
        r"from 1 to 255 \(the \.qmt format's most\)$",
    ):
        limits.in_force()


def test_gunzip_stops_at_the_read_limit(monkeypatch):
    monkeypatch.setenv("QMTIK_MAX_READ_BYTES", "1000")
    assert gunzip(gzip.compress(b"x" * 1000), "d", DataError) == b"x" * 1000
    with pytest.raises(DataError, match="^d: inflates to more, more than the 1,000 qmtik reads"):
        gunzip(gzip.compress(b"x" * 1001), "d", DataError)


def test_text_past_unicode_and_structured_arrays_are_refused(tmp_path):
    """Found by benchmarks/hostile.py: a '<U' array with a code point past U+10FFFF made numpy's
    str() raise SystemError; a structured dtype is no array of numbers or text."""
    bad = npy_claiming((1,), "<U1")[:-16384] + (0x110000).to_bytes(4, "little")
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("config.npy", bad)
    with pytest.raises(CheckpointError, match="config': holds text that is not Unicode"):
        load_npz(tmp_path / "d.npz", "c", CheckpointError)
    np.save(tmp_path / "s.npy", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i2")]))
    with pytest.raises(DataError, match="holds an array of .*, not of plain numbers or text$"):
        load_npy(tmp_path / "s.npy", "d", DataError)
