"""Front ends: multichannel audio -> features, as torch modules that run batched on CPU or GPU,
stream chunk by chunk with carried state, and export to ONNX with the TorchScript exporter.

Every front end is the same two stages:
1. ``spectrum(audio)``: causal framing and a real DFT (see ``seld.spectrum`` for the framing),
   audio [batch, channels, samples] -> (real, imag), each [batch, channels, frames, n_fft/2 + 1].
   Eager runs use ``torch.fft.rfft``; while exporting (complex tensors do not export) the DFT is
   a real matmul with a precomputed windowed basis. ``seld.spectrum.HostSpectrum`` computes the
   same spectra in numpy/scipy, for graphs that begin at the spectrum.
2. ``features_from_spectrum(real, imag)`` -> features [batch, feature_channels, frames, bins].
   Every feature frame depends on its own spectrum frame only.

``forward(audio)`` is both; ``step(chunk, state)`` is the streaming form: chunk
[batch, channels, k * hop] and state [batch, channels * (window - hop)] (the last window - hop
samples of each channel, channel-major, zeros at the start) -> (features of the chunk's k frames,
new state).

On a CPU in eager mode (inputs not requiring grad), long inputs go through a block of frames at a
time so that the working set stays in cache (these front ends are memory-bound), and the
elementwise work runs as numpy ufuncs on the complex spectrum (SIMD abs and arctan2, no separate
real and imaginary copies): 5-10x faster than whole-tensor torch ops on a 2-core machine. The
numbers are those of the whole-tensor torch path, which is what runs on GPUs and what exports
(tested against each other).

The four front ends, at the defaults (24 kHz, hop 480, window 960, FFT 1024, 64 mel bands):
- ``stft`` (SELDnet): magnitude (scaled as SELDnet's norm="ortho" FFT) then phase of every
  channel: 2C x 513.
- ``foa_logmel_iv`` (DCASE FOA baseline): log-mel of W, Y, Z, X, then the intensity vector
  Re(conj(W) [Y, Z, X]) / (eps + |W|^2 + (|Y|^2 + |Z|^2 + |X|^2) / 3) through the same mel bank:
  7 x 64.
- ``mic_logmel_gcc`` (DCASE MIC baseline): log-mel of every channel, then GCC-PHAT of every pair
  (m < n, in order (0,1), (0,2), ..., of conj(X_m) X_n) at lags -32 .. 31: C + C(C-1)/2 x 64.
  A lag +d means channel n is channel m delayed by d samples.
- ``mic_salsa_lite`` (SALSA-lite, Nguyen et al. 2022, as the DCASE 2023 baseline's
  ``_get_salsalite``): log-power linear spectra of bins [2, 384) (to 9 kHz), then for every
  channel m > 0 the phase of X_m conj(X_0) times c / (2 pi f), in metres, in the first 85 of
  those bins (to ~2 kHz) and zeros above: 2C - 1 x 382. For a far-field plane wave from unit
  direction u and capsules in free field it is (r_m - r_0) . u; a rigid sphere scales it (about
  1.5x for the tetrahedral array below 1 kHz), the same for every channel.

Logs are 10 log10(max(power, floor)) with a fixed floor: the baseline's per-file top_db
clipping needs the whole file, so it is not causal.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seld import SeldError
from seld.arrays import Array
from seld.spectrum import (
    FRONT_END_NAMES,
    FeatureConfig,
    HostSpectrum,
    dft_basis,
    feature_shape,
    gcc_basis,
    hann_window,
    mel_filter_bank,
    salsa_bins,
)

__all__ = [
    "FRONT_ENDS", "FRONT_END_NAMES", "FeatureConfig", "FrontEnd", "HostSpectrum", "SpectrumFeatures",
    "feature_shape", "make_front_end",
]

log = logging.getLogger(__name__)

# Rows (batch x channels-or-pairs x frames) of one block on the CPU: few enough that a block's
# arrays stay in cache, enough that per-call overheads do not show (256-1024 measured alike).
_BLOCK_ROWS = 512
_MEL_GROUPS = 4  # the mel bank as 4 dense bands of 16 filters: ~4x fewer multiply-adds
_DB = 10.0 / math.log(10.0)
_PHAT_TINY = 1e-30  # power floor of the PHAT weighting: an all-zero bin gives 0, not 0 / 0


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting()


def _atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """torch.atan2, from ops that export well while exporting: the TorchScript exporter's own
    atan2 is NaN at (0, 0) and gives -pi for (+0, x < 0)."""
    if not _exporting():
        return torch.atan2(y, x)
    ax, ay = x.abs(), y.abs()
    angle = torch.atan(torch.minimum(ax, ay) / torch.maximum(ax, ay).clamp_min(1e-38))
    angle = torch.where(ay > ax, math.pi / 2 - angle, angle)
    angle = torch.where(x < 0, math.pi - angle, angle)
    return torch.where(y < 0, -angle, angle)


def _cpu_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor in numpy's memory: numpy asks the kernel for huge pages for
    large arrays, which makes first writes to a large output ~2x faster here than torch.empty."""
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


def _power(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(real * real, imag, imag)


class FrontEnd(nn.Module):
    """Base of the front ends: framing + DFT, then the subclass's `_feature_parts(real, imag)`."""

    name = ""

    def __init__(self, config: FeatureConfig, array: Array):
        super().__init__()
        if config.name != self.name:
            raise SeldError(f"{type(self).__name__} is the {self.name!r} front end, the config names {config.name!r}")
        self.config = config
        self.array = array
        self.num_channels = array.num_channels
        self.feature_channels, self.bins = feature_shape(config, self.num_channels)
        # "auto": torch.fft in eager runs, the matmul DFT while exporting; "fft" or "matmul" force one.
        self.dft = "auto"
        self.block_rows = _BLOCK_ROWS  # 0: never split into blocks
        self.register_buffer("window", torch.from_numpy(hann_window(config.window).astype(np.float32)), persistent=False)
        self.register_buffer("dft_basis", torch.from_numpy(dft_basis(config)), persistent=False)
        # The window of the blocked CPU path, which may fold in a scale of the spectrum.
        self.register_buffer("block_window", self.window * self._block_spectrum_scale(), persistent=False)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return self.config.state_size(self.num_channels)

    def initial_state(self, batch: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device if device is not None else self.window.device)

    def extra_repr(self) -> str:
        return (f"{self.num_channels} channels -> {self.feature_channels} x {self.bins}, "
                f"hop {self.config.hop}, window {self.config.window}, n_fft {self.config.n_fft}")

    # -- public entries ----------------------------------------------------------------------
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [batch, channels, samples] -> features [batch, feature_channels, samples // hop, bins]."""
        audio = self._check_audio(audio)
        signal = audio[..., : audio.shape[-1] // self.config.hop * self.config.hop]
        if self._blocked(signal):
            return self._blocked_features(signal, None)
        return self._features(*self._spectrum_of_padded(F.pad(signal, (self.config.state_samples, 0))))

    def step(self, chunk: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of a stream: chunk [batch, channels, k * hop], state [batch, state_size]
        -> (features [batch, feature_channels, k, bins], new state)."""
        padded = self._with_state(chunk, state)
        if self._blocked(chunk):
            history = padded[..., : self.config.state_samples]
            return self._blocked_features(padded[..., self.config.state_samples:], history), self._new_state(padded)
        return self._features(*self._spectrum_of_padded(padded)), self._new_state(padded)

    def spectrum(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio [batch, channels, samples] -> (real, imag) [batch, channels, samples // hop, n_fft/2 + 1]."""
        audio = self._check_audio(audio)
        signal = audio[..., : audio.shape[-1] // self.config.hop * self.config.hop]
        return self._spectrum_of_padded(F.pad(signal, (self.config.state_samples, 0)))

    def spectrum_step(self, chunk: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Streaming `spectrum`: (real, imag, new state), the state as in `step`."""
        padded = self._with_state(chunk, state)
        real, imag = self._spectrum_of_padded(padded)
        return real, imag, self._new_state(padded)

    def features_from_spectrum(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """(real, imag) [batch, channels, frames, n_fft/2 + 1] -> features [batch, feature_channels, frames, bins]."""
        frames = real.shape[2]
        block = self._block_frames(real)
        if _exporting() or block >= frames:
            return self._features(real, imag)
        out = _cpu_empty((real.shape[0], self.feature_channels, frames, self.bins), real.dtype)
        for start in range(0, frames, block):
            self._write_block(out[:, :, start:start + block], real[:, :, start:start + block],
                              imag[:, :, start:start + block])
        return out

    # -- what a front end defines ------------------------------------------------------------
    def _feature_parts(self, real: torch.Tensor, imag: torch.Tensor) -> list[torch.Tensor]:
        """The features as consecutive groups of feature channels (concatenated along dim 1)."""
        raise NotImplementedError

    def _pairs_per_row(self) -> int:
        """The largest channel-like dimension of the intermediate tensors (sizes the blocks)."""
        return self.num_channels

    def _write_block(self, out: torch.Tensor, real: torch.Tensor, imag: torch.Tensor) -> None:
        """Features of one block into `out` (a view of the whole output)."""
        channel = 0
        for part in self._feature_parts(real, imag):
            out[:, channel:channel + part.shape[1]].copy_(part)
            channel += part.shape[1]

    def _block_spectrum_scale(self) -> float:
        """The factor the blocked CPU path's spectra come scaled by (`_write_block_complex`)."""
        return 1.0

    def _write_block_complex(self, out: torch.Tensor, spectrum: torch.Tensor) -> None:
        """`_write_block` from a complex spectrum; elementwise ops on its strided real and
        imaginary views are many times slower, so they are made contiguous first."""
        self._write_block(out, spectrum.real.contiguous(), spectrum.imag.contiguous())

    # -- internals ---------------------------------------------------------------------------
    def _features(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._feature_parts(real, imag), dim=1)

    def _check_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio` in the front end's dtype, after checking its shape."""
        if not _exporting() and (audio.ndim != 3 or audio.shape[1] != self.num_channels):
            raise ValueError(f"audio must be [batch, {self.num_channels}, samples], got {list(audio.shape)}")
        return audio.to(self.window.dtype)

    def _with_state(self, chunk: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        chunk = self._check_audio(chunk)
        if not _exporting():
            if chunk.shape[-1] % self.config.hop:
                raise ValueError(f"a chunk must be a whole number of hops ({self.config.hop} samples), "
                                 f"got {chunk.shape[-1]}")
            if state.shape != (chunk.shape[0], self.state_size):
                raise ValueError(f"state must be [{chunk.shape[0]}, {self.state_size}], got {list(state.shape)}")
        history = state.reshape(chunk.shape[0], self.num_channels, self.config.state_samples)
        return torch.cat([history.to(chunk.dtype), chunk], dim=-1)

    def _new_state(self, padded: torch.Tensor) -> torch.Tensor:
        return padded[..., -self.config.state_samples:].flatten(1)

    def _blocked(self, signal: torch.Tensor) -> bool:
        """Whether `signal` (audio) goes through the blocked eager CPU path."""
        return (self._use_fft() and not _exporting()
                and self._block_frames(signal) < signal.shape[-1] // self.config.hop)

    def _block_frames(self, like: torch.Tensor) -> int:
        """Frames per block on a CPU in eager mode; everything at once elsewhere."""
        if (like.device.type != "cpu" or not self.block_rows or _exporting()
                or like.requires_grad):
            return 1 << 62
        return max(4, self.block_rows // (like.shape[0] * self._pairs_per_row()))

    def _use_fft(self) -> bool:
        return self.dft == "fft" or (self.dft == "auto" and not _exporting())

    def _blocked_features(self, signal: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """Features of `signal` (a whole number of hops) a block of frames at a time; `history`,
        the window - hop samples before it (None: zeros), is not copied in front of the signal."""
        c = self.config
        batch, frames = signal.shape[0], signal.shape[-1] // c.hop
        block = min(self._block_frames(signal), frames)
        if history is None:
            history = signal.new_zeros(batch, self.num_channels, c.state_samples)
        out = _cpu_empty((batch, self.feature_channels, frames, self.bins), signal.dtype)
        # One zeroed FFT buffer for all blocks: only the windowed samples are rewritten.
        buffer = signal.new_zeros(batch, self.num_channels, block, c.n_fft)
        offset = (c.n_fft - c.window) // 2
        for start in range(0, frames, block):
            stop = min(start + block, frames)
            first = start * c.hop - c.state_samples
            if first >= 0:
                segment = signal[..., first: stop * c.hop]
            else:
                segment = torch.cat([history[..., first:], signal[..., : stop * c.hop]], dim=-1)
            framed = buffer[:, :, : stop - start]
            torch.mul(segment.unfold(-1, c.window, c.hop), self.block_window, out=framed[..., offset:offset + c.window])
            self._write_block_complex(out[:, :, start:stop], torch.fft.rfft(framed, dim=-1))
        return out

    def _spectrum_of_padded(self, padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """padded [batch, channels, (window - hop) + frames * hop] -> (real, imag)."""
        c = self.config
        if self._use_fft():
            if padded.shape[-1] < c.window:  # a signal shorter than a hop has no frame (unfold would fail)
                return (padded.new_zeros(*padded.shape[:2], 0, c.num_bins),) * 2
            offset = (c.n_fft - c.window) // 2
            frames = padded.unfold(-1, c.window, c.hop) * self.window
            spectrum = torch.fft.rfft(F.pad(frames, (offset, c.n_fft - c.window - offset)), dim=-1)
            return spectrum.real.contiguous(), spectrum.imag.contiguous()
        # Frame t is hop-blocks t .. t + m - 1: sum the blocks' products with the basis's rows.
        blocks = padded.reshape(padded.shape[0], self.num_channels, -1, c.hop)
        parts = c.window // c.hop
        out = None
        for j in range(parts):
            end = j - (parts - 1)
            product = blocks[:, :, j: end if end else None] @ self.dft_basis[j * c.hop:(j + 1) * c.hop]
            out = product if out is None else out + product
        return out[..., : c.num_bins], out[..., c.num_bins:]

    def _log(self, power: torch.Tensor) -> torch.Tensor:
        """10 log10(max(power, floor)), in place on `power`."""
        return torch.log_(power.clamp_min_(self.config.floor)).mul_(_DB)


class Stft(FrontEnd):
    """SELDnet: magnitude then phase of every channel, 2C x (n_fft/2 + 1)."""

    name = "stft"

    def _feature_parts(self, real: torch.Tensor, imag: torch.Tensor) -> list[torch.Tensor]:
        magnitude = torch.sqrt_(_power(real, imag).mul_(1.0 / self.config.n_fft))  # SELDnet's norm="ortho"
        return [magnitude, _atan2(imag, real)]

    # numpy's SIMD abs/hypot/arctan2 write straight into the output, several times faster
    # than torch's atan2 and without separating real and imaginary parts.
    def _write_block(self, out: torch.Tensor, real: torch.Tensor, imag: torch.Tensor) -> None:
        magnitude, phase = out[:, : self.num_channels].numpy(), out[:, self.num_channels:].numpy()
        np.hypot(real.numpy(), imag.numpy(), out=magnitude)
        magnitude *= np.float32(1.0 / math.sqrt(self.config.n_fft))
        np.arctan2(imag.numpy(), real.numpy(), out=phase)

    def _block_spectrum_scale(self) -> float:
        return 1.0 / math.sqrt(self.config.n_fft)  # in the window: one pass less over the output

    def _write_block_complex(self, out: torch.Tensor, spectrum: torch.Tensor) -> None:
        spectrum = spectrum.numpy()
        np.abs(spectrum, out=out[:, : self.num_channels].numpy())
        np.arctan2(spectrum.imag, spectrum.real, out=out[:, self.num_channels:].numpy())


class _MelFrontEnd(FrontEnd):
    """A mel bank applied as a few dense bands of consecutive filters (it is banded)."""

    def __init__(self, config: FeatureConfig, array: Array):
        super().__init__(config, array)
        weights = mel_filter_bank(config.sample_rate, config.n_fft, config.n_mels).T  # [bins, mels]
        self.mel_bands: list[tuple[int, int]] = []
        groups = min(_MEL_GROUPS, config.n_mels)
        for group in range(groups):
            first, last = group * config.n_mels // groups, (group + 1) * config.n_mels // groups
            used = np.flatnonzero(weights[:, first:last].any(axis=1))
            low, high = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
            self.mel_bands.append((low, high))
            band = np.ascontiguousarray(weights[low:high, first:last])
            self.register_buffer(f"mel_{group}", torch.from_numpy(band), persistent=False)
            # The same rows twice each, for [re, im, re, im, ...] products: the matmul sums the pairs.
            self.register_buffer(f"mel_pairs_{group}", torch.from_numpy(np.repeat(band, 2, axis=0)), persistent=False)

    def _mel(self, power: torch.Tensor, pairs: bool = False) -> torch.Tensor:
        """[..., bins] @ mel bank -> [..., n_mels]; with `pairs`, [..., 2 bins] of interleaved
        (real, imaginary) terms whose pairs are summed."""
        if pairs:
            bands = [power[..., 2 * low:2 * high] @ getattr(self, f"mel_pairs_{group}")
                     for group, (low, high) in enumerate(self.mel_bands)]
        else:
            bands = [power[..., low:high] @ getattr(self, f"mel_{group}") for group, (low, high) in enumerate(self.mel_bands)]
        return torch.cat(bands, dim=-1)


class FoaLogmelIv(_MelFrontEnd):
    """DCASE FOA: 4 log-mel (W, Y, Z, X) + 3 mel-band intensity vectors (Y, Z, X), 7 x n_mels."""

    name = "foa_logmel_iv"

    def __init__(self, config: FeatureConfig, array: Array):
        if array.kind != "foa":
            raise SeldError(f"foa_logmel_iv needs an FOA (ambisonic) input, not the {array.kind} array {array.name!r}")
        super().__init__(config, array)

    def _feature_parts(self, real: torch.Tensor, imag: torch.Tensor) -> list[torch.Tensor]:
        power = _power(real, imag)
        intensity = torch.addcmul(real[:, :1] * real[:, 1:], imag[:, :1], imag[:, 1:])  # Re(conj(W) [Y, Z, X])
        energy = power[:, 1:].sum(dim=1, keepdim=True).mul_(1.0 / 3.0).add_(power[:, :1]).add_(self.config.eps)
        # One mel product for the 4 spectra and the 3 intensity vectors: half the graph nodes of two.
        mel = self._mel(torch.cat([power, intensity.div_(energy)], dim=1))
        return [self._log(mel[:, :4]), mel[:, 4:]]

    def _write_block_complex(self, out: torch.Tensor, spectrum: torch.Tensor) -> None:
        # numpy on the complex spectrum, no separation of real and imaginary parts:
        # Re(conj(W) X) / E = (W / E) . X summed over (re, im) pairs, which the mel matmul does.
        spectrum = spectrum.numpy()
        power = np.abs(spectrum)
        np.square(power, out=power)
        scale = power[:, 1:].sum(axis=1)
        scale *= np.float32(1.0 / 3.0)
        scale += power[:, 0]
        scale += np.float32(self.config.eps)
        np.reciprocal(scale, out=scale)
        products = spectrum[:, 1:].view(np.float32) * (spectrum[:, 0] * scale)[:, None].view(np.float32)
        out[:, :4].copy_(self._log(self._mel(torch.from_numpy(power))))
        out[:, 4:].copy_(self._mel(torch.from_numpy(products), pairs=True))


class _MicFrontEnd(FrontEnd):
    def __init__(self, config: FeatureConfig, array: Array):
        if array.kind != "mic":
            raise SeldError(f"{self.name} needs a microphone array, not the {array.kind} input {array.name!r}")
        super().__init__(config, array)


class MicLogmelGcc(_MicFrontEnd, _MelFrontEnd):
    """DCASE MIC: log-mel per channel + GCC-PHAT per channel pair, C + C(C-1)/2 x n_mels."""

    name = "mic_logmel_gcc"

    def __init__(self, config: FeatureConfig, array: Array):
        super().__init__(config, array)
        pairs = list(itertools.combinations(range(self.num_channels), 2))
        self.register_buffer("first", torch.tensor([m for m, _ in pairs]), persistent=False)
        self.register_buffer("second", torch.tensor([n for _, n in pairs]), persistent=False)
        self.pairs = pairs
        basis = gcc_basis(config)
        self.register_buffer("gcc_real", torch.from_numpy(basis[: config.num_bins].copy()), persistent=False)
        self.register_buffer("gcc_imag", torch.from_numpy(basis[config.num_bins:].copy()), persistent=False)
        interleaved = np.stack([basis[: config.num_bins], basis[config.num_bins:]], axis=1).reshape(-1, config.gcc_lags)
        self.register_buffer("gcc_pairs", torch.from_numpy(interleaved), persistent=False)

    def _pairs_per_row(self) -> int:
        return max(self.num_channels, len(self.first))

    def _feature_parts(self, real: torch.Tensor, imag: torch.Tensor) -> list[torch.Tensor]:
        power = _power(real, imag)
        # PHAT: conj(X_m) X_n / |X_m X_n| = conj(U_m) U_n with U = X / |X| (0 where X = 0).
        inverse = torch.rsqrt(power + _PHAT_TINY)
        unit_real, unit_imag = real * inverse, imag * inverse
        real_m, imag_m = unit_real.index_select(1, self.first), unit_imag.index_select(1, self.first)
        real_n, imag_n = unit_real.index_select(1, self.second), unit_imag.index_select(1, self.second)
        cross_real = torch.addcmul(real_m * real_n, imag_m, imag_n)
        cross_imag = torch.addcmul(real_m * imag_n, imag_m, real_n, value=-1.0)
        # irfft at the kept lags as matmuls.
        gcc = (cross_real @ self.gcc_real).add_(cross_imag @ self.gcc_imag)
        return [self._log(self._mel(power)), gcc]

    def _write_block_complex(self, out: torch.Tensor, spectrum: torch.Tensor) -> None:
        # numpy complex arithmetic, no separation of real and imaginary parts; the irfft basis
        # takes the cross-spectra as interleaved (re, im) pairs.
        spectrum = spectrum.numpy()
        power = np.abs(spectrum)
        np.square(power, out=power)
        inverse = power + np.float32(_PHAT_TINY)
        np.sqrt(inverse, out=inverse)
        np.reciprocal(inverse, out=inverse)
        unit = spectrum * inverse
        conjugate = np.conj(unit)
        cross = np.empty((spectrum.shape[0], len(self.pairs), *spectrum.shape[2:]), spectrum.dtype)
        for index, (m, n) in enumerate(self.pairs):
            np.multiply(conjugate[:, m], unit[:, n], out=cross[:, index])
        out[:, : self.num_channels].copy_(self._log(self._mel(torch.from_numpy(power))))
        out[:, self.num_channels:].copy_(torch.from_numpy(cross.view(np.float32)) @ self.gcc_pairs)


class MicSalsaLite(_MicFrontEnd):
    """SALSA-lite: C log-power linear spectra + C-1 normalized phase differences w.r.t. channel 0."""

    name = "mic_salsa_lite"

    def __init__(self, config: FeatureConfig, array: Array):
        super().__init__(config, array)
        self.lower, self.upper, self.cutoff = salsa_bins(config)
        hz = np.arange(self.lower, self.lower + self.upper) * config.sample_rate / config.n_fft
        self.register_buffer("phase_scale", torch.from_numpy(
            (config.speed_of_sound / (2.0 * np.pi * hz)).astype(np.float32)), persistent=False)
        aliasing = _spatial_aliasing_hz(array, config.speed_of_sound)
        if aliasing is not None and config.salsa_fmax_doa_hz > aliasing:
            log.warning("mic_salsa_lite: phase differences up to %.0f Hz, above the spatial aliasing frequency "
                        "%.0f Hz of array %r (set salsa_fmax_doa_hz lower)", config.salsa_fmax_doa_hz, aliasing, array.name)

    def _feature_parts(self, real: torch.Tensor, imag: torch.Tensor) -> list[torch.Tensor]:
        kept_real, kept_imag = real[..., self.lower:self.cutoff], imag[..., self.lower:self.cutoff]
        spectra = self._log(_power(kept_real, kept_imag))
        real_0, imag_0 = kept_real[:, :1, :, : self.upper], kept_imag[:, :1, :, : self.upper]
        real_m, imag_m = kept_real[:, 1:, :, : self.upper], kept_imag[:, 1:, :, : self.upper]
        # angle(X_m conj(X_0)) * c / (2 pi f), as the baseline (no minus sign).
        cross_real = torch.addcmul(real_m * real_0, imag_m, imag_0)
        cross_imag = torch.addcmul(imag_m * real_0, real_m, imag_0, value=-1.0)
        phase = _atan2(cross_imag, cross_real).mul_(self.phase_scale)
        return [spectra, F.pad(phase, (0, self.cutoff - self.lower - self.upper))]

    def _write_block_complex(self, out: torch.Tensor, spectrum: torch.Tensor) -> None:
        # numpy's SIMD ufuncs on the complex spectrum, straight into the output:
        # 10 log10(max(|X|^2, floor)) = 20 log10(max(|X|, sqrt(floor))).
        kept = spectrum.numpy()[..., self.lower:self.cutoff]
        spectra, phase = out[:, : self.num_channels].numpy(), out[:, self.num_channels:].numpy()
        np.abs(kept, out=spectra)
        np.maximum(spectra, np.float32(math.sqrt(self.config.floor)), out=spectra)
        np.log(spectra, out=spectra)
        spectra *= np.float32(2.0 * _DB)
        cross = kept[:, 1:, :, : self.upper] * np.conj(kept[:, :1, :, : self.upper])
        np.arctan2(cross.imag, cross.real, out=phase[..., : self.upper])
        phase[..., : self.upper] *= self.phase_scale.numpy()
        phase[..., self.upper:] = 0.0


def _spatial_aliasing_hz(array: Array, speed_of_sound: float) -> float | None:
    capsules = np.asarray(array.capsules_m, np.float64)
    if len(capsules) < 2:
        return None
    spacing = max(np.linalg.norm(a - b) for a, b in itertools.combinations(capsules, 2))
    return speed_of_sound / (2.0 * spacing) if spacing > 0 else None


FRONT_ENDS: dict[str, type[FrontEnd]] = {
    "stft": Stft,
    "foa_logmel_iv": FoaLogmelIv,
    "mic_logmel_gcc": MicLogmelGcc,
    "mic_salsa_lite": MicSalsaLite,
}


def make_front_end(name: str | FeatureConfig, array: Array, **params) -> FrontEnd:
    """The front end `name` (or a FeatureConfig, `params` replacing some of its fields) for `array`."""
    if isinstance(name, FeatureConfig):
        config = FeatureConfig.from_dict({**name.to_dict(), **params})
    else:
        if name not in FRONT_ENDS:
            raise SeldError(f"unknown front end {name!r}: expected one of {', '.join(FRONT_ENDS)}")
        config = FeatureConfig(name=name, **params)
    return FRONT_ENDS[config.name](config, array)


class SpectrumFeatures(nn.Module):
    """A front end's second stage as a module of its own, ``forward(real, imag) -> features``:
    what a graph that starts at the host spectrum (HostSpectrum) exports."""

    def __init__(self, front_end: FrontEnd):
        super().__init__()
        self.front_end = front_end

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return self.front_end.features_from_spectrum(real, imag)
