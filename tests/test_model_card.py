"""Model cards: valid Hub metadata holding the real numbers of eval_results.json."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
from huggingface_hub import ModelCard

from hub_helpers import make_tiny_wav2vec2, write_real_eval_results
from ser_train.cli import main
from ser_train.data import EMOTIONS
from ser_train.evaluation import answers_among, classification_metrics, eval_results, format_metrics_table, unscored_emotions, write_eval_results
from ser_train.held_out import FITTED_WITHOUT_EACH, MIN_NEUTRAL_CALIBRATION_S
from ser_train import model_card
from ser_train.model_card import format_actors, write_model_card
from synthetic import make_manifest_corpus

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


def test_a_card_for_an_id_that_is_no_hub_repo_id_is_refused_and_the_old_card_kept(holdout_model, capsys):
    """`push` refuses such an id; `card` rendered it into the usage example and the card's name."""
    before = write_model_card(holdout_model, repo_id="someone/ser-holdout").read_bytes()
    assert main(["card", "--model-dir", str(holdout_model), "--repo-id", "bad id with spaces"]) == 2
    assert "'bad id with spaces' is not a Hub repo id; use the form user/name." in capsys.readouterr().err
    assert (holdout_model / "README.md").read_bytes() == before


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


def test_the_cards_command_line_quotes_a_folder_name_with_spaces(holdout_model, tmp_path):
    """A QA pass pasted the card's command for a folder named with spaces into a shell."""
    spaced = shutil.copytree(holdout_model, tmp_path / "run with spaces")
    text = ModelCard.load(write_model_card(spaced)).text
    [shown] = [line for line in text.splitlines() if line.startswith("From the command line:")]
    command = shown.split("`")[1]
    assert shlex.split(command)[5] == model_card._display_path(spaced) and "run with spaces" in command


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


def test_card_command_explains_a_folder_without_results(tiny_model, tmp_path, capsys):
    assert main(["card", "--model-dir", str(tiny_model)]) == 2
    assert "has no eval_results.json" in capsys.readouterr().err
    assert main(["card", "--model-dir", str(tmp_path / "typo")]) == 2  # no such folder: it says so
    assert f"There is no folder {tmp_path / 'typo'};" in capsys.readouterr().err


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


# --- Cards of runs on other corpora, and of damaged folders ------------------------------------------


@pytest.fixture(scope="module")
def held_out_cnn(calibratable_cnn, tmp_path_factory):
    """The calibratable CNN judged on two corpora it never heard, as `evaluate --held-out-corpora`
    does: neither has a speaker with 10 s of neutral speech (1.5 s clips; "beta" has none), and
    only "alpha" has every prompted mood, so the mean of the neutral row has no figures at all."""
    from ser_train.corpora import load_corpora
    from ser_train.held_out import evaluate_held_out_corpora
    from ser_train.inference import load_model

    root = tmp_path_factory.mktemp("held-out-corpora")
    emotion = {name: EMOTIONS.index(name) for name in EMOTIONS}
    alpha = make_manifest_corpus(
        root / "alpha", {name: emotion[name] for name in ("neutral", "happy", "sad", "angry", "fearful")},
        speakers=("a1", "a2"), clips_per_label=3,
    )
    beta = make_manifest_corpus(root / "beta", {name: emotion[name] for name in ("happy", "sad", "fearful")}, speakers=("b1", "b2"))
    folder = tmp_path_factory.mktemp("held-out") / "held-out-cnn"
    shutil.copytree(calibratable_cnn, folder)
    sources = [str(alpha), str(beta)]
    loco = evaluate_held_out_corpora(load_model(str(folder)), load_corpora(sources), single_name="alpha")
    write_eval_results(folder, eval_results("cnn", " + ".join(sources), [], ["python", "-m", "ser_train", "evaluate"], leave_one_corpus_out=loco))
    return folder


def test_card_of_held_out_corpora_without_neutral_speech_says_the_row_was_not_measured(held_out_cnn, capsys):
    loco = read_results(held_out_cnn)["leave_one_corpus_out"]
    assert loco["mean"]["neutral_calibration"]["balanced_accuracy"] is None  # the case that crashed the card
    assert "metrics" in loco["alpha"]["mood_calibration"] and "metrics" not in loco["beta"]["mood_calibration"]

    assert main(["card", "--model-dir", str(held_out_cnn)]) == 0
    card = ModelCard.load(held_out_cnn / "README.md")
    assert "one of 8 acted emotions" in card.text  # `evaluate --held-out-corpora` lists no labels: the model's own
    rows = {}  # the held-out table's rows (the per-emotion recall table below repeats the corpora)
    for line in card.text.splitlines():
        if line.startswith(("| alpha |", "| beta |", "| **mean** |")):
            rows.setdefault(line.split(" | ")[0], line)

    lacks_neutral = f"not measured: no speaker had {MIN_NEUTRAL_CALIBRATION_S:.0f} s of neutral and calm speech"
    assert lacks_neutral in rows["| alpha"] and lacks_neutral in rows["| beta"]
    assert "not measured: no speaker had 2 clip(s) of each prompted mood and more clips to score" in rows["| beta"]
    moods = loco["alpha"]["mood_calibration"]
    assert f"| {moods['metrics']['balanced_accuracy']:.3f} ({moods['uncalibrated_same_clips']['balanced_accuracy']:.3f}), {moods['ece']:.3f} |" in rows["| alpha"]
    mean = loco["mean"]
    assert "not measured: no speaker of any held-out corpus had 10 s of neutral and calm speech" in rows["| **mean**"]
    mean_moods = mean["mood_calibration"]
    assert (
        f"| {mean_moods['balanced_accuracy']:.3f} ({mean_moods['uncalibrated_same_clips']:.3f}), {mean_moods['ece']:.3f} (over 1 of 2 corpora) |"
    ) in rows["| **mean**"]
    assert "None" not in card.text
    # Chance follows the emotions each held-out corpus scores: 5 in alpha, 3 in beta.
    assert [len(loco[corpus]["scoring"]["scored_labels"]) for corpus in ("alpha", "beta")] == [5, 3]
    assert f"Balanced accuracy by chance is {(1 / 5 + 1 / 3) / 2:.3f} on the corpora held out of training" in card.text


@pytest.mark.parametrize(
    "folder_name, title, dataset_type, licence",
    [
        ("EMOVO-tiny", "EMOVO", "emovo", "free for non-commercial research use"),
        ("contessa-recordings", "contessa-recordings", "contessa-recordings", "see the corpus's own licence"),
    ],
)
def test_card_of_a_single_corpus_run_names_that_corpus_and_its_chance(folder_name, title, dataset_type, licence, tmp_path):
    """Trained and tested on one 7-emotion corpus (no calm, as EMOVO): the metadata names that
    corpus, never RAVDESS, and chance is 1/7, the emotions UA averages over."""
    from ser_train.training import runner
    from test_runner import NearestCentroidFamily

    labels = {name: EMOTIONS.index(name) for name in EMOTIONS if name != "calm"}
    corpus = make_manifest_corpus(tmp_path / folder_name, labels, speakers=("f1", "m1", "f2", "m2"), clips_per_label=1)
    folder = tmp_path / "run"
    runner.run(NearestCentroidFamily(), str(corpus), folder, test_speakers=["f1"], command=["train"])
    (folder / "config.json").write_text("{}")  # the family saves centroids only; the card reads its settings from here
    test = read_results(folder)["test"]
    assert len(test["labels"]) == 8 and test["per_class"]["calm"]["support"] == 0

    card = ModelCard.load(write_model_card(folder))

    evaluation = card.data.eval_results[0]
    assert (evaluation.dataset_name, evaluation.dataset_type) == (title, dataset_type)
    assert metric_values(card)["balanced_accuracy"] == round(test["balanced_accuracy"], 4)
    assert "ravdess" not in card.data.tags and "tess" not in card.data.tags
    assert ("emovo" in card.data.tags) == (title == "EMOVO")
    assert f"- **{title}**: {licence}" in card.text
    assert "Balanced accuracy by chance is 0.143 (1/7: 7 emotions scored)." in card.text
    # Of a corpus it does not know, the card claims no language, licence kind or acting.
    known = title == "EMOVO"
    assert card.data.language == (["it"] if known else None)
    assert ("(all\nnon-commercial)" in card.text) == known and ("non-commercial" in card.data.license_name) == known
    assert ("**Acted, not felt:**" in card.text) == known and ("**What it learned from:**" in card.text) != known
    # It learned 7 emotions and was tested on 7: the card claims no more, and scores no calm row.
    assert read_results(folder)["trained_labels"] == [name for name in EMOTIONS if name != "calm"]
    assert "into one of 7 acted emotions:\nneutral, happy, sad," in card.text
    assert "no training clip to learn from, so\ntheir probabilities mean nothing: calm." in card.text
    assert "| calm |" not in card.text and "| neutral |" in card.text
    assert f"Not scored, as no scored test clip is of them: calm (0 of\nthe {test['num_examples']} clips" in card.text


def test_emotions_without_test_clips_are_left_out_of_the_scores_and_their_answers_counted():
    """Two of four clips answered "calm", which the test set holds none of: no recall shows those
    wrong answers, so the table and the card count them instead of a row of zeros."""
    metrics = classification_metrics([0, 0, 2, 2], [0, 1, 2, 1], list(EMOTIONS))

    assert unscored_emotions(metrics) == [name for name in EMOTIONS if name not in ("neutral", "happy")]
    assert answers_among(metrics, unscored_emotions(metrics)) == 2
    assert metrics["balanced_accuracy"] == 0.5  # over neutral and happy only
    table = format_metrics_table(eval_results("cnn", "corpus", [{"test_actors": [1], "metrics": metrics}]))
    assert [line.split()[0] for line in table.splitlines() if line.endswith("     2")] == ["neutral", "happy"]
    assert "Not scored, as no scored test clip is of them: calm, sad, angry, fearful, disgust, surprised (2 of the 4 clips" in table


NOT_OUTSIDE_RESULTS = "outside_eval_results.json does not hold the model itself scored on corpora it never heard"


@pytest.mark.parametrize(
    "file, content, says",
    [
        ("eval_results.json", '{"family": "cnn"', "eval_results.json is not valid JSON"),  # cut short, as by an interrupted copy
        ("eval_results.json", "{}", "eval_results.json lacks 'family', 'dataset', 'folds', 'command'"),
        ("eval_results.json", "[1, 2]", "eval_results.json holds no JSON object"),
        # What `evaluate --held-out-corpora` writes into a model folder, damaged or of another evaluation.
        ("outside_eval_results.json", '{"family": "cnn"', "outside_eval_results.json is not valid JSON"),
        ("outside_eval_results.json", json.dumps({"family": "cnn", "dataset": "x", "folds": [], "command": "evaluate"}), NOT_OUTSIDE_RESULTS),
        # A training run's results copied there: its held-out corpora were scored by other models.
        ("outside_eval_results.json", json.dumps({"leave_one_corpus_out": {"mean": {"balanced_accuracy": 0.5, "models": FITTED_WITHOUT_EACH}}}), NOT_OUTSIDE_RESULTS),
    ],
)
def test_card_and_push_explain_a_damaged_eval_results_in_one_line(file, content, says, holdout_model, tmp_path, capsys):
    folder = shutil.copytree(holdout_model, tmp_path / "damaged")
    (folder / "README.md").unlink(missing_ok=True)
    (folder / file).write_text(content)

    for command in (["card", "--model-dir", str(folder)], ["push", "--model-dir", str(folder), "--repo-id", "someone/damaged"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err
        assert len(err.strip().splitlines()) == 1  # one sentence, no traceback
    assert not (folder / "README.md").exists()
