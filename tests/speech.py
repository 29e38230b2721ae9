"""Synthetic speech for the tests that need a voice-activity model to hear speech.

The harmonic tones of synthetic.py are not speech to a trained voice-activity model (Silero
gives them under 0.7 for a few frames, then about 0), so live-mode tests speak with espeak-ng,
a formant synthesiser (installed by scripts/setup.sh test; Debian package espeak-ng).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from ser_train.audio import SAMPLING_RATE, load_audio, resample

ESPEAK = "espeak-ng"
SENTENCES = ("Kids are talking by the door.", "Dogs are sitting by the door.")


@cache
def spoken(text: str, words_per_minute: int = 150) -> np.ndarray:
    """`text` spoken by espeak-ng as a 16 kHz float32 waveform (skips the test without espeak-ng)."""
    if shutil.which(ESPEAK) is None:
        pytest.skip(f"{ESPEAK} is not installed (scripts/setup.sh test installs it)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run([ESPEAK, "-v", "en-us", "-s", str(words_per_minute), "-w", str(path), text], check=True)
        return load_audio(path)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLING_RATE), dtype=np.float32)


def talk_with_pauses(pause_s: float = 3.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Silence, a sentence, a long pause, another sentence, silence: the waveform and the
    (start_s, end_s) of each sentence."""
    parts, spans, position = [silence(1.0)], [], 1.0
    for sentence in SENTENCES:
        speech = spoken(sentence)
        spans.append((position, position + len(speech) / SAMPLING_RATE))
        position += len(speech) / SAMPLING_RATE + pause_s
        parts += [speech, silence(pause_s)]
    return np.concatenate(parts), spans


def sentences(count: int, pause_s: float, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """`count` sentences (SENTENCES in turn), each followed by a pause: what a speaker reading a
    calibration prompt gives."""
    parts = [part for number in range(count) for part in (spoken(SENTENCES[number % len(SENTENCES)]), silence(pause_s))]
    return resample(np.concatenate(parts), SAMPLING_RATE, sampling_rate)


def write_sentence(path: Path, sampling_rate: int = 48_000) -> Path:
    """A spoken sentence (SENTENCES[0]) encoded in the format of `path`'s extension (FFmpeg via
    torchcodec), at `sampling_rate`: an upload whose speech a voice-activity model hears."""
    from torchcodec.encoders import AudioEncoder

    waveform = resample(spoken(SENTENCES[0]), SAMPLING_RATE, sampling_rate)
    AudioEncoder(torch.from_numpy(waveform)[None], sample_rate=sampling_rate).to_file(str(path))
    return path
