"""DCASE metadata and prediction CSV files: read, write, find and pair them.

Every year's variant is read into one in-memory form, :class:`Events`: one row per
active event per 100 ms label frame, with the direction in degrees (azimuth 0 at
the front, counter-clockwise positive; elevation positive up) and the distance in
**metres** (or ``None`` when the file has no distance column).

On disk (README, Conventions and Outputs):

==========  ==========================================  =================================
columns     reference (metadata)                        prediction
==========  ==========================================  =================================
5           frame,class,source,azimuth,elevation        frame,class,track,azimuth,elevation
6           ... ,distance_cm                            ... ,distance_m (polar), or
                                                        frame,class,track,x,y,z (Cartesian)
7           frame,class,source,x,y,z,distance_cm        frame,class,track,x,y,z,distance_m
==========  ==========================================  =================================

A 6-column prediction file is read as Cartesian when columns 4-6 of every row are a
direction vector as the baselines write them (every component within [-1, 1], not all
zero: raw ACCDOA outputs are not unit vectors), polar with distance otherwise; a file
of polar rows all within a degree of straight ahead and 1 m away reads as Cartesian, so
``six_columns`` ("polar" or "cartesian") can say which. Files are written without a
header; a header line, if present, is skipped when reading.

numpy only: this module is on the inference path and must not import torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from seld import SeldError
from seld.atomic import write_text_atomic

Kind = Literal["reference", "prediction"]
SIX_COLUMNS = ("auto", "polar", "cartesian")  # how a 6-column prediction file is read
_LARGEST_INDEX = 2**31 - 1  # frames (6.8 years at 10 per second), classes and tracks


@dataclass(frozen=True)
class Events:
    """The events of one file, one row per (frame, event), in file order.

    frame: label frame index (100 ms frames, 0-based), int64.
    class_index: sound class, int64.
    track: source id (references) or track id (predictions), int64.
    azimuth, elevation: degrees, float64.
    distance: metres, float64, or None when the file carries no distance.
    """

    frame: np.ndarray
    class_index: np.ndarray
    track: np.ndarray
    azimuth: np.ndarray
    elevation: np.ndarray
    distance: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Normalize dtypes once, so every consumer can rely on them.
        n = len(self.frame)
        object.__setattr__(self, "frame", np.asarray(self.frame, dtype=np.int64).reshape(n))
        object.__setattr__(self, "class_index", np.asarray(self.class_index, dtype=np.int64).reshape(n))
        object.__setattr__(self, "track", np.asarray(self.track, dtype=np.int64).reshape(n))
        object.__setattr__(self, "azimuth", np.asarray(self.azimuth, dtype=np.float64).reshape(n))
        object.__setattr__(self, "elevation", np.asarray(self.elevation, dtype=np.float64).reshape(n))
        if self.distance is not None:
            object.__setattr__(self, "distance", np.asarray(self.distance, dtype=np.float64).reshape(n))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_distance(self) -> bool:
        return self.distance is not None

    @classmethod
    def empty(cls, with_distance: bool = True) -> "Events":
        zeros = np.zeros(0)
        return cls(zeros, zeros, zeros, zeros, zeros, zeros if with_distance else None)

    @classmethod
    def from_cartesian(cls, frame, class_index, track, x, y, z, distance=None) -> "Events":
        """Events from direction vectors (any length but zero), as the baselines write them."""
        azimuth, elevation = cartesian_to_polar(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
        return cls(frame, class_index, track, azimuth, elevation, distance)

    def unit_vectors(self) -> np.ndarray:
        """[n, 3] unit direction vectors (x front, y left, z up)."""
        return np.stack(polar_to_cartesian(self.azimuth, self.elevation), axis=-1)

    def without_distance(self) -> "Events":
        return Events(self.frame, self.class_index, self.track, self.azimuth, self.elevation, None)


def polar_to_cartesian(azimuth: np.ndarray, elevation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Degrees to a unit vector: x = cos(el)cos(az), y = cos(el)sin(az), z = sin(el)."""
    azimuth_rad = np.asarray(azimuth) * np.pi / 180.0
    elevation_rad = np.asarray(elevation) * np.pi / 180.0
    cos_elevation = np.cos(elevation_rad)
    return np.cos(azimuth_rad) * cos_elevation, np.sin(azimuth_rad) * cos_elevation, np.sin(elevation_rad)


def cartesian_to_polar(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direction vector (any length) to (azimuth, elevation) in degrees, as the baselines do."""
    # Same operation order as the baselines, so their numbers come out bit for bit.
    azimuth = np.arctan2(y, x) * 180 / np.pi
    elevation = np.arctan2(z, np.sqrt(x**2 + y**2)) * 180 / np.pi
    return azimuth, elevation


# ----------------------------------------------------------------------------- reading


def _parse_integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = float(text)  # "12.0" from writers that print every number as a float
        if not value.is_integer():
            raise ValueError(f"{text!r} is not an integer") from None
        return int(value)


def _is_header(fields: list[str]) -> bool:
    """5 to 7 fields, none a number (a first row with a typo in one number is an error, not a header;
    a row of other separators, "0;1;0;0;0;2", too: as a header it left the file empty)."""
    if not 5 <= len(fields) <= 7:
        return False
    for field in fields:
        try:
            float(field)
        except ValueError:
            continue
        return False
    return True


def _read_rows(path: Path) -> tuple[list[tuple[int, int, int, list[float]]], int]:
    """Parse the rows of a CSV: (frame, class, track, [numbers...]) and their column count."""
    label = str(path)  # the whole path: dev-train and dev-test may hold files of the same name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SeldError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SeldError(f"{path}: cannot read: {error}") from None

    rows: list[tuple[int, int, int, list[float]]] = []
    columns = 0
    first_line_of_columns = 0
    seen_content = False
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        fields = [field.strip() for field in stripped.split(",")]
        if not seen_content:
            seen_content = True
            if _is_header(fields):
                continue
        if not 5 <= len(fields) <= 7:
            raise SeldError(f"{label} line {line_number}: expected 5 to 7 columns, got {len(fields)}")
        if columns and len(fields) != columns:
            raise SeldError(
                f"{label} line {line_number}: {len(fields)} columns, but line {first_line_of_columns} "
                f"has {columns}; every row of a file must have the same columns"
            )
        if not columns:
            columns, first_line_of_columns = len(fields), line_number
        try:
            frame, class_index, track = (_parse_integer(field) for field in fields[:3])
            numbers = [float(field) for field in fields[3:]]
        except ValueError as error:
            raise SeldError(f"{label} line {line_number}: not a number: {error}") from None
        if frame < 0 or class_index < 0:
            raise SeldError(f"{label} line {line_number}: frame and class must be >= 0, got {frame}, {class_index}")
        if max(frame, class_index, abs(track)) > _LARGEST_INDEX:
            raise SeldError(f"{label} line {line_number}: frame, class or track beyond {_LARGEST_INDEX}")
        if not all(math.isfinite(number) for number in numbers):
            raise SeldError(f"{label} line {line_number}: non-finite value")
        rows.append((frame, class_index, track, numbers))
    return rows, columns


def _is_cartesian_6(numbers: np.ndarray) -> bool:
    vectors = numbers[:, :3]
    return bool(np.all(np.abs(vectors) <= 1.0) and np.all(np.abs(vectors).max(axis=1) > 0))


def read_events(path: str | os.PathLike, kind: Kind, six_columns: str = "auto",
                read_as_cartesian: list | None = None, read_as_polar: list | None = None) -> Events:
    """Read a reference (``kind="reference"``, distance in cm) or prediction (distance in m) CSV.
    ``six_columns``: how a 6-column prediction file is read (see the module docstring).

    Raises SeldError naming the file and line for a malformed row. An empty file
    gives no events and counts as having distance (nothing contradicts it).
    """
    if kind not in ("reference", "prediction"):
        raise ValueError(f"kind must be 'reference' or 'prediction', not {kind!r}")
    if six_columns not in SIX_COLUMNS:
        raise ValueError(f"six_columns must be one of {SIX_COLUMNS}, not {six_columns!r}")
    path = Path(path)
    rows, columns = _read_rows(path)
    if not rows:
        return Events.empty(with_distance=True)
    frame = np.array([row[0] for row in rows], dtype=np.int64)
    class_index = np.array([row[1] for row in rows], dtype=np.int64)
    track = np.array([row[2] for row in rows], dtype=np.int64)
    numbers = np.array([row[3] for row in rows], dtype=np.float64)
    distance_scale = 0.01 if kind == "reference" else 1.0  # references store centimetres

    if columns == 5:
        return Events(frame, class_index, track, numbers[:, 0], numbers[:, 1], None)
    if columns == 7:
        # The vector's length is ignored (a zero vector reads as azimuth 0, elevation 0), as in the baselines.
        x, y, z = numbers[:, 0], numbers[:, 1], numbers[:, 2]
        return Events.from_cartesian(frame, class_index, track, x, y, z, numbers[:, 3] * distance_scale)
    # 6 columns: polar with distance, or (predictions only) Cartesian without.
    if kind == "prediction" and (six_columns == "cartesian" or (six_columns == "auto" and _is_cartesian_6(numbers))):
        if six_columns == "auto" and read_as_cartesian is not None:  # the caller says so: it was a guess
            read_as_cartesian.append(path)
        return Events.from_cartesian(frame, class_index, track, numbers[:, 0], numbers[:, 1], numbers[:, 2], None)
    if kind == "prediction" and six_columns == "auto" and read_as_polar is not None:
        read_as_polar.append(path)
    return Events(frame, class_index, track, numbers[:, 0], numbers[:, 1], numbers[:, 2] * distance_scale)


def read_reference(path: str | os.PathLike) -> Events:
    """Reference metadata: ``frame,class,source,azimuth,elevation[,distance_cm]``; distance in m."""
    return read_events(path, "reference")


def read_prediction(path: str | os.PathLike, six_columns: str = "auto", read_as_cartesian: list | None = None,
                    read_as_polar: list | None = None) -> Events:
    """A prediction CSV of any variant (polar or Cartesian, with or without distance in m).
    `read_as_cartesian` and `read_as_polar` collect the paths of 6-column files by how "auto" read them."""
    return read_events(path, "prediction", six_columns, read_as_cartesian, read_as_polar)


# ----------------------------------------------------------------------------- writing


def _number(value: float) -> str:
    """Shortest text that reads back to the same float; integers without a decimal point."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _sorted_rows(events: Events) -> np.ndarray:
    return np.argsort(events.frame, kind="stable")


def write_reference(path: str | os.PathLike, events: Events) -> None:
    """Write STARSS23 metadata: ``frame,class,source,azimuth,elevation[,distance_cm]``, sorted by frame."""
    lines = []
    for i in _sorted_rows(events):
        fields = [str(events.frame[i]), str(events.class_index[i]), str(events.track[i]),
                  _number(events.azimuth[i]), _number(events.elevation[i])]
        if events.distance is not None:
            # round away float noise of the m -> cm conversion; whole centimetres stay integers
            fields.append(_number(round(events.distance[i] * 100.0, 9)))
        lines.append(",".join(fields))
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def write_prediction(path: str | os.PathLike, events: Events, cartesian: bool = False) -> None:
    """Write a prediction CSV, sorted by frame.

    Polar (default, what ``seld annotate`` writes): ``frame,class,track,azimuth,elevation[,distance_m]``.
    Cartesian (what the baselines write): ``frame,class,track,x,y,z[,distance_m]``.
    """
    if cartesian:
        x, y, z = polar_to_cartesian(events.azimuth, events.elevation)
        directions = np.stack([x, y, z], axis=-1)
    else:
        directions = np.stack([events.azimuth, events.elevation], axis=-1)
    lines = []
    for i in _sorted_rows(events):
        fields = [str(events.frame[i]), str(events.class_index[i]), str(events.track[i])]
        fields += [_number(value) for value in directions[i]]
        if events.distance is not None:
            fields.append(_number(events.distance[i]))
        lines.append(",".join(fields))
    write_text_atomic(path, "".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------- finding files


def find_csv_files(folder: str | os.PathLike, leaving_out: str | os.PathLike | None = None) -> list[Path]:
    """Every ``*.csv`` under ``folder``, recursively, as paths relative to it, sorted.

    Hidden files and folders (names starting with '.') are left out: they are
    temporary files of an interrupted write or editor droppings. So is the folder
    ``leaving_out`` where it lies strictly inside ``folder`` (predictions written into the references'
    tree, or references inside the predictions').
    """
    root = Path(folder)
    if not root.is_dir():
        raise SeldError(f"{root}: no such folder")
    skip = _inside(leaving_out, root) if leaving_out is not None else ()
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if skip and relative.parts[:len(skip)] == skip:
            continue
        if path.suffix.lower() == ".csv" and path.is_file():
            found.append(relative)
    return sorted(found)


def _inside(folder: str | os.PathLike, root: Path) -> tuple[str, ...]:
    """The parts of `folder`'s path relative to `root` where it lies strictly inside it, else ()."""
    try:
        return Path(folder).resolve().relative_to(root.resolve()).parts
    except (ValueError, OSError, RuntimeError):
        return ()


@dataclass(frozen=True)
class FilePairs:
    """Predictions paired with references; ``skipped`` holds (prediction, reason)."""

    matched: list[tuple[Path, Path]]  # (prediction path, reference path), absolute
    skipped: list[tuple[Path, str]]
    unpaired_references: int = 0  # references no prediction was paired with (not scored)


def match_files(reference_folder: str | os.PathLike, prediction_folder: str | os.PathLike) -> FilePairs:
    """Pair each prediction CSV with its reference: by relative path, else by file name when unique.

    A name is only used when exactly one reference not already taken by path and
    exactly one unmatched prediction carry it, so no reference is scored twice.
    """
    reference_root, prediction_root = Path(reference_folder), Path(prediction_folder)
    references = find_csv_files(reference_root, leaving_out=prediction_root)
    predictions = find_csv_files(prediction_root, leaving_out=reference_root)
    reference_set = set(references)
    references_by_name: dict[str, list[Path]] = {}
    for relative in references:
        references_by_name.setdefault(relative.name, []).append(relative)
    unmatched = [relative for relative in predictions if relative not in reference_set]
    # A reference taken by its relative path is not offered again by name.
    taken = reference_set.intersection(predictions)
    for relative in taken:
        references_by_name[relative.name].remove(relative)
    predictions_by_name: dict[str, int] = {}
    for relative in unmatched:
        predictions_by_name[relative.name] = predictions_by_name.get(relative.name, 0) + 1

    matched: list[tuple[Path, Path]] = []
    skipped: list[tuple[Path, str]] = []
    for relative in predictions:
        if relative in reference_set:
            matched.append((prediction_root / relative, reference_root / relative))
            continue
        candidates = references_by_name.get(relative.name, [])
        if not candidates:
            skipped.append((prediction_root / relative, f"no reference named {relative.name}"))
        elif len(candidates) > 1:
            skipped.append((prediction_root / relative,
                            f"{len(candidates)} references named {relative.name}; place it at the same relative path"))
        elif predictions_by_name[relative.name] > 1:
            skipped.append((prediction_root / relative,
                            f"{predictions_by_name[relative.name]} predictions named {relative.name}; "
                            "place it at the same relative path as its reference"))
        else:
            matched.append((prediction_root / relative, reference_root / candidates[0]))
    return FilePairs(matched, skipped, len(references) - len(matched))
