"""`seld synth-sounds`: keyword classes, and a clear exit where apt is missing (no network here)."""

from __future__ import annotations

import argparse

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
    assert sounds._earlier_rows(out, ("pkg-b",)) == [
        ("bell/pkg-a__ding.ogg", "bell", "pkg-a", "1.0", "CC0", "/usr/share/a/ding.ogg")]


def test_without_apt_it_says_so_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sounds.shutil, "which", lambda name: None)
    code = sounds.synth_sounds_command(argparse.Namespace(out=str(tmp_path / "s"), packages=None))
    out = capsys.readouterr().out.strip()
    assert code == 2 and len(out.splitlines()) == 1 and "apt-get" in out
    assert not (tmp_path / "s").exists()
