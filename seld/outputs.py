"""What `seld annotate` writes per input NAME.wav: NAME.csv (DCASE rows), NAME.json
(events) and, with --plot, NAME.png. Every file is written whole or not at all.

`FileOutputs` writes one file's outputs as its detections come, piece by piece as the engine
hands outputs on: it tracks them in one pass of `seld.decode.EventTracker` (so the CSV's track ids and the
JSON's events agree), appends the CSV rows to a temporary file and keeps each ended event as
its JSON text, so memory grows by the events' text only (about 50 bytes per detection), not
with the audio; `commit` puts the files in place.

Annotating an hour of audio decodes and tracks tens of thousands of frames, so the steps
after the graph have fast paths here, each giving exactly what the reference gives (tested):
`decode_outputs` (seld.decode.decode vectorized over frames) and the CSV and JSON text
(seld.formats' write_prediction, json.dumps) built column by column.
"""

from __future__ import annotations

import itertools
import json
import operator
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from seld.atomic import atomic_path, put_in_place, temporary_beside, temporary_path, write_bytes_atomic
from seld.decode import Detection, EventTracker, OutputLayout, vector_to_angles
from seld.formats import Events


def decode_outputs(outputs: np.ndarray, layout: OutputLayout, threshold: float = 0.5,
                   merge_threshold_deg: float = 15.0, frame_offset: int = 0) -> list[Detection]:
    """`seld.decode.decode`, vectorized over frames: the same detections, bit for bit (tested),
    tens of times faster on long outputs. Each (frame, class) with active tracks merges them by
    "closer than the threshold" (connected components, found by propagating the smallest track
    index through each component) and averages each group in track order, as decode does."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2 or outputs.shape[1] != layout.size:
        raise ValueError(f"outputs must be [frames, {layout.size}] for {layout}, got {list(outputs.shape)}")
    frames, classes, axes = outputs.shape[0], layout.num_classes, layout.axes
    if layout.output_format == "sed_doa":
        tracks = outputs[:, classes:].reshape(frames, 1, axes, classes)
        confidence = (1.0 / (1.0 + np.exp(-outputs[:, :classes])))[:, None, :]
    else:
        tracks = outputs.reshape(frames, layout.tracks, axes, classes)
        confidence = np.linalg.norm(tracks[:, :, :3], axis=2)  # [frames, tracks, classes]
    active = confidence > threshold
    confidence = np.minimum(confidence, 1.0)
    frame_index, class_index = np.nonzero(active.any(axis=1))
    if len(frame_index) == 0:
        return []
    values = tracks[frame_index, :, :, class_index]  # [pairs, tracks, axes]
    on = active[frame_index, :, class_index]  # [pairs, tracks]
    scores = confidence[frame_index, :, class_index]
    count = on.shape[1]
    label = np.broadcast_to(np.arange(count), on.shape).copy()
    if count > 1:
        vectors = values[:, :, :3]
        unit = vectors / (np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-10)
        cosine = np.clip((unit[:, :, None, :] * unit[:, None, :, :]).sum(-1), -1.0, 1.0)
        close = np.degrees(np.arccos(cosine)) < merge_threshold_deg
        close &= on[:, :, None] & on[:, None, :]
        close |= np.eye(count, dtype=bool)
        for _ in range(count):
            label = np.where(close, label[:, None, :], count).min(axis=-1)
    # Sum each group's members in track order (as numpy's mean of the group's rows does).
    total = np.zeros_like(values)
    score = np.zeros(on.shape)
    members = np.zeros(on.shape, np.int64)
    for track in range(count):
        for head in range(count):
            mine = on[:, track] & (label[:, track] == head)
            first = mine & (members[:, head] == 0)
            total[:, head] = np.where(first[:, None], values[:, track],
                                      np.where(mine[:, None], total[:, head] + values[:, track], total[:, head]))
            score[:, head] = np.where(first, scores[:, track],
                                      np.where(mine, score[:, head] + scores[:, track], score[:, head]))
            members[:, head] += mine
    pair, head = np.nonzero(members)  # groups, sorted by (frame, class) then lowest track
    mean = total[pair, head] / members[pair, head][:, None]
    azimuth, elevation = vector_to_angles(mean[:, 0], mean[:, 1], mean[:, 2])
    distance = np.maximum(mean[:, 3], 0.0).tolist() if layout.distance else [None] * len(pair)
    return list(map(Detection._make, zip(
        (frame_index[pair] + frame_offset).tolist(), class_index[pair].tolist(), head.tolist(), azimuth.tolist(),
        elevation.tolist(), distance, (score[pair, head] / members[pair, head]).tolist())))


class FileOutputs:
    """The outputs of one input file, written as its detections come (see the module docstring).

    `add` takes untracked detections in frame order (as the decoder gives them) and tracks them;
    `add_tracked` takes detections already tracked and the events that ended (the streaming
    engine's). `commit` writes NAME.json (and NAME.png) and moves NAME.csv into place, last;
    `discard` leaves nothing behind."""

    def __init__(self, stem: Path, class_names: Sequence[str], with_distance: bool, plot: bool = False,
                 replaces: bool = False):
        """`replaces`: these outputs replace earlier ones of seld's (--overwrite), whose plot, when
        this makes none, goes with them once the new outputs are in place."""
        self.stem, self.class_names, self.with_distance = stem, list(class_names), with_distance
        self.replaces = replaces
        self.tracker = EventTracker(class_names=self.class_names)
        descriptor, self.csv_temporary = temporary_beside(output_path(stem, ".csv"))
        self.csv = os.fdopen(descriptor, "w", encoding="utf-8", newline="\n")
        self.events: list[tuple[tuple, str]] = []  # ((onset, class, track), JSON text)
        self.detections: list[Detection] | None = [] if plot else None

    def add(self, detections: Iterable[Detection]) -> None:
        tracked = []
        update = self.tracker.update
        for frame, batch in itertools.groupby(detections, key=operator.attrgetter("frame")):
            frame_tracked, ended = update(frame, list(batch))
            tracked += frame_tracked
            self._keep(ended)
        self.add_tracked(tracked)

    def add_tracked(self, detections: Sequence[Detection], ended: Iterable[dict] = ()) -> None:
        if detections:
            self.csv.write("\n".join(csv_lines(detections, self.with_distance)) + "\n")
            if self.detections is not None:
                self.detections.extend(detections)
        self._keep(ended)

    def _keep(self, events: Iterable[dict]) -> None:
        self.events += [((e["onset_s"], e["class"], e["track"]), json.dumps(e)) for e in events]

    def commit(self, source: Path, model: str, sample_rate: int, duration_s: float,
               model_digest: str | None = None) -> None:
        """Every output written under a temporary name first, then all renamed, NAME.csv last: a
        failure leaves none of them (a rerun takes a file whose CSV and JSON are there as done)."""
        written: list[tuple[Path, Path]] = []  # (temporary, final)
        try:
            self._keep(self.tracker.flush())
            self.events.sort(key=operator.itemgetter(0))
            with temporary_path(output_path(self.stem, ".json")) as json_temporary:
                json_temporary.write_bytes(_events_document(source, model, sample_rate, duration_s,
                                                            [text for _, text in self.events], model_digest))
            written.append((json_temporary, output_path(self.stem, ".json")))
            if self.detections is not None:
                with temporary_path(output_path(self.stem, ".png")) as png_temporary:
                    write_plot(png_temporary, self.detections, self.class_names, duration_s, path_text(source))
                written.append((png_temporary, output_path(self.stem, ".png")))
            self.csv.close()
            written.append((Path(self.csv_temporary), output_path(self.stem, ".csv")))
            for temporary, final in written:
                put_in_place(temporary, final)
            if self.detections is None and self.replaces:  # the earlier outputs' plot would no longer match
                output_path(self.stem, ".png").unlink(missing_ok=True)
        except BaseException:
            for temporary, _ in written:
                temporary.unlink(missing_ok=True)
            self.discard()
            raise

    def discard(self) -> None:
        try:
            self.csv.close()
        except OSError:
            pass  # the rows still buffered could not be written (a full disk): the file goes anyway
        finally:
            Path(self.csv_temporary).unlink(missing_ok=True)


def path_text(path: Path) -> str:
    """A path as text for JSON and titles: bytes that are not UTF-8 (undecodable file names) as
    \\xNN escapes, where Python's text would hold lone surrogates that strict JSON readers refuse."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def output_path(stem: Path, suffix: str) -> Path:
    """OUT/NAME + suffix; not Path.with_suffix, which would turn rec.2024 into rec.csv."""
    return stem.with_name(stem.name + suffix)


def detections_to_events(detections: Sequence[Detection], with_distance: bool) -> Events:
    """Detections (tracked or not) as the in-memory form of a prediction CSV."""

    def column(name: str, dtype=float) -> np.ndarray:
        return np.array([getattr(d, name) for d in detections], dtype=dtype)

    distance = np.array([d.distance_m or 0.0 for d in detections], float) if with_distance else None
    return Events(column("frame", np.int64), column("class_index", np.int64), column("track", np.int64),
                  column("azimuth"), column("elevation"), distance)


def write_csv(path: Path, detections: Sequence[Detection], with_distance: bool) -> None:
    """The DCASE prediction CSV, polar (`frame,class,track,azimuth,elevation[,distance_m]`), sorted by
    frame: `seld.formats.write_prediction`'s text."""
    order = np.argsort(np.array([d.frame for d in detections], np.int64), kind="stable")
    lines = csv_lines([detections[i] for i in order], with_distance)
    write_bytes_atomic(Path(path), "".join(line + "\n" for line in lines).encode())


def csv_lines(detections: Sequence[Detection], with_distance: bool) -> list[str]:
    """The CSV rows of detections, in their order, as `seld.formats.write_prediction` writes them."""
    if not detections:
        return []
    columns = list(zip(*detections))
    fields = [map(str, columns[0]), map(str, columns[1]), map(str, columns[2]), _numbers(columns[3]),
              _numbers(columns[4])]
    if with_distance:
        fields.append(_numbers([0.0 if value is None else value for value in columns[5]]))
    return [",".join(row) for row in zip(*fields)]


def _numbers(values: Sequence[float]) -> list[str]:
    """`seld.formats._number` of each: the shortest text that reads back to the same float;
    whole numbers without a decimal point."""
    text = list(map(repr, map(float, values)))
    array = np.asarray(values, np.float64)
    for index in np.flatnonzero((array == np.round(array)) & (np.abs(array) < 1e15)):
        text[index] = str(int(array[index]))
    return text


def _events_document(source: Path, model: str, sample_rate: int, duration_s: float, events: list[str],
                     model_digest: str | None = None) -> bytes:
    """NAME.json with one event per line (an indented dump of an hour's per-frame lists is slow)."""
    header = json.dumps({"file": path_text(source), "path": path_text(Path(os.path.abspath(source))), "model": model,
                         **({"model_digest": model_digest} if model_digest else {}),
                         "sample_rate": sample_rate, "duration_s": round(duration_s, 6)})
    body = "\n" + ",\n".join(events) + "\n" if events else ""
    return (header[:-1] + ', "events": [' + body + "]}\n").encode()


def write_events_json(path: Path, source: Path, model: str, sample_rate: int, duration_s: float,
                      events: list[dict], model_digest: str | None = None) -> None:
    write_bytes_atomic(path, _events_document(source, model, sample_rate, duration_s,
                                               [json.dumps(event) for event in events], model_digest))


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
    top.set_title(title.replace("$", r"\$"))  # a "$" in a file name is no mathtext
    colours = plt.get_cmap("tab20")
    for class_index in sorted({d.class_index for d in detections}):
        mine = [d for d in detections if d.class_index == class_index]
        times = [(d.frame + 0.5) / 10 for d in mine]
        # tab20 pairs a dark and a light shade of each hue: the dark ten first, so neighbours differ
        colour = colours((2 * class_index + class_index // 10) % 20)
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
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=90, format="png")
    finally:
        plt.close(figure)
