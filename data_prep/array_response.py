"""Array responses: how one plane wave (an image source) reaches each channel, and
diffuse fields (late reverberation, ambient noise) with the array's inter-channel
coherence.

Three models, all exact per image source direction:
- FOA, ACN order W, Y, Z, X, SN3D: gains 1, sin(az)cos(el), sin(el), cos(az)cos(el);
  one delay (the array centre's) for all channels.
- Rigid sphere (the tetrahedral Eigenmike subset, or any array file with
  ``rigid_sphere_radius_m``): the scattering of a plane wave by a rigid sphere at a
  capsule at angle theta from the arrival direction, the Legendre series
  sum_n (2n+1) i^n b_n(ka) P_n(cos theta), b_n = i / ((ka)^2 h_n'(ka)) (Rafaely,
  "Fundamentals of Spherical Array Processing", eq. 2.62), relative to the centre.
- Open array of omnidirectional capsules at any coordinates: exact spherical-wave
  delay and 1/distance to each capsule.

Each response is tabulated once as short FIR filters (40 taps) on a grid of angle
(1 degree) and fractional delay (1/32 sample); an impulse response is then a sum of
table rows, one per image source and channel, scaled per octave band by the walls'
damping, and the bands recombined with complementary masks in the frequency domain.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import scipy.fft
from scipy.special import eval_legendre, spherical_jn, spherical_yn

from seld.arrays import Array
from seld.audio import SAMPLE_RATE
from seld.data_prep.rooms import BAND_CENTRES, SPEED_OF_SOUND

log = logging.getLogger(__name__)

TAPS = 40
CENTRE = 14  # table FIRs put the array centre's arrival at this tap
FRACTIONS = 32
THETA_STEPS = 181  # 0..180 degrees
IR_LENGTH = 2048  # early part (direct + image sources up to the mixing time), samples
COARSE_FFT = 2048


def band_masks(nfft: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[7, nfft//2+1] complementary octave-band masks (sum to 1), crossfading in
    log-frequency between the band centres; the first and last bands extend to DC and
    Nyquist."""
    freqs = np.fft.rfftfreq(nfft, 1 / sample_rate)
    logf = np.log2(np.maximum(freqs, 1.0))
    centres = np.log2(BAND_CENTRES)
    masks = np.zeros((len(centres), len(freqs)))
    for b in range(len(centres)):
        rising = np.ones_like(logf) if b == 0 else np.clip(logf - centres[b - 1], 0, 1)
        falling = np.ones_like(logf) if b == len(centres) - 1 else np.clip(centres[b + 1] - logf, 0, 1)
        masks[b] = np.minimum(np.where(logf <= centres[b], rising, falling), 1.0)
    masks = np.sin(masks * np.pi / 2) ** 2  # smooth crossfade; neighbours still sum to 1
    return masks / masks.sum(axis=0)


def fibonacci_directions(count: int) -> np.ndarray:
    """[count, 3] nearly uniform unit vectors."""
    index = np.arange(count) + 0.5
    z = 1 - 2 * index / count
    azimuth = math.pi * (1 + 5**0.5) * index
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(azimuth), r * np.sin(azimuth), z], axis=1)


def rigid_sphere_response(cos_theta: np.ndarray, freqs: np.ndarray, radius: float) -> np.ndarray:
    """[len(cos_theta), len(freqs)] pressure on a rigid sphere's surface at angle theta
    from the arrival direction of a unit plane wave, relative to the pressure the wave
    would have at the centre without the sphere. numpy's sign convention (a delay tau
    multiplies by exp(-i w tau)): a capsule facing the source leads."""
    ka = 2 * np.pi * np.asarray(freqs, float) * radius / SPEED_OF_SOUND
    orders = int(np.ceil(ka.max())) + 15
    safe = np.maximum(ka, 1e-6)
    out = np.zeros((len(cos_theta), len(ka)), complex)
    for n in range(orders + 1):
        derivative = spherical_jn(n, safe, derivative=True) + 1j * spherical_yn(n, safe, derivative=True)
        # Physics convention exp(-i w t); conjugated below into numpy's.
        b_n = (2 * n + 1) * (-1j) ** n * 1j / (safe**2 * derivative)
        out += eval_legendre(n, np.asarray(cos_theta))[:, None] * b_n[None, :]
    out = np.conj(out)
    out[:, ka < 1e-6] = 1.0
    return out


def largest_capsule_radius(nearest_source_m: float) -> float:
    """How far from the array centre a capsule may sit when sources come as near as `nearest_source_m`:
    responses are rendered from the centre's arrival, CENTRE samples into each filter, so a capsule
    may hear a source at most that much earlier than the centre does."""
    return nearest_source_m - CENTRE * SPEED_OF_SOUND / SAMPLE_RATE


class ArrayModel:
    """The response of one array (FOA, rigid sphere or open) to image sources and to
    diffuse fields. Build with :func:`array_model` (cached)."""

    def __init__(self, array: Array):
        self.array = array
        self.kind = "foa" if array.kind == "foa" else ("sphere" if array.rigid_sphere_radius_m else "open")
        self.num_channels = array.num_channels
        self.capsules = np.array(array.capsules_m, float).reshape(-1, 3)
        self.capsule_directions = self.capsules / np.maximum(np.linalg.norm(self.capsules, axis=1, keepdims=True), 1e-12)
        freqs = np.fft.rfftfreq(512, 1 / SAMPLE_RATE)
        if self.kind == "sphere":
            off = np.abs(np.linalg.norm(self.capsules, axis=1) - array.rigid_sphere_radius_m)
            if off.max() > 0.05 * array.rigid_sphere_radius_m:
                log.warning("array %s: capsules are not on the rigid sphere's surface (off by up to %.1f mm); "
                            "the model places them there, in their directions", array.name, 1000 * off.max())
            cos_theta = np.cos(np.radians(np.arange(THETA_STEPS)))
            self.table = _fir_table(rigid_sphere_response(cos_theta, freqs, array.rigid_sphere_radius_m))
        else:
            self.table = _fir_table(np.ones((1, len(freqs)), complex))
        self.masks = band_masks(IR_LENGTH).astype(np.float32)
        self._diffuse = self._diffuse_factor()

    # ------------------------------------------------------------ image sources

    def _channel_terms(self, vectors: np.ndarray):
        """Per image source (rows of `vectors`, array frame, metres from the centre) and
        channel: delay in samples [N, C], gain [N, C], table row [N, C]."""
        distance = np.linalg.norm(vectors, axis=1)
        unit = vectors / distance[:, None]
        count, channels = len(vectors), self.num_channels
        if self.kind == "foa":
            gains = np.stack([np.ones(count), unit[:, 1], unit[:, 2], unit[:, 0]], axis=1) / distance[:, None]
            delays = np.repeat(distance[:, None], channels, axis=1)
            rows = np.zeros((count, channels), int)
        elif self.kind == "open":
            to_capsule = np.linalg.norm(vectors[:, None, :] - self.capsules[None], axis=2)
            gains, delays, rows = 1 / to_capsule, to_capsule, np.zeros((count, channels), int)
        else:
            cos_theta = np.clip(unit @ self.capsule_directions.T, -1, 1)
            rows = np.rint(np.degrees(np.arccos(cos_theta))).astype(int)
            gains = np.repeat(1 / distance[:, None], channels, axis=1)
            delays = np.repeat(distance[:, None], channels, axis=1)
        return delays * (SAMPLE_RATE / SPEED_OF_SOUND), gains, rows

    def early_responses(self, vectors: np.ndarray, damping: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
        """Impulse responses [count, C, IR_LENGTH] float32 from image sources.

        vectors [N, 3]: image source positions relative to the array centre, array frame.
        damping [N, 7]: amplitude factor per octave band (walls' reflection coefficients).
        owner [N]: which response (0..count-1) each image source belongs to.
        Image sources arriving after IR_LENGTH - TAPS samples must be left out by the caller.
        """
        delays, gains, rows = self._channel_terms(vectors)
        start = np.floor(delays).astype(np.int64)
        fraction = np.rint((delays - start) * FRACTIONS).astype(np.int64)
        start += fraction // FRACTIONS
        fraction %= FRACTIONS
        firs = self.table[rows, fraction] * gains[:, :, None].astype(np.float32)  # [N, C, TAPS]
        # The band dampings of a room's image sources span few spectral shapes: a rank-r
        # factorization (r <= 4) scatters r signals instead of 7 bands.
        u, singular, basis = np.linalg.svd(damping, full_matrices=False)
        rank = int(min(4, max(1, np.sum(singular > singular[0] * 1e-2))))
        weights = (u[:, :rank] * singular[:rank]).astype(np.float32)  # [N, r]
        spectral_basis = (basis[:rank] @ self.masks).astype(np.float32)  # [r, F]
        channels = self.num_channels
        out = np.empty((count, channels, IR_LENGTH), np.float32)
        step = 64  # responses per chunk, to bound memory
        for lo in range(0, count, step):
            hi = min(count, lo + step)
            pick = np.flatnonzero((owner >= lo) & (owner < hi))
            base = ((owner[pick] - lo)[:, None] * channels + np.arange(channels)) * IR_LENGTH + start[pick] - CENTRE
            index = (base[:, :, None] + np.arange(TAPS)).ravel()
            size = (hi - lo) * channels * IR_LENGTH
            signals = np.stack([
                np.bincount(index, (firs[pick] * weights[pick, j, None, None]).ravel(), minlength=size)
                for j in range(rank)
            ]).reshape(rank, hi - lo, channels, IR_LENGTH).astype(np.float32)
            spectra = scipy.fft.rfft(signals, axis=-1)
            combined = np.einsum("rkcf,rf->kcf", spectra, spectral_basis)
            out[lo:hi] = scipy.fft.irfft(combined, IR_LENGTH, axis=-1)
        return out

    # ------------------------------------------------------------ diffuse fields

    def direction_response(self, unit: np.ndarray, freqs: np.ndarray) -> np.ndarray:
        """[P, C, F] far-field response to plane waves from directions `unit` [P, 3]."""
        if self.kind == "foa":
            gains = np.stack([np.ones(len(unit)), unit[:, 1], unit[:, 2], unit[:, 0]], axis=1)
            return np.repeat(gains[:, :, None], len(freqs), axis=2).astype(complex)
        if self.kind == "open":
            lead = unit @ self.capsules.T / SPEED_OF_SOUND  # [P, C] seconds ahead of the centre
            return np.exp(2j * np.pi * lead[:, :, None] * freqs[None, None, :])
        cos_theta = np.clip(unit @ self.capsule_directions.T, -1, 1)
        table = rigid_sphere_response(np.cos(np.radians(np.arange(THETA_STEPS))), freqs, self.array.rigid_sphere_radius_m)
        rows = np.rint(np.degrees(np.arccos(cos_theta))).astype(int)
        return table[rows]

    def diffuse_coherence(self, freqs: np.ndarray) -> np.ndarray:
        """[F, C, C] cross-spectral matrix of an isotropic diffuse field of unit power."""
        if self.kind == "foa":
            return np.broadcast_to(np.diag([1.0, 1 / 3, 1 / 3, 1 / 3]).astype(complex), (len(freqs), 4, 4)).copy()
        if self.kind == "open":
            spacing = np.linalg.norm(self.capsules[:, None] - self.capsules[None], axis=2)
            return np.sinc(2 * freqs[:, None, None] * spacing[None] / SPEED_OF_SOUND).astype(complex)
        response = self.direction_response(fibonacci_directions(1200), freqs)  # [P, C, F]
        return np.einsum("pcf,pdf->fcd", response, response.conj()) / response.shape[0]

    def _diffuse_factor(self) -> np.ndarray:
        freqs = np.fft.rfftfreq(COARSE_FFT, 1 / SAMPLE_RATE)
        gamma = self.diffuse_coherence(freqs)
        load = 1e-4 * np.trace(gamma, axis1=1, axis2=2).real[:, None, None] / self.num_channels
        return np.linalg.cholesky(gamma + load * np.eye(self.num_channels)).astype(np.complex64)

    def diffuse_spectrum(self, rng: np.random.Generator, samples: int, shape=None) -> np.ndarray:
        """[C, samples//2+1] spectrum of diffuse noise: independent white noise per channel,
        mixed per frequency by the Cholesky factor of the diffuse coherence, times the
        magnitude `shape(freqs)` when given. Its inverse rfft has unit power per channel
        (for a flat shape) at the W channel or an omnidirectional capsule."""
        bins = samples // 2 + 1
        scale = np.float32(np.sqrt(samples / 2))
        white = (rng.standard_normal((self.num_channels, bins), np.float32)
                 + 1j * rng.standard_normal((self.num_channels, bins), np.float32)) * scale
        freqs = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE).astype(np.float32)
        if shape is not None:
            white *= shape(freqs).astype(np.float32)[None]
        coarse = np.minimum(np.rint(freqs * (COARSE_FFT / SAMPLE_RATE)).astype(np.int64), COARSE_FFT // 2)
        if self.kind == "foa":
            return white * np.sqrt(np.array([1, 1 / 3, 1 / 3, 1 / 3], np.float32))[:, None]
        out = np.empty_like(white)
        step = 1 << 16
        for lo in range(0, bins, step):
            factor = self._diffuse[coarse[lo : lo + step]]  # [f, C, C]
            out[:, lo : lo + step] = np.einsum("fcd,df->cf", factor, white[:, lo : lo + step])
        return out


def _fir_table(response: np.ndarray) -> np.ndarray:
    """[rows, FRACTIONS, TAPS] float32 FIRs: `response` [rows, 257] (on a 512-point grid)
    delayed by CENTRE + fraction/FRACTIONS samples, band-limited and windowed."""
    nfft = 2 * (response.shape[1] - 1)
    freqs = np.fft.rfftfreq(nfft)  # cycles per sample
    taper = np.clip((0.5 - freqs) / 0.08, 0, 1) ** 2  # fade out the top 8% below Nyquist
    out = np.zeros((response.shape[0], FRACTIONS, TAPS), np.float32)
    taps = np.arange(TAPS)
    for k in range(FRACTIONS):
        delay = CENTRE + k / FRACTIONS
        spectrum = response * taper * np.exp(-2j * np.pi * freqs * delay)
        firs = np.fft.irfft(spectrum, nfft, axis=1)[:, :TAPS]
        # Tukey window around the delay, flat over the sphere's creeping-wave tail.
        x = (taps - delay) / np.where(taps < delay, delay + 1, TAPS - delay)
        x = np.clip((np.abs(x) - 0.4) / 0.6, 0, 1)
        out[:, k] = firs * (0.5 + 0.5 * np.cos(np.pi * x))
    return out


@functools.lru_cache(maxsize=8)
def array_model(array: Array) -> ArrayModel:
    return ArrayModel(array)
