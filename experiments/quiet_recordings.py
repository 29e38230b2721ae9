"""How the bundled default's answers move when a recording is quieter, with and without the level floor.

A visitor's microphone is closer or farther, louder or softer, than the corpora's; the page
records raw sound (no automatic gain), so a quiet microphone reaches the model as it is. This
takes 80 clips of each corpus given (seed 0), plays each at 0, -10, -20, -30 and -40 dB, and
counts how often the default's top emotion is the one it gave at the clip's own level, and how
often it is the clip's label, as shipped (`ser_train.audio.raised_if_quiet` before every pass)
and without that floor; and, of the clips under the floor, in how many Silero hears no speech at
all, as shipped (`vad.frame_speech_probabilities` raises them too) and without. It also prints
each corpus's speech levels (`speech_level_db`), which set the floor. The clips were in the default's training, so the figures measure the level's effect,
not accuracy on voices it never heard.

    PYTHONPATH=. python experiments/quiet_recordings.py ../shared/data/ravdess-opus-16k \
        ../shared/data/tess-opus-16k ../shared/data/emovo-opus-16k
"""

from __future__ import annotations

import sys
from unittest import mock

import numpy as np

from ser_train import inference, vad
from ser_train.audio import QUIET_SPEECH_DB, speech_level_db
from ser_train.corpora import load_corpora
from ser_train.data import audio_arrays
from ser_train.inference import DEFAULT_MODEL, load_model

CLIPS_PER_CORPUS = 80
GAINS_DB = (0, -10, -20, -30, -40)
BATCH = 8


def unraised(waveform: np.ndarray) -> np.ndarray:
    return waveform


def top_answers(model, waveforms: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([model.predict_batch(waveforms[i : i + BATCH]) for i in range(0, len(waveforms), BATCH)]).argmax(axis=1)


def main(sources: list[str]) -> None:
    dataset = load_corpora(sources)
    corpora = np.array(dataset["corpus"])
    waveforms = audio_arrays(dataset)
    levels = np.array([speech_level_db(waveform) for waveform in waveforms])
    print("speech level of each corpus's clips, dB: min / 5th percentile / median")
    for corpus in sorted(set(corpora)):
        print(f"  {corpus}: {' / '.join(f'{v:.1f}' for v in np.percentile(levels[corpora == corpus], [0, 5, 50]))}")
    print(f"  all: min {levels.min():.1f}, median {np.median(levels):.1f}; clips under the floor ({QUIET_SPEECH_DB:g} dB): {(levels < QUIET_SPEECH_DB).sum()}")

    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(corpora == corpus), CLIPS_PER_CORPUS, replace=False) for corpus in sorted(set(corpora))])
    clips = [waveforms[i] for i in picked]
    model = load_model(DEFAULT_MODEL)
    names = dataset.features["emotion"].names
    labels = np.array([model.labels.index(names[dataset[int(i)]["emotion"]]) for i in picked])
    own_level = top_answers(model, clips)
    print(f"\n{len(clips)} clips of {DEFAULT_MODEL}'s training corpora: the top emotion as at the clip's own level / the clip's label")
    print("gain | under the floor | shipped (floor) | without the floor | of those under it, no speech heard: shipped / without")
    for gain_db in GAINS_DB:
        quieter = [(clip * 10 ** (gain_db / 20)).astype(np.float32) for clip in clips]
        under = np.array([speech_level_db(clip) < QUIET_SPEECH_DB for clip in quieter])
        shipped = top_answers(model, quieter)
        with mock.patch.object(inference, "raised_if_quiet", unraised), mock.patch.object(vad, "raised_if_quiet", unraised):
            without = top_answers(model, quieter)
            unheard_without = [vad.speech_seconds(clip) == 0 for clip, low in zip(quieter, under) if low]
        unheard = [vad.speech_seconds(clip) == 0 for clip, low in zip(quieter, under) if low]
        unheard_shares = f"{np.mean(unheard):.0%} / {np.mean(unheard_without):.0%}" if under.any() else "-"
        print(
            f"{gain_db:+d} dB | {under.mean():.0%} | {np.mean(shipped == own_level):.2f} / {np.mean(shipped == labels):.2f} "
            f"| {np.mean(without == own_level):.2f} / {np.mean(without == labels):.2f} | {unheard_shares}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
