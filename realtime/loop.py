"""The engine thread: blocks from the capture queue -> record -> resample -> streaming
session -> label frames, timestamped, handed to the displays.

Latency is measured from the arrival of the block that holds a label frame's last
sample (the audio callback's clock) to the moment the streaming session has emitted
that frame, so it covers queueing, resampling (its filter waits for a few samples
after the frame) and inference, the whole delay the program adds.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import Protocol

import numpy as np

from seld.audio import StreamingResampler
from seld.realtime.capture import BlockQueue

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often an idle engine thread looks up (stall warnings, display ticks)
STALL_S = 2.0  # no audio for this long is reported


class Display(Protocol):
    def frame(self, frame: dict, stats: dict) -> None: ...
    def idle(self, stats: dict) -> None: ...
    def close(self, stats: dict) -> None: ...


class Latencies:
    """The latest latencies (seconds) in a fixed ring, so a long run's memory stays flat."""

    def __init__(self, capacity: int = 36_000):  # one hour of 100 ms frames
        self.values = np.zeros(capacity, np.float64)
        self.count = 0
        self.last: float | None = None

    def add(self, seconds: float) -> None:
        self.values[self.count % len(self.values)] = seconds
        self.count += 1
        self.last = seconds

    def percentile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        return float(np.percentile(self.values[: min(self.count, len(self.values))], q))


class LiveLoop:
    """Runs `engine.stream()` on the blocks of `blocks` in a thread of its own."""

    def __init__(self, engine, source, blocks: BlockQueue, displays: list[Display], recorder=None):
        self.engine = engine
        self.source = source
        self.blocks = blocks
        self.displays = displays
        self.recorder = recorder
        self.stream = engine.stream()
        self.label_hop = int(getattr(engine, "label_hop", round(engine.sample_rate * 0.1)))
        channels = len(source.channels)
        self.resampler = (None if source.rate == engine.sample_rate
                          else StreamingResampler(source.rate, engine.sample_rate, channels))
        self.latencies = Latencies()
        self.frames = 0
        self.input_samples = 0  # at the source's rate
        self.pending: collections.deque[tuple[int, float]] = collections.deque()  # (input end, arrival)
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.last_arrival = self.started
        self.stalled = False
        self.reported_overflows = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="seld-engine", daemon=True)

    def start(self) -> None:
        self.started = self.last_arrival = time.monotonic()
        self.thread.start()

    # An Event, not Thread.join: in Python 3.11 a KeyboardInterrupt that lands inside
    # Thread.join can leave a running thread marked as stopped (the bpo-45274 handling
    # releases the thread's own lock), and the process would then exit under it.
    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish; True once it has."""
        return self.done.wait(timeout)

    def is_alive(self) -> bool:
        return not self.done.is_set()

    def stats(self) -> dict:
        def ms(value):
            return None if value is None else round(value * 1000, 2)

        return {
            "frames": self.frames,
            "latency_ms": ms(self.latencies.last),
            "latency_p50_ms": ms(self.latencies.percentile(50)),
            "latency_p99_ms": ms(self.latencies.percentile(99)),
            "overflows": self.blocks.overflows,
            "input_overflows": self.blocks.input_overflows,
            "dropped_blocks": self.blocks.dropped_blocks,
            "provider": ", ".join(getattr(self.engine, "providers", []) or ["?"]),
            "source": self.source.name,
            "source_rate": self.source.rate,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "stalled": self.stalled,
        }

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self.blocks.get(timeout=POLL_S)
                except EOFError:
                    break
                if item is None:
                    self._idle()
                    continue
                self._block(*item)
            self._finish()
        except BaseException as error:  # handed to the main thread, which ends cleanly
            self.error = error
        finally:
            self.done.set()

    def _block(self, block: np.ndarray, arrival: float) -> None:
        self.last_arrival = arrival
        if self.stalled:
            self.stalled = False
            log.info("%s: audio resumed", self.source.name)
        if self.recorder is not None:
            self.recorder.write(block)
        self.input_samples += block.shape[1]
        self.pending.append((self.input_samples, arrival))
        audio = block if self.resampler is None else self.resampler.push(block)
        frames = self.stream.push(audio)
        if frames:
            self._emit(frames, time.monotonic())
        if self.blocks.overflows != self.reported_overflows:
            self._report_overflows()

    def _emit(self, frames, now: float | None) -> None:
        for frame in frames:
            if now is not None:
                self.latencies.add(now - self._arrival_of(frame.frame))
            self.frames += 1
            data = frame.to_json()
            stats = self.stats()
            for display in self.displays:
                display.frame(data, stats)

    def _arrival_of(self, frame: int) -> float:
        """Arrival time of the block that holds label frame `frame`'s last sample."""
        last_model_sample = (frame + 1) * self.label_hop
        needed = math.ceil(last_model_sample * self.source.rate / self.engine.sample_rate)
        while len(self.pending) > 1 and self.pending[0][0] < needed:
            self.pending.popleft()
        return self.pending[0][1]

    def _idle(self) -> None:
        silent = time.monotonic() - self.last_arrival
        if silent > STALL_S and not self.stalled:
            self.stalled = True
            log.warning("%s: no audio for %.0f s", self.source.name, silent)
        stats = self.stats()
        for display in self.displays:
            display.idle(stats)

    def _report_overflows(self) -> None:
        if self.reported_overflows == 0:
            log.warning("%s: input overflow (audio was lost; counted in the stats)", self.source.name)
        self.reported_overflows = self.blocks.overflows

    def _finish(self) -> None:
        """End of input: the resampler's tail and the stream's last partial frame."""
        if self.resampler is not None:
            tail = self.resampler.flush()
            if tail.shape[1]:
                frames = self.stream.push(tail)
                if frames:
                    self._emit(frames, None)
        frames = self.stream.flush()
        if frames:
            self._emit(frames, None)
