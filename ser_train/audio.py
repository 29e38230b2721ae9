"""Reading and checking audio: every waveform a model sees comes through here.

Files are decoded by torchcodec (FFmpeg), which reads every format users bring (WAV of any bit
depth, FLAC, MP3, OGG/Opus, M4A/AAC, WebM) and resamples and downmixes in the same pass.
Waveforms are float32 mono at `SAMPLING_RATE`, and `check_waveform` turns each way audio can be
unusable into one sentence a person can act on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchaudio

from ser_train.errors import AudioError

SAMPLING_RATE = 16_000  # Hz: what RAVDESS models here are trained on (wav2vec2's rate too)
MIN_DURATION_S = 0.5  # shorter than this holds too little speech to judge an emotion
DEFAULT_MAX_DURATION_S = 600.0  # 10 minutes; longer recordings are refused, not truncated
MAX_FILE_BYTES = 256 * 1024 * 1024  # refuse before decoding: nothing sensible is that large
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this at every sample there is nothing to hear

SUPPORTED_FORMATS = "WAV, FLAC, MP3, OGG/Opus, M4A/AAC or WebM"


def load_audio(
    path: str | os.PathLike,
    sampling_rate: int = SAMPLING_RATE,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> np.ndarray:
    """Decode an audio file to a checked float32 mono waveform at `sampling_rate`."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise AudioError(f"{name}: no such file.")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{name}: the file is empty (0 bytes).")
    if size > MAX_FILE_BYTES:
        raise AudioError(
            f"{name}: the file is {size / 2**20:.0f} MB; files over "
            f"{MAX_FILE_BYTES / 2**20:.0f} MB are not accepted."
        )
    waveform = decode(str(path), sampling_rate, name=name, max_duration_s=max_duration_s)
    return check_waveform(waveform, sampling_rate, name=name, max_duration_s=max_duration_s)


def decode(
    source: str | bytes,
    sampling_rate: int = SAMPLING_RATE,
    name: str = "The audio",
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> np.ndarray:
    """Decode a file path or encoded bytes to float32 mono at `sampling_rate`, unchecked.

    FFmpeg resamples; the channels are averaged here rather than by FFmpeg, whose downmix
    weights stereo by -3 dB each and would make a stereo file sound louder than its mono twin.
    """
    from torchcodec.decoders import AudioDecoder

    try:
        decoder = AudioDecoder(source, sample_rate=sampling_rate)
        header_duration = decoder.metadata.duration_seconds_from_header
        if header_duration is not None and header_duration > max_duration_s:
            raise AudioError(_too_long(name, header_duration, max_duration_s))
        channels = decoder.get_all_samples().data  # (channels, samples)
    except AudioError:
        raise
    except Exception as error:  # FFmpeg reports corrupt and non-audio files in many ways
        raise AudioError(
            f"{name}: could not be read as audio; it is corrupt or not in a supported format "
            f"({SUPPORTED_FORMATS})."
        ) from error
    return channels.mean(dim=0).numpy()


def to_mono_float(waveform: np.ndarray) -> np.ndarray:
    """Convert integer PCM or float audio, mono or multichannel, to float32 mono in [-1, 1].

    Channels may be on either axis (soundfile and Gradio give (samples, channels), torch gives
    (channels, samples)); the shorter axis is taken to be the channels.
    """
    waveform = np.asarray(waveform)
    if np.issubdtype(waveform.dtype, np.integer):
        waveform = waveform.astype(np.float32) / float(np.iinfo(waveform.dtype).max)
    waveform = waveform.astype(np.float32, copy=False)
    if waveform.ndim == 2:
        channel_axis = 0 if waveform.shape[0] <= waveform.shape[1] else 1
        waveform = waveform.mean(axis=channel_axis)
    elif waveform.ndim != 1:
        raise AudioError(f"Audio must be one- or two-dimensional, got shape {waveform.shape}.")
    return waveform


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc), a no-op at the target rate."""
    if orig_rate <= 0:
        raise AudioError(f"The sampling rate must be positive, got {orig_rate} Hz.")
    if orig_rate == target_rate:
        return waveform
    tensor = torch.from_numpy(np.ascontiguousarray(waveform))
    return torchaudio.functional.resample(tensor, orig_rate, target_rate).numpy()


def prepare_waveform(
    waveform: np.ndarray,
    sampling_rate: int,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    name: str = "The audio",
) -> np.ndarray:
    """Any in-memory audio (integer or float, any rate, any channel count) to checked 16 kHz mono."""
    mono = to_mono_float(waveform)
    if len(mono) / max(sampling_rate, 1) > max_duration_s:  # refuse before resampling it all
        raise AudioError(_too_long(name, len(mono) / sampling_rate, max_duration_s))
    return check_waveform(
        resample(mono, sampling_rate), SAMPLING_RATE, name=name, max_duration_s=max_duration_s
    )


def check_waveform(
    waveform: np.ndarray,
    sampling_rate: int,
    name: str = "The audio",
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> np.ndarray:
    """Return `waveform` as float32 mono, or raise `AudioError` saying why it cannot be used."""
    waveform = to_mono_float(waveform)
    if waveform.size == 0:
        raise AudioError(f"{name}: contains no audio samples.")
    if not np.all(np.isfinite(waveform)):
        raise AudioError(f"{name}: contains invalid samples (NaN or infinity).")
    duration_s = waveform.size / sampling_rate
    if duration_s < min_duration_s:
        raise AudioError(
            f"{name}: is {duration_s:.2f} s long; at least {min_duration_s:g} s of speech is needed."
        )
    if duration_s > max_duration_s:
        raise AudioError(_too_long(name, duration_s, max_duration_s))
    if np.max(np.abs(waveform)) < SILENCE_PEAK:
        raise AudioError(f"{name}: is silent; nothing was recorded.")
    return waveform


def _too_long(name: str, duration_s: float, max_duration_s: float) -> str:
    return (
        f"{name}: is {duration_s / 60:.1f} minutes long; the limit is "
        f"{max_duration_s / 60:g} minutes."
    )
