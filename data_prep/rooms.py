"""Shoebox rooms: geometry, wall materials (pyroomacoustics' database, per octave band),
reverberation from theory, and image sources from pyroomacoustics.

A room here is a plain description (:class:`RoomSpec`); :func:`image_sources` builds the
pyroomacoustics shoebox once per room and asks it for the image sources of each source
position. The late reverberation is not taken from image sources: statistical room
acoustics gives its energy and decay per band (see :func:`reverb_energy`), and
``array_response`` renders it as a diffuse field.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pyroomacoustics as pra

from seld import SeldError

SPEED_OF_SOUND = 343.0
BAND_CENTRES = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
WALLS = ("west", "east", "south", "north", "floor", "ceiling")  # pyroomacoustics' shoebox order

DIMENSION_RANGES = ((3.0, 20.0), (3.0, 15.0), (2.5, 6.0))
RT60_RANGE = (0.2, 1.5)
# Material families per surface, from pyroomacoustics' database.
WALL_MATERIALS = (
    "hard_surface", "brickwork", "rough_concrete", "plasterboard", "wooden_lining", "glass_window",
    "limestone_wall", "smooth_brickwork_10mm_pointing", "wood_16mm", "curtains_cotton_0.5",
    "curtains_velvet", "acoustical_plaster_25mm", "facing_brick", "double_glazing_30mm",
)
FLOOR_MATERIALS = (
    "concrete_floor", "marble_floor", "linoleum_on_concrete", "carpet_cotton", "carpet_thin",
    "carpet_hairy", "stage_floor", "audience_floor", "carpet_tufted_9.5mm",
)
CEILING_MATERIALS = (
    "ceiling_plasterboard", "ceiling_fissured_tile", "ceiling_perforated_gypsum_board",
    "ceiling_melamine_foam", "hard_surface", "plasterboard", "rough_concrete", "ceiling_metal_panel",
)


@dataclass(frozen=True)
class RoomSpec:
    """A shoebox room: dimensions (x, y, z) in metres and one material name per wall.

    ``absorption`` [6 walls, 7 bands] is the energy absorption per octave band, as
    pyroomacoustics resolves the materials; ``anechoic`` rooms absorb everything.
    """

    dimensions: tuple[float, float, float]
    materials: tuple[str, ...]
    absorption: tuple[tuple[float, ...], ...] = field(repr=False)
    max_order: int = 3

    @classmethod
    def from_materials(cls, dimensions, materials, max_order: int = 3) -> "RoomSpec":
        absorption = tuple(tuple(float(a) for a in _material_absorption(m)) for m in materials)
        return cls(tuple(float(d) for d in dimensions), tuple(materials), absorption, max_order)

    @classmethod
    def anechoic(cls, dimensions=(20.0, 20.0, 10.0)) -> "RoomSpec":
        """Free field: only the direct path, no reverberation (for tests of directions)."""
        return cls(tuple(float(d) for d in dimensions), ("anechoic",) * 6, ((1.0,) * 7,) * 6, 0)

    @property
    def is_anechoic(self) -> bool:
        return min(min(a) for a in self.absorption) >= 0.999

    @property
    def volume(self) -> float:
        x, y, z = self.dimensions
        return x * y * z

    @property
    def wall_areas(self) -> np.ndarray:
        x, y, z = self.dimensions
        return np.array([y * z, y * z, x * z, x * z, x * y, x * y])

    def mean_absorption(self) -> np.ndarray:
        """Area-weighted energy absorption per band [7]."""
        areas = self.wall_areas
        return (areas[:, None] * np.array(self.absorption)).sum(axis=0) / areas.sum()

    def rt60(self) -> np.ndarray:
        """Eyring reverberation time per octave band [7], seconds (0 when anechoic)."""
        alpha = np.clip(self.mean_absorption(), 1e-6, 0.999999)
        surface = self.wall_areas.sum()
        with np.errstate(divide="ignore"):
            rt = 0.161 * self.volume / (-surface * np.log1p(-alpha))
        return np.where(self.mean_absorption() >= 0.999, 0.0, rt)

    def mixing_time(self) -> float:
        """Seconds after emission from which the late reverberation is treated as diffuse:
        about `max_order` mean free paths, where image sources of higher order take over."""
        mean_free_path = 4 * self.volume / self.wall_areas.sum()
        return float(np.clip(self.max_order * mean_free_path / SPEED_OF_SOUND, 0.02, 0.08))

    def to_dict(self) -> dict:
        return {
            "dimensions_m": list(self.dimensions),
            "materials": dict(zip(WALLS, self.materials)),
            "rt60_s": {str(int(f)): round(float(t), 3) for f, t in zip(BAND_CENTRES, self.rt60())},
            "max_image_order": self.max_order,
        }


def _material_absorption(name: str) -> np.ndarray:
    """7-band energy absorption of a pyroomacoustics material (6-band entries extended)."""
    if name == "anechoic":
        return np.ones(7)
    try:
        coeffs = pra.Material(name).energy_absorption["coeffs"]
    except Exception:
        raise SeldError(f"room material {name!r}: not in pyroomacoustics' materials database") from None
    coeffs = list(coeffs) + [coeffs[-1]] * (7 - len(coeffs))
    return np.array(coeffs[:7], float)


def random_room(rng: np.random.Generator, max_order: int = 3) -> RoomSpec:
    """A shoebox room in DIMENSION_RANGES whose mid-band RT60 (500-1000 Hz) falls in
    0.2-1.5 s as its size and materials give it; redrawn until it does."""
    for _ in range(1000):
        dims = tuple(round(float(rng.uniform(lo, hi)), 2) for lo, hi in DIMENSION_RANGES)
        # Bigger rooms tend to be harder (halls, corridors), small ones more furnished.
        walls = [str(rng.choice(WALL_MATERIALS)) for _ in range(4)]
        if rng.random() < 0.6:  # most rooms have the same finish on all four walls
            walls = [walls[0]] * 4
        materials = (*walls, str(rng.choice(FLOOR_MATERIALS)), str(rng.choice(CEILING_MATERIALS)))
        room = RoomSpec.from_materials(dims, materials, max_order)
        mid = float(room.rt60()[2:4].mean())
        if RT60_RANGE[0] <= mid <= RT60_RANGE[1]:
            return room
    raise RuntimeError("no room in range after 1000 draws")  # not reached with the tables above


def reverb_energy(room: RoomSpec) -> np.ndarray:
    """Energy of the whole reverberant part of an impulse response per band [7], in the
    units where the direct path at distance r has amplitude 1/r (energy 1/r^2).

    Statistical room acoustics: the reverberant energy density is 4/R against the direct
    field's 1/(4 pi r^2), R = S a / (1 - a) the room constant; so E = 16 pi / R, the same
    at every source position. The critical distance sqrt(R / (16 pi)) comes out right."""
    alpha = np.clip(room.mean_absorption(), 1e-6, 0.999999)
    room_constant = room.wall_areas.sum() * alpha / (1 - alpha)
    energy = 16 * math.pi / room_constant
    return np.where(room.mean_absorption() >= 0.999, 0.0, energy)


@functools.lru_cache(maxsize=16)
def _pra_room(room: RoomSpec) -> pra.ShoeBox:
    materials = {wall: pra.Material({"coeffs": list(absorption), "center_freqs": list(BAND_CENTRES)})
                 for wall, absorption in zip(WALLS, room.absorption)}
    shoebox = pra.ShoeBox(list(room.dimensions), fs=24_000, materials=materials, max_order=room.max_order,
                          air_absorption=False)
    centre = np.array(room.dimensions) / 2
    shoebox.add_source(centre)
    shoebox.add_microphone(centre)
    return shoebox


def image_sources(room: RoomSpec, source_position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image sources of one source position: (positions [N, 3] in room coordinates,
    amplitude damping per band [N, 7] (products of sqrt(1 - absorption) of the walls hit),
    reflection orders [N]). The direct path is one of them (order 0)."""
    if room.max_order == 0 or room.is_anechoic:
        return np.asarray(source_position, float)[None], np.ones((1, 7)), np.zeros(1, int)
    shoebox = _pra_room(room)
    source = shoebox.sources[0]
    source.position = np.asarray(source_position, float)
    shoebox.image_source_model()
    return source.images.T.copy(), source.damping.T.copy(), source.orders.copy()
