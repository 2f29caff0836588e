"""Audio I/O: read any file soundfile reads as float32 [channels, samples], whole or in
blocks, resampled to the wanted rate; write whole-or-nothing.

The DCASE framing constants live here because every part shares them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile

from seld import SeldError
from seld.atomic import atomic_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
HOP = 480  # 20 ms STFT hop
LABEL_HOP = 2_400  # 100 ms label frame = 5 hops
FLOAT_PEAK_WARNING = 4.0  # float samples beyond this are said (a little over 1 is ordinary clipping headroom)
_SAID_PEAK: set[Path] = set()
MIN_RATE, MAX_RATE = 1_000, 768_000  # sample rates a recording can plausibly have
# resample_poly's default filter half-length is 10 * max(up, down) samples at the upsampled rate.
_HALF_LENGTH_FACTOR = 10


def _resample_poly(audio: np.ndarray, up: int, down: int) -> np.ndarray:
    # Imported on first use: scipy.signal pulls in scipy.stats, ~0.7 s at every start of
    # `seld annotate` and `seld live`, which resample only for files at other rates.
    from scipy.signal import resample_poly

    return resample_poly(audio, up, down, axis=-1).astype(np.float32)


def _open(path: Path) -> soundfile.SoundFile:
    if not path.exists():
        raise SeldError(f"{path}: no such file")
    if path.is_dir():
        raise SeldError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise SeldError(f"{path}: empty file (0 bytes)")
    try:
        handle = soundfile.SoundFile(os.fsencode(path))  # bytes: a name that is not UTF-8 opens too
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise SeldError(f"{path}: not a readable audio file ({_libsndfile_reason(error)})") from None
    if handle.frames == 0:
        handle.close()
        raise SeldError(f"{path}: contains no samples")
    if not MIN_RATE <= handle.samplerate <= MAX_RATE:  # a corrupt header; resampling from it would not end
        handle.close()
        raise SeldError(f"{path}: implausible sample rate {handle.samplerate} Hz (a corrupt header?)")
    return handle


# libsndfile reads a truncated file up to where its data ends and says so only in its log: a data
# chunk whose size exceeds what the file holds ("data : 960000 (should be 479978)"), or an Ogg
# stream without its end-of-stream page. Sizes 0 and 0xFFFFFFFF are a recorder's placeholders.
_DATA_CHUNK = re.compile(r"^\s*(?:data|SSND) : (\d+) \(should be (\d+)\)", re.MULTILINE)
_BYTES_PER_SAMPLE = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def truncation(handle: soundfile.SoundFile) -> str | None:
    """What a file's header promises that its data does not hold, or None."""
    try:
        info = handle.extra_info
    except Exception:  # noqa: BLE001 - a libsndfile without its log: nothing to say
        return None
    held = f"the file holds {handle.frames / handle.samplerate:.1f} s"
    for declared, actual in _DATA_CHUNK.findall(info):
        declared, actual = int(declared), int(actual)
        if declared > actual and declared not in (0, 0xFFFFFFFF):
            width = _BYTES_PER_SAMPLE.get(handle.subtype)
            if width is None:
                return f"its header promises more audio than {held}"
            return f"its header promises {declared / (width * handle.channels * handle.samplerate):.1f} s, {held}"
    if "Last page lacks an end-of-stream bit" in info:
        return f"its Ogg stream breaks off without its last page; {held}"
    return None


def _libsndfile_reason(error: Exception) -> str:
    text = str(error)
    return text.split(": ", 1)[-1] if ": " in text else text or type(error).__name__


def _check_channels(path: Path, found: int, wanted: int | None) -> None:
    if wanted is not None and found != wanted:
        raise SeldError(f"{path}: has {found} channels, the array needs {wanted}")


def first_non_finite(block: np.ndarray) -> int | None:
    """The first sample of `block` [channels, n] that is NaN or infinite in some channel, or None.
    One summing pass finds any (they propagate through a sum); only then the exact search. (A sum of
    huge finite samples overflows: the exact search says so, without numpy's overflow warning.)"""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(block, axis=None)) or np.isfinite(block).all():
            return None
    return int(np.argmax(~np.isfinite(block).all(axis=0)))


def check_finite(path: Path, block: np.ndarray, offset: int, rate: int) -> None:
    """`block` [channels, n]: an error at its first sample that is NaN or infinite."""
    if (where := first_non_finite(block)) is not None:
        raise SeldError(f"{path}: NaN or Inf samples (first at {(offset + where) / rate:.3f} s)")


# Integer files read as integers and scaled here: the same float32 values as libsndfile's own
# conversion (tested), in half the time (a 60 s 4-channel PCM-16 file: 10 against 22 ms here),
# and integers need no NaN check. libsndfile hands 24-bit samples over left-aligned in int32.
_INTEGER_READS = {"PCM_16": ("int16", 2.0 ** -15), "PCM_24": ("int32", 2.0 ** -31), "PCM_32": ("int32", 2.0 ** -31)}


def _read_block(handle: soundfile.SoundFile, frames: int) -> tuple[np.ndarray, bool]:
    """(up to `frames` frames of `handle` as float32 [channels, n], contiguous; whether they came
    from integers, so are finite)."""
    integer = _INTEGER_READS.get(handle.subtype)
    if integer is None:
        return np.ascontiguousarray(handle.read(frames, dtype="float32", always_2d=True).T), False
    dtype, scale = integer
    samples = handle.read(frames, dtype=dtype, always_2d=True)
    block = np.empty(samples.shape[::-1], np.float32)
    np.multiply(samples.T, np.float32(scale), out=block, dtype=np.float32)  # float32 math: int32 rounds once
    return block, True


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(sample rate, channels, frames) of a file, with the same errors as reading it."""
    path = Path(path)
    with _open(path) as handle:
        return handle.samplerate, handle.channels, handle.frames


def read_audio(
    path: str | Path, sample_rate: int | None = SAMPLE_RATE, channels: int | None = None
) -> tuple[np.ndarray, int]:
    """(audio, rate): the whole file as float32 [channels, samples] at `sample_rate` (None: the
    file's own rate, returned as `rate`)."""
    blocks = list(iter_audio_blocks(path, sample_rate=sample_rate, channels=channels, block_samples=1 << 20))
    audio = np.concatenate(blocks, axis=1)
    return audio, sample_rate or audio_info(path)[0]


def iter_audio_blocks(
    path: str | Path,
    sample_rate: int | None = SAMPLE_RATE,
    channels: int | None = None,
    block_samples: int = 240_000,
) -> Iterator[np.ndarray]:
    """Yield float32 [channels, n] blocks at `sample_rate`, resampled block-wise so that the
    concatenation equals resampling the whole file. Errors name the file."""
    path = Path(path)
    if block_samples < 1:
        raise ValueError(f"block_samples must be at least 1, not {block_samples}")
    handle = _open(path)
    with handle:
        _check_channels(path, handle.channels, channels)
        if (missing := truncation(handle)) is not None:
            log.warning("%s: truncated (%s): reading what is there", path, missing)
        rate = handle.samplerate
        resampler = None if sample_rate in (None, rate) else StreamingResampler(rate, sample_rate, handle.channels)
        offset, warned_scale = 0, False
        while True:
            try:
                block, from_integers = _read_block(handle, block_samples)
            except (soundfile.LibsndfileError, RuntimeError) as error:
                raise SeldError(f"{path}: corrupt audio data ({_libsndfile_reason(error)})") from None
            if block.shape[1] == 0:
                break
            if not from_integers:
                check_finite(path, block, offset, rate)
                if not warned_scale and (peak := max(float(block.max()), -float(block.min()))) > FLOAT_PEAK_WARNING:
                    warned_scale = True  # float audio runs from -1 to 1: the model would hear it clipped
                    if path not in _SAID_PEAK:  # once a process (training validates a file every epoch)
                        _SAID_PEAK.add(path)
                        log.warning("%s: float samples up to %.0f, where audio runs from -1 to 1 (integer samples "
                                    "saved as floats?); read as they are", path, peak)
            offset += block.shape[1]
            if resampler is None:
                yield block
            else:
                out = resampler.push(block)
                if out.shape[1]:
                    yield out
        if resampler is not None:
            tail = resampler.flush()
            if tail.shape[1]:
                yield tail
        if offset == 0:
            raise SeldError(f"{path}: contains no samples")


class StreamingResampler:
    """Polyphase resampling of a stream in blocks of any size, equal to
    ``scipy.signal.resample_poly`` of the whole signal (zeros beyond both ends).

    Output sample n needs the input within the filter's half length of n * down / up;
    each push resamples the buffered input and emits only outputs whose support is
    complete, keeping just enough history for the next ones.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int):
        ratio = Fraction(rate_out, rate_in)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.margin = math.ceil(_HALF_LENGTH_FACTOR * max(self.up, self.down) / self.up) + 2
        self.buffer = np.zeros((channels, 0), np.float32)
        self.buffer_start = 0  # input index of buffer[:, 0]; always a multiple of `down`
        self.next_output = 0
        self.total_input = 0
        # scipy.signal now, before the audio flows: imported at the first push, it held a live
        # stream's first block ~1 s (the frames after it then came in a burst).
        import scipy.signal  # noqa: F401

    def _resample_buffer(self) -> np.ndarray:
        return _resample_poly(self.buffer, self.up, self.down)

    def _emit(self, last_output: int) -> np.ndarray:
        if last_output < self.next_output:
            return np.zeros((self.buffer.shape[0], 0), np.float32)
        first_in_buffer = self.buffer_start * self.up // self.down
        out = self._resample_buffer()[:, self.next_output - first_in_buffer : last_output + 1 - first_in_buffer]
        self.next_output = last_output + 1
        return out

    def push(self, block: np.ndarray) -> np.ndarray:
        """Feed [channels, n] input; returns the output samples now complete."""
        self.buffer = np.concatenate([self.buffer, block.astype(np.float32, copy=False)], axis=1)
        self.total_input += block.shape[1]
        complete_input = self.total_input - 1 - self.margin
        out = self._emit(math.floor(complete_input * self.up / self.down) if complete_input >= 0 else -1)
        # Drop history no future output needs, keeping the buffer start on the polyphase grid.
        keep_from = max(0, self.next_output * self.down // self.up - self.margin)
        keep_from -= keep_from % self.down
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[:, keep_from - self.buffer_start :]
            self.buffer_start = keep_from
        return out

    def flush(self) -> np.ndarray:
        """The remaining output at the end of the stream."""
        return self._emit(math.ceil(self.total_input * self.up / self.down) - 1)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Write [channels, samples] whole-or-nothing: a temporary file in the same folder, then rename."""
    path = Path(path)
    audio = np.asarray(audio)
    if audio.ndim != 2 or audio.shape[0] > 256:  # [samples, channels] had libsndfile say "Format not recognised"
        raise SeldError(f"{path}: audio of shape {list(audio.shape)}: write_audio takes [channels, samples]")
    if audio.dtype.kind == "f" and not np.isfinite(audio).all():  # PCM would hold NaN as -1 without a word
        raise SeldError(f"{path}: not written: the audio has NaN or infinite samples")
    try:
        with atomic_path(path) as temporary:
            soundfile.write(temporary, audio.T, sample_rate, subtype=subtype, format=_format_of(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        # libsndfile says only "System error." when the disk is full.
        reason = "no space left on the device" if _nearly_full(path.parent) else (
            getattr(error, "strerror", None) or str(error).strip())
        raise SeldError(f"{path}: cannot write it ({reason})") from None


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 16 << 20
    except OSError:
        return False


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(suffix, "WAV")
