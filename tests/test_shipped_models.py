"""The shipped default models (`models/foa`, `models/mic`): what they are, where they are found."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from seld.models import FORMATS, default_model_dir


@pytest.mark.parametrize("format_name", FORMATS)
def test_shipped_package_is_a_small_causal_model_of_the_starss23_classes(format_name):
    folder = default_model_dir(format_name)
    meta = json.loads((folder / "seld.json").read_text())
    assert (meta["format"], meta["causal"], meta["num_channels"]) == (format_name, True, 4)
    assert meta["output"]["num_classes"] == len(meta["classes"]) == 13 and meta["output"]["distance"]
    assert sum(path.stat().st_size for path in folder.iterdir()) <= 20e6
    card = (folder / "README.md").read_text()
    assert "2024 micro" in card and "not tested on real recordings" in card
    assert f"python -m seld.data_prep.recipe {format_name}" in card


def test_annotate_uses_the_shipped_foa_model_unless_format_says_mic(tmp_path, seld_cli):
    wav = tmp_path / "noise.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.01, (24000, 4)).astype(np.float32), 24000)
    for extra, expected in (((), "seld-default-foa"), (("--format", "mic"), "seld-default-mic")):
        out = tmp_path / expected
        seld_cli("annotate", wav, "--out", out, *extra, check=True)
        assert json.loads((out / "noise.json").read_text())["model"] == expected


def test_a_wheel_carries_both_models_and_finds_them(tmp_path):
    """Package data is easy to lose in a wheel; importlib.resources must find it there too."""
    source = tmp_path / "source"  # a copy: no stale build/ of the checkout's, none left in it
    for folder in ("seld", "realtime", "data_prep", "models"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("seld-*.whl")
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    for format_name in FORMATS:
        for name in ("seld.json", "model.onnx", "stream.onnx", "weights.safetensors", "README.md"):
            assert (unpacked / "seld" / "models" / format_name / name).is_file(), (format_name, name)
    found = subprocess.run(
        [sys.executable, "-c", "from seld.models import default_model_dir; print(default_model_dir('mic'))"],
        cwd=tmp_path, env={"PYTHONPATH": str(unpacked)}, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert found == str(unpacked / "seld" / "models" / "mic")
