import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# The Ctrl-C and hang-up tests need those signals delivered as in a terminal: a suite started
# in the background (`make test &`, `nohup`) begins with them ignored, and so would every process
# it starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture
def seld_cli():
    """Run the real `seld` command in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args: str, check: bool = False, **kwargs):
        return subprocess.run(
            [sys.executable, "-m", "seld", *map(str, args)],
            capture_output=True, text=True, check=check, timeout=600, **kwargs,
        )

    return run


# ------------------------------------------------------------------ test scenes
# Plane waves in free field: a known class, direction and distance, made on the fly.

import numpy as np  # noqa: E402

SAMPLE_RATE = 24_000
CLASS_BANDS_HZ = [(300, 900), (900, 2000), (2000, 5000), (5000, 9000)]  # one band-limited noise per class


def class_signal(class_index: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise whose band tells the class, amplitude-modulated like a sound event."""
    low, high = CLASS_BANDS_HZ[class_index % len(CLASS_BANDS_HZ)]
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
    spectrum[(frequencies < low) | (frequencies > high)] = 0
    signal = np.fft.irfft(spectrum, samples)
    return (signal / (np.abs(signal).max() + 1e-9)).astype(np.float32)


def encode_plane_wave(signal: np.ndarray, azimuth: float, elevation: float, format_name: str) -> np.ndarray:
    """[4, samples]: FOA (ACN/SN3D) or the tetrahedral array (free-field delays)."""
    from seld.arrays import TETRAHEDRAL

    a, e = np.radians(azimuth), np.radians(elevation)
    direction = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    if format_name == "foa":
        return np.stack([signal, signal * direction[1], signal * direction[2], signal * direction[0]])
    spectrum = np.fft.rfft(signal)
    frequencies = np.fft.rfftfreq(len(signal), 1 / SAMPLE_RATE)
    channels = []
    for capsule in np.asarray(TETRAHEDRAL.capsules_m):
        advance = capsule @ direction / 343.0  # a capsule nearer the source hears it earlier
        channels.append(np.fft.irfft(spectrum * np.exp(2j * np.pi * frequencies * advance), len(signal)))
    return np.stack(channels).astype(np.float32)


def write_scene(root, split: str, name: str, format_name: str, sources, seconds: float = 4.0, seed: int = 0,
                noise_db: float = -30.0):
    """Write ROOT/{format}_dev/SPLIT/NAME.wav and ROOT/metadata_dev/SPLIT/NAME.csv.

    sources: (class, azimuth, elevation, distance_m, onset_s, offset_s) of static sources."""
    import soundfile

    root = __import__("pathlib").Path(root)
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    audio = (10 ** (noise_db / 20) * rng.standard_normal((4, samples))).astype(np.float32)
    rows = []
    for source_id, (class_index, azimuth, elevation, distance, onset, offset) in enumerate(sources):
        start, stop = int(onset * SAMPLE_RATE), int(offset * SAMPLE_RATE)
        signal = np.zeros(samples, np.float32)
        signal[start:stop] = 0.3 * class_signal(class_index, stop - start, rng)
        audio += encode_plane_wave(signal, azimuth, elevation, format_name)
        for frame in range(int(round(onset * 10)), int(round(offset * 10))):
            rows.append((frame, class_index, source_id, int(azimuth), int(elevation), int(distance * 100)))
    wav = root / f"{format_name}_dev" / split / f"{name}.wav"
    csv = root / "metadata_dev" / split / f"{name}.csv"
    wav.parent.mkdir(parents=True, exist_ok=True)
    csv.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(wav, audio.T, SAMPLE_RATE, subtype="FLOAT")
    csv.write_text("".join(",".join(map(str, row)) + "\n" for row in sorted(rows)))
    return wav, csv


def tiny_dataset(root, format_name: str = "foa"):
    """A few seconds of plane-wave scenes: two training files, one validation file."""
    write_scene(root, "dev-train", "fold1_room1_mix001", format_name, [(2, 60, 10, 2.0, 0.5, 3.5)], seed=1)
    write_scene(root, "dev-train", "fold1_room1_mix002", format_name, [(0, -120, -20, 1.0, 0.2, 2.0),
                                                                       (2, 60, 10, 2.0, 1.5, 3.8)], seed=2)
    write_scene(root, "dev-val", "fold2_room2_mix001", format_name, [(2, 60, 10, 2.0, 0.5, 3.5)], seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run directory of the tiny preset trained for a few epochs (shared by the export tests)."""
    from seld.cli import cli

    root = tiny_dataset(tmp_path_factory.mktemp("data"))
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert cli(["train", "--data", str(root), "--out", str(run_dir), "--preset", "tiny", "epochs=2"]) == 0
    return run_dir


@pytest.fixture(scope="session")
def tiny_model_package(tiny_run, tmp_path_factory):
    """A model package exported from the tiny run: seld.json, model.onnx, stream.onnx, ..."""
    from seld.cli import cli

    out = tmp_path_factory.mktemp("models") / "tiny"
    assert cli(["export", str(tiny_run), "--out", str(out)]) == 0
    return out
