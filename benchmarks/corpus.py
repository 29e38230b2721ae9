"""The audio the benchmarks run on: real RAVDESS speech, decoded once through ser_train.data."""

from __future__ import annotations

import itertools
from pathlib import Path

import datasets
import numpy as np
import soundfile

from ser_train.audio import SAMPLING_RATE
from ser_train.data import audio_arrays, load_ravdess
from ser_train.errors import DataError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = PROJECT_ROOT.parent / "shared" / "data" / "ravdess-opus-16k"
CLIP_S = 4.0  # the latency figures are per clip of this length
CLIPS_SCANNED_FOR_LENGTH = 200  # where to look for a clip that long (most RAVDESS clips are 3-5 s)


def waveforms(corpus: Path, count: int | None = None) -> list[np.ndarray]:
    """The first `count` clips of the corpus (all when None) as 16 kHz float32 mono."""
    if not corpus.is_dir():
        raise DataError(f"{corpus}: no RAVDESS copy there; pass --corpus PATH.")
    datasets.disable_progress_bars()  # the table is what a run prints
    dataset = load_ravdess(str(corpus))
    if count is not None:
        dataset = dataset.select(range(min(count, dataset.num_rows)))
    return audio_arrays(dataset)


def four_second_clip(corpus: Path) -> np.ndarray:
    """The first CLIP_S seconds of the first corpus clip that is at least that long."""
    samples = int(CLIP_S * SAMPLING_RATE)
    for waveform in waveforms(corpus, CLIPS_SCANNED_FOR_LENGTH):
        if len(waveform) >= samples:
            return waveform[:samples]
    raise DataError(f"{corpus}: none of the first {CLIPS_SCANNED_FOR_LENGTH} clips lasts {CLIP_S:g} s.")


def write_long_recording(corpus: Path, minutes: float, path: Path) -> Path:
    """A 16-bit 16 kHz WAV of corpus clips back to back (their own silences are the pauses).

    Written clip by clip, so making a long recording does not itself need it all in memory.
    """
    total = int(minutes * 60 * SAMPLING_RATE)
    clips = waveforms(corpus, CLIPS_SCANNED_FOR_LENGTH)
    written = 0
    with soundfile.SoundFile(path, "w", SAMPLING_RATE, 1, subtype="PCM_16") as out:
        for clip in itertools.cycle(clips):
            if written >= total:
                break
            out.write(clip[: total - written])
            written += len(clip[: total - written])
    return path
