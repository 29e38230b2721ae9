"""Honest evaluation: weighted and balanced accuracy, per-class scores, confusion matrix.

The metrics are `evaluate` modules. `evaluate.load("accuracy")` would fetch each metric's script
from the Hugging Face Hub (the wheel ships none), which fails offline and in CI, so the one module
we need is defined here with `evaluate.Metric` and computed by scikit-learn, the same library the
Hub's accuracy/recall/f1/confusion_matrix scripts call.

Every family writes the same `eval_results.json` (see `eval_results`), so cards, plots and
comparisons read one format.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ser_train.calibration import calibrated_as, clips_per_mood
from ser_train.errors import DataError, SERError

EVAL_RESULTS_FILE = "eval_results.json"
CONFIG_FILE = "config.json"  # a model's settings; a multi-corpus run adds its confidence to it
TRAINING_ARGS_FILE = "training_args.json"  # how a run was started: command, data, splits, settings
# `evaluate --held-out-corpora` into a model's own folder: the model itself scored on corpora none
# of its training heard, kept beside (never over) what training measured in eval_results.json.
OUTSIDE_RESULTS_FILE = "outside_eval_results.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def read_record(path: str | Path) -> dict:
    """A JSON record of a run or model (eval_results.json, training_args.json), or {} where there
    is none; a damaged one (cut short, or not a JSON object) is a SERError naming it."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SERError(f"{path} is not valid JSON ({error}); it is damaged.") from None
    if not isinstance(content, dict):
        raise SERError(f"{path} holds no JSON object; it is damaged.")
    return content


def write_record(path: str | Path, content: dict) -> None:
    """Write a JSON record whole or not at all: to a partial file first, then renamed over `path`,
    so a run killed while writing leaves the earlier record (or none), never half of one."""
    path = Path(path)
    partial = path.with_name(f"partial-{path.name}")
    partial.write_text(json.dumps(content, indent=2) + "\n")
    partial.replace(path)


def eval_results_of(model_dir: str | Path) -> dict:
    """A local model folder's eval_results.json, or {} without one."""
    return read_record(Path(model_dir) / EVAL_RESULTS_FILE)


class EmotionClassificationMetrics(evaluate.Metric):
    """Accuracy (WA), balanced accuracy (UA), macro F1, per-class scores and confusion matrix."""

    def __init__(self, labels: list[str], **kwargs):
        super().__init__(**kwargs)
        self.labels = list(labels)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=(
                "Weighted accuracy (WA), unweighted/balanced accuracy (UA: the mean of per-class "
                "recall), macro F1, per-class precision/recall/F1 and the confusion matrix."
            ),
            citation="",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict:
        classes = list(range(len(self.labels)))
        predictions, references = np.asarray(predictions), np.asarray(references)
        precision, recall, f1, support = precision_recall_fscore_support(
            references, predictions, labels=classes, zero_division=0
        )
        present = support > 0  # classes absent from the test set do not count towards UA
        answers = np.bincount(predictions, minlength=len(classes)) if len(predictions) else np.zeros(len(classes), int)
        return {
            "accuracy": float(np.mean(predictions == references)),
            "balanced_accuracy": float(np.mean(recall[present])),
            "macro_f1": float(np.mean(f1[present])),
            "per_class": {
                name: {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(self.labels)
            },
            "confusion_matrix": confusion_matrix(references, predictions, labels=classes).tolist(),
            # A model that answers one emotion for most clips of a new corpus has not generalised,
            # whatever its accuracy on the emotion it keeps saying.
            "most_predicted": {
                "emotion": self.labels[int(answers.argmax())],
                "share": float(answers.max() / max(len(predictions), 1)),
            },
            "labels": self.labels,
            "num_examples": int(len(references)),
        }


def classification_metrics(references, predictions, labels) -> dict:
    """All metrics of one test set, as plain JSON-ready Python values."""
    return EmotionClassificationMetrics(labels).compute(
        predictions=[int(p) for p in predictions], references=[int(r) for r in references]
    )


def per_corpus_metrics(references, predictions, corpora, labels) -> dict[str, dict]:
    """{corpus: metrics of its clips} for a test set that mixes corpora (see ser_train.corpora)."""
    references, predictions, corpora = np.asarray(references), np.asarray(predictions), np.asarray(corpora)
    return {
        str(name): classification_metrics(references[corpora == name], predictions[corpora == name], labels)
        for name in sorted(set(corpora))
    }


# In a training run's results: test clips left out as of an emotion no training clip taught, by emotion.
UNTRAINED_CLIPS_KEY = "untrained_test_clips"


def left_out_clips(clips_by_emotion: dict[str, int]) -> str:
    """The sentence that says which test clips were left out as of emotions the model never learned."""
    counted = ", ".join(f"{count} clip(s) of {emotion}" for emotion, count in clips_by_emotion.items())
    return f"Left out of the test, as no training clip taught their emotion: {counted}."


def unscored_emotions(metrics: dict) -> list[str]:
    """The emotions a test set holds no clip of: its UA, macro F1 and per-class table leave them out."""
    return [name for name, scores in metrics["per_class"].items() if not scores["support"]]


def answers_among(metrics: dict, emotions: list[str]) -> int:
    """How many of a test set's clips the model answered with one of `emotions`: for emotions the
    set holds no clip of, wrong answers that no recall shows."""
    answers = np.asarray(metrics["confusion_matrix"]).sum(axis=0)
    return int(sum(answers[metrics["labels"].index(name)] for name in emotions))


def cross_validation_summary(fold_metrics: list[dict]) -> dict:
    """Mean and (population) standard deviation over folds of the headline metrics."""
    values = {name: [fold[name] for fold in fold_metrics] for name in SUMMARY_METRICS}
    return {
        "mean": {name: float(np.mean(v)) for name, v in values.items()},
        "std": {name: float(np.std(v)) for name, v in values.items()},
        "num_folds": len(fold_metrics),
    }


def eval_results(
    family: str,
    dataset: str,
    folds: list[dict],
    command: list[str] | None = None,
    **extra,
) -> dict:
    """The content of `eval_results.json`.

    `folds` holds one entry per test split: {"test_actors", "validation_actors", "metrics"}.
    One entry is a hold-out evaluation; several are actor-disjoint cross-validation, summarised
    under `cross_validation` (e.g. `cross_validation.mean.balanced_accuracy`). The top-level
    metrics are those of the single test split, or of all folds' predictions pooled for
    cross-validation (every clip is then tested exactly once, by a model that never heard its
    speaker).
    """
    results = {
        "family": family,
        "dataset": dataset,
        "protocol": "cross_validation" if len(folds) > 1 else "holdout" if folds else "leave_one_corpus_out",
        "folds": folds,
        "command": shlex.join(command if command is not None else ["python", "-m", "ser_train", *sys.argv[1:]]),
        **extra,
    }
    if len(folds) > 1:
        results["cross_validation"] = cross_validation_summary([fold["metrics"] for fold in folds])
        labels = folds[0]["metrics"]["labels"]
        pooled = np.sum([fold["metrics"]["confusion_matrix"] for fold in folds], axis=0)
        results["pooled"] = metrics_from_confusion_matrix(pooled, labels)
    if folds:  # with held-out corpora only, their entries (`leave_one_corpus_out`) are the results
        results["test"] = results["pooled"] if len(folds) > 1 else folds[0]["metrics"]
    corpora = sorted({name for fold in folds for name in fold.get("per_corpus", {})})
    if corpora:  # every clip of each corpus, tested once, pooled over the test splits
        labels = folds[0]["metrics"]["labels"]
        results["per_corpus"] = {
            name: metrics_from_confusion_matrix(
                np.sum([fold["per_corpus"][name]["confusion_matrix"] for fold in folds if name in fold.get("per_corpus", {})], axis=0),
                labels,
            )
            for name in corpora
        }
    return results


def metrics_from_confusion_matrix(matrix, labels) -> dict:
    """Recompute all metrics from a (pooled) confusion matrix."""
    matrix = np.asarray(matrix)
    references = np.repeat(np.arange(len(labels)), matrix.sum(axis=1))
    predictions = np.concatenate([np.repeat(np.arange(len(labels)), row) for row in matrix])
    return classification_metrics(references, predictions, labels)


def write_eval_results(output_dir: str | Path, results: dict, file_name: str = EVAL_RESULTS_FILE) -> Path:
    """Write `results` as `file_name` (eval_results.json), and the confusion-matrix PNG of the
    reported test figure where there is one."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / file_name
    write_record(path, results)
    if "test" not in results:
        return path
    test = results["test"]
    title = (
        f"{results['family']}: pooled over {len(results['folds'])} actor-disjoint folds"
        if results["protocol"] == "cross_validation"
        else f"{results['family']}: test actors {results['folds'][0]['test_actors']}"
    )
    plot_confusion_matrix(test["confusion_matrix"], test["labels"], output_dir / CONFUSION_MATRIX_FILE, title)
    return path


def plot_confusion_matrix(matrix, labels, path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix (each row sums to 1: recall per class), counts annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=float)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if rows[i, j] > 0.5 else "black"
            axes.text(j, i, f"{rows[i, j]:.2f}\n({int(matrix[i, j])})", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def format_metrics_table(results: dict) -> str:
    """A plain-text summary for the terminal: headline figures, folds, per-class scores, and the
    held-out corpora."""
    from ser_train.held_out import format_leave_one_corpus_out_table

    lines = []
    if "test" in results:
        lines += _format_test_splits(results)
    if "leave_one_corpus_out" in results:
        lines += format_leave_one_corpus_out_table(results["leave_one_corpus_out"])
    return "\n".join(lines)


def _format_test_splits(results: dict) -> list[str]:
    lines = []
    test = results["test"]
    lines.append(f"{'':<12}{'WA':>8}{'UA':>8}{'F1':>8}")
    for number, fold in enumerate(results["folds"], start=1):
        m = fold["metrics"]
        name = f"fold {number}" if len(results["folds"]) > 1 else "test"
        who = f"speakers {','.join(fold['test_speakers'])}" if "test_speakers" in fold else f"actors {','.join(map(str, fold['test_actors']))}"
        lines.append(f"{name:<12}{m['accuracy']:>8.3f}{m['balanced_accuracy']:>8.3f}{m['macro_f1']:>8.3f}  {who}")
    if "cross_validation" in results:
        mean, std = results["cross_validation"]["mean"], results["cross_validation"]["std"]
        lines.append(
            f"{'mean ± std':<12}{mean['accuracy']:>8.3f}{mean['balanced_accuracy']:>8.3f}{mean['macro_f1']:>8.3f}"
            f"  (± {std['accuracy']:.3f} / {std['balanced_accuracy']:.3f} / {std['macro_f1']:.3f})"
        )
    for corpus, m in results.get("per_corpus", {}).items():
        lines.append(f"{corpus[:12]:<12}{m['accuracy']:>8.3f}{m['balanced_accuracy']:>8.3f}{m['macro_f1']:>8.3f}  corpus, {m['num_examples']} clips")
    lines.append("")
    lines.append(f"{'class':<12}{'prec':>8}{'recall':>8}{'F1':>8}{'n':>6}")
    for name, scores in test["per_class"].items():
        if scores["support"]:
            lines.append(f"{name:<12}{scores['precision']:>8.3f}{scores['recall']:>8.3f}{scores['f1']:>8.3f}{scores['support']:>6}")
    unscored = unscored_emotions(test)
    if unscored:
        lines.append(
            f"Not scored, as no scored test clip is of them: {', '.join(unscored)} "
            f"({answers_among(test, unscored)} of the {test['num_examples']} clips were answered with one of them)."
        )
    if UNTRAINED_CLIPS_KEY in results:
        lines.append(left_out_clips(results[UNTRAINED_CLIPS_KEY]))
    if "scoring" in results:
        scoring = results["scoring"]
        lines.append("")
        lines.append(
            f"Scored: {', '.join(scoring['scored_labels'])} ({len(scoring['scored_labels'])} of the model's "
            f"{len(scoring['model_labels'])} emotions; argmax over them); {scoring['unscored_clips']} clip(s) "
            "of other emotions left out."
        )
    if "calibration" in results:
        lines.append("")
        lines.extend(format_calibration_table(results["calibration"]))
    lines.append("")
    return lines


def calibration_rows(calibration: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    """(protocol, calibrated UA, uncalibrated UA on the same clips, standard deviation of the
    calibrated UA over random draws of calibration clips, where there were draws), means over
    test splits."""
    summary = calibration["mean_over_folds"]
    rows = [("no calibration (all clips)", None, summary["uncalibrated"], None)]

    def row(name: str, values: dict) -> tuple:
        return (name, values["calibrated"], values["uncalibrated_same_clips"], values.get("calibrated_std_over_draws"))

    for count, values in summary["random_clips"].items():
        rows.append(row("all other clips" if count == "all" else f"K = {count} random clips", values))
    for duration, values in summary.get("speech_seconds", {}).items():
        rows.append(row(f"{duration} s of random clips", values))
    if "neutral" in summary:
        rows.append(row("neutral + calm clips", summary["neutral"]))
    if "prompted_moods" in summary:
        moods = summary["prompted_moods"]
        as_any_speech = ", as any speech" if calibrated_as(moods) == "speech" else ""  # a record of an earlier model
        rows.append(row(f"{clips_per_mood(moods)} clip(s) per prompted mood{as_any_speech}", moods))
    if "self_one_emotion" in summary:
        rows.append(row("self, one-emotion recording", summary["self_one_emotion"]))
    return rows


def format_calibration_table(calibration: dict) -> list[str]:
    rows = calibration_rows(calibration)
    width = max(len(name) for name, *_ in rows) + 2
    lines = [
        "Speaker calibration (UA; calibration clips never scored; ± over draws of the clips):",
        f"{'calibrated on':<{width}}{'with':>13}{'without':>9}",
    ]
    for name, calibrated, uncalibrated, spread in rows:
        shown = "" if calibrated is None else f"{calibrated:.3f}" + (f" ± {spread:.3f}" if spread is not None else "")
        without = "-" if uncalibrated is None else f"{uncalibrated:.3f}"  # no clips of that kind in any fold
        lines.append(f"{name:<{width}}{shown:>13}{without:>9}")
    return lines


# --- A saved model on a test set of any corpus -----------------------------------------------


@dataclass(frozen=True)
class SharedScoring:
    """How a test set is scored against a model that knows other emotions than it holds.

    A corpus may hold only some of the model's emotions, or some it does not know. Only the
    emotions both have are scored: clips of other emotions are left out, and each clip's answer
    is the most probable of the shared emotions (the model is not blamed for an emotion the
    corpus cannot show). Probabilities are renormalised over the shared emotions.
    """

    labels: list[str]  # the scored emotions, in the dataset's label order
    columns: np.ndarray  # their columns in the model's output
    kept: np.ndarray  # the test rows that are scored
    references: np.ndarray  # each kept clip's emotion as an index into `labels`
    model_labels: list[str]
    unscored_clips: int

    @classmethod
    def of(cls, test: datasets.Dataset, model_labels, known_labels=None) -> SharedScoring:
        """`known_labels`: the emotions the model can be expected to answer (those it trained on;
        default all of its labels)."""
        names = test.features["emotion"].names
        emotions = np.asarray(test["emotion"])
        known = set(model_labels if known_labels is None else known_labels) & set(model_labels)
        present = {names[i] for i in set(emotions.tolist())}
        scored = [name for name in names if name in present and name in known]
        if not scored:
            raise DataError(f"The test clips share no emotion with the model (it knows {', '.join(sorted(known))}).")
        if len(scored) == 1:  # the argmax over one emotion is always right: WA and UA would be 1.0
            raise DataError(
                f"The test clips share only one emotion with the model ({scored[0]}), and a score over one "
                "emotion is always perfect; test on clips of at least two of its emotions."
            )
        scored_ids = [names.index(name) for name in scored]
        kept = np.flatnonzero(np.isin(emotions, scored_ids))
        return cls(
            labels=scored,
            columns=np.array([list(model_labels).index(name) for name in scored]),
            kept=kept,
            references=np.array([scored_ids.index(emotion) for emotion in emotions[kept]], dtype=int),
            model_labels=list(model_labels),
            unscored_clips=int(len(emotions) - len(kept)),
        )

    def probabilities(self, model_probabilities: np.ndarray) -> np.ndarray:
        """The shared emotions' probabilities of kept clips' model outputs, renormalised."""
        shared = np.asarray(model_probabilities, dtype=np.float64)[:, self.columns]
        return (shared / np.maximum(shared.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def predict_ids(self, model_probabilities: np.ndarray) -> np.ndarray:
        """Each kept clip's answer: the most probable shared emotion, as an index into `labels`."""
        return np.asarray(model_probabilities)[:, self.columns].argmax(axis=1)

    def metrics(self, references, predictions) -> dict:
        return classification_metrics(references, predictions, self.labels)

    def describe(self) -> dict:
        """eval_results.json's "scoring" entry."""
        return {
            "scored_labels": self.labels,
            "model_labels": self.model_labels,
            "unscored_clips": self.unscored_clips,
            "rule": (
                f"only the {len(self.labels)} emotion(s) the test clips share with the model are scored; "
                "each clip's answer is the most probable of those"
            ),
        }


def evaluate_model(model, test: datasets.Dataset, calibration: bool = True, known_labels=None) -> dict:
    """One test split's entry for eval_results: metrics over the shared emotions (see
    `SharedScoring`; `known_labels`, the emotions the model trained on, where known), and
    calibration. With `calibration` and a model that can calibrate, the speaker calibration
    protocol (`ser_train.calibration.evaluate_calibration`) runs on the same clips."""
    from ser_train.calibration import evaluate_calibration
    from ser_train.data import audio_arrays

    scoring = SharedScoring.of(test, model.labels, known_labels)
    test = test.select(scoring.kept)
    waveforms = audio_arrays(test)
    entry = {
        "metrics": scoring.metrics(scoring.references, scoring.predict_ids(model.predict_batch(waveforms))),
        "scoring": scoring.describe(),
    }
    if calibration and getattr(model, "can_calibrate", False):
        entry["calibration"] = evaluate_calibration(
            model, waveforms, scoring.references, test["actor"], scoring.labels, scoring.predict_ids, scoring.metrics
        )
    return entry
