"""`seld synth`: a DCASE-layout dataset of synthetic spatial scenes.

Layout (README, Conventions): ``OUT/foa_dev/<split>/<name>.wav``, ``OUT/mic_dev/<split>/<name>.wav``,
``OUT/metadata_dev/<split>/<name>.csv``, splits ``dev-train``, ``dev-val``, ``dev-test``
(folds 1, 2, 3; rooms never shared between splits), names ``fold<F>_room<R>_mix<NNN>``,
and ``OUT/dataset.json`` with the seed, classes, rooms, arrays and settings.

Each mixture is seeded from (seed, fold, room, mix), never from the order of work, so
``--workers`` does not change a byte, and a rerun with a larger ``--minutes`` makes what a
fresh run of it would, keeping the files they share. A mixture is finished when its WAVs and
its CSV exist: each file is written to a temporary name and renamed, the CSV last, so a rerun
skips finished mixtures and an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from seld import SeldError, __version__
from seld.arrays import Array, array_for_format, load_array
from seld.audio import SAMPLE_RATE, write_audio
from seld.atomic import check_writable, write_text_atomic
from seld.data_prep.array_response import largest_capsule_radius
from seld.data_prep.rooms import RoomSpec, random_room
from seld.data_prep.scenes import Scene, SceneSettings, generate_scene, label_rows, render_scene
from seld.data_prep.sound_bank import STARSS23_CLASSES, class_key, make_bank
from seld.interrupts import die_with_parent

log = logging.getLogger(__name__)

SPLITS = (("dev-train", 1), ("dev-val", 2), ("dev-test", 3))
MAX_CAPSULES = 32  # 260 ran out of memory (24 GB) after 47 s
SPLIT_SHARES = (0.7, 0.15, 0.15)
PLAIN_EVERY_S = 60.0  # progress lines where stderr is no terminal


@dataclass(frozen=True)
class SceneResult:
    """One synthesized scene: audio per format name, float32 [channels, samples] at 24 kHz,
    and its DCASE 2024 label rows (frame, class, source, azimuth, elevation, distance_cm)."""

    audio: dict[str, np.ndarray]
    labels: list[tuple[int, int, int, int, int, int]]
    scene: Scene


def synthesize_scene(
    seed: int = 0,
    formats: Sequence[str] = ("foa", "mic"),
    *,
    duration_s: float = 60.0,
    classes: Sequence[str] = STARSS23_CLASSES,
    sounds_dir: str | Path | None = None,
    procedural_share: float = 0.0,
    mic_array: Array | None = None,
    room: RoomSpec | None = None,
    settings: SceneSettings | None = None,
) -> SceneResult:
    """Synthesize one scene in memory, deterministically from `seed`.

    `room` defaults to a random room from the seed (``RoomSpec.anechoic()`` gives free
    field); `mic_array` replaces the tetrahedral array for the "mic" format. For fully
    controlled scenes, build a :class:`~seld.data_prep.scenes.Scene` and call
    :func:`~seld.data_prep.scenes.render_scene` directly.
    """
    settings = replace(settings or SceneSettings(), duration_s=duration_s)
    bank = make_bank(classes, sounds_dir, procedural_share)
    room_rng, scene_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0xC0FFEE]).spawn(2))
    room = room or random_room(room_rng)
    scene = generate_scene(scene_rng, room, bank, settings)
    arrays = {name: (mic_array if name == "mic" and mic_array else array_for_format(name)) for name in formats}
    return SceneResult({name: render_scene(scene, array) for name, array in arrays.items()}, label_rows(scene, settings.activity_floor_db), scene)


# ---------------------------------------------------------------- dataset plan

MIXTURE_NAME = re.compile(r"fold\d+_room\d+_mix\d{3,}")

@dataclass(frozen=True)
class Mixture:
    split: str
    fold: int
    room: int
    index: int  # within the room

    @property
    def name(self) -> str:
        return f"fold{self.fold}_room{self.room}_mix{self.index:03d}"


def split_rooms(rooms: int) -> list[list[int]]:
    """Room numbers (1-based) per split: ~70/15/15, each split at least one room."""
    if rooms < 3:
        raise SeldError(f"--rooms {rooms}: need at least 3 rooms (one per split; rooms are never shared)")
    val = max(1, round(rooms * SPLIT_SHARES[1]))
    test = max(1, round(rooms * SPLIT_SHARES[2]))
    train = rooms - val - test
    numbers = list(range(1, rooms + 1))
    return [numbers[:train], numbers[train : train + val], numbers[train + val :]]


def plan(minutes: float, duration_s: float, rooms: int) -> list[Mixture]:
    """The mixtures that make `minutes` of audio per format, spread over splits and rooms."""
    total = max(1, math.ceil(minutes * 60 / duration_s - 1e-9))
    val = round(total * SPLIT_SHARES[1]) if total >= 3 else 0
    test = round(total * SPLIT_SHARES[2]) if total >= 3 else 0
    if total >= 3:
        val, test = max(1, val), max(1, test)
    counts = [total - val - test, val, test]
    mixtures = []
    for (split, fold), room_numbers, count in zip(SPLITS, split_rooms(rooms), counts):
        for k in range(count):
            room = room_numbers[k % len(room_numbers)]
            mixtures.append(Mixture(split, fold, room, k // len(room_numbers)))
    return mixtures


def room_for(seed: int, room: int) -> RoomSpec:
    return random_room(np.random.default_rng([seed, 1, room]))


# ---------------------------------------------------------------- files

def write_metadata(path: Path, rows) -> None:
    """DCASE 2024 reference rows, integers, no header; whole-or-nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(",".join(str(int(v)) for v in row) + "\n" for row in rows))


def _paths(out: Path, mixture: Mixture, formats: Sequence[str]) -> tuple[dict[str, Path], Path]:
    wavs = {name: out / f"{name}_dev" / mixture.split / f"{mixture.name}.wav" for name in formats}
    return wavs, out / "metadata_dev" / mixture.split / f"{mixture.name}.csv"


def _finished(out: Path, mixture: Mixture, formats: Sequence[str]) -> bool:
    wavs, csv = _paths(out, mixture, formats)
    return csv.exists() and all(p.exists() for p in wavs.values())


# Per worker process: the job's fixed inputs, set once.
_JOB: dict = {}


def _init_worker(job: dict) -> None:
    if multiprocessing.parent_process() is not None:  # a pool's worker: not to outlive a killed seld synth
        die_with_parent()
    _JOB.clear()
    _JOB.update(job)
    _JOB["bank"] = make_bank(job["classes"], job["sounds"], job["procedural_share"])


def _render_mixture(mixture: Mixture) -> str:
    job = _JOB
    out, formats, settings = Path(job["out"]), job["formats"], job["settings"]
    room = room_for(job["seed"], mixture.room)
    rng = np.random.default_rng([job["seed"], 2, mixture.fold, mixture.room, mixture.index])
    scene = generate_scene(rng, room, job["bank"], settings)
    wavs, csv = _paths(out, mixture, formats)
    for name in formats:
        if not wavs[name].exists():
            write_audio(wavs[name], render_scene(scene, job["arrays"][name]), SAMPLE_RATE)
    write_metadata(csv, label_rows(scene, settings.activity_floor_db))
    return mixture.name


def _dataset_description(seed, classes, settings, arrays, rooms, mixtures, bank, minutes) -> dict:
    return {
        "generator": f"seld {__version__} synth",
        "seed": seed,
        "classes": list(classes),
        "sample_rate": SAMPLE_RATE,
        "minutes_per_format": minutes,
        "formats": {name: array.to_dict() for name, array in arrays.items()},
        "sounds": bank.describe(),
        "settings": settings.to_dict(),
        "splits": _splits(mixtures),
        "rooms": {str(r): room_for(seed, r).to_dict() for r in range(1, rooms + 1)},
    }


def _grown_plan(out: Path, mixtures: list[Mixture], previous: dict, args, description: dict) -> list[Mixture]:
    """A rerun makes the dataset of the largest --minutes asked of the folder, as a fresh run of it
    would (`description` updated to match). Splits are rounded one by one, so a larger plan may hold
    one training mixture fewer than a smaller one (9 -> 10 mixtures: 7 -> 6 in dev-train): mixtures
    in the folder that the plan lacks are removed, not kept beside it."""
    previous_minutes = float(previous.get("minutes_per_format") or 0)
    if previous_minutes > args.minutes:
        mixtures = plan(previous_minutes, args.duration, args.rooms)
        description["splits"] = _splits(mixtures)
    description["minutes_per_format"] = max(args.minutes, previous_minutes)
    planned = {(m.split, m.name) for m in mixtures}
    stray = sorted({(path.parent.name, path.stem) for path in out.glob("*_dev/*/*")
                    if MIXTURE_NAME.fullmatch(path.stem) and path.suffix in (".wav", ".csv")} - planned)
    for split, name in stray:
        for path in out.glob(f"*_dev/{split}/{name}.*"):  # the CSV too: a mixture without it is unfinished
            path.unlink(missing_ok=True)
    if stray:
        log.info("removed %d mixture(s) that %g minutes do not plan (%s), as a fresh run would not make them",
                 len(stray), description["minutes_per_format"], ", ".join(f"{s}/{n}" for s, n in stray))
    return mixtures


def _splits(mixtures: list[Mixture]) -> dict[str, list[int]]:
    """dataset.json's rooms of each split."""
    return {split: sorted({m.room for m in mixtures if m.split == split}) for split, _ in SPLITS}


def _remove_dead_temporaries(out: Path) -> None:
    """The temporary files of writes a kill cut short (".NAME.wav.x8k2.tmp"). A file is written in
    one go, in well under a minute, so one older than that belongs to no running write."""
    for temporary in out.glob("*_dev/*/.*.tmp"):
        try:
            if time.time() - temporary.stat().st_mtime > 60:
                temporary.unlink()
        except OSError:
            pass  # gone already, or not ours to remove: it is only clutter


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


class _PlainProgress:
    """tqdm's update/close as plain lines on stderr, one every PLAIN_EVERY_S at most, and the last."""

    def __init__(self, total_s: float, done_s: float):
        self.total_s, self.done_s, self.said = total_s, done_s, time.monotonic()

    def update(self, seconds: float) -> None:
        self.done_s += seconds
        if time.monotonic() - self.said >= PLAIN_EVERY_S or self.done_s >= self.total_s:
            self.said = time.monotonic()
            print(f"seld synth: {self.done_s / 60:.1f}/{self.total_s / 60:.1f} min of audio", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def synth_command(args) -> int:
    from tqdm import tqdm

    out = Path(args.out)
    formats = ("foa", "mic") if args.format == "both" else (args.format,)
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else STARSS23_CLASSES
    if not classes:
        raise SeldError("--classes: no class names given")
    if len({class_key(c) for c in classes}) != len(classes):  # Bell and bell are one class of sounds
        raise SeldError(f"--classes: a class is named twice ({args.classes})")
    if not 0 < args.minutes < math.inf:
        raise SeldError(f"--minutes {args.minutes}: must be a positive number")
    if not 1 <= args.duration <= 3600:
        raise SeldError(f"--duration {args.duration}: must be 1 to 3600 seconds")
    if args.seed < 0:
        raise SeldError(f"--seed {args.seed}: must be 0 or more")
    if args.max_polyphony < 1:
        raise SeldError(f"--max-polyphony {args.max_polyphony}: must be at least 1")
    if args.workers < 1:
        raise SeldError(f"--workers {args.workers}: must be at least 1")
    share = float(getattr(args, "procedural_share", 0.0) or 0.0)  # callers building a Namespace may leave it out
    if not 0.0 <= share <= 1.0:
        raise SeldError(f"--procedural-share {share:g}: must be between 0 and 1")
    if share and not args.sounds:
        log.warning("--procedural-share %g without --sounds: every event is procedural anyway", share)
    arrays = {name: array_for_format(name) for name in formats}
    if args.array:
        custom = load_array(args.array)
        if len(custom.capsules_m) > MAX_CAPSULES:  # the diffuse noise's coherence is [frequencies, capsules, capsules]
            raise SeldError(f"{args.array}: {len(custom.capsules_m)} capsules; seld synth renders arrays of up to "
                            f"{MAX_CAPSULES}")
        if custom.kind == "mic" and "mic" in arrays:
            arrays["mic"] = custom
        elif custom.kind == "foa" and "foa" in arrays:
            arrays["foa"] = custom
        else:
            raise SeldError(f"{args.array}: a {custom.kind} array, but --format {args.format} renders no {custom.kind}")
    bank = make_bank(classes, args.sounds, share)  # checks the sound folder before any work
    settings = SceneSettings(duration_s=float(args.duration), max_polyphony=int(args.max_polyphony))
    if args.array and custom.capsules_m:
        radius, limit = max(math.dist(c, (0, 0, 0)) for c in custom.capsules_m), largest_capsule_radius(
            settings.distance_range_m[0])
        if radius > limit:
            raise SeldError(f"{args.array}: a capsule {radius:.2f} m from the array centre; sources come as near as "
                            f"{settings.distance_range_m[0]:g} m, so capsules must be within {limit:.2f} m")
    mixtures = plan(args.minutes, args.duration, args.rooms)
    check_writable(out)
    _remove_dead_temporaries(out)

    description = json.loads(json.dumps(
        _dataset_description(args.seed, classes, settings, arrays, args.rooms, mixtures, bank, args.minutes)))
    manifest = out / "dataset.json"
    if not manifest.exists() and any((out / folder).exists() for folder in ("foa_dev", "mic_dev", "metadata_dev")):
        raise SeldError(f"{out}: holds a dataset that seld synth did not make (no dataset.json); use another --out")
    if manifest.exists():
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, ValueError):
            previous = None
        comparable = ("seed", "classes", "settings", "sounds", "rooms")
        if previous and isinstance(previous.get("sounds"), dict) and "root" in previous["sounds"]:
            # Made before roots were recorded absolute: as typed, from the folder this rerun runs in.
            previous["sounds"]["root"] = str(Path(previous["sounds"]["root"]).resolve())
        if previous is None or any(previous.get(k) != description.get(k) for k in comparable) or any(
            previous.get("formats", {}).get(n, a) != a for n, a in description["formats"].items()
        ):
            raise SeldError(f"{manifest}: this folder holds a dataset made with other settings; use another --out")
        description["formats"] = {**previous.get("formats", {}), **description["formats"]}
        mixtures = _grown_plan(out, mixtures, previous, args, description)
    if len(mixtures) < len(SPLITS):  # of the plan this run makes (a rerun keeps a larger one)
        log.warning("%d mixture(s) of %g s: all go to dev-train, none to dev-val and dev-test, so training has no "
                    "validation and seld evaluate no test split; %d fill every split (--minutes %g, or a shorter "
                    "--duration)", len(mixtures), args.duration, len(SPLITS), len(SPLITS) * args.duration / 60)
    _write_json(manifest, {**description, "complete": False})  # training refuses it until the end

    todo = [m for m in mixtures if not _finished(out, m, formats)]
    seconds_each = round(args.duration * len(formats))
    print(f"seld synth: {len(mixtures)} mixture(s) of {args.duration:g} s per format ({', '.join(formats)}), "
          f"{len(mixtures) - len(todo)} already done, into {out}")
    job = {"out": str(out), "formats": formats, "settings": settings, "seed": args.seed, "classes": classes,
           "sounds": args.sounds, "procedural_share": share, "arrays": arrays}
    # Counts seconds, shows minutes of audio (all formats).
    # A bar on a terminal; in a log (no terminal), a line every PLAIN_EVERY_S at most, not carriage returns.
    total_s, done_s = len(mixtures) * seconds_each, (len(mixtures) - len(todo)) * seconds_each
    if hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
        bar = tqdm(total=total_s, initial=done_s, unit="min", unit_scale=1 / 60, desc="synth", dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min of audio [{elapsed}<{remaining}]")
    else:
        bar = _PlainProgress(total_s, done_s)
    try:
        if args.workers == 1 or len(todo) <= 1:
            _init_worker(job)
            for mixture in todo:
                _render_mixture(mixture)
                bar.update(seconds_each)
        else:
            with ProcessPoolExecutor(max_workers=min(args.workers, len(todo)), initializer=_init_worker,
                                     initargs=(job,)) as pool:
                futures = [pool.submit(_render_mixture, m) for m in todo]
                try:
                    for future in as_completed(futures):
                        future.result()
                        bar.update(seconds_each)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    _write_json(manifest, {**description, "complete": True})
    print(f"seld synth: wrote {len(todo)} mixtures ({len(todo) * seconds_each / 60:.1f} min of audio) to {out}")
    return 0
