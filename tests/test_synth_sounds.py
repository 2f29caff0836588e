"""`seld synth-sounds`: keyword classes, and a clear exit where apt is missing (no network here)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seld import SeldError

from seld.data_prep import sounds


def test_paths_are_sorted_into_classes_by_keyword():
    assert sounds.classify("/usr/share/minetest/sounds/default_wood_footstep.1.ogg") == "footsteps"
    assert sounds.classify("/usr/share/sounds/lomiri/ringtones/Ubuntu.ogg") == "telephone"
    assert sounds.classify("/usr/share/sounds/freedesktop/stereo/bell.oga") == "bell"
    assert sounds.classify("/usr/share/games/x/doors/door_open.wav") == "door"
    assert sounds.classify("/usr/share/lmms/samples/drums/snare01.ogg") == "musical_instrument"
    assert sounds.classify("/usr/share/games/x/water/splash.ogg") == "water_tap"
    assert sounds.classify("/usr/share/games/x/ui/click.ogg") is None
    # 'dial' is a telephone's; dialog-* are desktop notifications (they were filed as telephone)
    assert sounds.classify("/usr/share/sounds/freedesktop/stereo/dialog-warning.oga") is None
    assert sounds.classify("/usr/share/sounds/x/dial_tone.ogg") == "telephone"


def test_the_manifest_keeps_the_licences_of_an_earlier_runs_files(tmp_path):
    out = tmp_path / "sounds"
    (out / "bell").mkdir(parents=True)
    (out / "bell" / "pkg-a__ding.ogg").write_bytes(b"x")
    (out / "manifest.csv").write_text("file,class,package,version,licence,source_path\n"
                                      "bell/pkg-a__ding.ogg,bell,pkg-a,1.0,CC0,/usr/share/a/ding.ogg\n"
                                      "bell/pkg-a__gone.ogg,bell,pkg-a,1.0,CC0,/usr/share/a/gone.ogg\n"
                                      "bell/pkg-b__old.ogg,bell,pkg-b,0.9,MIT,/usr/share/b/old.ogg\n")
    # pkg-b is being fetched again (its rows come anew); pkg-a's file that is gone is dropped
    assert sounds._earlier_rows(out, {"pkg-b"}) == [
        ("bell/pkg-a__ding.ogg", "bell", "pkg-a", "1.0", "CC0", "/usr/share/a/ding.ogg")]


def test_without_apt_it_says_so_in_one_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sounds.shutil, "which", lambda name: None)
    with pytest.raises(SeldError, match="^needs apt-get and dpkg-deb"):
        sounds.synth_sounds_command(argparse.Namespace(out=str(tmp_path / "s"), packages=None))
    assert not (tmp_path / "s").exists()


def _deb(folder: Path, package: str, files: dict[str, float]) -> None:
    """A real .deb (dpkg-deb --build) of `package` holding WAVs of the given seconds."""
    root = folder / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
                                             f"Maintainer: t <t@example.org>\nDescription: test sounds\n")
    (root / "usr" / "share" / "doc" / package).mkdir(parents=True)
    (root / "usr" / "share" / "doc" / package / "copyright").write_text("License: CC0-1.0\n")
    for relative, seconds in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(root / relative, np.full(int(seconds * 8000), 0.1, np.float32), 8000)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(folder / f"{package}_1.0_all.deb")],
                   check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_twin_names_are_both_kept_and_a_failed_download_keeps_its_earlier_files_licences(tmp_path, monkeypatch,
                                                                                         capsys):
    """lmms-common's basses/rave_bass02.ogg and bassloops/rave_bass02.ogg were copied to one name (the
    later replaced the earlier, both listed); a package that failed to download lost its files'
    manifest rows, though its files stayed and synth used them."""
    debs = tmp_path / "debs"
    debs.mkdir()
    _deb(debs, "pkg-a", {"usr/share/a/basses/bell_ding.wav": 0.5, "usr/share/a/loops/bell_ding.wav": 0.6})
    _deb(debs, "pkg-b", {"usr/share/b/bell_dong.wav": 0.7})
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "apt-get").write_text(  # `apt-get download PKG`: the prebuilt .deb, unless FAIL names it
        f'#!/bin/sh\n[ "$2" = "$FAIL" ] && {{ echo "E: Temporary failure resolving" >&2; exit 100; }}\n'
        f'cp "{debs}/$2_1.0_all.deb" .\n')
    (bin_folder / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}:{os.environ['PATH']}")
    out = tmp_path / "sounds"
    arguments = argparse.Namespace(out=str(out), packages="pkg-a,pkg-b")
    assert sounds.synth_sounds_command(arguments) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.wav"))
    assert files == ["bell/pkg-a__bell_ding-2.wav", "bell/pkg-a__bell_ding.wav", "bell/pkg-b__bell_dong.wav"]
    manifest = (out / "manifest.csv").read_text()
    assert sorted(line.split(",")[0] for line in manifest.splitlines()[1:]) == files
    assert "3 recordings in" in capsys.readouterr().out
    monkeypatch.setenv("FAIL", "pkg-b")
    assert sounds.synth_sounds_command(arguments) == 0
    assert (out / "manifest.csv").read_text() == manifest
