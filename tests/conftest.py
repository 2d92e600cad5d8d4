"""Fixtures shared by the test files."""

import gzip
import hashlib
import socket

import numpy as np
import pytest

import qmtik
from qmtik import download
from qmtik.data_formats import idx_bytes


@pytest.fixture(autouse=True)
def every_qmt_is_canonical(monkeypatch):
    """Every .qmt file any test encodes (saved, exported, measured) is checked to be canonical:
    encode(decode(b)) == b (issue 11: one encoding per model). qmtfile._sealed is encode's last step."""
    from qmtik import qmtfile

    seal, busy = qmtfile._sealed, []

    def sealed_and_checked(blob: bytes) -> bytes:
        sealed = seal(blob)
        if not busy:  # encode inside the check seals again
            busy.append(True)
            try:
                again = qmtfile.encode(qmtfile.decode(sealed))
            finally:
                busy.pop()
            assert again == sealed, "encode(decode(b)) != b for a .qmt file this test encoded"
        return sealed

    monkeypatch.setattr(qmtfile, "_sealed", sealed_and_checked)


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


def hostile_npz(path, how: str, **arrays) -> None:
    """Write arrays as an .npz whose every member is unreadable one way, as a hostile file is:
    'encrypted' (the encryption flag set: zipfile raises RuntimeError), 'method' (compression
    method 99: NotImplementedError) or 'deflate' (a corrupt deflate stream: zlib.error)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.save(member, np.asarray(array))
            archive.writestr(name + ".npy", member.getvalue())
        infos = archive.infolist()
    blob = bytearray(buffer.getvalue())
    central = blob.index(b"PK\x01\x02")
    for info in infos:
        local, entry = info.header_offset, blob.index(b"PK\x01\x02", central)
        if how == "encrypted":
            blob[local + 6] |= 1
            blob[entry + 8] |= 1
        elif how == "method":
            blob[local + 8 : local + 10] = blob[entry + 10 : entry + 12] = (99).to_bytes(2, "little")
        else:
            start = (
                local
                + 30
                + int.from_bytes(blob[local + 26 : local + 28], "little")
                + int.from_bytes(blob[local + 28 : local + 30], "little")
            )
            blob[start : start + info.compress_size] = b"\xff" * info.compress_size  # block type 3: invalid
        central = entry + 4
    with open(path, "wb") as file:
        file.write(bytes(blob))
