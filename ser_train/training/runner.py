"""The family-independent training driver: actor-disjoint splits, resume, results.

A model family (the CNN, wav2vec2) only knows how to fit one split and predict; this module
decides which actors train, validate and test, runs the folds, skips folds that an interrupted
run already finished, trains the final model, and writes what a model card needs:

    OUTPUT_DIR/
        config.json, model.safetensors, ...   the published model (hold-out or final)
        eval_results.json, confusion_matrix.png
        training_args.json                    the exact command, data and split
        folds/fold-1/ ...                     per-fold models, checkpoints and results (CV only)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np

from ser_train.calibration import calibration_summary, evaluate_calibration
from ser_train.corpora import actors_of_speakers, load_corpora, manifest_split_actors
from ser_train.data import actor_folds, audio_arrays, split_by_actor, validation_actors
from ser_train.errors import SERError
from ser_train.evaluation import classification_metrics, eval_results, format_metrics_table, per_corpus_metrics, write_eval_results

TRAINING_ARGS_FILE = "training_args.json"
FOLD_RESULT_FILE = "fold_result.json"


@dataclass(frozen=True)
class Split:
    """One training job: who is tested, who decides early stopping, who trains (everyone else)."""

    name: str
    test_actors: list[int] = field(default_factory=list)  # empty for the final all-actor model
    validation_actors: list[int] = field(default_factory=list)


@dataclass
class FitResult:
    model: Any
    best_epoch: int | None  # the epoch whose weights were kept (1-based); None for a fit without epochs


class Family(Protocol):
    """What a model family gives the runner."""

    name: str  # "cnn" or "wav2vec2"

    def fit(
        self,
        train: datasets.Dataset,
        validation: datasets.Dataset | None,
        output_dir: Path,
        resume: bool,
        max_epochs: int | None = None,
    ) -> FitResult:
        """Train (resuming from output_dir's checkpoint if asked) and save the model in output_dir.

        With `validation`, stop early on its balanced accuracy and keep the best epoch; without,
        train exactly `max_epochs`.
        """

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """The whole dataset with whatever the family computes once per clip (or as it is)."""

    def predict(self, model: Any, dataset: datasets.Dataset) -> np.ndarray:
        """Class ids for every row of `dataset`."""

    def hyperparameters(self) -> dict:
        """JSON-ready settings, recorded in training_args.json and the model card."""


def plan_splits(actors: list[int], test_actors: list[int] | None, num_folds: int | None) -> list[Split]:
    """A single hold-out split for `test_actors`, or `num_folds` actor-disjoint folds of `actors`."""
    actors = tuple(sorted(actors))
    if test_actors and num_folds:
        raise SERError("Pass either --test-actors or --folds, not both.")
    if test_actors:
        return [Split("holdout", sorted(test_actors), validation_actors(test_actors, actors))]
    return [
        Split(f"fold-{number}", fold, validation_actors(fold, actors))
        for number, fold in enumerate(actor_folds(num_folds, actors), start=1)
    ]


def run(
    family: Family,
    dataset_source: str | list[str],
    output_dir: str | Path,
    test_actors: list[int] | None = None,
    num_folds: int | None = None,
    resume: bool = False,
    command: list[str] | None = None,
    test_speakers: list[str] | None = None,
) -> dict:
    """Train and evaluate `family` on actor-disjoint splits; return the eval_results dict.

    `dataset_source` is one source or several (combined, see `ser_train.corpora`); test
    speakers are actor ids, or speaker names of a manifest corpus (`test_speakers`). Without
    either or `num_folds`, the manifests' split column decides.
    """
    output_dir = Path(output_dir)
    command = command if command is not None else ["python", "-m", "ser_train", *sys.argv[1:]]
    resuming = _claim_output_dir(output_dir, resume) if is_main_process() else True
    dataset = family.prepare(load_corpora(dataset_source))
    dataset_source = dataset_source if isinstance(dataset_source, str) else " + ".join(dataset_source)
    labels = dataset.features["emotion"].names
    if test_speakers:
        test_actors = actors_of_speakers(dataset, test_speakers)
    if test_actors is None and num_folds is None:
        splits = [_manifest_split(dataset)]
    else:
        splits = plan_splits(dataset.unique("actor"), test_actors, num_folds)
    if not resuming:
        _write_training_args(output_dir, family, dataset_source, splits, command)

    several_corpora = "corpus" in dataset.column_names and len(dataset.unique("corpus")) > 1
    folds = []
    for split in splits:
        # A hold-out model is the published model; fold models live beside it.
        split_dir = output_dir if split.name == "holdout" else output_dir / "folds" / split.name
        folds.append(_run_split(family, dataset, split, split_dir, labels, resume, several_corpora))

    extra = {"labels": labels}
    calibrated = [fold["calibration"] for fold in folds if "calibration" in fold]
    if calibrated and len(calibrated) == len(folds):
        extra["calibration"] = calibration_summary(calibrated)
    if len(splits) > 1:
        # The published model hears every actor; it trains for the epoch count that validation
        # chose in the folds, since no actor is left over to validate it.
        best_epochs = [fold["best_epoch"] for fold in folds if fold["best_epoch"] is not None]
        epochs = max(1, round(statistics.median(best_epochs))) if best_epochs else None
        print(f"Training the final model on all {len(dataset.unique('actor'))} actors" + (f" for {epochs} epochs" if epochs else ""))
        family.fit(dataset, None, output_dir, resume, max_epochs=epochs)
        extra["final_model"] = {"actors": sorted(dataset.unique("actor")), **({"epochs": epochs} if epochs else {})}

    results = eval_results(family.name, dataset_source, folds, command, **extra)
    if is_main_process():
        write_eval_results(output_dir, results)
        print(format_metrics_table(results))
    return results


def _manifest_split(dataset: datasets.Dataset) -> Split:
    """The hold-out split the corpus manifests give (split column), speaker-disjoint by then."""
    given = manifest_split_actors(dataset)
    if given is None:
        raise SERError("Pass --test-actors / --test-speakers or --folds K: the dataset gives no test split.")
    test, validation = given
    actors = tuple(sorted(dataset.unique("actor")))
    return Split("holdout", test, validation or validation_actors(test, actors))


def is_main_process() -> bool:
    """Under `torchrun` / `accelerate launch` every process runs this driver (the family's
    Trainer shares the work between them); only the first one writes the run's files."""
    return int(os.environ.get("RANK", "0")) == 0


def _run_split(
    family: Family,
    dataset: datasets.Dataset,
    split: Split,
    split_dir: Path,
    labels: list[str],
    resume: bool,
    several_corpora: bool = False,
) -> dict:
    """Fit, test and record one split, or read its record if an earlier run finished it.

    With `several_corpora`, the test metrics are broken down by corpus too."""
    record = split_dir / FOLD_RESULT_FILE
    if resume and record.is_file():
        print(f"{split.name}: already finished, reusing {record}")
        return json.loads(record.read_text())
    parts = split_by_actor(dataset, split.test_actors, split.validation_actors)
    print(
        f"{split.name}: train {parts['train'].num_rows} clips, validation {parts['validation'].num_rows} "
        f"(actors {split.validation_actors}), test {parts['test'].num_rows} (actors {split.test_actors})"
    )
    fitted = family.fit(parts["train"], parts["validation"], split_dir, resume)
    predictions = family.predict(fitted.model, parts["test"])
    metrics = classification_metrics(parts["test"]["emotion"], predictions, labels)
    result = {
        "name": split.name,
        "test_actors": split.test_actors,
        "validation_actors": split.validation_actors,
        "best_epoch": fitted.best_epoch,
        "metrics": metrics,
    }
    if several_corpora:
        result["per_corpus"] = per_corpus_metrics(parts["test"]["emotion"], predictions, parts["test"]["corpus"], labels)
    calibration = _calibration_results(split_dir, parts["test"], labels)
    if calibration:
        result["calibration"] = calibration
    if is_main_process():
        split_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{split.name}: test WA {metrics['accuracy']:.3f}  UA {metrics['balanced_accuracy']:.3f}")
    return result


def _calibration_results(model_dir: Path, test: datasets.Dataset, labels: list[str]) -> dict | None:
    """The speaker-calibration protocol on the test split, for a saved model that can calibrate.

    The model is loaded from its folder as any user would load it, so every family that
    `ser_train.inference` can calibrate is measured; for the others this returns None.
    """
    from ser_train.inference import load_model

    if not is_main_process() or not (model_dir / "config.json").is_file():
        return None
    model = load_model(str(model_dir))
    if not model.can_calibrate:
        return None
    print(f"Speaker calibration protocol on {test.num_rows} test clips")
    return evaluate_calibration(
        model,
        audio_arrays(test),
        test["emotion"],
        test["actor"],
        labels,
        predict_ids=lambda probabilities: probabilities.argmax(axis=1),
        metrics=lambda references, predictions: classification_metrics(references, predictions, labels),
    )


def _claim_output_dir(output_dir: Path, resume: bool) -> bool:
    """Never overwrite an earlier run by accident. True when resuming a run that was started."""
    started = (output_dir / TRAINING_ARGS_FILE).is_file()
    if started and not resume:
        raise SERError(
            f"{output_dir} already holds a training run; pass --resume to continue it, "
            "or choose another --output-dir."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    return started


def _write_training_args(
    output_dir: Path, family: Family, dataset_source: str, splits: list[Split], command: list[str]
) -> None:
    args = {
        "command": command,
        "family": family.name,
        "dataset": dataset_source,
        "splits": [asdict(split) for split in splits],
        "hyperparameters": family.hyperparameters(),
    }
    (output_dir / TRAINING_ARGS_FILE).write_text(json.dumps(args, indent=2) + "\n")
