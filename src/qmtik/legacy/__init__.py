"""Carry users of the C library qmtik.h over: its config header and its stored models.

- preprocessor.py: the defines a header leaves in force (the real preprocessor, bounded, or a
  reader that refuses what it cannot evaluate).
- header.py: `read_header` reads a `qmtik_config.h` into a CHeader; header_config.py:
  `config_from_header` and `header_toml` turn it into the equivalent qmtik Config and TOML text.
- arithmetic.py: `CLibraryModel` runs a stored model with the C library's own float32
  arithmetic (`QMTIK_infer_forward`), so its classes are the C library's, sample for sample;
  `to_quantized_model` converts it to qmtik's integer-only scheme.
- model_file.py: `load_c_model` reads the raw int8 dump `QMTIK_store_model` wrote, and
  `import_c_model` writes its conversion as a .qmt file.

docs/c-library.md says which defines are read, how the conversion is done and how close it comes.
"""

from .arithmetic import CLibraryModel, c_codes, c_round, libm
from .header import CHeader, read_header
from .header_config import config_from_header, header_toml
from .model_file import c_model_size, import_c_model, load_c_model, write_c_model
from .preprocessor import header_defines

__all__ = [
    "CHeader",
    "CLibraryModel",
    "c_codes",
    "c_model_size",
    "c_round",
    "config_from_header",
    "header_defines",
    "header_toml",
    "import_c_model",
    "libm",
    "load_c_model",
    "read_header",
    "write_c_model",
]
