"""Fetching MNIST and Fashion-MNIST safely: pinned SHA-256 sums, mirrors, a cache, atomic files.

get_dataset("mnist") returns the directory holding the four IDX files, downloading what is
missing into the cache, cache_dir()/<name> (~/.cache/qmtik on Linux, ~/Library/Caches/qmtik on
macOS, %LOCALAPPDATA%\\qmtik\\Cache on Windows, $XDG_CACHE_HOME/qmtik wherever that is set). Every file
is streamed into a temporary file beside its target, checked against its pinned SHA-256 and
only then renamed into place, so a failed or corrupt download leaves nothing behind and never
replaces a good file. QMTIK_DATA_URL (or base_url) points at another server holding the files
as BASE/<file name>. find_dataset() answers the same question without touching the network.
Only the standard library is used; every failure is a one-line DownloadError.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from .errors import DownloadError
from .output_files import write_atomic
from .parsing import one_line

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CHUNK = 1 << 16
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


class Dataset(NamedTuple):
    """A data set's pinned files: SHA-256 of each file as the mirrors serve it, the mirrors in
    the order they are tried, other known-good copies of a file (same data, other gzip), and
    each file's size as served (a download stops there: a longer body is refused)."""

    sha256: dict
    mirrors: tuple
    repacked: dict = {}
    sizes: dict = {}


UNPINNED_SIZE = 64 << 20  # the most fetched of a file whose size is not pinned
DEADLINE = ("QMTIK_DOWNLOAD_DEADLINE", 600.0)  # seconds for one file, from the request to its last byte


DATASETS = {
    # SHA-256 of the files served at all three mirrors (torchvision's MD5s, f68b3c2d... for
    # train-images, name the same files): tensorflow/datasets
    # tensorflow_datasets/url_checksums/mnist.txt (the cvdf mirror, with sizes); the same four
    # sums in guild.ai's mnist package (yann.lecun.com) and torchvision's Ruby port (ossci).
    "mnist": Dataset(
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        sizes={  # the sizes the mirrors serve (also in tensorflow_datasets' url_checksums)
            "train-images-idx3-ubyte.gz": 9912422,
            "train-labels-idx1-ubyte.gz": 28881,
            "t10k-images-idx3-ubyte.gz": 1648877,
            "t10k-labels-idx1-ubyte.gz": 4542,
        },
    ),
    # Zalando's files (MD5 8d4fb7e6... etc. in their README): SHA-256 from tensorflow/datasets
    # tensorflow_datasets/url_checksums/fashion_mnist.txt, the same in several other projects.
    # Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1) recompressed them (gzip
    # header without the file name: 23 bytes shorter), so its files have other sums, computed
    # here from /usr/share/datasets/fashion-mnist and accepted as the same data.
    "fashion-mnist": Dataset(
        sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        repacked={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        sizes={  # Zalando's files; Debian's are 24 and 23 bytes shorter (no file name in the gzip header)
            "train-images-idx3-ubyte.gz": 26421880,
            "train-labels-idx1-ubyte.gz": 29515,
            "t10k-images-idx3-ubyte.gz": 4422102,
            "t10k-labels-idx1-ubyte.gz": 5148,
        },
    ),
}


class _Unreachable(Exception):
    """No answer at all from a mirror (no DNS, refused, timed out): maybe we are offline."""


def cache_dir() -> Path:
    """qmtik's cache root, where the platform keeps caches: $XDG_CACHE_HOME/qmtik when that is
    set to an absolute path (on any platform: whoever sets it asks for it; a relative one is
    ignored, as the XDG specification says), else ~/Library/Caches/qmtik on macOS,
    %LOCALAPPDATA%\\qmtik\\Cache on Windows (Microsoft's place for data that can be fetched
    again) and ~/.cache/qmtik elsewhere. The standard library only (no platformdirs)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "qmtik"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "qmtik"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "")
        return (Path(local) if local else Path.home() / "AppData" / "Local") / "qmtik" / "Cache"
    return Path.home() / ".cache" / "qmtik"


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DownloadError(f"data set {name!r}: unknown (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_valid(path: Path, dataset: Dataset, file: str) -> bool:
    """The file exists and its SHA-256 is one pinned for it."""
    try:
        return path.is_file() and _sha256(path) in (dataset.sha256[file], dataset.repacked.get(file))
    except OSError:
        return False


def find_dataset(name: str, directory=None) -> Path | None:
    """The directory holding all four valid files of the data set, or None; no network.

    Looks in directory if given, else in the cache, else (Fashion-MNIST) in Debian's package.
    """
    dataset = _dataset(name)
    places = [Path(directory)] if directory is not None else [cache_dir() / name]
    if directory is None and name == "fashion-mnist":
        places.append(FASHION_MNIST_DIR)
    for place in places:
        if all(_is_valid(place / file, dataset, file) for file in FILES):
            return place
    return None


def deadline_seconds(deadline=None) -> float:
    """The per-file deadline: deadline if given, else $QMTIK_DOWNLOAD_DEADLINE, else DEADLINE's default."""
    name, default = DEADLINE
    text = os.environ.get(name, "").strip() if deadline is None else str(deadline)
    try:
        value = float(text) if text else default
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise DownloadError(f"download deadline {text[:40]!r}: expected a number of seconds > 0 ({name} or --deadline)")
    return value


def get_dataset(name: str, directory=None, base_url=None, timeout: float = 10.0, progress=None, deadline=None) -> Path:
    """The directory holding the data set's four verified files, fetching what is missing.

    Files go to directory, else to the cache. base_url, else $QMTIK_DATA_URL, replaces the
    mirrors; timeout (seconds) bounds every connection and read, so that an unreachable host
    fails instead of hanging; deadline (seconds, else $QMTIK_DOWNLOAD_DEADLINE, else 600)
    bounds each file from its request to its last byte, and a file stops at its pinned size.
    A failure removes what this call created: the folders it made and, in a directory given,
    the files it wrote (in the cache, verified files stay for the next run). progress: a bar
    on stderr; None means only when it is a terminal.
    """
    dataset = _dataset(name)
    seconds = deadline_seconds(deadline)
    found = find_dataset(name, directory)
    if found is not None:
        return found
    target = Path(directory) if directory is not None else cache_dir() / name
    base = base_url or os.environ.get("QMTIK_DATA_URL")
    mirrors = (base,) if base else dataset.mirrors
    bar = sys.stderr.isatty() if progress is None else bool(progress)
    made = [p for p in (target, *target.parents) if not os.path.lexists(p)]  # deepest first
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove(made, [])
        raise DownloadError(f"data set {name}: cannot write {target} ({exc.strerror or exc})") from None
    written = []
    try:
        for file in FILES:
            if not _is_valid(target / file, dataset, file):
                _fetch(name, dataset, file, mirrors, target, (timeout, seconds), bar)
                written.append(target / file)
    except BaseException:
        _remove(made, written if directory is not None else [])
        raise
    return target


def _remove(folders, files) -> None:
    """Remove files, then each folder (deepest first) left empty: what a failed call created."""
    for path in files:
        with contextlib.suppress(OSError):
            path.unlink()
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: anything put there meanwhile stays


def _fetch(name: str, dataset: Dataset, file: str, mirrors, target: Path, times, bar: bool) -> None:
    """Fetch one file from the first mirror that serves it intact; one error if none does.
    times: (seconds for a connection or a read, seconds for the whole file)."""
    errors, unreachable = [], []
    for base in mirrors:
        url = base.rstrip("/") + "/" + file
        try:
            _download(url, target / file, dataset, file, times, bar)
            return
        except _Unreachable as exc:
            unreachable.append(f"{url}: {exc}")
        except DownloadError as exc:
            errors.append(str(exc))
    if errors:
        raise DownloadError(
            errors[0]
            if len(errors) == 1 and not unreachable
            else f"{file}: no mirror served it: {'; '.join(errors + unreachable)}"
        )
    raise DownloadError(
        f"data set {name}: cannot download ({unreachable[0]}); offline? Put "
        f"{', '.join(FILES)} in {target} by hand, or set QMTIK_DATA_URL to a mirror"
    )


def _download(url: str, path: Path, dataset: Dataset, file: str, times, bar: bool) -> None:
    """Stream url into a temporary file beside path, verify it, rename it over path."""
    timeout, seconds = times
    end = time.monotonic() + seconds
    try:
        response = urllib.request.urlopen(url, timeout=min(timeout, seconds))
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307, 308):
            raise DownloadError(f"{url}: redirected in a loop (or more than 10 times); HTTP {exc.code}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {one_line(exc.reason)}") from None
    except urllib.error.URLError as exc:
        raise _Unreachable(one_line(getattr(exc.reason, "strerror", None) or exc.reason)) from None
    except TimeoutError:
        raise _Unreachable(f"no answer in {min(timeout, seconds):g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: connection dropped ({one_line(exc)})") from None
    except ValueError as exc:
        raise DownloadError(f"{url}: not a URL ({one_line(exc)})") from None
    with response:
        try:
            write_atomic(path, lambda f: _receive(url, response, f, dataset, file, (end, seconds), bar))
        except DownloadError:
            raise
        except OSError as exc:  # OutputError, a full disk
            raise DownloadError(f"{url}: cannot write {path.parent} ({exc.strerror or exc})") from None


def _receive(url: str, response, out, dataset: Dataset, file: str, ends, bar: bool) -> None:
    """Copy the body to out while hashing it, at most the file's pinned size and until the
    deadline; refuse a body of another length or a wrong checksum."""
    end, seconds = ends
    most = dataset.sizes.get(file, UNPINNED_SIZE)
    length = response.headers.get("Content-Length")
    known = length and length.isascii() and length.isdigit() and len(length) <= 18  # not '²' nor 5000 digits
    total = int(length) if known else None
    if total is not None and total > most:
        raise DownloadError(f"{url}: the server announces {total:,} bytes; {file} is {most:,}")
    digest, done, shown = hashlib.sha256(), 0, 0.0
    try:
        while chunk := _read(url, response, done, most + 1 - done):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if done > most:
                raise DownloadError(f"{url}: more than the {most:,} bytes of {file}; refused")
            if time.monotonic() > end:
                raise DownloadError(
                    f"{url}: {done:,} bytes in {seconds:g} s, not the whole file; the deadline is "
                    f"{DEADLINE[0]} or --deadline SECONDS"
                )
            if bar and time.monotonic() - shown > 0.1:
                shown = time.monotonic()
                _draw(file, done, total)
    finally:
        if bar:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
    if total is not None and done < total:
        raise DownloadError(f"{url}: connection dropped after {done} of {total} bytes")
    got, accepted = digest.hexdigest(), (dataset.sha256[file], dataset.repacked.get(file))
    if got not in accepted:
        raise DownloadError(f"{url}: checksum mismatch, expected SHA-256 {accepted[0][:12]}..., got {got[:12]}...")


def _read(url: str, response, done: int, most: int) -> bytes:
    """The next bytes of the body that have arrived, at most `most` (b"" at its end): read1
    returns what one read gives, so a slow server meets the deadline; a broken connection is a
    DownloadError."""
    try:
        return response.read1(min(CHUNK, most))
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: connection dropped after {done} bytes ({type(exc).__name__})") from None


def _draw(file: str, done: int, total: int | None) -> None:
    """One line on stderr: the file, a bar when the size is known, the megabytes so far."""
    width = 30
    if total:
        filled = width * min(done, total) // total
        sys.stderr.write(f"\r{file} [{'#' * filled}{'.' * (width - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB")
    else:
        sys.stderr.write(f"\r{file} {done / 1e6:.1f} MB")
    sys.stderr.flush()
