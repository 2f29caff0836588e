"""Dataset preparation: synthesis (`seld synth`), sound banks, converters, the default models' recipe."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from seld import SeldError


def check_writable(folder: Path) -> None:
    """Create `folder` and prove a file can be written there, before any long work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise SeldError(f"{folder}: cannot write there ({error.strerror or error})") from None
