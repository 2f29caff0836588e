"""Label events -> training targets for every output format (numpy only).

Input: label events, one per (label frame, source), as ``LabelEvent`` or anything
``label_events`` adapts: objects or dicts with fields frame, class, source/track,
azimuth, elevation, distance; rows ``(frame, class, source, azimuth, elevation[,
distance_m])``; or columns of those (``seld.formats.Events``). Angles in degrees, distance in metres (reference CSVs hold
centimetres: the CSV reader converts).

Targets, per label frame (C classes), in the layouts ``seld.decode`` documents:

- ``sed_doa``: ``[activity (C), x (C), y (C), z (C)[, distance (C)]]``, the unit
  vector and distance of the class's first source (lowest source id) where active,
  0 elsewhere. SELDnet can hold one source per class.
- ``accdoa``: ``[x (C), y (C), z (C)[, distance (C)]]``: activity times the unit
  vector (and distance) of the class's first source.
- ``multi_accdoa``: the layout ADPIT needs (DCASE 2022-2024 baseline):
  ``[frames, slots, 1 + axes, C]`` with ``(activity, x, y, z[, distance])`` in each
  slot. With N tracks there is one group of k slots for k = 1..N simultaneous
  sources of a class (N = 3: slots A0 | B0 B1 | C0 C1 C2); a class's sources in a
  frame, sorted by source id, fill the group of their count. Sources beyond N are
  dropped, as the baseline does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

import numpy as np

from seld.decode import OutputLayout, angles_to_vector


@dataclass(frozen=True)
class LabelEvent:
    """One source active in one label frame."""

    frame: int
    class_index: int
    source: int
    azimuth: float
    elevation: float
    distance_m: float | None = None


_NAMES = {
    "frame": ("frame", "frame_index"),
    "class_index": ("class_index", "class", "class_", "cls", "klass"),
    "source": ("source", "track", "source_id", "track_id", "source_index", "track_index"),
    "azimuth": ("azimuth",),
    "elevation": ("elevation",),
    "distance_m": ("distance_m", "distance"),
}


def _field(item: Any, name: str):
    for candidate in _NAMES[name]:
        if isinstance(item, dict):
            if candidate in item:
                return item[candidate]
        elif hasattr(item, candidate):
            return getattr(item, candidate)
    if name == "distance_m":
        return None
    raise ValueError(f"label event {item!r} has no {name} field")


def label_events(items: Iterable[Any]) -> list[LabelEvent]:
    """Adapt events from any of the forms the module docstring lists."""
    if isinstance(items, np.ndarray):
        items = items.tolist()
    elif hasattr(items, "frame") and hasattr(items, "azimuth"):  # columns, as seld.formats.Events
        columns = [items.frame, _field(items, "class_index"), _field(items, "source"), items.azimuth, items.elevation]
        distance = _field(items, "distance_m")
        distance = [None] * len(columns[0]) if distance is None else [float(d) for d in distance]
        return [LabelEvent(int(f), int(c), int(s), float(a), float(e), d)
                for f, c, s, a, e, d in zip(*columns, distance)]
    events = []
    for item in items:
        if isinstance(item, LabelEvent):
            events.append(item)
        elif isinstance(item, (tuple, list)):
            if len(item) not in (5, 6):
                raise ValueError(f"label row {item!r} must have 5 or 6 values")
            distance = None if len(item) == 5 or item[5] is None else float(item[5])
            events.append(
                LabelEvent(int(item[0]), int(item[1]), int(item[2]), float(item[3]), float(item[4]), distance))
        else:
            distance = _field(item, "distance_m")
            events.append(LabelEvent(
                int(_field(item, "frame")), int(_field(item, "class_index")), int(_field(item, "source")),
                float(_field(item, "azimuth")), float(_field(item, "elevation")),
                None if distance is None else float(distance)))
    return events


def _per_frame_and_class(events: Iterable[Any], num_frames: int, num_classes: int, distance: bool):
    """{(frame, class): [LabelEvent, ...] sorted by source}; frames outside 0..num_frames-1 dropped."""
    grouped: dict[tuple[int, int], list[LabelEvent]] = {}
    for event in label_events(events):
        if not 0 <= event.class_index < num_classes:
            raise ValueError(f"label event at frame {event.frame} has class {event.class_index}, "
                             f"outside 0..{num_classes - 1}")
        if distance and event.distance_m is None:
            raise ValueError(f"distance targets asked for, but the label event at frame {event.frame} "
                             f"(class {event.class_index}) has no distance")
        if 0 <= event.frame < num_frames:
            grouped.setdefault((event.frame, event.class_index), []).append(event)
    for key in grouped:
        grouped[key].sort(key=lambda e: e.source)
    return grouped


def _slot_values(event: LabelEvent, distance: bool) -> list[float]:
    vector = angles_to_vector(event.azimuth, event.elevation).tolist()
    return vector + ([event.distance_m] if distance else [])


def encode_sed_doa(events, num_frames: int, num_classes: int, distance: bool = False) -> np.ndarray:
    axes = 4 if distance else 3
    target = np.zeros((num_frames, 1 + axes, num_classes), dtype=np.float32)
    for (frame, class_index), sources in _per_frame_and_class(events, num_frames, num_classes, distance).items():
        target[frame, 0, class_index] = 1.0
        target[frame, 1:, class_index] = _slot_values(sources[0], distance)
    return target.reshape(num_frames, -1)


def encode_accdoa(events, num_frames: int, num_classes: int, distance: bool = False) -> np.ndarray:
    return encode_sed_doa(events, num_frames, num_classes, distance)[:, num_classes:]


def adpit_slots(num_tracks: int) -> int:
    """Slots of the multi-ACCDOA target: one group of k for k = 1..num_tracks sources."""
    return num_tracks * (num_tracks + 1) // 2


@lru_cache(maxsize=None)
def adpit_arrangements(num_tracks: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Every way the output tracks may hold the sources of a group: ``(k, slot per track)``.

    For k sources, each track takes one of them and each source is taken at least once
    (the "auxiliary duplicating" of ADPIT). In lexicographic order per group, so the
    first of each group is the baseline's canonical one (A0A0A0, B0B0B1, C0C1C2) and
    num_tracks = 3 gives its 13 = 1 + 6 + 6 arrangements in its order.
    """
    arrangements = []
    for k in range(1, num_tracks + 1):
        first_slot = adpit_slots(k - 1)
        for choice in itertools.product(range(k), repeat=num_tracks):
            if len(set(choice)) == k:
                arrangements.append((k, tuple(first_slot + c for c in choice)))
    return tuple(arrangements)


def encode_multi_accdoa(events, num_frames: int, num_classes: int, num_tracks: int = 3,
                        distance: bool = False) -> np.ndarray:
    axes = 4 if distance else 3
    target = np.zeros((num_frames, adpit_slots(num_tracks), 1 + axes, num_classes), dtype=np.float32)
    for (frame, class_index), sources in _per_frame_and_class(events, num_frames, num_classes, distance).items():
        sources = sources[:num_tracks]
        first_slot = adpit_slots(len(sources) - 1)
        for offset, event in enumerate(sources):
            target[frame, first_slot + offset, 0, class_index] = 1.0
            target[frame, first_slot + offset, 1:, class_index] = _slot_values(event, distance)
    return target


def encode_targets(events, num_frames: int, layout: OutputLayout) -> np.ndarray:
    """Targets of ``layout``'s format for label frames 0..num_frames-1."""
    if layout.output_format == "sed_doa":
        return encode_sed_doa(events, num_frames, layout.num_classes, layout.distance)
    if layout.output_format == "accdoa":
        return encode_accdoa(events, num_frames, layout.num_classes, layout.distance)
    return encode_multi_accdoa(events, num_frames, layout.num_classes, layout.num_tracks, layout.distance)


def reference_outputs(targets: np.ndarray, layout: OutputLayout, logit: float = 10.0) -> np.ndarray:
    """What a perfect model outputs for these targets, ``[frames, layout.size]``.

    SED activity becomes logits of +-``logit``; multi-ACCDOA targets take each group's
    canonical arrangement. For oracle checks of decoding and metrics.
    """
    targets = np.asarray(targets, dtype=np.float32)
    if layout.output_format == "sed_doa":
        classes = layout.num_classes
        outputs = targets.copy()
        outputs[:, :classes] = np.where(targets[:, :classes] > 0.5, logit, -logit)
        return outputs
    if layout.output_format == "accdoa":
        return targets.copy()
    activity_times_values = targets[:, :, :1] * targets[:, :, 1:]  # [frames, slots, axes, classes]
    canonical = {}
    for k, slots in adpit_arrangements(layout.num_tracks):
        canonical.setdefault(k, slots)
    # Only one group is non-zero per (frame, class), so summing the groups' canonical
    # arrangements picks the right one.
    tracks = sum(activity_times_values[:, list(slots)] for slots in canonical.values())
    return tracks.reshape(len(targets), -1)
