"""Channel views: another room, microphone band and codec, reproducible from (seed, clip, view)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from ser_train.augment import ChannelConfig, channel_view, room_impulse_responses

RATE = 16_000
ONLY_NOTHING = dict(reverb_probability=0.0, highpass_probability=0.0, lowpass_probability=0.0, codec_probability=0.0)
FEW_ROOMS = 4  # simulating a room takes up to 0.6 s


def config(**steps) -> ChannelConfig:
    return ChannelConfig(**{**ONLY_NOTHING, "rooms": FEW_ROOMS, **steps})


def noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def band_energy(waveform: np.ndarray, low_hz: float, high_hz: float) -> float:
    frequencies, power = scipy.signal.welch(waveform, fs=RATE, nperseg=1024)
    return float(power[(frequencies >= low_hz) & (frequencies < high_hz)].sum())


def rms(waveform: np.ndarray) -> float:
    return float(np.sqrt(np.mean(waveform.astype(np.float64) ** 2)))


def test_a_view_is_reproducible_from_its_generator_and_keeps_length_and_loudness():
    clip = noise()
    every_step = config(reverb_probability=1.0, highpass_probability=1.0, lowpass_probability=1.0, codec_probability=1.0)
    first = channel_view(clip, np.random.default_rng([0, 7, 1]), every_step, seed=0)
    again = channel_view(clip, np.random.default_rng([0, 7, 1]), every_step, seed=0)
    other_view = channel_view(clip, np.random.default_rng([0, 7, 2]), every_step, seed=0)

    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other_view)
    assert first.dtype == np.float32 and len(first) == len(clip)
    # Rescaled to the clip's RMS: equal up to float32 rounding of a sum over 16000 samples.
    assert rms(first) == pytest.approx(rms(clip), rel=1e-4)


def test_with_every_step_off_the_view_is_the_clip():
    clip = noise()
    np.testing.assert_allclose(channel_view(clip, np.random.default_rng(0), config(), seed=0), clip, rtol=1e-6, atol=1e-7)


def test_the_room_is_one_of_the_seeds_simulated_impulse_responses():
    impulse = np.zeros(RATE, dtype=np.float32)
    impulse[0] = 0.5
    heard = channel_view(impulse, np.random.default_rng(3), config(reverb_probability=1.0), seed=0)

    rooms = room_impulse_responses(config(), 0)
    assert len(rooms) == FEW_ROOMS
    assert all(abs(np.sum(room.astype(np.float64) ** 2) - 1) < 1e-5 for room in rooms)  # unit energy
    tail = RATE // 10  # 0.1 s after the direct sound: a room, not a click
    assert any(np.sum(room[tail:] ** 2) > 0.01 for room in rooms)
    # An impulse through the room is that room's response, scaled to the impulse's RMS.
    matches = [np.corrcoef(heard, room[: len(heard)])[0, 1] for room in rooms if len(room) >= len(heard)]
    assert max(matches) > 0.999
    other_seed = room_impulse_responses(config(), 1)[0]
    assert len(other_seed) != len(rooms[0]) or not np.allclose(other_seed, rooms[0])


def test_band_limits_remove_what_lies_outside_the_band():
    clip = noise(2.0)
    narrowed = channel_view(
        clip,
        np.random.default_rng(0),
        config(lowpass_probability=1.0, lowpass_cutoff_range_hz=(3000.0, 3000.0), highpass_probability=1.0, highpass_cutoff_range_hz=(400.0, 400.0)),
        seed=0,
    )
    # 24 dB per octave: an octave beyond either cutoff is at least 20 dB (a factor 100) down
    # against white noise's flat spectrum, the band itself nearly untouched.
    loss = {band: band_energy(narrowed, *band) / band_energy(clip, *band) for band in [(6000, 8000), (0, 200), (800, 2000)]}
    assert loss[(6000, 8000)] < 0.01 * loss[(800, 2000)]
    assert loss[(0, 200)] < 0.01 * loss[(800, 2000)]


def test_the_codec_keeps_the_speech_band_and_loses_detail():
    t = np.arange(RATE) / RATE
    tones = (0.2 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    coded = channel_view(tones, np.random.default_rng(0), config(codec_probability=1.0, mp3_bitrates_kbps=(8,)), seed=0)

    assert not np.allclose(coded, tones, atol=1e-3)  # 8 kbps MP3 is lossy
    assert band_energy(coded, 400, 480) > 0.5 * band_energy(tones, 400, 480)  # the tone survives
