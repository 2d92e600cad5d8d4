"""Writing files so that nothing is lost.

What an output path names decides how it is written:

- a regular file, or nothing yet: atomically, through a temporary file beside it renamed over
  it, so the previous file survives any failure;
- a symbolic link: its target, atomically; the link stays a link;
- a character device or a FIFO (/dev/null, a named pipe), or a path that names one of our open
  descriptors (/dev/stdout, /dev/fd/N): written through, never replaced, in one piece once the
  writer has finished (so a writer that seeks, as a zip archive's does, works there too, and a
  writer that fails sends nothing);
- anything else (a folder, a socket, a block device), a file whose mode has no write bit for
  anyone (refused even for root, who could write it), or one we may not write: refused.

check_distinct refuses an output that is the same file as an input, or as another output, of
the same command: before any work, so nothing is read from a file that is being overwritten. A
descriptor counts as the file it is open on (-o /dev/stdout >> in.csv writes into in.csv).

A failed write raises OutputError naming the output, except a reader that has gone (a closed
pipe): BrokenPipeError, which the command line ends on quietly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from .errors import OutputError

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so stale temporaries stay
    fcntl = None

STALE_SECONDS = 10.0  # a temporary file this old and unlocked is one a killed write left
IN_MEMORY = 16 * 2**20  # bytes gathered in memory for a write through; more spill to a temporary file
_OUR_DESCRIPTOR = re.compile(r"/dev/(?:stdin|stdout|stderr)|/dev/fd/\d+|/proc/(?:self|thread-self|\d+)/fd/\d+")
_STD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- what a path names ---------------------------------------------------------------------------


def _descriptor(path) -> int | None:
    """The number of our open descriptor that path names (/dev/stdout, /dev/fd/N,
    /proc/self/fd/N, directly or through links), else None. Such a path is written through
    the descriptor itself, so what we print and what we write keep their order in its file."""
    hop = os.path.abspath(path)
    for _ in range(40):  # the kernel's limit on links followed
        if _OUR_DESCRIPTOR.fullmatch(hop):
            if hop in _STD:
                return _STD[hop]
            owner = hop.split("/")[2]
            if hop.startswith("/dev/fd/") or owner in ("self", "thread-self") or owner == str(os.getpid()):
                return int(hop.rsplit("/", 1)[1])
            return None
        try:
            link = os.readlink(hop)
        except (OSError, ValueError):  # not a link (or not readable)
            return None
        hop = os.path.normpath(os.path.join(os.path.dirname(hop), link))
    return None


def _kind(mode: int) -> str:
    """What a node that is not a regular file is, in words."""
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISFIFO, "FIFO"),
    ):
        if test(mode):
            return name
    return "special file"


def _destination(path) -> tuple[bool, Path]:
    """(through, target): how write_atomic writes path. through is True for a character
    device, a FIFO or one of our descriptors (target is then path); otherwise target is the
    regular file, existing or not, that path names through its links. Raises OutputError for
    a path that is neither, a read-only file, or a missing or unwritable folder."""
    path = Path(path)
    number = _descriptor(path)
    if number is not None:
        try:
            os.fstat(number)
        except OSError:
            raise OutputError(f"output {path}: descriptor {number} is not open") from None
        return True, path
    try:
        target = Path(os.path.realpath(path))
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:  # a loop of links, a NUL in the name
        raise OutputError(f"output {path}: cannot be written ({getattr(exc, 'strerror', None) or exc})") from None
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return True, path
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"output {path}: is a {_kind(st.st_mode)}")
    if st is not None and not st.st_mode & 0o222:
        raise OutputError(
            f"output {path}: is read-only (mode {stat.S_IMODE(st.st_mode):04o}); qmtik does not replace it"
        )
    if st is not None and not os.access(target, os.W_OK):
        raise OutputError(
            f"output {path}: is not writable for this user (mode {stat.S_IMODE(st.st_mode):04o}); "
            "qmtik does not replace it"
        )
    folder = target.parent if os.path.islink(path) else path.parent
    if not target.parent.is_dir():
        raise OutputError(f"output {path}: cannot be written (folder {folder} does not exist)")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(f"output {path}: cannot be written (folder {folder} is not writable)")
    return False, target


def check_writable(path) -> Path:
    """Refuse, before any work, an output path that write_atomic would refuse (see the module's
    rules): a missing folder, a folder, a socket, a read-only file."""
    _destination(path)
    return Path(path)


def writes_through(path) -> bool:
    """Whether path is written through rather than replaced: a character device, a FIFO or
    one of our descriptors (see the module's rules)."""
    if _descriptor(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def takes_one_write(path) -> bool:
    """Whether path can take one write only: a FIFO or one of our descriptors receives each
    write after the one before (and a FIFO blocks once its reader has gone), where a file is
    replaced and a device such as /dev/null swallows each. An output written again and again
    (train's checkpoint, after every epoch) must not be one."""
    if _descriptor(path) is not None:
        return True
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def check_rewritable(path) -> None:
    """Refuse, as OutputError, a checkpoint path that takes_one_write: training writes its
    checkpoint after every epoch."""
    if takes_one_write(path):
        raise OutputError(
            f"output {path}: a checkpoint is written after every epoch, so it must be a file (or a "
            "device such as /dev/null), not a FIFO or a descriptor such as /dev/stdout"
        )


def goes_to_stdout(path) -> bool:
    """Whether writing path writes where the process's standard output goes: /dev/stdout
    itself, or a FIFO or another descriptor that is what stdout is open on (-o /dev/fd/3 3>&1).
    What the command line prints must then go to stderr, or it would be mixed into the output.
    A character device such as /dev/null, which stdout may be sent to as well, is left out:
    nothing mixed into it is kept."""
    if _descriptor(path) == 1:
        return True
    if not writes_through(path):
        return False
    node = _node(path)
    try:
        out = os.fstat(1)
    except OSError:
        return False
    return (
        node is not None and not stat.S_ISCHR(node.st_mode) and (node.st_dev, node.st_ino) == (out.st_dev, out.st_ino)
    )


# --- the same file twice -------------------------------------------------------------------------


def _node(path) -> os.stat_result | None:
    """What path reaches: for one of our descriptors the file it is open on (fstat), else the
    node its links lead to; None when there is none."""
    number = _descriptor(path)
    try:
        return os.fstat(number) if number is not None else os.stat(path)
    except (OSError, ValueError):
        return None


def _holds_nothing(path) -> bool:
    """A character device, or one of our descriptors open on anything but a file (a pipe, a
    terminal): writing it destroys no file. A descriptor open on a file holds that file."""
    node = _node(path)
    if node is None:
        return False
    if _descriptor(path) is not None:
        return not (stat.S_ISREG(node.st_mode) or stat.S_ISDIR(node.st_mode))
    return stat.S_ISCHR(node.st_mode)


def same_file(a, b) -> bool:
    """Whether paths a and b name one file: the same real path (links resolved), or, when
    both exist, the same inode (hard links, bind mounts, a descriptor open on the file)."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
    except (OSError, ValueError):
        return False
    first, second = _node(a), _node(b)
    return first is not None and second is not None and (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def check_distinct(inputs, outputs) -> None:
    """Refuse an output that is the same file as an input or as an earlier output.

    inputs and outputs are (name, path) pairs, such as ('data.train', 'train.npz') or
    ('--qmt', 'm.qmt'); a path of None or '' is left out. Devices, and our descriptors on a pipe
    or a terminal (-o /dev/null, -o /dev/stdout | ...), hold nothing to lose, so they may
    appear more than once; a descriptor on a file is that file (-o /dev/stdout >> in.csv).
    """
    seen = [(name, path) for name, path in inputs if path and not _holds_nothing(path)]
    for name, path in outputs:
        if not path or _holds_nothing(path):
            continue
        for other_name, other in seen:
            if same_file(path, other):
                raise OutputError(
                    f"{name} {path}: the same file as {other_name} {other}, which it would overwrite; give another path"
                )
        seen.append((name, path))


# --- writing -------------------------------------------------------------------------------------


def _temporary_name(target_name: str) -> re.Pattern:
    """The names write_atomic's temporaries of a target get: mkstemp's .NAME.XXXXXXXX.tmp."""
    return re.compile(re.escape(f".{target_name}.") + r"[a-z0-9_]{8}" + re.escape(".tmp"))


def remove_stale_temporaries(target) -> list[Path]:
    """Remove the temporaries an interrupted write of target left beside it (kill -9, power
    loss); returns them. Only regular files named exactly as write_atomic names them for this
    target, older than STALE_SECONDS, and unlocked: a write in progress holds a lock on its
    temporary until it is renamed. Anything that cannot be checked is left alone."""
    target = Path(target)
    if fcntl is None:
        return []
    pattern = _temporary_name(target.name)
    try:
        names = [name for name in os.listdir(target.parent) if pattern.fullmatch(name)]
    except OSError:
        return []
    removed = []
    for name in names:
        path = target.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > STALE_SECONDS:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: being written
                os.unlink(path)
                removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _failed(path, exc: OSError) -> OSError:
    """The error a failed write of path raises: OutputError naming the output (-o /dev/full:
    'No space left on device' alone names nothing), or a BrokenPipeError as it is (the reader
    has gone: the command line ends quietly, as `| head` expects)."""
    if isinstance(exc, (OutputError, BrokenPipeError)):
        return exc
    return OutputError(f"output {path}: cannot be written ({exc.strerror or exc})")


@contextlib.contextmanager
def _naming(path):
    """Turn an OSError of writing path into the error _failed gives."""
    try:
        yield
    except OSError as exc:
        raise _failed(path, exc) from None


class _Output:
    """The file a writer is given: the file itself, except that a failed write or flush names
    the output. Errors of the writer's own, such as a download's broken connection, pass as
    they are."""

    def __init__(self, file, path):
        self._file, self._path = file, path

    def write(self, data):
        with _naming(self._path):
            return self._file.write(data)

    def flush(self):
        with _naming(self._path):
            return self._file.flush()

    def __getattr__(self, name):  # seek, tell, ...: the file's own
        return getattr(self._file, name)


def _write_through(path, write) -> None:
    """Call write(file) for a character device, a FIFO or our descriptor: into a seekable
    buffer (memory, then a temporary file past IN_MEMORY bytes), copied through, opened as it
    is, once write has finished. A writer may seek (np.savez does); one that fails sends nothing."""
    with tempfile.SpooledTemporaryFile(max_size=IN_MEMORY) as buffer:
        write(_Output(buffer, path))
        buffer.seek(0)
        number = _descriptor(path)
        with _naming(path):
            if number is not None:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()  # what was printed comes first
                fd = os.dup(number)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # no O_CREAT: never a new file
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(buffer, f)


def write_atomic(path, write) -> None:
    """Call write(file) so that path ends up holding what it wrote, and nothing is lost.

    A regular file (a link's target for a link) is written to a temporary file beside it,
    .NAME.XXXXXXXX.tmp, flushed, fsynced and renamed over it: a failure at any moment leaves
    the previous file (or none) whole. An exception removes the temporary file; a process
    killed outright (kill -9) leaves it, and the next write of the same target removes it
    (remove_stale_temporaries). A replaced file's permissions are kept; a new file gets 0666
    less the umask, not mkstemp's 0600. Devices, FIFOs and our descriptors are written
    through; other paths are refused with an OutputError (the module's rules). Writing that
    fails raises OutputError naming path (BrokenPipeError for a reader that has gone).
    """
    through, target = _destination(path)
    if through:
        _write_through(path, write)
        return
    remove_stale_temporaries(target)
    try:
        old = os.stat(target)
    except OSError:
        old = None
    with _naming(path):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with _naming(path):
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # held until renamed: not stale while written
                os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777 if old else 0o666 & ~_umask())
            write(_Output(f, path))
            with _naming(path):
                f.flush()
                os.fsync(f.fileno())
                os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, data) -> None:
    """Write data as indented JSON, atomically."""
    write_atomic(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))
