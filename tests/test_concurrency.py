"""Simultaneous requests across two models answer exactly as the same requests made one by one.

The requests go through the app's /predict function (`app.predict_api`) from 16 threads released
together, so they also race to load the models into the app's cache and share each model's
forward pass. (The server itself, with gradio_client callers, is exercised by
`python -m benchmarks --sections app_load`, which counts wrong answers as errors.)
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile

import app
from app_support import ANGRY, make_tiny_wav2vec2, utterances, write_clip
from ser_train.audio import SAMPLING_RATE
from ser_train.inference import DEFAULT_MODEL
from ser_train.serving import ModelRegistry

SIMULTANEOUS_REQUESTS = 16
SAME_ANSWER_TOLERANCE = 1e-6


@pytest.fixture
def clips(tmp_path) -> list[Path]:
    """Short clips in several formats, rates and channel counts, and a recording long enough for a timeline."""
    long_recording = tmp_path / "long.wav"
    soundfile.write(long_recording, utterances([ANGRY, 2, 5, 7], speech_s=2.0, pause_s=0.8), SAMPLING_RATE)
    return [
        write_clip(tmp_path / "stereo-48k.wav", sampling_rate=48_000, channels=2),
        write_clip(tmp_path / "speech.flac", sampling_rate=16_000, emotion=2),
        write_clip(tmp_path / "speech.mp3", sampling_rate=44_100, emotion=5),
        long_recording,
    ]


def test_simultaneous_requests_across_two_models_match_sequential_ones(clips, tmp_path, monkeypatch):
    if not Path(DEFAULT_MODEL).is_dir():
        pytest.skip(f"the bundled model ({DEFAULT_MODEL}) is not there yet")
    tiny = str(make_tiny_wav2vec2(tmp_path / "tiny-wav2vec2"))
    monkeypatch.setattr(app, "models", ModelRegistry((DEFAULT_MODEL, tiny)))
    models = ["", tiny]  # "" is the bundled default
    # Each clip to both models in turn: requests 2k and 2k+1 are the same clip.
    requests = [(str(clips[number // 2 % len(clips)]), models[number % 2]) for number in range(SIMULTANEOUS_REQUESTS)]
    sequential = [app.predict_api(audio, model) for audio, model in requests]

    monkeypatch.setattr(app, "models", ModelRegistry((DEFAULT_MODEL, tiny)))  # none loaded: the first requests race to load
    start_together = threading.Barrier(SIMULTANEOUS_REQUESTS)

    def request(audio_and_model: tuple[str, str]) -> dict[str, float]:
        start_together.wait()
        return app.predict_api(*audio_and_model)

    with ThreadPoolExecutor(SIMULTANEOUS_REQUESTS) as pool:
        simultaneous = list(pool.map(request, requests))

    assert len(app.models.loaded) == len(models)  # each model loaded once
    for (audio, model), got, expected in zip(requests, simultaneous, sequential):
        assert list(got) == list(expected)
        np.testing.assert_allclose(list(got.values()), list(expected.values()), atol=SAME_ANSWER_TOLERANCE, err_msg=f"{audio} {model}")
    # The two models disagree somewhere, so a mix-up between them would have shown.
    assert any(not np.allclose(list(a.values()), list(b.values())) for a, b in zip(sequential[::2], sequential[1::2]))
