"""Label-preserving augmentation: rotations and reflections by channel swapping.

The 16 patterns of the audio channel swapping method (Wang et al. 2021; Mazzon et al.
2019 for FOA): azimuth -> sign * azimuth + k * 90 degrees, elevation -> +-elevation.
Each is an orthogonal signed-permutation matrix T on (x, y, z). In FOA it maps the
dipole channels (X, Y, Z) by T. For a microphone array, a pattern is usable when T maps
the capsule set onto itself: then the signal of a source at T d on capsule i is the
signal of the source at d on the capsule at T^-1 c_i, a plain channel permutation
(the tetrahedral array keeps 8 of the 16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seld.arrays import Array


@dataclass(frozen=True)
class ChannelSwap:
    """One pattern: new channel i = sign[i] * old channel source[i]; directions d -> matrix @ d."""

    matrix: np.ndarray  # [3, 3]
    source: tuple[int, ...]
    sign: tuple[float, ...]

    def apply_audio(self, audio: np.ndarray) -> np.ndarray:
        """[channels, samples] (or [..., channels, samples]) -> transformed copy."""
        signs = np.asarray(self.sign, audio.dtype)[:, None]
        return audio[..., list(self.source), :] * signs

    def apply_directions(self, azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        azimuth, elevation = np.radians(azimuth_deg), np.radians(elevation_deg)
        vectors = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        x, y, z = self.matrix @ vectors.reshape(3, -1)
        new_azimuth = np.degrees(np.arctan2(y, x)).reshape(np.shape(azimuth_deg))
        new_elevation = np.degrees(np.arcsin(np.clip(z, -1, 1))).reshape(np.shape(elevation_deg))
        return new_azimuth, new_elevation


def _direction_transforms() -> list[np.ndarray]:
    transforms = []
    for reflect in (1, -1):
        for quarter_turns in range(4):
            for flip in (1, -1):
                angle = quarter_turns * np.pi / 2
                rotation = np.round(np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]))
                transforms.append(rotation @ np.diag([1.0, reflect, flip]))
    return transforms


def channel_swaps(array: Array) -> list[ChannelSwap]:
    """The channel-swapping patterns available for an array (identity first)."""
    patterns = []
    for matrix in _direction_transforms():
        if array.kind == "foa":
            # W, Y, Z, X: (X, Y, Z)' = T (X, Y, Z); T is a signed permutation.
            xyz_channel = {0: 3, 1: 1, 2: 2}
            source, sign = [0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0]
            for row in range(3):
                column = int(np.argmax(np.abs(matrix[row])))
                source[xyz_channel[row]] = xyz_channel[column]
                sign[xyz_channel[row]] = float(np.sign(matrix[row, column]))
            patterns.append(ChannelSwap(matrix, tuple(source), tuple(sign)))
            continue
        capsules = np.asarray(array.capsules_m)
        inverse_mapped = capsules @ matrix  # rows: T^-1 c_i (T orthogonal, so T^-1 = T^T)
        distances = np.linalg.norm(inverse_mapped[:, None, :] - capsules[None, :, :], axis=-1)
        matches = distances.argmin(axis=1)
        tolerance = 1e-3 * max(np.linalg.norm(capsules, axis=1).max(), 1e-9)
        if np.all(distances[np.arange(len(capsules)), matches] < tolerance) and len(set(matches)) == len(capsules):
            patterns.append(ChannelSwap(matrix, tuple(int(m) for m in matches), (1.0,) * len(capsules)))
    return patterns
