"""What `seld annotate` writes per input NAME.wav: NAME.csv (DCASE rows), NAME.json
(events) and, with --plot, NAME.png. Every file is written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from seld.decode import Detection
from seld.formats import Events, write_prediction


def detections_to_events(detections: Sequence[Detection], with_distance: bool) -> Events:
    """Detections (tracked or not) as the in-memory form of a prediction CSV."""

    def column(name: str, dtype=float) -> np.ndarray:
        return np.array([getattr(d, name) for d in detections], dtype=dtype)

    distance = np.array([d.distance_m or 0.0 for d in detections], float) if with_distance else None
    return Events(column("frame", np.int64), column("class_index", np.int64), column("track", np.int64),
                  column("azimuth"), column("elevation"), distance)


def write_csv(path: Path, detections: Sequence[Detection], with_distance: bool) -> None:
    write_prediction(path, detections_to_events(detections, with_distance))


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_events_json(path: Path, source: Path, model: str, sample_rate: int, duration_s: float,
                      events: list[dict]) -> None:
    document = {"file": str(source), "model": model, "sample_rate": sample_rate,
                "duration_s": round(duration_s, 6), "events": events}
    _write_bytes_atomic(path, (json.dumps(document, indent=1) + "\n").encode())


def write_plot(path: Path, detections: Sequence[Detection], class_names: Sequence[str], duration_s: float,
               title: str) -> None:
    """Activity per class over time, and the azimuth and elevation tracks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = max(int(np.ceil(duration_s * 10)), 1)
    activity = np.zeros((len(class_names), frames))
    for d in detections:
        if d.frame < frames:
            activity[d.class_index, d.frame] = max(activity[d.class_index, d.frame], d.confidence)
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 8), sharex=True,
                                                 gridspec_kw={"height_ratios": [1.3, 1, 1]})
    top.imshow(activity, aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1,
               extent=(0, frames / 10, -0.5, len(class_names) - 0.5), interpolation="nearest")
    top.set_yticks(range(len(class_names)), class_names, fontsize=7)
    top.set_title(title)
    colours = plt.get_cmap("tab20")
    for class_index in sorted({d.class_index for d in detections}):
        mine = [d for d in detections if d.class_index == class_index]
        times = [(d.frame + 0.5) / 10 for d in mine]
        colour = colours(class_index % 20)
        middle.scatter(times, [d.azimuth for d in mine], s=4, color=colour, label=class_names[class_index])
        bottom.scatter(times, [d.elevation for d in mine], s=4, color=colour)
    middle.set_ylim(-180, 180)
    middle.set_yticks([-180, -90, 0, 90, 180])
    middle.set_ylabel("azimuth (deg)")
    bottom.set_ylim(-90, 90)
    bottom.set_ylabel("elevation (deg)")
    bottom.set_xlabel("time (s)")
    if detections:
        middle.legend(loc="upper right", fontsize=7, markerscale=3, ncol=2)
    for axis in (middle, bottom):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(descriptor)
    try:
        figure.savefig(temporary, dpi=90)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        Path(temporary).unlink(missing_ok=True)
