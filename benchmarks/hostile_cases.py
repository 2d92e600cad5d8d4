"""The hostile campaign's cases: a valid seed file per reader, its mutants, and one run of the
reader on each, judged against the exact reference (benchmarks/hostile.py runs them in workers;
tests/test_hostile.py samples them under hypothesis).

A case is a number: case 0 of an area is its seed unchanged, which must load and equal the
reference; case n > 0 is the seed mutated by a generator seeded with (area, n), so that a run
can be resumed and a failing case replayed (`python benchmarks/hostile.py --replay AREA N`).
The only outcomes allowed are a valid result (one that passes the strict validator of its area)
or one of qmtik's own errors with a one-line message.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

try:
    import qmtik
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import qmtik

from qmtik.errors import QmtikError

AREAS = (
    "model",
    "checkpoint",
    "config",
    "set",
    "idx",
    "idx.gz",
    "npy",
    "npz",
    "csv",
    "c-header",
    "c-model",
    "download",
)
MAX_LINE = 1000  # characters of a one-line message

C_HEADER = (
    "#define QMTIK_I 5\n#define QMTIK_H 3\n#define QMTIK_L 1\n#define QMTIK_O 4\n"
    "#define QMTIK_W_SCALE 0.05f\n#define QMTIK_A_SCALE 0.125f\n#define QMTIK_RELU_ACTV\n"
    "#define QMTIK_SOFT_MAX_PP\n#define QMTIK_MSE_COST\n"
)
CONFIG = (
    "[network]\ninputs = 6\nhidden = [4]\noutputs = 3\n\n[training]\nepochs = 2\nbatch_size = 8\nlearning_rate = 0.01\n"
)
OVERRIDES = ["training.epochs=3", "network.hidden=[5, 2]", "training.learning_rate=0.02", "training.optimizer='adam'"]


# --- seeds ---------------------------------------------------------------------------------------


def seeds() -> dict:
    """{area: {file name: bytes}} of valid inputs, with 'reference' data where a loader's result
    is compared; deterministic."""
    from qmtik import Config, Network
    from qmtik.data_formats import idx_bytes
    from qmtik.legacy.model_file import write_c_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 6)).astype(np.float32)
    y = np.arange(24) % 3
    net = Network(Config.from_dict({"network": {"inputs": 6, "hidden": [4], "outputs": 3}, "training": {"epochs": 2}}))
    net.fit(x, y)
    out, tmp = {}, Path(_tmpdir())
    net.save(tmp / "seed.ckpt.npz")
    out["checkpoint"] = {"net.ckpt.npz": (tmp / "seed.ckpt.npz").read_bytes()}
    out["model"] = {"m.qmt": qmtik.qmtfile.encode(net.quantize())}
    out["config"] = {"c.toml": CONFIG.encode()}
    out["set"] = {"c.toml": CONFIG.encode(), "overrides.json": json.dumps(OVERRIDES).encode()}
    images = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    out["idx"] = {"d-images-idx3-ubyte": idx_bytes(images)}
    out["idx.gz"] = {"d-images-idx3-ubyte.gz": gzip.compress(idx_bytes(images), mtime=0)}
    buffer = io.BytesIO()
    np.save(buffer, x[:5])
    out["npy"] = {"x.npy": buffer.getvalue()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x[:5], y=y[:5])
    out["npz"] = {"d.npz": buffer.getvalue()}
    rows = "\n".join(",".join(str(int(v)) for v in row) + f",{label}" for row, label in zip(x[:5], y[:5]))
    out["csv"] = {"d.csv": ("a,b,c,d,e,f,label\n" + rows + "\n").encode()}
    out["c-header"] = {"qmtik_config.h": C_HEADER.encode()}
    layers = [
        (rng.integers(-128, 128, (o, i)).astype(np.int8), rng.integers(-128, 128, o).astype(np.int8))
        for i, o in ((5, 3), (3, 3), (3, 4))
    ]
    write_c_model(tmp / "model.bin", layers)
    out["c-model"] = {"qmtik_config.h": C_HEADER.encode(), "model.bin": (tmp / "model.bin").read_bytes()}
    out["download"] = {"train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(y.astype(np.uint8)), mtime=0)}
    return out


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="qmtik-hostile-seed-")


# --- mutants -------------------------------------------------------------------------------------

EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**16, 2**20)
TEXT_VALUES = ("9" * 5000, "1e400", "nan", "-inf", "-1", "0", "[" * 5000, "1" + "0" * 30, '"x"', "true", "{}")


def mutate_bytes(blob: bytes, rng: np.random.Generator) -> bytes:
    """blob changed in 1 to 3 ways: bits flipped, an extreme integer written, cut short,
    bytes inserted or deleted, a slice repeated up to 2000 times."""
    data = bytearray(blob)
    for _ in range(int(rng.integers(1, 4))):
        how, at = int(rng.integers(0, 7)), int(rng.integers(0, max(len(data), 1)))
        if how == 0 and data:
            data[at] ^= 1 << int(rng.integers(0, 8))
        elif how == 1 and data:
            value = int(rng.choice(EXTREMES))
            raw = value.to_bytes(4, "little" if rng.integers(2) else "big")
            data[at : at + 4] = raw
        elif how == 2:
            del data[at:]
        elif how == 3:
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        elif how == 4:
            del data[at : at + int(rng.integers(1, 64))]
        elif how == 5 and data:
            piece = bytes(data[at : at + int(rng.integers(1, 8))])
            data[at:at] = piece * int(rng.integers(1, 2000))
        elif data:
            data[at] = int(rng.choice((0x00, 0xFF, 0x7F, 0x80)))
    return bytes(data)


def mutate_text(text: str, rng: np.random.Generator) -> str:
    """text with a number or a value replaced by an extreme one, or its bytes mutated."""
    if rng.integers(3) == 0:
        return mutate_bytes(text.encode(), rng).decode("utf-8", errors="replace")
    numbers = list(re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?|'[^']*'|\"[^\"]*\"|true|false", text))
    if not numbers:
        return text + str(rng.choice(TEXT_VALUES))
    match = numbers[int(rng.integers(len(numbers)))]
    value = str(rng.choice(TEXT_VALUES))
    return text[: match.start()] + value + text[match.end() :]


def mutate_npy(blob: bytes, rng: np.random.Generator) -> bytes:
    """An .npy whose header's shape or dtype is changed (declared sizes), or whose bytes are."""
    if rng.integers(2):
        return mutate_bytes(blob, rng)
    shapes = ("(1099511627776,)", "(0,)", "(4294967296, 4294967296)", "()", "(-1,)", "(5, 6, 7)", "(3,)")
    types = ("'<f8'", "'|O'", "'<U100000'", "'|V0'", "'>i2'", "'<c16'", "'|b1'")
    text = blob.decode("latin-1")
    if rng.integers(2):
        text = re.sub(r"\(\d*,?[\d, ]*\)", str(rng.choice(shapes)), text, count=1)
    else:
        text = re.sub(r"'[<>|][a-zA-Z]\d*'", str(rng.choice(types)), text, count=1)
    return text.encode("latin-1")


def mutate_zip(blob: bytes, rng: np.random.Generator) -> bytes:
    """An .npz mutated inside (one member's .npy, an added member, a claimed size) or raw."""
    if rng.integers(3) == 0:
        return mutate_bytes(blob, rng)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    names = sorted(members)
    name = names[int(rng.integers(len(names)))]
    choice = int(rng.integers(4))
    if choice == 0:
        members[name] = mutate_npy(members[name], rng)
    elif choice == 1:
        members["junk.npy"] = mutate_npy(members[name], rng)
    elif choice == 2:
        members[name] = mutate_bytes(members[name], rng)
    else:
        del members[name]
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if rng.integers(2) else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buffer.getvalue()


def mutate_gz(blob: bytes, rng: np.random.Generator) -> bytes:
    """A gzip mutated inside (then recompressed, with trailing data or a bomb), or raw."""
    inner = gzip.decompress(blob)
    choice = int(rng.integers(4))
    if choice == 0:
        return mutate_bytes(blob, rng)
    if choice == 1:  # a bomb: gzip members of 1 MB of zeros each (1 KB), up to 1 GB inflated
        return gzip.compress(inner, mtime=0) + _ZEROS_MEMBER * int(rng.integers(1, 1024))
    return gzip.compress(mutate_bytes(inner, rng), mtime=0)


_ZEROS_MEMBER = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)


def case_files(area: str, index: int, seed: dict) -> dict:
    """{file name: bytes} of case index of area (0: the seed itself)."""
    files = dict(seed)
    if index == 0:
        return files
    rng = np.random.default_rng([AREAS.index(area), index])
    if area in ("model", "idx", "c-model"):
        name = "model.bin" if area == "c-model" else next(iter(files))
        files[name] = mutate_bytes(files[name], rng)
    elif area == "c-header":
        files["qmtik_config.h"] = mutate_text(files["qmtik_config.h"].decode(), rng).encode()
    elif area in ("checkpoint", "npz"):
        name = next(iter(files))
        files[name] = mutate_zip(files[name], rng)
    elif area == "npy":
        files["x.npy"] = mutate_npy(files["x.npy"], rng)
    elif area in ("idx.gz", "download"):
        name = next(iter(files))
        files[name] = mutate_gz(files[name], rng)
    elif area in ("config", "csv"):
        name = next(iter(files))
        files[name] = mutate_text(files[name].decode("utf-8", errors="replace"), rng).encode()
    elif area == "set":
        overrides = json.loads(files["overrides.json"])
        at = int(rng.integers(len(overrides)))
        overrides[at] = mutate_text(overrides[at], rng)
        files["overrides.json"] = json.dumps(overrides).encode()
    return files


def download_mode(index: int) -> str:
    """How the loopback server serves case index of the download area."""
    modes = ("ok", "slow", "endless", "truncated", "redirect", "long-length", "short-length", "odd-length", "mutated")
    return "ok" if index == 0 else modes[index % len(modes)]


# --- one run -------------------------------------------------------------------------------------


def digest(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def run_case(area: str, index: int, seed: dict, folder: Path, server=None) -> tuple[str, str]:
    """(outcome, detail) of one case run in folder: 'valid', 'refused' (qmtik's own error, one
    line), 'unexpected' (any other exception, or a message of several lines), 'wrong' (a result
    unlike the reference, or one the strict validator refuses), 'damaged' (an input or a
    previous output changed, or a failed command left what it made)."""
    files = case_files(area, index, seed)
    inputs = [] if area == "download" else [folder / name for name in files]  # a download's input is the server's
    for path in inputs:
        path.write_bytes(files[path.name])
    before = digest(inputs)
    previous = folder / "previous.qmt"
    previous.write_bytes(b"a previous output")
    try:
        problem = READERS[area](folder, files, index, seed, server)
        outcome = ("wrong", problem) if problem else ("valid", "")
    except QmtikError as exc:
        text = str(exc)
        outcome = ("refused", text) if "\n" not in text and len(text) <= MAX_LINE else ("unexpected", text[:300])
        if "too large to read" in text or "allocate" in text:
            outcome = ("overalloc", text[:300])
    except MemoryError:
        outcome = ("overalloc", "MemoryError")
    except Exception as exc:  # noqa: BLE001 - the campaign counts these
        outcome = ("unexpected", f"{type(exc).__name__}: {str(exc)[:300]}")
    if digest(inputs) != before or previous.read_bytes() != b"a previous output":
        outcome = ("damaged", outcome[1])
    if area == "download" and outcome[0] != "valid" and (folder / "new").exists():
        outcome = ("damaged", "a failed download left the folder it made")
    return outcome


def _model(folder, files, index, seed, server):
    from qmtik.qmtfile import encode, load_model

    model = load_model(folder / "m.qmt")
    if encode(model) != files["m.qmt"]:  # one encoding per model: a file that loads is that encoding
        return "loaded, but encode(load(file)) differs from the file"
    return None


def _checkpoint(folder, files, index, seed, server):
    from qmtik import Network

    net = Network.load(folder / "net.ckpt.npz")
    if index == 0:
        net.save(folder / "again.ckpt.npz")
        if (
            Network.load(folder / "again.ckpt.npz").predict(np.eye(6) * 100).tolist()
            != net.predict(np.eye(6) * 100).tolist()
        ):
            return "the seed does not round-trip"
    scores = net.predict(np.eye(6) * 100)
    if not np.isin(scores, np.arange(3)).all():
        return f"a loaded checkpoint predicts {scores.tolist()}"
    return None


def _config(folder, files, index, seed, server, overrides=None):
    from qmtik import Config
    from qmtik.config import load_config

    config = load_config(folder / "c.toml", overrides)
    if Config.from_dict(json.loads(config.to_json())) != config:
        return "a loaded config does not round-trip through its JSON"
    if index == 0 and overrides is None and config.network.hidden != (4,):
        return f"the seed's hidden is {config.network.hidden}"
    return None


def _set(folder, files, index, seed, server):
    from qmtik.config import parse_override

    pairs = [parse_override(text) for text in json.loads(files["overrides.json"])]
    return _config(folder, files, index, seed, server, dict(pairs))


def _idx(folder, files, index, seed, server):
    from qmtik.data_formats import idx_bytes, read_idx

    name = next(iter(files))
    array = read_idx(folder / name)
    raw = gzip.decompress(files[name]) if name.endswith(".gz") else files[name]
    if array.dtype == np.uint8 and idx_bytes(array) != raw:
        return "read an array whose IDX encoding differs from the file"
    if index == 0 and array.shape != (5, 3, 4):
        return f"the seed reads as {array.shape}"
    return None


def _npy(folder, files, index, seed, server):
    from qmtik.data import read_inputs

    array = read_inputs(folder / "x.npy")
    buffer = io.BytesIO()
    np.save(buffer, array)
    if array.dtype.hasobject or (index == 0 and buffer.getvalue() != files["x.npy"]):
        return "the array read is not the file's"
    return None


def _npz(folder, files, index, seed, server):
    from qmtik.data import load_file

    x, y = load_file(folder / "d.npz")
    if x.dtype.hasobject or y.dtype.hasobject:
        return "object arrays read"
    if index == 0 and (x.shape != (5, 6) or y.tolist() != [0, 1, 2, 0, 1]):
        return "the seed reads wrong"
    return None


def _csv(folder, files, index, seed, server):
    from qmtik.data_formats import read_csv

    x, y = read_csv(folder / "d.csv")
    if x.dtype != np.float64 or x.ndim != 2 or len(x) != len(y):
        return f"read {x.dtype} {x.shape} and {len(y)} labels"
    if index == 0 and (x.shape != (5, 6) or y.tolist() != [0, 1, 2, 0, 1]):
        return "the seed reads wrong"
    return None


def _c_header(folder, files, index, seed, server):
    from qmtik import Config
    from qmtik.legacy import header_toml
    from qmtik.parsing import load_toml

    text = header_toml(folder / "qmtik_config.h")
    try:
        Config.from_dict(load_toml(text, "made config", QmtikError))
    except QmtikError as exc:
        return f"the config made from the header is refused: {exc}"
    return None


def _c_model(folder, files, index, seed, server):
    from qmtik import workflow
    from qmtik.qmtfile import decode, encode, save_model

    converted = workflow.convert_c_model(folder / "model.bin", folder / "qmtik_config.h")
    save_model(folder / "previous.qmt", converted.model)
    if encode(decode((folder / "previous.qmt").read_bytes())) != (folder / "previous.qmt").read_bytes():
        return "the converted model does not round-trip"
    (folder / "previous.qmt").write_bytes(b"a previous output")
    return None


def _download(folder, files, index, seed, server):
    from qmtik import download

    name, body = next(iter(seed.items()))
    served = files[name]
    mode = download_mode(index)
    server.serve(name, served if mode == "mutated" else body, mode)
    dataset = download.Dataset(
        sha256={f: hashlib.sha256(body).hexdigest() for f in download.FILES},
        mirrors=(server.url(),),
        sizes={f: len(body) for f in download.FILES},
    )
    download.DATASETS["hostile"] = dataset
    target = folder / "new" / "sub"
    got = download.get_dataset("hostile", directory=target, timeout=0.5, progress=False, deadline=0.5)
    if (got / name).read_bytes() != body:
        return "a download that is not the pinned file was accepted"
    if mode not in ("ok", "odd-length", "long-length") and not (mode == "mutated" and served == body):
        return f"a {mode} server was accepted"
    return None


READERS = {
    "model": _model,
    "checkpoint": _checkpoint,
    "config": _config,
    "set": _set,
    "idx": _idx,
    "idx.gz": _idx,
    "npy": _npy,
    "npz": _npz,
    "csv": _csv,
    "c-header": _c_header,
    "c-model": _c_model,
    "download": _download,
}


class Server:
    """A loopback HTTP server that misbehaves as asked: serve(name, body, mode) for every path."""

    def __init__(self):
        import http.server
        import threading

        self.body, self.mode = b"", "ok"
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                state.answer(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/"

    def serve(self, name: str, body: bytes, mode: str) -> None:
        self.body, self.mode = body, mode

    def answer(self, handler) -> None:
        import time

        body, mode = self.body, self.mode
        if mode == "redirect":
            handler.send_response(302)
            handler.send_header("Location", handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        length = {"long-length": "1" * 5000, "short-length": str(len(body) - 1), "odd-length": "\xb2"}
        if mode != "endless":
            handler.send_header("Content-Length", length.get(mode, str(len(body))))
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
                handler.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)
        except OSError:
            pass
