"""The family-independent training driver: actor-disjoint splits, resume, results.

A model family (the CNN, Whisper, wav2vec2) only knows how to fit one split and predict; this
module decides which actors train, validate and test, runs the folds, leaves each corpus out in
turn, skips fits that an interrupted run already finished, trains the final model, fits its
temperature, and writes what a model card needs:

    OUTPUT_DIR/
        config.json, model.safetensors, ...   the published model (hold-out or final)
        eval_results.json, confusion_matrix.png
        training_args.json                    the exact command, data and split
        folds/fold-1/ ...                     per-fold models, checkpoints and results (CV only)
        corpora/<corpus>/ ...                 the model fitted without <corpus>, its answers for
                                              it (held_out.npz), and temperature/<other corpus>/
                                              fits nested inside it (leave one corpus out); a
                                              nested fit whose twin (corpora/<other corpus>/
                                              temperature/<corpus>) trained on the same clips
                                              holds only answers, from the twin's model
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np

from ser_train.calibration import SOURCES, calibration_summary, evaluate_calibration
from ser_train.confidence import (
    CALIBRATED_CONFIDENCE_KEY,
    CONFIDENCE_RESULTS_KEY,
    TEMPERATURE_KEY,
    UNSURE_RULE_KEY,
    Confidence,
    choose_unsure_rule,
    fit_temperature,
    unsure_summary,
    with_temperature,
)
from ser_train.corpora import actors_of_speakers, load_corpora, manifest_split_actors, source_location, speaker_names
from ser_train.data import actor_folds, audio_arrays, data_digest, split_by_actor, unique_values, validation_actors
from ser_train.errors import SERError
from ser_train.evaluation import (
    CONFIG_FILE,
    TRAINING_ARGS_FILE,
    UNTRAINED_CLIPS_KEY,
    classification_metrics,
    eval_results,
    format_metrics_table,
    left_out_clips,
    per_corpus_metrics,
    read_record,
    write_eval_results,
    write_record,
)
from ser_train.held_out import FITTED_WITHOUT_EACH, calibrated_answers, held_out_corpus_entry, leave_one_corpus_out_summary

DATASET_LOCATIONS_KEY = "dataset_locations"  # in training_args.json: where each dataset source lay
DATA_DIGEST_KEY = "data_digest"  # in training_args.json: what the data held (ser_train.data.data_digest)
FOLD_RESULT_FILE = "fold_result.json"
CORPORA_DIR = "corpora"  # OUTPUT_DIR/corpora/<corpus>/: the model fitted without <corpus>
TEMPERATURE_DIR = "temperature"  # <model dir>/temperature/<corpus>/: fits that set its temperature
HELD_OUT_FILE = "held_out.npz"  # a fit's untempered answers for the corpus it never heard, calibrated or not
CALIBRATED_SOURCES = "calibrated_sources"  # its key: the calibration sources it holds answers for
HELD_OUT_RESULT_FILE = "held_out_result.json"  # that corpus's leave-one-corpus-out entry
# Early stopping without the held-out corpus: this share of each other corpus's speakers
# validates (RAVDESS 4 of 24, EMOVO 1 of 6, TESS's 2 none).
VALIDATION_SHARE = 1 / 6


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

    name: str  # "cnn", "wav2vec2" or "whisper"

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

    def predict_proba(self, model: Any, dataset: datasets.Dataset) -> np.ndarray:
        """Class probabilities [rows, labels] for every row of `dataset` (the model's own, untempered)."""

    def representations(self, dataset: datasets.Dataset) -> list[dict[str, np.ndarray]] | None:
        """What speaker calibration sees of every row (a saved model's `represent`) where `prepare`
        already computed it, so held-out answers take no second pass over the audio; else None."""

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
    folds_within: str | None = None,
    leave_one_corpus_out: bool = False,
) -> dict:
    """Train and evaluate `family` on speaker-disjoint splits; return the eval_results dict.

    `dataset_source` is one source or several (combined, see `ser_train.corpora`); test
    speakers are actor ids, or speaker names of a manifest corpus (`test_speakers`).
    `num_folds` folds run over every speaker, or with `folds_within` over that corpus's speakers
    only (the other corpora always train). `leave_one_corpus_out` tests each corpus in turn with
    a model trained on the others (`ser_train.held_out`). Without any of these, the manifests'
    split column decides; with only `leave_one_corpus_out`, there is no other split. The
    published model is the hold-out model, or else one trained on everything; with several
    training corpora its probabilities get a temperature fitted on corpora held out of it.
    """
    output_dir = Path(output_dir)
    command = command if command is not None else ["python", "-m", "ser_train", *sys.argv[1:]]
    resuming = _claim_output_dir(output_dir, resume) if is_main_process() else True
    dataset = load_corpora(dataset_source)
    dataset_source = dataset_source if isinstance(dataset_source, str) else " + ".join(dataset_source)
    labels = dataset.features["emotion"].names
    if len(unique_values(dataset, "emotion")) < 2:
        held = labels[dataset[0]["emotion"]] if dataset.num_rows else "none"
        raise SERError(f"The data holds one emotion only ({held}): a classifier needs clips of at least two to learn from.")
    if leave_one_corpus_out and len(corpus_names(dataset)) < 2:
        raise SERError("Leaving one corpus out needs at least two corpora: pass several with --dataset A B ...")
    splits = _plan(dataset, test_actors, num_folds, test_speakers, folds_within, leave_one_corpus_out)
    _check_splits(dataset, splits)  # before the run claims its folder with a record of them
    settings = _run_settings(family, dataset, dataset_source, splits, leave_one_corpus_out)
    if is_main_process():  # the other processes of a distributed run take the main one's word
        if resuming:
            # The results, and the card, give the command that started the run: the one to rerun it.
            command = _check_same_run(output_dir, settings).get("command", command)
        else:
            _write_training_args(output_dir, settings, command)
    # After every refusal: for Whisper this is its encoder over every clip and view (minutes).
    dataset = family.prepare(dataset)

    several_corpora = len(corpus_names(dataset)) > 1
    folds = []
    for split in splits:
        # A hold-out model is the published model; fold models live beside it.
        split_dir = output_dir if split.name == "holdout" else output_dir / "folds" / split.name
        folds.append(_run_split(family, dataset, split, split_dir, labels, resume, several_corpora))

    extra = {"labels": labels}
    untrained_clips = sum((collections.Counter(fold.get(UNTRAINED_CLIPS_KEY, {})) for fold in folds), collections.Counter())
    if untrained_clips:
        extra[UNTRAINED_CLIPS_KEY] = {name: untrained_clips[name] for name in labels if name in untrained_clips}
    calibrated = [fold["calibration"] for fold in folds if "calibration" in fold]
    if calibrated and len(calibrated) == len(folds):
        extra["calibration"] = calibration_summary(calibrated)
    if leave_one_corpus_out:
        extra["leave_one_corpus_out"] = _leave_one_corpus_out(family, dataset, output_dir, resume)
    holdout = len(splits) == 1 and splits[0].name == "holdout"
    if not holdout:
        extra["final_model"] = _fit_final_model(family, dataset, folds, output_dir, resume)
    published_training = split_by_actor(dataset, splits[0].test_actors, [])["train"] if holdout else dataset
    extra["trained_labels"] = emotions_in(published_training)
    confidence = _calibrate_probabilities(family, published_training, output_dir, output_dir / (TEMPERATURE_DIR if holdout else CORPORA_DIR), resume)
    if confidence:
        extra[CONFIDENCE_RESULTS_KEY] = confidence

    results = eval_results(family.name, dataset_source, folds, command, **extra)
    if is_main_process():
        written = write_eval_results(output_dir, results)
        readable_as(written, output_dir.rglob("*.safetensors"))
        print(format_metrics_table(results))
    return results


def _fit_final_model(family: Family, dataset: datasets.Dataset, folds: list[dict], output_dir: Path, resume: bool) -> dict:
    """Train the published model on every speaker; return its record for eval_results.json.

    No speaker is left over to validate it, so it trains for the epoch count that validation
    chose in the folds (with no folds, in the models fitted leaving each corpus out)."""
    best_epochs = [fold["best_epoch"] for fold in folds if fold["best_epoch"] is not None]
    if not folds:
        best_epochs = [fit.best_epoch for fit in _held_out_fits(family, dataset, output_dir / CORPORA_DIR, resume).values() if fit.best_epoch]
    epochs = max(1, round(statistics.median(best_epochs))) if best_epochs else None
    print(f"Training the final model on all {len(unique_values(dataset, 'actor'))} speakers" + (f" for {epochs} epochs" if epochs else ""))
    family.fit(dataset, None, output_dir, resume, max_epochs=epochs)
    return {"actors": sorted(unique_values(dataset, "actor")), **({"epochs": epochs} if epochs else {})}


def readable_as(example: Path, files) -> None:
    """Give `files` the permissions of `example`, a file written the usual way (so under the
    user's umask): safetensors writes its files readable by their owner only, whatever the umask,
    so a model folder copied to a server, or shared on a machine, could not be read by others."""
    mode = example.stat().st_mode & 0o777
    for path in files:
        path.chmod(mode)


def _plan(
    dataset: datasets.Dataset,
    test_actors: list[int] | None,
    num_folds: int | None,
    test_speakers: list[str] | None,
    folds_within: str | None,
    leave_one_corpus_out: bool,
) -> list[Split]:
    """The run's test splits (none besides the held-out corpora when only those were asked for)."""
    if test_actors is not None:
        check_actor_numbers_apply(dataset)
    if test_speakers:
        test_actors = actors_of_speakers(dataset, test_speakers)
    if folds_within:
        if not num_folds:
            raise SERError("--folds-within needs --folds K.")
        return plan_splits(corpus_actors(dataset, folds_within), None, num_folds)
    if test_actors is None and num_folds is None:
        return [] if leave_one_corpus_out else [_manifest_split(dataset)]
    return plan_splits(unique_values(dataset, "actor"), test_actors, num_folds)


def _check_splits(dataset: datasets.Dataset, splits: list[Split]) -> None:
    """Refuse a split whose actors are not in the data, or whose training part holds one emotion
    only: a QA pass's fold trained on one speaker's one clip and was scored as any other."""
    for split in splits:
        train = split_by_actor(dataset, split.test_actors, split.validation_actors)["train"]
        if len(unique_values(train, "emotion")) < 2:
            taught = emotions_in(train) if train.num_rows else ["none"]
            raise SERError(
                f"{split.name} would train on {train.num_rows} clip(s) of {', '.join(taught)} only: a classifier needs "
                "clips of at least two emotions to learn from; use fewer folds, or other test speakers."
            )


def emotions_in(*parts: datasets.Dataset) -> list[str]:
    """The names of the emotions that any of `parts` holds a clip of, in label order."""
    names = parts[0].features["emotion"].names
    return [names[e] for e in sorted(set().union(*(unique_values(part, "emotion") for part in parts)))]


def check_actor_numbers_apply(dataset: datasets.Dataset) -> None:
    """Actor numbers name RAVDESS's actors in a RAVDESS folder alone: with corpora of named
    speakers (or several corpora), a number is an internal id that no user sees, so refused."""
    if "speaker" in dataset.column_names:
        raise SERError(
            "--test-actors numbers the actors of a RAVDESS folder given alone; with these corpora, name the test "
            f"speakers with --test-speakers (e.g. {dataset[0]['speaker']})."
        )


def corpus_names(dataset: datasets.Dataset) -> list[str]:
    """The corpora a combined dataset holds ([] for a single RAVDESS source, which has no corpus column)."""
    return sorted(unique_values(dataset, "corpus")) if "corpus" in dataset.column_names else []


def corpus_actors(dataset: datasets.Dataset, corpus: str) -> list[int]:
    """The actor ids of one corpus of a combined dataset, or a SERError naming the corpora there are."""
    if corpus not in corpus_names(dataset):
        raise SERError(f"There is no corpus '{corpus}' in the data; the corpora are {', '.join(corpus_names(dataset)) or 'none (a single source)'}.")
    return sorted({actor for actor, name in zip(dataset["actor"], dataset["corpus"]) if name == corpus})


# --- Leaving corpora out -------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutFit:
    """A model fitted without one corpus, and its untempered answers for that corpus's clips."""

    probabilities: np.ndarray  # [clips of the corpus, labels]
    emotions: np.ndarray  # the clips' emotion ids
    trained_labels: list[str]  # the emotions the model saw in training
    best_epoch: int | None
    # Calibration source -> its answers with speaker calibration (ser_train.held_out.calibrated_answers):
    # (probabilities over the shared emotions, references among them); None in a record written
    # before they were kept.
    calibrated: dict[str, tuple[np.ndarray, np.ndarray]] | None = None


@dataclass(frozen=True)
class OuterCorpus:
    """The corpus a nested fit's training also lacks (leave one corpus out, temperature fits):
    its clips, and the run's folder of fits without each corpus."""

    name: str
    test: datasets.Dataset
    corpora_dir: Path

    def twin_record(self, inner: str) -> Path:
        """Where the nested fit without `inner`, then this corpus, keeps its answers: that fit
        trains on exactly the clips this one does (both leave out the same two corpora, and
        `corpus_split` takes the same validation speakers from the rest)."""
        return self.corpora_dir / inner / TEMPERATURE_DIR / self.name / HELD_OUT_FILE


def _held_out_fits(
    family: Family, dataset: datasets.Dataset, work_dir: Path, resume: bool, outer: OuterCorpus | None = None
) -> dict[str, HeldOutFit]:
    """For each corpus of `dataset`: a model fitted on the others (in work_dir/<corpus>), and its
    answers on that corpus. A fit an earlier run finished is read back, not repeated; nested in
    `outer`, one a twin fit already answered for (see `OuterCorpus`) is not fitted at all."""
    return {corpus: _held_out_fit(family, dataset, corpus, work_dir / corpus, resume, outer) for corpus in corpus_names(dataset)}


def _held_out_fit(
    family: Family, dataset: datasets.Dataset, corpus: str, split_dir: Path, resume: bool, outer: OuterCorpus | None
) -> HeldOutFit:
    record = split_dir / HELD_OUT_FILE
    # Inside a run's output folder a record is this run's own (a new run refuses a used folder),
    # so the final model's temperature reads the held-out corpora's fits instead of repeating them.
    if record.is_file():
        fit = _read_held_out_fit(record)
        if fit.calibrated is None:  # a record from before calibrated answers were kept: add them
            test = corpus_split(dataset, corpus)["test"]
            fit = replace(fit, calibrated=_calibrated_answers(family, split_dir, test, fit.trained_labels))
            _write_held_out_fit(record, fit)
        return fit
    parts = corpus_split(dataset, corpus)
    print(
        f"without {corpus}: train {parts['train'].num_rows} clips, validation {parts['validation'].num_rows}, "
        f"test {parts['test'].num_rows} ({corpus})"
    )
    fitted = family.fit(parts["train"], parts["validation"], split_dir, resume)
    trained = emotions_in(parts["train"])  # validation clips choose the epoch, teach nothing
    fit = _held_out_answers(family, fitted, split_dir, parts["test"], trained)
    _write_held_out_fit(record, fit)
    if outer is not None and not outer.twin_record(corpus).is_file():
        # The twin fit would learn from the same clips: this model answers for it, once, here.
        _write_held_out_fit(outer.twin_record(corpus), _held_out_answers(family, fitted, split_dir, outer.test, trained))
    return fit


def _held_out_answers(family: Family, fitted: FitResult, model_dir: Path, test: datasets.Dataset, trained: list[str]) -> HeldOutFit:
    """What a fit (saved in `model_dir`) answers for `test`, a corpus it never heard."""
    return HeldOutFit(
        probabilities=np.asarray(family.predict_proba(fitted.model, test), dtype=np.float32),
        emotions=np.asarray(test["emotion"]),
        trained_labels=trained,
        best_epoch=fitted.best_epoch,
        calibrated=_calibrated_answers(family, model_dir, test, trained),
    )


def _calibrated_answers(family: Family, model_dir: Path, test: datasets.Dataset, trained_labels: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The saved fit's untempered answers for its held-out corpus with speaker calibration, by
    source; {} where the fit cannot calibrate (or, like the tests' stand-in families, saves no
    model folder)."""
    from ser_train.inference import load_model

    if not (model_dir / CONFIG_FILE).is_file():
        return {}
    print(f"{model_dir}: answers with speaker calibration")
    return calibrated_answers(load_model(str(model_dir)).untempered(), test, trained_labels, family.representations(test))


def _read_held_out_fit(record: Path) -> HeldOutFit:
    with np.load(record, allow_pickle=False) as saved:
        best = int(saved["best_epoch"])
        calibrated = None
        if CALIBRATED_SOURCES in saved:
            calibrated = {
                source: (saved[f"{source}_probabilities"], saved[f"{source}_references"]) for source in saved[CALIBRATED_SOURCES].tolist()
            }
        return HeldOutFit(
            saved["probabilities"], saved["emotions"], saved["trained_labels"].tolist(), best if best > 0 else None, calibrated
        )


def _write_held_out_fit(record: Path, fit: HeldOutFit) -> None:
    if not is_main_process():
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(f"partial-{record.name}")
    calibrated = {}
    for source, (probabilities, references) in (fit.calibrated or {}).items():
        calibrated[f"{source}_probabilities"], calibrated[f"{source}_references"] = probabilities, references
    np.savez(
        partial,
        probabilities=fit.probabilities,
        emotions=fit.emotions,
        trained_labels=np.array(fit.trained_labels),
        best_epoch=np.array(fit.best_epoch or 0),
        **{CALIBRATED_SOURCES: np.array(list(fit.calibrated or {}), dtype=str)},
        **calibrated,
    )
    partial.replace(record)  # a killed run never leaves half a record


def corpus_split(dataset: datasets.Dataset, corpus: str) -> datasets.DatasetDict:
    """Test: every clip of `corpus`; validation: the last VALIDATION_SHARE of each other corpus's
    speakers (none from a corpus with fewer than 1 / VALIDATION_SHARE); train: the rest."""
    validation = []
    for other in corpus_names(dataset):
        if other != corpus:
            actors = corpus_actors(dataset, other)
            validation += actors[len(actors) - int(len(actors) * VALIDATION_SHARE) :]
    return split_by_actor(dataset, corpus_actors(dataset, corpus), validation)


def _temperature(fits: dict[str, HeldOutFit], labels: list[str]) -> float:
    """The temperature that fits the held-out answers best, each corpus weighted equally (1.0
    when there is no held-out answer to fit it on)."""
    scored = [_scored(fit, labels) for fit in fits.values()]
    if not scored:
        return 1.0
    return fit_temperature([probabilities for probabilities, _ in scored], [references for _, references in scored])


def _calibrated_by_source(fits: dict[str, HeldOutFit]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """For each calibration source the fits answered with: corpus -> the fit's calibrated answers."""
    by_source = {source: {corpus: fit.calibrated[source] for corpus, fit in fits.items() if source in fit.calibrated} for source in SOURCES}
    return {source: answers for source, answers in by_source.items() if answers}


def _calibrated_temperatures(fits: dict[str, HeldOutFit]) -> dict[str, float]:
    """For each calibration source the fits answered with: the temperature that fits those
    calibrated answers best, each corpus weighted equally."""
    return {source: fit_temperature(*zip(*answers.values())) for source, answers in _calibrated_by_source(fits).items()}


def _scored(fit: HeldOutFit, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A held-out fit's answers over the emotions its corpus shares with its training, renormalised,
    and the clips' references among those emotions."""
    known = [labels.index(name) for name in fit.trained_labels]
    shared = [e for e in sorted(set(fit.emotions.tolist())) if e in known]
    kept = np.isin(fit.emotions, shared)
    probabilities = fit.probabilities[kept][:, shared]
    probabilities = probabilities / np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-12)
    return probabilities, np.array([shared.index(e) for e in fit.emotions[kept]], dtype=int)


def _leave_one_corpus_out(family: Family, dataset: datasets.Dataset, output_dir: Path, resume: bool) -> dict:
    """Each corpus tested by a model fitted on the others (OUTPUT_DIR/corpora/<corpus>), whose
    temperature comes from fits that also leave out one of its own training corpora
    (.../temperature/<corpus>), so the corpus being scored never tunes anything."""
    from ser_train.inference import load_model

    labels = dataset.features["emotion"].names
    entries = {}
    for corpus, fit in _held_out_fits(family, dataset, output_dir / CORPORA_DIR, resume).items():
        split_dir = output_dir / CORPORA_DIR / corpus
        record = split_dir / HELD_OUT_RESULT_FILE
        if record.is_file():
            entries[corpus] = read_record(record)
            continue
        # In memory: a filter's row list in the cache would be one more file per corpus and run.
        others = dataset.filter(lambda name: name != corpus, input_columns="corpus", keep_in_memory=True)
        test = dataset.filter(lambda name: name == corpus, input_columns="corpus", keep_in_memory=True)
        outer = OuterCorpus(corpus, test, output_dir / CORPORA_DIR)
        inner = _held_out_fits(family, others, split_dir / TEMPERATURE_DIR, resume, outer) if len(corpus_names(others)) > 1 else {}
        temperature, calibrated_temperatures = _temperature(inner, labels), _calibrated_temperatures(inner)
        print(f"Held-out corpus {corpus}: temperature {temperature:.2f}; short speech and speaker calibration")
        model = load_model(str(split_dir)).untempered()
        entry = held_out_corpus_entry(
            model, test, fit.probabilities, temperature, fit.trained_labels, calibrated_temperatures, family.representations(test)
        )
        entry["training_corpora"] = corpus_names(others)
        entry["temperature_from"] = list(inner) or "no other corpus to hold out: probabilities untempered"
        if is_main_process():
            write_record(record, entry)
        entries[corpus] = entry
    return leave_one_corpus_out_summary(entries, FITTED_WITHOUT_EACH)


def _calibrate_probabilities(family: Family, training: datasets.Dataset, model_dir: Path, work_dir: Path, resume: bool) -> dict | None:
    """Fit the published model's temperature and unsure rule by the same rule as the held-out
    corpora's (models fitted without one of its training corpora, answering for it), and those of
    answers with speaker calibration from each source on those answers calibrated the same way, and
    write them into its config.json; None with a single training corpus (nothing to hold out)."""
    if len(corpus_names(training)) < 2 or not is_main_process():
        return None
    labels = training.features["emotion"].names
    fits = _held_out_fits(family, training, work_dir, resume)
    uncalibrated = {corpus: _scored(fit, labels) for corpus, fit in fits.items()}
    results = _confidence_on(uncalibrated, _temperature(fits, labels), None)
    temperatures = _calibrated_temperatures(fits)
    calibrated = {source: _confidence_on(answers, temperatures[source], source) for source, answers in _calibrated_by_source(fits).items()}
    config_path = model_dir / CONFIG_FILE
    if config_path.is_file():  # every real family's folder has one; the tests' stand-in families do not
        config = read_record(config_path)
        config.update({TEMPERATURE_KEY: results["temperature"], UNSURE_RULE_KEY: results["unsure_rule"]})
        config[CALIBRATED_CONFIDENCE_KEY] = {source: Confidence.from_dict(found).as_dict() for source, found in calibrated.items()}
        write_record(config_path, config)
    return {**results, "measured_on": list(fits), "calibrated": calibrated}


def _confidence_on(answers: dict[str, tuple[np.ndarray, np.ndarray]], temperature: float, source: str | None) -> dict:
    """The unsure rule chosen on held-out answers (corpus -> (probabilities, references)) at
    `temperature`, and how it splits each corpus's answers; `source`: their calibration source."""
    # Each corpus weighs the same in the rule, however many clips it has.
    tempered = {corpus: with_temperature(probabilities, temperature) for corpus, (probabilities, _) in answers.items()}
    references = [refs for _, refs in answers.values()]
    rule = choose_unsure_rule(list(tempered.values()), references, calibrated_as=source)
    return {
        "temperature": temperature,
        "unsure_rule": rule.as_dict(),
        "held_out_answers": {
            corpus: unsure_summary(probabilities, refs, rule) for (corpus, probabilities), refs in zip(tempered.items(), references)
        },
    }


def _manifest_split(dataset: datasets.Dataset) -> Split:
    """The hold-out split the corpus manifests give (split column), speaker-disjoint by then."""
    given = manifest_split_actors(dataset)
    if given is None:
        raise SERError("Pass --test-actors / --test-speakers or --folds K: the dataset gives no test split.")
    test, validation = given
    actors = tuple(sorted(unique_values(dataset, "actor")))
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
        return read_record(record)
    parts = split_by_actor(dataset, split.test_actors, split.validation_actors)
    # The ids are interleaved across corpora: records and cards name the speakers.
    test_speakers, validation_speakers = speaker_names(dataset, split.test_actors), speaker_names(dataset, split.validation_actors)
    print(
        f"{split.name}: train {parts['train'].num_rows} clips, validation {parts['validation'].num_rows} "
        f"({', '.join(validation_speakers)}), test {parts['test'].num_rows} ({', '.join(test_speakers)})"
    )
    fitted = family.fit(parts["train"], parts["validation"], split_dir, resume)
    # Scored on the emotions it trained on, as `evaluate` and the held-out corpora are: a test clip
    # of an emotion no training clip taught is left out, and no clip is answered with one.
    trained = emotions_in(parts["train"])  # validation clips choose the epoch, teach nothing
    test, untrained_clips = of_trained_emotions(parts["test"], trained)
    answer = answer_among(labels, trained)
    predictions = answer(family.predict_proba(fitted.model, test))
    metrics = classification_metrics(test["emotion"], predictions, labels)
    result = {
        "name": split.name,
        "test_actors": split.test_actors,
        "validation_actors": split.validation_actors,
        "test_speakers": test_speakers,
        "validation_speakers": validation_speakers,
        "best_epoch": fitted.best_epoch,
        "metrics": metrics,
    }
    if untrained_clips:
        result[UNTRAINED_CLIPS_KEY] = untrained_clips
        print(f"{split.name}: {left_out_clips(untrained_clips)}")
    if several_corpora:
        result["per_corpus"] = per_corpus_metrics(test["emotion"], predictions, test["corpus"], labels)
    calibration = _calibration_results(split_dir, test, labels, answer)
    if calibration:
        result["calibration"] = calibration
    if is_main_process():
        split_dir.mkdir(parents=True, exist_ok=True)
        write_record(record, result)
    print(f"{split.name}: test WA {metrics['accuracy']:.3f}  UA {metrics['balanced_accuracy']:.3f}")
    return result


def of_trained_emotions(test: datasets.Dataset, trained: list[str]) -> tuple[datasets.Dataset, dict[str, int]]:
    """The test clips of emotions in `trained`, and how many of each other emotion were left out."""
    names, emotions = test.features["emotion"].names, test["emotion"]
    taught = {names.index(name) for name in trained}
    left_out = collections.Counter(names[emotion] for emotion in emotions if emotion not in taught)
    kept = [row for row, emotion in enumerate(emotions) if emotion in taught]
    return test.select(kept), {name: left_out[name] for name in names if name in left_out}


def answer_among(labels: list[str], trained: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """Probabilities [clips, labels] -> each clip's answer: the most probable emotion of `trained`."""
    columns = np.array([labels.index(name) for name in trained])
    return lambda probabilities: columns[np.asarray(probabilities)[:, columns].argmax(axis=1)]


def _calibration_results(model_dir: Path, test: datasets.Dataset, labels: list[str], answer) -> dict | None:
    """The speaker-calibration protocol on the test split, for a saved model that can calibrate
    (`answer`: probabilities to answers, as the split is scored).

    The model is loaded from its folder as any user would load it, so every family that
    `ser_train.inference` can calibrate is measured; for the others this returns None.
    """
    from ser_train.inference import load_model

    if not is_main_process() or not (model_dir / CONFIG_FILE).is_file():
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
        predict_ids=answer,
        metrics=lambda references, predictions: classification_metrics(references, predictions, labels),
    )


def _claim_output_dir(output_dir: Path, resume: bool) -> bool:
    """Never overwrite an earlier run, or anything else, by accident. True when resuming a run
    that was started. Nothing is created here: the folder comes with the run's first record."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SERError(f"{output_dir} is a file, not a folder; choose another --output-dir.")
    started = (output_dir / TRAINING_ARGS_FILE).is_file()
    if started and not resume:
        raise SERError(
            f"{output_dir} already holds a training run; pass --resume to continue it, "
            "or choose another --output-dir."
        )
    if not started and output_dir.is_dir() and any(output_dir.iterdir()):
        raise SERError(
            f"{output_dir} is not empty and holds no training run ({TRAINING_ARGS_FILE}); a run would "
            "write its files over what is there, so choose an empty or new --output-dir."
        )
    if resume and not started:  # a mistyped folder would otherwise train from scratch unsaid
        print(f"{output_dir} holds no run to resume; starting a new one there.", file=sys.stderr)
    return started


def _run_settings(family: Family, dataset: datasets.Dataset, dataset_source: str, splits: list[Split], leave_one_corpus_out: bool) -> dict:
    """What makes a run the run it is, as training_args.json records it (JSON types)."""
    settings = {
        "family": family.name,
        "dataset": dataset_source,
        DATA_DIGEST_KEY: data_digest(dataset),
        "splits": [asdict(split) for split in splits],
        "leave_one_corpus_out": leave_one_corpus_out,
        "hyperparameters": family.hyperparameters(),
    }
    return json.loads(json.dumps(settings))


def _check_same_run(output_dir: Path, settings: dict) -> dict:
    """Resuming continues the run that was started, never another: the family, data, splits and
    settings must be those training_args.json records (the data where it lay, however the path
    is spelled, and holding the same clips, labels and speakers), or the finished folds of one run
    would be published as another's. Returns that record."""
    recorded = read_record(output_dir / TRAINING_ARGS_FILE)
    differences = [
        _difference(key, recorded.get(key), value)
        for key, value in _comparable(settings, recorded).items()
        if not _same_setting(key, recorded, value)
    ]
    if differences:
        raise SERError(
            f"{output_dir} holds a run started with other settings ({'; '.join(differences)}); resume it with "
            f"the settings of its {TRAINING_ARGS_FILE} and its data as they were, or choose another --output-dir. Nothing was changed."
        )
    return recorded


def _comparable(settings: dict, recorded: dict) -> dict:
    """The settings given here that a run's record can be held to. A setting added since the run
    was started is not in its record, and the run ran without it (runs started before 2026-12-06
    have no data digest); another family's settings are no difference worth naming."""
    comparable = {**settings, "hyperparameters": {key: value for key, value in settings["hyperparameters"].items() if key in recorded.get("hyperparameters", {})}}
    if DATA_DIGEST_KEY not in recorded:
        comparable.pop(DATA_DIGEST_KEY)
    if recorded.get("family") != settings["family"]:
        comparable.pop("hyperparameters")
    return comparable


def _same_setting(key: str, recorded: dict, value) -> bool:
    """Whether the run's record holds `value` for setting `key`: the data by where it lies, however
    its path is spelled, every other setting as it is."""
    return same_sources(recorded, value) if key == "dataset" else recorded.get(key) == value


def recorded_locations(recorded: dict) -> list[str]:
    """Where a run's data lay, from its training_args.json (`recorded`; [] for {}): each folder
    resolved where the run started, each Hub id as given. Records from before 2026-12-06 hold
    the sources as typed only, which are resolved from here."""
    if DATASET_LOCATIONS_KEY in recorded:
        return recorded[DATASET_LOCATIONS_KEY]
    return [source_location(source.strip()) for source in recorded.get("dataset", "").split(" + ") if source.strip()]


def same_sources(recorded: dict, given: str | list[str]) -> bool:
    """Whether the data of a run's record and the dataset sources given here are the same:
    folders by their resolved location, however each path is spelled, Hub ids by name."""
    return recorded_locations(recorded) == source_locations(given)


def source_locations(sources: str | list[str]) -> list[str]:
    """Where each source lies here (`source_location`); `sources` a list, or ' + '-joined as a run records them."""
    return [source_location(source) for source in (sources.split(" + ") if isinstance(sources, str) else sources)]


def _difference(key: str, there, here) -> str:
    """How a recorded setting differs from the one given: within a group of settings
    (hyperparameters) or a list of as many groups (splits), only the ones that differ, so that a long
    value is not cut off before its difference (a QA pass read two identical-looking splits)."""
    if key == DATA_DIGEST_KEY:  # two digests say nothing to a reader
        return "the data's clips, labels or speakers have changed since the run started"
    if isinstance(there, dict) and isinstance(here, dict):
        differing = sorted(name for name in there.keys() | here.keys() if there.get(name) != here.get(name))
        return "; ".join(_difference(f"{key}.{name}", there.get(name), here.get(name)) for name in differing)
    if isinstance(there, list) and isinstance(here, list) and len(there) == len(here) and all(isinstance(item, dict) for item in there + here):
        return "; ".join(_difference(f"{key}[{number}]", old, new) for number, (old, new) in enumerate(zip(there, here)) if old != new)
    return f"{key}: {_shown(there)} there, {_shown(here)} here"


def _shown(value) -> str:
    """A recorded setting as a message quotes it: short values whole, long ones elided."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _write_training_args(output_dir: Path, settings: dict, command: list[str]) -> None:
    # The data's locations as well as its sources as typed: a relative path means another folder
    # to an `evaluate` or `--resume` run from elsewhere.
    args = {"command": command, **settings, DATASET_LOCATIONS_KEY: source_locations(settings["dataset"])}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_record(output_dir / TRAINING_ARGS_FILE, args)
