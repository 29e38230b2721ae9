"""Issue #18 probe: speaker calibration from neutral speech in the model's answers, not its statistics.

    PYTHONPATH=. .venv/bin/python experiments/neutral_output_offset.py runs/whisper-3corpora-l2-3

The shipped neutral calibration moves a speaker's encoder statistics by what their neutral speech
says of their voice (ser_train.calibration). This probe asks whether moving the model's answers
instead carries further: a speaker's mean log-probabilities over their neutral clips, against
the mean neutral profile of the other corpora's speakers, is subtracted (times ALPHA) from the
log-probabilities of their other clips. It reads a leave-one-corpus-out run's held-out answers
(`corpora/<corpus>/held_out.npz`), so no model runs. Settings were fixed before scoring.

The shipped row scores only clips that are not neutral (every neutral clip calibrates), where
answering "neutral" less is free; here half of each speaker's neutral and calm clips (at least
MIN_NEUTRAL_CALIBRATION_S) calibrate and the other half is scored as neutral, so it is not.
Caveat: the reference profile comes from the other corpora's held-out answers, given by models
that trained on the scored corpus; shipping this would need it from the nested fits instead. A
probe behind a figure in docs/GENERALISATION.md, not part of the package.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from ser_train.calibration import NEUTRAL_EMOTIONS
from ser_train.corpora import load_corpora
from ser_train.data import EMOTIONS, audio_arrays
from ser_train.held_out import MIN_NEUTRAL_CALIBRATION_S

DATA = "../shared/data"
CORPORA = ("emovo-opus-16k", "ravdess-opus-16k", "tess-opus-16k")
ALPHAS = (0.0, 0.5, 1.0)  # 0: uncalibrated, on the same scored clips
SEED = 0


def load_answers(run: str, corpus: str) -> dict:
    """A held-out corpus's answers with each clip's speaker, emotion (calm as neutral) and length."""
    dataset = load_corpora(f"{DATA}/{corpus}")
    answers = np.load(f"{run}/corpora/{corpus}/held_out.npz")
    assert (np.asarray(dataset["emotion"]) == answers["emotions"]).all(), "answers and corpus out of order"
    emotions = np.array(["neutral" if EMOTIONS[e] in NEUTRAL_EMOTIONS else EMOTIONS[e] for e in dataset["emotion"]])
    labels = [label for label in answers["trained_labels"] if label in set(emotions)]
    shared = answers["probabilities"][:, [EMOTIONS.index(label) for label in labels]]
    return {
        "labels": labels,
        "log_probabilities": np.log(shared / shared.sum(axis=1, keepdims=True)),
        "emotions": emotions,
        "speakers": np.asarray(dataset["actor"]),
        "seconds": np.array([len(waveform) for waveform in audio_arrays(dataset)]) / 16_000,
    }


def calibration_halves(corpus: dict, rng: np.random.Generator) -> dict:
    """speaker -> (calibration rows: half of their neutral clips, scored rows: the rest)."""
    halves = {}
    for speaker in np.unique(corpus["speakers"]):
        own = np.flatnonzero(corpus["speakers"] == speaker)
        neutral = rng.permutation(own[corpus["emotions"][own] == "neutral"])
        calibration = neutral[: len(neutral) // 2]
        if corpus["seconds"][calibration].sum() >= MIN_NEUTRAL_CALIBRATION_S:
            halves[speaker] = (calibration, np.setdiff1d(own, calibration))
    return halves


def neutral_profiles(corpus: dict, halves: dict, labels: list[str]) -> list[np.ndarray]:
    """Each calibrated speaker's mean log-probabilities over their calibration clips, on `labels`."""
    columns = [corpus["labels"].index(label) for label in labels]
    profiles = []
    for calibration, _ in halves.values():
        mean = corpus["log_probabilities"][calibration].mean(axis=0)[columns]
        profiles.append(mean - np.log(np.exp(mean).sum()))
    return profiles


def scores(corpus: dict, halves: dict, reference: np.ndarray) -> dict:
    """UA, the neutral and the most-predicted shares for each ALPHA."""
    labels, log_probabilities = corpus["labels"], corpus["log_probabilities"]
    references, answers = [], {alpha: [] for alpha in ALPHAS}
    for calibration, scored in halves.values():
        offset = log_probabilities[calibration].mean(axis=0) - reference
        references += [labels.index(emotion) for emotion in corpus["emotions"][scored]]
        for alpha in ALPHAS:
            answers[alpha] += list((log_probabilities[scored] - alpha * offset).argmax(axis=1))
    row = {}
    for alpha, predicted in answers.items():
        counts = np.bincount(predicted, minlength=len(labels))
        row[alpha] = (
            balanced_accuracy_score(references, predicted),
            counts[labels.index("neutral")] / len(predicted),
            counts.max() / len(predicted),
        )
    return row


def main() -> None:
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    run = sys.argv[1]
    rng = np.random.default_rng(SEED)
    corpora = {corpus: load_answers(run, corpus) for corpus in CORPORA}
    halves = {corpus: calibration_halves(answers, rng) for corpus, answers in corpora.items()}
    print("| held-out | " + " | ".join(f"alpha {alpha:g}: UA / neutral share / top share" for alpha in ALPHAS) + " | speakers |")
    print("|---" * (len(ALPHAS) + 2) + "|")
    uas = []
    for corpus, answers in corpora.items():
        others = [profile for other in CORPORA if other != corpus for profile in neutral_profiles(corpora[other], halves[other], answers["labels"])]
        row = scores(answers, halves[corpus], np.mean(others, axis=0))
        uas.append([row[alpha][0] for alpha in ALPHAS])
        cells = " | ".join(f"{ua:.3f} / {neutral:.0%} / {top:.0%}" for ua, neutral, top in row.values())
        print(f"| {corpus} | {cells} | {len(halves[corpus])} |")
    print("| **mean UA** | " + " | ".join(f"{ua:.3f}" for ua in np.mean(uas, axis=0)) + " | |")


if __name__ == "__main__":
    main()
