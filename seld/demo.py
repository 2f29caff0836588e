"""`make demo`: the whole job on the shipped default model, in a few minutes on 2 cores.

Synthesizes a short scene with known events (a few sources, one of them moving) in a
room the default models never trained in, annotates it with the shipped model, prints
the events found next to the truth with the DCASE metrics, and writes the plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from seld import SeldError
from seld.decode import MAX_GAP_FRAMES
from seld.interrupts import sigterm_interrupts

MIN_SECONDS, MAX_SECONDS = 5.0, 3600.0  # shorter scenes may hold no moving source
MOVING_DEGREES = 10.0  # an event whose azimuth moves more is shown as moving, in both tables
DEMO_SEED = 2026  # a seed that gives a scene with a moving source; the search below checks it
ROOM_SEED = 90_000  # room seeds of the shipped models' data are small integers: this room is unseen


def demo_scene(duration_s: float):
    """The first scene from DEMO_SEED on with at least three events, one of them moving."""
    from seld.data_prep.rooms import random_room
    from seld.data_prep.synth import synthesize_scene

    room = random_room(np.random.default_rng([ROOM_SEED]))
    for seed in range(DEMO_SEED, DEMO_SEED + 50):
        result = synthesize_scene(seed, ("foa", "mic"), duration_s=duration_s, room=room)
        events = result.scene.events
        if len(events) >= 3 and any(e.moving for e in events):
            return result
    raise SeldError(f"no demo scene of {duration_s:g} s with a moving source in 50 seeds")


def truth_events(rows, class_names) -> list[dict]:
    """Reference rows -> one summary per (class, source) and stretch without a longer gap than the
    tracker bridges: onset, offset, mean direction."""
    events = {}
    for frame, class_index, source, azimuth, elevation, distance_cm in rows:
        events.setdefault((class_index, source), []).append((frame, azimuth, elevation, distance_cm / 100))
    summaries = []
    for (class_index, source), every_frame in events.items():
        every_frame = np.array(sorted(every_frame), float)
        breaks = np.flatnonzero(np.diff(every_frame[:, 0]) > MAX_GAP_FRAMES + 1) + 1  # as the tracker splits
        for frames in np.split(every_frame, breaks):
            summaries.append({"class_name": class_names[class_index], "onset_s": frames[0, 0] / 10,
                              "offset_s": (frames[-1, 0] + 1) / 10, "azimuth_start": frames[0, 1],
                              "azimuth_end": frames[-1, 1], "elevation": frames[:, 2].mean(),
                              "distance_m": frames[:, 3].mean()})
    return sorted(summaries, key=lambda e: e["onset_s"])


def print_events(title: str, events: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'class':<20}{'onset':>7}{'offset':>8}{'azimuth':>16}{'elevation':>11}{'distance':>10}")
    for e in events:
        if "azimuth_start" in e:
            azimuth = f"{e['azimuth_start']:.0f}" if abs(e["azimuth_end"] - e["azimuth_start"]) < MOVING_DEGREES else \
                f"{e['azimuth_start']:.0f} -> {e['azimuth_end']:.0f}"
        else:
            first, last = e["frames"][0][1], e["frames"][-1][1]
            azimuth = f"{e['azimuth']:.0f}" if abs(last - first) < MOVING_DEGREES else f"{first:.0f} -> {last:.0f}"
        distance = "-" if e.get("distance_m") is None else f"{e['distance_m']:.1f} m"
        print(f"  {e['class_name']:<20}{e['onset_s']:>6.1f}s{e['offset_s']:>7.1f}s{azimuth:>16}"
              f"{e['elevation']:>10.0f}°{distance:>10}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seld.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="folder for the scene and its annotation")
    parser.add_argument("--format", choices=["foa", "mic"], default="foa", help="which shipped model")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the scene")
    args = parser.parse_args(argv)
    if not MIN_SECONDS <= args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be from {MIN_SECONDS:g} to {MAX_SECONDS:g}, not {args.seconds:g}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out}: exists and is not a folder")
    try:
        with sigterm_interrupts():  # a kill ends it as Ctrl-C does: no temporary file left
            return run(Path(args.out), args.format, args.seconds)
    except SeldError as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # os.replace names the temporary file first and the file it was to become second
        where = getattr(error, "filename2", None) or error.filename or args.out
        print(f"demo: error: {where}: {error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


def run(out: Path, format_name: str, seconds: float) -> int:
    # Imported here, where Ctrl-C is caught (scipy's import takes a while)
    from seld.atomic import write_text_atomic
    from seld.audio import SAMPLE_RATE, write_audio
    from seld.decode import assign_tracks, track_events
    from seld.engine import Engine
    from seld.formats import read_reference
    from seld.metrics import SeldScorer
    from seld.outputs import detections_to_events, write_csv, write_events_json, write_plot

    started = time.perf_counter()
    engine = Engine.default(format_name, "auto", "batch")
    print(f"model: {engine.model_dir} ({len(engine.class_names)} classes, {', '.join(engine.providers)})")
    scene = demo_scene(seconds)
    for temporary in out.glob(".scene*.tmp"):  # left by a run killed mid-write (kill -9)
        temporary.unlink(missing_ok=True)
    audio = scene.audio[format_name]
    wav, reference_csv = out / "scene.wav", out / "scene_truth.csv"
    write_audio(wav, audio, SAMPLE_RATE)
    rows = scene.labels
    write_text_atomic(reference_csv, "".join(",".join(str(int(v)) for v in row) + "\n" for row in rows))
    print(f"scene: {wav} ({seconds:g} s, {format_name}, room unseen in training, "
          f"{len(scene.scene.events)} events, {sum(e.moving for e in scene.scene.events)} moving)")

    detections = assign_tracks(engine.detections(audio))
    write_csv(out / "scene.csv", detections, engine.has_distance)
    events = track_events(detections, engine.class_names)
    # as seld annotate writes it: a later annotate of the scene knows these outputs by their model
    write_events_json(out / "scene.json", wav, engine.name, engine.sample_rate, seconds, events, engine.info.digest)
    write_plot(out / "scene.png", detections, engine.class_names, seconds, f"{wav} ({engine.name})")

    print_events("truth", truth_events(rows, engine.class_names))
    print_events("found by the model (events of 0.3 s or more)", [e for e in events if len(e["frames"]) >= 3])

    reference = read_reference(reference_csv)
    for average in ("micro", "macro"):
        scorer = SeldScorer("dcase2024", average, use_distance=engine.has_distance, num_classes=len(engine.class_names))
        scorer.add(reference if engine.has_distance else reference.without_distance(),
                   detections_to_events(detections, engine.has_distance), wav.name)
        metrics = scorer.result().metrics
        print(f"\nDCASE 2024 ({average}): " + "  ".join(
            f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    absent = len(engine.class_names) - len(set(reference.class_index.tolist()))
    print(f"  (ER error rate, F F-score, AngE degrees, DistE metres, LR localization recall; SELD 0 is perfect. "
          f"Macro averages all {len(engine.class_names)} classes: the {absent} absent from this scene "
          f"score F 0, so micro, over the scene's events, says more here.)")
    print(f"\nwrote {out}/scene.wav, scene_truth.csv, scene.csv, scene.json, scene.png "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
