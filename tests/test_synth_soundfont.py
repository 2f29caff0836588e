"""`seld synth-sounds`' GM soundfont clips: the MIDI writer, the plan, cutting fluidsynth's
render into clips, and fetching fluidsynth's missing libraries (no network: faked)."""

from __future__ import annotations

import subprocess
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seld import SeldError
from seld.data_prep import soundfont
from seld.data_prep.soundfont import DRUMS, TICKS_PER_SECOND, Clip, Note, midi_bytes, plan, render


def read_midi(data: bytes) -> list[tuple[int, bytes]]:
    """(absolute tick, message) of a type-0 file with running status unused, as midi_bytes writes it."""
    assert data[:4] == b"MThd" and struct.unpack(">IHHH", data[4:14]) == (6, 0, 1, 480)
    assert data[14:18] == b"MTrk"
    length = struct.unpack(">I", data[18:22])[0]
    track, events, i, tick = data[22:], [], 0, 0
    assert len(track) == length
    while i < len(track):
        delta = 0
        while True:
            byte = track[i]
            i += 1
            delta = (delta << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        tick += delta
        status = track[i]
        if status == 0xFF:
            size = track[i + 2]
            events.append((tick, track[i : i + 3 + size]))
            i += 3 + size
        else:
            size = 2 if status & 0xF0 == 0xC0 else 3
            events.append((tick, track[i : i + size]))
            i += size
    return events


def test_midi_file_plays_the_notes_at_their_times():
    clips = [Clip("a", "musical_instrument", {0: 40}, [Note(0.0, 0.5, 60), Note(0.5, 0.25, 64, velocity=70)], start=1.0),
             Clip("b", "clapping", {DRUMS: 0}, [Note(0.0, 0.1, 39, DRUMS)], start=3.0)]
    events = read_midi(midi_bytes(clips))
    assert events[0] == (0, b"\xff\x51\x03" + (500_000).to_bytes(3, "big"))
    assert (960, bytes([0xC0, 40])) in events
    ons = [(t, m[0], m[1], m[2]) for t, m in events if m[0] & 0xF0 == 0x90]
    offs = [(t, m[0] & 0x0F, m[1]) for t, m in events if m[0] & 0xF0 == 0x80]
    assert ons == [(960, 0x90, 60, 96), (1440, 0x90, 64, 70), (2880, 0x99, 39, 96)]
    assert offs == [(1440, 0, 60), (1680, 0, 64), (2976, 9, 39)]
    assert [m[:2] for t, m in events if t == 1440] == [bytes([0x80, 60]), bytes([0x90, 64])]  # off before on
    assert events[-1][1] == b"\xff\x2f\x00" and events[-1][0] == round((3.1 + soundfont.GAP_S) * TICKS_PER_SECOND)
    assert not any(m[0] == 0xC9 for _, m in events)  # the drum channel keeps the GM kit


def test_plan_is_deterministic_and_covers_its_classes():
    clips = plan()
    assert [(c.name, c.start, len(c.notes)) for c in clips] == [(c.name, c.start, len(c.notes)) for c in plan()]
    assert [c.notes[0].key for c in plan(1)] != [c.notes[0].key for c in clips]
    labels = {c.label for c in clips}
    assert labels == {"musical_instrument", "bell", "clapping", "music"}
    assert len({c.name for c in clips}) == len(clips)
    for a, b in zip(clips, clips[1:]):
        assert b.start >= a.start + a.length + soundfont.GAP_S - 1e-9
    for clip in clips:
        assert all(0 <= n.key < 128 and 0 < n.velocity < 128 and n.duration > 0 for n in clip.notes)
        assert 0.1 <= clip.length <= 25
    pieces = [c for c in clips if c.label == "music"]
    assert all(len({n.channel for n in c.notes}) == 4 for c in pieces)  # melody, chords, bass, drums


def fake_fluidsynth(clips, rate=24000, fail=False):
    """A stand-in for fluidsynth that writes a stereo render: a tone wherever a clip sounds."""
    calls = []

    def run(command, cwd=None, env=None):
        calls.append(command)
        if fail:
            return subprocess.CompletedProcess(command, 1, "", "fluidsynth: error: cannot load soundfont\n")
        out = Path(command[command.index("-F") + 1])
        total = clips[-1].start + clips[-1].length + soundfont.GAP_S
        audio = np.zeros((int(total * rate), 2), np.float32)
        for clip in clips:
            begin, end = int(clip.start * rate), int((clip.start + clip.length) * rate)
            audio[begin:end] = 0.05 * np.sin(2 * np.pi * 440 * np.arange(end - begin) / rate)[:, None]
        soundfile.write(out, audio, rate)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run, calls


def test_render_cuts_one_clip_per_file(tmp_path, monkeypatch):
    clips = [c for c in plan() if c.name in ("piano_0", "tubular_bells_1", "hand_claps_2", "piece_3")]
    start = 0.5
    for clip in clips:
        clip.start, start = start, start + clip.length + soundfont.GAP_S
    run, calls = fake_fluidsynth(clips)
    monkeypatch.setattr(soundfont, "_run", run)
    written = render(tmp_path / "FluidR3_GM.sf2", tmp_path / "out", tmp_path, clips, (["fluidsynth"], None))
    assert [(p.relative_to(tmp_path / "out").as_posix(), c.name) for p, c in written] == [
        ("musical_instrument/fluid-soundfont-gm__piano_0.wav", "piano_0"),
        ("bell/fluid-soundfont-gm__tubular_bells_1.wav", "tubular_bells_1"),
        ("clapping/fluid-soundfont-gm__hand_claps_2.wav", "hand_claps_2"),
        ("music/fluid-soundfont-gm__piece_3.wav", "piece_3")]
    for path, clip in written:
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
        assert info.frames / 24000 == pytest.approx(clip.length, abs=0.01)
        assert np.abs(soundfile.read(path)[0]).max() == pytest.approx(0.5, abs=1e-3)
    command = calls[0]
    assert command[:1] == ["fluidsynth"] and ["-R", "0"] == command[4:6] and ["-C", "0"] == command[6:8]
    assert command[command.index("-r") + 1] == "24000" and command[-1].endswith(".mid")
    assert not (tmp_path / "gm-plan.wav").exists()

    run, _ = fake_fluidsynth(clips, fail=True)
    monkeypatch.setattr(soundfont, "_run", run)
    with pytest.raises(SeldError, match="cannot load soundfont"):
        render(tmp_path / "FluidR3_GM.sf2", tmp_path / "out2", tmp_path, clips, (["fluidsynth"], None))


def test_only_missing_dependencies_are_fetched(monkeypatch):
    outputs = {
        "fluidsynth": "fluidsynth\n  Depends: libc6\n  Depends: libfluidsynth3\n  Depends: libsdl2-2.0-0\n"
                      "  Depends: libsystemd0\n    libelogind0\n  Conflicts: <iiwusynth>\n  Recommends: qsynth\n",
        "libfluidsynth3": "libfluidsynth3\n |Depends: libjack-jackd2-0\n  Depends: <libjack-0.125>\n"
                          " |Depends: timgm6mb-soundfont\n  Depends: <sf3-soundfont-gm>\n  Depends: libinstpatch-1.0-2\n",
    }
    installed = {"libc6", "libsystemd0", "libjack-jackd2-0"}
    monkeypatch.setattr(soundfont, "_installed", lambda name: name in installed)
    monkeypatch.setattr(soundfont, "_run", lambda command, cwd=None, env=None: subprocess.CompletedProcess(
        command, 0, outputs.get(command[-1], ""), ""))
    assert soundfont._depends("fluidsynth") == ["libfluidsynth3", "libsdl2-2.0-0"]
    # jack: an installed alternative; the soundfont: the first real alternative; instpatch: missing.
    assert soundfont._depends("libfluidsynth3") == ["timgm6mb-soundfont", "libinstpatch-1.0-2"]
