"""Frame-level handcrafted features, computed in batches with torch from 16 kHz mono audio.

One short-time Fourier transform per clip gives the log-mel spectrogram, MFCCs (with deltas and
delta-deltas), spectral contrast and chroma; the framed waveform gives zero-crossing rate and RMS
energy; a vectorised YIN gives pitch (F0) and periodicity. Leading and trailing silence is
trimmed, so a clip becomes a `[frames, FEATURE_DIM]` matrix at 100 frames per second.

Every parameter lives in `FeatureConfig`, which is saved in the model's config.json, so inference
computes exactly what training saw. Frames are zero-padded at the edges (not reflected), which
makes a clip's features independent of the other clips it is batched with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Sequence

import librosa
import numpy as np
import torch
import torchaudio

from ser_train.audio import SAMPLING_RATE
from ser_train.errors import SERError

POWER_FLOOR = 1e-10  # -100 dB: keeps the logarithm of digital silence finite
AMPLITUDE_FLOOR = 1e-5  # -100 dB for amplitudes (RMS, spectral contrast)
CLIPS_PER_BATCH = 16  # bounds memory: a batch's spectra and pitch frames are held at once...
# ...and so does this much padded audio (16 clips of 15 s), since a clip's spectra and pitch frames
# take about 1.1 GB for 9.5 minutes of audio: a clip too long to share a batch goes alone.
SECONDS_PER_BATCH = CLIPS_PER_BATCH * 15.0
# A batch is zero-padded to a multiple of this many samples (0.25 s). oneDNN, torch's CPU
# convolution library, builds and caches kernels for every input shape it meets; with lengths
# rounded, a server's shapes repeat and that cache stops growing with each new recording.
PAD_TO_MULTIPLE_OF = 4000


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides the feature values; stored as config.json's "feature_config"."""

    sampling_rate: int = SAMPLING_RATE
    n_fft: int = 512  # samples: 32 ms FFT, 31.25 Hz bins
    win_length: int = 400  # samples: 25 ms Hann analysis window (also the ZCR/RMS frame)
    hop_length: int = 160  # samples: 10 ms between frames, 100 frames per second
    n_mels: int = 40
    f_min: float = 20.0  # Hz, lowest mel band edge
    f_max: float = 8000.0  # Hz, highest mel band edge (Nyquist at 16 kHz)
    n_mfcc: int = 20
    delta_width: int = 5  # frames in each delta regression window (odd)
    contrast_bands: int = 6  # octave bands above contrast_fmin, plus one below it
    contrast_fmin: float = 200.0  # Hz, upper edge of the lowest contrast band
    contrast_quantile: float = 0.02  # share of a band's bins averaged for its peak and valley
    n_chroma: int = 12
    pitch_fmin: float = 60.0  # Hz, lowest F0 searched (deep male voice)
    pitch_fmax: float = 500.0  # Hz, highest F0 searched (shouting, high female voice)
    pitch_sampling_rate: int = 8000  # Hz: YIN runs on audio downsampled to this (F0 is low)
    pitch_frame_length: int = 512  # samples at pitch_sampling_rate: 64 ms, 3+ periods of pitch_fmin
    yin_threshold: float = 0.2  # YIN's normalised difference below which a frame is voiced
    trim_top_db: float = 40.0  # edge frames this far below the loudest frame are silence
    trim_margin_s: float = 0.1  # seconds of context kept either side of the speech

    @property
    def names(self) -> list[str]:
        """One name per feature dimension, in column order."""
        return (
            [f"log_mel_{i}" for i in range(self.n_mels)]
            + [f"mfcc_{i}" for i in range(self.n_mfcc)]
            + [f"mfcc_delta_{i}" for i in range(self.n_mfcc)]
            + [f"mfcc_delta2_{i}" for i in range(self.n_mfcc)]
            + [f"contrast_{i}" for i in range(self.contrast_bands + 1)]
            + [f"chroma_{i}" for i in range(self.n_chroma)]
            + ["zero_crossing_rate", "rms_db", "log2_f0", "periodicity"]
        )

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FeatureConfig:
        """Rebuild a saved config, refusing settings this version does not know."""
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise SERError(
                f"The model's feature_config has settings this version does not know "
                f"({', '.join(sorted(unknown))}); upgrade ser_train to use it."
            )
        return cls(**values)


def extract_features(
    waveforms: Sequence[np.ndarray], config: FeatureConfig = FeatureConfig()
) -> list[np.ndarray]:
    """Silence-trimmed `[frames, config.dim]` float32 features of each 16 kHz mono waveform."""
    features: list[np.ndarray | None] = [None] * len(waveforms)
    with torch.no_grad():
        for indices in _batches([len(waveform) for waveform in waveforms], config.sampling_rate):
            batch = _features_of_batch([waveforms[i] for i in indices], config)
            for index, matrix in zip(indices, batch):
                features[index] = matrix
    return features


def _batches(lengths: list[int], sampling_rate: int) -> list[list[int]]:
    """Indices of clips of similar length (so little time goes into padding), at most
    CLIPS_PER_BATCH of them and SECONDS_PER_BATCH of audio padded to the longest."""
    batches: list[list[int]] = []
    for index in np.argsort(lengths):
        # Sorted by length, so a clip added to the last batch is its longest.
        padded_s = (len(batches[-1]) + 1) * lengths[index] / sampling_rate if batches else math.inf
        if padded_s > SECONDS_PER_BATCH or len(batches[-1]) == CLIPS_PER_BATCH:
            batches.append([])
        batches[-1].append(int(index))
    return batches


def _features_of_batch(waveforms: list[np.ndarray], config: FeatureConfig) -> list[np.ndarray]:
    longest = max(len(waveform) for waveform in waveforms)
    audio = torch.zeros(len(waveforms), math.ceil(longest / PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF)
    for row, waveform in enumerate(waveforms):
        audio[row, : len(waveform)] = torch.from_numpy(np.asarray(waveform, dtype=np.float32))

    # Trim first, then compute the costly features on the kept frames only, stacked [frames, ...].
    short_frames = _frames(audio, config.win_length, config.hop_length)  # [clips, frames, samples]
    rms_db = 20 * torch.log10(short_frames.square().mean(-1).sqrt().clamp_min(AMPLITUDE_FLOOR))
    keep = torch.zeros_like(rms_db, dtype=torch.bool)
    for row, waveform in enumerate(waveforms):
        frame_count = len(waveform) // config.hop_length + 1
        keep[row, _speech_span(rms_db[row, :frame_count], config)] = True
    power = _power_spectrogram(audio, config).transpose(1, 2)[keep]  # [kept frames, bins]
    log_mel = _to_db(power @ _filterbanks(config).mel.T)
    log2_f0, periodicity, voiced = _yin(_pitch_frames(audio, config)[:, : keep.shape[1]][keep], config)
    sizes = keep.sum(1).tolist()
    mfcc = log_mel @ _filterbanks(config).dct.T  # DCT-II of the log-mel spectrum
    mfcc_delta = _deltas(mfcc, sizes, config.delta_width)
    stacked = {
        "log_mel": log_mel,
        "mfcc": mfcc,
        "mfcc_delta": mfcc_delta,
        "mfcc_delta2": _deltas(mfcc_delta, sizes, config.delta_width),
        "contrast": _spectral_contrast(power.sqrt(), config),
        "chroma": _chroma(power, config),
        "zcr": _zero_crossing_rate(short_frames[keep]),
        "rms_db": rms_db[keep],
        "log2_f0": log2_f0,
        "periodicity": periodicity,
        "voiced": voiced,
    }

    per_clip = {name: values.split(sizes) for name, values in stacked.items()}
    return [_clip_matrix({name: parts[row] for name, parts in per_clip.items()}, config) for row in range(len(sizes))]


def _clip_matrix(clip: dict[str, torch.Tensor], config: FeatureConfig) -> np.ndarray:
    """One clip's [frames, dim] matrix, filling the pitch of unvoiced frames from the whole contour."""
    columns = [
        clip["log_mel"],
        clip["mfcc"],
        clip["mfcc_delta"],
        clip["mfcc_delta2"],
        clip["contrast"],
        clip["chroma"],
        clip["zcr"][:, None],
        clip["rms_db"][:, None],
        _fill_unvoiced(clip["log2_f0"], clip["voiced"], config)[:, None],
        clip["periodicity"][:, None],
    ]
    return torch.cat(columns, dim=1).numpy()


def _deltas(values: torch.Tensor, sizes: list[int], width: int) -> torch.Tensor:
    """Regression deltas over time of stacked [frames, dims] clips of `sizes` frames each.

    The formula of `torchaudio.functional.compute_deltas` (and HTK): sum_n n (c[t+n] - c[t-n])
    / (2 sum_n n^2) for n = 1..width // 2, with each clip's first and last frame repeated past
    its edges. Neighbours are found by index, clamped to the clip, so the whole batch takes a
    few tensor operations instead of two convolutions per clip: 1.28x the clips per second.
    """
    reach = width // 2
    lengths = torch.tensor(sizes)
    ends = lengths.cumsum(0)
    clip_start = torch.repeat_interleave(ends - lengths, lengths)
    clip_last = torch.repeat_interleave(ends - 1, lengths)
    frame = torch.arange(len(values))
    total = torch.zeros_like(values)
    for n in range(1, reach + 1):
        ahead = values[torch.minimum(frame + n, clip_last)]
        behind = values[torch.maximum(frame - n, clip_start)]
        total += n * (ahead - behind)
    return total / (2 * sum(n * n for n in range(1, reach + 1)))


# --- Spectral features -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Filterbanks:
    mel: torch.Tensor  # [n_mels, bins]
    dct: torch.Tensor  # [n_mfcc, n_mels]
    chroma: torch.Tensor  # [n_chroma, bins]
    contrast_bands: list[tuple[int, int, int]]  # see _contrast_bands
    window: torch.Tensor  # [win_length] Hann
    to_pitch_rate: torchaudio.transforms.Resample  # sampling_rate -> pitch_sampling_rate


@functools.lru_cache(maxsize=8)
def _filterbanks(config: FeatureConfig) -> _Filterbanks:
    """The fixed matrices a config implies, built once per config."""
    bins = config.n_fft // 2 + 1
    mel = torchaudio.functional.melscale_fbanks(
        bins, config.f_min, config.f_max, config.n_mels, config.sampling_rate, norm="slaney", mel_scale="slaney"
    ).T
    dct = torchaudio.functional.create_dct(config.n_mfcc, config.n_mels, norm="ortho").T
    chroma = torch.from_numpy(
        librosa.filters.chroma(sr=config.sampling_rate, n_fft=config.n_fft, n_chroma=config.n_chroma)
    ).float()
    return _Filterbanks(
        mel=mel.contiguous(),
        dct=dct.contiguous(),
        chroma=chroma,
        contrast_bands=_contrast_bands(config),
        window=torch.hann_window(config.win_length),
        to_pitch_rate=torchaudio.transforms.Resample(config.sampling_rate, config.pitch_sampling_rate),
    )


def _power_spectrogram(audio: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """[clips, bins, frames] power spectrum."""
    spectrum = torch.stft(
        audio,
        config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=_filterbanks(config).window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spectrum.real.square() + spectrum.imag.square()


def _to_db(power: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(power.clamp_min(POWER_FLOOR))


def _contrast_bands(config: FeatureConfig) -> list[tuple[int, int, int]]:
    """(first bin, end bin, bins averaged) per octave band, with librosa's band edges.

    Bands are [0, fmin], [fmin, 2 fmin], ... and the last runs to the Nyquist frequency; as in
    `librosa.feature.spectral_contrast`, each band also takes the bin just below its lower edge
    and, except the last, leaves out its top bin.
    """
    frequencies = librosa.fft_frequencies(sr=config.sampling_rate, n_fft=config.n_fft)
    edges = [0.0] + [config.contrast_fmin * 2**k for k in range(config.contrast_bands + 1)]
    if edges[-2] >= config.sampling_rate / 2:
        raise SERError(
            f"Spectral contrast bands reach {edges[-2]:.0f} Hz, above the Nyquist frequency; "
            "lower contrast_fmin or contrast_bands."
        )
    bands = []
    for number, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = np.flatnonzero((frequencies >= low) & (frequencies <= high))
        first = max(0, inside[0] - 1) if number > 0 else inside[0]
        last_band = number == config.contrast_bands
        end = len(frequencies) if last_band else inside[-1] + 1
        count = max(1, round(config.contrast_quantile * (end - first)))
        bands.append((int(first), int(end if last_band else end - 1), count))
    return bands


def _spectral_contrast(magnitude: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """[frames, bands]: per octave band, the dB gap between its strongest and weakest bins (Jiang et al., 2002)."""
    contrasts = []
    for first, end, count in _filterbanks(config).contrast_bands:
        band = magnitude[:, first:end]
        peak = _mean_of_largest(band, count)
        valley = -_mean_of_largest(-band, count)
        contrasts.append(_to_db(peak) - _to_db(valley))  # as librosa: dB of magnitudes taken as power
    return torch.stack(contrasts, dim=1)


def _mean_of_largest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Mean of the `count` largest values of each row; for the 1-3 bins contrast averages,
    repeated max is several times faster than topk or sort."""
    total = torch.zeros(len(values))
    for taken in range(count):
        largest, where = values.max(dim=1)
        total += largest
        if taken + 1 < count:
            values = values.scatter(1, where[:, None], -math.inf)
    return total / count


def _chroma(power: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """[frames, classes]: energy per pitch class, each frame scaled so its strongest class is 1 (as librosa)."""
    chroma = power @ _filterbanks(config).chroma.T
    return chroma / chroma.amax(dim=1, keepdim=True).clamp_min(POWER_FLOOR)


# --- Waveform features -----------------------------------------------------------------------


def _frames(audio: torch.Tensor, frame_length: int, hop_length: int) -> torch.Tensor:
    """[clips, frames, frame_length], centred like the STFT: frame t is around sample t * hop."""
    padded = torch.nn.functional.pad(audio, (frame_length // 2, frame_length // 2))
    return padded.unfold(-1, frame_length, hop_length)


def _zero_crossing_rate(frames: torch.Tensor) -> torch.Tensor:
    signs = torch.signbit(frames)
    return (signs[..., 1:] != signs[..., :-1]).float().mean(-1)


def _pitch_frames(audio: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """[clips, frames, pitch_frame_length] of the audio at pitch_sampling_rate, one per STFT frame.

    F0 lies far below 4 kHz, so pitch is found at 8 kHz by default: a quarter of the work.
    """
    rate = config.pitch_sampling_rate
    hop = config.hop_length * rate // config.sampling_rate
    if hop * config.sampling_rate != config.hop_length * rate:
        raise SERError("hop_length must be a whole number of samples at pitch_sampling_rate.")
    low_rate_audio = _filterbanks(config).to_pitch_rate(audio)
    return _frames(low_rate_audio, config.pitch_frame_length, hop)


def _yin(frames: torch.Tensor, config: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectorised YIN (de Cheveigné & Kawahara, 2002) of [frames, samples]: log2 F0, periodicity, voicing.

    The difference function d(tau) = sum_j (x_j - x_{j+tau})^2 over a window of W samples is
    expanded into energies minus twice an autocorrelation, which one FFT per frame gives.
    """
    rate = config.pitch_sampling_rate
    min_lag = math.floor(rate / config.pitch_fmax)
    max_lag = math.ceil(rate / config.pitch_fmin)
    window = config.pitch_frame_length - max_lag
    if window < max_lag:
        raise SERError("pitch_frame_length must be at least twice the longest period (pitch_sampling_rate / pitch_fmin).")
    # Lags up to max_lag of a W-sample head stay inside the frame, so a frame-sized FFT has no
    # circular wrap-around.
    size = 2 ** math.ceil(math.log2(config.pitch_frame_length))
    spectrum = torch.fft.rfft(frames, size)
    head = torch.fft.rfft(frames[..., :window], size)
    correlation = torch.fft.irfft(spectrum * head.conj(), size)[..., : max_lag + 1]
    energy = torch.nn.functional.pad(frames.square().cumsum(-1), (1, 0))
    lagged_energy = energy[..., window : window + max_lag + 1] - energy[..., : max_lag + 1]
    difference = (energy[..., window, None] + lagged_energy - 2 * correlation).clamp_min(0)

    # Cumulative-mean normalisation: d'(tau) = d(tau) * tau / sum_{k<=tau} d(k), d'(0) = 1.
    lags = torch.arange(max_lag + 1, dtype=difference.dtype)
    running_sum = difference[..., 1:].cumsum(-1).clamp_min(POWER_FLOOR)
    normalised = torch.cat(
        [torch.ones_like(difference[..., :1]), difference[..., 1:] * lags[1:] / running_sum], dim=-1
    )

    # The first local minimum under the threshold is the period; without one, the deepest dip.
    search = normalised[..., min_lag : max_lag + 1]
    is_minimum = torch.zeros_like(search, dtype=torch.bool)
    is_minimum[..., 1:-1] = (search[..., 1:-1] < search[..., :-2]) & (search[..., 1:-1] <= search[..., 2:])
    candidates = is_minimum & (search < config.yin_threshold)
    first_candidate = candidates.float().argmax(-1)
    best = torch.where(candidates.any(-1), first_candidate, search.argmin(-1))
    period = best.float() + min_lag + _parabolic_offset(search, best)
    dip = search.gather(-1, best[..., None]).squeeze(-1)
    voiced = candidates.any(-1)
    log2_f0 = torch.log2(rate / period.clamp_min(1.0))
    return log2_f0, (1 - dip).clamp(0, 1), voiced


def _parabolic_offset(curve: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Sub-sample position of a minimum from a parabola through it and its neighbours."""
    inner = index.clamp(1, curve.shape[-1] - 2)
    left, centre, right = (curve.gather(-1, (inner + step)[..., None]).squeeze(-1) for step in (-1, 0, 1))
    curvature = left - 2 * centre + right
    offset = torch.where(curvature > 0, 0.5 * (left - right) / curvature.clamp_min(POWER_FLOOR), 0.0)
    return torch.where(inner == index, offset.clamp(-1, 1), 0.0)


def _fill_unvoiced(log2_f0: torch.Tensor, voiced: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Replace unvoiced frames' pitch by linear interpolation between voiced neighbours.

    A pitch track with holes is hard to normalise; interpolated contours are the usual prosody
    representation, and the periodicity column still tells voiced from unvoiced frames.
    """
    positions = np.flatnonzero(voiced.numpy())
    if positions.size == 0:  # no voiced frame at all: the middle of the search range
        return torch.full_like(log2_f0, math.log2(math.sqrt(config.pitch_fmin * config.pitch_fmax)))
    filled = np.interp(np.arange(len(log2_f0)), positions, log2_f0.numpy()[positions])
    return torch.from_numpy(filled.astype(np.float32))


def _speech_span(rms_db: torch.Tensor, config: FeatureConfig) -> slice:
    """The frames from the first to the last within `trim_top_db` of the loudest, plus a margin."""
    loud = torch.nonzero(rms_db >= rms_db.max() - config.trim_top_db).squeeze(1)
    margin = round(config.trim_margin_s * config.sampling_rate / config.hop_length)
    return slice(max(0, int(loud[0]) - margin), min(len(rms_db), int(loud[-1]) + margin + 1))
