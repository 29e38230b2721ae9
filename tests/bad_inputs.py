"""A corpus of awkward audio files: each must give a clear error or a correct answer.

`usable` files hold the 16 kHz mono reference clip in another shape: another bit depth or
channel count (the same audio, so a model must answer as for the reference), or another
sampling rate (the reference resampled, so the decoded audio must be the reference, band-limited
to 4 kHz at 8 kHz). `refused` files cannot be analysed and must be refused with a sentence
matching the given pattern.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from ser_train.audio import resample
from synthetic import synth_clip

REFERENCE_RATE = 16_000
RESAMPLED_RATES = (8_000, 96_000)  # telephone band; studio recorders
CLIP_EMOTION = 4  # angry: loud and bright in the synthetic voice
HUGE_FILE_BYTES = 200 * 2**20


def reference_clip() -> np.ndarray:
    return synth_clip(CLIP_EMOTION, actor=1, sampling_rate=REFERENCE_RATE, seed=123, duration_s=3.0)


def write_usable(folder: Path) -> dict[str, Path]:
    """The reference clip in other rates, bit depths and channel counts."""
    files = {}

    def write(name, data, rate, subtype):
        files[name] = folder / name
        soundfile.write(files[name], data, rate, subtype=subtype)

    write("reference.wav", reference_clip(), REFERENCE_RATE, "PCM_16")
    for rate in RESAMPLED_RATES:
        write(f"rate_{rate // 1000}k.wav", resample(reference_clip(), REFERENCE_RATE, rate), rate, "PCM_16")
    write("pcm_24bit.wav", reference_clip(), REFERENCE_RATE, "PCM_24")
    write("float_32bit.wav", reference_clip(), REFERENCE_RATE, "FLOAT")
    write("six_channels.wav", np.repeat(reference_clip()[:, None], 6, axis=1), REFERENCE_RATE, "PCM_16")
    # A stereo microphone with one side wired in reverse: the channels' average is silence.
    write("stereo_opposite_phase.wav", np.stack([reference_clip(), -reference_clip()], axis=1), REFERENCE_RATE, "FLOAT")
    return files


def write_refused(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files that cannot be analysed, each with the pattern its error message must match."""
    files = {}
    clip = reference_clip()

    def add(name: str, pattern: str) -> Path:
        files[name] = (folder / name, pattern)
        return folder / name

    add("zero_length.wav", "empty").write_bytes(b"")
    soundfile.write(add("all_zeros.wav", "silent"), np.zeros(REFERENCE_RATE * 2, np.float32), REFERENCE_RATE)
    with_nan = clip.copy()
    with_nan[1000] = np.nan
    soundfile.write(add("nan_samples.wav", "NaN"), with_nan, REFERENCE_RATE, subtype="FLOAT")
    with_inf = clip.copy()
    with_inf[2000] = np.inf
    soundfile.write(add("inf_samples.wav", "NaN or infinity"), with_inf, REFERENCE_RATE, subtype="FLOAT")
    soundfile.write(add("one_sample.wav", "0.00 s long|no audio"), clip[:1], REFERENCE_RATE)
    soundfile.write(add("too_short.wav", r"0\.20 s long; at least 0\.5 s of audio is needed"), clip[: REFERENCE_RATE // 5], REFERENCE_RATE)
    whole = folder / "whole.wav"
    soundfile.write(whole, clip, REFERENCE_RATE)
    add("truncated_header.wav", "could not be read as audio").write_bytes(whole.read_bytes()[:20])
    whole.unlink()
    soundfile.write(add("rate_1k.wav", "recorded at 1000 Hz"), resample(clip, REFERENCE_RATE, 1_000), 1_000)
    add("text.wav", "could not be read as audio").write_text("This is a text file, not audio.\n" * 50)
    return files


def write_huge(folder: Path) -> Path:
    """A valid 200 MB WAV (about 109 minutes of 16 kHz mono), written without holding it in memory."""
    path = folder / "huge_200mb.wav"
    frames = (HUGE_FILE_BYTES - 44) // 2
    chunk = (reference_clip() * 0.5 * 32767).astype(np.int16)
    with soundfile.SoundFile(path, "w", REFERENCE_RATE, 1, subtype="PCM_16") as out:
        for _ in range(frames // len(chunk)):
            out.write(chunk)
    return path
