"""`seld synth` inputs: bad ones fail in one clear line before any work starts; --sounds with
--procedural-share (MixedBank) renders deterministically and falls back to procedural sounds."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seld import SeldError
from seld.cli import cli
from seld.data_prep import synth as synth_module
from seld.data_prep.sound_bank import FolderBank, MixedBank, ProceduralBank, _load_mono, _normalized

SMALL = ["--minutes", "0.15", "--duration", "3", "--rooms", "3"]  # 3 mixtures, one per split


def tone_folder(root: Path, classes=("bell",), files: int = 2, rate: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(files):
            t = np.arange(rate) / rate
            signal = 0.3 * np.sin(2 * np.pi * (400 + 150 * k) * t) + 0.01 * rng.standard_normal(rate)
            soundfile.write(root / name / f"{k}.wav", signal, rate)
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def classes_in(out: Path) -> set[int]:
    return {int(line.split(",")[1]) for p in out.glob("metadata_dev/*/*.csv") for line in p.read_text().splitlines()}


# ---------------------------------------------------------------- bad input

def _case(case: str, tmp_path: Path) -> tuple[Path, list[str], str]:
    out, sounds = tmp_path / "data", tmp_path / "sounds"
    if case == "out_is_a_file":
        out.write_text("x")
        return out, [], "data"
    if case == "array_missing":
        return out, ["--array", str(tmp_path / "none.json")], "none.json"
    if case == "array_not_json":
        (tmp_path / "array.json").write_text('{"kind": "mic", "capsules_m": [[0, 0, 0],')
        return out, ["--array", str(tmp_path / "array.json")], "array.json"
    if case == "array_one_capsule":
        (tmp_path / "array.json").write_text('{"kind": "mic", "capsules_m": [[0, 0, 0]]}')
        return out, ["--array", str(tmp_path / "array.json")], "array.json"
    if case == "array_of_other_kind":
        (tmp_path / "array.json").write_text('{"kind": "foa", "capsules_m": []}')
        return out, ["--array", str(tmp_path / "array.json"), "--format", "mic"], "array.json"
    if case == "sounds_missing":
        return out, ["--sounds", str(sounds)], "sounds"
    if case == "sounds_is_a_file":
        sounds.write_text("x")
        return out, ["--sounds", str(sounds)], "sounds"
    if case == "sounds_empty":
        sounds.mkdir()
        return out, ["--sounds", str(sounds)], "sounds"
    if case == "sound_unreadable":
        tone_folder(sounds)
        (sounds / "bell" / "broken.wav").write_bytes(b"RIFF....WAVEfmt nothing")
        return out, ["--sounds", str(sounds), "--classes", "bell"], "broken.wav"
    if case == "mixed_no_recordings_at_all":
        (sounds / "bell").mkdir(parents=True)
        return out, ["--sounds", str(sounds), "--classes", "bell", "--procedural-share", "0.5"], "sounds"
    if case == "mixed_class_without_any_sounds":
        tone_folder(sounds, ("dog",))
        return out, ["--sounds", str(sounds), "--classes", "dog,spaceship", "--procedural-share", "0.5"], "spaceship"
    if case == "array_nan_capsule":
        (tmp_path / "array.json").write_text('{"kind": "mic", "capsules_m": [[0, 0, 0], [0.01, 0, NaN]]}')
        return out, ["--array", str(tmp_path / "array.json"), "--format", "mic"], "finite"
    if case == "array_capsules_at_one_point":
        (tmp_path / "array.json").write_text('{"kind": "mic", "capsules_m": [[0.01, 0, 0], [0.01, 0, 0]]}')
        return out, ["--array", str(tmp_path / "array.json"), "--format", "mic"], "same point"
    if case == "array_negative_radius":
        (tmp_path / "array.json").write_text('{"kind": "mic", "capsules_m": [[0.01, 0, 0], [0, 0.01, 0]], '
                                             '"rigid_sphere_radius_m": -0.04}')
        return out, ["--array", str(tmp_path / "array.json"), "--format", "mic"], "rigid_sphere_radius_m"
    if case == "array_without_kind":
        (tmp_path / "array.json").write_text('{"capsules_m": [[0.01, 0, 0], [0, 0.01, 0]]}')
        return out, ["--array", str(tmp_path / "array.json")], "no 'kind' key"
    if case == "minutes_nan":
        return out, ["--minutes", "nan"], "--minutes nan"
    if case == "duration_inf":
        return out, ["--duration", "inf"], "--duration inf"
    if case == "duration_of_days":
        return out, ["--duration", "1e9"], "--duration 1000000000.0: must be 1 to 3600 seconds"
    if case == "array_of_many_capsules":
        capsules = [[0.05 * np.cos(k), 0.05 * np.sin(k), 0.001 * k] for k in range(40)]
        (tmp_path / "array.json").write_text(json.dumps({"kind": "mic", "capsules_m": capsules}))
        return out, ["--array", str(tmp_path / "array.json"), "--format", "mic"], "40 capsules; seld synth renders"
    if case == "seed_negative":
        return out, ["--seed", "-1"], "--seed -1"
    if case == "class_named_twice_in_two_cases":
        return out, ["--classes", "Bell,bell"], "named twice"
    if case == "out_holds_a_foreign_dataset":
        (out / "foa_dev" / "dev-train").mkdir(parents=True)
        return out, [], "did not make"
    if case == "share_out_of_range":
        tone_folder(sounds)
        return out, ["--sounds", str(sounds), "--classes", "bell", "--procedural-share", "1.5"], "--procedural-share"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "out_is_a_file", "array_missing", "array_not_json", "array_one_capsule", "array_of_other_kind",
    "sounds_missing", "sounds_is_a_file", "sounds_empty", "sound_unreadable", "mixed_no_recordings_at_all",
    "mixed_class_without_any_sounds", "share_out_of_range", "array_nan_capsule", "array_capsules_at_one_point",
    "array_negative_radius", "array_without_kind", "minutes_nan", "duration_inf", "seed_negative",
    "duration_of_days", "array_of_many_capsules",
    "class_named_twice_in_two_cases", "out_holds_a_foreign_dataset",
])
def test_bad_input_is_one_line_naming_it_before_any_work(case, tmp_path, capsys, monkeypatch):
    rendered = []
    monkeypatch.setattr(synth_module, "_render_mixture", lambda mixture: rendered.append(mixture))
    out, extra, expected = _case(case, tmp_path)
    assert cli(["synth", "--out", str(out), *SMALL, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err and expected in err, err
    assert not rendered and not (out.is_dir() and (out / "dataset.json").exists())


def test_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    """An existing folder that refuses files: chmod where that binds (not as root), and a
    refusal simulated at the write probe everywhere."""
    out = tmp_path / "data"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o555)
        try:
            assert cli(["synth", "--out", str(out), *SMALL]) == 1
        finally:
            out.chmod(0o755)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and "cannot write" in err

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert cli(["synth", "--out", str(out), *SMALL]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out}: cannot write there (Permission denied)" in err
    assert list(out.iterdir()) == []


def test_unreadable_sound_folder(tmp_path, capsys, monkeypatch):
    sounds = tone_folder(tmp_path / "sounds", ("bell", "knock"))
    original = Path.iterdir

    def iterdir(self):
        if self == sounds:
            raise PermissionError(13, "Permission denied")
        return original(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert cli(["synth", "--out", str(tmp_path / "data"), *SMALL, "--sounds", str(sounds)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{sounds}: cannot read the sound folder (Permission denied)" in err
    monkeypatch.undo()

    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "knock")
    assert cli(["synth", "--out", str(tmp_path / "data"), *SMALL, "--sounds", str(sounds),
                "--classes", "bell,knock"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{sounds / 'knock'}: cannot read" in err
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- MixedBank (--procedural-share)

def test_mixed_bank_draws_both_kinds_and_falls_back_to_procedural(tmp_path):
    sounds = tone_folder(tmp_path / "sounds", ("bell", "dog"))
    classes = ("bell", "knock", "dog")  # bell: both; knock: no recordings; dog: no generator
    bank = MixedBank(sounds, classes, 0.5)
    procedural = ProceduralBank(("bell", "knock"))
    recordings = {name: [_normalized(_load_mono(str(p))) for p in sorted((sounds / name).glob("*.wav"))]
                  for name in ("bell", "dog")}

    def kind(signal, name):
        return "recording" if any(len(r) == len(signal) and np.array_equal(r, signal) for r in recordings[name]) else "procedural"

    for seed in range(4):  # knock: always procedural, exactly the procedural bank's sound
        assert np.array_equal(bank.sound(1, np.random.default_rng(seed)), procedural.sound(1, np.random.default_rng(seed)))
    bell = [kind(bank.sound(0, np.random.default_rng(seed)), "bell") for seed in range(40)]
    assert 10 <= bell.count("procedural") <= 30
    assert {kind(bank.sound(2, np.random.default_rng(seed)), "dog") for seed in range(10)} == {"recording"}
    for seed in range(3):
        a, b = (bank.sound(0, np.random.default_rng(seed)) for _ in range(2))
        assert np.array_equal(a, b)
    assert bank.describe()["files"] == {"bell": 2, "knock": 0, "dog": 2}
    always = MixedBank(sounds, classes, 1.0)
    assert {kind(always.sound(0, np.random.default_rng(seed)), "bell") for seed in range(10)} == {"procedural"}
    assert {kind(always.sound(2, np.random.default_rng(seed)), "dog") for seed in range(5)} == {"recording"}
    assert FolderBank(sounds, ("bell",)).describe()["files"] == {"bell": 2}


def test_mixed_dataset_renders_deterministically_with_procedural_fallback(tmp_path):
    sounds = tone_folder(tmp_path / "sounds", ("bell",))
    extra = ["--sounds", str(sounds), "--procedural-share", "0.5", "--classes", "bell,knock", "--format", "foa",
             "--seed", "3"]
    assert cli(["synth", "--out", str(tmp_path / "a"), *SMALL, *extra]) == 0
    assert cli(["synth", "--out", str(tmp_path / "b"), *SMALL, *extra, "--workers", "2"]) == 0
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    assert classes_in(tmp_path / "a") == {0, 1}  # knock has no recordings: procedural knocks
    description = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert description["sounds"]["kind"] == "mixed" and description["sounds"]["procedural_share"] == 0.5
    assert description["sounds"]["files"] == {"bell": 2, "knock": 0}
    assert cli(["synth", "--out", str(tmp_path / "c"), *SMALL, *extra[:-1], "4"]) == 0
    first = sorted((tmp_path / "a").glob("foa_dev/*/*.wav"))[0]
    assert (tmp_path / "c" / first.relative_to(tmp_path / "a")).read_bytes() != first.read_bytes()


def test_a_rerun_from_another_folder_naming_the_same_sounds_resumes(tmp_path, monkeypatch, capsys):
    tone_folder(tmp_path / "sounds", ("bell",))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    extra = [*SMALL, "--sounds", "sounds", "--classes", "bell", "--format", "foa", "--out", str(tmp_path / "data")]
    assert cli(["synth", *extra]) == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    extra[extra.index("sounds")] = "../sounds"
    capsys.readouterr()
    assert cli(["synth", *extra]) == 0
    assert "3 already done" in capsys.readouterr().out
    manifest = tmp_path / "data" / "dataset.json"  # as an earlier version wrote it: the root as typed
    manifest.write_text(manifest.read_text().replace(str(tmp_path / "sounds"), "../sounds"))
    assert cli(["synth", *extra]) == 0


def test_a_namespace_without_procedural_share_still_works(tmp_path):
    """`seld bench synth` builds its own Namespace, without --procedural-share."""
    from argparse import Namespace

    args = Namespace(out=str(tmp_path / "data"), format="foa", minutes=0.05, seed=0, sounds=None, classes="knock",
                     array=None, workers=1, rooms=3, max_polyphony=1, duration=3.0)
    assert synth_module.synth_command(args) == 0
    assert len(list((tmp_path / "data").glob("foa_dev/*/*.wav"))) == 1


def test_training_refuses_a_dataset_synth_has_not_finished(tmp_path, capsys, monkeypatch):
    """dataset.json says "complete": false until the last mixture is written: a killed run's
    dataset (training scenes only, no validation or test yet) is not trained on unnoticed."""
    from seld import SeldError
    from seld.train import resolve_config

    out = tmp_path / "data"
    real_render = synth_module._render_mixture
    rendered = []

    def killed_after_one(mixture):
        if rendered:
            raise KeyboardInterrupt
        rendered.append(real_render(mixture))

    monkeypatch.setattr(synth_module, "_render_mixture", killed_after_one)
    assert cli(["synth", "--out", str(out), "--format", "foa", *SMALL]) != 0  # "interrupted"
    assert json.loads((out / "dataset.json").read_text())["complete"] is False
    with pytest.raises(SeldError, match="seld synth has not finished this dataset"):
        resolve_config("foa", "tiny", None, [], str(out))
    monkeypatch.setattr(synth_module, "_render_mixture", real_render)
    assert cli(["synth", "--out", str(out), "--format", "foa", *SMALL]) == 0  # the rerun finishes it
    assert json.loads((out / "dataset.json").read_text())["complete"] is True
    assert resolve_config("foa", "tiny", None, [], str(out)).data == str(out)


def test_a_class_folder_of_no_known_class_is_named_in_a_warning(tmp_path, caplog):
    import logging

    sounds = tone_folder(tmp_path / "sounds", ("bell", "footstep"))  # 'footstep': footsteps misspelled
    with caplog.at_level(logging.WARNING, logger="seld.data_prep.sound_bank"):
        FolderBank(sounds, ("bell", "footsteps"), allow_missing=True)
    assert "subfolders of no known class, not used: footstep" in caplog.text


def test_hidden_files_and_folders_of_a_sound_folder_are_left_out(tmp_path, caplog):
    """macOS's ._bell.wav (no audio) stopped the run; a file in a hidden folder was drawn as a recording;
    a hidden folder (.git) was named as a class folder of no known class."""
    import logging

    sounds = tone_folder(tmp_path / "sounds", ("bell",))
    (sounds / "bell" / "._a.wav").write_bytes(b"junk")
    (sounds / "bell" / ".trash").mkdir()
    (sounds / "bell" / ".trash" / "old.wav").write_bytes((sounds / "bell" / "0.wav").read_bytes())
    (sounds / ".git").mkdir()
    with caplog.at_level(logging.WARNING, logger="seld.data_prep.sound_bank"):
        bank = FolderBank(sounds, ("bell",))
    assert [path.name for path in bank.files[0]] == sorted(p.name for p in (sounds / "bell").glob("[!.]*.wav"))
    assert "no known class" not in caplog.text


def test_a_full_disk_is_said_in_one_line(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import seld.audio as audio_module
    from seld import SeldError

    def full(*args, **kwargs):
        raise soundfile.LibsndfileError(2, "System error.")

    monkeypatch.setattr(audio_module.soundfile, "write", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("usage", "total used free")(1 << 30, 1 << 30, 0))
    with pytest.raises(SeldError, match=r"scene\.wav: cannot write it \(no space left on the device\)$"):
        audio_module.write_audio(tmp_path / "scene.wav", np.zeros((4, 10), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_too_few_mixtures_for_every_split_is_said(tmp_path, caplog):
    assert cli(["synth", "--out", str(tmp_path / "data"), "--minutes", "0.1", "--duration", "3", "--rooms", "3",
                "--classes", "bell", "--format", "foa"]) == 0
    assert "2 mixture(s) of 3 s: all go to dev-train, none to dev-val and dev-test" in caplog.text
    assert "3 fill every split (--minutes 0.15, or a shorter --duration)" in caplog.text
    caplog.clear()
    assert cli(["synth", "--out", str(tmp_path / "more"), *SMALL, "--classes", "bell", "--format", "foa"]) == 0
    assert "fill every split" not in caplog.text
    # A rerun asking for less keeps the larger plan, which fills every split: nothing to say
    assert cli(["synth", "--out", str(tmp_path / "more"), "--minutes", "0.1", "--duration", "3", "--rooms", "3",
                "--classes", "bell", "--format", "foa"]) == 0
    assert "fill every split" not in caplog.text


def test_a_silent_recording_found_mid_run_is_passed_over_with_a_warning(tmp_path, caplog):
    """It stopped the run partway (and, once removed, its changed file count refused the rerun)."""
    sounds = tone_folder(tmp_path / "sounds", ("bell",), files=3)
    soundfile.write(sounds / "bell" / "1.wav", np.zeros(24_000), 24_000)  # drawn between two good ones
    bank = FolderBank(sounds, ("bell",))
    drawn = [bank.sound(0, np.random.default_rng(seed)) for seed in range(12)]
    assert all(np.abs(signal).max() > 0 for signal in drawn)
    assert caplog.text.count("1.wav: silent recording: not used (the class's other recordings are)") == 1
    assert cli(["synth", "--out", str(tmp_path / "data"), *SMALL, "--sounds", str(sounds), "--classes", "bell",
                "--format", "foa"]) == 0
    for name in ("0.wav", "2.wav"):
        soundfile.write(sounds / "bell" / name, np.zeros(24_000), 24_000)
    _load_mono.cache_clear()  # decoded recordings are kept by path
    with pytest.raises(SeldError, match="no usable recording of class 'bell' .every one is silent or broken."):
        FolderBank(sounds, ("bell",)).sound(0, np.random.default_rng(0))


def test_the_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path):
    out = tmp_path / "data"
    assert cli(["synth", "--out", str(out), *SMALL, "--classes", "bell", "--format", "foa"]) == 0
    dead = out / "foa_dev" / "dev-train" / ".fold1_room1_mix000.wav.x8k2.tmp"
    live = out / "metadata_dev" / "dev-train" / ".fold1_room1_mix000.csv.a1b2.tmp"
    dead.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    os.utime(dead, (dead.stat().st_atime - 120, dead.stat().st_mtime - 120))
    assert cli(["synth", "--out", str(out), *SMALL, "--classes", "bell", "--format", "foa"]) == 0
    assert not dead.exists() and live.exists()  # a write of the last minute may still be running
