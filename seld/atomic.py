"""Files written whole or not at all: under a temporary name beside the target, then renamed
over it, so a reader (or a rerun after a kill) never sees half a file. The temporary name is
".NAME.<random>.tmp" in the target's folder (a rename across file systems would copy)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from seld import SeldError


def _umask() -> int:
    try:  # Linux says it without changing it (changing it races with other threads' open())
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's files are 0600
FOLDER_MODE = 0o777 & ~_umask()  # what mkdir would give; mkdtemp's folders are 0700


def temporary_beside(path: Path) -> tuple[int, str]:
    """(open descriptor, name) of a new temporary file in `path`'s folder (created if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)


def temporary_prefix(path: Path) -> str:
    """".NAME." of `path`'s temporary files; NAME cut to 200 bytes (the temporary name of a
    250-byte name would pass the file system's 255)."""
    return f".{os.fsdecode(os.fsencode(path.name)[:200])}."


def put_in_place(temporary: str | os.PathLike, path: Path) -> None:
    os.chmod(temporary, FILE_MODE)
    os.replace(temporary, path)


@contextmanager
def temporary_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file beside `path`, removed (and the error raised on) when the block raises;
    kept when it ends, for the caller to put in place (with others: see seld.outputs)."""
    descriptor, temporary = temporary_beside(Path(path))
    os.close(descriptor)
    try:
        yield Path(temporary)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write `path`'s content to: renamed to `path` when the block ends,
    removed (and the error raised on) when it raises."""
    with temporary_path(path) as temporary:
        yield temporary
        put_in_place(temporary, Path(path))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """UTF-8 with the text's own line ends ("\\n"), whatever the platform."""
    write_bytes_atomic(path, text.encode("utf-8"))


def check_writable(folder: Path) -> None:
    """Create `folder` and prove a file can be written there, before any long work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise SeldError(f"{folder}: cannot write there ({error.strerror or error})") from None
