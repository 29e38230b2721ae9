"""Issue #18 probe: would other temperatures make held-out confidence mean what it says?

    PYTHONPATH=. .venv/bin/python experiments/calibrated_confidence.py runs/whisper-3corpora-channel
    PYTHONPATH=. .venv/bin/python experiments/calibrated_confidence.py runs/cnn-3corpora-channel
    PYTHONPATH=. .venv/bin/python experiments/calibrated_confidence.py runs/whisper-6corpora-cv --bias-only

On a finished `train ... --leave-one-corpus-out` run over RAVDESS, TESS and EMOVO (its saved
held-out fits, corpora/<corpus>/, and their nested fits, corpora/<corpus>/temperature/<other>/),
the held-out answers are tempered three ways, each fitted on the nested fits' answers only (the
scored corpus never tunes anything), and their ECE compared:

- "shipped": one temperature fitted on the nested fits' uncalibrated answers, applied to every
  row (uncalibrated, neutral calibration, the mood prompt), the rule shipped until 2026-12-06;
- a temperature per row: fitted on the nested fits' answers calibrated the same way (the
  protocol's own draws, `SpeakerCalibrationRows`), the rule the runner has applied since;
- for Whisper, a temperature that grows or shrinks with the clip's distance from the fit's
  training inputs: log T = a + b * log(mean squared standardised statistic), (a, b) by
  log-likelihood.

Also the temperature that would have minimised each row's ECE (chosen on the scored answers: a
bound, not a method), and a per-class bias beside the temperature (vector scaling's bias,
L2 0 / 0.01 / 0.1), fitted on the nested fits' uncalibrated answers: it moves answers, so UA and
the most-predicted share are reported for it too. Every clip is represented once (representations
do not depend on the head); each fit then answers from them. A probe behind a figure in
docs/GENERALISATION.md, not part of the package; it writes runs/confidence/<run>.json.

`--bias-only` fits just the per-class bias rule, from the run's saved answers alone (seconds, no
clip represented again), on every held-out corpus of any run (the six-corpus one among them), and
prints its table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from ser_train.confidence import PROBABILITY_FLOOR, expected_calibration_error, fit_temperature, with_temperature
from ser_train.corpora import load_corpora
from ser_train.data import EMOTIONS, audio_arrays
from ser_train.evaluation import SharedScoring
from ser_train.held_out import SpeakerCalibrationRows
from ser_train.inference import load_model
from ser_train.models.whisper import REPRESENTATION
from ser_train.training.runner import CORPORA_DIR, HELD_OUT_FILE, TEMPERATURE_DIR

DATA = "../shared/data"
CORPORA = ["ravdess-opus-16k", "tess-opus-16k", "emovo-opus-16k"]  # the runs' order
ROWS = ("uncalibrated", "neutral", "mood")
OUTPUT = Path("runs/confidence")


def fit_answers(fit_dir: Path, corpus: str, dataset, representations: list[dict]) -> dict:
    """One fit's raw answers for one corpus, over the shared emotions: uncalibrated and with each
    calibration row, with their references; for Whisper, each clip's distance from the fit's
    training inputs."""
    model = load_model(str(fit_dir))
    rows_of = np.flatnonzero(np.array(dataset["corpus"]) == corpus)
    test = dataset.select(rows_of)
    model.represent = lambda waveforms: [representations[i] for i in rows_of]
    saved = np.load(fit_dir / HELD_OUT_FILE)
    scoring = SharedScoring.of(test, model.labels, saved["trained_labels"].tolist())
    rows = SpeakerCalibrationRows(model, test, audio_arrays(test), scoring, temperature=1.0)
    # The cached representations answer exactly as the run's own pass did.
    assert np.abs(rows.uncalibrated - saved["probabilities"]).max() < 1e-4
    found = {"uncalibrated": (scoring.probabilities(rows.uncalibrated[scoring.kept]), scoring.references)}
    for row, got in (("neutral", rows.neutral_answers()), ("mood", rows.mood_answers())):
        found[row] = (scoring.probabilities(got.probabilities), got.references)
    head = getattr(model._calibration_support(), "model", None)
    if hasattr(head, "input_mean"):  # Whisper: the statistics' standardisation
        statistics = np.concatenate([representations[i][REPRESENTATION] for i in rows_of[scoring.kept]])
        standardised = (statistics - head.input_mean.numpy()) / head.input_std.numpy()
        found["distance"] = np.log((standardised**2).mean(axis=1))
    return found


def with_temperatures(probabilities: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    logits = np.log(np.maximum(probabilities, PROBABILITY_FLOOR)) / temperatures[:, None]
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_distance_temperature(sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """(a, b) of log T = a + b * distance, by mean negative log-likelihood, each set the same weight."""
    def loss(ab):
        return np.mean([
            -np.log(np.maximum(with_temperatures(p, np.exp(ab[0] + ab[1] * d))[np.arange(len(r)), r], PROBABILITY_FLOOR)).mean()
            for p, r, d in sets
        ])

    return minimize(loss, x0=[0.0, 0.0], method="Nelder-Mead").x


def ece_bound(probabilities: np.ndarray, references: np.ndarray) -> tuple[float, float]:
    """The temperature minimising ECE on these very answers, and that ECE (a bound, not a method)."""
    grid = np.exp(np.linspace(np.log(0.3), np.log(20.0), 200))
    eces = [expected_calibration_error(with_temperature(probabilities, t), references) for t in grid]
    return float(grid[int(np.argmin(eces))]), float(min(eces))


BIAS_L2 = (0.0, 0.01, 0.1)


def shared_log_probabilities(fit_dir: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A fit's saved answers for its held-out corpus: log probabilities over every label, the
    references among the shared emotions, and those emotions' label ids."""
    saved = np.load(fit_dir / HELD_OUT_FILE)
    labels = list(EMOTIONS)
    known = [labels.index(name) for name in saved["trained_labels"].tolist()]
    shared = [e for e in sorted(set(saved["emotions"].tolist())) if e in known]
    kept = np.isin(saved["emotions"], shared)
    references = np.array([shared.index(e) for e in saved["emotions"][kept]])
    return np.log(np.maximum(saved["probabilities"][kept], PROBABILITY_FLOOR)), references, shared


def biased(log_probabilities: np.ndarray, shared: list[int], parameters: np.ndarray) -> np.ndarray:
    """softmax(log p / T + bias) over the shared emotions; parameters = (log T, bias per label)."""
    logits = (log_probabilities / np.exp(parameters[0]) + parameters[1:])[:, shared]
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def bias_entry(run: Path, corpus: str, l2: float) -> dict:
    """Temperature and per-class bias fitted on the nested fits' answers, applied to the held-out fit's."""
    nested = [shared_log_probabilities(fit.parent) for fit in sorted((run / CORPORA_DIR / corpus / TEMPERATURE_DIR).glob(f"*/{HELD_OUT_FILE}"))]

    def loss(parameters):
        likelihood = [-np.log(np.maximum(biased(lp, sh, parameters)[np.arange(len(r)), r], PROBABILITY_FLOOR)).mean() for lp, r, sh in nested]
        return np.mean(likelihood) + l2 * np.sum(parameters[1:] ** 2)

    parameters = minimize(loss, np.zeros(1 + len(EMOTIONS)), method="L-BFGS-B").x
    log_probabilities, references, shared = shared_log_probabilities(run / CORPORA_DIR / corpus)
    probabilities = biased(log_probabilities, shared, parameters)
    predicted = probabilities.argmax(axis=1)
    return {
        "ua": float(np.mean([(predicted[references == k] == k).mean() for k in np.unique(references)])),
        "top_share": float(np.bincount(predicted).max() / len(predicted)),
        "ece": expected_calibration_error(probabilities, references),
        "temperature": float(np.exp(parameters[0])),
    }


def held_out_entry(run: Path, corpus: str, dataset, representations) -> dict:
    held = fit_answers(run / CORPORA_DIR / corpus, corpus, dataset, representations)
    nested = {
        other: fit_answers(run / CORPORA_DIR / corpus / TEMPERATURE_DIR / other, other, dataset, representations)
        for other in CORPORA
        if other != corpus
    }
    shipped = fit_temperature(*zip(*[answers["uncalibrated"] for answers in nested.values()]))
    entry = {"temperature": shipped}
    for row in ROWS:
        probabilities, references = held[row]
        per_row = fit_temperature(*zip(*[answers[row] for answers in nested.values()]))
        best, best_ece = ece_bound(probabilities, references)
        entry[row] = {
            "answers": len(references),
            "accuracy": float((probabilities.argmax(axis=1) == references).mean()),
            "ece_untempered": expected_calibration_error(probabilities, references),
            "ece_shipped": expected_calibration_error(with_temperature(probabilities, shipped), references),
            "temperature_per_row": per_row,
            "ece_per_row": expected_calibration_error(with_temperature(probabilities, per_row), references),
            "temperature_bound": best,
            "ece_bound": best_ece,
        }
    if "distance" in held:
        a, b = fit_distance_temperature([(*answers["uncalibrated"], answers["distance"]) for answers in nested.values()])
        probabilities, references = held["uncalibrated"]
        temperatures = np.exp(a + b * held["distance"])
        entry["distance_temperature"] = {
            "a": float(a), "b": float(b), "median_temperature": float(np.median(temperatures)),
            "ece": expected_calibration_error(with_temperatures(probabilities, temperatures), references),
        }
    entry["bias"] = {str(l2): bias_entry(run, corpus, l2) for l2 in BIAS_L2}
    return entry


def main(run: Path) -> None:
    dataset = load_corpora([f"{DATA}/{corpus}" for corpus in CORPORA])
    representations = load_model(str(run / CORPORA_DIR / CORPORA[0])).represent(audio_arrays(dataset))
    results = {}
    for corpus in CORPORA:
        results[corpus] = held_out_entry(run, corpus, dataset, representations)
        print(corpus, json.dumps(results[corpus], indent=1), flush=True)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{run.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| held-out corpus | row | accuracy | ECE untempered | shipped T | per-row T | bound |")
    for corpus, entry in results.items():
        for row in ROWS:
            r = entry[row]
            print(f"| {corpus} | {row} | {r['accuracy']:.3f} | {r['ece_untempered']:.3f} | {r['ece_shipped']:.3f} ({entry['temperature']:.2f}) "
                  f"| {r['ece_per_row']:.3f} ({r['temperature_per_row']:.2f}) | {r['ece_bound']:.3f} ({r['temperature_bound']:.2f}) |")
        if "distance_temperature" in entry:
            print(f"| {corpus} | distance T | | | | {entry['distance_temperature']['ece']:.3f} | |")
    print("\n| held-out corpus | bias L2 | UA | top share | ECE |")
    for corpus, entry in results.items():
        for l2, got in entry["bias"].items():
            print(f"| {corpus} | {l2} | {got['ua']:.3f} | {got['top_share']:.2f} | {got['ece']:.3f} |")


def bias_only(run: Path) -> None:
    """The per-class bias rule alone, on every held-out corpus of `run`, from its saved answers."""
    corpora = sorted(path.parent.name for path in (run / CORPORA_DIR).glob(f"*/{HELD_OUT_FILE}"))
    print("| held-out corpus | bias L2 | UA | top share | ECE | temperature |")
    for l2 in BIAS_L2:
        for corpus in corpora:
            got = bias_entry(run, corpus, l2)
            print(f"| {corpus} | {l2} | {got['ua']:.3f} | {got['top_share']:.2f} | {got['ece']:.3f} | {got['temperature']:.2f} |", flush=True)


if __name__ == "__main__":
    if "--bias-only" in sys.argv:
        bias_only(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]))
