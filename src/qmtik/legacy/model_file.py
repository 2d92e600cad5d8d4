"""The C library's stored model files: the raw int8 dump `QMTIK_store_model` writes.

`load_c_model` reads one (its length checked against the header's sizes) into a CLibraryModel,
`write_c_model` writes one (for tests and tools), and `import_c_model` converts one to qmtik's
integer model and saves it as a .qmt file (`qmtik import-c-model`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError
from ..integer_model import QuantizedModel
from ..parsing import input_stream, read_up_to
from ..qmtfile import save_model
from .arithmetic import CLibraryModel
from .header import CHeader, read_header


def c_model_size(header: CHeader) -> int:
    """Bytes of QMTIK_Model: int8 weights and biases of every layer."""
    widths = header.widths
    return sum(n_out * (n_in + 1) for n_in, n_out in zip(widths[:-1], widths[1:]))


def load_c_model(model_path, header, use_libm: bool = True) -> CLibraryModel:
    """Read the raw int8 dump of QMTIK_store_model: [H][I] weights, [H] biases, [L][H][H],
    [L][H], [O][H], [O]. header is a CHeader or the path of its qmtik_config.h."""
    header = header if isinstance(header, CHeader) else read_header(header)
    expected = c_model_size(header)
    with input_stream(model_path, f"C model file {model_path}", ModelFormatError) as (stream, _):
        length = os.fstat(stream.fileno()).st_size if stream.seekable() else None
        blob = read_up_to(stream, expected + 1) if length in (None, expected) else b""  # no body read when wrong
    if (length if length is not None else len(blob)) != expected:
        raise ModelFormatError(
            f"C model file {model_path}: {length if length is not None else len(blob):,} bytes, expected "
            f"{expected:,} for {'-'.join(map(str, header.widths))} (from {header.path})"
        )
    data, pos, h, i, n, o = (
        np.frombuffer(blob, dtype=np.int8),
        0,
        header.hidden,
        header.inputs,
        header.hh_layers,
        header.outputs,
    )

    def take(*shape):
        nonlocal pos
        size = int(np.prod(shape))
        pos += size
        return data[pos - size : pos].reshape(shape)

    first = (take(h, i), take(h))
    hh_w, hh_b = take(n, h, h), take(n, h)
    last = (take(o, h), take(o))
    return CLibraryModel(header, [first, *zip(hh_w, hh_b), last], use_libm)


def write_c_model(path, layers) -> None:
    """Write layers [(weights, biases)] as QMTIK_store_model would (for tests and tools)."""
    first, *middle, last = layers
    parts = [first[0], first[1], *[w for w, _ in middle], *[b for _, b in middle], last[0], last[1]]
    Path(path).write_bytes(b"".join(np.asarray(p, dtype=np.int8).tobytes() for p in parts))


def import_c_model(model_path, header_path, out_path, class_names=None) -> QuantizedModel:
    """`qmtik import-c-model`: read a C library model, convert it, write it as a .qmt file."""
    model = load_c_model(model_path, header_path).to_quantized_model(class_names)
    save_model(out_path, model)
    return model
