"""The DCASE SELD metrics, computed exactly as the official evaluation code does.

Two scorers, as the challenge baselines define them:

* ``dcase2023`` (github.com/sharathadavanne/seld-dcase2023): segment-based, 1 s
  segments of 10 label frames; location-aware error rate and F-score at 20 degrees,
  class-dependent localization error (LE) and recall (LR); SELD = mean(ER, 1 - F,
  LE / 180, 1 - LR). Distances are ignored.
* ``dcase2024`` (github.com/partha2409/DCASE2024_seld_baseline): frame-based; a
  matched pair is a true positive when its angular error is <= 20 degrees and its
  relative distance error <= 1.0; angular error (AngE), distance error (DistE, m)
  and relative distance error (RelDistE) average over all matched pairs; per class
  SELD = nanmean(1 - F, AngE / 180, RelDistE). Without distance (``use_distance=
  False``) the per-class SELD is nanmean(ER, 1 - F, LE / 180, 1 - LR).

Behaviour of the official code kept on purpose (see shared/metric_cases/README.md):
macro averages run over every class, present or not; only frames below the last
reference frame index are scored (frame mode), or ceil(last / 10) whole segments
(segment mode, which therefore includes frames up to the end of the last segment);
in each frame the predictions of a class are matched to its references with the
Hungarian algorithm on great-circle distance, track ids play no part; in 2023, a
class present in reference and prediction of a segment without a common frame
counts the number of predicted instances as false negatives and nothing else.
A reference file without events, on which the official code fails, is scored up to
its prediction's last frame, so that every false alarm in it counts.

numpy and scipy only: training validation and `seld evaluate` both use it.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from seld import SeldError
from seld.formats import Events, match_files, read_prediction, read_reference

# The official code guards every division with float64's machine epsilon.
EPS = float(np.finfo(np.float64).eps)
FRAMES_PER_SEGMENT = 10  # 1 s of 100 ms label frames
METRICS = ("dcase2023", "dcase2024")
AVERAGES = ("macro", "micro")


def metric_names(metrics: str, use_distance: bool) -> tuple[str, ...]:
    """The headline keys (also the classwise keys) of a variant, in order."""
    if metrics == "dcase2024" and use_distance:
        return ("ER", "F", "AngE", "DistE", "RelDistE", "LR", "SELD")
    return ("ER", "F", "LE", "LR", "SELD")


# ----------------------------------------------------------------------------- geometry


def angular_distance_dcase2024(reference_vectors: np.ndarray, predicted_vectors: np.ndarray) -> np.ndarray:
    """[R, P] great-circle distances in degrees between direction vectors, as the 2024 code does.

    The official code adds 1e-10 under the square root of each norm, so identical
    unit vectors are about 8.1e-4 degrees apart; kept for identical numbers.
    """
    reference = reference_vectors / np.sqrt((reference_vectors**2).sum(axis=1, keepdims=True) + 1e-10)
    predicted = predicted_vectors / np.sqrt((predicted_vectors**2).sum(axis=1, keepdims=True) + 1e-10)
    cosine = (reference[:, None, 0] * predicted[None, :, 0] + reference[:, None, 1] * predicted[None, :, 1]
              + reference[:, None, 2] * predicted[None, :, 2])
    return np.arccos(np.clip(cosine, -1.0, 1.0)) * 180.0 / np.pi


def angular_distance_dcase2023(reference_azimuth: np.ndarray, reference_elevation: np.ndarray,
                               predicted_azimuth: np.ndarray, predicted_elevation: np.ndarray) -> np.ndarray:
    """[R, P] great-circle distances in degrees from (azimuth, elevation) in degrees (2023: polar form)."""
    azimuth_1 = reference_azimuth[:, None] * np.pi / 180.0
    elevation_1 = reference_elevation[:, None] * np.pi / 180.0
    azimuth_2 = predicted_azimuth[None, :] * np.pi / 180.0
    elevation_2 = predicted_elevation[None, :] * np.pi / 180.0
    cosine = (np.sin(elevation_1) * np.sin(elevation_2)
              + np.cos(elevation_1) * np.cos(elevation_2) * np.cos(np.abs(azimuth_1 - azimuth_2)))
    return np.arccos(np.clip(cosine, -1.0, 1.0)) * 180.0 / np.pi


def _group_by_frame(events: Events, frame_limit: int) -> dict[int, dict[int, list[int]]]:
    """frame -> class -> row indices, frames ascending and below ``frame_limit``, rows in file order."""
    groups: dict[int, dict[int, list[int]]] = {}
    for row in np.argsort(events.frame, kind="stable"):
        frame = int(events.frame[row])
        if frame >= frame_limit:
            break
        groups.setdefault(frame, {}).setdefault(int(events.class_index[row]), []).append(int(row))
    return groups


# ----------------------------------------------------------------------------- counting


class _Counters:
    """The official scorers' running counts, one entry per class (names as in their code)."""

    def __init__(self, num_classes: int) -> None:
        def zeros() -> np.ndarray:
            return np.zeros(num_classes)

        self.true_positives = zeros()  # TP: matched and within the thresholds
        self.false_positives = zeros()  # FP: predictions beyond the reference count
        self.spatial_false_positives = zeros()  # FP_spatial: matched but too far
        self.false_negatives = zeros()  # FN
        self.reference_count = zeros()  # Nref
        self.matched = zeros()  # DE_TP: matched pairs (2024) or tracks (2023), any error
        self.angular_error_sum = zeros()  # total_DE (2023) / total_AngE (2024), degrees
        self.distance_error_sum = zeros()  # total_DistE, metres
        self.relative_distance_error_sum = zeros()  # total_RelDistE
        self.substitutions = 0
        self.deletions = 0
        self.insertions = 0

    def close_block(self, false_positives: int, false_negatives: int) -> None:
        """Substitutions, deletions and insertions of one frame (2024) or segment (2023)."""
        self.substitutions += min(false_positives, false_negatives)
        self.deletions += max(0, false_negatives - false_positives)
        self.insertions += max(0, false_positives - false_negatives)

    def as_dict(self, segment_based: bool) -> dict[str, object]:
        """The counts under the official code's names (its ``total_DE`` is 2023's angular sum; it
        counts DE_FP and DE_FN apart from FP and FN, always by the same amounts)."""
        counts = {
            "TP": self.true_positives.tolist(), "FP": self.false_positives.tolist(),
            "FP_spatial": self.spatial_false_positives.tolist(), "FN": self.false_negatives.tolist(),
            "Nref": self.reference_count.tolist(), "S": self.substitutions, "D": self.deletions,
            "I": self.insertions, "DE_TP": self.matched.tolist(), "DE_FP": self.false_positives.tolist(),
            "DE_FN": self.false_negatives.tolist(), "total_AngE": self.angular_error_sum.tolist(),
            "total_DistE": self.distance_error_sum.tolist(),
            "total_RelDistE": self.relative_distance_error_sum.tolist(),
        }
        if segment_based:
            counts["total_DE"] = counts.pop("total_AngE")
            del counts["total_DistE"], counts["total_RelDistE"]
        return counts


@dataclass
class EvaluationResult:
    """Scores of a set of files. NaN marks a value the official code leaves undefined."""

    metrics: dict[str, float]
    classwise: dict[str, list[float]]
    settings: dict[str, object]
    counters: dict[str, object]
    files: list[tuple[Path, Path]] = field(default_factory=list)  # (prediction, reference) scored
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (prediction, why)

    def to_json(self) -> dict[str, object]:
        """The `seld evaluate --json` object: headline metrics plus ``classwise``; NaN as None."""
        document: dict[str, object] = {key: _json_number(value) for key, value in self.metrics.items()}
        document["classwise"] = {key: [_json_number(value) for value in values]
                                 for key, values in self.classwise.items()}
        return document


def _json_number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _nanmean(values, axis=None):
    # An all-NaN mean is NaN in the official code too; only numpy's warning goes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=axis)


class SeldScorer:
    """Accumulates files, then scores them; feed it in-memory :class:`Events` (training validation).

    ``add(reference, prediction)`` once per file, ``result()`` at the end. Reference
    and prediction distances are in metres (as :mod:`seld.formats` reads them).
    """

    def __init__(self, metrics: str = "dcase2024", average: str = "macro", use_distance: bool = True,
                 num_classes: int = 13, angular_threshold: float = 20.0,
                 relative_distance_threshold: float = 1.0, distance_threshold: float = math.inf) -> None:
        if metrics not in METRICS:
            raise ValueError(f"metrics must be one of {METRICS}, not {metrics!r}")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, not {average!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {num_classes}")
        self.metrics = metrics
        self.average = average
        self.use_distance = bool(use_distance) and metrics == "dcase2024"  # 2023 has no distance
        self.num_classes = num_classes
        self.angular_threshold = angular_threshold
        self.relative_distance_threshold = relative_distance_threshold
        self.distance_threshold = distance_threshold
        self.files_added = 0
        self._counters = _Counters(num_classes)

    def add(self, reference: Events, prediction: Events, name: str = "", reference_name: str = "") -> None:
        """Score one file's prediction (file `name`) against its reference (`reference_name`)."""
        label = name or f"file {self.files_added + 1}"
        for events, side in ((reference, "reference"), (prediction, "prediction")):
            at = (reference_name or label) if side == "reference" else label  # errors name the file at fault
            if len(events) and int(events.class_index.max()) >= self.num_classes:
                first = int(np.argmax(events.class_index >= self.num_classes))
                raise SeldError(f"{at}: {side} has class {int(events.class_index.max())} (first at frame "
                                f"{int(events.frame[first])}), but only {self.num_classes} classes are scored "
                                f"(--classes)")
            if self.use_distance and not events.has_distance:
                raise SeldError(f"{at}: the {side} has no distances; score without distance "
                                "(--no-distance) or give distances on both sides")
        if self.metrics == "dcase2024":
            self._add_frames(reference, prediction)
        else:
            self._add_segments(reference, prediction)
        self.files_added += 1

    # -- DCASE 2024: frame-based --------------------------------------------------

    def _add_frames(self, reference: Events, prediction: Events) -> None:
        counts = self._counters
        # Frames 0 .. last-1 are scored: the official code takes the largest reference
        # frame index as the frame count.
        last_frame = _frames_scored(reference, prediction)
        reference_frames = _group_by_frame(reference, last_frame)
        predicted_frames = _group_by_frame(prediction, last_frame)
        reference_vectors, predicted_vectors = reference.unit_vectors(), prediction.unit_vectors()

        for frame in sorted(reference_frames.keys() | predicted_frames.keys()):
            reference_classes = reference_frames.get(frame, {})
            predicted_classes = predicted_frames.get(frame, {})
            frame_false_positives = frame_false_negatives = 0
            for class_index in reference_classes.keys() | predicted_classes.keys():
                reference_rows = reference_classes.get(class_index, [])
                predicted_rows = predicted_classes.get(class_index, [])
                references, predictions = len(reference_rows), len(predicted_rows)
                counts.reference_count[class_index] += references
                if references and predictions:
                    cost = angular_distance_dcase2024(reference_vectors[reference_rows],
                                                      predicted_vectors[predicted_rows])
                    rows, columns = linear_sum_assignment(cost)
                    angular_errors = cost[rows, columns]
                    too_far = angular_errors > self.angular_threshold
                    if self.use_distance:
                        reference_distance = reference.distance[reference_rows][rows]
                        distance_errors = np.abs(reference_distance - prediction.distance[predicted_rows][columns])
                        relative_errors = distance_errors / (reference_distance + EPS)
                        too_far |= distance_errors > self.distance_threshold
                        too_far |= relative_errors > self.relative_distance_threshold
                        counts.distance_error_sum[class_index] += distance_errors.sum()
                        counts.relative_distance_error_sum[class_index] += relative_errors.sum()
                    pairs, spatial_misses = len(rows), int(too_far.sum())
                    extra = max(0, predictions - references)
                    missed = max(0, references - predictions)
                    counts.angular_error_sum[class_index] += angular_errors.sum()
                    counts.true_positives[class_index] += pairs - spatial_misses
                    counts.matched[class_index] += pairs
                    counts.false_positives[class_index] += extra
                    counts.spatial_false_positives[class_index] += spatial_misses
                    counts.false_negatives[class_index] += missed
                    frame_false_positives += extra + spatial_misses
                    frame_false_negatives += missed
                elif references:
                    counts.false_negatives[class_index] += references
                    frame_false_negatives += references
                else:
                    counts.false_positives[class_index] += predictions
                    frame_false_positives += predictions
            counts.close_block(frame_false_positives, frame_false_negatives)

    # -- DCASE 2023: segment-based -------------------------------------------------

    def _add_segments(self, reference: Events, prediction: Events) -> None:
        last_frame = _frames_scored(reference, prediction)
        segment_count = math.ceil(last_frame / FRAMES_PER_SEGMENT)
        # Whole segments are read, so frames after the last reference frame but inside
        # the final segment count (official segment_labels).
        frame_limit = segment_count * FRAMES_PER_SEGMENT
        reference_segments = _by_segment(_group_by_frame(reference, frame_limit))
        predicted_segments = _by_segment(_group_by_frame(prediction, frame_limit))
        for segment in sorted(reference_segments.keys() | predicted_segments.keys()):
            self._score_segment(reference, prediction, reference_segments.get(segment, {}),
                                predicted_segments.get(segment, {}))

    def _score_segment(self, reference: Events, prediction: Events,
                       reference_classes: dict[int, dict[int, list[int]]],
                       predicted_classes: dict[int, dict[int, list[int]]]) -> None:
        counts = self._counters
        segment_false_positives = segment_false_negatives = 0
        for class_index in reference_classes.keys() | predicted_classes.keys():
            reference_by_frame = reference_classes.get(class_index, {})
            predicted_by_frame = predicted_classes.get(class_index, {})
            # A class's instance count in a segment is its largest count in any one frame.
            references = max((len(rows) for rows in reference_by_frame.values()), default=0)
            predictions = max((len(rows) for rows in predicted_by_frame.values()), default=0)
            counts.reference_count[class_index] += references
            if references and predictions:
                # Tracks are the position of a reference within its frame's rows (the
                # official code ignores source ids); errors average per track.
                track_errors: dict[int, list[float]] = {}
                for frame, reference_rows in reference_by_frame.items():
                    predicted_rows = predicted_by_frame.get(frame)
                    if predicted_rows is None:
                        continue
                    cost = angular_distance_dcase2023(
                        reference.azimuth[reference_rows], reference.elevation[reference_rows],
                        prediction.azimuth[predicted_rows], prediction.elevation[predicted_rows])
                    for row, column in zip(*linear_sum_assignment(cost)):
                        track_errors.setdefault(int(row), []).append(float(cost[row, column]))
                if not track_errors:
                    # Official quirk: no frame in common adds the predicted count as FN, no FP.
                    counts.false_negatives[class_index] += predictions
                    segment_false_negatives += predictions
                    continue
                for errors in track_errors.values():
                    mean_error = sum(errors) / len(errors)
                    counts.angular_error_sum[class_index] += mean_error
                    counts.matched[class_index] += 1
                    if mean_error <= self.angular_threshold:
                        counts.true_positives[class_index] += 1
                    else:
                        counts.spatial_false_positives[class_index] += 1
                        segment_false_positives += 1
                if predictions > references:
                    counts.false_positives[class_index] += predictions - references
                    segment_false_positives += predictions - references
                elif predictions < references:
                    counts.false_negatives[class_index] += references - predictions
                    segment_false_negatives += references - predictions
            elif references:
                counts.false_negatives[class_index] += references
                segment_false_negatives += references
            else:
                counts.false_positives[class_index] += predictions
                segment_false_positives += predictions
        counts.close_block(segment_false_positives, segment_false_negatives)

    # -- final scores --------------------------------------------------------------

    def result(self) -> EvaluationResult:
        """The scores of every file added so far."""
        counts = self._counters
        error_rate = (counts.substitutions + counts.deletions + counts.insertions) / (
            counts.reference_count.sum() + EPS)
        f_score = counts.true_positives / (EPS + counts.true_positives + counts.spatial_false_positives
                                           + 0.5 * (counts.false_positives + counts.false_negatives))
        recall = counts.matched / (EPS + counts.matched + counts.false_negatives)
        nothing_matched = counts.matched == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            angular_error = counts.angular_error_sum / (counts.matched + EPS)
            distance_error = counts.distance_error_sum / (counts.matched + EPS)
            relative_error = counts.relative_distance_error_sum / (counts.matched + EPS)
        error_rates = np.repeat(error_rate, self.num_classes)

        if self.metrics == "dcase2023":
            angular_error[nothing_matched] = 180.0  # 2023: a class never matched counts as 180 degrees
            seld = np.mean([error_rates, 1 - f_score, angular_error / 180, 1 - recall], axis=0)
            classwise = {"ER": error_rates, "F": f_score, "LE": angular_error, "LR": recall, "SELD": seld}
        else:
            for values in (angular_error, distance_error, relative_error):
                values[nothing_matched] = np.nan  # 2024: undefined, left out of the means
            if self.use_distance:
                seld = _nanmean([1 - f_score, angular_error / 180, relative_error], axis=0)
                classwise = {"ER": error_rates, "F": f_score, "AngE": angular_error, "DistE": distance_error,
                             "RelDistE": relative_error, "LR": recall, "SELD": seld}
            else:
                seld = _nanmean([error_rates, 1 - f_score, angular_error / 180, 1 - recall], axis=0)
                classwise = {"ER": error_rates, "F": f_score, "LE": angular_error, "LR": recall, "SELD": seld}

        if self.average == "macro":
            # F, LR and SELD average over every class; 2024's errors skip never-matched classes (NaN).
            headline = {key: float(np.mean(values)) for key, values in classwise.items()}
            if self.metrics == "dcase2024":
                for key in ("AngE", "LE", "DistE", "RelDistE"):
                    if key in classwise:
                        headline[key] = float(_nanmean(classwise[key]))
            headline["ER"] = float(error_rate)
        else:
            headline = self._micro(error_rate)
        names = metric_names(self.metrics, self.use_distance)
        return EvaluationResult(
            metrics={key: headline[key] for key in names},
            classwise={key: [float(value) for value in classwise[key]] for key in names},
            settings={"metrics": self.metrics, "average": self.average, "use_distance": self.use_distance,
                      "num_classes": self.num_classes, "files": self.files_added},
            counters=counts.as_dict(segment_based=self.metrics == "dcase2023"),
        )

    def _micro(self, error_rate: float) -> dict[str, float]:
        counts = self._counters
        matched = counts.matched.sum()
        f_score = counts.true_positives.sum() / (
            EPS + counts.true_positives.sum() + counts.spatial_false_positives.sum()
            + 0.5 * (counts.false_positives.sum() + counts.false_negatives.sum()))
        recall = matched / (EPS + matched + counts.false_negatives.sum())
        undefined = 180.0 if self.metrics == "dcase2023" else math.nan
        angular_error = counts.angular_error_sum.sum() / (matched + EPS) if matched else undefined
        distance_error = counts.distance_error_sum.sum() / (matched + EPS) if matched else math.nan
        relative_error = counts.relative_distance_error_sum.sum() / (matched + EPS) if matched else math.nan
        if self.metrics == "dcase2023":
            seld = np.mean([error_rate, 1 - f_score, angular_error / 180, 1 - recall])
        elif self.use_distance:
            seld = _nanmean([1 - f_score, angular_error / 180, relative_error])
        else:
            seld = _nanmean([error_rate, 1 - f_score, angular_error / 180, 1 - recall])
        return {"ER": float(error_rate), "F": float(f_score), "AngE": float(angular_error),
                "LE": float(angular_error), "DistE": float(distance_error), "RelDistE": float(relative_error),
                "LR": float(recall), "SELD": float(seld)}


def _frames_scored(reference: Events, prediction: Events) -> int:
    """The official frame count: the last reference frame index. A reference without events
    (the official code fails on it) counts through the prediction's last frame."""
    if len(reference):
        return int(reference.frame.max())
    return int(prediction.frame.max()) + 1 if len(prediction) else 0


def _by_segment(frames: dict[int, dict[int, list[int]]]) -> dict[int, dict[int, dict[int, list[int]]]]:
    """frame -> class -> rows  into  segment -> class -> frame -> rows (frames stay ascending)."""
    segments: dict[int, dict[int, dict[int, list[int]]]] = {}
    for frame, classes in frames.items():
        segment = segments.setdefault(frame // FRAMES_PER_SEGMENT, {})
        for class_index, rows in classes.items():
            segment.setdefault(class_index, {})[frame] = rows
    return segments


# ----------------------------------------------------------------------------- folders and CLI


def evaluate_folders(reference_folder: str | Path, prediction_folder: str | Path, metrics: str = "dcase2024",
                     average: str = "macro", use_distance: bool | None = None,
                     num_classes: int = 13, six_columns: str = "auto") -> EvaluationResult:
    """Score every prediction CSV under ``prediction_folder`` against its reference.
    ``six_columns``: how 6-column predictions are read (seld.formats.read_events).

    Both folders are searched recursively; predictions pair with references by
    relative path, else by file name when unique; a prediction with no reference is
    skipped and listed in ``result.skipped``. ``use_distance=None`` scores distance
    (dcase2024) when every scored file has it on both sides.
    """
    for folder, role in ((reference_folder, "reference"), (prediction_folder, "prediction")):
        if not Path(folder).is_dir():
            raise SeldError(f"{folder}: {role} folder " + ("is a file" if Path(folder).exists() else "does not exist"))
    if metrics not in METRICS:
        raise SeldError(f"unknown metrics {metrics!r}; choose one of {', '.join(METRICS)}")
    if metrics == "dcase2023" and use_distance:
        raise SeldError("the dcase2023 metrics have no distance; use --metrics dcase2024")
    pairs = match_files(reference_folder, prediction_folder)
    if not pairs.matched:
        reasons = "".join(f"; {path}: {reason}" for path, reason in pairs.skipped[:3])
        more = f"; and {len(pairs.skipped) - 3} more" if len(pairs.skipped) > 3 else ""
        raise SeldError(f"no prediction CSV under {prediction_folder} matches a reference CSV under "
                        f"{reference_folder} (by relative path or by file name){reasons}{more}")
    guessed, polar = [], []  # paths, by how the 6-column guess read them
    loaded = [(prediction_path, reference_path, read_prediction(prediction_path, six_columns, guessed, polar),
               read_reference(reference_path))
              for prediction_path, reference_path in pairs.matched]
    notes = []
    if guessed and polar:
        # One folder is one format: files whose values all happen to lie in [-1, 1] (sources within a
        # degree of the front, under a metre away) are polar like the others, not x,y,z.
        reread = set(guessed)
        loaded = [(p, r, read_prediction(p, "polar") if p in reread else prediction, reference)
                  for p, r, prediction, reference in loaded]
        notes.append(f"{len(guessed)} 6-column prediction file(s) whose values all lie in [-1, 1] read as "
                     f"azimuth,elevation,distance like the other {len(polar)}, e.g. {guessed[0]}")
        guessed = []
    if guessed:
        notes.append(f"{len(guessed)} 6-column prediction file(s) read as x,y,z (every value in [-1, 1], as the "
                     f"baselines write them), e.g. {guessed[0]}; --pred-format polar reads azimuth,elevation,distance")
    if pairs.unpaired_references:
        notes.append(f"{pairs.unpaired_references} reference file(s) without a prediction: not scored (as the DCASE "
                     "code does)")
    without = [path for path, _, prediction, reference in loaded
               if not (prediction.has_distance and reference.has_distance)]
    if use_distance is None:
        use_distance = metrics == "dcase2024" and not without
        if metrics == "dcase2024" and without and len(without) < len(loaded):
            notes.append(f"distance not scored: {len(without)} of {len(loaded)} file pairs have none, "
                         f"e.g. {without[0]}")
    for note in notes:
        print(f"seld evaluate: {note}", file=sys.stderr)
    if use_distance:
        _warn_if_swapped(reference_folder, prediction_folder, loaded)
    scorer = SeldScorer(metrics=metrics, average=average, use_distance=use_distance, num_classes=num_classes)
    for prediction_path, reference_path, prediction, reference in loaded:
        scorer.add(reference, prediction, name=str(prediction_path), reference_name=str(reference_path))
    result = scorer.result()
    result.files = list(pairs.matched)
    result.skipped = list(pairs.skipped)
    return result


def _warn_if_swapped(reference_folder, prediction_folder, loaded) -> None:
    """References give distances in centimetres, predictions in metres: references all nearer than
    20 cm and predictions all farther than 20 m are the two folders given the other way round
    (it scored DistE 170 m, SELD 1546)."""
    def median(events) -> float:
        values = [e.distance for e in events if e.distance is not None and len(e.distance)]
        return float(np.median(np.concatenate(values))) if values else math.nan

    if median(r for _, _, _, r in loaded) < 0.2 and median(p for _, _, p, _ in loaded) > 20.0:
        print(f"seld evaluate: warning: the references' distances look like metres and the predictions' like "
              f"centimetres: are --ref {reference_folder} and --pred {prediction_folder} the other way round?",
              file=sys.stderr)


def _format_value(key: str, value: float) -> str:
    if not math.isfinite(value):
        return "-" if math.isnan(value) else f"{value}"
    if key in ("F", "LR"):
        return f"{100 * value:.1f}%"
    if key in ("LE", "AngE"):
        return f"{value:.2f}°"
    if key == "DistE":
        return f"{value:.3f} m"
    return f"{value:.4f}"


def format_report(result: EvaluationResult) -> str:
    """A readable table: headline metrics, then one row per class."""
    settings = result.settings
    scheme = ("1 s segments, 20°" if settings["metrics"] == "dcase2023"
              else "100 ms frames, 20°" + (", relative distance 1.0" if settings["use_distance"] else ", no distance"))
    lines = [f"{settings['metrics']} metrics ({scheme}), {settings['average']} average over "
             f"{settings['num_classes']} classes; {len(result.files) or settings['files']} file(s) scored"
             + (f", {len(result.skipped)} skipped" if result.skipped else "")]
    lines.append("  ".join(f"{key} {_format_value(key, value)}" for key, value in result.metrics.items()))
    lines.append("")
    keys = list(result.classwise)
    lines.append("class " + "".join(f"{key:>10}" for key in keys))
    for class_index in range(settings["num_classes"]):
        lines.append(f"{class_index:>5} " + "".join(
            f"{_format_value(key, result.classwise[key][class_index]):>10}" for key in keys))
    return "\n".join(lines)


def dataset_classes(ref: str | Path) -> tuple[int, Path] | None:
    """(class count, its dataset.json) of the dataset a reference folder lies in (ROOT/dataset.json,
    as `seld synth` and the converters write it, up to 3 folders above), or None."""
    ref = Path(ref).resolve()
    for folder in [ref, *ref.parents][:4]:
        path = folder / "dataset.json"
        if path.is_file():
            try:
                classes = json.loads(path.read_text()).get("classes")
            except (OSError, ValueError, AttributeError):
                return None
            return (len(classes), path) if isinstance(classes, list) and classes else None
    return None


def evaluate_command(args) -> int:
    """`seld evaluate`: score a prediction folder against a reference folder."""
    classes = args.classes
    if classes is None:  # a 3-class dataset scored as 13 classes had its macro F divided by 4
        found = dataset_classes(args.ref)
        classes = found[0] if found else 13
        if found:
            print(f"seld evaluate: {classes} classes, as {found[1]} names them (--classes to change)", file=sys.stderr)
    if classes < 1:
        raise SeldError(f"--classes must be at least 1, not {classes}")
    result = evaluate_folders(args.ref, args.pred, metrics=args.metrics, average=args.average,
                              use_distance=False if args.no_distance else None, num_classes=classes,
                              six_columns=args.pred_format)
    for path, reason in result.skipped:
        print(f"seld evaluate: skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), allow_nan=False))
    else:
        print(format_report(result))
    return 0
