"""Atomic writes: the previous file survives any failure; permissions and paths are ordinary."""
import os

import pytest

from qmtik.files import OutputError, check_writable, write_atomic, write_json


def test_write_atomic_replaces_the_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    write_atomic(path, lambda f: f.write(b"new contents"))
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("existed", [True, False])
def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path, existed):
    path = tmp_path / "f.bin"
    if existed:
        path.write_bytes(b"old")

    def failing(f):
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(path, failing)
    assert [p.name for p in tmp_path.iterdir()] == (["f.bin"] if existed else [])
    if existed:
        assert path.read_bytes() == b"old"


def test_write_atomic_cleans_up_on_keyboard_interrupt(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def interrupted(f):
        f.write(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, interrupted)
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1




def test_a_new_file_gets_the_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "m.qmt", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "m.qmt").stat().st_mode & 0o777 == 0o644


def test_a_missing_folder_or_a_directory_is_named_not_the_temporary_file(tmp_path):
    with pytest.raises(OutputError, match=r"output .*nowhere/a.qmt: cannot be written") as info:
        write_atomic(tmp_path / "nowhere" / "a.qmt", lambda f: f.write(b"x"))
    assert ".tmp" not in str(info.value)
    with pytest.raises(OutputError, match="is a directory"):
        write_atomic(tmp_path, lambda f: f.write(b"x"))
    with pytest.raises(OutputError, match="folder .* does not exist"):
        check_writable(tmp_path / "nowhere" / "a.qmt")
    assert check_writable(tmp_path / "a.qmt") == tmp_path / "a.qmt"


def test_write_json_is_indented_json(tmp_path):
    write_json(tmp_path / "h.json", {"a": [1, 2]})
    assert (tmp_path / "h.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
