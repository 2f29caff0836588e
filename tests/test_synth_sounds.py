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


def test_without_apt_it_says_so_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sounds.shutil, "which", lambda name: None)
    code = sounds.synth_sounds_command(argparse.Namespace(out=str(tmp_path / "s"), packages=None))
    out = capsys.readouterr().out.strip()
    assert code == 2 and len(out.splitlines()) == 1 and "apt-get" in out
    assert not (tmp_path / "s").exists()
