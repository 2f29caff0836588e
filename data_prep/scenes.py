"""Scenes: where and when events sound (the DCASE 2022 generator's logic), their labels,
and their rendering through a room and an array.

A :class:`Scene` holds everything random about a mixture, so that FOA and MIC renders of
one scene share their labels. Positions are stored per 100 ms label frame, at the
frame's centre, relative to the array centre in the array's frame (x front, y left,
z up); a label frame's direction is exactly its stored position's.

Rendering: one impulse response per label frame along a moving source's path, applied
by time-varying convolution (Hann windows of 200 ms centred on the frame centres,
overlap-added, so the response crossfades smoothly from frame to frame); a static
source gets one response. Early part from image sources (rooms.py) through the array
model (array_response.py); late part a diffuse tail (position-independent in
statistical room acoustics, so one per scene); diffuse ambient noise at a drawn SNR; peak-normalized.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy.signal import fftconvolve, oaconvolve

from seld.arrays import Array
from seld.audio import LABEL_HOP, SAMPLE_RATE
from seld.data_prep.array_response import IR_LENGTH, TAPS, array_model, band_masks
from seld.data_prep.rooms import SPEED_OF_SOUND, RoomSpec, image_sources, reverb_energy
from seld.data_prep.sound_bank import STARSS23_CLASSES, class_key, frame_energies

WINDOW = 2 * LABEL_HOP
SEGMENT_FFT = 8192  # >= WINDOW + IR_LENGTH - 1
# Per-class level offsets in dB for the STARSS23 classes, by name (louder doors and claps,
# quieter taps and steps); other classes get 0.
CLASS_LEVELS_DB = dict(zip(STARSS23_CLASSES, (0, 0, 2, -2, 1, -4, -4, 3, -2, -2, -6, 0, 2)))


@dataclass(frozen=True)
class SceneSettings:
    duration_s: float = 60.0
    max_polyphony: int = 3
    distance_range_m: tuple[float, float] = (0.5, 4.0)
    elevation_range_deg: tuple[float, float] = (-45.0, 45.0)
    wall_margin_m: float = 0.3
    snr_range_db: tuple[float, float] = (6.0, 30.0)
    static_below_s: float = 2.0  # events shorter than this never move
    moving_fraction: float = 0.5  # of the longer events
    arc_speeds_deg_s: tuple[float, ...] = (10.0, 20.0, 40.0)
    line_speed_range_m_s: tuple[float, float] = (0.3, 1.0)
    level_spread_db: float = 6.0  # per-event level variation around the class level
    activity_floor_db: float = 30.0  # label frames within this of the event's loudest frame
    peak_range_dbfs: tuple[float, float] = (-9.0, -1.0)
    # Gap between consecutive events of a layer, seconds, per layer (the last repeats).
    layer_gaps_s: tuple[tuple[float, float], ...] = ((0.3, 2.5), (1.0, 6.0), (3.0, 12.0))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class Event:
    class_index: int
    source_index: int  # unique per class within the scene
    layer: int
    onset: int  # sample of the mixture where the signal starts
    signal: np.ndarray  # dry mono float32, level applied
    first_frame: int  # label frame of positions[0] (one before the onset's frame)
    positions: np.ndarray  # [frames, 3] metres, array frame, at each frame's centre
    motion: str = "static"  # "static", "arc" or "line"
    speed: float = 0.0  # deg/s for arcs, m/s for lines

    @property
    def moving(self) -> bool:
        return self.motion != "static"


@dataclass
class Scene:
    room: RoomSpec
    array_position: np.ndarray  # room coordinates of the array centre, metres
    array_yaw: float  # radians, array x axis against the room's x axis
    samples: int
    events: list[Event] = field(default_factory=list)
    snr_db: float = 20.0
    peak_dbfs: float = -1.0
    render_seed: int = 0
    noise: bool = True

    @property
    def frames(self) -> int:
        return -(-self.samples // LABEL_HOP)


def _rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def to_room(scene: Scene, positions: np.ndarray) -> np.ndarray:
    """Array-frame positions [n, 3] -> room coordinates."""
    return scene.array_position + positions @ _rotation(scene.array_yaw).T


def polar(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(azimuth deg, elevation deg, distance m) of array-frame positions [n, 3]."""
    x, y, z = positions.T
    return np.degrees(np.arctan2(y, x)), np.degrees(np.arctan2(z, np.hypot(x, y))), np.linalg.norm(positions, axis=1)


def cartesian(azimuth_deg: float, elevation_deg: float, distance_m: float) -> np.ndarray:
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance_m * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


# ---------------------------------------------------------------- layout

def _valid(scene: Scene, positions: np.ndarray, settings: SceneSettings) -> bool:
    azimuth, elevation, distance = polar(positions)
    lo, hi = settings.distance_range_m
    if distance.min() < lo - 1e-9 or distance.max() > hi + 1e-9:
        return False
    if elevation.min() < settings.elevation_range_deg[0] - 1e-9 or elevation.max() > settings.elevation_range_deg[1] + 1e-9:
        return False
    room = to_room(scene, positions)
    margin = settings.wall_margin_m
    return bool(np.all(room >= margin) and np.all(room <= np.array(scene.room.dimensions) - margin))


def _random_point(rng, scene: Scene, settings: SceneSettings) -> np.ndarray:
    for attempt in range(500):
        # Shrink the distance range in rooms too small for it.
        hi = settings.distance_range_m[1] if attempt < 200 else settings.distance_range_m[0] + 0.5
        point = cartesian(rng.uniform(-180, 180), rng.uniform(*settings.elevation_range_deg),
                          rng.uniform(settings.distance_range_m[0], hi))
        if _valid(scene, point[None], settings):
            return point
    raise RuntimeError("no valid source position in this room")


def _trajectory(rng, scene: Scene, settings: SceneSettings, times: np.ndarray, duration_s: float):
    """(positions [len(times), 3], motion, speed): times are seconds from the event onset."""
    start = _random_point(rng, scene, settings)
    if duration_s >= settings.static_below_s and rng.random() < settings.moving_fraction:
        for _ in range(30):
            if rng.random() < 0.7:  # arc around the array at constant distance and elevation
                speed = float(rng.choice(settings.arc_speeds_deg_s)) * rng.choice([-1.0, 1.0])
                azimuth, elevation, distance = polar(start[None])
                positions = np.stack([cartesian(azimuth[0] + speed * t, elevation[0], distance[0]) for t in times])
                motion, magnitude = "arc", abs(speed)
            else:  # straight line, mostly horizontal, at walking speed
                direction = np.array([*_unit2(rng), rng.uniform(-0.15, 0.15)])
                direction /= np.linalg.norm(direction)
                magnitude = float(rng.uniform(*settings.line_speed_range_m_s))
                positions = start + times[:, None] * magnitude * direction
                motion = "line"
            if _valid(scene, positions, settings):
                return positions, motion, magnitude
            start = _random_point(rng, scene, settings)
    return np.repeat(start[None], len(times), axis=0), "static", 0.0


def _unit2(rng) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)])


def generate_scene(rng: np.random.Generator, room: RoomSpec, bank, settings: SceneSettings = SceneSettings()) -> Scene:
    """Lay out one mixture: array placement, events in `max_polyphony` layers (each
    layer a sequence of non-overlapping events, so at most that many sound at once),
    their sounds, levels and paths."""
    dims = np.array(room.dimensions)
    low = np.array([1.0, 1.0, 1.0])
    high = np.array([dims[0] - 1.0, dims[1] - 1.0, max(1.0, min(1.8, dims[2] - 0.8))])
    scene = Scene(
        room=room,
        array_position=rng.uniform(low, np.maximum(high, low)),
        array_yaw=float(rng.uniform(0, 2 * math.pi)),
        samples=int(round(settings.duration_s * SAMPLE_RATE)),
        snr_db=float(rng.uniform(*settings.snr_range_db)),
        peak_dbfs=float(rng.uniform(*settings.peak_range_dbfs)),
        render_seed=int(rng.integers(2**62)),
    )
    counters: dict[int, int] = {}
    classes = len(bank.classes)
    for layer in range(settings.max_polyphony):
        gaps = settings.layer_gaps_s[min(layer, len(settings.layer_gaps_s) - 1)]
        onset = int(rng.uniform(0, gaps[1]) * SAMPLE_RATE)
        while onset < scene.samples - int(0.3 * SAMPLE_RATE):
            class_index = int(rng.integers(classes))
            signal = bank.sound(class_index, rng)
            if len(signal) > scene.samples - onset:  # cut at the mixture's end, with a 20 ms fade
                signal = signal[: scene.samples - onset].copy()
                fade = min(len(signal), 480)
                signal[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
            level = CLASS_LEVELS_DB.get(class_key(bank.classes[class_index]), 0.0)
            signal = signal * np.float32(10 ** ((level + rng.uniform(-1, 1) * settings.level_spread_db) / 20))
            first = onset // LABEL_HOP - 1
            last = (onset + len(signal) - 1) // LABEL_HOP + 1
            times = (np.arange(first, last + 1) + 0.5) * LABEL_HOP / SAMPLE_RATE - onset / SAMPLE_RATE
            positions, motion, speed = _trajectory(rng, scene, settings, times, len(signal) / SAMPLE_RATE)
            source = counters.get(class_index, 0)
            counters[class_index] = source + 1
            scene.events.append(Event(class_index, source, layer, onset, signal.astype(np.float32), first,
                                      positions, motion, speed))
            onset += len(signal) + int(rng.uniform(*gaps) * SAMPLE_RATE)
    return scene


# ---------------------------------------------------------------- labels

def label_rows(scene: Scene, activity_floor_db: float = 30.0) -> list[tuple[int, int, int, int, int, int]]:
    """DCASE 2024 rows (frame, class, source, azimuth, elevation, distance_cm), integers,
    sorted by frame, class, source. A frame is labelled where the event is audible in it:
    its energy in that frame within `activity_floor_db` of its loudest frame."""
    rows = []
    for event in scene.events:
        offset = event.onset % LABEL_HOP
        padded = np.concatenate([np.zeros(offset, np.float32), event.signal])
        energy = frame_energies(padded)
        first_frame = event.onset // LABEL_HOP
        active = np.flatnonzero((energy > 0) & (energy >= energy.max() * 10 ** (-activity_floor_db / 10)))
        frames = first_frame + active
        frames = frames[frames < scene.frames]
        azimuth, elevation, distance = polar(event.positions[frames - event.first_frame])
        for frame, a, e, d in zip(frames, azimuth, elevation, distance):
            a = int(round(float(a)))
            rows.append((int(frame), event.class_index, event.source_index, -180 if a == 180 else a,  # [-180, 180)
                         int(round(float(e))), int(round(float(d) * 100))))
    rows.sort()
    return rows


# ---------------------------------------------------------------- rendering

def _image_sources(scene: Scene, positions: np.ndarray):
    """Direct path and image sources up to the mixing time for each position, as
    (vectors [N, 3] array frame, damping [N, 7], owner [N]); cached on the scene, since
    every format of the scene needs the same."""
    cached = getattr(scene, "_images", None)
    if cached is not None and cached[0] == len(positions):
        return cached[1]
    room = scene.room
    rotation_to_array = _rotation(scene.array_yaw).T
    limit = min(room.mixing_time(), (IR_LENGTH - TAPS) / SAMPLE_RATE) * SPEED_OF_SOUND
    vectors, dampings, owners = [], [], []
    for index, position in enumerate(to_room(scene, positions)):
        images, damping, orders = image_sources(room, position)
        relative = (images - scene.array_position) @ rotation_to_array.T
        keep = (np.linalg.norm(relative, axis=1) <= limit) | (orders == 0)
        vectors.append(relative[keep])
        dampings.append(damping[keep])
        owners.append(np.full(int(keep.sum()), index))
    result = np.concatenate(vectors), np.concatenate(dampings), np.concatenate(owners)
    scene._images = (len(positions), result)
    return result


def _add(out: np.ndarray, block: np.ndarray, start: int) -> None:
    lo, hi = max(0, start), min(out.shape[1], start + block.shape[1])
    if hi > lo:
        out[:, lo:hi] += block[:, lo - start : hi - start]


def _render_moving(out: np.ndarray, event: Event, responses: np.ndarray) -> None:
    """Time-varying convolution: frame f's response applies to the signal under a
    Hann window centred on frame f's centre; the windows sum to one."""
    frames = len(event.positions)
    # Absolute sample where the first window starts; the signal laid out from there.
    start = event.first_frame * LABEL_HOP + LABEL_HOP // 2 - LABEL_HOP
    length = (frames + 1) * LABEL_HOP
    laid = np.zeros(length, np.float32)
    lo = event.onset - start
    laid[lo : lo + len(event.signal)] = event.signal[: length - lo]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)
    segments = np.lib.stride_tricks.sliding_window_view(laid, WINDOW)[::LABEL_HOP][:frames] * window
    spectra = scipy.fft.rfft(segments, SEGMENT_FFT, axis=-1)[:, None, :]
    spectra = spectra * scipy.fft.rfft(responses, SEGMENT_FFT, axis=-1)
    blocks = scipy.fft.irfft(spectra, SEGMENT_FFT, axis=-1)[:, :, : 3 * LABEL_HOP]  # WINDOW + IR - 1 <= 3 hops
    channels = responses.shape[1]
    blocks = blocks.reshape(frames, channels, 3, LABEL_HOP)
    summed = np.zeros((frames + 2, channels, LABEL_HOP), np.float32)
    for j in range(3):
        summed[j : j + frames] += blocks[:, :, j]
    _add(out, summed.transpose(1, 0, 2).reshape(channels, -1), start)


def reverb_tail(scene: Scene, model, rng: np.random.Generator) -> np.ndarray | None:
    """[C, samples] late reverberation impulse response (from emission time), diffuse with
    the array's coherence, decaying per octave band at the room's RT60, energy from
    statistical room acoustics; it starts at the mixing time with a 5 ms fade-in."""
    energy = reverb_energy(scene.room)
    if not energy.any():
        return None
    rt60 = np.maximum(scene.room.rt60(), 0.05)
    mixing = scene.room.mixing_time()
    length = int((mixing + min(2.0, rt60.max())) * SAMPLE_RATE)
    spectrum = model.diffuse_spectrum(rng, length)
    masks = band_masks(length).astype(np.float32)
    t = np.arange(length) / SAMPLE_RATE
    tail = np.zeros((model.num_channels, length), np.float32)
    for band in range(len(rt60)):
        # Energy density A^2 exp(-13.8 t / T) integrates to E = A^2 T / 13.8 over t >= 0.
        amplitude = math.sqrt(energy[band] * 13.8 / rt60[band] / SAMPLE_RATE)
        envelope = (amplitude * np.exp(-6.9 * t / rt60[band])).astype(np.float32)
        tail += scipy.fft.irfft(spectrum * masks[band], length, axis=-1) * envelope
    start = int(mixing * SAMPLE_RATE)
    fade = int(0.005 * SAMPLE_RATE)
    tail[:, :start] = 0
    tail[:, start : start + fade] *= np.sin(np.linspace(0, np.pi / 2, fade)) ** 2
    return tail


def ambient_noise(scene: Scene, model, rng: np.random.Generator) -> np.ndarray:
    """[C, samples] diffuse background noise, pink-to-brown with a random tilt."""
    slope = rng.uniform(0.5, 1.8)  # power falls as f^-slope
    corner = rng.uniform(30, 120)

    def shape(freqs):
        f = np.maximum(freqs, 1.0)
        return (f / 1000) ** (-slope / 2) * (f / (f + corner))

    spectrum = model.diffuse_spectrum(rng, scene.samples, shape)
    return scipy.fft.irfft(spectrum, scene.samples, axis=-1).astype(np.float32)


def render_scene(scene: Scene, array: Array) -> np.ndarray:
    """The scene as heard by `array`: float32 [channels, samples], peak-normalized.
    Deterministic from the scene (its render seed and the array's name), so each
    format renders the same way whether or not the other is rendered too."""
    model = array_model(array)
    rng = np.random.default_rng([scene.render_seed, zlib.crc32(array.name.encode())])
    out = np.zeros((model.num_channels, scene.samples + IR_LENGTH), np.float32)
    # One early response per static event, one per frame of each moving event, in one batch.
    positions = np.concatenate([e.positions if e.moving else e.positions[:1] for e in scene.events]) \
        if scene.events else np.zeros((0, 3))
    responses = model.early_responses(*_image_sources(scene, positions), len(positions)) if len(positions) else None
    index = 0
    for event in scene.events:
        if event.moving:
            _render_moving(out, event, responses[index : index + len(event.positions)])
            index += len(event.positions)
        else:
            _add(out, oaconvolve(event.signal[None], responses[index], axes=-1).astype(np.float32), event.onset)
            index += 1
    # Late reverberation: one diffuse tail for the whole scene. Statistical room acoustics
    # makes it independent of the source position, and the same filter applied to
    # independent sources gives uncorrelated reverberation, as separate tails would.
    tail = reverb_tail(scene, model, rng)
    if tail is not None:
        dry = np.zeros(scene.samples, np.float32)
        for event in scene.events:
            dry[event.onset : event.onset + len(event.signal)] += event.signal
        _add(out, fftconvolve(dry[None], tail, axes=-1).astype(np.float32), 0)
    out = out[:, : scene.samples]
    if scene.noise:
        noise = ambient_noise(scene, model, rng)
        active = _active_samples(scene)
        signal_power = float(np.mean(out[:, active] ** 2)) if active.any() else float(np.mean(out**2))
        noise_power = float(np.mean(noise**2))
        if signal_power > 0 and noise_power > 0:
            out += noise * np.float32(math.sqrt(signal_power / noise_power * 10 ** (-scene.snr_db / 10)))
    peak = float(np.abs(out).max())
    if peak > 0:
        out *= np.float32(10 ** (scene.peak_dbfs / 20) / peak)
    return out


def _active_samples(scene: Scene) -> np.ndarray:
    active = np.zeros(scene.samples, bool)
    for event in scene.events:
        active[event.onset : event.onset + len(event.signal)] = True
    return active


def static_scene(signal: np.ndarray, azimuth_deg: float, elevation_deg: float, distance_m: float = 2.0,
                 room: RoomSpec | None = None, class_index: int = 0, noise: bool = False,
                 array_position=None, array_yaw_deg: float = 0.0) -> Scene:
    """One static source at a known direction (array frame), for tests and examples.
    Free field by default; the array sits at the room's centre unless placed."""
    room = room or RoomSpec.anechoic()
    signal = np.asarray(signal, np.float32)
    samples = len(signal)
    position = cartesian(azimuth_deg, elevation_deg, distance_m)
    frames = -(-samples // LABEL_HOP) + 2
    scene = Scene(room=room, array_position=np.array(room.dimensions) / 2 if array_position is None
                  else np.asarray(array_position, float), array_yaw=math.radians(array_yaw_deg),
                  samples=samples, noise=noise, peak_dbfs=-1.0)
    scene.events.append(Event(class_index, 0, 0, 0, signal, -1, np.repeat(position[None], frames, axis=0)))
    return scene
