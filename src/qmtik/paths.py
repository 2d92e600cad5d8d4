"""Where qmtik's outputs go when no path is given, and how an unfinished run's checkpoint is known.

A run is named by its config: digits.toml trains into digits.ckpt.npz, whose history, curves
and integer model sit beside it as digits.history.json, digits.curves.png and digits.qmt. Files
made from a model (a header, a picture) take the model's name up to its first dot and go in
the working folder. The command line uses these rules; so may a script that wants the same names.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

RESUME_ENTRY = "resume.epoch.npy"  # in a checkpoint while its run has not finished (checkpoint.save)


def default_checkpoint(config_path) -> Path:
    """digits.toml -> digits.ckpt.npz, beside the config."""
    return Path(config_path).with_suffix(".ckpt.npz")


def run_name(checkpoint) -> str:
    """digits.ckpt.npz -> digits: the checkpoint's name without .npz and then .ckpt."""
    name = Path(checkpoint).name
    for suffix in (".npz", ".ckpt"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def history_path(checkpoint) -> Path:
    """digits.ckpt.npz -> digits.history.json, beside the checkpoint."""
    return Path(checkpoint).with_name(run_name(checkpoint) + ".history.json")


def curves_path(checkpoint) -> Path:
    """digits.ckpt.npz -> digits.curves.png, beside the checkpoint."""
    return Path(checkpoint).with_name(run_name(checkpoint) + ".curves.png")


def qmt_path(checkpoint) -> Path:
    """digits.ckpt.npz -> digits.qmt, beside the checkpoint."""
    return Path(checkpoint).with_name(run_name(checkpoint) + ".qmt")


def made_from(model_path, suffix: str) -> Path:
    """A file made from a model, here: ('run/digits.ckpt.npz', '.h') -> digits.h."""
    return Path(Path(model_path).name.split(".")[0] + suffix)


def convert_outputs(out, to: str, split: float) -> list[Path]:
    """The files `data.convert_file` writes for OUT: OUT.npz or OUT.bin, or OUT_train and
    OUT_test with a split (split < 1)."""
    out = Path(out)
    suffix = ".npz" if to == "npz" else ".bin"
    stems = [out.name] if split == 1 else [out.name + "_train", out.name + "_test"]
    return [out.with_name(stem + suffix) for stem in stems]


def unfinished_run(path) -> bool:
    """Whether path is a checkpoint of a run that has not finished: it holds 'resume.epoch'
    (see checkpoint.save). Only the zip's table of contents is read, so a damaged or foreign
    file is not one, and a FIFO or device is not opened."""
    if not os.path.isfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return RESUME_ENTRY in archive.namelist()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return False
