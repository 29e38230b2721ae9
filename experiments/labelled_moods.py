"""Does knowing which prompted mood each calibration clip was said in help, beyond calibrating?

The mood prompt asks a visitor for one line said calm, happy, sad and angry, twice round, and
calibrates the model to their voice on it (`ser_train.calibration`, source "moods"): it uses
that the sample spans those moods, not which clip is which. Those labels are known, though: the
prompt said them. This probe adds one step after calibration: per speaker, a bias on the
log-probabilities of the four prompted moods (calm and neutral sharing one), zero-mean over the
four so that the other emotions keep their place, fitted to the calibration clips' own labels
with an L2 penalty (LAMBDA, fixed beforehand; two others printed beside, not chosen between),
each calibration clip answered by a calibration from the other seven. It would correct a speaker
whose every clip leans to one of those moods, the "one emotion takes 40 % of a corpus" failure.

Measured with a finished model on corpora it never trained on (the mood row's own protocol:
CLIPS_PER_PROMPTED_MOOD clips of each prompted mood per speaker, PROTOCOL_REPEATS draws, the
speaker's other clips scored on the shared emotions), against the mood calibration alone on the
same clips. Representations are cached under runs/probe/labelled_moods/. A probe behind a figure
in docs/CALIBRATION.md, not part of the package.

    PYTHONPATH=. python experiments/labelled_moods.py models/six-corpora-whisper-base $X/nemo-opus-16k $X/ased-opus-16k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from ser_train.audio import SAMPLING_RATE
from ser_train.calibration import CLIPS_PER_PROMPTED_MOOD, PROMPTED_MOODS, PROTOCOL_REPEATS, PROTOCOL_SEED, prompted_mood_clips
from ser_train.corpora import load_corpus
from ser_train.data import audio_arrays
from ser_train.evaluation import SharedScoring
from ser_train.inference import load_model

LAMBDA = 1.0  # L2 penalty on the four biases, against the summed log-likelihood of the 8 clips
OTHER_LAMBDAS = (0.25, 4.0)
CACHE = Path("runs/probe/labelled_moods")


def mood_columns(labels: list[str]) -> list[list[int]]:
    """The model's output columns of each prompted mood (calm and neutral are one mood)."""
    return [[labels.index(name) for name in mood if name in labels] for mood in PROMPTED_MOODS]


def with_bias(log_probabilities: np.ndarray, bias: np.ndarray, columns: list[list[int]]) -> np.ndarray:
    """Log-probabilities with each prompted mood's columns moved by its bias, renormalised."""
    moved = log_probabilities.astype(np.float64)  # float32 would hide the optimiser's finite steps
    for mood, mood_columns in enumerate(columns):
        moved[:, mood_columns] += bias[mood]
    return moved - np.logaddexp.reduce(moved, axis=1, keepdims=True)


def fit_mood_bias(log_probabilities: np.ndarray, moods: np.ndarray, columns: list[list[int]], penalty: float) -> np.ndarray:
    """[len(PROMPTED_MOODS)] zero-mean biases maximising the calibration clips' likelihood of
    their prompted mood (a mood's probability: the sum over its columns) minus penalty * |b|^2."""

    def loss(raw: np.ndarray) -> float:
        bias = raw - raw.mean()
        moved = with_bias(log_probabilities, bias, columns)
        mood_log_p = [np.logaddexp.reduce(moved[clip, columns[mood]]) for clip, mood in enumerate(moods)]
        return float(-np.sum(mood_log_p) + penalty * np.sum(bias**2))

    raw = minimize(loss, np.zeros(len(columns)), method="L-BFGS-B").x
    return raw - raw.mean()


def representations_of(model, corpus_folder: str, waveforms: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each clip's representation, computed once and cached (one array per clip per name)."""
    path = CACHE / f"{Path(corpus_folder).name}.npz"
    if path.exists():
        stored = np.load(path)
        names = sorted({key.split("/", 1)[1] for key in stored.files})
        return [{name: stored[f"{i}/{name}"] for name in names} for i in range(len(waveforms))]
    representations = model.represent(waveforms)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{i}/{name}": value for i, clip in enumerate(representations) for name, value in clip.items()})
    return representations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("corpora", nargs="+")
    args = parser.parse_args()
    model = load_model(args.model)
    labels = list(model.labels)
    columns = mood_columns(labels)
    penalties = (LAMBDA, *OTHER_LAMBDAS)
    print(f"| corpus | speakers | uncalibrated, same clips | mood calibration | + labelled bias, lambda {' / '.join(f'{p:g}' for p in penalties)} | top share: calibration / + bias ({LAMBDA:g}) |")
    print("|---|---|---|---|---|---|")
    for folder in args.corpora:
        dataset = load_corpus(folder)
        names = dataset.features["emotion"].names
        emotions = np.array([names[e] for e in dataset["emotion"]])
        speakers = np.asarray(dataset["actor"])
        waveforms = audio_arrays(dataset)
        seconds = np.array([len(w) for w in waveforms]) / SAMPLING_RATE
        scoring = SharedScoring.of(dataset, labels)  # the bundled models trained on all their labels
        position = {row: i for i, row in enumerate(scoring.kept)}
        representations = representations_of(model, folder, waveforms)
        rng = np.random.default_rng(PROTOCOL_SEED)
        moods = np.repeat(np.arange(len(PROMPTED_MOODS)), CLIPS_PER_PROMPTED_MOOD)  # prompted_mood_clips' order
        uncalibrated = model.predict_represented(representations, None)
        scored, calibrated, biased, used = [], [], {p: [] for p in penalties}, set()
        for _ in range(PROTOCOL_REPEATS):
            for speaker in np.unique(speakers):
                own = np.flatnonzero(speakers == speaker)
                positions = prompted_mood_clips(emotions[own], rng)
                if positions is None:
                    continue
                calibration_clips = own[positions]
                rest = [row for row in np.setdiff1d(own, calibration_clips) if row in position]
                if not rest:
                    continue
                used.add(speaker)
                calibration = model.calibration_from([representations[i] for i in calibration_clips], "moods", float(seconds[calibration_clips].sum()))
                # Each calibration clip answered by a calibration from the other seven: answered by one
                # that holds it, a clip is already pulled to its mood (the biases fitted on those
                # answers came out near zero, and changed no UA in the third decimal).
                own_answers = np.concatenate([
                    model.predict_represented(
                        [representations[clip]],
                        model.calibration_from([representations[i] for i in calibration_clips if i != clip], "moods", float(seconds[calibration_clips].sum() - seconds[clip])),
                    )
                    for clip in calibration_clips
                ])
                answers = model.predict_represented([representations[i] for i in rest], calibration)
                log_own, log_answers = np.log(np.maximum(own_answers, 1e-12)), np.log(np.maximum(answers, 1e-12))
                for penalty in penalties:
                    biased[penalty].append(np.exp(with_bias(log_answers, fit_mood_bias(log_own, moods, columns, penalty), columns)))
                calibrated.append(answers)
                scored += rest
        references = scoring.references[[position[row] for row in scored]]

        def ua(probabilities: np.ndarray) -> tuple[float, str]:
            metrics = scoring.metrics(references, scoring.predict_ids(probabilities))
            top = metrics["most_predicted"]
            return metrics["balanced_accuracy"], f"{top['emotion']} {100 * top['share']:.0f} %"

        plain, plain_top = ua(np.concatenate(calibrated))
        with_biases = [ua(np.concatenate(biased[p])) for p in penalties]
        before = ua(uncalibrated[scored])[0]
        print(
            f"| {Path(folder).name} | {len(used)} | {before:.3f} | {plain:.3f} | "
            f"{' / '.join(f'{value:.3f}' for value, _ in with_biases)} | {plain_top} / {with_biases[0][1]} |"
        )


if __name__ == "__main__":
    main()
