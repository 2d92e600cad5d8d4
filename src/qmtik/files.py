"""Writing files so that nothing is lost: a temporary file beside the target, renamed over it."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import QmtikError


class OutputError(QmtikError, OSError):
    """An output file that cannot be written where it was asked for."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path, write) -> None:
    """Call write(file) on a temporary file beside path, then rename it over path.

    A crash or an exception leaves the previous file (or none) in place and no temporary file.
    The new file gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path}: is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"output {path}: cannot be written ({exc.strerror or exc})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, data) -> None:
    """Write data as indented JSON, atomically."""
    write_atomic(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def check_writable(path) -> Path:
    """Refuse, before any work, an output path whose folder is missing or that is a folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path}: is a directory")
    if not path.parent.is_dir():
        raise OutputError(f"output {path}: folder {path.parent} does not exist")
    return path
