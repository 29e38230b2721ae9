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
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ser_train.calibration import MOODS_COMPARED_WITH, PROMPTED_MOODS, PROTOCOL_REPEATS, calibrated_as, clips_per_mood
from ser_train.corpora import corpus_info
from ser_train.errors import SERError
from ser_train.evaluation import CONFUSION_MATRIX_FILE, EVAL_RESULTS_FILE, calibration_rows
from ser_train.held_out import MEAN_KEY, MIN_NEUTRAL_CALIBRATION_S, SHORT_SPEECH_S

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
CARD_FILE = "README.md"  # the Hub shows a repo's README.md as its model card
TRAINING_ARGS_FILE = "training_args.json"
CONFIG_FILE = "config.json"

RAVDESS_LICENSE = "cc-by-nc-sa-4.0"  # the corpus licence, which trained models inherit
# Trained on several corpora, a model is bound by all their licences, which no single Hub licence
# id names: the card's metadata says "other" and its text lists each corpus's terms.
COMBINED_LICENSE_NAME = "non-commercial: the licences of the training corpora"
TASK = "audio-classification"
TAGS = ["audio-classification", "speech-emotion-recognition", "emotion-recognition", "ravdess"]
FAMILY_TITLES = {"cnn": "CNN", "wav2vec2": "wav2vec2", "whisper": "Whisper"}


def write_model_card(model_dir: str | Path, repo_id: str | None = None) -> Path:
    """Render the card for `model_dir` and write it there as README.md; return its path."""
    path = Path(model_dir) / CARD_FILE
    render_model_card(model_dir, repo_id).save(path)
    return path


def render_model_card(model_dir: str | Path, repo_id: str | None = None) -> ModelCard:
    """The card of the model in `model_dir`; `repo_id` is where it is (to be) published."""
    model_dir = Path(model_dir)
    results = _read_json(model_dir / EVAL_RESULTS_FILE, required=True)
    config = _read_json(model_dir / CONFIG_FILE, required=True)
    training_args = _read_json(model_dir / TRAINING_ARGS_FILE, required=False)
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    hyperparameters = training_args.get("hyperparameters", {})
    base_model = _hub_id(hyperparameters.get("base_model_id") or hyperparameters.get("base"))
    is_transformers = results["family"] != "cnn"
    corpora = training_corpora(results["dataset"])
    only_ravdess = all(corpus["title"] == "RAVDESS" for corpus in corpora)
    hub_datasets = [_hub_id(source) for source in results["dataset"].split(" + ") if _hub_id(source)]

    card_data = ModelCardData(
        model_name=model_name,
        license=RAVDESS_LICENSE if only_ravdess else "other",
        license_name=None if only_ravdess else COMBINED_LICENSE_NAME,
        language=sorted({corpus["language"] for corpus in corpora if corpus["language"]}) or "en",
        datasets=hub_datasets or None,
        metrics=["accuracy", "recall", "f1"],
        pipeline_tag=TASK,
        library_name="transformers" if is_transformers else None,
        base_model=base_model,
        tags=TAGS + [results["family"]],
        eval_results=_eval_results(results),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        model_ref=repo_id or _display_path(model_dir),
        family_title=FAMILY_TITLES.get(results["family"], results["family"]),
        family_description=_family_description(results["family"], config, corpora),
        labels=results["labels"] if "labels" in results else results["test"]["labels"],
        test=results.get("test"),
        corpora=corpora,
        corpora_titles=" + ".join(corpus["title"] for corpus in corpora),
        headline_name=_headline_name(results) if "test" in results else None,
        evaluation_description=_evaluation_description(results) if "test" in results else None,
        held_out=_held_out_section(results),
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
    return json.loads(path.read_text())


def _eval_results(results: dict) -> list[EvalResult]:
    """The model-index entries: accuracy, balanced accuracy and macro F1 on the described split,
    and on each corpus held out of training."""
    entries = []
    if "test" in results:
        test = results["test"]
        dataset_id = _hub_id(results["dataset"].split(" + ")[0]) or "ravdess"
        entries += _metric_entries(test, dataset_id, "RAVDESS (speech)" if not results.get("per_corpus") else results["dataset"], _split_name(results))
    for corpus, entry in results.get("leave_one_corpus_out", {}).items():
        if corpus != MEAN_KEY:
            info = corpus_info(corpus)
            entries += _metric_entries(entry["metrics"], corpus, info.title if info else corpus, "held out of training (every speaker)")
    return entries


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
    with what the card says of it; a corpus this project does not know is named by its folder."""
    corpora = []
    for source in dataset.split(" + "):
        info = corpus_info(source)
        if info:
            corpora.append({"source": source, **info.__dict__})
        else:
            name = Path(source).name or source
            corpora.append(
                {"source": source, "title": name, "description": f"the corpus in `{name}`", "language": None,
                 "licence": "see the corpus's own licence", "citation": None}
            )
    return corpora


def _held_out_section(results: dict) -> dict | None:
    """Rows of the leave-one-corpus-out table (per held-out corpus, then the mean)."""
    loco = results.get("leave_one_corpus_out")
    if not loco:
        return None

    def cells(scores: dict) -> dict:
        most = scores["metrics"]["most_predicted"]
        return {**{k: scores["metrics"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}, "top": most["emotion"], "top_share": most["share"], "ece": scores["ece"]}

    rows = []
    for corpus, entry in loco.items():
        if corpus == MEAN_KEY:
            continue
        info = corpus_info(corpus)
        neutral = entry.get("neutral_calibration", {})
        moods = entry.get("mood_calibration", {})
        rows.append(
            {
                "corpus": info.title if info else corpus,
                **cells(entry),
                "recall": {name: scores["recall"] for name, scores in entry["metrics"]["per_class"].items() if scores["support"]},
                "temperature": entry["temperature"],
                "neutral": neutral.get("metrics", {}).get("balanced_accuracy"),
                "neutral_without": neutral.get("uncalibrated_same_clips", {}).get("balanced_accuracy"),
                "neutral_ece": neutral.get("ece"),
                "neutral_left_out": neutral.get("speakers_left_out"),
                "moods": moods.get("metrics", {}).get("balanced_accuracy"),
                "moods_without": moods.get("uncalibrated_same_clips", {}).get("balanced_accuracy"),
                "moods_ece": moods.get("ece"),
                "short": {s: cells(entry["short_speech"][str(s)]) for s in SHORT_SPEECH_S},
            }
        )
    mood_rows = [  # the rows with a figure (a corpus whose speakers all lack a prompted mood has none)
        entry["mood_calibration"] for corpus, entry in loco.items() if corpus != MEAN_KEY and "metrics" in entry.get("mood_calibration", {})
    ]
    return {
        "rows": rows,
        "mean": loco[MEAN_KEY],
        "short_seconds": list(SHORT_SPEECH_S),
        "min_calibration_s": MIN_NEUTRAL_CALIBRATION_S,
        "prompted_moods": ", ".join("/".join(mood) for mood in PROMPTED_MOODS),
        "clips_per_mood": clips_per_mood(mood_rows[0]) if mood_rows else None,
        "moods_compared_with": MOODS_COMPARED_WITH[calibrated_as(mood_rows[0])] if mood_rows else None,
        "repeats": PROTOCOL_REPEATS,
    }


def _confidence_section(results: dict) -> dict | None:
    """The temperature of the model's probabilities and its unsure rule, with how it splits the
    held-out corpora's answers."""
    calibration = results.get("probability_calibration")
    if not calibration:
        return None
    def title(corpus: str) -> str:
        info = corpus_info(corpus)
        return info.title if info else corpus

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
            return f"test actors {format_actors(fold['test_actors'])}"
        return (
            f"actor-disjoint hold-out: test actors {format_actors(fold['test_actors'])}, "
            f"validation actors {format_actors(fold['validation_actors'])}, training the rest"
        )
    test_groups = " | ".join(format_actors(fold["test_actors"]) for fold in folds)
    return f"{len(folds)}-fold actor-disjoint cross-validation (test actors {test_groups}), pooled"


def _from_training(results: dict) -> bool:
    """Whether the results come from the training runner, whose splits are actor-disjoint.

    `python -m ser_train evaluate` tests a finished model on chosen actors and records no
    validation actors; which actors trained that model is then not known here.
    """
    return all(fold["validation_actors"] for fold in results["folds"])


def _headline_name(results: dict) -> str:
    if results["protocol"] == "cross_validation":
        return f"pooled over {len(results['folds'])} folds"
    return f"test actors {format_actors(results['folds'][0]['test_actors'])}"


def _evaluation_description(results: dict) -> str:
    """How the reported figures were obtained, and how they relate to the published weights."""
    folds, test = results["folds"], results["test"]
    if len(folds) == 1:
        fold = folds[0]
        if not _from_training(results):
            return f"Tested on the {test['num_examples']} clips of actors {format_actors(fold['test_actors'])}."
        return (
            f"Tested on the {test['num_examples']} clips of actors {format_actors(fold['test_actors'])}, "
            f"whom the model never heard; actors {format_actors(fold['validation_actors'])} chose the "
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
            "test_actors": format_actors(fold["test_actors"]),
            "validation_actors": format_actors(fold["validation_actors"]),
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


def format_actors(actors: list[int]) -> str:
    """[21, 22, 23, 24] -> '21-24'; [1, 3, 5] -> '1, 3, 5'; runs of consecutive actors shortened."""
    runs: list[list[int]] = []
    for actor in sorted(actors):
        if runs and actor == runs[-1][-1] + 1:
            runs[-1].append(actor)
        else:
            runs.append([actor])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)
