"""Public SELD dataset layouts, as downloaded, laid out the way `seld train --data` reads them.

Our layout (README, Conventions): ``ROOT/{foa,mic}_dev/<split>/<name>.wav`` beside
``ROOT/metadata_dev/<split>/<name>.csv``; `seld train` trains on the splits whose name
starts with ``dev-train`` and validates on ``dev-val*`` (else ``dev-test*``).

STARSS22/STARSS23 need no conversion: they are downloaded in that layout, with the
splits ``dev-train-sony``, ``dev-train-tau``, ``dev-test-sony`` and ``dev-test-tau``
(e.g. ``foa_dev/dev-train-sony/fold3_room21_mix001.wav``, as soundata's starss2022 loader
and the DCASE 2022-2024 baselines read them): pass the folder to ``seld train --data``.
:func:`dcase_splits` lists what `seld train` will find there.

TAU-NIGENS Spatial Sound Events 2020 and 2021 (DCASE 2020 and 2021 task 3) need
:func:`convert_tau_nigens`:

- 2020 (zenodo 4064792): ``foa_dev/``, ``mic_dev/`` and ``metadata_dev/`` hold the files
  directly, named ``fold<F>_room<R>_mix<NNN>_ov<O>`` (soundata's
  tau2020sse_nigens index: ``foa_dev/fold1_room1_mix001_ov1.wav``,
  ``metadata_dev/fold1_room1_mix001_ov1.csv``). 14 classes.
- 2021 (zenodo 4568781, v1.0): the same flat folders with names ``fold<F>_room<R>_mix<NNN>``
  (the DCASE 2021 baseline, sharathadavanne/seld-dcase2021 cls_feature_class.py, lists
  ``os.listdir(<dataset_dir>/foa_dev)``); v1.2.0 (zenodo 5476980) already sorts them into
  ``dev-train``/``dev-val``/``dev-test`` subfolders (soundata's tau_nigens_sse_2021 loader:
  ``foa_dev/dev-train/fold1_room1_mix001.wav``). 12 classes.
- Metadata rows, both years: ``frame,class,track,azimuth,elevation`` (5 columns, no
  header, 100 ms frames, class and track from 0, integer degrees, azimuth
  counter-clockwise): the DCASE 2021 baseline's ``load_output_format_file`` reads 5 columns
  as polar, and soundata's 2020 and 2021 loaders document "frame number, active class
  index, track number index, azimuth, and elevation". Our reader takes them as they are
  (no distance column: train with ``model.distance=false``).
- Official development splits, from the baselines' seld.py (seld-dcase2021 and the
  DCASE 2022-2023 baselines' ``'2020' in dataset_dir`` / ``'2021' in dataset_dir`` cases):
  2020: train folds 3-6, validation fold 2, test fold 1;
  2021: train folds 1-4, validation fold 5, test fold 6.
- Classes (index = position): the baselines' ``params['unique_classes']`` (seld-dcase2020 and
  seld-dcase2021 parameter.py), alphabetical; 2021 drops engine and fire.

The evaluation sets (``foa_eval/``, ``mic_eval/``) are left alone. Audio is linked, not
copied (symlinks by default; hard links or copies on request), so a conversion takes
seconds and no disk. Run it as ``python -m seld.data_prep.convert SRC DST``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from seld import SeldError
from seld.arrays import array_for_format
from seld.atomic import atomic_path, check_writable, write_text_atomic
from seld.audio import SAMPLE_RATE, audio_info
from seld.formats import read_reference

FORMATS = ("foa", "mic")
SPLIT_NAMES = ("dev-train", "dev-val", "dev-test")

TAU_NIGENS = {
    2020: {
        "title": "TAU-NIGENS Spatial Sound Events 2020",
        "folds": {"dev-train": (3, 4, 5, 6), "dev-val": (2,), "dev-test": (1,)},
        "classes": ("alarm", "baby", "crash", "dog", "engine", "female_scream", "female_speech", "fire",
                    "footsteps", "knock", "male_scream", "male_speech", "phone", "piano"),
    },
    2021: {
        "title": "TAU-NIGENS Spatial Sound Events 2021",
        "folds": {"dev-train": (1, 2, 3, 4), "dev-val": (5,), "dev-test": (6,)},
        "classes": ("alarm", "baby", "crash", "dog", "female_scream", "female_speech", "footsteps", "knock",
                    "male_scream", "male_speech", "phone", "piano"),
    },
}
NAME = re.compile(r"fold(\d+)_room(\d+)_mix(\d+)(_ov(\d+))?")
LINK_MODES = ("symlink", "hardlink", "copy")


@dataclass
class Recording:
    name: str
    fold: int
    split: str  # destination split
    audio: dict[str, Path] = field(default_factory=dict)  # format -> source WAV
    metadata: Path | None = None


@dataclass
class Conversion:
    """What :func:`convert_tau_nigens` did: the year, and recordings per split and format."""

    year: int
    root: Path
    recordings: list[Recording]
    linked: int
    kept: int

    def counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for recording in self.recordings:
            row = table.setdefault(recording.split, {})
            for name in recording.audio:
                row[name] = row.get(name, 0) + 1
        return {split: table[split] for split in SPLIT_NAMES if split in table}


# ---------------------------------------------------------------- the DCASE layout as it is

def dcase_splits(root: str | Path, format_name: str = "foa") -> dict[str, int]:
    """{split: WAV files} of ``ROOT/<format>_dev/``, as `seld train` groups them: a STARSS23
    download gives {"dev-test-sony": ..., "dev-test-tau": ..., "dev-train-sony": ..., ...}."""
    from seld.dataset import split_wavs  # here: seld.dataset imports torch, which the conversions need not

    audio_root = Path(root) / f"{format_name}_dev"
    if not audio_root.is_dir():
        raise SeldError(f"{root}: no {format_name}_dev folder")
    return {p.name: len(split_wavs(p)) for p in sorted(audio_root.iterdir())
            if p.is_dir() and not p.name.startswith(".")}


# ---------------------------------------------------------------- TAU-NIGENS 2020/2021

def _link_mode(link: bool | str) -> str:
    if link is True:
        return "symlink"
    if link is False:
        return "copy"
    if link == "hard":
        return "hardlink"
    if link not in LINK_MODES:
        raise SeldError(f"link {link!r}: expected one of {', '.join(LINK_MODES)}")
    return link


def _scan(src: Path, year: int | None) -> tuple[int, list[Recording]]:
    """Every recording of the download with its fold, destination split, WAVs and CSV;
    raises SeldError naming the first file or folder that does not fit."""
    if not src.is_dir():
        raise SeldError(f"{src}: {'not a folder' if src.exists() else 'no such folder'}")
    formats = [name for name in FORMATS if (src / f"{name}_dev").is_dir()]
    if not formats:
        raise SeldError(f"{src}: neither foa_dev nor mic_dev (expected a TAU-NIGENS download: foa_dev/, mic_dev/, metadata_dev/)")
    metadata_root = src / "metadata_dev"
    if not metadata_root.is_dir():
        raise SeldError(f"{src}: no metadata_dev folder")

    found: dict[str, Recording] = {}
    subfolder_splits: dict[str, str] = {}  # name -> split folder it came in (2021 v1.2)
    for format_name in formats:
        audio_root = src / f"{format_name}_dev"
        try:
            entries = sorted(audio_root.iterdir())
        except OSError as error:
            raise SeldError(f"{audio_root}: cannot list it ({error.strerror or error})") from None
        wavs: list[tuple[Path, str | None]] = []
        for entry in entries:
            if entry.name.startswith("."):  # .ipynb_checkpoints, .DS_Store: no part of the download
                continue
            if entry.is_dir():
                if entry.name not in SPLIT_NAMES:
                    raise SeldError(f"{entry}: a split folder TAU-NIGENS does not have (expected files directly in "
                                    f"{audio_root.name}/, or in {', '.join(SPLIT_NAMES)}); a download already in "
                                    f"the DCASE layout (STARSS23) needs no conversion")
                wavs.extend((p, entry.name) for p in sorted(entry.iterdir())
                            if p.suffix.lower() == ".wav" and not p.name.startswith("."))
            elif entry.suffix.lower() == ".wav":
                wavs.append((entry, None))
        if not wavs:
            raise SeldError(f"{audio_root}: no WAV files")
        for path, split_folder in wavs:
            match = NAME.fullmatch(path.stem)
            if not match:
                raise SeldError(f"{path}: not a TAU-NIGENS name (fold<F>_room<R>_mix<NNN>[_ov<O>])")
            recording = found.setdefault(path.stem, Recording(path.stem, int(match.group(1)), ""))
            if format_name in recording.audio:
                raise SeldError(f"{path}: {path.stem} is there twice ({recording.audio[format_name]})")
            recording.audio[format_name] = path
            if split_folder is not None:
                if subfolder_splits.setdefault(path.stem, split_folder) != split_folder:
                    raise SeldError(f"{path}: in {split_folder}/, but its other format is in {subfolder_splits[path.stem]}/")

    has_overlap = {NAME.fullmatch(name).group(4) is not None for name in found}
    if len(has_overlap) > 1:
        raise SeldError(f"{src}: names with and without _ov<O> mixed: not one TAU-NIGENS release")
    detected = 2020 if has_overlap.pop() else 2021
    if year is None:
        year = detected
    if year not in TAU_NIGENS:
        raise SeldError(f"year {year}: TAU-NIGENS releases are 2020 and 2021")
    if year != detected:
        example = next(iter(found))
        raise SeldError(f"{src}: names like {example} are TAU-NIGENS {detected}'s, not {year}'s")

    fold_split = {fold: split for split, folds in TAU_NIGENS[year]["folds"].items() for fold in folds}
    for recording in found.values():
        expected = fold_split.get(recording.fold)
        if expected is None:
            path = next(iter(recording.audio.values()))
            raise SeldError(f"{path}: fold {recording.fold} is in no development split of TAU-NIGENS {year} "
                            f"(folds {', '.join(map(str, sorted(fold_split)))})")
        recording.split = subfolder_splits.get(recording.name, expected)
        if recording.split != expected:
            path = next(iter(recording.audio.values()))
            raise SeldError(f"{path}: fold {recording.fold} belongs in {expected}, not {recording.split}")
        candidates = [metadata_root / f"{recording.name}.csv", metadata_root / recording.split / f"{recording.name}.csv"]
        recording.metadata = next((p for p in candidates if p.is_file()), None)
        if recording.metadata is None:
            path = next(iter(recording.audio.values()))
            raise SeldError(f"{path}: no metadata file {candidates[0]} (nor {candidates[1]})")
    return year, [found[name] for name in sorted(found)]


def _check(recordings: list[Recording], year: int) -> None:
    classes = len(TAU_NIGENS[year]["classes"])
    for recording in recordings:
        for format_name, path in recording.audio.items():
            rate, channels, _ = audio_info(path)  # SeldError naming an unreadable file
            if rate != SAMPLE_RATE or channels != 4:
                raise SeldError(f"{path}: {rate} Hz, {channels} channels; TAU-NIGENS {format_name} files are "
                                f"{SAMPLE_RATE} Hz, 4 channels")
        events = read_reference(recording.metadata)  # SeldError naming a malformed file and line
        bad = [int(c) for c in events.class_index if not 0 <= c < classes]
        if bad:
            raise SeldError(f"{recording.metadata}: class {bad[0]} outside 0..{classes - 1} of TAU-NIGENS {year}")


def _same_file(target: Path, source: Path) -> bool:
    try:
        return target.samefile(source) or (target.is_symlink() and Path(os.readlink(target)) == source)
    except OSError:
        return False


def _in_place(source: Path, target: Path, mode: str) -> bool:
    """True when `target` already is `source` (or, copying, a copy of it); SeldError when
    something else is there."""
    if not (target.exists() or target.is_symlink()):
        return False
    if _same_file(target, source):
        return True
    if mode == "copy" and target.is_file() and not target.is_symlink() and target.stat().st_size == source.stat().st_size:
        return True
    raise SeldError(f"{target}: exists and is not {source}; convert into an empty folder")


def _place(source: Path, target: Path, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if mode == "symlink":
            target.symlink_to(source)
        elif mode == "hardlink":
            os.link(source, target)
        else:
            with atomic_path(target) as temporary:
                shutil.copyfile(source, temporary)
    except OSError as error:
        hint = " (hard links cannot cross file systems: use symlinks or copies)" if mode == "hardlink" else ""
        raise SeldError(f"{target}: cannot {mode} {source}: {error.strerror or error}{hint}") from None


def convert_tau_nigens(src: str | Path, dst: str | Path, link: bool | str = True, year: int | None = None) -> Conversion:
    """Lay a TAU-NIGENS Spatial Sound Events 2020 or 2021 development download out in our layout.

    `link`: True or "symlink" (default; absolute links to the download), "hardlink" (same
    file system only) or False/"copy". `year` is detected from the names when None (2020's
    carry ``_ov<O>``). Every file is checked (names, folds, metadata, sample rate and
    channels) before anything is written; a rerun into the same folder keeps what is there.
    Writes ``DST/dataset.json`` with the classes, splits and source.
    """
    src, dst = Path(src).absolute(), Path(dst).absolute()
    if (src / "dataset.json").is_file():  # made by seld synth or by this converter: its folds are not TAU-NIGENS's
        raise SeldError(f"{src}: a dataset laid out for seld already (it has a dataset.json); "
                        f"train on it as it is: seld train --data {src}")
    mode = _link_mode(link)
    year, recordings = _scan(src, year)
    _check(recordings, year)
    pairs = []
    for recording in recordings:
        for format_name, path in recording.audio.items():
            pairs.append((path, dst / f"{format_name}_dev" / recording.split / f"{recording.name}.wav"))
        pairs.append((recording.metadata, dst / "metadata_dev" / recording.split / f"{recording.name}.csv"))
    pairs = [(source.resolve() if mode == "symlink" else source, target) for source, target in pairs]
    todo = [(source, target) for source, target in pairs if not _in_place(source, target, mode)]
    check_writable(dst)
    for source, target in todo:
        _place(source, target, mode)
    linked, kept = len(todo), len(pairs) - len(todo)
    formats = sorted({name for r in recordings for name in r.audio})
    info = TAU_NIGENS[year]
    description = {
        "dataset": info["title"],
        "source": str(src),
        "link": mode,
        "classes": list(info["classes"]),
        "sample_rate": SAMPLE_RATE,
        "distance": False,
        "formats": {name: array_for_format(name).to_dict() for name in formats},
        "splits": {split: list(folds) for split, folds in info["folds"].items()},
    }
    write_text_atomic(dst / "dataset.json", json.dumps(description, indent=1) + "\n")
    return Conversion(year, dst, recordings, linked, kept)


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seld.data_prep.convert",
        description="Lay a TAU-NIGENS Spatial Sound Events 2020/2021 development download (foa_dev/, mic_dev/, "
                    "metadata_dev/) out in the DCASE split layout that `seld train --data` reads. "
                    "STARSS22/23 downloads need no conversion.")
    parser.add_argument("src", metavar="SRC", help="the unpacked download")
    parser.add_argument("dst", metavar="DST", help="folder to lay the dataset out in")
    parser.add_argument("--year", type=int, choices=sorted(TAU_NIGENS), help="release (default: from the file names)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--hardlink", action="store_const", const="hardlink", dest="link", help="hard links instead of symlinks")
    how.add_argument("--copy", action="store_const", const="copy", dest="link", help="copy the files")
    args = parser.parse_args(argv)
    try:
        result = convert_tau_nigens(args.src, args.dst, args.link or "symlink", args.year)
    except SeldError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    counts = result.counts()
    summary = "; ".join(f"{split}: " + ", ".join(f"{n} {f}" for f, n in row.items()) for split, row in counts.items())
    print(f"{parser.prog}: {TAU_NIGENS[result.year]['title']}, {len(result.recordings)} recordings ({summary}) "
          f"in {result.root} ({result.linked} files placed, {result.kept} already there)")
    classes = ",".join(TAU_NIGENS[result.year]["classes"])
    print(f"{parser.prog}: train with: seld train --data {result.root} classes={classes} model.distance=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
