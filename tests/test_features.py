"""Handcrafted frame-level features: shape, silence trimming, pitch, batching, input formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from ser_train import features
from ser_train.audio import SAMPLING_RATE, load_audio
from ser_train.errors import SERError
from ser_train.features import FeatureConfig, _deltas, extract_features

CONFIG = FeatureConfig()
FRAMES_PER_SECOND = SAMPLING_RATE // CONFIG.hop_length


def voice(sampling_rate: int, duration_s: float = 1.0, f0: float = 220.0) -> np.ndarray:
    """A band-limited voice-like tone (harmonics below 4 kHz) with vibrato and syllable envelope.

    Defined analytically, so the same sound can be written at any sampling rate.
    """
    t = np.arange(int(duration_s * sampling_rate)) / sampling_rate
    phase = 2 * np.pi * (f0 * t - 0.02 * f0 / (2 * np.pi * 5) * np.cos(2 * np.pi * 5 * t))
    harmonics = sum(0.6**k * np.sin((k + 1) * phase) for k in range(int(4000 // (1.05 * f0))))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * envelope * harmonics / np.max(np.abs(harmonics))).astype(np.float32)


def column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, CONFIG.names.index(name)]


def test_one_named_column_per_feature_and_finite_values():
    (features,) = extract_features([voice(SAMPLING_RATE)])
    assert features.shape == (FRAMES_PER_SECOND + 1, CONFIG.dim)
    assert len(set(CONFIG.names)) == CONFIG.dim
    assert features.dtype == np.float32 and np.all(np.isfinite(features))
    for prefix in ("log_mel", "mfcc_", "mfcc_delta_", "mfcc_delta2_", "contrast", "chroma"):
        assert any(name.startswith(prefix) for name in CONFIG.names)


def test_leading_and_trailing_silence_is_trimmed():
    silence = np.zeros(SAMPLING_RATE, dtype=np.float32)
    (features,) = extract_features([np.concatenate([silence, voice(SAMPLING_RATE), silence])])
    margin = round(CONFIG.trim_margin_s * FRAMES_PER_SECOND)
    # Frames straddling an edge hold some tone, so up to ~2 more per edge count as speech.
    assert 0 <= len(features) - (FRAMES_PER_SECOND + 2 * margin) <= 4


@pytest.mark.parametrize("f0", [90.0, 220.0, 380.0])
def test_pitch_follows_the_fundamental(f0):
    (features,) = extract_features([voice(SAMPLING_RATE, f0=f0)])
    estimated = 2 ** column(features, "log2_f0")
    assert np.median(estimated) == pytest.approx(f0, rel=0.03)
    assert np.median(column(features, "periodicity")) > 0.8


def test_noise_is_aperiodic_and_crosses_zero_often():
    noise = np.random.default_rng(0).normal(0, 0.1, SAMPLING_RATE).astype(np.float32)
    (tone,), (hiss,) = extract_features([voice(SAMPLING_RATE)]), extract_features([noise])
    assert np.median(column(hiss, "periodicity")) < np.median(column(tone, "periodicity")) - 0.3
    assert np.median(column(hiss, "zero_crossing_rate")) > 5 * np.median(column(tone, "zero_crossing_rate"))


def test_a_clip_gets_the_same_features_alone_and_in_a_batch():
    rng = np.random.default_rng(1)
    clips = [voice(SAMPLING_RATE, duration_s=d, f0=f) * rng.uniform(0.3, 1) for d, f in ((0.7, 120), (1.3, 200), (1.0, 300))]
    batched = extract_features(clips)
    for clip, in_batch in zip(clips, batched):
        # Padded rows take other FFT code paths, so only float rounding may differ.
        np.testing.assert_allclose(extract_features([clip])[0], in_batch, rtol=1e-4, atol=1e-2)


def test_a_clip_too_long_to_share_a_batch_goes_alone_and_keeps_its_features(monkeypatch):
    """A batch's spectra and pitch frames take about 1.1 GB per 10 minutes of padded audio, so 16
    clips of several minutes in one batch would not fit in memory (here: at most 4 s per batch)."""
    monkeypatch.setattr(features, "SECONDS_PER_BATCH", 4.0)
    batches = []
    featurise = features._features_of_batch
    monkeypatch.setattr(features, "_features_of_batch", lambda clips, config: batches.append([len(c) for c in clips]) or featurise(clips, config))
    durations = (0.5, 0.5, 0.5, 0.5, 1.5, 3.0, 1.0, 5.0)
    clips = [voice(SAMPLING_RATE, duration_s=d, f0=100 + 20 * i) for i, d in enumerate(durations)]
    batched = extract_features(clips)
    assert sorted(sum(batches, [])) == sorted(len(clip) for clip in clips)
    for lengths in batches:
        assert len(lengths) == 1 or len(lengths) * max(lengths) <= 4.0 * SAMPLING_RATE
    assert [5 * SAMPLING_RATE] in batches and len(batches) > 1
    for clip, matrix in zip(clips, batched):
        np.testing.assert_allclose(extract_features([clip])[0], matrix, rtol=1e-4, atol=1e-2)


def test_clips_of_up_to_15_s_are_batched_16_at_a_time_as_before_the_bound():
    """So the features of RAVDESS, TESS and EMOVO (clips up to 14 s) come out of the same batches."""
    lengths = list(np.random.default_rng(0).integers(SAMPLING_RATE, 15 * SAMPLING_RATE, 70))
    order = np.argsort(lengths)
    assert features._batches(lengths, SAMPLING_RATE) == [list(order[i : i + 16]) for i in range(0, 70, 16)]


def test_stereo_48k_file_gives_the_features_of_its_mono_16k_version(tmp_path):
    mono_16k = voice(SAMPLING_RATE, duration_s=1.5)
    mono_48k = voice(48_000, duration_s=1.5)
    stereo = np.stack([1.2 * mono_48k, 0.8 * mono_48k], axis=1)  # downmixes to mono_48k
    soundfile.write(tmp_path / "stereo.wav", stereo, 48_000, subtype="FLOAT")

    (from_file,), (reference,) = extract_features([load_audio(tmp_path / "stereo.wav")]), extract_features([mono_16k])
    assert from_file.shape == reference.shape
    # Resampling is not bit-exact: compare each feature relative to its spread over the clip.
    spread = reference.std(axis=0) + 1e-3
    relative_error = np.abs(from_file - reference) / spread
    assert np.median(relative_error) < 0.05
    assert np.mean(relative_error < 0.25) > 0.95


def test_feature_config_round_trips_through_json():
    config = FeatureConfig(n_mels=32, hop_length=320, trim_top_db=30.0)
    restored = FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert extract_features([voice(SAMPLING_RATE)], restored)[0].shape[1] == restored.dim == config.dim


def test_unknown_feature_settings_are_refused():
    with pytest.raises(SERError, match="does not know"):
        FeatureConfig.from_dict({**CONFIG.to_dict(), "n_wavelets": 3})


def test_deltas_of_a_stacked_batch_equal_torchaudios_clip_by_clip():
    values = torch.randn(300, 20, generator=torch.Generator().manual_seed(0))
    for sizes in ([300], [1, 2, 3, 294], [100, 150, 50]):
        expected = torch.cat(
            [torchaudio.functional.compute_deltas(clip.T, win_length=CONFIG.delta_width).T for clip in values.split(sizes)]
        )
        torch.testing.assert_close(_deltas(values, sizes, CONFIG.delta_width), expected)
