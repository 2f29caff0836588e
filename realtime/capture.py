"""Audio in for the live demo: a sounddevice input stream or a recording played at real
speed, both feeding one bounded queue of preallocated blocks; and the raw-input recorder.

The audio callback does nothing but copy the block into a free slot of the queue and
count overflows: no allocation beyond that copy, no lock held, no printing, no
inference. Everything else happens in the engine thread (seld.realtime.loop).
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from seld import SeldError

log = logging.getLogger(__name__)

BLOCK_S = 0.02  # one callback's worth of audio: 20 ms (the engine re-chunks it; any size would do)
QUEUE_S = 2.0  # audio the queue holds before it drops blocks (the engine fell behind, or a burst came)
PORTAUDIO_HINT = (
    "PortAudio is not installed, so no audio device can be opened; install it "
    "(Debian/Ubuntu: sudo apt-get install libportaudio2; Fedora: sudo dnf install portaudio; "
    "macOS: brew install portaudio), or give seld live a recording with --input FILE.wav"
)


class PortAudioMissing(SeldError):
    """sounddevice cannot load the PortAudio library."""


def import_sounddevice():
    """sounddevice, imported only on the live path: it fails at import without PortAudio."""
    try:
        import sounddevice
    except OSError as error:  # sounddevice raises OSError('PortAudio library not found')
        raise PortAudioMissing(f"{PORTAUDIO_HINT} ({error})") from None
    except ImportError:
        raise PortAudioMissing("the Python package sounddevice is not installed: pip install sounddevice") from None
    return sounddevice


def parse_channels(text: str | None, needed: int) -> list[int] | None:
    """`--channels 1,2,3,4` (1-based) as 0-based indices, or None for the first `needed`."""
    if text is None:
        return None
    try:
        channels = [int(part) - 1 for part in text.split(",") if part.strip()]
    except ValueError:
        raise SeldError(f"--channels {text}: expected 1-based channel numbers such as 1,2,3,4") from None
    if len(channels) != needed:
        raise SeldError(f"--channels {text}: names {len(channels)} channels, the model's array has {needed}")
    if min(channels) < 0:
        raise SeldError(f"--channels {text}: channel numbers start at 1")
    if len(set(channels)) != len(channels):
        raise SeldError(f"--channels {text}: a channel is named twice")
    return channels


def select_channels(selection: list[int] | None, available: int, needed: int, what: str) -> list[int]:
    """The 0-based source channels that become the model's channels, checked against `what`."""
    if selection is None:
        if available < needed:
            raise SeldError(f"{what}: has {available} channel{'s' * (available != 1)}, the model's array needs {needed}")
        if available > needed:
            log.info("%s: has %d channels; using 1-%d (pick others with --channels)", what, available, needed)
        return list(range(needed))
    if max(selection) >= available:
        raise SeldError(f"{what}: has {available} channel{'s' * (available != 1)}, --channels asks for channel "
                        f"{max(selection) + 1}")
    return selection


class BlockQueue:
    """A bounded single-producer, single-consumer queue of audio blocks in preallocated slots.

    `put` (the audio callback's side) copies the selected channels of one block into the
    next free slot, never blocks and never allocates; when no slot is free it drops the
    block and counts it. `get` (the engine thread's side) waits for the next block and
    returns a copy, so the slot is free again at once, with the samples dropped before it
    as silence in front: the stream's clock and a recording keep real time across a loss.
    """

    END = -1

    def __init__(self, channels: list[int], block_samples: int, capacity_blocks: int):
        self.channels = list(channels)
        self.block_samples = block_samples
        self.slots = capacity_blocks
        self.buffers = np.zeros((capacity_blocks, len(channels), block_samples), np.float32)
        self.lengths = np.zeros(capacity_blocks, np.int64)
        self.arrivals = np.zeros(capacity_blocks, np.float64)
        self.gaps = np.zeros(capacity_blocks, np.int64)  # samples dropped just before each slot's block
        self.unplaced_gap = 0  # dropped samples not yet in front of a slot
        self.written = 0  # only the producer writes this
        self.read = 0  # only the consumer writes this
        self.ready: queue.SimpleQueue[int] = queue.SimpleQueue()  # slot numbers; put never blocks
        self.input_overflows = 0  # the device says it lost input (status.input_overflow)
        self.dropped_blocks = 0  # the queue was full: the engine fell behind, or the device sent a burst
        self.dropped_samples = 0

    @property
    def overflows(self) -> int:
        return self.input_overflows + self.dropped_blocks

    def put(self, block: np.ndarray, arrival: float) -> None:
        """Copy `block` [frames, source channels] in; called from the audio callback."""
        start = 0
        frames = block.shape[0]
        while start < frames:  # a device block never exceeds a slot; a longer one is split
            count = min(self.block_samples, frames - start)
            if self.written - self.read >= self.slots:
                self.dropped_blocks += 1
                self.dropped_samples += count
                self.unplaced_gap += count
            else:
                slot = self.written % self.slots
                target = self.buffers[slot]
                for row, channel in enumerate(self.channels):
                    target[row, :count] = block[start : start + count, channel]
                self.lengths[slot] = count
                self.arrivals[slot] = arrival
                self.gaps[slot], self.unplaced_gap = self.unplaced_gap, 0
                self.written += 1
                self.ready.put(slot)
            start += count

    def close(self) -> None:
        """No more blocks (the producer has stopped): wakes the consumer, which gets the blocks still
        queued, then the samples dropped after the last of them as silence, then END."""
        self.ready.put(self.END)

    def get(self, timeout: float) -> tuple[np.ndarray, float] | None:
        """The next block [channels, n] and its arrival time (time.monotonic()); None on timeout.
        Raises EOFError after `close`."""
        try:
            slot = self.ready.get(timeout=timeout)
        except queue.Empty:
            return None
        if slot == self.END:
            self.ready.put(self.END)  # stay closed for later calls
            if self.unplaced_gap:  # lost just before the end: silence, so a recording keeps real time
                gap, self.unplaced_gap = self.unplaced_gap, 0
                return np.zeros((len(self.channels), gap), np.float32), time.monotonic()
            raise EOFError
        gap, length = int(self.gaps[slot]), int(self.lengths[slot])
        block = np.zeros((len(self.channels), gap + length), np.float32)
        block[:, gap:] = self.buffers[slot, :, :length]
        arrival = float(self.arrivals[slot])
        self.read += 1
        return block, arrival


class DeviceSource:
    """A sounddevice InputStream on one input device, at the model's rate when the device
    runs it (else the device's default rate, resampled in the engine thread)."""

    kind = "device"

    def __init__(self, device: str | None, needed_channels: int, selection: list[int] | None, sample_rate: int):
        self.sd = import_sounddevice()
        from seld.realtime.devices import resolve_device

        self.index = resolve_device(self.sd, device)
        info = self.sd.query_devices(self.index)
        self.name = f"device {self.index} ({info['name']})"
        self.channels = select_channels(selection, int(info["max_input_channels"]), needed_channels, self.name)
        self.open_channels = max(self.channels) + 1  # PortAudio opens channels 1..n; the callback picks
        self.rate = sample_rate if self._runs_at(sample_rate) else int(info["default_samplerate"])
        if self.rate != sample_rate:
            if not self._runs_at(self.rate):
                raise SeldError(f"{self.name}: cannot capture {self.open_channels} channels at {sample_rate} Hz "
                                f"nor at its default {self.rate} Hz")
            log.info("%s: does not run at %d Hz; capturing at %d Hz and resampling", self.name, sample_rate, self.rate)
        self.stream = None
        self.failure: str | None = None
        self._stopping = False

    def _runs_at(self, rate: int) -> bool:
        try:
            self.sd.check_input_settings(self.index, channels=self.open_channels, dtype="float32", samplerate=rate)
            return True
        except Exception as error:  # sounddevice raises PortAudioError or ValueError
            log.debug("%s: %d channels at %d Hz: %s", self.name, self.open_channels, rate, error)
            return False

    def start(self, blocks: BlockQueue) -> None:
        def callback(indata, frames, time_info, status):
            if status.input_overflow:
                blocks.input_overflows += 1
            blocks.put(indata, time.monotonic())

        def finished():
            if not self._stopping:
                self.failure = f"{self.name}: the input stream stopped (device lost or disconnected)"
                blocks.close()

        try:
            self.stream = self.sd.InputStream(
                device=self.index, channels=self.open_channels, samplerate=self.rate, dtype="float32",
                blocksize=int(round(self.rate * BLOCK_S)), latency="low", callback=callback,
                finished_callback=finished,
            )
            self.stream.start()
        except Exception as error:  # PortAudioError, or ValueError for settings it refuses
            raise SeldError(f"{self.name}: cannot open an input stream ({error})") from None
        log.info("%s: capturing %d channels at %d Hz", self.name, len(self.channels), self.rate)

    def stop(self) -> None:
        self._stopping = True
        if self.stream is not None:
            # abort, not stop: stop waits for the device's pending buffers, which a device that has
            # gone silent (suspended, a hung USB microphone) never delivers: 40 s, under PulseAudio.
            for step in (self.stream.abort, self.stream.close):  # close even when abort fails
                try:
                    step()
                except Exception as error:  # a lost device may refuse; nothing is left to save
                    log.debug("%s: %s the stream: %s", self.name, step.__name__, error)
            self.stream = None


class FileSource:
    """A recording played through the same queue at real speed, as if a device captured it."""

    kind = "file"

    def __init__(self, path: str | Path, needed_channels: int, selection: list[int] | None):
        from seld.audio import audio_info

        self.path = Path(path)
        self.name = str(self.path)
        self.rate, available, self.frames = audio_info(self.path)
        self.channels = select_channels(selection, available, needed_channels, self.name)
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, blocks: BlockQueue) -> None:
        self._thread = threading.Thread(target=self._play, args=(blocks,), name="seld-file-source", daemon=True)
        self._thread.start()

    def _play(self, blocks: BlockQueue) -> None:
        from seld.audio import iter_audio_blocks

        # seld annotate's reader: the same checks (non-finite samples, corrupt data) and messages.
        audio = iter_audio_blocks(self.path, sample_rate=None, block_samples=blocks.block_samples)
        try:
            start = time.monotonic()
            played = 0
            while not self._stop.is_set():
                block = next(audio, None)  # [channels, n]
                if block is None:
                    break
                played += block.shape[1]
                # A block "arrives" when its last sample would have been captured.
                delay = start + played / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                blocks.put(block.T, time.monotonic())
        except SeldError as error:
            self.failure = str(error)
        except Exception as error:  # the reader thread must not die with the run going on as if the file ended
            self.failure = f"{self.path}: reading it failed ({type(error).__name__}: {error})"
        finally:
            audio.close()
            blocks.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class Recorder:
    """The raw input, streamed to a temporary file beside FILE and renamed to FILE when
    closed, so FILE is whole or absent. 32-bit float WAV at the capture rate."""

    WAV_LIMIT_BYTES = (1 << 32) - (1 << 20)  # RIFF sizes are 32-bit

    def __init__(self, path: str | Path, sample_rate: int, channels: int):
        self.path = Path(path)
        if self.path.is_dir():
            raise SeldError(f"--record {self.path}: is a folder, not a file name")
        if not self.path.parent.is_dir():
            raise SeldError(f"--record {self.path}: folder {self.path.parent} does not exist")
        if self.path.suffix.lower() != ".wav":
            raise SeldError(f"--record {self.path}: the recording is written as WAV; name it FILE.wav")
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as error:
            raise SeldError(f"--record {self.path}: cannot write in {self.path.parent} ({error.strerror})") from None
        os.close(descriptor)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
        self.temporary = Path(temporary)
        self.sample_rate = sample_rate
        self.channels = channels
        self.samples = 0
        self.full = False
        self.handle = soundfile.SoundFile(temporary, "w", sample_rate, channels, subtype="FLOAT", format="WAV")

    def write(self, block: np.ndarray) -> None:
        """Append [channels, n]; past the WAV size limit the recording stops, with a warning."""
        if self.full or self.handle is None:
            return
        if (self.samples + block.shape[1]) * self.channels * 4 > self.WAV_LIMIT_BYTES:
            self.full = True
            log.warning("%s: reached the 4 GiB WAV limit; recording stopped there", self.path)
            return
        try:
            self.handle.write(block.T)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            self.discard()
            raise SeldError(f"--record {self.path}: writing failed ({error}); nothing was saved") from None
        self.samples += block.shape[1]

    def close(self) -> Path | None:
        """Finalize and rename; returns the path, or None when nothing was recorded."""
        if self.handle is None:
            return None
        try:
            self.handle.close()
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            self.handle = None
            self.discard()
            raise SeldError(f"--record {self.path}: finishing the file failed ({error}); nothing was saved") from None
        self.handle = None
        if self.samples == 0:
            self.temporary.unlink(missing_ok=True)
            return None
        os.replace(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except Exception:  # the file is being thrown away
                pass
            self.handle = None
        self.temporary.unlink(missing_ok=True)
