"""`seld annotate` in several processes, on machines with many cores.

In one process every engine loop, reader and the thread that decodes, tracks and writes the
outputs share Python's interpreter lock. On a 16-core H200 host that capped a batch near
1,200-1,600x real time however many loops ran (CPU or CUDA): py-spy showed the loops blocked a
third of their time handing outputs to the one writing thread, which held the lock most of the
time, while ~6 of the 16 cores worked. Files dealt to processes, each an engine of its share of
the cores with its own reader and writer, do not share that limit. Machines of few cores keep
one process (nothing to gain, and each process pays its imports and sessions).

Workers stop with the parent: a worker whose parent dies gets SIGTERM (Linux), and SIGTERM in
a worker unwinds `annotate` like Ctrl-C does, so no half-written output stays. A worker that
dies anyway (killed, out of memory) costs only its unfinished files: they are reported as
failed, its temporary files removed, and the other workers finish theirs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import time
import traceback
from pathlib import Path

from seld import SeldError
from seld.annotate import Job, Summary, _Bar, annotate, has_outputs, output_path, remove_temporaries
from seld.audio import audio_info
from seld.engine import Engine, ModelInfo
from seld.interrupts import die_with_parent, sigterm_interrupts

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


class _QueueBar:
    """The progress bar's interface in a worker: its calls go to the parent's bar."""

    def __init__(self, messages) -> None:
        self.messages = messages

    def advance(self, seconds: float, files: int = 0) -> None:
        self.messages.put(("advance", seconds, files))

    def write(self, text: str) -> None:
        self.messages.put(("write", text))


class _BarLogHandler(logging.Handler):
    def __init__(self, messages) -> None:
        super().__init__()
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.put(("write", self.format(record)))
        except Exception:  # logging must not fail the work
            self.handleError(record)


_messages = None  # the worker's queue to the parent


def _stop(signum, frame) -> None:
    if _messages is not None:  # exiting must not wait to hand the parent messages it may never read
        _messages.cancel_join_thread()
    raise SystemExit(128 + signum)  # unwinds annotate(): its partial outputs are discarded


def _worker(index: int, messages, model: str, device: str, cores: int, jobs: list[Job], readers: int, plot: bool,
            log_level: int) -> None:
    global _messages
    _messages = messages
    signal.signal(signal.SIGTERM, _stop)
    die_with_parent()
    handler = _BarLogHandler(messages)  # printed by the parent above its progress bar, not into it
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level, handlers=[handler])
    try:
        engine = Engine(model, device, "batch", cores=cores)
        summary = annotate(engine, jobs, readers=readers, plot=plot, bar=_QueueBar(messages))
        messages.put(("done", index, summary, engine.providers))
    except SeldError as error:
        messages.put(("error", index, str(error)))
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the group: the parent reports it
        messages.put(("interrupted", index))
    except Exception:  # a bug: its traceback goes to the parent
        messages.put(("crash", index, traceback.format_exc()))


# ------------------------------------------------------------------ in the parent


def _durations(jobs: list[Job], channels: int) -> dict[Job, float]:
    """Audio seconds of the jobs the workers will annotate (readable, `channels` channels)."""
    durations = {}
    for job in jobs:
        try:
            rate, file_channels, frames = audio_info(job.source)
        except SeldError:  # the worker reports it
            continue
        if file_channels == channels:
            durations[job] = frames / rate
    return durations


def _stop_workers(workers: list) -> None:
    workers = [worker for worker in workers if worker.pid is not None]  # started ones
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: the worker discards its partial outputs
    for worker in workers:
        worker.join(timeout=10)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _outputs_stamp(job: Job) -> tuple[int, int] | None:
    """The identity of a job's CSV (inode, modification time): outputs put in place (renamed over)
    by this run have another."""
    try:
        csv = output_path(job.output_stem, ".csv").stat()
    except OSError:
        return None
    return csv.st_ino, csv.st_mtime_ns


def _finished(job: Job, before: dict[Job, tuple[int, int] | None]) -> bool:
    """Whether this run wrote the job's outputs (with --overwrite, the last run's are there too)."""
    return has_outputs(job) and _outputs_stamp(job) != before.get(job)


def _lost_files(jobs: list[Job], exitcode: int | None, before: dict[Job, tuple[int, int] | None]) -> list[str]:
    """A dead worker's files it did not finish: reported as failed, their temporary files removed."""
    lost = []
    for job in jobs:
        if _finished(job, before):
            continue
        remove_temporaries(job)
        lost.append(f"{job.source}: not annotated: the worker process annotating it died (exit code {exitcode})")
    return lost


def annotate_in_processes(model: str | Path, device: str, jobs: list[Job], processes: int, *,
                          readers: int = 1, plot: bool = False, progress_bar: bool = True) -> Summary:
    """`annotate` of `jobs` dealt to `processes` worker processes of cores / processes cores each,
    with one progress bar and one summary (failures in the jobs' order)."""
    info = ModelInfo.load(model)  # a bad package: one error here, not one per worker
    parts = split_jobs(jobs, processes)
    cores = max(1, (os.cpu_count() or 1) // len(parts))
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    messages = context.Queue()
    workers = [context.Process(target=_worker, name=f"seld-annotate-{index}", daemon=True,
                               args=(index, messages, str(model), device, cores, part, readers, plot,
                                     logging.getLogger().getEffectiveLevel()))
               for index, part in enumerate(parts)]
    log.info("annotating in %d processes of %d cores each", len(parts), cores)
    durations = _durations(jobs, int(info.data["num_channels"]))
    bar = _Bar(len(jobs), sum(durations.values()), disable=not progress_bar)
    started = time.perf_counter()
    before = {job: _outputs_stamp(job) for job in jobs}  # outputs of an earlier run (--overwrite)
    results: dict[int, tuple] = {}  # worker index -> its last message

    def take(message) -> None:
        if message[0] == "advance":
            bar.advance(message[1], files=message[2])
        elif message[0] == "write":
            bar.write(message[1])
        else:
            results[message[1]] = message

    try:
        with sigterm_interrupts():
            for worker in workers:
                worker.start()
            while len(results) < len(workers):
                try:
                    take(messages.get(timeout=0.2))
                except queue.Empty:
                    ended = [index for index, worker in enumerate(workers)
                             if index not in results and worker.exitcode is not None]
                    try:  # what an ended worker sent is in the pipe by now
                        while True:
                            take(messages.get_nowait())
                    except queue.Empty:
                        pass
                    for index in ended:  # died without a last word
                        results.setdefault(index, ("died", index, workers[index].exitcode))
    except BaseException:
        _stop_workers(workers)
        raise
    finally:
        bar.close()
    _stop_workers(workers)
    summaries, providers = [], set()
    for index, part in enumerate(parts):
        kind, _, *rest = results[index]
        if kind == "done":
            summaries.append(rest[0])
            providers.add(", ".join(rest[1]))
        elif kind == "error":
            raise SeldError(rest[0])
        elif kind == "interrupted":
            raise KeyboardInterrupt
        elif kind == "crash":
            raise RuntimeError(f"a seld annotate worker failed:\n{rest[0]}")
        else:  # died: what it finished stands
            done = [job for job in part if _finished(job, before)]
            summaries.append(Summary(len(done), _lost_files(part, rest[0], before),
                                     sum(durations.get(job, 0.0) for job in done), 0.0))
    log.info("model %s on %s", info.data.get("name", model), " / ".join(sorted(providers)))
    order = {str(job.source): index for index, job in enumerate(jobs)}

    def job_index(failure: str) -> int:  # failures begin "SOURCE: "; a source may hold ": " too
        at = failure.find(": ")
        while at >= 0 and failure[:at] not in order:
            at = failure.find(": ", at + 1)
        return order[failure[:at]] if at >= 0 else len(jobs)

    failures = sorted((f for s in summaries for f in s.failures), key=job_index)
    return Summary(sum(s.completed for s in summaries), failures, sum(s.audio_seconds for s in summaries),
                   time.perf_counter() - started)
