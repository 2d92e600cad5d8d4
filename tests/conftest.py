"""Fixtures shared by the test files."""
import gzip
import hashlib
import socket

import numpy as np
import pytest

import qmtik
from qmtik import download
from qmtik.formats import idx_bytes


@pytest.fixture(scope="session")
def digits():
    """The bundled digits: ((train inputs, labels), (test inputs, labels))."""
    return qmtik.load_dataset("digits")


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: the connection is refused, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty qmtik cache in tmp_path, with downloads pointed at a closed port; returns the
    folder where MNIST would be cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("QMTIK_DATA_URL", closed_port_url())
    return tmp_path / "xdg" / "qmtik" / "mnist"


@pytest.fixture
def fake_mnist(offline_cache, monkeypatch):
    """A function that writes a small MNIST-shaped set into the offline cache, with the pinned
    hashes patched to its files: learnable (each class brighter than the last), not trivially."""
    def write(train: int = 40, test: int = 20, seed: int = 3):
        rng = np.random.default_rng(seed)
        offline_cache.mkdir(parents=True)
        hashes = {}
        for prefix, n in (("train", train), ("t10k", test)):
            labels = rng.integers(0, 10, n)
            images = np.clip(rng.integers(0, 160, (n, 28, 28)) + (labels * 10)[:, None, None], 0, 255)
            for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
                name = f"{prefix}-{kind}-ubyte.gz"
                blob = gzip.compress(idx_bytes(array.astype(np.uint8)), mtime=0)
                (offline_cache / name).write_bytes(blob)
                hashes[name] = hashlib.sha256(blob).hexdigest()
        monkeypatch.setitem(download.DATASETS, "mnist", download.Dataset(sha256=hashes, mirrors=()))
        return offline_cache
    return write
