"""The shipped model packages (`models/foa/`, `models/mic/`), found with importlib.resources
so they work from a source checkout and from an installed wheel alike."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from seld import SeldError

FORMATS = ("foa", "mic")


def default_model_dir(format_name: str = "foa") -> Path:
    """The folder of the shipped model package for a DCASE format ("foa" or "mic")."""
    if format_name not in FORMATS:
        raise SeldError(f"unknown format {format_name!r}: expected one of {', '.join(FORMATS)}")
    folder = Path(str(files("seld.models") / format_name))
    if not (folder / "seld.json").is_file():
        raise SeldError(
            f"{folder}: no shipped {format_name} model in this installation; pass --model MODEL_DIR "
            "(train one with `seld train`, then `seld export`)"
        )
    return folder
