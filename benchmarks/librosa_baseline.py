"""The usual public SER recipe, as the baseline our feature extraction is measured against.

Utterance-level librosa statistics: MFCC (+ delta), chroma, mel spectrogram, spectral contrast,
zero-crossing rate, RMS, spectral centroid, bandwidth and roll-off, each summarised over time
by mean, standard deviation, maximum and minimum. Each librosa call computes its own STFT, as
the public notebooks do; that is the cost being compared.
"""

from __future__ import annotations

import librosa
import numpy as np

N_MFCC = 40
N_MELS = 128


def utterance_statistics(waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
    """One fixed-length vector per clip (the input of the usual MLP/SVM)."""
    mfcc = librosa.feature.mfcc(y=waveform, sr=sampling_rate, n_mfcc=N_MFCC)
    frame_features = [
        mfcc,
        librosa.feature.delta(mfcc),
        librosa.feature.chroma_stft(y=waveform, sr=sampling_rate),
        librosa.power_to_db(librosa.feature.melspectrogram(y=waveform, sr=sampling_rate, n_mels=N_MELS)),
        librosa.feature.spectral_contrast(y=waveform, sr=sampling_rate),
        librosa.feature.zero_crossing_rate(waveform),
        librosa.feature.rms(y=waveform),
        librosa.feature.spectral_centroid(y=waveform, sr=sampling_rate),
        librosa.feature.spectral_bandwidth(y=waveform, sr=sampling_rate),
        librosa.feature.spectral_rolloff(y=waveform, sr=sampling_rate),
    ]
    return np.concatenate(
        [
            np.concatenate([f.mean(axis=1), f.std(axis=1), f.max(axis=1), f.min(axis=1)])
            for f in frame_features
        ]
    )
