"""The front ends' configuration and their host side: causal framing and rFFT in numpy/scipy.

Everything here is torch-free, so the inference engine can compute the exact spectrum a
spectrum-input graph expects (a host rFFT feeding the graph is the fastest
inference path) and know every feature shape without importing torch.

Framing: STFT frame t covers samples [(t + 1) hop - window,
(t + 1) hop), zeros before the start, so a signal of N samples has N // hop frames and there
is no look-ahead. The periodic Hann window sits in the middle of the FFT buffer, as
``librosa.stft`` places it, so frame t equals librosa's ``center=True`` frame t (zero padding)
bin for bin, phases included. A stream carries the last ``window - hop`` samples of each
channel as its state.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import scipy.fft

from seld import SeldError
from seld.config import from_dict, to_dict

FRONT_END_NAMES = ("stft", "foa_logmel_iv", "mic_logmel_gcc", "mic_salsa_lite")
_BLOCK_ROWS = 512  # frames x channels per host FFT block: the working set stays in L2


@dataclass(frozen=True)
class FeatureConfig:
    """One front end and all its parameters; `to_dict()` goes into checkpoints and seld.json."""

    name: str = "foa_logmel_iv"
    sample_rate: int = 24_000
    hop: int = 480  # 20 ms
    window: int = 960  # 40 ms periodic Hann, a whole number (>= 2) of hops
    n_fft: int = 1024  # window zero-padded (centred) into this FFT
    n_mels: int = 64
    floor: float = 1e-10  # fixed power floor of every log (librosa's amin); no per-file top_db
    eps: float = 1e-8  # added to the energy that normalizes intensity vectors (as the DCASE baseline)
    gcc_lags: int = 64  # lags -gcc_lags/2 .. gcc_lags/2 - 1; must equal n_mels (shared bins axis)
    salsa_fmin_doa_hz: float = 50.0  # phase differences from here...
    salsa_fmax_doa_hz: float = 2000.0  # ... up to here (spatial aliasing of the array)
    salsa_fmax_spectra_hz: float = 9000.0  # log spectra up to here
    speed_of_sound: float = 343.0  # m/s, normalizes SALSA-lite phase differences

    def __post_init__(self) -> None:
        problems = []
        if self.name not in FRONT_END_NAMES:
            problems.append(f"name {self.name!r} is not one of {', '.join(FRONT_END_NAMES)}")
        if min(self.sample_rate, self.hop, self.window, self.n_fft, self.n_mels) <= 0:
            problems.append("sample_rate, hop, window, n_fft and n_mels must be positive")
        elif self.window % self.hop or self.window < 2 * self.hop:
            problems.append(f"window {self.window} must be a multiple (>= 2) of hop {self.hop}")
        elif self.window > self.n_fft or self.n_fft % 2:
            problems.append(f"n_fft {self.n_fft} must be even and at least the window {self.window}")
        if self.floor <= 0 or self.eps < 0:
            problems.append("floor must be positive and eps not negative")
        if self.name == "mic_logmel_gcc" and self.gcc_lags != self.n_mels:
            problems.append(f"gcc_lags {self.gcc_lags} must equal n_mels {self.n_mels} (GCC shares the mel bins axis)")
        if self.gcc_lags <= 0 or self.gcc_lags % 2 or self.gcc_lags > self.n_fft:
            problems.append(f"gcc_lags {self.gcc_lags} must be even, positive and at most n_fft")
        if not 0 <= self.salsa_fmin_doa_hz < self.salsa_fmax_doa_hz <= self.salsa_fmax_spectra_hz:
            problems.append("SALSA-lite needs 0 <= fmin_doa < fmax_doa <= fmax_spectra")
        if self.speed_of_sound <= 0:
            problems.append("speed_of_sound must be positive")
        if problems:
            raise SeldError("feature config: " + "; ".join(problems))

    @property
    def num_bins(self) -> int:
        """Linear frequency bins of the spectrum (0 .. n_fft / 2)."""
        return self.n_fft // 2 + 1

    @property
    def state_samples(self) -> int:
        """Samples per channel a stream carries from one chunk to the next."""
        return self.window - self.hop

    def state_size(self, num_channels: int) -> int:
        return num_channels * self.state_samples

    def num_frames(self, samples: int) -> int:
        return samples // self.hop

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "feature config") -> "FeatureConfig":
        return from_dict(cls, data, source)


def salsa_bins(config: FeatureConfig) -> tuple[int, int, int]:
    """(lower, upper, cutoff) as the DCASE 2023 baseline computes them: spectra keep bins
    [lower, cutoff); phase differences keep the first `upper` of those, zeros after (the
    baseline zeroes from index `upper` of the cropped range, i.e. absolute bin lower + upper)."""
    scale = config.n_fft / float(config.sample_rate)
    lower = max(1, math.floor(config.salsa_fmin_doa_hz * scale))
    upper = math.floor(min(config.salsa_fmax_doa_hz, config.sample_rate // 2) * scale)
    cutoff = min(math.floor(config.salsa_fmax_spectra_hz * scale), config.num_bins)
    return lower, min(upper, cutoff - lower), cutoff


def feature_shape(config: FeatureConfig, num_channels: int) -> tuple[int, int]:
    """(feature_channels, bins) of a front end's output for an array of `num_channels`."""
    if config.name == "stft":
        return 2 * num_channels, config.num_bins
    if config.name == "foa_logmel_iv":
        if num_channels != 4:
            raise SeldError(f"foa_logmel_iv needs the 4 FOA channels, not {num_channels}")
        return 7, config.n_mels
    if num_channels < 2:
        raise SeldError(f"{config.name} needs at least 2 microphones, not {num_channels}")
    if config.name == "mic_logmel_gcc":
        return num_channels + num_channels * (num_channels - 1) // 2, config.n_mels
    lower, _, cutoff = salsa_bins(config)
    return 2 * num_channels - 1, cutoff - lower


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann (scipy.signal.get_window('hann', length), librosa's), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), mel * (200.0 / 3))


def mel_filter_bank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """float32 [n_mels, n_fft // 2 + 1], equal to librosa.filters.mel with its defaults
    (Slaney mel scale, triangular filters, Slaney area normalization)."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def dft_basis(config: FeatureConfig) -> np.ndarray:
    """float32 [window, 2 * num_bins]: windowed frame @ basis = [real | imag] of the rFFT of
    the frame zero-padded (centred) to n_fft. The DFT as one real matmul, for graphs where
    complex FFTs do not export."""
    offset = (config.n_fft - config.window) // 2
    # Reduce the angle modulo 2 pi in integers first: cos/sin of huge angles lose precision.
    exact = np.outer(np.arange(config.window) + offset, np.arange(config.num_bins)) % config.n_fft
    angle = 2.0 * np.pi * exact / config.n_fft
    window = hann_window(config.window)[:, None]
    cos, sin = np.cos(angle), np.sin(angle)
    # Exact zeros where sin(k pi) = 0 (all of the DC and Nyquist bins): their imaginary parts
    # come out +0.0 as in an FFT, and the phase of a real bin is 0 or pi, not a random sign.
    sin[exact % (config.n_fft // 2) == 0] = 0.0
    return np.concatenate([window * cos, -window * sin + 0.0], axis=1).astype(np.float32)


def gcc_basis(config: FeatureConfig) -> np.ndarray:
    """float32 [2 * num_bins, gcc_lags]: [real | imag] of a cross-spectrum @ basis = its
    ``numpy.fft.irfft`` at lags -gcc_lags/2 .. gcc_lags/2 - 1, in that order (the baseline's
    ``concatenate((cc[-L/2:], cc[:L/2]))``)."""
    n, half = config.n_fft, config.gcc_lags // 2
    lags = np.arange(-half, half) % n
    bins = np.arange(config.num_bins)
    weight = np.full(config.num_bins, 2.0)
    weight[0] = weight[-1] = 1.0  # irfft counts DC and Nyquist once and ignores their imaginary parts
    angle = 2.0 * np.pi * (np.outer(bins, lags) % n) / n
    real = weight[:, None] * np.cos(angle) / n
    imag = -weight[:, None] * np.sin(angle) / n
    imag[0] = imag[-1] = 0.0
    return np.concatenate([real, imag], axis=0).astype(np.float32)


class HostSpectrum:
    """Causal framing and rFFT on the host (numpy/scipy), equal to the torch front ends'
    ``spectrum`` to float32 rounding.

    ``spectrum(audio)`` takes float [..., channels, samples] and returns (real, imag),
    float32 [..., channels, frames, num_bins] with frames = samples // hop (trailing samples
    short of a hop are left out). ``step(chunk, state)`` is the streaming form: chunk
    [..., channels, k * hop], state [..., channels * (window - hop)] (zeros at the start,
    ``initial_state``), returns (real, imag, new state); pushing a signal through it in chunks
    of any multiple of the hop gives the spectrum of the whole signal.
    """

    def __init__(self, config: FeatureConfig | None = None, workers: int | None = None):
        self.config = config or FeatureConfig()
        self.workers = workers or os.cpu_count() or 1
        self.offset = (self.config.n_fft - self.config.window) // 2
        self.window = hann_window(self.config.window).astype(np.float32)

    def initial_state(self, num_channels: int, batch_shape: tuple[int, ...] = ()) -> np.ndarray:
        return np.zeros((*batch_shape, self.config.state_size(num_channels)), np.float32)

    def spectrum(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        audio = np.asarray(audio, np.float32)
        frames = self.config.num_frames(audio.shape[-1])
        padded = np.zeros((*audio.shape[:-1], self.config.state_samples + frames * self.config.hop), np.float32)
        padded[..., self.config.state_samples:] = audio[..., : frames * self.config.hop]
        return self._transform(padded, frames)

    def step(self, chunk: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chunk = np.asarray(chunk, np.float32)
        hop, keep = self.config.hop, self.config.state_samples
        if chunk.shape[-1] % hop:
            raise ValueError(f"a chunk must be a whole number of hops ({hop} samples), got {chunk.shape[-1]}")
        if state.shape != (*chunk.shape[:-2], chunk.shape[-2] * keep):
            raise ValueError(f"state must be [..., {chunk.shape[-2] * keep}] for this chunk, got {list(state.shape)}")
        padded = np.concatenate([state.reshape(*chunk.shape[:-1], keep).astype(np.float32, copy=False), chunk], axis=-1)
        real, imag = self._transform(padded, chunk.shape[-1] // hop)
        new_state = np.ascontiguousarray(padded[..., padded.shape[-1] - keep:]).reshape(state.shape)
        return real, imag, new_state

    def _transform(self, padded: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """padded [..., samples] with `window - hop` samples of history in front -> spectra."""
        c = self.config
        lead = padded.shape[:-1]
        rows = padded.reshape(-1, padded.shape[-1])
        real = np.empty((rows.shape[0], frames, c.num_bins), np.float32)
        imag = np.empty_like(real)
        if frames:
            views = np.lib.stride_tricks.sliding_window_view(rows, c.window, axis=-1)[:, :: c.hop][:, :frames]
            block = max(1, _BLOCK_ROWS // rows.shape[0])
            # One zeroed FFT buffer reused block after block: its padding stays zero and it stays in cache.
            buffer = np.zeros((rows.shape[0], min(block, frames), c.n_fft), np.float32)
            for start in range(0, frames, block):
                stop = min(start + block, frames)
                width = stop - start
                np.multiply(views[:, start:stop], self.window, out=buffer[:, :width, self.offset:self.offset + c.window])
                spectrum = scipy.fft.rfft(buffer[:, :width], axis=-1, workers=self.workers)
                real[:, start:stop] = spectrum.real
                imag[:, start:stop] = spectrum.imag
        shape = (*lead, frames, c.num_bins)
        return real.reshape(shape), imag.reshape(shape)
