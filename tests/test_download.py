"""Downloading data sets: the real download code against a local HTTP server serving small IDX
files, with the pinned hash table replaced by those files' hashes."""

import gzip
import hashlib
import http.server
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import closed_port_url
from qmtik import download
from qmtik.data_formats import idx_bytes, read_idx
from qmtik.download import DATASETS, FILES, Dataset, cache_dir, find_dataset, get_dataset
from qmtik.errors import DownloadError

RNG = np.random.default_rng(7)
ARRAYS = {
    "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (5, 3, 4), dtype=np.uint8),
    "train-labels-idx1-ubyte.gz": RNG.integers(0, 10, 5, dtype=np.uint8),
    "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (2, 3, 4), dtype=np.uint8),
    "t10k-labels-idx1-ubyte.gz": RNG.integers(0, 10, 2, dtype=np.uint8),
}
BODIES = {name: gzip.compress(idx_bytes(a), mtime=0) for name, a in ARRAYS.items()}
HASHES = {name: hashlib.sha256(body).hexdigest() for name, body in BODIES.items()}


def misbehave(handler, body: bytes, mode: str) -> bool:
    """A hostile server's answers: 'slow' (the right length, then a byte every 0.05 s),
    'endless' (no length, zeros until the client leaves), 'big-length' (a length past the
    pinned size), 'short-length' (a length one byte short of the body), 'redirect' (a
    redirect to itself). Returns whether it answered."""
    if mode not in ("slow", "endless", "big-length", "short-length", "redirect"):
        return False
    if mode == "redirect":
        handler.send_response(302)
        handler.send_header("Location", handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True
    handler.send_response(200)
    lengths = {"slow": len(body), "big-length": 10**12, "short-length": len(body) - 1}
    if mode in lengths:
        handler.send_header("Content-Length", str(lengths[mode]))
    handler.end_headers()
    try:
        if mode == "slow":
            for i in range(len(body)):
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
                time.sleep(0.05)
        elif mode == "endless":
            while True:
                handler.wfile.write(bytes(1 << 16))
        else:
            handler.wfile.write(body)
    except OSError:  # the client left
        pass
    return True


class Server:
    """An HTTP server on 127.0.0.1 serving routes[path] = (body, mode); mode 'ok', 'corrupt'
    (one byte changed), 'drop' (half the body, then the connection is closed), 'cut' (a
    chunked body cut off within its second chunk: read() fails with IncompleteRead),
    'long-length' or 'odd-length' (a Content-Length of 5000 digits, or '²')."""

    def __init__(self):
        self.routes, self.requests = {}, []
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                state.requests.append(self.path)
                if self.path not in state.routes:
                    self.send_error(404)
                    return
                body, mode = state.routes[self.path]
                if misbehave(self, body, mode):
                    return
                if mode == "corrupt":
                    body = body[:-1] + bytes([body[-1] ^ 1])
                self.send_response(200)
                if mode == "cut":  # one chunk of a chunked body, no end
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n%x\r\n" % (10, body[:10], len(body) - 10))
                    return
                self.send_header(
                    "Content-Length", {"long-length": "1" * 5000, "odd-length": "\xb2"}.get(mode, str(len(body)))
                )  # a hostile server's lengths: int() refuses them
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if mode == "drop" else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def url(self, mirror: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{mirror}/"

    def serve(self, mirror: str, mode: str = "ok", only=FILES):
        for name in only:
            self.routes[f"/{mirror}/{name}"] = (BODIES[name], mode)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache in tmp_path, no QMTIK_DATA_URL, no Debian directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("QMTIK_DATA_URL", raising=False)
    monkeypatch.setattr(download, "FASHION_MNIST_DIR", tmp_path / "no-debian")
    return tmp_path / "xdg" / "qmtik" / "mnist"


def use_mirrors(monkeypatch, *mirrors, pinned=True):
    sizes = {name: len(body) for name, body in BODIES.items()} if pinned else {}
    monkeypatch.setitem(DATASETS, "mnist", Dataset(sha256=dict(HASHES), mirrors=mirrors, sizes=sizes))


def names_in(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_lands_verified_files_in_the_cache(server, cache, monkeypatch):
    server.serve("a")
    use_mirrors(monkeypatch, server.url("a"))
    assert get_dataset("mnist", progress=False) == cache
    assert names_in(cache) == sorted(FILES)  # and no temporary file
    for name in FILES:
        assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == HASHES[name]
        np.testing.assert_array_equal(read_idx(cache / name), ARRAYS[name])
    assert find_dataset("mnist") == cache


def test_the_data_loader_reads_the_downloaded_set(server, cache, monkeypatch):
    from qmtik.data import load_mnist_like

    server.serve("a")
    use_mirrors(monkeypatch, server.url("a"))
    get_dataset("mnist", progress=False)
    (x, y), (x_test, y_test) = load_mnist_like("mnist")
    np.testing.assert_array_equal(x, ARRAYS["train-images-idx3-ubyte.gz"].reshape(5, 12))
    np.testing.assert_array_equal(y_test, ARRAYS["t10k-labels-idx1-ubyte.gz"])


def test_valid_files_are_not_fetched_again(server, cache, monkeypatch):
    server.serve("a")
    use_mirrors(monkeypatch, server.url("a"))
    get_dataset("mnist", progress=False)
    assert len(server.requests) == 4
    get_dataset("mnist", progress=False)
    assert len(server.requests) == 4
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    get_dataset("mnist", progress=False)
    assert server.requests[4:] == ["/a/t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("mode", ["long-length", "odd-length"])
def test_a_content_length_int_cannot_read_is_ignored(server, cache, monkeypatch, mode):
    """int() refuses 5000 digits (Python's int-digit limit) and '²' (a digit to str.isdigit):
    the length is only for the progress bar, so the body is read to its end and verified."""
    server.serve("a", mode)
    use_mirrors(monkeypatch, server.url("a"))
    assert get_dataset("mnist", progress=True) == cache
    assert names_in(cache) == sorted(FILES)


def test_a_corrupt_download_is_refused_and_leaves_nothing(server, cache, monkeypatch):
    server.serve("a")
    server.serve("a", "corrupt", only=["train-labels-idx1-ubyte.gz"])
    use_mirrors(monkeypatch, server.url("a"))
    bad = BODIES["train-labels-idx1-ubyte.gz"]
    bad = hashlib.sha256(bad[:-1] + bytes([bad[-1] ^ 1])).hexdigest()
    expected = HASHES["train-labels-idx1-ubyte.gz"]
    with pytest.raises(
        DownloadError,
        match=rf"/a/train-labels-idx1-ubyte.gz: checksum mismatch, "
        rf"expected SHA-256 {expected[:12]}\.\.\., got {bad[:12]}\.\.\.",
    ):
        get_dataset("mnist", progress=False)
    assert names_in(cache) == ["train-images-idx3-ubyte.gz"]  # the file before it, nothing else
    assert find_dataset("mnist") is None


def test_a_dropped_connection_is_reported_and_leaves_nothing(server, cache, monkeypatch):
    server.serve("a", "drop")
    use_mirrors(monkeypatch, server.url("a"))
    size = len(BODIES["train-images-idx3-ubyte.gz"])
    with pytest.raises(
        DownloadError,
        match=rf"train-images-idx3-ubyte.gz: connection dropped after "
        rf"{size // 2} of {size} bytes",
    ):
        get_dataset("mnist", progress=False)
    assert names_in(cache) == []


def test_a_cut_chunked_body_is_reported_and_leaves_nothing(server, cache, monkeypatch):
    server.serve("a", "cut")
    use_mirrors(monkeypatch, server.url("a"))
    with pytest.raises(
        DownloadError,
        match=r"^http://127\.0\.0\.1:\d+/a/train-images-idx3-ubyte.gz: "
        r"connection dropped after 10 bytes \(IncompleteRead\)$",  # read1: the first chunk arrived,
    ):
        get_dataset("mnist", progress=False)
    assert names_in(cache) == []


def test_a_file_that_cannot_be_written(server, cache, monkeypatch):
    server.serve("a")
    use_mirrors(monkeypatch, server.url("a"))
    (cache / FILES[0]).mkdir(parents=True)  # a folder where the file should go
    with pytest.raises(DownloadError, match=rf"/a/{FILES[0]}: cannot write {cache} \(output .*: is a directory\)"):
        get_dataset("mnist", progress=False)
    assert names_in(cache) == [FILES[0]] and (cache / FILES[0]).is_dir()


def test_http_404_names_the_url(server, cache, monkeypatch):
    server.serve("a", only=FILES[:3])
    use_mirrors(monkeypatch, server.url("a"))
    with pytest.raises(DownloadError, match=r"^http://127\.0\.0\.1:\d+/a/t10k-labels-idx1-ubyte\.gz: HTTP 404"):
        get_dataset("mnist", progress=False)
    assert names_in(cache) == sorted(FILES[:3])


@pytest.mark.parametrize("first", ["missing", "corrupt", "drop"])
def test_the_next_mirror_is_tried_when_one_fails(server, cache, monkeypatch, first):
    if first != "missing":
        server.serve("a", first)
    server.serve("b")
    use_mirrors(monkeypatch, server.url("a"), server.url("b"))
    assert get_dataset("mnist", progress=False) == cache
    assert server.requests[:2] == ["/a/train-images-idx3-ubyte.gz", "/b/train-images-idx3-ubyte.gz"]
    assert names_in(cache) == sorted(FILES)


def test_when_every_mirror_fails_each_is_named(server, cache, monkeypatch):
    server.serve("b", "corrupt")
    use_mirrors(monkeypatch, server.url("a"), server.url("b"), closed_port_url())
    with pytest.raises(DownloadError) as caught:
        get_dataset("mnist", progress=False)
    message = str(caught.value)
    assert message.startswith("train-images-idx3-ubyte.gz: no mirror served it: ")
    assert "/a/train-images-idx3-ubyte.gz: HTTP 404" in message
    assert "/b/train-images-idx3-ubyte.gz: checksum mismatch" in message
    assert "Connection refused" in message and "\n" not in message


def test_qmtik_data_url_replaces_the_mirrors(server, cache, monkeypatch):
    server.serve("env")
    server.serve("arg")
    use_mirrors(monkeypatch, closed_port_url())
    monkeypatch.setenv("QMTIK_DATA_URL", server.url("env").rstrip("/"))  # with or without a slash
    get_dataset("mnist", progress=False)
    assert server.requests == [f"/env/{name}" for name in FILES]
    get_dataset("mnist", directory=cache.parent / "other", base_url=server.url("arg"), progress=False)
    assert server.requests[4:] == [f"/arg/{name}" for name in FILES]  # the argument wins


def test_the_cache_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "somewhere"))
    assert cache_dir() == tmp_path / "somewhere" / "qmtik"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("", "relative/path"):  # unset, or relative: ignored
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert cache_dir() == tmp_path / "home" / ".cache" / "qmtik"


@pytest.mark.parametrize(
    "platform, local, expected",
    [
        ("darwin", None, ("home", "Library", "Caches", "qmtik")),
        ("win32", "appdata-local", ("appdata-local", "qmtik", "Cache")),
        ("win32", None, ("home", "AppData", "Local", "qmtik", "Cache")),  # no LOCALAPPDATA: its usual place
        ("linux", "appdata-local", ("home", ".cache", "qmtik")),
    ],
)
def test_the_cache_is_where_each_platform_keeps_caches(tmp_path, monkeypatch, platform, local, expected):
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")  # Windows reads USERPROFILE, not HOME
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if local is None:
        monkeypatch.delenv("LOCALAPPDATA", raising=False)
    else:
        monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / local))
    assert cache_dir() == tmp_path.joinpath(*expected)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # set by its user: it wins everywhere
    assert cache_dir() == tmp_path / "xdg" / "qmtik"


def test_a_directory_given_is_used_instead_of_the_cache(server, cache, monkeypatch, tmp_path):
    server.serve("a")
    use_mirrors(monkeypatch, server.url("a"))
    assert get_dataset("mnist", directory=tmp_path / "mine", progress=False) == tmp_path / "mine"
    assert names_in(tmp_path / "mine") == sorted(FILES) and not cache.exists()
    assert find_dataset("mnist", tmp_path / "mine") == tmp_path / "mine"
    assert find_dataset("mnist") is None


def test_a_file_in_place_is_kept_when_the_download_fails(server, cache, monkeypatch):
    server.serve("a", "corrupt")
    use_mirrors(monkeypatch, server.url("a"))
    cache.mkdir(parents=True)
    (cache / FILES[0]).write_bytes(b"an older copy")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        get_dataset("mnist", progress=False)
    assert (cache / FILES[0]).read_bytes() == b"an older copy"
    assert names_in(cache) == [FILES[0]]
    server.serve("a")  # a good download does replace it
    get_dataset("mnist", progress=False)
    assert (cache / FILES[0]).read_bytes() == BODIES[FILES[0]]


def test_an_unknown_name_lists_the_known(cache):
    for call in (get_dataset, find_dataset):
        with pytest.raises(DownloadError, match=r"data set 'cifar10': unknown \(known: mnist, fashion-mnist\)"):
            call("cifar10")


def test_offline_gives_one_message_saying_where_to_put_the_files(cache, monkeypatch):
    use_mirrors(monkeypatch, closed_port_url(), closed_port_url())
    with pytest.raises(DownloadError) as caught:
        get_dataset("mnist", progress=False)
    message = str(caught.value)
    assert message.startswith("data set mnist: cannot download (http://127.0.0.1:")
    assert "Connection refused" in message and "offline?" in message and "\n" not in message
    assert f"{', '.join(FILES)} in {cache} by hand" in message
    assert names_in(cache) == []


def test_a_directory_that_cannot_be_written(tmp_path, cache, monkeypatch):
    (tmp_path / "a-file").write_text("not a directory")
    use_mirrors(monkeypatch, closed_port_url())
    with pytest.raises(DownloadError, match=rf"data set mnist: cannot write {tmp_path}/a-file/sub \("):
        get_dataset("mnist", directory=tmp_path / "a-file" / "sub")


def test_the_progress_bar_names_the_file(server, cache, monkeypatch, capsys):
    server.serve("a")
    use_mirrors(monkeypatch, server.url("a"))
    get_dataset("mnist", progress=True)
    err = capsys.readouterr().err
    size = len(BODIES[FILES[0]]) / 1e6
    assert f"\r{FILES[0]} [##############################] {size:.1f}/{size:.1f} MB" in err
    assert err.endswith("\r\033[K")
    get_dataset("mnist", directory=cache.parent / "quiet", progress=False)
    assert capsys.readouterr().err == ""


def test_debian_copies_are_found_without_downloading(server, cache, monkeypatch, tmp_path):
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in FILES:
        (debian / name).write_bytes(BODIES[name])
    monkeypatch.setattr(download, "FASHION_MNIST_DIR", debian)
    monkeypatch.setitem(
        DATASETS,
        "fashion-mnist",
        Dataset(sha256={n: "0" * 64 for n in FILES}, mirrors=(server.url("a"),), repacked=dict(HASHES)),
    )
    assert find_dataset("fashion-mnist") == debian
    assert get_dataset("fashion-mnist") == debian and server.requests == []
    assert find_dataset("mnist") is None  # only Fashion-MNIST has a Debian package


def test_the_pinned_table_is_well_formed():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for dataset in DATASETS.values():
        hashes = list(dataset.sha256.values()) + list(dataset.repacked.values())
        assert set(dataset.sha256) == set(FILES) and set(dataset.repacked) <= set(FILES)
        assert all(len(h) == 64 and set(h) <= set("0123456789abcdef") for h in hashes)
        assert len(set(hashes)) == len(hashes) and dataset.mirrors


DEBIAN_FASHION_MNIST = download.FASHION_MNIST_DIR  # read before a fixture patches it


@pytest.mark.skipif(
    not all((DEBIAN_FASHION_MNIST / n).is_file() for n in FILES),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_the_pinned_hashes_match_debians_fashion_mnist(cache, monkeypatch):
    table = DATASETS["fashion-mnist"]
    for name in FILES:
        digest = hashlib.sha256((DEBIAN_FASHION_MNIST / name).read_bytes()).hexdigest()
        assert digest == table.repacked[name]
    monkeypatch.setattr(download, "FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST)
    assert find_dataset("fashion-mnist") == DEBIAN_FASHION_MNIST


def test_a_server_that_never_answers_counts_as_offline(cache, monkeypatch):
    with socket.socket() as listener:  # connections queue, none is answered
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        use_mirrors(monkeypatch, f"http://127.0.0.1:{listener.getsockname()[1]}/")
        with pytest.raises(
            DownloadError,
            match=r"^data set mnist: cannot download \(http://127.0.0.1:\d+/"
            r"train-images-idx3-ubyte.gz: no answer in 0.2 s\); offline\?",
        ):
            get_dataset("mnist", timeout=0.2, progress=False)


# --- bounded in time and size (issue 15) ---------------------------------------------------------


def one_line_of(info) -> str:
    text = str(info.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def test_a_server_sending_a_byte_at_a_time_meets_the_deadline(server, cache, monkeypatch):
    server.serve("a", "slow")
    use_mirrors(monkeypatch, server.url("a"))
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        get_dataset("mnist", progress=False, deadline=0.5)
    assert time.monotonic() - start < 5  # was: until the whole body had trickled in, at any pace
    assert "in 0.5 s, not the whole file; the deadline is QMTIK_DOWNLOAD_DEADLINE" in one_line_of(info)
    assert names_in(cache) == [] and not cache.exists()


def test_the_deadline_comes_from_the_environment(server, cache, monkeypatch):
    server.serve("a", "slow")
    use_mirrors(monkeypatch, server.url("a"))
    monkeypatch.setenv("QMTIK_DOWNLOAD_DEADLINE", "0.3")
    with pytest.raises(DownloadError, match="in 0.3 s, not the whole file"):
        get_dataset("mnist", progress=False)
    monkeypatch.setenv("QMTIK_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(DownloadError, match="download deadline 'soon': expected a number of seconds > 0"):
        get_dataset("mnist", progress=False)


@pytest.mark.parametrize("pinned", [True, False])
def test_an_endless_body_stops_at_the_pinned_size(server, cache, monkeypatch, pinned):
    server.serve("a", "endless")
    use_mirrors(monkeypatch, server.url("a"), pinned=pinned)
    monkeypatch.setattr(download, "UNPINNED_SIZE", 1 << 20)
    with pytest.raises(DownloadError) as info:
        get_dataset("mnist", progress=False, deadline=20)
    most = len(BODIES[FILES[0]]) if pinned else 1 << 20
    assert f"more than the {most:,} bytes of train-images-idx3-ubyte.gz; refused" in one_line_of(info)
    assert names_in(cache) == []  # was: the body written on and on (12.2 GB in 45 s)


def test_a_length_past_the_pinned_size_is_refused_before_the_body(server, cache, monkeypatch):
    server.serve("a", "big-length")
    use_mirrors(monkeypatch, server.url("a"))
    with pytest.raises(DownloadError) as info:
        get_dataset("mnist", progress=False)
    assert f"announces 1,000,000,000,000 bytes; train-images-idx3-ubyte.gz is {len(BODIES[FILES[0]]):,}" in (
        one_line_of(info)
    )


def test_a_wrong_length_fails_the_checksum(server, cache, monkeypatch):
    server.serve("a", "short-length")
    use_mirrors(monkeypatch, server.url("a"))
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        get_dataset("mnist", progress=False)
    one_line_of(info)


def test_a_redirect_loop_is_one_line(server, cache, monkeypatch):
    server.serve("a", "redirect")
    use_mirrors(monkeypatch, server.url("a"))
    with pytest.raises(DownloadError) as info:
        get_dataset("mnist", progress=False)
    assert one_line_of(info).endswith(
        "train-images-idx3-ubyte.gz: redirected in a loop (or more than 10 times); HTTP 302"
    )


def test_a_failed_get_into_a_new_directory_removes_what_it_made(server, cache, monkeypatch, tmp_path):
    server.serve("a", only=FILES[:2])  # the third file is missing: 404
    use_mirrors(monkeypatch, server.url("a"))
    (tmp_path / "old").mkdir()
    with pytest.raises(DownloadError, match="HTTP 404"):
        get_dataset("mnist", directory=tmp_path / "old" / "a" / "b", progress=False)
    assert names_in(tmp_path / "old") == []  # was: a/b left behind, with two files
    (tmp_path / "old" / "a").mkdir()
    (tmp_path / "old" / "a" / "mine.txt").write_text("kept")
    with pytest.raises(DownloadError, match="HTTP 404"):
        get_dataset("mnist", directory=tmp_path / "old" / "a" / "b", progress=False)
    assert names_in(tmp_path / "old" / "a") == ["mine.txt"]


def test_data_get_takes_a_deadline(server, cache, monkeypatch, tmp_path, capsys):
    from qmtik.cli import main

    server.serve("a", "slow")
    use_mirrors(monkeypatch, server.url("a"))
    code = main(["data", "get", "mnist", "--dir", str(tmp_path / "x" / "y"), "--deadline", "0.3"])
    err = capsys.readouterr().err
    assert code == 1 and "in 0.3 s, not the whole file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
