"""Microphone arrays: the FOA format, the tetrahedral reference array, and array files.

An array file is JSON: ``{"name", "kind": "mic"|"foa", "capsules_m": [[x, y, z], ...],
"rigid_sphere_radius_m": float|null}``; channel i is capsule i. Coordinates: x front, y left,
z up, metres (README, Conventions).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from seld import SeldError

FOA_CHANNELS = ("W", "Y", "Z", "X")  # ACN order, SN3D normalization


@dataclass(frozen=True)
class Array:
    name: str
    kind: str  # "mic" or "foa"
    capsules_m: tuple[tuple[float, float, float], ...]
    rigid_sphere_radius_m: float | None = None

    @property
    def num_channels(self) -> int:
        return 4 if self.kind == "foa" else len(self.capsules_m)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "capsules_m": [list(c) for c in self.capsules_m],
            "rigid_sphere_radius_m": self.rigid_sphere_radius_m,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "array") -> "Array":
        try:
            kind = data["kind"]
            if kind not in ("mic", "foa"):
                raise ValueError(f"kind must be 'mic' or 'foa', not {kind!r}")
            capsules = tuple(tuple(float(v) for v in c) for c in data.get("capsules_m") or ())
            if any(len(c) != 3 for c in capsules):
                raise ValueError("every capsule needs [x, y, z] in metres")
            if not all(math.isfinite(v) for c in capsules for v in c):
                raise ValueError("capsule coordinates must be finite numbers")
            if kind == "mic" and len(capsules) < 2:
                raise ValueError("a mic array needs at least 2 capsules")
            if len(set(capsules)) != len(capsules):
                raise ValueError("two capsules at the same point (their channels would carry no direction)")
            radius = data.get("rigid_sphere_radius_m")
            radius = None if radius is None else float(radius)
            if radius is not None and not 0 < radius < math.inf:
                raise ValueError(f"rigid_sphere_radius_m {radius}: a positive number of metres, or null")
            return cls(str(data.get("name", kind)), kind, capsules, radius)
        except KeyError as error:
            raise SeldError(f"{source}: not a valid array description: no {error} key") from None
        except (TypeError, ValueError) as error:
            raise SeldError(f"{source}: not a valid array description: {error}") from None


def _capsule(azimuth_deg: float, elevation_deg: float, radius_m: float) -> tuple[float, float, float]:
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (
        radius_m * math.cos(elevation) * math.cos(azimuth),
        radius_m * math.cos(elevation) * math.sin(azimuth),
        radius_m * math.sin(elevation),
    )


TETRA_RADIUS_M = 0.042
# The 4-capsule tetrahedral Eigenmike subset of the DCASE MIC format.
TETRAHEDRAL = Array(
    "eigenmike_tetrahedral",
    "mic",
    tuple(_capsule(a, e, TETRA_RADIUS_M) for a, e in ((45, 35), (-45, -35), (135, -35), (-135, 35))),
    TETRA_RADIUS_M,
)
FOA = Array("foa", "foa", (), None)


def array_for_format(format_name: str) -> Array:
    """The reference array of a DCASE format name ("foa" or "mic")."""
    if format_name == "foa":
        return FOA
    if format_name == "mic":
        return TETRAHEDRAL
    raise SeldError(f"unknown format {format_name!r}: expected 'foa' or 'mic'")


def load_array(path: str | Path) -> Array:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SeldError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise SeldError(f"{path}: cannot read array JSON: {error}") from None
    if not isinstance(data, dict):
        raise SeldError(f"{path}: not a valid array description: expected a JSON object")
    return Array.from_dict(data, str(path))
