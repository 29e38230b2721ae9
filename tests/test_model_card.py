"""Model cards: valid Hub metadata holding the real numbers of eval_results.json."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from hub_helpers import make_tiny_wav2vec2, write_real_eval_results
from ser_train.cli import main
from ser_train.evaluation import eval_results, write_eval_results
from ser_train.model_card import format_actors, write_model_card

HOLDOUT_ACTORS = [[5, 6]]
FOLDS = [[1], [2], [3]]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-wav2vec2"))


@pytest.fixture(scope="module")
def holdout_model(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("holdout") / "ser-holdout"
    shutil.copytree(tiny_model, folder)
    write_real_eval_results(folder, HOLDOUT_ACTORS)
    return folder


@pytest.fixture(scope="module")
def cross_validated_model(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cv") / "ser-cv"
    shutil.copytree(tiny_model, folder)
    write_real_eval_results(folder, FOLDS)
    return folder


@pytest.fixture(scope="module")
def trained_cnn(synthetic_ravdess, tmp_path_factory):
    """A tiny CNN trained by the real runner: its folder holds exactly what training writes."""
    from ser_train.training import runner
    from ser_train.training.cnn import CNNFamily, CNNHyperparameters

    folder = tmp_path_factory.mktemp("trained") / "ser-cnn"
    family = CNNFamily(
        CNNHyperparameters(epochs=2, channels=16, blocks=1, augmented_views=0),
        cache_dir=tmp_path_factory.mktemp("features"),
    )
    command = ["python", "-m", "ser_train", "train", "cnn", "--test-actors", "5,6", "--epochs", "2"]
    runner.run(family, str(synthetic_ravdess), folder, test_actors=[5, 6], command=command)
    return folder


def read_results(folder):
    return json.loads((folder / "eval_results.json").read_text())


def metric_values(card: ModelCard) -> dict:
    return {result.metric_type: result.metric_value for result in card.data.eval_results}


def test_holdout_card_metadata_holds_the_real_numbers(holdout_model):
    path = write_model_card(holdout_model, repo_id="someone/ser-holdout")
    card = ModelCard.load(path)  # parses the YAML front matter as the Hub does
    results = read_results(holdout_model)
    test = results["test"]

    assert path.name == "README.md"
    assert card.data.license == "cc-by-nc-sa-4.0"
    assert card.data.pipeline_tag == "audio-classification"
    assert card.data.datasets == ["xbgoose/ravdess"]
    assert card.data.base_model == "facebook/wav2vec2-base"
    assert "speech-emotion-recognition" in card.data.tags
    assert card.data.model_name == "ser-holdout"
    assert metric_values(card) == {
        "accuracy": round(test["accuracy"], 4),
        "balanced_accuracy": round(test["balanced_accuracy"], 4),
        "f1": round(test["macro_f1"], 4),
    }
    evaluation = card.data.eval_results[0]
    assert evaluation.task_type == "audio-classification"
    assert evaluation.dataset_split.startswith("actor-disjoint hold-out: test actors 5, 6, validation actors 1")


def test_holdout_card_body_shows_per_class_scores_usage_and_citation(holdout_model):
    text = ModelCard.load(write_model_card(holdout_model, repo_id="someone/ser-holdout")).text
    test = read_results(holdout_model)["test"]

    for name, scores in test["per_class"].items():
        row = f"| {name} | {scores['precision']:.3f} | {scores['recall']:.3f} | {scores['f1']:.3f} | {scores['support']} |"
        assert row in text
    assert f"| test actors 5, 6 | {test['accuracy']:.3f} | {test['balanced_accuracy']:.3f} |" in text
    assert "![Confusion matrix" in text and "(confusion_matrix.png)" in text
    assert 'load_model("someone/ser-holdout")' in text
    assert 'pipeline("audio-classification", model="someone/ser-holdout")' in text
    assert read_results(holdout_model)["command"] in text
    assert '"learning_rate": 3e-05' in text  # the training configuration
    assert "https://doi.org/10.1371/journal.pone.0196391" in text
    assert "spontaneous" in text and "children" in text  # the limits are spelled out
    assert "### Cross-validation" not in text


def test_cross_validation_card_has_fold_table_and_says_what_was_published(cross_validated_model):
    card = ModelCard.load(write_model_card(cross_validated_model))
    results = read_results(cross_validated_model)
    mean, std = results["cross_validation"]["mean"], results["cross_validation"]["std"]

    assert metric_values(card)["balanced_accuracy"] == round(results["pooled"]["balanced_accuracy"], 4)
    assert card.data.eval_results[0].dataset_split == (
        "3-fold actor-disjoint cross-validation (test actors 1 | 2 | 3), pooled"
    )
    for number, fold in enumerate(results["folds"], start=1):
        actors = ", ".join(map(str, fold["test_actors"]))
        assert f"| {number} | {actors} |" in card.text
        assert f"{fold['metrics']['balanced_accuracy']:.3f}" in card.text
    assert f"{mean['balanced_accuracy']:.3f} ± {std['balanced_accuracy']:.3f}" in card.text
    assert "trained on all 6 actors for 2 epochs" in card.text
    assert card.data.model_name == "ser-cv"  # no repo id: named after the folder


def test_card_of_a_cnn_trained_by_the_runner(trained_cnn):
    card = ModelCard.load(write_model_card(trained_cnn, repo_id="someone/ser-cnn"))
    results = read_results(trained_cnn)
    feature_config = json.loads((trained_cnn / "config.json").read_text())["feature_config"]

    assert metric_values(card)["accuracy"] == round(results["test"]["accuracy"], 4)
    assert card.data.datasets is None  # trained from a local folder, which is no Hub dataset
    assert card.data.base_model is None and card.data.library_name is None
    assert "cnn" in card.data.tags
    assert f"Data: RAVDESS (`{results['dataset']}`)" in card.text  # a local copy of a corpus the card knows
    assert "python -m ser_train train cnn --test-actors 5,6 --epochs 2" in card.text
    assert f'"n_mels": {feature_config["n_mels"]}' in card.text  # the feature settings
    assert 'load_model("someone/ser-cnn")' in card.text
    assert "pipeline(" not in card.text  # not a transformers model


def test_card_of_a_later_evaluation_claims_no_training_split(holdout_model, tmp_path):
    """`python -m ser_train evaluate` records test actors only: the card must not invent the rest."""
    folder = shutil.copytree(holdout_model, tmp_path / "evaluated")
    fold = {**read_results(folder)["folds"][0], "validation_actors": []}
    write_eval_results(folder, eval_results("wav2vec2", "xbgoose/ravdess", [fold], ["python", "-m", "ser_train", "evaluate"]))
    card = ModelCard.load(write_model_card(folder))

    assert card.data.eval_results[0].dataset_split == "test actors 5, 6"
    assert f"Tested on the {fold['metrics']['num_examples']} clips of actors 5, 6." in card.text
    assert "Every split is by" not in card.text and "validation actors" not in card.text


def test_card_command_renders_the_card(holdout_model, capsys):
    (holdout_model / "README.md").unlink(missing_ok=True)
    assert main(["card", "--model-dir", str(holdout_model), "--repo-id", "someone/renamed"]) == 0
    assert ModelCard.load(holdout_model / "README.md").data.model_name == "renamed"
    assert "README.md" in capsys.readouterr().out


def test_card_command_explains_a_folder_without_results(tiny_model, capsys):
    assert main(["card", "--model-dir", str(tiny_model)]) == 2
    assert "has no eval_results.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "actors, text",
    [([21, 22, 23, 24], "21-24"), ([1, 3, 5], "1, 3, 5"), ([4, 1, 2, 3, 9, 10], "1-4, 9, 10"), ([7], "7")],
)
def test_format_actors(actors, text):
    assert format_actors(actors) == text


def test_card_of_a_trained_cnn_shows_the_calibration_protocol_and_its_numbers(trained_cnn):
    """The runner measured speaker calibration on the test actors; the card shows every row."""
    results = read_results(trained_cnn)
    summary = results["calibration"]["mean_over_folds"]
    assert results["folds"][0]["calibration"]["uncalibrated"]["balanced_accuracy"] == results["test"]["balanced_accuracy"]
    body = ModelCard.load(write_model_card(trained_cnn)).text

    assert "### Speaker calibration" in body
    assert results["calibration"]["protocol"] in body
    assert f"| no calibration (all clips) |  | {summary['uncalibrated']:.3f} |" in body
    for count in ("3", "5", "10"):
        row = summary["random_clips"][count]
        drawn = f"{row['calibrated']:.3f} ± {row['calibrated_std_over_draws']:.3f}"  # how much the draw of clips moves it
        assert f"| K = {count} random clips | {drawn} | {row['uncalibrated_same_clips']:.3f} |" in body
    neutral = summary["neutral"]
    assert f"| neutral + calm clips | {neutral['calibrated']:.3f} | {neutral['uncalibrated_same_clips']:.3f} |" in body
    own = summary["self_one_emotion"]
    assert f"| self, one-emotion recording | {own['calibrated']:.3f} | {own['uncalibrated_same_clips']:.3f} |" in body
