"""Instrument and music recordings rendered from the General MIDI soundfont of Debian's
fluid-soundfont-gm (FluidR3_GM.sf2, MIT licence) with the fluidsynth command-line synthesizer,
for `seld synth-sounds`.

Everything is planned here, deterministically: short phrases per GM instrument
(``musical_instrument``), bells (``bell``), hand claps from the GM drum kit (``clapping``)
and small multi-part pieces with drums (``music``). The whole plan is written as one MIDI
file (a tiny writer below, no dependency), rendered in one fluidsynth run, dry (reverb and
chorus off) at 24 kHz, and cut into one WAV per clip at the planned times.

fluidsynth comes from PATH when installed; otherwise its Debian package and the libraries
it needs that are not installed are fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into the work folder (nothing is installed), and run from there.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from seld import SeldError
from seld.audio import SAMPLE_RATE

PACKAGE = "fluid-soundfont-gm"
SOUNDFONT = Path("usr/share/sounds/sf2/FluidR3_GM.sf2")
TICKS_PER_SECOND = 960  # 480 ticks per beat at the default tempo of 120 beats per minute
GAP_S = 2.0  # silence after each clip, for its release to die away
DRUMS = 9  # MIDI channel 10

# GM program numbers (0-based) of the instruments, and whether they sustain (long notes) or not.
INSTRUMENTS = {
    "piano": (0, False), "electric_piano": (4, False), "harpsichord": (6, False), "celesta": (8, False),
    "vibraphone": (11, False), "marimba": (12, False), "xylophone": (13, False), "organ": (19, True),
    "accordion": (21, True), "nylon_guitar": (24, False), "steel_guitar": (25, False), "electric_guitar": (27, False),
    "bass": (33, False), "violin": (40, True), "cello": (42, True), "pizzicato": (45, False), "harp": (46, False),
    "trumpet": (56, True), "trombone": (57, True), "french_horn": (60, True), "saxophone": (65, True),
    "oboe": (68, True), "clarinet": (71, True), "flute": (73, True), "recorder": (74, True), "banjo": (105, False),
    "music_box": (10, False),
}
BELLS = {"tubular_bells": 14, "tinkle_bell": 112, "agogo": 113}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
PROGRESSIONS = ((0, 7, 9, 5), (0, 5, 7, 0), (9, 5, 0, 7), (0, 9, 5, 7))  # I-V-vi-IV and friends, as roots


@dataclass
class Note:
    start: float  # seconds from the clip's start
    duration: float
    key: int
    channel: int = 0
    velocity: int = 96


@dataclass
class Clip:
    name: str
    label: str  # class folder
    programs: dict[int, int]  # channel -> GM program
    notes: list[Note] = field(default_factory=list)
    start: float = 0.0  # seconds into the rendered file

    @property
    def length(self) -> float:
        return max(n.start + n.duration for n in self.notes)


# ---------------------------------------------------------------- MIDI

def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(clips: list[Clip]) -> bytes:
    """A type-0 standard MIDI file playing `clips` at their start times."""
    events: list[tuple[int, int, bytes]] = []  # (tick, order, message): program changes first, note-offs before note-ons
    for clip in clips:
        tick = round(clip.start * TICKS_PER_SECOND)
        for channel, program in sorted(clip.programs.items()):
            if channel != DRUMS:
                events.append((tick, 0, bytes([0xC0 | channel, program])))
        for note in clip.notes:
            on = round((clip.start + note.start) * TICKS_PER_SECOND)
            off = max(on + 1, round((clip.start + note.start + note.duration) * TICKS_PER_SECOND))
            events.append((on, 2, bytes([0x90 | note.channel, note.key, note.velocity])))
            events.append((off, 1, bytes([0x80 | note.channel, note.key, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track, now = bytearray(), 0
    track += _varlen(0) + b"\xff\x51\x03" + (500_000).to_bytes(3, "big")  # 120 beats per minute
    for tick, _, message in events:
        track += _varlen(tick - now) + message
        now = tick
    end = round((clips[-1].start + clips[-1].length + GAP_S) * TICKS_PER_SECOND) if clips else 0
    track += _varlen(max(0, end - now)) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


# ---------------------------------------------------------------- the plan

def _melody(rng, tonic: int, seconds: float, sustained: bool, channel: int = 0) -> list[Note]:
    notes, t = [], 0.0
    degree = int(rng.integers(0, 7))
    beat = float(rng.choice([0.25, 0.3, 0.4, 0.5]))
    while t < seconds:
        degree = int(np.clip(degree + rng.integers(-2, 3), -3, 10))
        key = tonic + 12 * (degree // 7) + MAJOR[degree % 7]
        length = beat * float(rng.choice([1, 2, 2, 4] if sustained else [1, 1, 2]))
        notes.append(Note(t, length * (0.95 if sustained else 0.8), key, channel, int(rng.integers(70, 115))))
        t += length
    return notes


def plan(seed: int = 0, phrases_per_instrument: int = 3, pieces: int = 10) -> list[Clip]:
    """Every clip, with its start in the rendered file; deterministic from `seed`."""
    rng = np.random.default_rng([seed, 0x5F2])
    clips: list[Clip] = []
    for name, (program, sustained) in INSTRUMENTS.items():
        low = 36 if name in ("bass", "cello", "trombone") else 55
        for k in range(phrases_per_instrument):
            tonic = low + int(rng.integers(0, 12))
            clips.append(Clip(f"{name}_{k}", "musical_instrument", {0: program},
                              _melody(rng, tonic, float(rng.uniform(2.0, 5.0)), sustained)))
    for name, program in BELLS.items():
        for k in range(3):
            tonic = 60 + int(rng.integers(0, 12))
            strikes = [Note(float(i * rng.uniform(0.6, 1.2)), 1.5, tonic + MAJOR[int(rng.integers(0, 7))], 0, 100)
                       for i in range(int(rng.integers(1, 5)))]
            clips.append(Clip(f"{name}_{k}", "bell", {0: program}, strikes))
    for k in range(6):  # GM drum kit: key 39 is the hand clap
        interval, t, notes = float(rng.uniform(0.18, 0.5)), 0.0, []
        for _ in range(int(rng.integers(4, 16))):
            notes.append(Note(t, 0.1, 39, DRUMS, int(rng.integers(80, 127))))
            t += interval * float(rng.uniform(0.9, 1.1))
        clips.append(Clip(f"hand_claps_{k}", "clapping", {DRUMS: 0}, notes))
    lead_choices = [p for n, (p, _) in INSTRUMENTS.items() if n not in ("bass", "cello", "trombone")]
    for k in range(pieces):
        tonic = 48 + int(rng.integers(0, 12))
        bar = float(rng.uniform(1.6, 2.4))
        progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
        bars = 2 * len(progression)
        programs = {0: int(rng.choice(lead_choices)), 1: int(rng.choice([0, 4, 19, 48, 88])), 2: 33, DRUMS: 0}
        notes = _melody(rng, tonic + 12, bars * bar, bool(rng.random() < 0.5), channel=0)
        for b in range(bars):
            root = tonic + progression[b % len(progression)]
            third = 3 if progression[b % len(progression)] == 9 else 4
            for interval in (0, third, 7):
                notes.append(Note(b * bar, bar * 0.95, root + interval, 1, 60))
            notes.append(Note(b * bar, bar / 2 * 0.9, root - 12, 2, 90))
            notes.append(Note(b * bar + bar / 2, bar / 2 * 0.9, root - 5, 2, 80))
            for beat in range(4):
                t = b * bar + beat * bar / 4
                notes.append(Note(t, 0.1, 36 if beat % 2 == 0 else 38, DRUMS, 90))
                notes.append(Note(t + bar / 8, 0.05, 42, DRUMS, 60))
        clips.append(Clip(f"piece_{k}", "music", programs, notes))
    start = 0.5
    for clip in clips:
        clip.start = start
        start += clip.length + GAP_S
    return clips


# ---------------------------------------------------------------- fluidsynth

def _run(command: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def _installed(package: str) -> bool:
    result = _run(["dpkg-query", "-W", "-f=${Status}", package])
    return result.returncode == 0 and "install ok installed" in result.stdout


def _depends(package: str) -> list[str]:
    """Packages `package` depends on: of each group of alternatives, the first real one, or
    none when one of them is installed."""
    lines = _run(["apt-cache", "depends", package]).stdout.splitlines()
    groups, current = [], []
    for line in lines:
        match = re.match(r"^\s*(\|?)Depends:\s*(\S+)", line)
        if not match:
            continue
        current.append(match.group(2))
        if not match.group(1):  # "|Depends" continues a group of alternatives
            groups.append(current)
            current = []
    wanted = []
    for group in groups:
        real = [name for name in group if not name.startswith("<")]
        if real and not any(_installed(name) for name in real):
            wanted.append(real[0])
    return wanted


def fetch_fluidsynth(work: Path) -> tuple[list[str], dict | None]:
    """(command, environment) that runs fluidsynth: the installed one, or one unpacked from
    Debian packages with the libraries it needs that are not installed. SeldError if neither."""
    installed = shutil.which("fluidsynth")
    if installed:
        return [installed], None
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SeldError("fluidsynth is not installed, and apt-get/dpkg-deb are not there to fetch it")
    root = work / "fluidsynth-root"
    root.mkdir(parents=True, exist_ok=True)
    todo, seen = ["fluidsynth"], set()
    while todo:
        package = todo.pop()
        if package in seen or (package != "fluidsynth" and _installed(package)):
            continue
        seen.add(package)
        if len(seen) > 40:
            raise SeldError("fluidsynth needs too many packages that are not installed; install it with apt")
        result = _run(["apt-get", "download", package], work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            reason = (result.stderr.strip().splitlines() or ["no .deb"])[-1]
            raise SeldError(f"cannot fetch {package} for fluidsynth: {reason}")
        if _run(["dpkg-deb", "-x", str(debs[-1]), str(root)]).returncode != 0:
            raise SeldError(f"{debs[-1]}: dpkg-deb could not unpack it")
        debs[-1].unlink()
        todo.extend(name for name in _depends(package) if "soundfont" not in name)  # we bring our own
    libraries = sorted({str(p.parent) for p in root.rglob("*.so*")})
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(libraries + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":"))
    command = [str(root / "usr" / "bin" / "fluidsynth")]
    check = _run(command + ["--version"], env=env)
    if check.returncode != 0:
        reason = (check.stderr.strip().splitlines() or ["it does not start"])[-1]
        raise SeldError(f"fluidsynth unpacked from Debian packages does not run: {reason}")
    return command, env


def render(soundfont: Path, out: Path, work: Path, clips: list[Clip] | None = None,
           fluidsynth: tuple[list[str], dict | None] | None = None) -> list[tuple[Path, Clip]]:
    """Render every clip to ``OUT/<label>/fluid-soundfont-gm__<name>.wav`` (24 kHz mono, 16 bit);
    returns the files written with their clips."""
    clips = plan() if clips is None else clips
    command, env = fluidsynth or fetch_fluidsynth(work)
    midi, wav = work / "gm-plan.mid", work / "gm-plan.wav"
    midi.write_bytes(midi_bytes(clips))
    # -n no MIDI input, -i no shell, -R 0 -C 0 dry (no reverb, no chorus), -F render to a file.
    result = _run(command + ["-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(SAMPLE_RATE),
                             "-F", str(wav), str(soundfont), str(midi)], env=env)
    if result.returncode != 0 or not wav.exists():
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise SeldError(f"fluidsynth could not render {midi.name}: {reason}")
    audio, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SeldError(f"{wav}: fluidsynth wrote {rate} Hz, not {SAMPLE_RATE}")
    mono = audio.mean(axis=1)
    written = []
    for clip in clips:
        begin = int(clip.start * SAMPLE_RATE)
        segment = mono[begin : int((clip.start + clip.length + GAP_S * 0.9) * SAMPLE_RATE)]
        peak = float(np.abs(segment).max()) if len(segment) else 0.0
        if peak < 1e-4:
            continue
        above = np.flatnonzero(np.abs(segment) > peak * 10 ** (-60 / 20))
        segment = segment[: above[-1] + 1] * (0.5 / peak)
        target = out / clip.label / f"{PACKAGE}__{clip.name}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(target), segment, SAMPLE_RATE, subtype="PCM_16")
        written.append((target, clip))
    wav.unlink()
    return written
