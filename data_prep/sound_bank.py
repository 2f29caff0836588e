"""Dry mono sounds per class: a procedural bank (no download, varied by seed) and a
folder bank of real recordings (`--sounds DIR`, one subfolder per class).

Every bank answers ``sound(class_index, rng) -> float32 [samples]`` at 24 kHz, scaled
to a common loudness (RMS of the active part); scenes apply per-class levels.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.signal import lfilter

from seld import SeldError
from seld.audio import SAMPLE_RATE, audio_info, read_audio

log = logging.getLogger(__name__)

# The 13 STARSS23 classes, in their order (class index = position).
STARSS23_CLASSES = (
    "female_speech",
    "male_speech",
    "clapping",
    "telephone",
    "laughter",
    "domestic_sounds",
    "footsteps",
    "door",
    "music",
    "musical_instrument",
    "water_tap",
    "bell",
    "knock",
)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")
TARGET_RMS = 0.1
MAX_EVENT_S = 10.0
FS = SAMPLE_RATE


def normalize_class_name(name: str) -> str:
    """'Female speech, woman speaking' -> 'female_speech_woman_speaking'; folder and CLI names compare this way."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def active_rms(signal: np.ndarray, floor_db: float = 20.0) -> float:
    """RMS over the 100 ms frames within `floor_db` of the loudest one."""
    frames = frame_energies(signal)
    if frames.max() <= 0:
        return 0.0
    active = frames >= frames.max() * 10 ** (-floor_db / 10)
    return float(np.sqrt(frames[active].mean() / 2400))


def frame_energies(signal: np.ndarray, hop: int = 2400) -> np.ndarray:
    n = -(-len(signal) // hop) * hop
    padded = np.zeros(n, np.float64)
    padded[: len(signal)] = signal
    return (padded.reshape(-1, hop) ** 2).sum(axis=1)


def _normalized(signal: np.ndarray) -> np.ndarray:
    rms = active_rms(signal)
    if rms <= 0:
        return signal.astype(np.float32)
    return (signal * (TARGET_RMS / rms)).astype(np.float32)


# ---------------------------------------------------------------- building blocks

def _t(n: int) -> np.ndarray:
    return np.arange(n) / FS


def _n(seconds: float) -> int:
    return max(1, int(round(seconds * FS)))


def _decay(n: int, tau: float) -> np.ndarray:
    return np.exp(-_t(n) / tau)


def _fade(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    n = len(x)
    env = np.ones(n)
    a, r = min(n // 2, _n(attack)), min(n // 2, _n(release))
    if a:
        env[:a] = np.sin(np.linspace(0, np.pi / 2, a)) ** 2
    if r:
        env[n - r :] *= np.cos(np.linspace(0, np.pi / 2, r)) ** 2
    return x * env


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """Two-pole resonator, unity gain at its centre frequency."""
    freq = min(freq, 0.45 * FS)
    r = np.exp(-np.pi * bandwidth / FS)
    theta = 2 * np.pi * freq / FS
    a = [1.0, -2 * r * np.cos(theta), r * r]
    gain = (1 - r) * np.sqrt(1 - 2 * r * np.cos(2 * theta) + r * r)
    return lfilter([gain], a, x)


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    pole = np.exp(-2 * np.pi * cutoff / FS)
    return lfilter([1 - pole], [1, -pole], x)


def _highpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    return x - _lowpass(x, cutoff)


def _add(out: np.ndarray, x: np.ndarray, start: int) -> None:
    start = max(0, start)
    end = min(len(out), start + len(x))
    if end > start:
        out[start:end] += x[: end - start]


def _partials(n: int, freqs, amps, taus, rng, attack: float = 0.002) -> np.ndarray:
    t = _t(n)
    freqs = np.asarray(freqs, float)
    keep = freqs < 0.45 * FS
    out = np.zeros(n)
    amps = np.broadcast_to(np.asarray(amps, float), freqs.shape)[keep]
    taus = np.broadcast_to(np.asarray(taus, float), freqs.shape)[keep]
    t = t.astype(np.float32)
    for f, a, tau in zip(freqs[keep], amps, taus):
        m = min(n, int(9 * tau * FS) + 1)  # exp(-9) is inaudible: stop there
        phase = np.float32(2 * np.pi * f) * t[:m] + np.float32(rng.uniform(0, 2 * np.pi))
        out[:m] += a * np.sin(phase) * np.exp(t[:m] * np.float32(-1 / tau))
    return _fade(out, attack, 0.01)


# ---------------------------------------------------------------- speech-like sounds

# (F1, F2, F3) in Hz of an adult male voice; female voices scale them by ~1.17.
VOWELS = np.array([
    (730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410),
    (300, 870, 2240), (500, 1500, 2500), (660, 1720, 2410), (440, 1020, 2240),
])


def _voice(rng, f0_mean: float, formant_scale: float, duration: float, syllable_s=(0.12, 0.28),
           vowel_choices=None, breath: float = 0.05, pauses: bool = True, f0_drop: float = 0.2) -> np.ndarray:
    """Formant-filtered glottal pulse train in syllables, with fricative consonants and pauses."""
    n = _n(duration)
    t = _t(n)
    # Intonation: declination, slow wander and per-syllable accents come from the contour.
    contour = f0_mean * (1 + f0_drop / 2 - f0_drop * t / duration)
    contour *= 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6.3))
    contour *= 1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))
    phase = np.cumsum(contour / FS)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    excitation = lfilter([1.0], [1, -0.96], lfilter([1.0], [1, -0.9], pulses))
    excitation += breath * rng.standard_normal(n)
    out = np.zeros(n)
    position = _n(rng.uniform(0.0, 0.05))
    while position < n:
        if pauses and rng.random() < 0.12:
            position += _n(rng.uniform(0.1, 0.35))
            continue
        if rng.random() < 0.45:  # fricative or plosive before the vowel
            length = _n(rng.uniform(0.03, 0.09))
            noise = rng.standard_normal(length)
            noise = _resonator(noise, rng.uniform(2500, 6500), rng.uniform(1500, 3000))
            _add(out, _fade(noise, 0.005, 0.01) * rng.uniform(0.1, 0.3), position)
            position += length
        length = _n(rng.uniform(*syllable_s))
        segment = excitation[position : position + length]
        if len(segment) == 0:
            break
        vowel = VOWELS[rng.integers(len(VOWELS)) if vowel_choices is None else rng.choice(vowel_choices)]
        formants = vowel * formant_scale * rng.uniform(0.95, 1.05, 3)
        voiced = sum(_resonator(segment, f, bw) * g for f, bw, g in zip(formants, (80, 100, 150), (1.0, 0.7, 0.35)))
        _add(out, _fade(voiced, 0.02, 0.05) * rng.uniform(0.6, 1.0), position)
        position += length
    return _highpass(out, 80)


def female_speech(rng) -> np.ndarray:
    return _voice(rng, rng.uniform(175, 260), 1.17 * rng.uniform(0.97, 1.05), rng.uniform(1.0, 5.0))


def male_speech(rng) -> np.ndarray:
    return _voice(rng, rng.uniform(90, 145), rng.uniform(0.95, 1.03), rng.uniform(1.0, 5.0))


def laughter(rng) -> np.ndarray:
    female = rng.random() < 0.5
    count = int(rng.integers(4, 11))
    rate = rng.uniform(3.5, 6.0)
    out = np.zeros(_n(count / rate + 0.5))
    f0 = rng.uniform(280, 450) if female else rng.uniform(160, 280)
    for k in range(count):
        ha = _voice(rng, f0 * (1 - 0.03 * k), 1.17 if female else 1.0, rng.uniform(0.07, 0.12),
                    syllable_s=(0.06, 0.1), vowel_choices=[0, 6], breath=0.4, pauses=False, f0_drop=0.3)
        start = _n(k / rate + rng.uniform(-0.01, 0.01) + 0.05)
        breath_noise = _resonator(rng.standard_normal(_n(0.04)), 1200, 2000) * 0.3
        _add(out, _fade(breath_noise, 0.005, 0.02), start)
        _add(out, ha * (1 - 0.06 * k), start + len(breath_noise))
    return out


# ---------------------------------------------------------------- impacts and rhythms

def clapping(rng) -> np.ndarray:
    count = int(rng.integers(4, 21))
    interval = 1 / rng.uniform(2.5, 6.0)
    out = np.zeros(_n(count * interval + 0.3))
    centre, width = rng.uniform(900, 2500), rng.uniform(600, 1600)
    for k in range(count):
        burst = rng.standard_normal(_n(0.08)) * _decay(_n(0.08), rng.uniform(0.006, 0.015))
        burst = _resonator(burst, centre * rng.uniform(0.9, 1.1), width) + 0.2 * _highpass(burst, 3000)
        _add(out, _fade(burst, 0.001, 0.01) * 10 ** (rng.uniform(-3, 3) / 20),
             _n(k * interval * rng.uniform(0.93, 1.07)))
    return out


def footsteps(rng) -> np.ndarray:
    count = int(rng.integers(3, 11))
    interval = rng.uniform(0.45, 0.65)
    hard_shoes = rng.random() < 0.5
    out = np.zeros(_n(count * interval + 0.4))
    heel_cut = rng.uniform(250, 900)
    for k in range(count):
        start = _n(k * interval * rng.uniform(0.95, 1.05))
        heel = rng.standard_normal(_n(0.15)) * _decay(_n(0.15), rng.uniform(0.02, 0.05))
        heel = _lowpass(_lowpass(heel, heel_cut), heel_cut) * 4
        _add(out, heel * 10 ** (rng.uniform(-4, 2) / 20), start)
        scuff = _resonator(rng.standard_normal(_n(0.07)), rng.uniform(1500, 4000), 2000)
        _add(out, _fade(scuff, 0.01, 0.03) * rng.uniform(0.05, 0.2), start + _n(rng.uniform(0.04, 0.09)))
        if hard_shoes:
            click = _highpass(rng.standard_normal(_n(0.01)), 2500) * _decay(_n(0.01), 0.002)
            _add(out, click * 0.5, start)
    return out


def knock(rng) -> np.ndarray:
    count = int(rng.integers(2, 7))
    out = np.zeros(_n(count * 0.35 + 0.3))
    modes = rng.uniform(150, 900, int(rng.integers(3, 6)))
    position = _n(0.01)
    for k in range(count):
        n = _n(0.12)
        body = _partials(n, modes * rng.uniform(0.98, 1.02, len(modes)), rng.uniform(0.3, 1.0, len(modes)),
                         rng.uniform(0.01, 0.04, len(modes)), rng, attack=0.0005)
        click = _highpass(rng.standard_normal(_n(0.004)), 2000) * 0.5
        _add(out, body * 10 ** (rng.uniform(-3, 2) / 20), position)
        _add(out, click, position)
        position += _n(rng.uniform(0.12, 0.3))
    return out


def door(rng) -> np.ndarray:
    n = _n(0.6)
    thump = _lowpass(_lowpass(rng.standard_normal(n), 200), 200) * _decay(n, rng.uniform(0.06, 0.15)) * 12
    modes = _partials(n, rng.uniform(70, 180, 3), [1.0, 0.6, 0.4], rng.uniform(0.05, 0.2, 3), rng)
    latch = np.zeros(n)
    _add(latch, _highpass(rng.standard_normal(_n(0.006)), 3000) * 0.6, _n(rng.uniform(0.0, 0.03)))
    close = thump + modes + latch + _highpass(rng.standard_normal(n), 1000) * _decay(n, 0.02) * 0.5
    if rng.random() >= 0.6:
        return close
    # creak first: stick-slip friction exciting panel resonances
    n = _n(rng.uniform(0.4, 1.3))
    rate = np.clip(rng.uniform(40, 150) * (1 + 0.5 * np.sin(np.linspace(0, rng.uniform(2, 8), n))), 20, 400)
    pulses = np.diff(np.floor(np.cumsum(rate / FS)), prepend=0.0) * (1 + 0.3 * rng.standard_normal(n))
    creak = _fade(sum(_resonator(pulses, f, 120) for f in rng.uniform(400, 2500, 3)), 0.05, 0.1)
    # As loud as a real creak: a few dB under the slam's loudest frame. Far quieter, it would be
    # labelled (within the 30 dB activity floor) while buried under the room's noise.
    level_db = rng.uniform(-9, -3)
    creak *= np.sqrt(frame_energies(close).max() / frame_energies(creak).mean() * 10 ** (level_db / 10))
    return np.concatenate([creak, np.zeros(_n(rng.uniform(0.05, 0.4))), close])


# ---------------------------------------------------------------- tonal sounds

def _note(rng, freq: float, seconds: float, timbre: str, partials: int = 12) -> np.ndarray:
    n = _n(seconds)
    k = np.arange(1, partials + 1)
    if timbre == "pluck":
        return _partials(n, freq * k * np.sqrt(1 + 0.0004 * k**2), 1 / k**1.2, 0.8 / (1 + 0.4 * k), rng)
    if timbre == "piano":
        return _partials(n, freq * k * np.sqrt(1 + 0.0008 * k**2), 1 / k**1.5, 1.5 / k**0.8, rng)
    if timbre == "marimba":
        return _partials(n, freq * np.array([1, 3.9, 9.2]), [1, 0.3, 0.1], [0.35, 0.08, 0.03], rng)
    # sustained (wind or bowed): vibrato, slow attack, odd/even balance by instrument
    t = _t(n)
    vibrato = 1 + 0.006 * np.sin(2 * np.pi * rng.uniform(4.5, 6.0) * t)
    phase = 2 * np.pi * np.cumsum(freq * vibrato) / FS
    odd = timbre == "clarinet"
    tone = sum((1 / h if (h % 2 or not odd) else 0.1 / h) * np.sin(h * phase)
               for h in range(1, partials) if h * freq < 0.45 * FS)
    return _fade(tone, 0.06, 0.08)


SCALE = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])


def musical_instrument(rng) -> np.ndarray:
    timbre = rng.choice(["pluck", "piano", "marimba", "flute", "clarinet", "violin"])
    root = 110 * 2 ** (rng.integers(0, 24) / 12) * (2 if timbre in ("flute", "marimba") else 1)
    notes = int(rng.integers(3, 11))
    out, position = [], 0
    pieces = np.zeros(_n(notes * 0.9 + 1.5))
    for _ in range(notes):
        seconds = rng.choice([0.2, 0.3, 0.4, 0.6, 0.8])
        freq = root * 2 ** (rng.choice(SCALE) / 12)
        ring = seconds + (1.0 if timbre in ("pluck", "piano", "marimba") else 0.05)
        _add(pieces, _note(rng, freq, ring, timbre) * rng.uniform(0.6, 1.0), position)
        position += _n(seconds)
    out = pieces[: position + _n(0.8)]
    return out


def music(rng) -> np.ndarray:
    tempo = rng.uniform(70, 130)
    beat = 60 / tempo
    chords = int(rng.integers(2, 5))
    bar = 4 * beat * rng.choice([0.5, 1.0])
    key = 110 * 2 ** (rng.integers(0, 12) / 12)
    progression = [[0, 4, 7], [5, 9, 12], [7, 11, 14], [9, 12, 16], [2, 5, 9]]
    timbre = rng.choice(["piano", "pluck", "flute", "violin"])
    out = np.zeros(_n(chords * bar + 1.5))
    for c in range(chords):
        chord = progression[0 if c == 0 else int(rng.integers(len(progression)))]
        start = _n(c * bar)
        for semitone in chord:
            _add(out, _note(rng, key * 2 * 2 ** (semitone / 12), bar + 0.3, timbre, 5) * 0.4, start)
        _add(out, _note(rng, key / 2 * 2 ** (chord[0] / 12), bar, "pluck", 6) * 0.6, start)
    if rng.random() < 0.6:  # drums: kick on every beat, hi-hat between
        for b in range(int(chords * bar / beat)):
            n = _n(0.25)
            sweep = np.cumsum(120 * np.exp(-_t(n) / 0.04) + 45) / FS
            _add(out, np.sin(2 * np.pi * sweep) * _decay(n, 0.08) * 0.8, _n(b * beat))
            hat = _highpass(rng.standard_normal(_n(0.05)), 6000) * _decay(_n(0.05), 0.012) * 0.3
            _add(out, hat, _n((b + 0.5) * beat))
    return out


def telephone(rng) -> np.ndarray:
    style = rng.integers(3)
    rings = int(rng.integers(1, 4))
    pieces = []
    for _ in range(rings):
        if style == 0:  # dual tone, double ring
            n = _n(0.4)
            f1, f2 = rng.choice([(400, 450), (440, 480), (425, 475)]) * rng.uniform(0.98, 1.02)
            tone = _fade(np.sin(2 * np.pi * f1 * _t(n)) + np.sin(2 * np.pi * f2 * _t(n)), 0.01, 0.01)
            pieces += [tone, np.zeros(_n(0.2)), tone, np.zeros(_n(rng.uniform(1.0, 2.0)))]
        elif style == 1:  # electronic warble
            n = _n(rng.uniform(0.8, 1.5))
            rate = rng.uniform(12, 20)
            low, high = rng.uniform(800, 1300), rng.uniform(1300, 2200)
            freq = np.where(np.sin(2 * np.pi * rate * _t(n)) > 0, high, low)
            phase = 2 * np.pi * np.cumsum(freq) / FS
            tone = np.sin(phase) + 0.3 * np.sin(3 * phase)
            pieces += [_fade(tone, 0.01, 0.02), np.zeros(_n(rng.uniform(0.8, 2.0)))]
        else:  # mechanical bell: two gongs struck alternately at ~20 Hz
            n = _n(rng.uniform(0.8, 1.5))
            f0 = rng.uniform(900, 1500)
            gong = _partials(n, f0 * np.array([1, 2.32, 4.25, 6.63]), [1, 0.5, 0.3, 0.15], [1, 0.5, 0.3, 0.2], rng)
            strikes = 0.6 + 0.4 * np.sign(np.sin(2 * np.pi * rng.uniform(18, 24) * _t(n)))
            pieces += [_fade(gong * strikes, 0.005, 0.1), np.zeros(_n(rng.uniform(0.8, 2.0)))]
    return np.concatenate(pieces[:-1] + [np.zeros(_n(0.1))])


def bell(rng) -> np.ndarray:
    style = rng.integers(3)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.5, 2.66, 3.0, 4.0])
    if style == 2:  # bicycle bell trill
        n = _n(rng.uniform(0.5, 1.2))
        f0 = rng.uniform(2500, 4000)
        ring = _partials(n, f0 * np.array([1, 1.5, 2.1]), [1, 0.5, 0.3], [0.4, 0.2, 0.1], rng)
        trill = 0.5 + 0.5 * np.abs(np.sin(np.pi * rng.uniform(12, 20) * _t(n)))
        return np.concatenate([ring * trill, _partials(_n(0.8), [f0], [0.5], [0.3], rng)])
    f0 = rng.uniform(400, 1500)
    strikes = [1.0] if style == 0 else [1.0, 2 ** (-4 / 12)]  # single strike, or ding-dong
    seconds = rng.uniform(1.0, 3.0)
    out = np.zeros(_n(seconds * len(strikes) + 0.5))
    for s, scale in enumerate(strikes):
        freqs = f0 * scale * ratios * rng.uniform(0.99, 1.01, len(ratios))
        taus = seconds / 3 * (ratios.max() / ratios) ** 0.7 / 3
        _add(out, _partials(_n(seconds), freqs, 1 / (1 + np.arange(len(ratios))) ** 0.5, taus, rng, 0.001),
             _n(s * seconds * 0.6))
    return out


def water_tap(rng) -> np.ndarray:
    n = _n(rng.uniform(2.0, 8.0))
    hiss = _resonator(rng.standard_normal(n), rng.uniform(1200, 3000), rng.uniform(1500, 3000))
    wobble = 1 + 0.3 * _lowpass(rng.standard_normal(n), 3) * 20
    out = hiss * np.clip(wobble, 0.2, 2) * 0.5
    count = int(n / FS * rng.uniform(100, 400))
    length = _n(0.02)
    t = _t(length)
    starts = rng.integers(0, max(1, n - length), count)
    f0 = np.clip(rng.exponential(1000, count) + 500, 500, 5000)
    tau = rng.uniform(0.003, 0.012, count)
    rise = rng.uniform(0.0, 2.0, count)
    phase = 2 * np.pi * f0[:, None] * (t + rise[:, None] * t**2 / (2 * 0.02))
    bubbles = np.sin(phase) * np.exp(-t / tau[:, None]) * rng.uniform(0.2, 1.0, count)[:, None]
    index = (starts[:, None] + np.arange(length)).ravel()
    out += np.bincount(index, bubbles.ravel(), minlength=n)[:n]
    return _fade(out, 0.1, 0.2)


def domestic_sounds(rng) -> np.ndarray:
    style = rng.integers(3)
    if style == 0:  # appliance: motor hum with harmonics and airflow noise
        n = _n(rng.uniform(2.0, 6.0))
        f0 = rng.uniform(60, 250)
        hum = _partials(n, f0 * np.arange(1, 15), 1 / np.arange(1, 15) ** rng.uniform(0.5, 1.2),
                        np.full(14, 1e6), rng)
        air = _resonator(rng.standard_normal(n), rng.uniform(500, 3000), 3000) * rng.uniform(0.2, 0.6)
        return _fade(hum * 0.5 + air, rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4))
    if style == 1:  # dishes and cutlery: short inharmonic clinks
        count = int(rng.integers(3, 11))
        out = np.zeros(_n(count * 0.4 + 0.5))
        for k in range(count):
            partials = rng.uniform(1500, 7000, 3)
            clink = _partials(_n(0.3), partials, rng.uniform(0.3, 1, 3), rng.uniform(0.02, 0.12, 3), rng, 0.0005)
            _add(out, clink * 10 ** (rng.uniform(-6, 0) / 20), _n(rng.uniform(0, count * 0.4)))
        return out
    # crumpling, frying: dense random crackles
    n = _n(rng.uniform(1.5, 5.0))
    density = rng.uniform(40, 300)
    impulses = (rng.random(n) < density / FS) * rng.standard_normal(n)
    crackle = _highpass(lfilter([1.0], [1, -0.6], impulses), rng.uniform(800, 2500)) * 6
    return _fade(crackle + 0.05 * _highpass(rng.standard_normal(n), 2000), 0.05, 0.1)


GENERATORS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "female_speech": female_speech,
    "male_speech": male_speech,
    "clapping": clapping,
    "telephone": telephone,
    "laughter": laughter,
    "domestic_sounds": domestic_sounds,
    "footsteps": footsteps,
    "door": door,
    "music": music,
    "musical_instrument": musical_instrument,
    "water_tap": water_tap,
    "bell": bell,
    "knock": knock,
}
ALIASES = {
    "female_speech_woman_speaking": "female_speech", "male_speech_man_speaking": "male_speech",
    "walk_footsteps": "footsteps", "door_open_or_close": "door", "water_tap_faucet": "water_tap",
    "speech_female": "female_speech", "speech_male": "male_speech", "phone": "telephone",
    "instrument": "musical_instrument", "clap": "clapping",
}


def class_key(name: str) -> str:
    """The built-in name a class goes by: 'Female speech, woman speaking' -> 'female_speech'."""
    key = normalize_class_name(name)
    return ALIASES.get(key, key)


class ProceduralBank:
    """Synthetic sounds, one distinct family per class, deterministic from the rng."""

    def __init__(self, classes: Sequence[str], allow_missing: bool = False):
        self.classes = tuple(classes)
        self.generators: list[Callable | None] = []
        for name in self.classes:
            key = class_key(name)
            if key not in GENERATORS and not allow_missing:
                raise SeldError(
                    f"class {name!r}: no procedural sounds for it (built in: {', '.join(GENERATORS)}); give --sounds DIR"
                )
            self.generators.append(GENERATORS.get(key))

    def sound(self, class_index: int, rng: np.random.Generator) -> np.ndarray:
        signal = self.generators[class_index](rng)
        return _normalized(signal[: _n(MAX_EVENT_S)])

    def describe(self) -> dict:
        return {"kind": "procedural"}


class FolderBank:
    """Real dry recordings: ROOT/<class>/**/*.wav|flac|ogg..., resampled to 24 kHz, mono."""

    def __init__(self, root: str | Path, classes: Sequence[str], allow_missing: bool = False):
        self.root = Path(root)
        self.classes = tuple(classes)
        if not self.root.exists():
            raise SeldError(f"{self.root}: no such sound folder")
        if not self.root.is_dir():
            raise SeldError(f"{self.root}: not a folder (the sound folder holds one subfolder per class)")
        try:
            folders = {class_key(p.name): p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        except OSError as error:
            raise SeldError(f"{self.root}: cannot read the sound folder ({error.strerror or error})") from None
        if not folders:
            raise SeldError(f"{self.root}: no class subfolders (expected one folder per class, e.g. {self.root}/bell/)")
        unknown = sorted(p.name for key, p in folders.items() if key not in GENERATORS and
                         key not in {class_key(c) for c in classes})
        if unknown:  # a misspelled class folder ('footstep') would otherwise go unused without a word
            log.warning("%s: subfolders of no known class, not used: %s", self.root, ", ".join(unknown))
        self.files: list[tuple[Path, ...]] = []
        for name in self.classes:
            folder = folders.get(class_key(name))
            if folder is None and allow_missing:
                self.files.append(())
                continue
            if folder is None:
                raise SeldError(f"{self.root}: no subfolder for class {name!r} (found: {', '.join(sorted(p.name for p in folders.values()))})")
            try:
                if not os.access(folder, os.R_OK | os.X_OK):
                    raise PermissionError(errno.EACCES, "Permission denied")
                # Not hidden files or folders: macOS's ._X.wav beside X.wav is no audio, and stopped the run.
                files = tuple(sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
                                     and not any(part.startswith(".") for part in p.relative_to(folder).parts)))
            except OSError as error:
                raise SeldError(f"{folder}: cannot read the sound folder of class {name!r} "
                                f"({error.strerror or error})") from None
            if not files and allow_missing:
                self.files.append(())
                continue
            if not files:
                raise SeldError(f"{folder}: no sound files for class {name!r}")
            for path in files:
                audio_info(path)  # raises SeldError naming an unreadable file, before any work starts
            self.files.append(files)

    def sound(self, class_index: int, rng: np.random.Generator) -> np.ndarray:
        files = self.files[class_index]
        drawn = int(rng.integers(len(files)))
        # A recording found silent or broken only now (reading every file first would decode the
        # whole bank) is passed over for the next one: the run goes on, and a rerun draws the same.
        for index in [*range(drawn, len(files)), *range(drawn)]:
            try:
                signal = _load_mono(str(files[index]))
                break
            except SeldError as error:
                _warn_once(f"{error}: not used (the class's other recordings are)")
        else:
            raise SeldError(f"{self.root}: no usable recording of class {self.classes[class_index]!r} "
                            "(every one is silent or broken)")
        limit = _n(MAX_EVENT_S)
        if len(signal) > limit:
            start = int(rng.integers(0, len(signal) - limit + 1))
            signal = _fade(signal[start : start + limit], 0.02, 0.05)
        return _normalized(signal)

    def describe(self) -> dict:
        # Absolute: a rerun from another folder that names the same sounds (`--sounds ../sounds`) resumes.
        return {"kind": "folder", "root": str(self.root.resolve()),
                "files": {c: len(f) for c, f in zip(self.classes, self.files)}}


@functools.cache  # once a process
def _warn_once(message: str) -> None:
    log.warning(message)


@functools.lru_cache(maxsize=128)
def _load_mono(path: str) -> np.ndarray:
    audio, _ = read_audio(path, SAMPLE_RATE)
    mono = audio.mean(axis=0).astype(np.float64)
    # Trim silence at both ends (below -50 dB of the peak).
    above = np.flatnonzero(np.abs(mono) > np.abs(mono).max() * 10 ** (-50 / 20))
    if len(above) == 0:
        raise SeldError(f"{path}: silent recording")
    return mono[above[0] : above[-1] + 1]


class MixedBank:
    """Real recordings mixed with procedural sounds: each event is procedural with probability
    `procedural_share`, always for a class the folder has no recordings of, and never for a
    class with recordings but no procedural generator (e.g. ``dog``)."""

    def __init__(self, root: str | Path, classes: Sequence[str], procedural_share: float):
        if not 0.0 < procedural_share <= 1.0:
            raise SeldError(f"procedural share {procedural_share} must be in (0, 1]")
        self.classes = tuple(classes)
        self.folder = FolderBank(root, classes, allow_missing=True)
        if not any(self.folder.files):
            raise SeldError(f"{self.folder.root}: no sound files for any of the classes ({', '.join(self.classes)})")
        self.procedural = ProceduralBank(classes, allow_missing=True)
        for name, files, generator in zip(self.classes, self.folder.files, self.procedural.generators):
            if not files and generator is None:
                raise SeldError(f"{self.folder.root}: no recordings of class {name!r}, and no procedural sounds "
                                f"for it (built in: {', '.join(GENERATORS)})")
        self.share = procedural_share

    def sound(self, class_index: int, rng: np.random.Generator) -> np.ndarray:
        if not self.folder.files[class_index]:
            return self.procedural.sound(class_index, rng)
        if self.procedural.generators[class_index] is not None and rng.random() < self.share:
            return self.procedural.sound(class_index, rng)
        return self.folder.sound(class_index, rng)

    def describe(self) -> dict:
        return {"kind": "mixed", "procedural_share": self.share, **{k: v for k, v in self.folder.describe().items() if k != "kind"}}


def make_bank(classes: Sequence[str], sounds_dir: str | Path | None = None, procedural_share: float = 0.0):
    """The folder bank for `sounds_dir` (mixed with procedural sounds when `procedural_share` > 0),
    else the procedural bank."""
    if not sounds_dir:
        return ProceduralBank(classes)
    return MixedBank(sounds_dir, classes, procedural_share) if procedural_share > 0 else FolderBank(sounds_dir, classes)
