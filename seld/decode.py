"""Model outputs -> DCASE rows and event segments with stable track ids (numpy only).

Shared by validation, export checks, offline annotation and the live demo, so it never
imports torch. Output layouts (per label frame, last axis of the model's output):

- ``sed_doa`` (SELDnet): ``[activity logits (C), x (C), y (C), z (C)[, distance (C)]]``;
  a class is active when sigmoid(logit) > threshold, its direction is (x, y, z).
- ``accdoa``: ``[x (C), y (C), z (C)[, distance (C)]]``; active when |(x, y, z)| > threshold.
- ``multi_accdoa``: tracks one after the other, each laid out as ``accdoa``
  (index ``(track * axes + axis) * C + class``, the DCASE 2022-2024 baseline layout).
  Active tracks of one class closer than ``merge_threshold_deg`` are merged (averaged),
  as the baseline does.

Distances are in metres, negative values clipped to 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import numpy as np

OUTPUT_FORMATS = ("sed_doa", "accdoa", "multi_accdoa")
LABEL_HOP_S = 0.1
MAX_GAP_FRAMES = 2  # a track missing this many frames or fewer goes on as one event


@dataclass(frozen=True)
class OutputLayout:
    """What the last axis of a model's output holds (see the module docstring)."""

    output_format: str
    num_classes: int
    num_tracks: int = 1
    distance: bool = False

    def __post_init__(self):
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, not {self.output_format!r}")
        if self.num_classes < 1 or self.num_tracks < 1:
            raise ValueError("num_classes and num_tracks must be positive")

    @classmethod
    def of(cls, config) -> "OutputLayout":
        """From a ModelConfig, a dict of its fields (``format`` may stand for ``output_format``,
        as in seld.json's ``output``), or anything with those attributes."""
        get = config.get if isinstance(config, dict) else lambda name, default=None: getattr(config, name, default)
        return cls(get("output_format", get("format")), int(get("num_classes")), int(get("num_tracks", 1)),
                   bool(get("distance", False)))

    @property
    def tracks(self) -> int:
        return self.num_tracks if self.output_format == "multi_accdoa" else 1

    @property
    def axes(self) -> int:
        """Values per class and track in an ACCDOA layout: x, y, z[, distance]."""
        return 4 if self.distance else 3

    @property
    def size(self) -> int:
        if self.output_format == "sed_doa":
            return self.num_classes * (1 + self.axes)
        return self.tracks * self.axes * self.num_classes


class Detection(NamedTuple):
    """One active (class, track) in one label frame. Angles in degrees, distance in metres."""

    frame: int
    class_index: int
    track: int
    azimuth: float
    elevation: float
    distance_m: float | None
    confidence: float


def vector_to_angles(x, y, z):
    """Cartesian -> (azimuth, elevation) in degrees (DCASE convention: azimuth counter-clockwise from the front, elevation up)."""
    azimuth = np.degrees(np.arctan2(y, x))
    elevation = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return azimuth, elevation


def angles_to_vector(azimuth, elevation) -> np.ndarray:
    """(azimuth, elevation) in degrees -> unit vectors [..., 3]."""
    azimuth = np.radians(np.asarray(azimuth, dtype=np.float64))
    elevation = np.radians(np.asarray(elevation, dtype=np.float64))
    return np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)],
                    axis=-1)


def decode(
    outputs: np.ndarray,
    layout: OutputLayout,
    threshold: float = 0.5,
    merge_threshold_deg: float = 15.0,
    frame_offset: int = 0,
) -> list[Detection]:
    """Model outputs ``[label_frames, layout.size]`` -> detections, sorted by frame, class, track.

    ``track`` is the output track (0 for ``sed_doa`` and ``accdoa``; for ``multi_accdoa`` the
    lowest track of a merged group): it is not stable over time, see ``EventTracker``.
    ``frame_offset`` is added to frame numbers (decoding a stream chunk by chunk).

    The reference decoder, and the streaming engine's (a chunk is a frame or a few): the
    activity test in numpy, then plain Python per active (frame, class), as a handful of
    floats is cheaper in Python than in numpy calls. ``seld.outputs.decode_outputs`` gives the
    same detections, bit for bit, vectorized over frames for long outputs.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2 or outputs.shape[1] != layout.size:
        raise ValueError(f"outputs must be [frames, {layout.size}] for {layout}, got {list(outputs.shape)}")
    frames, classes, axes = outputs.shape[0], layout.num_classes, layout.axes
    if layout.output_format == "sed_doa":
        tracks = outputs[:, classes:].reshape(frames, 1, axes, classes)
        confidence = (1.0 / (1.0 + np.exp(-outputs[:, :classes])))[:, None, :]
    else:
        tracks = outputs.reshape(frames, layout.tracks, axes, classes)
        vectors = tracks[:, :, :3]
        confidence = np.sqrt(np.add.reduce(vectors * vectors, axis=2))  # norms [frames, tracks, classes]
    active = confidence > threshold
    if not active.any():
        return []
    # [frame][class][track] lists: active, (axes values), confidence clipped at 1
    on_tracks = active.transpose(0, 2, 1).tolist()
    values = tracks.transpose(0, 3, 1, 2).tolist()
    scores = np.minimum(confidence, 1.0).transpose(0, 2, 1).tolist()
    pairs = [(frame, class_index) for frame, row in enumerate(on_tracks) for class_index, on in enumerate(row) if True in on]

    found = []  # (frame, class, first track, mean vector [axes], confidence)
    for frame, class_index in pairs:
        vectors_of, scores_of = values[frame][class_index], scores[frame][class_index]
        on = [track for track, is_on in enumerate(on_tracks[frame][class_index]) if is_on]
        if len(on) == 1:  # the common case: a mean of one is the value itself
            found.append((frame, class_index, on[0], vectors_of[on[0]], scores_of[on[0]]))
            continue
        for group in _merge_groups([vectors_of[track] for track in on], merge_threshold_deg):
            members = [on[index] for index in group]
            # numpy's mean's arithmetic: summed in track order, then divided
            total, score = list(vectors_of[members[0]]), scores_of[members[0]]
            for track in members[1:]:
                total = [a + b for a, b in zip(total, vectors_of[track])]
                score += scores_of[track]
            found.append((frame, class_index, members[0], [value / len(members) for value in total],
                          score / len(members)))
    means = np.array([mean for _, _, _, mean, _ in found])
    azimuth, elevation = vector_to_angles(means[:, 0], means[:, 1], means[:, 2])
    distance = np.maximum(means[:, 3], 0.0).tolist() if layout.distance else [None] * len(found)
    return [Detection(frame + frame_offset, class_index, track, azimuth_deg, elevation_deg, distance_m, score)
            for (frame, class_index, track, _, score), azimuth_deg, elevation_deg, distance_m
            in zip(found, azimuth.tolist(), elevation.tolist(), distance)]


def _merge_groups(vectors: list[list[float]], threshold_deg: float) -> list[list[int]]:
    """Indices of vectors ([x, y, z, ...]) grouped by "closer than threshold" (connected
    components), in order of their lowest index: vectors divided by their norm + 1e-10, the angle
    from the clipped dot product, in plain Python.

    For three tracks this is the DCASE baseline's rule: one similar pair is merged,
    two or more similar pairs merge all three.
    """
    count = len(vectors)
    units = []
    for x, y, z, *_ in vectors:
        norm = math.sqrt(x * x + y * y + z * z) + 1e-10
        units.append((x / norm, y / norm, z / norm))
    first, second = _pairs(count)
    close = []
    for i, j in zip(first, second):
        (ax, ay, az), (bx, by, bz) = units[i], units[j]
        cosine = min(max(ax * bx + ay * by + az * bz, -1.0), 1.0)
        close.append(math.degrees(math.acos(cosine)) < threshold_deg)
    label = list(range(count))
    for _ in range(count):  # propagate the smallest index through each component
        for i, j, near in zip(first, second, close):
            if near:
                label[i] = label[j] = min(label[i], label[j])
    groups: dict[int, list[int]] = {}
    for index, value in enumerate(label):  # a component's label is its lowest index: seen first
        groups.setdefault(value, []).append(index)
    return list(groups.values())


@functools.lru_cache(maxsize=None)
def _pairs(count: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    first, second = np.triu_indices(count, 1)
    return tuple(first.tolist()), tuple(second.tolist())


def to_rows(detections: Iterable[Detection]) -> list[tuple]:
    """DCASE prediction rows ``(frame, class, track, azimuth, elevation, distance_m)``
    (distance None without a distance head)."""
    return [(d.frame, d.class_index, d.track, d.azimuth, d.elevation, d.distance_m) for d in detections]


_new_detection = functools.partial(tuple.__new__, Detection)  # a Detection from a tuple, without _make's checks


class _Track:
    __slots__ = ("class_index", "track", "last_frame", "unit", "frames")

    def __init__(self, class_index: int, track: int):
        self.class_index, self.track, self.frames = class_index, track, []


def _unit(azimuth: float, elevation: float) -> tuple[float, float, float]:
    """angles_to_vector, then divided by its norm + 1e-10 (as _merge_groups does), in plain floats."""
    azimuth, elevation = math.radians(azimuth), math.radians(elevation)
    x, y, z = math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)
    norm = math.sqrt(x * x + y * y + z * z) + 1e-10
    return x / norm, y / norm, z / norm


class EventTracker:
    """Gives detections stable track ids and groups them into events, frame by frame.

    A detection continues an open event of its class when its direction is within
    ``max_step_deg`` of the event's last direction and the event was last seen at most
    ``max_gap_frames`` frames before (pairs matched closest first); otherwise it opens
    a new event. Track ids are per class: the smallest id no open event of that class
    holds, so they stay small and are reused after an event ends.

    Feed frames in increasing order with ``update``; it returns the frame's detections
    with their track ids and (with ``keep_frames``) the events that ended. ``flush`` ends
    the rest. Plain Python floats: on the few detections of a frame, small numpy arrays
    cost more than the math.
    """

    def __init__(self, max_step_deg: float = 30.0, max_gap_frames: int = MAX_GAP_FRAMES, hop_s: float = LABEL_HOP_S,
                 class_names: Sequence[str] | None = None, keep_frames: bool = True):
        self.max_step_deg, self.max_gap_frames, self.hop_s = max_step_deg, max_gap_frames, hop_s
        self.class_names = class_names
        # Without keep_frames an open event holds only its last detection, so memory stays
        # flat over an endless stream (a fan, music), and no ended event is reported: a live
        # stream has no use for them, and their numpy summaries were the tail of its tracking
        # time (`seld bench stream`, tracking p99 0.103 -> 0.022 ms per chunk).
        self.keep_frames = keep_frames
        self._open: list[_Track] = []

    def update(self, frame: int, detections: Sequence[Detection]) -> tuple[list[Detection], list[dict]]:
        # Written for speed (an hour of audio is ~36,000 frames): plain loops, no per-class scans
        # of the open events when a frame has one detection of a class.
        last_allowed = frame - self.max_gap_frames - 1
        ended = [t for t in self._open if t.last_frame < last_allowed]
        if ended:
            self._open = [t for t in self._open if t.last_frame >= last_allowed]
        by_class: dict[int, list[Detection]] = {}
        for detection in detections:
            by_class.setdefault(detection.class_index, []).append(detection)
        tracked = []
        for class_index in sorted(by_class):
            mine = by_class[class_index]
            units = [_unit(d.azimuth, d.elevation) for d in mine]
            candidates = [t for t in self._open if t.class_index == class_index and t.last_frame < frame]
            assignment = self._match(units, candidates)
            for index, detection in enumerate(mine):
                track = assignment.get(index)
                if track is None:
                    used = {t.track for t in self._open if t.class_index == class_index}
                    track = _Track(class_index, next(i for i in range(len(used) + 1) if i not in used))
                    self._open.append(track)
                track.last_frame = frame
                track.unit = units[index]
                detection = _new_detection((frame, class_index, track.track, detection.azimuth, detection.elevation,
                                            detection.distance_m, detection.confidence))
                if self.keep_frames:
                    track.frames.append(detection)
                else:
                    track.frames = [detection]
                tracked.append(detection)
        return tracked, [self._event(t) for t in ended] if self.keep_frames else []

    def flush(self) -> list[dict]:
        ended, self._open = self._open, []
        return [self._event(t) for t in ended] if self.keep_frames else []

    def _match(self, units: list[tuple[float, float, float]], tracks: list[_Track]) -> dict[int, _Track]:
        if not units or not tracks:
            return {}
        if len(units) == 1 and len(tracks) == 1:  # the common case
            (x, y, z), (tx, ty, tz) = units[0], tracks[0].unit
            cosine = max(-1.0, min(1.0, x * tx + y * ty + z * tz))
            return {0: tracks[0]} if math.degrees(math.acos(cosine)) < self.max_step_deg else {}
        pairs = []  # (angle, flat index): numpy's stable argsort order of the angle matrix
        for i, (x, y, z) in enumerate(units):
            for j, track in enumerate(tracks):
                tx, ty, tz = track.unit
                cosine = max(-1.0, min(1.0, x * tx + y * ty + z * tz))
                pairs.append((math.degrees(math.acos(cosine)), i * len(tracks) + j, i, j))
        pairs.sort()
        assignment, taken = {}, set()
        for angle, _, i, j in pairs:
            if angle >= self.max_step_deg:
                break
            if i not in assignment and j not in taken:
                assignment[i] = tracks[j]
                taken.add(j)
        return assignment

    def _event(self, track: _Track) -> dict:
        frames = track.frames
        mean = angles_to_vector([d.azimuth for d in frames], [d.elevation for d in frames]).mean(axis=0)
        azimuth, elevation = vector_to_angles(*mean)
        distances = [d.distance_m for d in frames if d.distance_m is not None]
        name = self.class_names[track.class_index] if self.class_names else str(track.class_index)
        return {
            "class": track.class_index,
            "class_name": name,
            "track": track.track,
            "onset_s": round(frames[0].frame * self.hop_s, 6),
            "offset_s": round((frames[-1].frame + 1) * self.hop_s, 6),
            "azimuth": round(float(azimuth), 2),
            "elevation": round(float(elevation), 2),
            "distance_m": round(float(np.mean(distances)), 3) if distances else None,
            "frames": [[d.frame, round(d.azimuth, 2), round(d.elevation, 2),
                        None if d.distance_m is None else round(d.distance_m, 3), round(d.confidence, 3)]
                       for d in frames],
        }


def _by_frame(detections: Iterable[Detection]):
    current, batch = None, []
    for detection in sorted(detections, key=lambda d: (d.frame, d.class_index, d.track)):
        if detection.frame != current and batch:
            yield current, batch
            batch = []
        current = detection.frame
        batch.append(detection)
    if batch:
        yield current, batch


def track_events(detections: Iterable[Detection], class_names: Sequence[str] | None = None,
                 hop_s: float = LABEL_HOP_S, max_step_deg: float = 30.0, max_gap_frames: int = MAX_GAP_FRAMES) -> list[dict]:
    """The ``events`` list of ``NAME.json`` (README, Outputs) for a whole file, sorted by onset."""
    tracker = EventTracker(max_step_deg, max_gap_frames, hop_s, class_names)
    events = []
    for frame, batch in _by_frame(detections):
        events.extend(tracker.update(frame, batch)[1])
    events.extend(tracker.flush())
    return sorted(events, key=lambda e: (e["onset_s"], e["class"], e["track"]))


def assign_tracks(detections: Iterable[Detection], max_step_deg: float = 30.0,
                  max_gap_frames: int = MAX_GAP_FRAMES) -> list[Detection]:
    """Detections with stable per-class track ids (the ids ``track_events`` gives), e.g. for CSV rows."""
    tracker = EventTracker(max_step_deg, max_gap_frames)
    tracked = []
    for frame, batch in _by_frame(detections):
        tracked.extend(tracker.update(frame, batch)[0])
    return tracked


def frame_json(frame: int, detections: Sequence[Detection], class_names: Sequence[str] | None = None,
               hop_s: float = LABEL_HOP_S) -> dict:
    """One ``seld live --json`` frame object (README, Outputs) from a frame's tracked detections."""
    return {
        "frame": frame,
        "time_s": round(frame * hop_s, 6),
        "events": [{
            "class": d.class_index,
            "class_name": class_names[d.class_index] if class_names else str(d.class_index),
            "track": d.track,
            "azimuth": round(d.azimuth, 2),
            "elevation": round(d.elevation, 2),
            "distance_m": None if d.distance_m is None else round(d.distance_m, 3),
            "confidence": round(d.confidence, 3),
        } for d in detections],
    }
