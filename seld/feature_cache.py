"""An optional on-disk cache of training features (`seld train feature_cache=DIR`).

By default training computes features on the device from audio crops, which costs no
disk and lets channel swaps act on the audio. Where reading and transforming audio is the
bottleneck (slow disks, compressed files, a busy CPU feeding a GPU), the features of each
training file can be computed once instead: float16 .npy files, one per recording, read
back crop by crop through a memory map. Each file is padded at its end with one crop of
silence, so a crop running past the end gets the features of zeros, as an audio crop does.
The folder is keyed by a hash of everything the features depend on, and each file's name by
its audio file's size and modification time, so neither a changed front end nor rewritten
audio reads stale features; files are written whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from seld.audio import LABEL_HOP, read_audio
from seld.atomic import atomic_path
from seld.dataset import Recording

log = logging.getLogger(__name__)
TEMPORARY_MAX_AGE_S = 3600.0


def cache_folder(root: Path, features_config: dict, array_name: str, crop_frames: int) -> Path:
    key = json.dumps({"features": features_config, "array": array_name, "crop_frames": crop_frames}, sort_keys=True)
    return root / hashlib.sha256(key.encode()).hexdigest()[:16]


@torch.no_grad()
def cache_features(network, recordings: list[Recording], folder: Path, crop_frames: int,
                   device: torch.device) -> list[Path]:
    """The cached feature file of every recording, computing those not there yet."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_half_written(folder)
    paths = []
    computed = 0
    for recording in recordings:
        path = cache_path(folder, recording)
        if path.exists() and not _readable(path, recording, crop_frames, network):
            log.warning("%s: damaged (not the features it should hold); computing it again", path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if not path.exists():
            remove_stale(path, recording)
            audio, _ = read_audio(recording.audio_path, channels=network.num_channels)
            padded = np.zeros((audio.shape[0], (recording.label_frames + crop_frames) * LABEL_HOP), np.float32)
            padded[:, : audio.shape[1]] = audio
            features = network.features(torch.from_numpy(padded)[None].to(device))[0]
            save_atomic(path, features.to(torch.float16).cpu().numpy())
            computed += 1
        paths.append(path)
    log.info("feature cache %s: %d files computed, %d reused", folder, computed, len(recordings) - computed)
    return paths


def _readable(path: Path, recording: Recording, crop_frames: int, network) -> bool:
    """The file holds float16 features [feature channels, frames, bins] of the recording and its
    crop of silence (a truncated, overwritten or foreign file failed mid-training with a traceback)."""
    frames = (recording.label_frames + crop_frames) * LABEL_HOP // network.front_end.config.hop
    expected = (network.front_end.feature_channels, frames, network.front_end.bins)
    try:
        features = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return features.dtype == np.float16 and features.shape == expected


def cache_path(folder: Path, recording: Recording) -> Path:
    """The audio file's size and modification time are in the name: a rewritten file (a dataset
    synthesized again into the same folder) gets its features computed again."""
    audio = recording.audio_path.stat()
    return folder / recording.audio_path.parent.name / f"{recording.audio_path.stem}.{audio.st_size}-{audio.st_mtime_ns}.npy"


def remove_stale(path: Path, recording: Recording) -> None:
    """Features of earlier versions of the recording's audio."""
    stale = re.compile(re.escape(recording.audio_path.stem) + r"\.\d+-\d+\.npy")
    if path.parent.is_dir():
        for old in path.parent.iterdir():
            if stale.fullmatch(old.name):
                old.unlink(missing_ok=True)


def remove_half_written(folder: Path) -> None:
    """Temporaries of runs killed while writing, once an hour old (a file takes seconds to
    write, so no run still writes them)."""
    for temporary in folder.glob("*/.*.npy.*.tmp"):
        try:
            if time.time() - temporary.stat().st_mtime > TEMPORARY_MAX_AGE_S:
                temporary.unlink()
        except OSError:
            pass  # gone already


def save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)
