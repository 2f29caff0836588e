"""`seld synth-sounds`: a folder of real dry recordings, one subfolder per class, built
from Debian packages that carry recordings (for `seld synth --sounds DIR`).

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into a
work folder: nothing is installed. Files are sorted into classes by keywords in their
paths; spoken words (tuxpaint stamps) go to female or male speech by their pitch. The
General MIDI soundfont of fluid-soundfont-gm is rendered with fluidsynth into instrument
phrases, bells, claps and short pieces of music (seld.data_prep.soundfont).
``manifest.csv`` records each file's class, package, version and licence. Nothing of
this is ever committed: the licences are the packages' own.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from seld import SeldError
from seld.atomic import atomic_path, write_text_atomic
from seld.audio import audio_info, read_audio
from seld.data_prep import soundfont

log = logging.getLogger(__name__)

PACKAGES = (
    "sound-theme-freedesktop", "lomiri-sounds", "ufoai-sound", "minetest-data", "sonic-pi-samples",
    "lmms-common", "tuxpaint-stamps-default", "hedgewars-data", soundfont.PACKAGE,
)
SUFFIXES = (".wav", ".ogg", ".oga", ".flac")
# Ordered: the first class whose keyword is in the file's path (lowercase) wins.
KEYWORDS = (
    ("knock", ("knock",)),
    ("door", ("door",)),
    ("footsteps", ("footstep", "step", "walk")),
    ("water_tap", ("water", "faucet", "splash", "drip", "pour", "bubble", "liquid")),
    ("clapping", ("clap", "applause")),
    ("laughter", ("laugh", "giggle")),
    ("telephone", ("phone", "ringtone", "ring_", "dial", "incoming")),
    ("bell", ("bell", "chime", "ding", "gong", "alarm", "tubular")),
    ("musical_instrument", ("piano", "guitar", "bass", "violin", "flute", "sax", "organ", "harp", "trumpet",
                            "marimba", "vibraphone", "cello", "string", "horn", "pluck", "drum", "snare",
                            "kick", "cymbal", "hihat", "tabla", "perc_", "ambi_", "elec_", "bd_", "sn_")),
    ("music", ("music", "song", "theme", "/loop", "loop_")),
    ("domestic_sounds", ("kitchen", "vacuum", "dish", "cutlery", "glass", "microwave", "clock", "typing",
                         "keyboard", "blender", "cup", "plate", "paper", "zipper", "drawer", "toilet", "fridge")),
)
SPEECH_PACKAGES = ("tuxpaint-stamps-default",)


# Words holding a keyword they do not mean: 'dialog-warning' is a desktop notification, not a dial tone.
MISLEADING = ("dialog",)


def classify(path: str) -> str | None:
    lowered = path.lower()
    for word in MISLEADING:
        lowered = lowered.replace(word, " ")
    for name, words in KEYWORDS:
        if any(word in lowered for word in words):
            return name
    return None


def median_f0(path: Path) -> float | None:
    """Median pitch of the voiced frames (autocorrelation), None when unvoiced."""
    audio, rate = read_audio(path, 16000)
    x = audio.mean(axis=0)
    frame, hop = 640, 320
    pitches = []
    for start in range(0, len(x) - frame, hop):
        block = x[start : start + frame] - x[start : start + frame].mean()
        if np.sqrt(np.mean(block**2)) < 0.02 * (np.abs(x).max() + 1e-9):
            continue
        ac = np.correlate(block, block, "full")[frame - 1 :]
        lo, hi = rate // 400, rate // 70
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            pitches.append(rate / lag)
    return float(np.median(pitches)) if len(pitches) >= 3 else None


def _licence(root: Path, package: str) -> str:
    copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
    try:
        text = copyright_file.read_text(errors="replace")
    except OSError:
        return "unknown (no copyright file)"
    licences = []
    for match in re.finditer(r"^License:\s*(\S.*)$", text, re.MULTILINE):
        if match.group(1).strip() not in licences:
            licences.append(match.group(1).strip())
    return "; ".join(licences[:4]) if licences else "see /usr/share/doc/%s/copyright" % package


def _unpack_archives(root: Path) -> None:
    """Games ship their sounds in zip archives (.pk3): unpack the audio members in place."""
    for archive in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".pk3", ".zip") and p.is_file()):
        try:
            with zipfile.ZipFile(archive) as handle:
                for member in handle.namelist():
                    if member.lower().endswith(SUFFIXES) and ".." not in member and not member.startswith("/"):
                        handle.extract(member, archive.parent / (archive.stem + "_" + archive.suffix.lstrip(".")))
        except (zipfile.BadZipFile, OSError) as error:
            log.warning("%s: cannot unpack (%s)", archive, error)


def _render_soundfont(root: Path, out: Path, work: Path, package: str, version: str, licence: str, rows: list) -> int:
    """Instrument, bell, clap and music clips from the GM soundfont (seld.data_prep.soundfont)."""
    try:
        written = soundfont.render(root / soundfont.SOUNDFONT, out, work)
    except SeldError as error:
        print(f"seld synth-sounds: skipping {package}: {error}")
        return 0
    try:
        copyright_text = (root / "usr" / "share" / "doc" / package / "copyright").read_text(errors="replace")
    except OSError:
        copyright_text = ""
    if re.search(r"under the MIT licen[cs]e", copyright_text, re.IGNORECASE):
        licence = "MIT (FluidR3_GM.sf2, Frank Wen)"
    for target, clip in written:
        rows.append((str(target.relative_to(out)), clip.label, package, version, licence,
                     f"/{soundfont.SOUNDFONT} rendered by fluidsynth: {clip.name}"))
    return len(written)


def _earlier_rows(out: Path, packages: set[str]) -> list[tuple[str, ...]]:
    """manifest.csv's rows of files that earlier runs copied from packages other than `packages`
    (those this run copied afresh), still there."""
    try:
        with (out / "manifest.csv").open(newline="") as handle:
            rows = list(csv.reader(handle))[1:]
    except OSError:
        return []
    return [tuple(row) for row in rows if len(row) == 6 and row[2] not in packages and (out / row[0]).is_file()]


def synth_sounds_command(args) -> int:
    out = Path(args.out)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SeldError("needs apt-get and dpkg-deb (Debian or Ubuntu); not found on this system")
    named = getattr(args, "packages", None)
    packages = tuple(p.strip() for p in named.split(",") if p.strip()) if named else PACKAGES
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SeldError(f"{out}: cannot write there ({error.strerror or error})") from None
    rows, copied = [], set()  # copied: the packages this run copied afresh
    with tempfile.TemporaryDirectory(prefix="seld-sounds-") as work_name:
        work = Path(work_name)
        for package in packages:
            print(f"seld synth-sounds: downloading {package} ...", flush=True)
            result = soundfont._run(["apt-get", "download", package], work)
            debs = sorted(work.glob(f"{package}_*.deb"))
            if result.returncode != 0 or not debs:
                reason = (result.stderr.strip().splitlines() or ["no .deb"])[-1]
                print(f"seld synth-sounds: skipping {package}: {reason}")
                continue
            deb = debs[-1]
            version = soundfont._run(["dpkg-deb", "-f", str(deb), "Version"], work).stdout.strip()
            root = work / package
            if soundfont._run(["dpkg-deb", "-x", str(deb), str(root)], work).returncode != 0:
                print(f"seld synth-sounds: skipping {package}: dpkg-deb could not unpack {deb.name}")
                continue
            licence = _licence(root, package)
            if package == soundfont.PACKAGE:
                kept = _render_soundfont(root, out, work, package, version, licence, rows)
                copied.add(package)
                deb.unlink()
                shutil.rmtree(root, ignore_errors=True)
                print(f"seld synth-sounds: {package} {version}: {kept} recordings rendered with fluidsynth")
                continue
            _unpack_archives(root)
            kept, targets = 0, set()
            copied.add(package)
            for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
                relative = str(path.relative_to(root))
                if package in SPEECH_PACKAGES:
                    if "_desc" not in path.stem and "/sounds/" not in relative and "/sound" not in relative:
                        continue
                    label = classify(relative) if "_desc" not in path.stem else None
                    if label is None and "_desc" in path.stem:
                        try:
                            pitch = median_f0(path)
                        except SeldError:
                            continue
                        if pitch is None:
                            continue
                        label = "female_speech" if pitch >= 165 else "male_speech"
                else:
                    label = classify(relative)
                if label is None:
                    continue
                try:
                    rate, channels, frames = audio_info(path)
                except SeldError:
                    continue
                if not 0.2 <= frames / rate <= 120:
                    continue
                target = out / label / f"{package}__{path.stem}{path.suffix.lower()}"
                twin = 1
                while target in targets:  # one name in two folders of the package (basses/, bassloops/)
                    twin += 1
                    target = out / label / f"{package}__{path.stem}-{twin}{path.suffix.lower()}"
                targets.add(target)
                with atomic_path(target) as temporary:
                    shutil.copyfile(path, temporary)
                rows.append((str(target.relative_to(out)), label, package, version, licence, "/" + relative))
                kept += 1
            deb.unlink()
            shutil.rmtree(root, ignore_errors=True)
            print(f"seld synth-sounds: {package} {version}: {kept} recordings")
    if not rows:
        raise SeldError(f"no recordings found in {', '.join(packages)}"
                        + ("" if copied else " (no package could be downloaded: apt-get update first?)"))
    rows += _earlier_rows(out, copied)  # a folder filled by several runs keeps every file's licence
    manifest = io.StringIO(newline="")
    writer = csv.writer(manifest)
    writer.writerow(["file", "class", "package", "version", "licence", "source_path"])
    writer.writerows(sorted(rows))
    write_text_atomic(out / "manifest.csv", manifest.getvalue())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    print(f"seld synth-sounds: {len(rows)} recordings in {out}: "
          + ", ".join(f"{name} {count}" for name, count in sorted(counts.items())))
    print(f"seld synth-sounds: use them with: seld synth --sounds {out} --classes {','.join(sorted(counts))}")
    return 0
