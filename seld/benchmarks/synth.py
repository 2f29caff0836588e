"""`seld bench synth`: how fast `seld synth` renders, in minutes of audio per minute of wall time.

Two measurements, each warmed up and repeated three times (median):
- one process: seconds to lay out a 60 s scene (sounds, paths) and to render it per
  format, so a format's cost is layout + its render; real-time factor = audio / wall.
- the command as users run it: `seld synth --workers 2 --format both` on 60 s mixtures
  (moving sources included, files written), minutes of audio of both formats per minute.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from argparse import Namespace

import numpy as np

REPEATS = 3
DURATION_S = 60.0
COMMAND_MIXTURES = 4


def _one_process(seed: int) -> dict:
    from seld.arrays import FOA, TETRAHEDRAL
    from seld.data_prep.scenes import SceneSettings, generate_scene, render_scene
    from seld.data_prep.sound_bank import STARSS23_CLASSES, ProceduralBank
    from seld.data_prep.synth import room_for

    bank = ProceduralBank(STARSS23_CLASSES)
    start = time.perf_counter()
    scene = generate_scene(np.random.default_rng([seed, 2, 1, 1, 0]), room_for(seed, 1), bank,
                           SceneSettings(duration_s=DURATION_S))
    layout = time.perf_counter() - start
    timings = {"layout_s": layout}
    for name, array in (("foa", FOA), ("mic", TETRAHEDRAL)):
        start = time.perf_counter()
        render_scene(scene, array)
        timings[f"{name}_render_s"] = time.perf_counter() - start
    timings["moving_frames"] = sum(len(e.positions) for e in scene.events if e.moving)
    timings["events"] = len(scene.events)
    return timings


def _command(workers: int, seed: int) -> float:
    from seld.data_prep.synth import synth_command

    with tempfile.TemporaryDirectory(prefix="seld-bench-synth-") as out:
        args = Namespace(out=out, format="both", minutes=COMMAND_MIXTURES * DURATION_S / 60, seed=seed, sounds=None,
                         classes=None, array=None, workers=workers, rooms=COMMAND_MIXTURES + 2, max_polyphony=3,
                         duration=DURATION_S)
        start = time.perf_counter()
        with open(os.devnull, "w") as sink:
            import contextlib

            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                synth_command(args)
        return time.perf_counter() - start


def run() -> dict:
    _one_process(99)  # warm-up: array tables, imports
    runs = [_one_process(seed) for seed in range(REPEATS)]
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    minutes = DURATION_S / 60
    per_format = {name: (median["layout_s"] + median[f"{name}_render_s"]) / minutes for name in ("foa", "mic")}
    walls = [_command(2, seed) for seed in range(REPEATS)]
    wall = statistics.median(walls)
    audio_minutes = COMMAND_MIXTURES * minutes * 2
    return {
        "machine_cpus": os.cpu_count(),
        "mixture_s": DURATION_S,
        "one_worker": {
            "layout_s_per_mixture": round(median["layout_s"], 3),
            "foa_render_s_per_mixture": round(median["foa_render_s"], 3),
            "mic_render_s_per_mixture": round(median["mic_render_s"], 3),
            "seconds_per_audio_minute": {k: round(v, 3) for k, v in per_format.items()},
            "x_real_time": {k: round(60 / v, 1) for k, v in per_format.items()},
            "both_formats_audio_min_per_wall_min": round(2 * minutes * 60 / (
                median["layout_s"] + median["foa_render_s"] + median["mic_render_s"]), 1),
            "events_per_mixture": median["events"],
            "moving_frames_per_mixture": median["moving_frames"],
        },
        "command_workers_2": {
            "mixtures": COMMAND_MIXTURES,
            "wall_s": round(wall, 2),
            "wall_s_runs": [round(w, 2) for w in walls],
            "audio_min_per_wall_min": round(audio_minutes / (wall / 60), 1),
            "target": 30,
        },
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "max_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def format_table(result: dict) -> str:
    one, command = result["one_worker"], result["command_workers_2"]
    lines = [
        f"seld bench synth: {result['mixture_s']:g} s mixtures, {result['machine_cpus']} CPUs, median of {REPEATS}",
        f"  1 worker: layout {one['layout_s_per_mixture']:.2f} s, render FOA {one['foa_render_s_per_mixture']:.2f} s,"
        f" MIC {one['mic_render_s_per_mixture']:.2f} s per mixture"
        f" ({one['events_per_mixture']:g} events, {one['moving_frames_per_mixture']:g} moving-source frames)",
    ]
    for name in ("foa", "mic"):
        lines.append(f"  {name.upper()}: {one['seconds_per_audio_minute'][name]:.2f} s per minute of audio,"
                     f" {one['x_real_time'][name]:.1f}x real time")
    lines.append(f"  1 worker, both formats: {one['both_formats_audio_min_per_wall_min']:.1f} min of audio per min")
    lines.append(f"  seld synth --workers 2 --format both: {command['audio_min_per_wall_min']:.1f} min of audio"
                 f" per min of wall time (target {command['target']}; {command['mixtures']} mixtures in"
                 f" {command['wall_s']:.1f} s, files written)")
    lines.append(f"  peak memory: {result['max_rss_mb']:.0f} MB (workers {result['max_rss_children_mb']:.0f} MB)")
    return "\n".join(lines)
