"""`seld synth`: dataset layout, labels, determinism, reruns, and the physics conventions
(directions from the FOA intensity vector and from the MIC array's TDOAs)."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seld.arrays import FOA, TETRAHEDRAL, Array
from seld.cli import cli
from seld.data_prep import synth as synth_module
from seld.data_prep.rooms import RoomSpec, random_room
from seld.data_prep.scenes import (Event, Scene, SceneSettings, cartesian, generate_scene, label_rows, polar,
                                   render_scene, static_scene)
from seld.data_prep.sound_bank import STARSS23_CLASSES, ProceduralBank, frame_energies
from seld.data_prep.synth import plan, synthesize_scene

NAME = re.compile(r"fold(\d)_room(\d+)_mix(\d{3})")
SMALL = ["--minutes", "0.15", "--duration", "3", "--rooms", "3"]  # 3 mixtures, one per split


def run_synth(out: Path, *extra: str) -> int:
    return cli(["synth", "--out", str(out), *SMALL, *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    assert run_synth(out, "--seed", "7") == 0
    return out


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_rows(path: Path) -> list[list[int]]:
    with open(path) as handle:
        return [[int(v) for v in row] for row in csv.reader(handle)]


# ---------------------------------------------------------------- layout and labels

def test_layout_names_and_audio_format(dataset):
    wavs = sorted(dataset.glob("*_dev/*/*.wav"))
    csvs = sorted(dataset.glob("metadata_dev/*/*.csv"))
    assert len(wavs) == 6 and len(csvs) == 3
    for split, fold in (("dev-train", 1), ("dev-val", 2), ("dev-test", 3)):
        names = [p.stem for p in (dataset / "metadata_dev" / split).glob("*.csv")]
        assert names, split
        for name in names:
            match = NAME.fullmatch(name)
            assert match and int(match.group(1)) == fold
            for format_name in ("foa", "mic"):
                info = soundfile.info(dataset / f"{format_name}_dev" / split / f"{name}.wav")
                assert (info.samplerate, info.channels, info.frames) == (24000, 4, 72000)
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["seed"] == 7 and description["classes"] == list(STARSS23_CLASSES)
    assert description["settings"]["max_polyphony"] == 3 and description["settings"]["duration_s"] == 3
    assert description["formats"]["mic"]["rigid_sphere_radius_m"] == pytest.approx(0.042)
    assert set(description["rooms"]) == {"1", "2", "3"}
    assert not list(dataset.rglob("*.tmp")) and not list(dataset.rglob(".*"))


def test_metadata_rows_are_valid(dataset):
    rows_seen = 0
    for path in dataset.glob("metadata_dev/*/*.csv"):
        rows = read_rows(path)
        assert rows == sorted(rows, key=lambda r: (r[0], r[1], r[2]))
        for frame, class_index, source, azimuth, elevation, distance in rows:
            assert 0 <= frame < 30 and 0 <= class_index < 13 and source >= 0
            assert -180 <= azimuth < 180 and -45 <= elevation <= 45 and 50 <= distance <= 400
        keys = [(r[0], r[1], r[2]) for r in rows]
        assert len(keys) == len(set(keys))  # one row per event per frame
        rows_seen += len(rows)
    assert rows_seen > 10


def test_rooms_never_shared_between_splits(dataset):
    rooms = {}
    for path in dataset.glob("metadata_dev/*/*.csv"):
        rooms.setdefault(path.parent.name, set()).add(int(NAME.fullmatch(path.stem).group(2)))
    assert len(rooms) == 3
    for a, b in itertools.combinations(rooms.values(), 2):
        assert not a & b
    for minutes in (0.05, 1, 10, 37):
        mixtures = plan(minutes, 60, 9)
        by_split = {}
        for m in mixtures:
            by_split.setdefault(m.split, set()).add(m.room)
        for a, b in itertools.combinations(by_split.values(), 2):
            assert not a & b
        assert len(mixtures) == max(1, int(np.ceil(minutes)))
        assert len({m.name for m in mixtures}) == len(mixtures)


# ---------------------------------------------------------------- determinism and reruns

def test_same_seed_same_bytes_whatever_the_workers(dataset, tmp_path):
    assert run_synth(tmp_path / "again", "--seed", "7", "--workers", "2") == 0
    assert files_of(tmp_path / "again") == files_of(dataset)
    assert run_synth(tmp_path / "other", "--seed", "8") == 0
    first = sorted(dataset.glob("foa_dev/*/*.wav"))[0]
    assert (tmp_path / "other" / first.relative_to(dataset)).read_bytes() != first.read_bytes()


def test_one_format_renders_the_same_file(dataset, tmp_path):
    assert run_synth(tmp_path / "foa", "--seed", "7", "--format", "foa") == 0
    assert not (tmp_path / "foa" / "mic_dev").exists()
    for path in (tmp_path / "foa").glob("foa_dev/*/*.wav"):
        assert path.read_bytes() == (dataset / path.relative_to(tmp_path / "foa")).read_bytes()


def test_rerun_skips_finished_and_redoes_unfinished(dataset, tmp_path, capsys):
    out = tmp_path / "copy"
    for name, data in files_of(dataset).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    victim = sorted(out.glob("metadata_dev/*/*.csv"))[0]
    victim.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    assert run_synth(out, "--seed", "7") == 0
    captured = capsys.readouterr()
    assert "2 already done" in captured.out
    # No terminal: progress as plain lines, the last one the whole, no bar's carriage returns
    assert "\r" not in captured.err and "min of audio\n" in captured.err
    assert files_of(out) == files_of(dataset)
    rewritten = {p for p in stamps if p.stat().st_mtime_ns != stamps[p]}
    assert rewritten <= {p for p in stamps if p.stem == victim.stem}


def test_a_larger_minutes_makes_what_a_fresh_run_makes(tmp_path, caplog):
    """Splits are rounded one by one: 10 mixtures hold one dev-train mixture fewer than 9. Growing 9
    into 10 kept the 7th dev-train mixture that a fresh run of 10 never makes (11 files, and a
    dataset.json naming rooms the folder no longer matched). A smaller --minutes later changes nothing."""
    def synth(out: Path, minutes: str) -> int:
        return cli(["synth", "--out", str(out), "--minutes", minutes, "--duration", "3", "--rooms", "9", "--seed",
                    "3", "--format", "foa"])

    caplog.set_level("INFO")
    assert [sum(m.split == "dev-train" for m in plan(minutes, 3, 9)) for minutes in (0.45, 0.5)] == [7, 6]
    assert synth(tmp_path / "grown", "0.45") == 0 and synth(tmp_path / "grown", "0.5") == 0
    assert "removed 1 mixture(s) that 0.5 minutes do not plan (dev-train/fold1_room7_mix000)" in caplog.text
    assert synth(tmp_path / "fresh", "0.5") == 0
    assert files_of(tmp_path / "grown") == files_of(tmp_path / "fresh")
    assert synth(tmp_path / "grown", "0.45") == 0 and files_of(tmp_path / "grown") == files_of(tmp_path / "fresh")
    # A folder grown before this fix, its dataset.json already saying 0.5 minutes: the rerun removes the stray
    assert synth(tmp_path / "small", "0.45") == 0
    for path in (tmp_path / "small").glob("*_dev/dev-train/fold1_room7_mix000.*"):
        (tmp_path / "fresh" / path.relative_to(tmp_path / "small")).write_bytes(path.read_bytes())
    assert synth(tmp_path / "fresh", "0.5") == 0 and files_of(tmp_path / "grown") == files_of(tmp_path / "fresh")


def test_interrupted_run_leaves_no_half_written_file(dataset, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"

    def interrupt(path, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth_module, "write_metadata", interrupt)
    assert run_synth(out, "--seed", "7") == 130
    assert not list(out.rglob("*.csv")) and not list(out.rglob("*.tmp")) and not list(out.rglob(".*.wav.*"))
    monkeypatch.undo()
    assert run_synth(out, "--seed", "7") == 0
    assert files_of(out) == files_of(dataset)


def test_other_settings_into_the_same_folder_is_refused(dataset, capsys):
    assert run_synth(dataset, "--seed", "8") == 1
    assert "dataset.json" in capsys.readouterr().err


# ---------------------------------------------------------------- directions

DIRECTIONS = [(0, 0), (90, 0), (-90, 0), (180, 0), (135, 20), (-120, -30), (45, 45), (-30, -45), (60, 45)]


def noise(seconds=1.0, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(24000 * seconds)).astype(np.float32)


def intensity_direction(foa: np.ndarray) -> tuple[float, float]:
    w, y, z, x = foa.astype(np.float64)
    vector = np.array([np.mean(w * x), np.mean(w * y), np.mean(w * z)])
    azimuth, elevation, _ = polar(vector[None])
    return float(azimuth[0]), float(elevation[0])


def angle_between(a1, e1, a2, e2) -> float:
    u, v = cartesian(a1, e1, 1), cartesian(a2, e2, 1)
    return float(np.degrees(np.arccos(np.clip(u @ v, -1, 1))))


def gcc_lag(a: np.ndarray, b: np.ndarray, upsample: int = 32, max_lag: int = 12) -> float:
    """Samples by which `a` lags `b` (GCC-PHAT, interpolated)."""
    n = 2 * len(a)
    cross = np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n))
    cc = np.fft.irfft(cross / (np.abs(cross) + 1e-12), n * upsample)
    window = np.r_[cc[-max_lag * upsample :], cc[: max_lag * upsample + 1]]
    return (int(np.argmax(window)) - max_lag * upsample) / upsample


def tdoa_direction(mic: np.ndarray, capsules: np.ndarray) -> tuple[float, float]:
    """Least-squares direction from all pairs' TDOAs: t_i - t_j = (r_j - r_i) . u / c (times
    an unknown scale for a rigid sphere)."""
    pairs = list(itertools.combinations(range(len(capsules)), 2))
    geometry = np.array([capsules[j] - capsules[i] for i, j in pairs])
    lags = np.array([gcc_lag(mic[i], mic[j]) for i, j in pairs])
    vector, *_ = np.linalg.lstsq(geometry, lags, rcond=None)
    azimuth, elevation, _ = polar(vector[None])
    return float(azimuth[0]), float(elevation[0])


@pytest.mark.parametrize("azimuth,elevation", DIRECTIONS)
def test_foa_intensity_points_at_the_source(azimuth, elevation):
    foa = render_scene(static_scene(noise(), azimuth, elevation, 1.5), FOA)
    assert angle_between(*intensity_direction(foa), azimuth, elevation) < 5


def test_foa_azimuth_is_counter_clockwise():
    w, y, z, x = render_scene(static_scene(noise(), 90, 0, 2.0), FOA)
    assert np.mean(w * y) > 0.9 * np.mean(w * w) and abs(np.mean(w * x)) < 0.01 * np.mean(w * w)
    w, y, z, x = render_scene(static_scene(noise(), 0, 45, 2.0), FOA)
    assert np.mean(w * z) > 0.6 * np.mean(w * w)


@pytest.mark.parametrize("azimuth,elevation", DIRECTIONS)
def test_mic_tdoas_point_at_the_source(azimuth, elevation):
    mic = render_scene(static_scene(noise(), azimuth, elevation, 1.5), TETRAHEDRAL)
    assert angle_between(*tdoa_direction(mic, np.array(TETRAHEDRAL.capsules_m)), azimuth, elevation) < 10


def test_open_array_from_coordinates_has_free_field_tdoas():
    capsules = np.array([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, -0.1, 0], [0, 0, 0.08]])
    array = Array("open5", "mic", tuple(map(tuple, capsules)), None)
    mic = render_scene(static_scene(noise(), 60, 20, 2.5), array)
    assert mic.shape == (5, 24000)
    # Capsule 0 (front) hears a source at +60 deg earlier than capsule 1 (back) by 0.2 m * cos(60) cos(20) / c.
    expected = 0.2 * np.cos(np.radians(60)) * np.cos(np.radians(20)) / 343 * 24000
    assert gcc_lag(mic[1], mic[0]) == pytest.approx(expected, abs=0.1)
    assert angle_between(*tdoa_direction(mic, capsules), 60, 20) < 3


def test_directions_hold_in_a_reverberant_room():
    room = RoomSpec.from_materials((7, 6, 3), ["plasterboard"] * 4 + ["carpet_cotton", "ceiling_fissured_tile"])
    for azimuth, elevation in ((30, 10), (-150, -20)):
        scene = static_scene(noise(2.0), azimuth, elevation, 1.2, room=room, array_position=(3.2, 2.7, 1.4))
        assert angle_between(*intensity_direction(render_scene(scene, FOA)), azimuth, elevation) < 15
        mic = render_scene(scene, TETRAHEDRAL)
        assert angle_between(*tdoa_direction(mic, np.array(TETRAHEDRAL.capsules_m)), azimuth, elevation) < 10


# ---------------------------------------------------------------- moving sources

def arc_scene(speed_deg_s: float, seconds: float = 3.0) -> Scene:
    signal = noise(seconds, seed=3)
    frames = int(seconds * 10) + 2
    times = (np.arange(-1, frames - 1) + 0.5) * 0.1
    positions = np.stack([cartesian(-60 + speed_deg_s * t, 10, 2.0) for t in times])
    scene = static_scene(signal, 0, 0)
    scene.events[0] = Event(0, 0, 0, 0, signal, -1, positions, "arc", speed_deg_s)
    return scene


def test_moving_source_render_follows_its_labels():
    scene = arc_scene(40.0)
    foa = render_scene(scene, FOA)
    labels = label_rows(scene)
    assert len(labels) == 30
    errors = []
    for frame, _, _, azimuth, elevation, _ in labels[1:-1]:
        block = foa[:, frame * 2400 : (frame + 1) * 2400]
        errors.append(angle_between(*intensity_direction(block), azimuth, elevation))
    assert max(errors) < 1.5  # a response one frame late would be 4 degrees off
    azimuths = [r[3] for r in labels]
    assert azimuths[0] == -58 and azimuths[-1] == 58  # -60 + 40 deg/s * (0.05 .. 2.95 s)


def test_generated_moving_labels_change_smoothly_at_the_configured_speeds():
    bank = ProceduralBank(STARSS23_CLASSES)
    settings = SceneSettings(duration_s=30.0)
    moving_seen = set()
    for seed in range(3):
        scene = generate_scene(np.random.default_rng(seed), random_room(np.random.default_rng(seed)), bank, settings)
        for event in scene.events:
            azimuth, elevation, distance = polar(event.positions)
            step = np.diff(np.unwrap(np.radians(azimuth)))
            if event.motion == "arc":
                assert abs(event.speed) in settings.arc_speeds_deg_s
                assert np.degrees(np.abs(step)) == pytest.approx(abs(event.speed) * 0.1, abs=1e-6)
                assert np.ptp(distance) < 1e-9 and np.ptp(elevation) < 1e-9
            elif event.motion == "line":
                moved = np.linalg.norm(np.diff(event.positions, axis=0), axis=1)
                assert moved == pytest.approx(event.speed * 0.1, rel=1e-6)
            else:
                assert np.ptp(event.positions, axis=0).max() == 0
            if event.moving:
                moving_seen.add(event.motion)
                assert len(event.signal) >= settings.static_below_s * 24000
        # Labels follow the stored positions: consecutive frames of an arc differ by speed * 0.1 s.
        rows = label_rows(scene)
        by_event = {}
        for row in rows:
            by_event.setdefault((row[1], row[2]), []).append(row)
        for event in scene.events:
            if event.motion == "arc":
                track = by_event[(event.class_index, event.source_index)]
                for a, b in zip(track, track[1:]):
                    if b[0] == a[0] + 1:
                        jump = (b[3] - a[3] + 180) % 360 - 180
                        assert abs(abs(jump) - abs(event.speed) * 0.1) <= 1.0
    assert moving_seen == {"arc", "line"}


# ---------------------------------------------------------------- scenes and labels

def test_scene_layout_follows_the_generator_rules():
    bank = ProceduralBank(STARSS23_CLASSES)
    settings = SceneSettings(duration_s=60.0, max_polyphony=3)
    for seed in range(2):
        room = random_room(np.random.default_rng(seed))
        scene = generate_scene(np.random.default_rng(100 + seed), room, bank, settings)
        activity = np.zeros(scene.samples, int)
        for event in scene.events:
            activity[event.onset : event.onset + len(event.signal)] += 1
            room_positions = scene.array_position + event.positions[1:-1] @ np.array(
                [[np.cos(scene.array_yaw), -np.sin(scene.array_yaw), 0], [np.sin(scene.array_yaw), np.cos(scene.array_yaw), 0], [0, 0, 1]]).T
            assert np.all(room_positions >= 0.3) and np.all(room_positions <= np.array(room.dimensions) - 0.3)
        assert activity.max() <= 3 and (activity >= 2).mean() > 0.05
        sources = [(e.class_index, e.source_index) for e in scene.events]
        assert len(sources) == len(set(sources))
        rows = label_rows(scene)
        polyphony = np.bincount([r[0] for r in rows], minlength=scene.frames)
        assert polyphony.max() <= 3


def test_labels_only_where_the_sound_is_audible():
    signal = np.concatenate([noise(0.5), np.zeros(24000, np.float32), noise(0.5, seed=1) * 0.1])
    frames = [row[0] for row in label_rows(static_scene(signal, 10, 0))]
    assert frames == list(range(0, 5)) + list(range(15, 20))
    quiet = np.concatenate([noise(0.5), noise(0.5, seed=1) * 10 ** (-40 / 20)])
    assert [row[0] for row in label_rows(static_scene(quiet, 10, 0))] == list(range(5))


def test_a_source_behind_is_labelled_minus_180_as_dcase_writes_it():
    for azimuth in (180, -180, 179.8):
        assert {row[3] for row in label_rows(static_scene(noise(0.5), azimuth, 0))} == {-180}


def test_synthesize_scene_shares_labels_between_formats():
    result = synthesize_scene(3, duration_s=8.0)
    assert set(result.audio) == {"foa", "mic"}
    for audio in result.audio.values():
        assert audio.shape == (4, 8 * 24000) and audio.dtype == np.float32
        assert 0.3 < np.abs(audio).max() < 1.0
    again = synthesize_scene(3, ("foa",), duration_s=8.0)
    assert again.labels == result.labels and np.array_equal(again.audio["foa"], result.audio["foa"])


# ---------------------------------------------------------------- rooms

def schroeder_rt60(response: np.ndarray) -> float:
    energy = np.cumsum(response[::-1] ** 2)[::-1]
    decay = 10 * np.log10(energy / energy[0] + 1e-30)
    t = np.arange(len(response)) / 24000
    fit = (decay <= -5) & (decay >= -25)
    slope = np.polyfit(t[fit], decay[fit], 1)[0]
    return -60 / slope


def test_rooms_have_realistic_reverberation():
    rng = np.random.default_rng(0)
    rooms = [random_room(rng) for _ in range(40)]
    mids = np.array([r.rt60()[2:4].mean() for r in rooms])
    assert mids.min() >= 0.2 and mids.max() <= 1.5 and np.ptp(mids) > 0.5
    volumes = np.array([r.volume for r in rooms])
    assert np.corrcoef(volumes, mids)[0, 1] > 0  # bigger rooms ring longer
    room = RoomSpec.from_materials((8, 6, 3), ["plasterboard"] * 4 + ["carpet_cotton", "ceiling_plasterboard"])
    impulse = np.zeros(24000 * 3, np.float32)
    impulse[0] = 1
    near = render_scene(static_scene(impulse, 0, 0, 0.7, room=room, array_position=(4, 3, 1.5)), FOA)[0]
    far = render_scene(static_scene(impulse, 0, 0, 3.0, room=room, array_position=(4, 3, 1.5)), FOA)[0]
    assert schroeder_rt60(near) == pytest.approx(room.rt60()[2:5].mean(), rel=0.35)

    def drr(response, distance):
        direct = int(distance / 343 * 24000)
        return 10 * np.log10(np.sum(response[: direct + 60] ** 2) / np.sum(response[direct + 60 :] ** 2))

    assert drr(near, 0.7) > drr(far, 3.0) + 6  # 1/r^2 direct against a position-independent reverb
    assert -15 < drr(far, 3.0) < 10


def test_diffuse_noise_has_the_array_coherence():
    scene = static_scene(np.zeros(48000, np.float32), 0, 0)
    scene.events.clear()
    from seld.data_prep.scenes import ambient_noise
    from seld.data_prep.array_response import array_model

    w, y, z, x = ambient_noise(scene, array_model(FOA), np.random.default_rng(0)).astype(np.float64)
    assert np.mean(x * x) / np.mean(w * w) == pytest.approx(1 / 3, rel=0.1)
    assert abs(np.mean(w * x)) / np.mean(w * w) < 0.05
    capsules = ((0.0, 0.0, 0.0), (0.05, 0.0, 0.0))
    pair = ambient_noise(scene, array_model(Array("pair", "mic", capsules, None)), np.random.default_rng(1))
    from scipy.signal import coherence

    freqs, measured = coherence(pair[0], pair[1], fs=24000, nperseg=1024)
    # Magnitude-squared coherence of a diffuse field: sinc^2(k d).
    expected = np.sinc(2 * freqs * 0.05 / 343) ** 2
    band = (freqs > 200) & (freqs < 8000)
    assert np.mean(np.abs(measured[band] - expected[band])) < 0.08


# ---------------------------------------------------------------- sounds and bad input

def test_procedural_bank_is_deterministic_and_covers_every_class():
    bank = ProceduralBank(STARSS23_CLASSES)
    for index in range(13):
        a = bank.sound(index, np.random.default_rng(5))
        b = bank.sound(index, np.random.default_rng(5))
        c = bank.sound(index, np.random.default_rng(6))
        assert np.array_equal(a, b) and not np.array_equal(a[: len(c)], c[: len(a)])
        assert np.isfinite(a).all() and 0.2 < len(a) / 24000 <= 10 and np.sqrt(np.mean(a**2)) > 0.01


@pytest.mark.parametrize("class_name", STARSS23_CLASSES)
def test_procedural_sounds_are_loud_where_they_are_labelled(class_name):
    # Labels cover the frames within 30 dB of an event's loudest; rooms add noise at 6-30 dB SNR.
    # Most labelled frames must stand well above that noise, or a class is labelled where it cannot
    # be heard (the door's creak once sat 25 dB under its slam: no model learned doors).
    bank, rng = ProceduralBank(STARSS23_CLASSES), np.random.default_rng(3)
    loud, labelled = 0, 0
    for _ in range(40):
        energy = frame_energies(bank.sound(STARSS23_CLASSES.index(class_name), rng))
        level_db = 10 * np.log10(np.maximum(energy, 1e-30) / energy.max())
        labelled += np.count_nonzero(level_db >= -30)
        loud += np.count_nonzero(level_db >= -15)
    assert loud / labelled >= 0.6


def test_sound_folders_and_levels_go_by_class_name(tmp_path):
    from seld.data_prep.scenes import CLASS_LEVELS_DB
    from seld.data_prep.sound_bank import FolderBank, class_key

    folder = tmp_path / "sounds" / "Female speech, woman speaking"  # the STARSS23 long name
    folder.mkdir(parents=True)
    soundfile.write(folder / "a.wav", noise(0.5), 24000)
    assert FolderBank(tmp_path / "sounds", ["female_speech"]).files[0] == (folder / "a.wav",)
    # Any order of any class list: a door is a door (the offsets once went by position in the list).
    assert CLASS_LEVELS_DB[class_key("Door open or close")] == 3 and class_key("dog") not in CLASS_LEVELS_DB


def test_sound_folder_with_other_classes(tmp_path):
    sounds = tmp_path / "sounds"
    rng = np.random.default_rng(0)
    for name, rate in (("dog", 16000), ("siren", 44100)):
        (sounds / name).mkdir(parents=True)
        for k in range(2):
            t = np.arange(rate) / rate
            soundfile.write(sounds / name / f"{k}.wav", (0.3 * np.sin(2 * np.pi * (300 + 200 * k) * t)
                                                         + 0.01 * rng.standard_normal(rate)), rate)
    out = tmp_path / "data"
    assert run_synth(out, "--sounds", str(sounds), "--classes", "dog,siren", "--format", "foa") == 0
    rows = [r for p in out.glob("metadata_dev/*/*.csv") for r in read_rows(p)]
    assert rows and {r[1] for r in rows} <= {0, 1}
    assert json.loads((out / "dataset.json").read_text())["classes"] == ["dog", "siren"]


def test_array_file_replaces_the_mic_array(tmp_path):
    array = {"name": "line3", "kind": "mic", "capsules_m": [[0, 0.05, 0], [0, 0, 0], [0, -0.05, 0]],
             "rigid_sphere_radius_m": None}
    (tmp_path / "line3.json").write_text(json.dumps(array))
    out = tmp_path / "data"
    assert run_synth(out, "--array", str(tmp_path / "line3.json"), "--format", "mic") == 0
    wavs = sorted(out.glob("mic_dev/*/*.wav"))
    assert len(wavs) == 3 and all(soundfile.info(p).channels == 3 for p in wavs)
    assert json.loads((out / "dataset.json").read_text())["formats"]["mic"]["name"] == "line3"


def test_training_takes_the_array_the_dataset_was_rendered_with(tmp_path):
    """A custom 4-capsule array fits the MIC channel count, so only dataset.json tells it from
    the tetrahedral one: channel swaps (rotations of its own geometry), the network and the
    exported package must follow it."""
    from seld.augment import channel_swaps
    from seld.train import dataset_array

    square = {"name": "square4", "kind": "mic", "capsules_m": [[0.03, 0, 0], [0, 0.03, 0], [-0.03, 0, 0], [0, -0.03, 0]],
              "rigid_sphere_radius_m": None}
    (tmp_path / "square4.json").write_text(json.dumps(square))
    data = tmp_path / "data"
    assert run_synth(data, "--array", str(tmp_path / "square4.json"), "--format", "mic") == 0
    array = dataset_array(data, "mic")
    assert array.name == "square4" and dataset_array(data, "foa") == FOA
    assert channel_swaps(array) != channel_swaps(TETRAHEDRAL)
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--format", "mic", "--preset", "tiny",
                "epochs=1"]) == 0
    assert cli(["export", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    assert json.loads((tmp_path / "model" / "seld.json").read_text())["array"]["name"] == "square4"


@pytest.mark.parametrize("case", ["unwritable", "bad_array", "wide_array", "empty_sounds", "missing_class",
                                  "unknown_class", "rooms"])
def test_bad_input_is_one_clear_line_before_any_work(case, tmp_path, capsys):
    out = tmp_path / "data"
    extra: list[str] = []
    if case == "unwritable":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "data"
    elif case == "bad_array":
        (tmp_path / "array.json").write_text('{"kind": "mic", "capsules_m": [[0, 0]]}')
        extra = ["--array", str(tmp_path / "array.json")]
    elif case == "wide_array":  # capsules a table apart: a near source would reach one before its filter starts
        (tmp_path / "wide.json").write_text('{"kind": "mic", "capsules_m": [[0.4, 0, 0], [-0.4, 0, 0]]}')
        extra = ["--array", str(tmp_path / "wide.json"), "--format", "mic"]
    elif case == "empty_sounds":
        (tmp_path / "sounds" / "bell").mkdir(parents=True)
        extra = ["--sounds", str(tmp_path / "sounds"), "--classes", "bell"]
    elif case == "missing_class":
        (tmp_path / "sounds" / "bell").mkdir(parents=True)
        soundfile.write(tmp_path / "sounds" / "bell" / "a.wav", noise(0.5), 24000)
        extra = ["--sounds", str(tmp_path / "sounds"), "--classes", "bell,knock"]
    elif case == "unknown_class":
        extra = ["--classes", "bell,spaceship"]
    else:
        extra = ["--rooms", "2"]
    assert cli(["synth", "--out", str(out), "--minutes", "0.1", "--duration", "3", *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert not (out / "foa_dev").exists()
    expected = {"unwritable": "file", "bad_array": "array.json", "wide_array": "wide.json: a capsule 0.40 m",
                "empty_sounds": "bell",
                "missing_class": "knock", "unknown_class": "spaceship", "rooms": "--rooms"}[case]
    assert expected in err
