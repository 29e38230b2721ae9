"""Training-only augmentation: perturbed waveforms, and masking of feature batches.

Waveform perturbations (speed, gain, noise, cropping) change the features in ways a cheap edit of
the feature matrix cannot, so they are applied before feature extraction, a few fixed "views" per
clip whose features are cached. SpecAugment-style masks are drawn afresh for every batch.

Channel views (`channel_view`) vary what differs between two recordings of one voice besides the
voice: the room (pyroomacoustics' image-source simulation of a shoebox room), the microphone's
band and the codec (audiomentations' filters and MP3 compression). We draw every parameter from
the view's own generator and hand the libraries fixed values, so a view is reproducible from
(seed, clip, view) alone and never touches the global random state the libraries draw from.
"""

from __future__ import annotations

from dataclasses import dataclass

import functools

import audiomentations
import numpy as np
import pyroomacoustics
import scipy.signal
import torch

from ser_train.audio import SAMPLING_RATE, resample

SPEED_RATE_STEP = 100  # Hz: speed factors are rounded so resampling ratios stay small fractions


@dataclass(frozen=True)
class AugmentConfig:
    """Switches and ranges; a range of (x, x) or a probability of 0 turns a perturbation off."""

    speed_range: tuple[float, float] = (0.9, 1.1)  # playback speed: tempo and pitch together
    gain_db_range: tuple[float, float] = (-6.0, 6.0)  # recording level
    noise_probability: float = 0.5  # share of views with added white noise
    noise_snr_db_range: tuple[float, float] = (15.0, 40.0)  # signal-to-noise ratio of that noise
    max_crop_s: float = 0.2  # up to this much is cut from each end (a random time shift)
    time_masks: int = 2  # SpecAugment: masked frame spans per clip...
    max_time_mask_frames: int = 20  # ... each up to 0.2 s at 100 frames/s
    feature_masks: int = 2  # masked feature-dimension spans per clip...
    max_feature_mask_dims: int = 8  # ... each up to this many dimensions


@dataclass(frozen=True)
class ChannelConfig:
    """Ranges of the room, band and codec a channel view draws from; a probability of 0 turns a
    step off."""

    # Impulse responses simulated once per seed and shared by every view: simulating one costs up
    # to 0.6 s at a reverberation time of 0.8 s, more than encoding the clip, convolving one 3 ms.
    rooms: int = 64
    reverb_probability: float = 0.7  # share of views heard in a simulated room
    rt60_range_s: tuple[float, float] = (0.2, 0.8)  # reverberation time: a furnished room to a bare hall
    room_side_range_m: tuple[float, float] = (3.0, 10.0)  # floor length and width
    room_height_range_m: tuple[float, float] = (2.4, 4.0)
    mic_distance_range_m: tuple[float, float] = (0.3, 2.0)  # a headset to a laptop across a desk
    highpass_probability: float = 0.5  # small microphones and phones lose the lowest frequencies
    highpass_cutoff_range_hz: tuple[float, float] = (80.0, 400.0)
    lowpass_probability: float = 0.5  # a phone call's band ends at 3.4 kHz
    lowpass_cutoff_range_hz: tuple[float, float] = (3000.0, 7000.0)
    filter_rolloff_db_per_octave: int = 24
    codec_probability: float = 0.5  # share of views passed through a low-bitrate MP3 encoder
    mp3_bitrates_kbps: tuple[int, ...] = (8, 16, 24, 32)  # MPEG-2 layer III rates for 16 kHz audio


def random_crop(waveform: np.ndarray, rng: np.random.Generator, min_s: float, max_s: float) -> np.ndarray:
    """A stretch of random length between `min_s` and `max_s` seconds (at most the clip) at a
    random place in the clip: what a model meets when it hears the start of an utterance."""
    longest = min(len(waveform), round(max_s * SAMPLING_RATE))
    shortest = min(longest, round(min_s * SAMPLING_RATE))
    length = int(rng.integers(shortest, longest + 1))
    start = int(rng.integers(0, len(waveform) - length + 1))
    return waveform[start : start + length]


def augment_waveform(waveform: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """One randomly perturbed copy of a 16 kHz mono waveform."""
    waveform = _change_speed(waveform, rng.uniform(*config.speed_range))
    waveform = _crop(waveform, rng, config.max_crop_s)
    waveform = waveform * 10 ** (rng.uniform(*config.gain_db_range) / 20)
    if rng.random() < config.noise_probability:
        waveform = _add_noise(waveform, rng, rng.uniform(*config.noise_snr_db_range))
    return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def channel_view(waveform: np.ndarray, rng: np.random.Generator, config: ChannelConfig, seed: int) -> np.ndarray:
    """The 16 kHz mono waveform as if recorded in another room, through another microphone band
    and codec; `seed` picks the bank of simulated rooms, `rng` everything else. The result keeps
    the clip's length and loudness (RMS)."""
    channel = waveform
    if rng.random() < config.reverb_probability:
        rooms = room_impulse_responses(config, seed)
        channel = scipy.signal.fftconvolve(channel, rooms[rng.integers(len(rooms))])[: len(waveform)]
    if rng.random() < config.highpass_probability:
        channel = _filtered(audiomentations.HighPassFilter, channel, rng.uniform(*config.highpass_cutoff_range_hz), config)
    if rng.random() < config.lowpass_probability:
        channel = _filtered(audiomentations.LowPassFilter, channel, rng.uniform(*config.lowpass_cutoff_range_hz), config)
    if rng.random() < config.codec_probability:
        bitrate = int(rng.choice(config.mp3_bitrates_kbps))
        codec = audiomentations.Mp3Compression(min_bitrate=bitrate, max_bitrate=bitrate, p=1.0)
        channel = codec(channel.astype(np.float32), SAMPLING_RATE)[: len(waveform)]
    return np.clip(_with_rms_of(waveform, channel), -1.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=2)
def room_impulse_responses(config: ChannelConfig, seed: int) -> tuple[np.ndarray, ...]:
    """`config.rooms` impulse responses of shoebox rooms (image-source method, walls absorbing
    as Sabine's formula asks for the drawn reverberation time), each normalised to unit energy
    so that a room changes the sound's colour and tail, not its level."""
    rng = np.random.default_rng([seed, config.rooms])
    responses = []
    for _ in range(config.rooms):
        side = rng.uniform(*config.room_side_range_m, size=2)
        size = np.array([*side, rng.uniform(*config.room_height_range_m)])
        absorption, max_order = pyroomacoustics.inverse_sabine(rng.uniform(*config.rt60_range_s), size)
        room = pyroomacoustics.ShoeBox(size, fs=SAMPLING_RATE, materials=pyroomacoustics.Material(absorption), max_order=max_order)
        margin = 0.25  # m: speaker and microphone keep off the walls
        source = rng.uniform(margin, size - margin)
        direction = rng.standard_normal(3)
        distance = rng.uniform(*config.mic_distance_range_m)
        microphone = np.clip(source + distance * direction / np.linalg.norm(direction), margin, size - margin)
        room.add_source(source)
        room.add_microphone(microphone)
        room.compute_rir()
        response = np.asarray(room.rir[0][0], dtype=np.float64)
        responses.append((response / np.sqrt(np.sum(response**2))).astype(np.float32))
    return tuple(responses)


def _filtered(kind: type, waveform: np.ndarray, cutoff_hz: float, config: ChannelConfig) -> np.ndarray:
    rolloff = config.filter_rolloff_db_per_octave
    band = kind(min_cutoff_freq=cutoff_hz, max_cutoff_freq=cutoff_hz, min_rolloff=rolloff, max_rolloff=rolloff, p=1.0)
    return band(waveform.astype(np.float32), SAMPLING_RATE)


def _with_rms_of(reference: np.ndarray, waveform: np.ndarray) -> np.ndarray:
    reference_rms = np.sqrt(np.mean(reference.astype(np.float64) ** 2))
    rms = np.sqrt(np.mean(waveform.astype(np.float64) ** 2))
    return waveform * (reference_rms / rms) if rms > 0 else waveform


def _change_speed(waveform: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster by treating the audio as recorded at factor x 16 kHz."""
    source_rate = round(SAMPLING_RATE * factor / SPEED_RATE_STEP) * SPEED_RATE_STEP
    return resample(np.asarray(waveform, dtype=np.float32), source_rate)


def _crop(waveform: np.ndarray, rng: np.random.Generator, max_crop_s: float) -> np.ndarray:
    """Cut a random amount, up to `max_crop_s`, from each end, never more than a quarter overall."""
    limit = min(int(max_crop_s * SAMPLING_RATE), len(waveform) // 8)
    start, end = rng.integers(0, limit + 1, size=2)
    return waveform[start : len(waveform) - end]


def _add_noise(waveform: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    signal_power = float(np.mean(waveform.astype(np.float64) ** 2))
    noise = rng.standard_normal(len(waveform)) * np.sqrt(signal_power / 10 ** (snr_db / 10))
    return waveform + noise.astype(np.float32)


def mask_features(
    features: torch.Tensor, lengths: torch.Tensor, rng: np.random.Generator, config: AugmentConfig
) -> torch.Tensor:
    """SpecAugment-style masking of standardised features [clips, frames, dim] (masked = 0 = mean)."""
    features = features.clone()
    dim = features.shape[2]
    for clip, length in enumerate(lengths.tolist()):
        for _ in range(config.time_masks):
            width = rng.integers(0, min(config.max_time_mask_frames, length // 4) + 1)
            start = rng.integers(0, length - width + 1)
            features[clip, start : start + width] = 0
        for _ in range(config.feature_masks):
            width = rng.integers(0, config.max_feature_mask_dims + 1)
            start = rng.integers(0, dim - width + 1)
            features[clip, :, start : start + width] = 0
    return features
