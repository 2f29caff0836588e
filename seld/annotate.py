"""`seld annotate`: many audio files in; DCASE CSV, events JSON and plots out.

A broken file is reported and skipped, the others go on; outputs of a folder input
mirror each file's path relative to that folder. Files are read (and resampled) in
worker threads while the engine runs, so reading overlaps inference.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seld import SeldError
from seld.audio import read_audio
from seld.decode import Detection, assign_tracks, track_events
from seld.engine import Engine
from seld.outputs import write_csv, write_events_json, write_plot

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


@dataclass(frozen=True)
class Job:
    source: Path
    output_stem: Path  # OUT/relative/path/NAME, without suffix


def find_jobs(inputs: list[str], out_dir: Path) -> list[Job]:
    """Audio files of the inputs; a folder's files keep their relative paths under `out_dir`."""
    jobs = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
                jobs.append(Job(path, out_dir / path.relative_to(item).with_suffix("")))
        else:
            jobs.append(Job(item, out_dir / item.stem))  # a missing file is reported when it is read
    stems = [job.output_stem for job in jobs]
    if len(set(stems)) != len(stems):
        duplicate = next(s for s in stems if stems.count(s) > 1)
        raise SeldError(f"{duplicate}: two inputs would write the same outputs; give their folder instead")
    return jobs


def annotate_file(engine: Engine, audio: np.ndarray, streaming: bool, block_samples: int = 4800) -> list[Detection]:
    """Tracked detections of a whole signal, offline or through the streaming path."""
    if not streaming:
        return assign_tracks(engine.detections(audio))
    stream = engine.stream()
    detections = []
    for start in range(0, audio.shape[1], block_samples):
        for frame in stream.push(audio[:, start : start + block_samples]):
            detections.extend(frame.detections)
    for frame in stream.flush():
        detections.extend(frame.detections)
    return detections


def write_outputs(engine: Engine, job: Job, detections: list[Detection], duration_s: float, plot: bool) -> None:
    stem = job.output_stem
    write_csv(stem.with_suffix(".csv"), detections, engine.has_distance)
    events = track_events(detections, engine.class_names)
    write_events_json(stem.with_suffix(".json"), job.source, engine.name, engine.sample_rate, duration_s, events)
    if plot:
        write_plot(stem.with_suffix(".png"), detections, engine.class_names, duration_s, str(job.source))


def _load(engine: Engine, job: Job) -> np.ndarray | SeldError:
    try:
        return read_audio(job.source, engine.sample_rate, engine.num_channels)[0]
    except SeldError as error:
        return error


def annotate_command(args) -> int:
    if args.model:
        engine = Engine(args.model, args.device, "batch")
    else:
        engine = Engine.default(args.format, args.device, "batch")
    log.info("model %s on %s", engine.name, ", ".join(engine.providers))
    if args.streaming and not engine.causal:
        raise SeldError(f"{engine.model_dir}: --streaming needs a causal model")
    out_dir = Path(args.out)
    jobs = find_jobs(args.inputs, out_dir)
    if not args.overwrite:
        done = [job for job in jobs if job.output_stem.with_suffix(".csv").exists()
                and job.output_stem.with_suffix(".json").exists()
                and (not args.plot or job.output_stem.with_suffix(".png").exists())]
        if done:
            print(f"skipping {len(done)} file(s) already annotated (--overwrite redoes them)")
        jobs = [job for job in jobs if job not in done]
    failures, audio_seconds, started = [], 0.0, time.perf_counter()
    with ThreadPoolExecutor(max(args.workers, 1)) as pool, tqdm(total=len(jobs), unit="file", desc="annotate") as bar:
        # Read ahead a few files while the engine works on the current one.
        loads = (pool.submit(_load, engine, job) for job in jobs)
        pending = [next(loads, None) for _ in range(max(args.workers, 1) + 1)]
        for job in jobs:
            audio = pending.pop(0).result()
            pending.append(next(loads, None))
            if isinstance(audio, SeldError):
                failures.append(str(audio))
                tqdm.write(f"skipped: {audio}", file=sys.stderr)
                bar.update()
                continue
            duration_s = audio.shape[1] / engine.sample_rate
            detections = annotate_file(engine, audio, args.streaming)
            write_outputs(engine, job, detections, duration_s, args.plot)
            audio_seconds += duration_s
            bar.update()
    elapsed = time.perf_counter() - started
    speed = f", {audio_seconds / elapsed:.0f}x real time" if elapsed > 0 and audio_seconds else ""
    print(f"annotated {len(jobs) - len(failures)} file(s), {audio_seconds:.1f} s of audio in {elapsed:.1f} s{speed}; "
          f"outputs in {out_dir}")
    if failures:
        print(f"{len(failures)} file(s) skipped:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0
