"""Training-only augmentation: perturbed waveforms, and masking of feature batches.

Waveform perturbations (speed, gain, noise, cropping) change the features in ways a cheap edit of
the feature matrix cannot, so they are applied before feature extraction, a few fixed "views" per
clip whose features are cached. SpecAugment-style masks are drawn afresh for every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from ser_train.audio import SAMPLING_RATE

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


def _change_speed(waveform: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster by treating the audio as recorded at factor x 16 kHz."""
    source_rate = round(SAMPLING_RATE * factor / SPEED_RATE_STEP) * SPEED_RATE_STEP
    if source_rate == SAMPLING_RATE:
        return waveform
    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return torchaudio.functional.resample(tensor, source_rate, SAMPLING_RATE).numpy()


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
