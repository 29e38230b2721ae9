"""Model cards rendered from a model folder's real metrics.

The template is `model_card.md` at the top of the project (Jinja, rendered by
`huggingface_hub.ModelCard.from_template`). The YAML front matter is a `ModelCardData` with a
`model-index` of `EvalResult`s, so the Hub shows the numbers and validates the metadata. Every
figure comes from the folder's `eval_results.json` (see `ser_train.evaluation.eval_results`);
the command and settings come from `training_args.json` and `config.json`.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ser_train.calibration import (
    CLIPS_PER_PROMPTED_MOOD,
    MOODS_COMPARED_WITH,
    PROMPTED_MOODS,
    PROTOCOL_REPEATS,
    calibrated_as,
    clips_per_mood,
)
from ser_train.confidence import CONFIDENCE_RESULTS_KEY
from ser_train.corpora import KNOWN_CORPORA, corpus_info, corpus_names_of
from ser_train.errors import SERError
from ser_train.evaluation import (
    CONFIG_FILE,
    CONFUSION_MATRIX_FILE,
    EVAL_RESULTS_FILE,
    OUTSIDE_RESULTS_FILE,
    TRAINING_ARGS_FILE,
    UNTRAINED_CLIPS_KEY,
    answers_among,
    read_record,
    calibration_rows,
    left_out_clips,
    unscored_emotions,
)
from ser_train.held_out import (
    FINISHED_MODEL,
    FITTED_WITHOUT_EACH,
    MEAN_KEY,
    MIN_NEUTRAL_CALIBRATION_S,
    SHORT_SPEECH_S,
    outside_results_of,
)
from ser_train.hub import check_repo_id

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
CARD_FILE = "README.md"  # the Hub shows a repo's README.md as its model card

RAVDESS_LICENSE = "cc-by-nc-sa-4.0"  # the corpus licence, which trained models inherit
# Trained on several corpora, a model is bound by all their licences, which no single Hub licence
# id names: the card's metadata says "other" and its text lists each corpus's terms.
COMBINED_LICENSE_NAME = "non-commercial: the licences of the training corpora"  # every corpus one this project knows
OTHERS_LICENSE_NAME = "the licences of the training corpora"  # a corpus it does not know: its licence unread
TASK = "audio-classification"
# The card's tags; each known corpus the model trained on adds its own (e.g. "ravdess", "emovo").
TAGS = ["audio-classification", "speech-emotion-recognition", "emotion-recognition"]
FAMILY_TITLES = {"cnn": "CNN", "wav2vec2": "wav2vec2", "whisper": "Whisper"}
# Which model answered a held-out corpus (its results' "models"), as the card's sentence says it.
TESTED_BY = {
    FITTED_WITHOUT_EACH: "a model trained like this one on the other corpora only (one for each corpus)",
    FINISHED_MODEL: "this model itself, which never trained on any of them",
}


def write_model_card(model_dir: str | Path, repo_id: str | None = None) -> Path:
    """Render the card for `model_dir` and write it there as README.md; return its path."""
    path = Path(model_dir) / CARD_FILE
    render_model_card(model_dir, repo_id).save(path)
    return path


def render_model_card(model_dir: str | Path, repo_id: str | None = None) -> ModelCard:
    """The card of the model in `model_dir`; `repo_id` is where it is (to be) published."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SERError(f"There is no folder {model_dir}; a card is rendered from a finished training run's folder.")
    if repo_id:  # the card's usage example and name would carry it
        check_repo_id(repo_id)
    results = _read_json(model_dir / EVAL_RESULTS_FILE, required=True)
    _check_eval_results(results, model_dir / EVAL_RESULTS_FILE)
    outside = outside_results_of(model_dir)  # `evaluate --held-out-corpora` of this model, into its folder
    if outside:
        _check_eval_results(outside, model_dir / OUTSIDE_RESULTS_FILE)
    config = _read_json(model_dir / CONFIG_FILE, required=True)
    training_args = _read_json(model_dir / TRAINING_ARGS_FILE, required=False)
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    hyperparameters = training_args.get("hyperparameters", {})
    base_model = _hub_id(hyperparameters.get("base_model_id") or hyperparameters.get("base"))
    is_transformers = results["family"] != "cnn"
    corpora = training_corpora(results["dataset"])
    only_ravdess = all(corpus["title"] == "RAVDESS" for corpus in corpora)
    hub_datasets = [_hub_id(source) for source in results["dataset"].split(" + ") if _hub_id(source)]

    labels = _labels(results, config, model_dir)
    unscored = unscored_emotions(results["test"]) if "test" in results else []  # no test clip of them
    card_data = ModelCardData(
        model_name=model_name,
        license=RAVDESS_LICENSE if only_ravdess else "other",
        license_name=None if only_ravdess else COMBINED_LICENSE_NAME if all(corpus["known"] for corpus in corpora) else OTHERS_LICENSE_NAME,
        language=sorted({corpus["language"] for corpus in corpora if corpus["language"]}) or None,  # none claimed for unknown corpora
        datasets=hub_datasets or None,
        metrics=["accuracy", "recall", "f1"],
        pipeline_tag=TASK,
        library_name="transformers" if is_transformers else None,
        base_model=base_model,
        tags=TAGS + [corpus["id"] for corpus in corpora if corpus["known"]] + [results["family"]],
        eval_results=_eval_results(results) + _outside_eval_results(outside),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        model_ref=repo_id or _display_path(model_dir),
        model_ref_in_shell=shlex.quote(repo_id or _display_path(model_dir)),  # a folder's name may hold spaces
        family_title=FAMILY_TITLES.get(results["family"], results["family"]),
        family_description=_family_description(results["family"], config, corpora),
        labels=labels,
        # Emotions it has outputs for but no training clip of (records before 2026-12-06 list none).
        untaught=[label for label in labels if label not in results.get("trained_labels", labels)],
        test=results.get("test"),
        unscored=unscored,
        unscored_answers=answers_among(results["test"], unscored) if unscored else 0,
        left_out=left_out_clips(results[UNTRAINED_CLIPS_KEY]) if UNTRAINED_CLIPS_KEY in results else None,
        corpora=corpora,
        corpora_titles=" + ".join(corpus["title"] for corpus in corpora),
        headline_name=_headline_name(results) if "test" in results else None,
        chance=_chance_sentence(results, outside),
        evaluation_description=_evaluation_description(results) if "test" in results else None,
        held_out=_held_out_section(results),
        outside=_held_out_section(outside),
        outside_command=outside.get("command"),
        confidence=_confidence_section(results),
        folds=_fold_rows(results),
        cv_mean=results.get("cross_validation", {}).get("mean"),
        cv_std=results.get("cross_validation", {}).get("std"),
        has_confusion_matrix=(model_dir / CONFUSION_MATRIX_FILE).is_file(),
        actor_disjoint=_from_training(results),
        base_model=base_model,
        command=results["command"],
        training_args=json.dumps(training_args, indent=2) if training_args else None,
        feature_config=json.dumps(config["feature_config"], indent=2) if config.get("feature_config") else None,
        is_transformers=is_transformers,
        family=results["family"],
        trims_silence=bool(config.get("trim_silence")),
        # A fit without epochs (best_epoch None) has no use for validation actors: they train.
        validation_trains=all("best_epoch" in fold and fold["best_epoch"] is None for fold in results["folds"]),
        calibration=_calibration_section(results),
        scoring=results.get("scoring"),
    )


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise SERError(
                f"{path.parent} has no {path.name}; a card is rendered from a finished training run's folder."
            )
        return {}
    return read_record(path)


# What every eval_results.json that training or `evaluate` writes holds (see `eval_results`).
REQUIRED_RESULTS = ("family", "dataset", "folds", "command")


def _check_eval_results(results: dict, path: Path) -> None:
    """Refuse, in one sentence, an eval_results.json that training or evaluation did not write."""
    missing = [key for key in REQUIRED_RESULTS if key not in results]
    if missing:
        raise SERError(
            f"{path} lacks {', '.join(repr(key) for key in missing)}, so it is not the results of a training "
            "run or an evaluation; no card can be rendered from it (python -m ser_train train or evaluate writes one)."
        )


def _labels(results: dict, config: dict, model_dir: Path) -> list[str]:
    """The model's emotions: as its results list them, else (results of `evaluate
    --held-out-corpora`, which list none) as its config.json does."""
    from ser_train.inference import config_labels

    labels = results.get("labels") or results.get("test", {}).get("labels") or config_labels(config, results["family"])
    if not labels:
        raise SERError(f"Neither {EVAL_RESULTS_FILE} nor {CONFIG_FILE} in {model_dir} lists the model's emotions, so no card can be rendered.")
    return labels


def _eval_results(results: dict) -> list[EvalResult]:
    """The model-index entries: accuracy, balanced accuracy and macro F1 on the described split,
    and on each corpus held out of training."""
    entries = []
    if "test" in results:
        corpora = training_corpora(results["dataset"])
        if results.get("per_corpus"):  # several corpora, of which these had test speakers (all, unless folds were within one)
            names = _corpus_names_of(results["dataset"])
            corpora = [corpus for corpus, name in zip(corpora, names) if name in results["per_corpus"]] or corpora
        dataset_id = "+".join(corpus["id"] for corpus in corpora)
        dataset_name = " + ".join(corpus["title"] for corpus in corpora)
        entries += _metric_entries(results["test"], dataset_id, dataset_name, _split_name(results))
    for corpus, entry in results.get("leave_one_corpus_out", {}).items():
        if corpus != MEAN_KEY:
            title = _corpus_title(corpus, results["dataset"])
            entries += _metric_entries(entry["metrics"], corpus, title, "held out of training (every speaker)")
    return entries


def _outside_eval_results(outside: dict) -> list[EvalResult]:
    """The model-index entries of corpora none of its training heard, scored by the model itself."""
    return [
        entry
        for corpus, scores in outside.get("leave_one_corpus_out", {}).items()
        if corpus != MEAN_KEY
        for entry in _metric_entries(scores["metrics"], corpus, _corpus_title(corpus, outside["dataset"]), "never heard by this model (every speaker)")
    ]


def _metric_entries(metrics: dict, dataset_id: str, dataset_name: str, split: str) -> list[EvalResult]:
    values = (
        ("accuracy", metrics["accuracy"], "Accuracy (WA)", None),
        ("balanced_accuracy", metrics["balanced_accuracy"], "Balanced accuracy (UA, macro recall)", None),
        ("f1", metrics["macro_f1"], "Macro F1", {"average": "macro"}),
    )
    return [
        EvalResult(
            task_type=TASK,
            task_name="Speech emotion recognition",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric_type,
            metric_value=round(value, 4),
            metric_name=metric_name,
            metric_args=metric_args,
        )
        for metric_type, value, metric_name, metric_args in values
    ]


def training_corpora(dataset: str) -> list[dict]:
    """Each corpus a model learned from (`eval_results.json`'s "dataset", sources joined by " + "),
    with what the card says of it; a corpus this project does not know is named by its folder.

    "id" is the corpus's dataset type in the card's metadata: a Hub dataset's id, else the
    known corpus's key ("ravdess", "tess", "emovo"), else the folder's name; "known" says
    whether this project knows the corpus (and tags the card with its key).
    """
    corpora = []
    for source in dataset.split(" + "):
        info = corpus_info(source)
        name = Path(source).name or source
        if info:
            key = next(key for key, known in KNOWN_CORPORA.items() if known == info)
            corpora.append({"source": source, "id": _hub_id(source) or key, "known": True, **info.__dict__})
        else:
            corpora.append(
                {"source": source, "id": _hub_id(source) or name, "known": False, "title": name,
                 "description": f"the corpus in `{name}`", "language": None,
                 "licence": "see the corpus's own licence", "citation": None, "acted": None}
            )
    return corpora


def _corpus_names_of(dataset: str) -> list[str]:
    """The names a run gave its sources (`eval_results.json`'s "dataset"), as `load_corpora`
    names them: a folder by its name, a Hub id with "/" as "-"."""
    sources = dataset.split(" + ")
    return [
        name if Path(source).expanduser().is_dir() or _hub_id(source) else Path(source).name or source  # a folder not here now
        for name, source in zip(corpus_names_of(sources), sources)
    ]


def _corpus_title(corpus: str, dataset: str) -> str:
    """How the card names a corpus of a run (by its name in the run's results, e.g. a key of
    "leave_one_corpus_out"): the known corpus its source is a copy of, else that name."""
    by_name = dict(zip(_corpus_names_of(dataset), dataset.split(" + ")))
    info = corpus_info(by_name.get(corpus, corpus)) or corpus_info(corpus)
    return info.title if info else corpus


def _held_out_section(results: dict) -> dict | None:
    """Rows of a table of corpora held out of training (per corpus, then the mean): those of
    leave-one-corpus-out, or of `evaluate --held-out-corpora`."""
    loco = results.get("leave_one_corpus_out")
    if not loco:
        return None

    def cells(scores: dict) -> dict:
        most = scores["metrics"]["most_predicted"]
        return {**{k: scores["metrics"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}, "top": most["emotion"], "top_share": most["share"], "ece": scores["ece"]}

    entries = {corpus: entry for corpus, entry in loco.items() if corpus != MEAN_KEY}
    recorded = [entry["mood_calibration"] for entry in entries.values() if "mood_calibration" in entry]
    mood_rows = [row for row in recorded if "metrics" in row]  # a corpus whose speakers all lack a prompted mood has no figure
    per_mood = clips_per_mood(recorded[0]) if recorded else CLIPS_PER_PROMPTED_MOOD
    # Why a calibration row has no figures: every speaker was left out of it, for too few clips to
    # calibrate on or none left to score (a QA pass's speakers had exactly 2 of each mood).
    neutral_lack = f"{MIN_NEUTRAL_CALIBRATION_S:.0f} s of neutral and calm speech and more clips to score"
    moods_lack = f"{per_mood} clip(s) of each prompted mood and more clips to score"
    rows = []
    for corpus, entry in entries.items():
        rows.append(
            {
                "corpus": _corpus_title(corpus, results["dataset"]),
                **cells(entry),
                "recall": {name: scores["recall"] for name, scores in entry["metrics"]["per_class"].items() if scores["support"]},
                "temperature": entry["temperature"],
                "neutral": _calibration_cells(entry.get("neutral_calibration"), f"no speaker had {neutral_lack}"),
                "moods": _calibration_cells(entry.get("mood_calibration"), f"no speaker had {moods_lack}"),
                "short": {s: cells(entry["short_speech"][str(s)]) for s in SHORT_SPEECH_S},
            }
        )
    mean = loco[MEAN_KEY]

    def mean_cells(row: str, lack: str) -> dict | None:
        """The mean row's cells of a calibration row: a mean over the corpora it has figures on."""
        if row not in mean:
            return None
        if mean[row].get("balanced_accuracy") is None:
            return {"reason": f"no speaker of any held-out corpus had {lack}"}
        measured = sum(1 for entry in entries.values() if (entry.get(row) or {}).get("metrics"))
        found = {"ua": mean[row]["balanced_accuracy"], "without": mean[row].get("uncalibrated_same_clips"), "ece": mean[row].get("ece")}
        return {**found, "over": f"{measured} of {len(entries)}" if measured < len(entries) else None}

    return {
        "rows": rows,
        "mean": mean,
        "tested_by": TESTED_BY.get(mean["models"], mean["models"]),
        "mean_neutral": mean_cells("neutral_calibration", neutral_lack),
        "mean_moods": mean_cells("mood_calibration", moods_lack),
        "short_seconds": list(SHORT_SPEECH_S),
        "min_calibration_s": MIN_NEUTRAL_CALIBRATION_S,
        "prompted_moods": ", ".join("/".join(mood) for mood in PROMPTED_MOODS),
        "clips_per_mood": per_mood,
        "moods_compared_with": MOODS_COMPARED_WITH.get(calibrated_as(mood_rows[0])) if mood_rows else None,
        "repeats": PROTOCOL_REPEATS,
    }


def _calibration_cells(row: dict | None, reason: str) -> dict | None:
    """A held-out corpus's calibration row as the card shows it: UA, UA without calibration on
    the same clips, ECE; or why it has no figures (`reason`). None where the row was not
    recorded at all (a model that cannot be calibrated)."""
    if row is None:
        return None
    metrics = row.get("metrics") or {}
    if metrics.get("balanced_accuracy") is None:
        return {"reason": reason}
    return {"ua": metrics["balanced_accuracy"], "without": (row.get("uncalibrated_same_clips") or {}).get("balanced_accuracy"), "ece": row.get("ece")}


def _confidence_section(results: dict) -> dict | None:
    """The temperature of the model's probabilities and its unsure rule, with how it splits the
    held-out corpora's answers."""
    calibration = results.get(CONFIDENCE_RESULTS_KEY)
    if not calibration:
        return None
    def title(corpus: str) -> str:
        return _corpus_title(corpus, results["dataset"])

    def titled(answers: dict) -> dict:
        return {title(corpus): summary for corpus, summary in answers.items()}

    return {
        **calibration,
        "measured_on": [title(corpus) for corpus in calibration["measured_on"]],
        "held_out_answers": titled(calibration["held_out_answers"]),
        "calibrated": [
            {**found, "source": CALIBRATION_SOURCE_TITLES[source], "held_out_answers": titled(found["held_out_answers"])}
            for source, found in calibration.get("calibrated", {}).items()
        ],
    }


# How the card names the speech a calibration came from (ser_train.calibration.SOURCES).
CALIBRATION_SOURCE_TITLES = {
    "neutral": "neutral speech (e.g. a read passage)",
    "moods": "the mood prompt's moods",
    "speech": "any speech",
}


def _split_name(results: dict) -> str:
    """The evaluated split in a few words, naming exactly which actors were tested."""
    folds = results["folds"]
    if len(folds) == 1:
        fold = folds[0]
        if not _from_training(results):
            return f"test actors {format_speakers(fold, 'test')}"
        return (
            f"actor-disjoint hold-out: test actors {format_speakers(fold, 'test')}, "
            f"validation actors {format_speakers(fold, 'validation')}, training the rest"
        )
    test_groups = " | ".join(format_speakers(fold, "test") for fold in folds)
    return f"{len(folds)}-fold actor-disjoint cross-validation (test actors {test_groups}), pooled"


def _from_training(results: dict) -> bool:
    """Whether the results come from the training runner, whose splits are actor-disjoint.

    `python -m ser_train evaluate` tests a finished model on chosen actors and records no
    validation actors; which actors trained that model is then not known here.
    """
    return all(fold["validation_actors"] for fold in results["folds"])


def _scored_emotions(metrics: dict) -> int:
    """How many emotions a figure's balanced accuracy (UA) is the mean recall of: those with
    clips among the scored ones (`EmotionClassificationMetrics` leaves the others out)."""
    return sum(1 for scores in metrics["per_class"].values() if scores["support"])


def _chance_counts(results: dict) -> tuple[int, list[int]]:
    """How many emotions the figure on new speakers of its own corpora averages (0: none), and
    each held-out corpus's figure."""
    count = _scored_emotions(results["test"]) if "test" in results else 0
    loco = results.get("leave_one_corpus_out", {})
    counts = [_scored_emotions(entry["metrics"]) for corpus, entry in loco.items() if corpus != MEAN_KEY]
    return count, [held_out for held_out in counts if held_out]


def chance_levels(results: dict) -> tuple[float | None, float | None]:
    """The balanced accuracy of chance (always answering one emotion, or at random) beside the
    figure on new speakers of its own corpora (1/k, k the emotions it averages) and beside the
    mean over held-out corpora (the mean of theirs); None where there is no such figure."""
    count, counts = _chance_counts(results)
    return (1 / count if count else None, sum(1 / k for k in counts) / len(counts) if counts else None)


def _chance_sentence(results: dict, outside: dict) -> str:
    """`chance_levels` as the card says them, with how each was counted: on new speakers of its own
    corpora, on the corpora held out of training and on those none of its training heard (`outside`)."""
    count, counts = _chance_counts(results)
    parts = []
    if count:
        where = " on new speakers of its own corpora" if counts or outside else ""
        parts.append(f"{1 / count:.3f}{where} (1/{count}: {count} emotions scored)")
    if counts:
        parts.append(_corpora_chance(counts, "on the corpora held out of training"))
    if outside and (outside_counts := _chance_counts(outside)[1]):
        parts.append(_corpora_chance(outside_counts, "on those none of its training heard"))
    if not parts:
        return ""
    said = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Balanced accuracy by chance is {said}."


def _corpora_chance(counts: list[int], where: str) -> str:
    """Chance over several corpora (the mean of theirs), where, and how it was counted."""
    how = (
        f"{counts[0]} emotions scored on each" if len(set(counts)) == 1
        else f"the mean of 1/k, k the emotions scored on each: {', '.join(map(str, counts))}"
    )
    return f"{sum(1 / k for k in counts) / len(counts):.3f} {where} ({how})"


def _headline_name(results: dict) -> str:
    if results["protocol"] == "cross_validation":
        return f"pooled over {len(results['folds'])} folds"
    return f"test actors {format_speakers(results['folds'][0], 'test')}"


def _evaluation_description(results: dict) -> str:
    """How the reported figures were obtained, and how they relate to the published weights."""
    folds, test = results["folds"], results["test"]
    if len(folds) == 1:
        fold = folds[0]
        if not _from_training(results):
            return f"Tested on the {test['num_examples']} clips of actors {format_speakers(fold, 'test')}."
        return (
            f"Tested on the {test['num_examples']} clips of actors {format_speakers(fold, 'test')}, "
            f"whom the model never heard; actors {format_speakers(fold, 'validation')} chose the "
            "training epoch kept (early stopping), and the remaining actors trained it."
        )
    text = (
        f"Figures are pooled over {len(folds)}-fold actor-disjoint cross-validation: each of the "
        f"{test['num_examples']} clips was tested exactly once, by a fold model that never heard its "
        "speaker."
    )
    final = results.get("final_model")
    if final:
        epochs = final.get("epochs")
        how_long = (
            f" for {epochs} epoch{'s' if epochs != 1 else ''} (the folds' median best epoch)" if epochs else " with the same settings"
        )
        text += (
            f" The published model was then trained on all {len(final['actors'])} actors{how_long}, so it "
            "has no held-out figures of its own: the cross-validation figures estimate how it does on new voices."
        )
    return text


def _calibration_section(results: dict) -> dict | None:
    """The speaker-calibration protocol and its rows (UA with and without), if it was measured."""
    calibration = results.get("calibration")
    if not calibration:
        return None
    rows = [
        {"name": name, "calibrated": calibrated, "uncalibrated": uncalibrated, "spread": spread}
        for name, calibrated, uncalibrated, spread in calibration_rows(calibration)
    ]
    splits = calibration["num_folds"]
    scope = f"mean over the {splits} test folds" if splits > 1 else "on the test split"
    models = "fold models (each tested on actors it never heard)" if splits > 1 else "model"
    draws = any(row["spread"] is not None for row in rows)
    return {"protocol": calibration["protocol"], "rows": rows, "scope": scope, "models": models, "draws": draws}


def _fold_rows(results: dict) -> list[dict]:
    return [
        {
            "test_actors": format_speakers(fold, "test"),
            "validation_actors": format_speakers(fold, "validation"),
            **{name: fold["metrics"][name] for name in ("accuracy", "balanced_accuracy", "macro_f1")},
        }
        for fold in results["folds"]
    ]


def _family_description(family: str, config: dict, corpora: list[dict]) -> str:
    trained_on = " + ".join(corpus["title"] for corpus in corpora)
    if family == "cnn":
        return (
            "A compact convolutional network over frame-level acoustic features computed from the "
            "waveform (settings below); it is small enough to run on a CPU."
        )
    if family == "whisper":
        return (
            f"The encoder of OpenAI's Whisper (MIT licence), frozen, with a head trained on {trained_on}: "
            "each layer's mean and standard deviation over the clip's own frames (not the padding), "
            "standardised, and a linear classifier (multinomial logistic regression; "
            "`WhisperForEmotionRecognition`, model type `whisper-emotion`, which transformers loads after "
            "`import ser_train.models.whisper`). It stores its training speakers' statistics, so it can be "
            f"calibrated to a speaker. It hears windows of {config['max_source_positions'] // 50} s: "
            "shorter clips are padded, longer ones cut."
        )
    model_type = config.get("model_type", family)
    return (
        f"A {model_type} speech encoder, pretrained on unlabelled speech, fine-tuned with a "
        f"classification head on {trained_on}."
    )


def _hub_id(name: str | None) -> str | None:
    """`name` if it is a Hub repo id rather than a local path, else None."""
    if not name or Path(name).expanduser().exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _display_path(model_dir: Path) -> str:
    """The folder relative to the working directory when it is below it (cards travel)."""
    relative = os.path.relpath(model_dir.resolve())
    return model_dir.resolve().as_posix() if relative.startswith("..") else Path(relative).as_posix()


def format_speakers(fold: dict, role: str) -> str:
    """A fold's "test" or "validation" speakers: by name where its record has them (a corpus's
    together, numbered ones as runs: 'ravdess-opus-16k 1-4; emovo-opus-16k f1, m2'), else by
    actor id (records written before names were, whose ids interleave corpora)."""
    names = fold.get(f"{role}_speakers")
    if not names:
        return format_actors(fold[f"{role}_actors"])
    by_corpus: dict[str, list[str]] = {}
    for name in names:
        corpus, _, bare = name.rpartition("/")
        by_corpus.setdefault(corpus, []).append(bare)
    groups = [
        f"{corpus} {format_actors([int(b) for b in bare]) if all(b.isdigit() for b in bare) else ', '.join(sorted(bare))}".strip()
        for corpus, bare in by_corpus.items()
    ]
    return "; ".join(groups)


def format_actors(actors: list[int]) -> str:
    """[21, 22, 23, 24] -> '21-24'; [1, 3, 5] -> '1, 3, 5'; runs of consecutive actors shortened."""
    runs: list[list[int]] = []
    for actor in sorted(actors):
        if runs and actor == runs[-1][-1] + 1:
            runs[-1].append(actor)
        else:
            runs.append([actor])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)
