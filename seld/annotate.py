"""`seld annotate`: many audio files in; DCASE CSV, events JSON and plots out.

Inputs are files, folders (searched recursively) and glob patterns (expanded here when the
shell did not); outputs mirror each file's path relative to its folder (or to the pattern's
fixed leading folders) under --out. Every file is read in blocks (resampled block-wise) by
reader threads ahead of the engine, so reading overlaps inference and memory does not grow
with a file's length (causal models; a non-causal model needs each file whole). The engine
runs several files per ONNX Runtime call and one such loop per core (seld.engine); outputs
are decoded and tracked as they come. A broken file is reported and skipped, the others go
on; outputs are written whole or not at all, and a rerun skips files already done.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import itertools
import json
import logging
import os
import sys
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from seld import SeldError
from seld.atomic import check_writable, temporary_prefix
from seld.audio import audio_info, iter_audio_blocks
from seld.engine import Engine, ModelInfo
from seld.models import default_model_dir
from seld.outputs import FileOutputs, output_path, path_text

log = logging.getLogger(__name__)

# What a folder or pattern search takes: the formats libsndfile reads (a file named alone is tried whatever its name).
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".caf", ".w64", ".rf64"}
READ_BLOCK_S = 10.0  # seconds per block read from a file
STREAM_BLOCK = 4800  # samples per block pushed with --streaming (200 ms, as a sound card would)
STREAMING_AHEAD = 4  # files per engine thread in flight with --streaming (each holds its outputs open)
PLAIN_EVERY_S = 30.0  # progress lines, where stderr is no terminal


@dataclass(frozen=True)
class Job:
    source: Path
    output_stem: Path  # OUT/relative/path/NAME, without suffix


@dataclass
class _Progress:
    """One file on its way: its header, samples read, outputs being written."""

    job: Job
    rate: int
    frames: int  # at the file's own rate
    samples: int = 0  # read, at the model's rate
    output_frames: int = 0
    outputs: FileOutputs | None = None  # being written
    failed: str | None = None  # why its outputs could not be written
    reported_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate


def has_outputs(job: Job) -> bool:
    """The CSV and JSON of a job are there (the CSV is put in place last)."""
    return output_path(job.output_stem, ".csv").exists() and output_path(job.output_stem, ".json").exists()


def outputs_made_by(job: Job) -> dict | None:
    """The header of the job's NAME.json ({"file", "path", "model", ...}); None when the job has no
    outputs, {} when they are there but are not seld's or cannot be read."""
    return _header(output_path(job.output_stem, ".json")) if has_outputs(job) else None


def _header(path: Path) -> dict:
    """The header of an events file of seld's ({} when it is not one, or cannot be read)."""
    try:
        with path.open(encoding="utf-8") as handle:
            line = handle.readline()
        header = json.loads(line if line.rstrip().endswith("}") else line + "]}")  # events follow, a line each
        return header if isinstance(header, dict) and {"file", "model"} <= header.keys() else {}
    except (OSError, ValueError):
        return {}


def _stray_output(job: Job, plot: bool) -> Path | None:
    """For a job without both its CSV and JSON: a file there of a name the run would write (the plot's
    with `plot`) that seld did not leave for this job. The JSON goes in place first and the CSV last,
    so a JSON alone is a stopped run's, if it is seld's and this file's. (A user's own NAME.csv of
    labels was overwritten unasked.)"""
    events = output_path(job.output_stem, ".json")
    if events.exists():
        header = _header(events)
        return None if header and _same_file(header, job.source) else events
    suffixes = (".csv", ".png") if plot else (".csv",)
    return next((path for suffix in suffixes if (path := output_path(job.output_stem, suffix)).exists()), None)


def _same_file(header: dict, source: Path) -> bool:
    """Whether outputs whose header is `header` were made from `source`: by their absolute path
    (outputs of seld before it recorded one: by the file as it was named)."""
    recorded = header.get("path") or header["file"]
    if recorded == path_text(Path(os.path.abspath(source)) if "path" in header else source):
        return True
    try:
        return os.path.samefile(recorded, source)  # named another way (a link, ..)
    except (OSError, TypeError, ValueError):
        return False


def remove_temporaries(job: Job) -> None:
    """Temporary files a killed run left for this job's outputs (".NAME.csv.<random>.tmp")."""
    for suffix in (".csv", ".json", ".png"):
        path = output_path(job.output_stem, suffix)
        for temporary in path.parent.glob(f"{glob.escape(temporary_prefix(path))}*.tmp"):
            temporary.unlink(missing_ok=True)


def _has_magic(text: str) -> bool:
    return any(character in text for character in "*?[")


def _glob_base(pattern: str) -> Path:
    """The pattern's leading folders without wildcards: outputs mirror paths relative to it."""
    return Path(*itertools.takewhile(lambda part: not _has_magic(part), Path(pattern).parts[:-1]))


def _audio_files(folder: Path) -> tuple[list[Path], list[str]]:
    """(the audio files under `folder`, sorted; the problems of links of audio names there that lead nowhere)."""
    named = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return [p for p in named if p.is_file()], [_broken_link(p) for p in named if _leads_nowhere(p)]


def _leads_nowhere(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _broken_link(path: Path) -> str:
    return f"{path}: a link to {os.readlink(path)}, which is not there"


def find_jobs(inputs: Iterable[str], out_dir: Path) -> tuple[list[Job], list[str]]:
    """Audio files of the inputs (files, folders searched recursively, glob patterns) and the
    problems of inputs that name nothing. A folder's files keep their relative paths under
    `out_dir`, a pattern's their paths relative to its leading folders without wildcards."""
    jobs, problems = [], []
    for text in map(str, inputs):
        item = Path(text)
        if item.is_dir():
            files, broken = _audio_files(item)
            found = [Job(path, out_dir / path.relative_to(item).with_suffix("")) for path in files]
            problems += broken
            if not found and not broken:
                problems.append(f"{text}: folder holds no audio file ({', '.join(sorted(AUDIO_SUFFIXES))})")
            jobs += found
        elif text.endswith(("/", os.sep)) and not item.exists():
            problems.append(f"{text}: no such folder")
        elif item.exists() or not _has_magic(text):
            jobs.append(Job(item, out_dir / item.stem))  # a missing file is reported when it is opened
        else:
            base = _glob_base(text)
            matches = sorted(Path(match) for match in glob.glob(text, recursive=True))
            found, broken = [], []
            for match in matches:
                if match.is_dir():
                    files, in_folder = _audio_files(match)
                    found += [Job(path, out_dir / path.relative_to(base).with_suffix("")) for path in files]
                    broken += in_folder
                elif match.suffix.lower() in AUDIO_SUFFIXES:
                    if _leads_nowhere(match):
                        broken.append(_broken_link(match))
                    else:
                        found.append(Job(match, out_dir / match.relative_to(base).with_suffix("")))
            if not found and not broken:
                problems.append(f"{text}: matches no audio file")
            problems += broken
            jobs += found
    # A file named twice (a pattern and its folder, a relative and an absolute path) is done once, as first named.
    unique, seen = [], {}
    for job in jobs:  # the same name and file: one file named twice (links with other names are files of their own)
        if (key := (_identity(job.source), job.source.name)) in seen:
            log.info("%s: the same file as %s, annotated once", job.source, seen[key].source)
            continue
        seen[key] = job
        unique.append(job)
    by_stem: dict[Path, list[Job]] = {}
    for job in unique:
        by_stem.setdefault(job.output_stem, []).append(job)
    for stem, same in by_stem.items():
        if len(same) > 1:  # e.g. take.wav and take.flac: neither is annotated, the others are
            parents = {job.source.parent for job in same}
            hint = ("rename one" if len(parents) == 1 else
                    f"give their common folder ({os.path.commonpath([p.absolute() for p in parents])}) instead, "
                    f"or separate --out folders")
            problems += [f"{job.source}: not annotated: {', '.join(str(other.source) for other in same if other != job)} "
                         f"would write the same outputs ({stem}.csv); {hint}" for job in same]
    # A link found from two inputs ('data/**' matches data and data/sub) is said once.
    return [job for job in unique if len(by_stem[job.output_stem]) == 1], list(dict.fromkeys(problems))


def _identity(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: reported when it is opened
        return path.absolute()


def _open_outputs(engine: Engine, progress: _Progress, plot: bool) -> FileOutputs:
    try:
        progress.outputs = FileOutputs(progress.job.output_stem, engine.class_names, engine.has_distance, plot,
                                       replaces=has_outputs(progress.job))
    except OSError as error:
        raise SeldError(f"{progress.job.source}: cannot write its outputs ({error})") from None
    return progress.outputs


def _prefetched(blocks: Iterator[np.ndarray], readers: Executor, progress: _Progress) -> Iterator[np.ndarray]:
    """The blocks, each read by a reader thread while the engine works on the one before."""
    future = readers.submit(next, blocks, None)
    while (block := future.result()) is not None:
        future = readers.submit(next, blocks, None)
        progress.samples += block.shape[1]
        yield block


def _blocks(engine: Engine, progress: _Progress) -> Iterator[np.ndarray]:
    return iter_audio_blocks(progress.job.source, engine.sample_rate, engine.num_channels,
                             block_samples=int(READ_BLOCK_S * progress.rate))


def _annotate_streaming(engine: Engine, progress: _Progress, plot: bool, stop: threading.Event
                        ) -> FileOutputs | SeldError | None:
    """One file through the streaming engine, pushed in sound-card-sized blocks; None when `stop`
    was set (the run was interrupted: its outputs are discarded)."""
    try:
        outputs = _open_outputs(engine, progress, plot)
        stream = engine.stream(keep_events=True)
        for block in _blocks(engine, progress):
            if stop.is_set():
                outputs.discard()
                return None
            progress.samples += block.shape[1]
            for start in range(0, block.shape[1], STREAM_BLOCK):
                frames = stream.push(block[:, start:start + STREAM_BLOCK])
                outputs.add_tracked([d for frame in frames for d in frame.detections], stream.take_events())
        frames = stream.flush()
        outputs.add_tracked([d for frame in frames for d in frame.detections], stream.take_events())
        return outputs
    except (SeldError, OSError) as error:  # OSError: its outputs cannot be written; the file fails
        if progress.outputs is not None:
            progress.outputs.discard()
        return error if isinstance(error, SeldError) else SeldError(
            f"{progress.job.source}: cannot write its outputs ({error})")


class _Bar:
    """A progress bar over hours of audio that also counts files. Where stderr is no terminal (a log
    file, CI), plain lines instead, one every PLAIN_EVERY_S at most: a bar's carriage returns
    would fill the log with one endless line."""

    def __init__(self, files: int, seconds: float, disable: bool = False):
        self.files, self.done = files, 0
        self.total_s, self.seconds = max(seconds, 1e-9), 0.0
        self.plain = not disable and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        self.bar = tqdm(total=self.total_s, desc="annotate", file=sys.stderr, dynamic_ncols=True,
                        disable=disable or self.plain,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        # Log lines while the bar shows (a truncated file's warning) printed above it, not into it.
        self.logs = contextlib.nullcontext() if disable or self.plain else logging_redirect_tqdm(tqdm_class=tqdm)
        self.logs.__enter__()
        self.said_s = 0.0
        self._describe()

    def _counts(self) -> str:
        return f"{self.done}/{self.files} files, {self.seconds / 3600:.2f}/{self.total_s / 3600:.2f} h"

    def _describe(self) -> None:
        if self.plain:
            if self.said_s == 0.0 or time.monotonic() - self.said_s >= PLAIN_EVERY_S or self.done == self.files:
                self.said_s = time.monotonic()
                print(f"annotate {self._counts()}", file=sys.stderr, flush=True)
        else:  # in the description: tqdm puts ", " before a postfix, after the bar
            self.bar.set_description_str(f"annotate {self._counts()}", refresh=False)

    def advance(self, seconds: float, files: int = 0) -> None:
        self.done += files
        seconds = min(seconds, self.total_s - self.seconds)  # float sums of the files' parts may pass the total
        self.seconds += seconds
        self._describe()
        self.bar.update(seconds)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self.logs.__exit__(None, None, None)


@dataclass
class Summary:
    completed: int
    failures: list[str]  # one reason per file, naming it
    audio_seconds: float  # of the files completed
    elapsed_s: float

    def line(self, out_dir: Path) -> str:
        speed = (f" ({self.audio_seconds / self.elapsed_s:.0f}x real time)"
                 if self.elapsed_s > 0 and self.audio_seconds else "")
        return (f"annotated {self.completed} file(s), {len(self.failures)} failed, {self.audio_seconds / 3600:.2f} h "
                f"of audio in {self.elapsed_s:.1f} s{speed}; outputs in {out_dir}")


def annotate(engine: Engine, jobs: list[Job], *, readers: int = 1, streaming: bool = False, plot: bool = False,
             progress_bar: bool = True, bar: "_Bar | None" = None) -> Summary:
    """Annotate `jobs`, writing their outputs; a file that fails is reported (stderr) and skipped.
    `bar`: a progress bar to advance (and then left open) instead of one of its own."""
    failures: list[str] = []
    files: list[_Progress] = []
    for job in jobs:  # headers first: the progress bar's total, and early errors
        try:
            rate, channels, frames = audio_info(job.source)
            if channels != engine.num_channels:
                raise SeldError(f"{job.source}: has {channels} channel{'s' * (channels != 1)}, "
                                f"the array needs {engine.num_channels}")
            files.append(_Progress(job, rate, frames))
        except SeldError as error:
            failures.append(str(error))
    own_bar = bar is None
    if own_bar:
        bar = _Bar(len(jobs), sum(f.duration_s for f in files), disable=not progress_bar)
    for failure in failures:
        bar.write(f"skipped: {failure}")
        bar.advance(0.0, files=1)
    started = time.perf_counter()
    completed, audio_seconds = 0, 0.0
    results = None
    try:
        results = (_annotate_streaming_all(engine, files, bar, plot) if streaming
                   else _annotate_all(engine, files, readers, bar, plot))
        for progress, outcome in results:
            if isinstance(outcome, FileOutputs):
                try:
                    outcome.commit(progress.job.source, engine.name, engine.sample_rate,
                                   progress.samples / engine.sample_rate, engine.info.digest)
                except Exception as error:  # a full disk, or a plot that cannot be drawn: this file fails
                    outcome = SeldError(f"{progress.job.source}: cannot write its outputs "
                                        f"({error if isinstance(error, OSError) else f'{type(error).__name__}: {error}'})")
            if isinstance(outcome, SeldError) and progress.outputs is not None:
                progress.outputs.discard()
            progress.outputs = None
            if isinstance(outcome, SeldError):
                failures.append(str(outcome))
                bar.write(f"skipped: {outcome}")
            else:
                completed += 1
                audio_seconds += progress.duration_s
            _report(bar, progress, progress.duration_s, files=1)
    finally:
        if results is not None:  # interrupted: its threads stop before what they opened is discarded
            results.close()
        if own_bar:
            bar.close()
        for progress in files:  # interrupted: leave nothing half-written
            if progress.outputs is not None:
                progress.outputs.discard()
    return Summary(completed, failures, audio_seconds, time.perf_counter() - started)


def annotate_command(args) -> int:
    from seld.annotate_processes import annotate_in_processes, default_processes

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise SeldError(f"--out {out_dir}: exists and is not a folder")
    model_dir = Path(args.model) if args.model else default_model_dir(args.format)
    model = ModelInfo.load(model_dir)
    jobs, problems = find_jobs(args.inputs, out_dir)
    if not args.overwrite:
        jobs, done, others = _left_to_do(jobs, model, args.plot)
        problems += others
        if done:
            print(f"skipping {done} file(s) already annotated (--overwrite redoes them)")
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if jobs:
        check_writable(out_dir)  # before hours of inference, not after
    for job in jobs:  # what a killed run left
        remove_temporaries(job)
    processes = min(args.processes or default_processes(len(jobs)), len(jobs))
    if args.streaming and processes > 1:
        log.warning("--streaming runs in one process: --processes %d not used", processes)
        processes = 1
    if processes > 1:
        summary = annotate_in_processes(model_dir, args.device, jobs, processes, readers=args.workers,
                                        plot=args.plot)
    else:
        engine = Engine(model_dir, args.device, "batch")
        log.info("model %s on %s", engine.name, ", ".join(engine.providers))
        if args.streaming and not engine.causal:
            raise SeldError(f"{engine.model_dir}: --streaming needs a causal model")
        summary = annotate(engine, jobs, readers=args.workers, streaming=args.streaming, plot=args.plot)
    summary.failures[:0] = problems
    print(summary.line(out_dir))
    if summary.failures:
        print(f"{len(summary.failures)} input(s) failed:", file=sys.stderr)
        for failure in summary.failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def _left_to_do(jobs: list[Job], model: ModelInfo, plot: bool) -> tuple[list[Job], int, list[str]]:
    """(jobs to run, how many are done already, problems): a job whose outputs this file and model
    made (with a plot, when one is asked for) is done; one whose outputs another file or model made
    is refused, so that a rerun neither keeps nor overwrites them unasked."""
    left, done, problems = [], 0, []
    for job in jobs:
        made = outputs_made_by(job)
        if made is None:
            if (stray := _stray_output(job, plot)) is None:
                left.append(job)
            else:
                problems.append(f"{job.source}: not annotated: {stray} is there, and seld did not write it for "
                                f"this file; --overwrite replaces it, or give another --out")
            continue
        there = output_path(job.output_stem, ".json")
        if not made:
            problems.append(f"{job.source}: not annotated: {there} is no seld annotation (or cannot be read); "
                            f"--overwrite replaces it, or give another --out")
        elif not _same_file(made, job.source):
            problems.append(f"{job.source}: not annotated: {there} holds the outputs of another file "
                            f"({made.get('path') or made['file']}); --overwrite replaces them, or give another --out")
        elif made["model"] != model.name:
            problems.append(f"{job.source}: not annotated: {there} holds outputs of model {made['model']}, not "
                            f"{model.name}; --overwrite replaces them, or give another --out")
        elif made.get("model_digest", model.digest) != model.digest:
            problems.append(f"{job.source}: not annotated: {there} holds outputs of another package named "
                            f"{model.name} (exported again since, or its seld.json edited); --overwrite replaces "
                            f"them, or give another --out")
        elif plot and not output_path(job.output_stem, ".png").exists():
            left.append(job)
        else:
            done += 1
    return left, done, problems


def _annotate_all(engine: Engine, files: list[_Progress], readers: int, bar: _Bar, plot: bool
                  ) -> Iterator[tuple[_Progress, FileOutputs | SeldError]]:
    """(file, its outputs ready to commit, or its error) as each file is done, offline; the bar
    advances within long files too."""
    with ThreadPoolExecutor(max(readers, 1), thread_name_prefix="seld-read") as pool:
        sources = ((progress, _prefetched(_blocks(engine, progress), pool, progress)) for progress in files)
        for progress, outputs, done in engine.outputs_of_many(sources, loops=len(files)):
            if isinstance(outputs, SeldError):
                if progress.outputs is not None:
                    progress.outputs.discard()
                yield progress, outputs
                continue
            try:
                if progress.failed is None:
                    writer = progress.outputs or _open_outputs(engine, progress, plot)
                    writer.add(engine.decode(outputs, progress.output_frames))
            except (SeldError, OSError) as error:  # its outputs cannot be written: the file fails
                if progress.outputs is not None:
                    progress.outputs.discard()
                progress.outputs = None
                progress.failed = str(error) if isinstance(error, SeldError) else (
                    f"{progress.job.source}: cannot write its outputs ({error})")
            progress.output_frames += len(outputs)
            if done:
                yield progress, progress.outputs if progress.failed is None else SeldError(progress.failed)
            else:
                _report(bar, progress, progress.output_frames * engine.label_hop / engine.sample_rate)


def _annotate_streaming_all(engine: Engine, files: list[_Progress], bar: _Bar, plot: bool
                            ) -> Iterator[tuple[_Progress, FileOutputs | SeldError]]:
    """--streaming: each file through the streaming engine, one file per engine thread, in order.
    A few files ahead at most: each holds its open outputs until its turn comes, so a long file
    with thousands of short ones behind it would run out of file descriptors. The bar advances
    with the files being read; an interrupt stops the files in flight at their next block."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(engine.parallel, thread_name_prefix="seld-stream")
    running: collections.deque = collections.deque()

    def next_done():
        first, result = running.popleft()
        while result not in wait([result], timeout=0.5).done:  # an interrupt is not held up for long
            for progress, _ in [(first, result), *running]:
                _report(bar, progress, progress.samples / engine.sample_rate)
        return first, result.result()

    try:
        for progress in files:
            running.append((progress, pool.submit(_annotate_streaming, engine, progress, plot, stop)))
            if len(running) > STREAMING_AHEAD * engine.parallel:
                yield next_done()
        while running:
            yield next_done()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _report(bar: _Bar, progress: _Progress, seconds: float, files: int = 0) -> None:
    """The bar advanced to `seconds` of this file's audio (at most its length)."""
    seconds = min(seconds, progress.duration_s)
    bar.advance(seconds - progress.reported_s, files=files)
    progress.reported_s = seconds
