"""Training data: audio crops from a DCASE-layout dataset and their targets.

Layout (README, Conventions): ROOT/{foa,mic}_dev/<split>/<name>.wav beside
ROOT/metadata_dev/<split>/<name>.csv. Crops are whole label frames, read straight
from the WAV (no feature dumps); features are computed on the device by the network.
Every random choice of an epoch comes from (seed, epoch), so a run resumed at an
epoch boundary sees exactly the data an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch

from seld import SeldError
from seld.audio import LABEL_HOP, SAMPLE_RATE, audio_info, check_finite
from seld.augment import ChannelSwap
from seld.decode import OutputLayout
from seld.formats import Events, read_reference
from seld.targets import LabelEvent, encode_targets


@dataclass(frozen=True)
class Recording:
    audio_path: Path
    metadata_path: Path
    label_frames: int



def split_wavs(split: Path) -> list[Path]:
    """The recordings of a split folder, sorted: X.WAV too; not macOS's ._X.wav, nor other hidden files."""
    return sorted(p for p in split.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith("."))


def find_recordings(root: str | Path, format_name: str, split_prefix: str, channels: int | None = None
                    ) -> list[Recording]:
    """Recordings of every split whose name starts with `split_prefix`, sorted by path; with
    `channels`, each file must have that many."""
    root = Path(root)
    audio_root = root / f"{format_name}_dev"
    if not root.is_dir():
        raise SeldError(f"{root}: no such folder")
    if not audio_root.is_dir():
        raise SeldError(f"{root}: no {format_name}_dev folder (expected the DCASE layout ROOT/{format_name}_dev/<split>/)")
    recordings = []
    for split in sorted(p for p in audio_root.iterdir() if p.is_dir() and p.name.startswith(split_prefix)):
        for audio_path in split_wavs(split):
            metadata_path = root / "metadata_dev" / split.name / f"{audio_path.stem}.csv"
            if not metadata_path.is_file():
                raise SeldError(f"{audio_path}: no metadata file {metadata_path}")
            rate, file_channels, frames = audio_info(audio_path)
            if rate != SAMPLE_RATE:
                raise SeldError(f"{audio_path}: sample rate {rate} Hz, training needs {SAMPLE_RATE} Hz "
                                f"(resample the dataset first, e.g. sox IN.wav -r {SAMPLE_RATE} OUT.wav)")
            if channels is not None and file_channels != channels:
                raise SeldError(f"{audio_path}: has {file_channels} channels, the model needs {channels}")
            recordings.append(Recording(audio_path, metadata_path, -(-frames // LABEL_HOP)))
    return recordings


def split_recordings(root: str | Path, format_name: str, channels: int | None = None
                     ) -> tuple[list[Recording], list[Recording]]:
    """(training, validation): dev-train* for training, dev-val* or else dev-test* to validate."""
    train = find_recordings(root, format_name, "dev-train", channels)
    if not train:
        audio_root = Path(root) / f"{format_name}_dev"
        found = sorted(p.name for p in audio_root.iterdir() if p.is_dir())
        there = f"its folders: {', '.join(found)}" if found else "no split folders in it"
        hint = ("" if any(name.startswith("dev-train") for name in found) else
                "; a TAU-NIGENS (DCASE 2019-2022) download is laid out as DCASE splits by "
                "python -m seld.data_prep.convert SRC DST")
        raise SeldError(f"{root}: no recordings in {format_name}_dev/dev-train* ({there}){hint}")
    validation = (find_recordings(root, format_name, "dev-val", channels)
                  or find_recordings(root, format_name, "dev-test", channels))
    return train, validation


def events_to_labels(events: Events) -> list[LabelEvent]:
    distances = events.distance if events.distance is not None else [None] * len(events.frame)
    return [
        LabelEvent(int(f), int(c), int(s), float(a), float(e), None if d is None else float(d))
        for f, c, s, a, e, d in zip(events.frame, events.class_index, events.track, events.azimuth, events.elevation, distances)
    ]


def check_metadata(recordings: list[Recording], layout: OutputLayout) -> None:
    """Each recording's metadata fits the model, checked before training starts (a bad file found
    in a loader worker would stop the run mid-epoch)."""
    for recording in recordings:
        check_labels(recording.metadata_path, read_reference(recording.metadata_path), layout)


def check_labels(path: Path, events: Events, layout: OutputLayout) -> None:
    """The metadata fits the model: classes in range, distances where the model has a distance output."""
    outside = np.flatnonzero((events.class_index < 0) | (events.class_index >= layout.num_classes))
    if len(outside):
        row = outside[0]
        raise SeldError(f"{path}: class {events.class_index[row]} at frame {events.frame[row]}, outside "
                        f"0..{layout.num_classes - 1} (the model has {layout.num_classes} classes; name this "
                        "dataset's with classes=NAME,NAME,...)")
    if layout.distance and events.distance is None and len(events.frame):
        raise SeldError(f"{path}: no distance column, and the model has a distance output (model.distance=false "
                        "trains without)")


def epoch_crops(recordings: list[Recording], crop_frames: int, seed: int, epoch: int) -> list[tuple[int, int, int]]:
    """(recording index, first label frame, augmentation seed) for every crop of an epoch, shuffled.

    Each recording is tiled with crops at a random phase, so over epochs every
    frame is seen at every position within a crop."""
    rng = np.random.default_rng([seed, epoch])
    crops = []
    for index, recording in enumerate(recordings):
        phase = int(rng.integers(0, crop_frames)) if recording.label_frames > crop_frames else 0
        starts = range(phase - crop_frames if phase else 0, recording.label_frames, crop_frames)
        crops.extend((index, max(start, 0), 0) for start in starts if min(start + crop_frames, recording.label_frames) - max(start, 0) >= crop_frames // 2)
    order = rng.permutation(len(crops))
    augment_seeds = rng.integers(0, 2**31, size=len(crops))
    return [(crops[i][0], crops[i][1], int(s)) for i, s in zip(order, augment_seeds)]


class CropDataset(torch.utils.data.Dataset):
    """Audio crops [channels, crop_frames * 2400] and targets [crop_frames, ...]; with
    `feature_files` (seld.feature_cache), feature crops [channels, crop_frames * 5, bins]."""

    def __init__(self, recordings: list[Recording], layout: OutputLayout, crop_frames: int,
                 channels: int, swaps: list[ChannelSwap] | None = None, feature_files: list[Path] | None = None):
        if feature_files is not None and swaps:
            raise ValueError("channel swaps transform audio: they cannot apply to cached features")
        self.recordings = recordings
        self.feature_files = feature_files
        self.layout = layout
        self.crop_frames = crop_frames
        self.channels = channels
        self.swaps = swaps or []
        self.crops: list[tuple[int, int, int]] = []
        self._labels: dict[int, list[LabelEvent]] = {}

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.crops = epoch_crops(self.recordings, self.crop_frames, seed, epoch)

    def __len__(self) -> int:
        return len(self.crops)

    def labels(self, index: int) -> list[LabelEvent]:
        if index not in self._labels:
            self._labels[index] = events_to_labels(read_reference(self.recordings[index].metadata_path))
        return self._labels[index]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, start, augment_seed = self.crops[item]
        recording = self.recordings[index]
        end = start + self.crop_frames
        if self.feature_files is not None:
            features = np.load(self.feature_files[index], mmap_mode="r")
            per_label = features.shape[1] // (recording.label_frames + self.crop_frames)  # see feature_cache
            audio = np.asarray(features[:, start * per_label: end * per_label], dtype=np.float32)
        else:
            audio = read_crop(recording.audio_path, start * LABEL_HOP, self.crop_frames * LABEL_HOP, self.channels)
        labels = [
            LabelEvent(e.frame - start, e.class_index, e.source, e.azimuth, e.elevation, e.distance_m)
            for e in self.labels(index) if start <= e.frame < end
        ]
        if self.swaps:
            swap = self.swaps[np.random.default_rng(augment_seed).integers(len(self.swaps))]
            audio = swap.apply_audio(audio)
            labels = rotate_labels(labels, swap)
        targets = encode_targets(labels, self.crop_frames, self.layout)
        return torch.from_numpy(np.ascontiguousarray(audio)), torch.from_numpy(targets.astype(np.float32))


def rotate_labels(labels: list[LabelEvent], swap: ChannelSwap) -> list[LabelEvent]:
    if not labels:
        return labels
    azimuth, elevation = swap.apply_directions(np.array([e.azimuth for e in labels]), np.array([e.elevation for e in labels]))
    return [
        LabelEvent(e.frame, e.class_index, e.source, float(a), float(el), e.distance_m)
        for e, a, el in zip(labels, azimuth, elevation)
    ]


def read_crop(path: Path, start: int, length: int, channels: int) -> np.ndarray:
    """float32 [channels, length] from sample `start`, zero-padded past the end of the file."""
    try:
        data = soundfile.read(str(path), frames=length, start=start, dtype="float32", always_2d=True)[0]
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise SeldError(f"{path}: cannot read audio: {error}") from None
    if data.shape[1] != channels:
        raise SeldError(f"{path}: has {data.shape[1]} channels, the model needs {channels}")
    check_finite(path, data.T, start, SAMPLE_RATE)
    crop = np.zeros((channels, length), np.float32)
    crop[:, : len(data)] = data.T
    return crop
