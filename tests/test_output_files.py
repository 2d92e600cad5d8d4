"""Atomic writes: the previous file survives any failure; permissions and paths are ordinary."""

import fcntl
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qmtik.output_files import OutputError, check_distinct, check_writable, write_atomic, write_json


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


# --- same file: an output never destroys an input ------------------------------------------------


def test_an_output_that_is_an_input_is_refused_by_its_real_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.npz").write_bytes(b"data")
    (tmp_path / "sub").mkdir()
    os.link(tmp_path / "train.npz", tmp_path / "hard.npz")
    os.symlink(tmp_path / "train.npz", tmp_path / "soft.npz")
    for output in ["train.npz", "./sub/../train.npz", str(tmp_path / "train.npz"), "hard.npz", "soft.npz"]:
        with pytest.raises(OutputError, match=r"^output .*: the same file as data.train train.npz") as info:
            check_distinct([("data.train", "train.npz")], [("output", output)])
        assert "\n" not in str(info.value)
    check_distinct([("data.train", "train.npz"), ("the config", None)], [("output", "other.npz")])


def test_two_outputs_of_one_command_may_not_be_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="--qmt x.ckpt.npz: the same file as output x.ckpt.npz"):
        check_distinct([], [("output", "x.ckpt.npz"), ("--qmt", "x.ckpt.npz")])  # neither exists yet
    check_distinct([], [("output", "x.ckpt.npz"), ("--qmt", "x.qmt")])


def test_a_character_device_is_no_file_to_lose(tmp_path):
    check_distinct([("the input", os.devnull)], [("output", os.devnull), ("--plot", os.devnull)])


# --- what the path names: devices, FIFOs, symlinks, read-only files -------------------------------


def char_device(path):
    """A character device node like /dev/null at path (skips where mknod is not permitted)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    return path


def test_a_character_device_is_written_through_not_replaced(tmp_path):
    null = char_device(tmp_path / "null")
    write_atomic(null, lambda f: f.write(b"into the void"))
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert check_writable(null) == null and [p.name for p in tmp_path.iterdir()] == ["null"]


def test_a_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, lambda f: f.write(b"through the pipe"))
    reader.join(5)
    assert received == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_path_that_names_an_open_descriptor_is_written_through(tmp_path):
    """-o /dev/stdout with stdout sent to a file: the output goes into that open file, after what
    was printed before, and the file is not replaced (a link in tmp_path stands in for /dev/stdout)."""
    out = tmp_path / "out.txt"
    code = (
        "import os, sys; from qmtik.output_files import write_atomic; print('before', flush=True); "
        "os.symlink('/proc/self/fd/1', sys.argv[1]); "
        "write_atomic(sys.argv[1], lambda f: f.write(b'data\\n')); print('after')"
    )
    with open(out, "wb") as stdout:
        inode = os.fstat(stdout.fileno()).st_ino
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "stdout")], stdout=stdout, check=True)
    assert out.read_text() == "before\ndata\nafter\n" and out.stat().st_ino == inode
    assert os.path.islink(tmp_path / "stdout")
    with pytest.raises(OutputError, match="^output /dev/fd/987: descriptor 987 is not open$"):
        check_writable("/dev/fd/987")


@pytest.mark.parametrize("kind", ["socket", "directory"])
def test_other_nodes_are_refused_and_left_alone(tmp_path, kind):
    path = tmp_path / "node"
    if kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    else:
        path.mkdir()
    for attempt in (check_writable, lambda p: write_atomic(p, lambda f: f.write(b"x"))):
        with pytest.raises(OutputError, match=f"output .*node: is a {kind}"):
            attempt(path)
    assert (stat.S_ISSOCK if kind == "socket" else stat.S_ISDIR)(os.lstat(path).st_mode)


def test_a_symlink_stays_a_link_and_its_target_is_written_atomically(tmp_path):
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "real.qmt"
    target.write_bytes(b"old")
    os.symlink("models/real.qmt", tmp_path / "link.qmt")
    write_atomic(tmp_path / "link.qmt", lambda f: f.write(b"new"))
    assert os.readlink(tmp_path / "link.qmt") == "models/real.qmt" and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.qmt", "models"]
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["real.qmt"]
    os.symlink("models/new.qmt", tmp_path / "dangling.qmt")  # a link to a file to be
    write_atomic(tmp_path / "dangling.qmt", lambda f: f.write(b"made"))
    assert (tmp_path / "models" / "new.qmt").read_bytes() == b"made"
    os.symlink("nowhere/x.qmt", tmp_path / "lost.qmt")
    with pytest.raises(OutputError, match="folder .*nowhere does not exist"):
        check_writable(tmp_path / "lost.qmt")


def test_a_read_only_file_is_refused_even_for_root(tmp_path):
    path = tmp_path / "ro.qmt"
    path.write_bytes(b"keep me")
    path.chmod(0o444)
    for attempt in (check_writable, lambda p: write_atomic(p, lambda f: f.write(b"x"))):
        with pytest.raises(OutputError, match=r"output .*ro.qmt: is read-only \(mode 0444\)"):
            attempt(path)
    assert path.read_bytes() == b"keep me" and path.stat().st_mode & 0o777 == 0o444


def test_a_file_this_user_may_not_write_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "theirs.qmt"
    path.write_bytes(b"theirs")
    path.chmod(0o644)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not (mode & os.W_OK and Path(p) == path))
    with pytest.raises(OutputError, match=r"theirs.qmt: is not writable for this user \(mode 0644\)"):
        write_atomic(path, lambda f: f.write(b"x"))
    assert path.read_bytes() == b"theirs"


@pytest.mark.parametrize("name", ["a\0b", "loop"])
def test_an_impossible_name_is_one_output_error(tmp_path, name):
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(OutputError, match="cannot be written"):
        write_atomic(tmp_path / name, lambda f: f.write(b"x"))


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "private.qmt"
    path.write_bytes(b"old")
    path.chmod(0o600)
    write_atomic(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600


# --- temporaries a kill left behind ---------------------------------------------------------------


def age(path, seconds: float = 3600) -> None:
    """Make path look `seconds` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_temporaries_of_the_target_are_removed_on_its_next_write(tmp_path):
    target = tmp_path / "m.qmt"
    stale, fresh, locked = (tmp_path / f".m.qmt.{tag}.tmp" for tag in ("a1b2_c3d", "fresh123", "locked12"))
    others = [
        tmp_path / name
        for name in (".other.qmt.a1b2_c3d.tmp", ".m.qmt.toolongname.tmp", ".m.qmt.a1b2c3d.tmp", "m.qmt.a1b2_c3d.tmp")
    ]
    for path in (stale, fresh, locked, *others):
        path.write_bytes(b"half")
        if path is not fresh:
            age(path)
    with open(locked, "rb") as held:  # as a write in progress holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        write_atomic(target, lambda f: f.write(b"model"))
    assert target.read_bytes() == b"model"
    assert not stale.exists() and fresh.exists() and locked.exists() and all(p.exists() for p in others)


def test_a_write_killed_with_sigkill_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "m.qmt"
    target.write_bytes(b"previous")
    code = (
        "import sys, time; from qmtik.output_files import write_atomic\n"
        "def slow(f):\n    f.write(b'x' * 100000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "write_atomic(sys.argv[1], slow)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"writing\n"
        leftovers = [p for p in tmp_path.iterdir() if p != target]
        write_atomic(target, lambda f: f.write(b"meanwhile"))  # a write in progress is not touched
        assert all(p.exists() for p in leftovers) and len(leftovers) == 1
        for p in leftovers:
            age(p)
        write_atomic(target, lambda f: f.write(b"meanwhile"))  # nor when it looks old: it is locked
        assert all(p.exists() for p in leftovers)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert target.read_bytes() == b"meanwhile"
    write_atomic(target, lambda f: f.write(b"next"))
    assert [p.name for p in tmp_path.iterdir()] == ["m.qmt"] and target.read_bytes() == b"next"


# --- writing through: seekable writers, errors named, descriptors compared ----------------------


def test_a_writer_that_seeks_works_through_a_device_or_a_fifo(tmp_path):
    """np.savez (zipfile) seeks back to finish its archive: a device or a FIFO cannot seek, so
    what the writer writes is gathered first and then copied through."""
    import numpy as np

    null = char_device(tmp_path / "null.npz")
    write_atomic(null, lambda f: np.savez(f, x=np.arange(3)))
    os.symlink(os.devnull, tmp_path / "link.npz")
    write_atomic(tmp_path / "link.npz", lambda f: np.savez(f, x=np.arange(3)))
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, lambda f: np.savez(f, x=np.arange(3)))
    reader.join(5)
    (tmp_path / "got.npz").write_bytes(received[0])
    with np.load(tmp_path / "got.npz") as archive:
        assert archive["x"].tolist() == [0, 1, 2]


def test_a_writer_that_fails_sends_nothing_through_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting on it

    def failing(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    try:
        with pytest.raises(RuntimeError):
            write_atomic(fifo, failing)
        assert os.read(reader, 100) == b""
    finally:
        os.close(reader)


def test_a_failed_write_names_the_output(tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(OutputError, match=r"^output /dev/full: cannot be written \(No space left on device\)$"):
        write_atomic("/dev/full", lambda f: f.write(b"x" * 10))

    def full(fd):  # the disk fills as the data reaches it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"^output .*m.qmt: cannot be written \(No space left on device\)$"):
        write_atomic(tmp_path / "m.qmt", lambda f: f.write(b"x"))
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_the_writers_own_is_not_called_a_write_error(tmp_path):
    """A download's broken connection inside the writer stays that error, not 'cannot be written'."""

    def reading(f):
        f.write(b"part")
        raise ConnectionResetError(104, "Connection reset by peer")

    for path in (tmp_path / "m.qmt", os.devnull):
        with pytest.raises(ConnectionResetError):
            write_atomic(path, reading)
    assert list(tmp_path.iterdir()) == []


def test_a_broken_pipe_stays_a_broken_pipe(tmp_path):
    """The command line ends quietly on a reader that has gone (| head -c1): not an error line."""

    def gone(f):
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError) as info:
        write_atomic(tmp_path / "m.qmt", gone)
    assert not isinstance(info.value, OutputError)


def test_a_descriptor_output_on_an_input_file_is_refused(tmp_path, monkeypatch):
    """-o /dev/stdout >> in.csv, or 1<> c.ckpt.npz: the descriptor's file is the input."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("1,2\n")
    with open(tmp_path / "in.csv", "ab") as appended:
        for output in (f"/dev/fd/{appended.fileno()}", f"/proc/self/fd/{appended.fileno()}"):
            with pytest.raises(OutputError, match=f"^output {output}: the same file as the input in.csv"):
                check_distinct([("the input", "in.csv")], [("output", output)])
            with pytest.raises(OutputError, match="the same file as output"):
                check_distinct([], [("output", "in.csv"), ("--qmt", output)])
    read, write = os.pipe()  # a descriptor on a pipe holds nothing to lose
    try:
        check_distinct([("the input", f"/dev/fd/{read}")], [("output", f"/dev/fd/{write}")])
    finally:
        os.close(read)
        os.close(write)
    check_distinct([("the input", "in.csv")], [("output", os.devnull)])


def test_which_outputs_go_to_stdout(tmp_path):
    from qmtik.output_files import goes_to_stdout, takes_one_write

    assert goes_to_stdout("/dev/stdout") and goes_to_stdout("/dev/fd/1")
    assert not goes_to_stdout(tmp_path / "m.qmt") and not goes_to_stdout(os.devnull)
    one, two = os.fstat(1), os.fstat(2)
    if (one.st_dev, one.st_ino) != (two.st_dev, two.st_ino):  # pytest captures them apart
        assert not goes_to_stdout("/dev/stderr")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert takes_one_write(fifo) and takes_one_write("/dev/stdout") and takes_one_write("/dev/fd/2")
    assert not takes_one_write(os.devnull) and not takes_one_write(tmp_path / "m.qmt")
