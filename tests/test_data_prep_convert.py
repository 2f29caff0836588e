"""Public dataset layouts: TAU-NIGENS 2020/2021 converted to the DCASE split layout, and a
STARSS23-style download read as it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seld.data_prep.convert import TAU_NIGENS, convert_tau_nigens, dcase_splits, main
from seld.formats import read_reference

from conftest import write_scene


def fake_tau_nigens(root: Path, year: int, split_folders: bool = False, formats=("foa", "mic"),
                    seconds: float = 0.5) -> Path:
    """One short recording per fold 1..6, in the layout the release ships."""
    rng = np.random.default_rng(year)
    folds = TAU_NIGENS[year]["folds"]
    split_of = {fold: split for split, fs in folds.items() for fold in fs}
    for fold in range(1, 7):
        name = f"fold{fold}_room{fold}_mix001" + ("_ov1" if year == 2020 else "")
        sub = split_of[fold] if split_folders else ""
        for format_name in formats:
            path = root / f"{format_name}_dev" / sub / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, 0.1 * rng.standard_normal((int(24000 * seconds), 4)), 24000, subtype="PCM_16")
        csv = root / "metadata_dev" / sub / f"{name}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text("".join(f"{frame},{fold % 12},0,{10 * fold},-5\n" for frame in range(3)))
    return root


def split_of(dst: Path, format_name: str = "foa") -> dict[str, list[str]]:
    return {p.name: sorted(f.stem for f in p.glob("*.wav")) for p in sorted((dst / f"{format_name}_dev").iterdir())}


@pytest.mark.parametrize("year,split_folders", [(2020, False), (2021, False), (2021, True)])
def test_tau_nigens_folds_go_to_the_official_splits(tmp_path, year, split_folders):
    src = fake_tau_nigens(tmp_path / "download", year, split_folders)
    result = convert_tau_nigens(src, tmp_path / "data")
    assert result.year == year and result.linked == 18 and result.kept == 0
    dst = tmp_path / "data"
    folds = {split: sorted(int(name[4]) for name in names) for split, names in split_of(dst).items()}
    assert folds == {split: list(f) for split, f in TAU_NIGENS[year]["folds"].items()}
    assert split_of(dst, "mic") == split_of(dst, "foa")
    for wav in dst.rglob("*.wav"):
        assert wav.is_symlink() and Path(os.readlink(wav)).is_absolute()
        assert wav.resolve().is_relative_to((tmp_path / "download").resolve())
        csv = dst / "metadata_dev" / wav.parent.name / f"{wav.stem}.csv"
        assert csv.is_symlink() and len(read_reference(csv).frame) == 3
    description = json.loads((dst / "dataset.json").read_text())
    assert description["classes"] == list(TAU_NIGENS[year]["classes"])
    assert len(description["classes"]) == {2020: 14, 2021: 12}[year]
    assert description["splits"]["dev-val"] == list(TAU_NIGENS[year]["folds"]["dev-val"])
    assert set(description["formats"]) == {"foa", "mic"}
    # A rerun finds everything in place.
    again = convert_tau_nigens(src, dst)
    assert (again.linked, again.kept) == (0, 18)


def test_seld_train_finds_the_converted_splits(tmp_path):
    from seld.dataset import split_recordings

    dst = tmp_path / "data"
    convert_tau_nigens(fake_tau_nigens(tmp_path / "download", 2020), dst)
    for format_name in ("foa", "mic"):
        train, validation = split_recordings(dst, format_name)
        assert [r.audio_path.stem[:5] for r in train] == ["fold3", "fold4", "fold5", "fold6"]
        assert [r.audio_path.stem[:5] for r in validation] == ["fold2"]
        assert all(r.label_frames == 5 for r in train + validation)


def test_hard_links_and_copies(tmp_path):
    src = fake_tau_nigens(tmp_path / "download", 2021, formats=("foa",))
    convert_tau_nigens(src, tmp_path / "hard", link="hardlink")
    convert_tau_nigens(src, tmp_path / "copy", link=False)
    for wav in (tmp_path / "hard").rglob("*.wav"):
        assert not wav.is_symlink() and wav.samefile(src / "foa_dev" / wav.name)
    for wav in (tmp_path / "copy").rglob("*.wav"):
        original = src / "foa_dev" / wav.name
        assert not wav.is_symlink() and not wav.samefile(original) and wav.read_bytes() == original.read_bytes()
    assert not (tmp_path / "copy" / "mic_dev").exists()
    assert not list(tmp_path.rglob(".*.tmp"))


def test_command_line(tmp_path, capsys):
    src = fake_tau_nigens(tmp_path / "download", 2020)
    assert main([str(src), str(tmp_path / "data"), "--year", "2020"]) == 0
    out = capsys.readouterr().out
    assert "TAU-NIGENS Spatial Sound Events 2020, 6 recordings" in out
    assert "dev-train: 4 foa, 4 mic" in out and "classes=alarm,baby," in out and "model.distance=false" in out


def _break(case: str, tmp_path: Path) -> tuple[Path, Path, list[str], str]:
    src = fake_tau_nigens(tmp_path / "download", 2020)
    dst, extra = tmp_path / "data", []
    if case == "no_metadata":
        (src / "metadata_dev" / "fold2_room2_mix001_ov1.csv").unlink()
        expected = "fold2_room2_mix001_ov1"
    elif case == "unknown_fold":
        (src / "foa_dev" / "fold7_room1_mix001_ov1.wav").write_bytes((src / "foa_dev" / "fold1_room1_mix001_ov1.wav").read_bytes())
        expected = "fold7_room1_mix001_ov1.wav"
    elif case == "bad_name":
        (src / "mic_dev" / "recording.wav").write_bytes(b"")
        expected = "recording.wav"
    elif case == "sample_rate":
        soundfile.write(src / "mic_dev" / "fold3_room3_mix001_ov1.wav", np.zeros((8000, 4)), 16000)
        expected = "fold3_room3_mix001_ov1.wav"
    elif case == "unreadable_audio":
        (src / "foa_dev" / "fold4_room4_mix001_ov1.wav").write_bytes(b"RIFF not really")
        expected = "fold4_room4_mix001_ov1.wav"
    elif case == "bad_metadata":
        (src / "metadata_dev" / "fold5_room5_mix001_ov1.csv").write_text("0,1,0,10\n")
        expected = "fold5_room5_mix001_ov1.csv"
    elif case == "class_out_of_range":
        (src / "metadata_dev" / "fold5_room5_mix001_ov1.csv").write_text("0,14,0,10,0\n")
        expected = "class 14"
    elif case == "wrong_year":
        extra = ["--year", "2021"]
        expected = "2020"
    elif case == "starss23":
        src = tmp_path / "starss"
        write_scene(src, "dev-train-sony", "fold3_room21_mix001", "foa", [(0, 10, 0, 1.0, 0.1, 0.5)], seconds=1)
        (src / "metadata_dev").mkdir(exist_ok=True)
        expected = "needs no conversion"
    elif case == "converted_already":  # the converter's own output given as the download
        assert main([str(src), str(tmp_path / "done")]) == 0
        src, expected = tmp_path / "done", "laid out for seld already"
    elif case == "no_metadata_folder":
        for csv in (src / "metadata_dev").iterdir():
            csv.unlink()
        (src / "metadata_dev").rmdir()
        expected = "metadata_dev"
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        dst = tmp_path / "file" / "data"
        expected = "file"
    else:  # "occupied": another file where a link would go
        target = dst / "foa_dev" / "dev-test" / "fold1_room1_mix001_ov1.wav"
        target.parent.mkdir(parents=True)
        target.write_bytes(b"something else")
        expected = "fold1_room1_mix001_ov1.wav"
    return src, dst, extra, expected


@pytest.mark.parametrize("case", ["no_metadata", "unknown_fold", "bad_name", "sample_rate", "unreadable_audio",
                                  "bad_metadata", "class_out_of_range", "wrong_year", "starss23",
                                  "no_metadata_folder", "unwritable", "occupied", "converted_already"])
def test_bad_downloads_are_one_clear_line_before_anything_is_written(case, tmp_path, capsys):
    src, dst, extra, expected = _break(case, tmp_path)
    before = sorted(dst.rglob("*")) if dst.exists() else None
    assert main([str(src), str(dst), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m seld.data_prep.convert: error: ") and expected in err, err
    if case != "occupied":
        assert (sorted(dst.rglob("*")) if dst.exists() else None) == before
    assert not (dst / "dataset.json").exists()


def test_starss23_layout_is_read_as_it_is(tmp_path):
    """STARSS23 ships dev-train-sony, dev-train-tau, dev-test-sony, dev-test-tau (no dev-val):
    seld train trains on dev-train-* and validates on dev-test-*."""
    from seld.dataset import split_recordings

    for split, name in (("dev-train-sony", "fold3_room21_mix001"), ("dev-train-tau", "fold3_room4_mix001"),
                        ("dev-test-sony", "fold4_room23_mix001"), ("dev-test-tau", "fold4_room2_mix001")):
        write_scene(tmp_path, split, name, "foa", [(1, 30, 10, 1.5, 0.2, 0.8)], seconds=1.0)
    # Counted as seld train takes them: not macOS's ._X.wav or hidden folders, X.WAV too (these were counted, or not)
    (tmp_path / "foa_dev" / "dev-test-sony" / "._fold4_room23_mix001.wav").write_bytes(b"junk")
    (tmp_path / "foa_dev" / ".Trashes").mkdir()
    (tmp_path / "foa_dev" / "dev-train-tau" / "fold3_room4_mix001.wav").rename(
        tmp_path / "foa_dev" / "dev-train-tau" / "fold3_room4_mix001.WAV")
    assert dcase_splits(tmp_path) == {"dev-test-sony": 1, "dev-test-tau": 1, "dev-train-sony": 1, "dev-train-tau": 1}
    train, validation = split_recordings(tmp_path, "foa")
    assert [r.audio_path.parent.name for r in train] == ["dev-train-sony", "dev-train-tau"]
    assert [r.audio_path.parent.name for r in validation] == ["dev-test-sony", "dev-test-tau"]
    assert read_reference(train[0].metadata_path).distance is not None  # 6 columns, distance in cm


def test_seld_train_runs_on_a_converted_download(tmp_path):
    from seld.cli import cli

    dst = tmp_path / "data"
    convert_tau_nigens(fake_tau_nigens(tmp_path / "download", 2020, formats=("foa",), seconds=3), dst)
    classes = ",".join(json.loads((dst / "dataset.json").read_text())["classes"])
    assert cli(["train", "--data", str(dst), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=1",
                "model.distance=false", f"classes={classes}"]) == 0


def test_upper_case_wavs_in_split_folders_and_hidden_entries(tmp_path):
    """A .WAV in a split folder was passed over without a word (flat .WAV files were taken); a
    hidden folder (.ipynb_checkpoints) stopped the conversion."""
    src = fake_tau_nigens(tmp_path / "download", 2021, split_folders=True)
    wav = src / "foa_dev" / "dev-train" / "fold1_room1_mix001.wav"
    wav.rename(wav.with_suffix(".WAV"))
    (src / "foa_dev" / ".ipynb_checkpoints").mkdir()
    (src / "foa_dev" / "dev-train" / ".fold1_room1_mix001.wav").write_bytes(b"an editor's backup")
    result = convert_tau_nigens(src, tmp_path / "data")
    assert result.linked == 18
    assert "fold1_room1_mix001" in split_of(tmp_path / "data")["dev-train"]
