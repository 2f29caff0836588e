"""`seld annotate` in several processes, on machines with many cores.

In one process every engine loop, reader and the thread that decodes, tracks and writes the
outputs share Python's interpreter lock. On a 16-core H200 host that capped a batch near
1,200-1,600x real time however many loops ran (CPU or CUDA): py-spy showed the loops blocked a
third of their time handing outputs to the one writing thread, which held the lock most of the
time, while ~6 of the 16 cores worked. Files dealt to processes, each an engine of its share of
the cores with its own reader and writer, do not share that limit. Machines of few cores keep
one process (nothing to gain, and each process pays its imports and sessions).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from seld import SeldError
from seld.annotate import Job, Summary, _Bar, annotate
from seld.audio import audio_info
from seld.engine import Engine

log = logging.getLogger(__name__)

PROCESS_CORES = 4  # cores per process when a machine has at least two processes' worth


def default_processes(jobs: int, cores: int | None = None) -> int:
    """One process per PROCESS_CORES cores (no more than there are files); one below 2 x PROCESS_CORES."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(jobs, cores // PROCESS_CORES)) if cores >= 2 * PROCESS_CORES else 1


def _size(job: Job) -> int:
    try:
        return job.source.stat().st_size
    except OSError:  # reported by the process that gets it
        return 0


def split_jobs(jobs: list[Job], parts: int) -> list[list[Job]]:
    """`jobs` dealt into at most `parts` groups of about equal bytes: largest file first, each to
    the lightest group; each group keeps the jobs' given order."""
    order = {job: index for index, job in enumerate(jobs)}
    groups: list[list[Job]] = [[] for _ in range(max(1, parts))]
    loads = [0] * len(groups)
    for job in sorted(jobs, key=_size, reverse=True):
        lightest = loads.index(min(loads))
        groups[lightest].append(job)
        loads[lightest] += _size(job)
    return [sorted(group, key=order.__getitem__) for group in groups if group]


# ------------------------------------------------------------------ in a worker process

_progress: "multiprocessing.Queue | None" = None


def _initialize(progress) -> None:
    global _progress
    _progress = progress


class _QueueBar:
    """The progress bar's interface in a worker: its calls go to the parent's bar."""

    def advance(self, seconds: float, files: int = 0) -> None:
        _progress.put(("advance", seconds, files))

    def write(self, text: str) -> None:
        _progress.put(("write", text))


def _annotate_part(model: str, device: str, cores: int, jobs: list[Job], readers: int,
                   plot: bool) -> tuple[Summary, list[str]]:
    engine = Engine(model, device, "batch", cores=cores)
    return annotate(engine, jobs, readers=readers, plot=plot, bar=_QueueBar()), engine.providers


# ------------------------------------------------------------------ in the parent


def _total_seconds(jobs: list[Job]) -> float:
    total = 0.0
    for job in jobs:
        try:
            rate, _, frames = audio_info(job.source)
            total += frames / rate
        except SeldError:  # the worker reports it
            pass
    return total


def annotate_in_processes(model: str | Path, device: str, jobs: list[Job], processes: int, *,
                          readers: int = 1, plot: bool = False, progress_bar: bool = True) -> Summary:
    """`annotate` of `jobs` dealt to `processes` worker processes of cores / processes cores each,
    with one progress bar and one summary."""
    parts = split_jobs(jobs, processes)
    cores = max(1, (os.cpu_count() or 1) // len(parts))
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    progress = context.Queue()
    bar = _Bar(len(jobs), _total_seconds(jobs), disable=not progress_bar)
    started = time.perf_counter()

    def show(timeout: float) -> None:
        try:
            message = progress.get(timeout=timeout)
            while True:
                if message[0] == "advance":
                    bar.advance(message[1], files=message[2])
                else:
                    bar.write(message[1])
                message = progress.get_nowait()
        except queue.Empty:
            pass

    log.info("annotating in %d processes of %d cores each", len(parts), cores)
    try:
        with ProcessPoolExecutor(len(parts), mp_context=context, initializer=_initialize,
                                 initargs=(progress,)) as pool:
            futures = [pool.submit(_annotate_part, str(model), device, cores, part, readers, plot) for part in parts]
            while not all(future.done() for future in futures):
                show(0.1)
            results = [future.result() for future in futures]
        show(0.0)  # the workers have exited: what they sent is all there
    except BrokenProcessPool as error:
        raise SeldError(f"seld annotate: a worker process died ({error}); rerun to finish the files it had") from None
    finally:
        bar.close()
    log.info("model %s on %s", model, ", ".join(results[0][1]))
    summaries = [summary for summary, _ in results]
    return Summary(sum(s.completed for s in summaries), [f for s in summaries for f in s.failures],
                   sum(s.audio_seconds for s in summaries), time.perf_counter() - started)
