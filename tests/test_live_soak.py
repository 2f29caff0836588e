"""A long run of `seld live` on the virtual array with a model of the default preset's
architecture: overflows (target none), memory growth (target flat) and latency.
Opt-in, as it takes minutes: SELD_LIVE_SOAK_MINUTES=10 pytest -s tests/test_live_soak.py"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest
import soundfile

from test_live_pulse import LiveProcess, pulse  # noqa: F401 (the fixture)

MINUTES = float(os.environ.get("SELD_LIVE_SOAK_MINUTES", "0"))
pytestmark = pytest.mark.skipif(MINUTES <= 0, reason="a long run: set SELD_LIVE_SOAK_MINUTES to run it")


@pytest.fixture(scope="module")
def default_preset_model(tmp_path_factory):
    """The default preset trained for one epoch: speed does not depend on the weights."""
    from conftest import tiny_dataset
    from seld.cli import cli

    root = tiny_dataset(tmp_path_factory.mktemp("soak_data"))
    run = tmp_path_factory.mktemp("soak_run") / "run"
    assert cli(["train", "--data", str(root), "--out", str(run), "--preset", "default", "epochs=1", "workers=0",
                "normalization_files=4", "batch_size=4", "crop_seconds=2.0"]) == 0
    out = tmp_path_factory.mktemp("soak_model") / "model"
    assert cli(["export", str(run), "--out", str(out)]) == 0
    return out, root


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_long_run_has_no_overflow_and_flat_memory(pulse, default_preset_model):  # noqa: F811
    server, writer = pulse
    model, root = default_preset_model
    scene, _ = soundfile.read(next((root / "foa_dev").rglob("*.wav")), dtype="float32", always_2d=True)
    writer.play(scene, repeat=True)
    live = LiveProcess(server, model, "--json", "--stats")
    live.wait_for(lambda: len(live.frames) >= 10)
    started = time.monotonic()
    samples = []  # (seconds, RSS MiB)
    while time.monotonic() - started < MINUTES * 60:
        assert live.process.poll() is None, live.stderr
        samples.append((time.monotonic() - started, rss_mib(live.process.pid)))
        time.sleep(5)
    assert live.stop() == 0, live.stderr
    frames = [f["frame"] for _, f in live.frames]
    assert frames == list(range(len(frames))), "no frame lost or repeated"
    gaps = np.diff([t for t, _ in live.frames])
    after_first_minute = [rss for t, rss in samples if t >= min(60, MINUTES * 30)]
    growth = after_first_minute[-1] - after_first_minute[0]
    latency = re.search(r"latency p50 ([\d.]+) ms, p99 ([\d.]+) ms", live.stderr)
    overflows = re.search(r"(\d+) overflows", live.stderr)
    print(f"\n{MINUTES:g} min, {len(frames)} frames; overflows {overflows.group(1) if overflows else 0}; "
          f"RSS {samples[0][1]:.1f} -> {samples[-1][1]:.1f} MiB (after the first minute {growth:+.1f} MiB); "
          f"loop latency p50 {latency.group(1)} ms, p99 {latency.group(2)} ms; "
          f"frame spacing at the reader: p50 {1000 * np.median(gaps):.1f} ms, max {1000 * gaps.max():.0f} ms")
    assert overflows is None, live.stderr
    assert growth < 5.0, samples
