"""Reading and checking audio: every waveform a model sees comes through here.

Files are decoded by torchcodec (FFmpeg), which reads every format users bring (WAV of any bit
depth, FLAC, MP3, OGG/Opus, M4A/AAC, WebM) and resamples and downmixes in the same pass.
Waveforms are float32 mono at `SAMPLING_RATE`, and `check_waveform` turns each way audio can be
unusable into one sentence a person can act on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torchaudio

from ser_train.errors import AudioError, UnreadableAudioError

SAMPLING_RATE = 16_000  # Hz: what RAVDESS models here are trained on (wav2vec2's rate too)
MIN_DURATION_S = 0.5  # shorter than this holds too little speech to judge an emotion
DEFAULT_MAX_DURATION_S = 600.0  # 10 minutes; longer recordings are refused, not truncated
MAX_FILE_BYTES = 256 * 1024 * 1024  # refuse before decoding: nothing sensible is that large
MIN_RECORDED_RATE = 8_000  # Hz, telephone quality: a lower rate keeps too little of a voice (under 4 kHz)
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this at every sample there is nothing to hear
STREAM_BLOCK_S = 30.0  # seconds per block when streaming a file: 1.9 MB of 16 kHz float32
# Channels in opposite phase (a stereo microphone with one side wired in reverse) cancel in their
# average, leaving silence or a thin residue; where the average keeps under this share of the
# loudest channel's energy, that channel is heard instead.
MIN_MIX_ENERGY_SHARE = 0.1
# A speech level (`speech_level_db`) is the mean energy of the loudest tenth of a recording's
# 32 ms frames, in dB relative to a full-scale square wave: pauses and silence do not lower it.
LEVEL_FRAME = 512  # samples at 16 kHz: 32 ms, Silero's frame
LOUDEST_FRAMES_SHARE = 0.1
# Every clip of the eight corpora the bundled models were trained and measured on has a speech
# level of -56.6 dB or more (RAVDESS's quietest; TESS -36.8, EMOVO -46.5, the other five -43.8 or
# more). The models' answers drift with the level (README, "Quiet recordings"), so speech quieter
# than all of them is brought to the level typical of RAVDESS, TESS and EMOVO (their clips'
# median, -25.7 dB) before a model hears it. Louder speech is left as it is, so no figure measured
# on those corpora moves.
QUIET_SPEECH_DB = -57.0
TYPICAL_SPEECH_DB = -26.0

SUPPORTED_FORMATS = "WAV, FLAC, MP3, OGG/Opus, M4A/AAC or WebM"


def load_audio(
    path: str | os.PathLike,
    sampling_rate: int = SAMPLING_RATE,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> np.ndarray:
    """Decode an audio file to a checked float32 mono waveform at `sampling_rate`."""
    path = checked_file(path)
    waveform = decode(str(path), sampling_rate, name=path.name, max_duration_s=max_duration_s)
    return check_waveform(waveform, sampling_rate, name=path.name, max_duration_s=max_duration_s)


def stream_audio(
    path: str | os.PathLike,
    sampling_rate: int = SAMPLING_RATE,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    block_s: float = STREAM_BLOCK_S,
) -> Iterator[np.ndarray]:
    """`load_audio` a block at a time: consecutive float32 mono blocks of about `block_s`.

    Memory holds one block however long the file is. The checks are `load_audio`'s: the file
    before decoding, each block as it comes (invalid samples, too long), and the whole recording
    once its last block has been read (empty, too short, silent), so a caller that reads every
    block hears of any problem by the end.
    """
    path = checked_file(path)
    name = path.name
    decoder = _open_decoder(str(path), sampling_rate, name, max_duration_s)
    num_samples, peak = 0, 0.0
    for block in _decoded_blocks(decoder, block_s, name):
        mono = downmix(block.numpy())
        _check_finite(mono, name)
        num_samples += mono.size
        _check_not_too_long(num_samples / sampling_rate, name, max_duration_s)
        peak = max(peak, float(mono.max()), -float(mono.min()))  # no temporary |block|
        yield mono
    _check_not_empty(num_samples, name)
    _check_length(num_samples, sampling_rate, name, max_duration_s)
    _check_audible(peak, name)


def read_chunk(path: str | os.PathLike) -> tuple[int, np.ndarray]:
    """(sampling rate, float32 mono samples) of a short file at its own rate, downmixed:
    what a live microphone uploads every step (ser_train.live resamples a stream chunk by chunk,
    exactly at the chunks' edges, so a chunk is not resampled on its own). Unchecked otherwise."""
    from torchcodec.decoders import AudioDecoder

    path = checked_file(path)
    with _unreadable_as_audio_error(path.name):
        samples = AudioDecoder(str(path)).get_all_samples()
    return samples.sample_rate, downmix(samples.data.numpy())


def checked_file(path: str | os.PathLike) -> Path:
    """`path` as a Path, after refusing a missing, empty or oversized file without decoding it."""
    path = Path(path)
    name = path.name
    if path.is_dir():
        raise AudioError(f"{name} is a folder, not an audio file.")
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
    return path


def decode(
    source: str | bytes,
    sampling_rate: int = SAMPLING_RATE,
    name: str = "The audio",
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> np.ndarray:
    """Decode a file path or encoded bytes to float32 mono at `sampling_rate`, unchecked.

    FFmpeg resamples; the channels are mixed here (`downmix`) rather than by FFmpeg, whose downmix
    weights stereo by -3 dB each and would make a stereo file sound louder than its mono twin.
    """
    decoder = _open_decoder(source, sampling_rate, name, max_duration_s)
    with _unreadable_as_audio_error(name):
        channels = decoder.get_all_samples().data  # (channels, samples)
    return downmix(channels.numpy())


def downmix(channels: np.ndarray) -> np.ndarray:
    """(channels, samples) to mono: the channels' average, or the loudest channel where they
    cancel in it (`MIN_MIX_ENERGY_SHARE`)."""
    mix = channels.mean(axis=0)
    if len(channels) == 1:
        return mix
    energies = np.einsum("ij,ij->i", channels, channels)
    if float(mix @ mix) < MIN_MIX_ENERGY_SHARE * float(energies.max()):
        return channels[int(np.argmax(energies))].copy()
    return mix


def _open_decoder(source: str | bytes, sampling_rate: int, name: str, max_duration_s: float):
    """A torchcodec AudioDecoder resampling to `sampling_rate`; refuses files whose header says too long."""
    from torchcodec.decoders import AudioDecoder

    with _unreadable_as_audio_error(name):
        decoder = AudioDecoder(source, sample_rate=sampling_rate)
    if decoder.metadata.sample_rate is not None:  # the rate recorded, before resampling
        check_sampling_rate(decoder.metadata.sample_rate, name)
    header_duration = decoder.metadata.duration_seconds_from_header
    if header_duration is not None:
        _check_not_too_long(header_duration, name, max_duration_s)
    return decoder


def _decoded_blocks(decoder, block_s: float, name: str) -> Iterator[torch.Tensor]:
    """(channels, samples) tensors of consecutive `block_s` stretches, to the end of the stream.

    Consecutive ranges give exactly the samples `get_all_samples` gives for WAV, FLAC, Opus,
    MP3 and AAC; WebM stamps its packets to the millisecond, so its block edges can be off by a
    few samples.
    """
    start_s = 0.0
    while True:
        try:
            with _unreadable_as_audio_error(name):
                block = decoder.get_samples_played_in_range(start_s, start_s + block_s).data
        except AudioError:
            # torchcodec raises when asked for a range after the last packet: past the first
            # block, that is the end of the stream (one that ends exactly on a block edge).
            if start_s == 0.0:
                raise
            return
        if block.shape[1] == 0:
            return
        yield block
        start_s += block_s


@contextlib.contextmanager
def _unreadable_as_audio_error(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:  # FFmpeg reports corrupt and non-audio files in many ways
        raise UnreadableAudioError(name, SUPPORTED_FORMATS) from error


class SpeechLevel:
    """`speech_level_db` of a stream given in blocks of any sizes: the same number as for the
    whole waveform (whole LEVEL_FRAME frames, a frame split between blocks carried over)."""

    def __init__(self):
        self._energies: list[np.ndarray] = []
        self._carried = np.zeros(0, dtype=np.float32)

    def feed(self, block: np.ndarray) -> SpeechLevel:
        samples = np.concatenate([self._carried, block]) if self._carried.size else block
        frames = len(samples) // LEVEL_FRAME
        whole = samples[: frames * LEVEL_FRAME].reshape(frames, LEVEL_FRAME)
        # einsum sums each frame's squares without a copy of the samples (a 10-minute recording
        # squared in float64 would take 77 MB).
        self._energies.append(np.einsum("ij,ij->i", whole, whole).astype(np.float64) / LEVEL_FRAME)
        self._carried = samples[frames * LEVEL_FRAME :].copy()
        return self

    @property
    def db(self) -> float:
        energies = np.concatenate([np.zeros(0), *self._energies])
        if not energies.size and self._carried.size:  # shorter than one frame: its samples
            energies = np.array([np.mean(np.square(self._carried, dtype=np.float64))])
        loudest = np.sort(energies)[-max(1, int(LOUDEST_FRAMES_SHARE * len(energies))) :]
        energy = float(np.mean(loudest)) if loudest.size else 0.0
        return 10 * np.log10(energy) if energy > 0 else -np.inf


def speech_level_db(waveform16k: np.ndarray) -> float:
    """The level of a 16 kHz recording's speech in dB (see LEVEL_FRAME); -inf for digital silence."""
    return SpeechLevel().feed(waveform16k).db


def quiet_speech_gain(level_db: float) -> float:
    """What brings speech at `level_db` to TYPICAL_SPEECH_DB where it is under QUIET_SPEECH_DB; else 1."""
    if level_db >= QUIET_SPEECH_DB or level_db == -np.inf:
        return 1.0
    return 10 ** ((TYPICAL_SPEECH_DB - level_db) / 20)


def raised_if_quiet(waveform16k: np.ndarray) -> np.ndarray:
    """The waveform, or a copy at TYPICAL_SPEECH_DB where its speech is quieter than QUIET_SPEECH_DB."""
    gain = quiet_speech_gain(speech_level_db(waveform16k))
    return waveform16k if gain == 1.0 else waveform16k * np.float32(gain)


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
        waveform = downmix(waveform if waveform.shape[0] <= waveform.shape[1] else waveform.T)
    elif waveform.ndim != 1:
        raise AudioError(f"Audio must be one- or two-dimensional, got shape {waveform.shape}.")
    return waveform


def check_sampling_rate(rate: int, name: str = "The audio") -> None:
    """Refuse a rate that cannot be resampled (not positive) or holds too little of a voice.

    A recording at rate r keeps nothing above r / 2: at 1 kHz no formant survives and the words
    cannot be made out, yet resampled it would still get an answer that looks sure.
    """
    if rate <= 0:
        raise AudioError(f"The sampling rate must be positive, got {rate} Hz.")
    if rate < MIN_RECORDED_RATE:
        raise AudioError(
            f"{name} was recorded at {rate} Hz, which keeps nothing above {rate / 2:.0f} Hz, too little "
            f"of a voice to judge; record at {MIN_RECORDED_RATE} Hz (telephone quality) or more."
        )


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc), a no-op at the target rate."""
    check_sampling_rate(orig_rate)
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
    check_sampling_rate(sampling_rate, name)
    mono = to_mono_float(waveform)
    if len(mono) / sampling_rate > max_duration_s:  # refuse before resampling it all
        raise AudioError(_too_long(name, len(mono) / sampling_rate, max_duration_s))
    return check_waveform(
        resample(mono, sampling_rate), SAMPLING_RATE, name=name, max_duration_s=max_duration_s
    )


def check_waveform(
    waveform: np.ndarray,
    sampling_rate: int,
    name: str = "The audio",
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> np.ndarray:
    """Return `waveform` as float32 mono, or raise `AudioError` saying why it cannot be used."""
    waveform = to_mono_float(waveform)
    _check_not_empty(waveform.size, name)
    _check_finite(waveform, name)
    _check_length(waveform.size, sampling_rate, name, max_duration_s)
    _check_audible(float(np.max(np.abs(waveform))), name)
    return waveform


def _check_not_empty(num_samples: int, name: str) -> None:
    if num_samples == 0:
        raise AudioError(f"{name} contains no audio samples.")


def _check_length(num_samples: int, sampling_rate: int, name: str, max_duration_s: float) -> None:
    duration_s = num_samples / sampling_rate
    if duration_s < MIN_DURATION_S:
        raise AudioError(
            f"{name} is {duration_s:.2f} s long; at least {MIN_DURATION_S:g} s of audio is needed."
        )
    _check_not_too_long(duration_s, name, max_duration_s)


def _check_not_too_long(duration_s: float, name: str, max_duration_s: float) -> None:
    if duration_s > max_duration_s:
        raise AudioError(_too_long(name, duration_s, max_duration_s))


def _check_finite(waveform: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(waveform)):
        raise AudioError(f"{name} contains invalid samples (NaN or infinity).")


def _check_audible(peak: float, name: str) -> None:
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name} is silent: there is no sound in it to judge (a muted microphone?).")


def _too_long(name: str, duration_s: float, max_duration_s: float) -> str:
    duration, limit = _in_words(duration_s), _in_words(max_duration_s)
    # Rounded, a recording just over the limit would read as long as it (a QA pass got "602s.wav
    # is 10 minutes long; the limit is 10 minutes").
    return f"{name} is {'over ' + limit if duration == limit else duration} long; the limit is {limit}."


def _in_words(seconds: float) -> str:
    """A duration for a person: seconds under two minutes, minutes from there (3 digits)."""
    return f"{seconds:.3g} s" if seconds < 120 else f"{seconds / 60:.3g} minutes"
