"""The CNN family: learning on held-out actors, Hub-format round trip, resume, feature cache, CLI."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import soundfile
import torch

from ser_train.cli import main
from ser_train.data import EMOTIONS, audio_arrays, load_ravdess, split_by_actor
from ser_train.evaluation import EVAL_RESULTS_FILE
from ser_train.features import FeatureConfig, extract_features
from ser_train.inference import CNN_MODEL_TYPE
from ser_train.models.cnn import MODEL_TYPE, EmotionCNN
from ser_train.training import cnn as cnn_training
from ser_train.training.cnn import CHECKPOINT_DIR, CNNFamily, CNNHyperparameters
from synthetic import make_manifest_corpus, synth_clip

TEST_ACTORS = [5, 6]
VALIDATION_ACTORS = [4]
SMALL = dict(channels=24, blocks=1, batch_size=8, augmented_views=1, channel_views=0, threads=1)


@pytest.fixture(scope="module")
def splits(synthetic_ravdess):
    return split_by_actor(load_ravdess(str(synthetic_ravdess)), TEST_ACTORS, VALIDATION_ACTORS)


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def trained(splits, feature_cache, tmp_path_factory):
    """A short run with validation-based early stopping, as a cross-validation fold trains."""
    family = CNNFamily(CNNHyperparameters(epochs=10, patience=10, **SMALL), cache_dir=feature_cache)
    output_dir = tmp_path_factory.mktemp("trained")
    fitted = family.fit(splits["train"], splits["validation"], output_dir, resume=False)
    return family, fitted, output_dir


def balanced_accuracy(predictions, references) -> float:
    references = np.asarray(references)
    return float(np.mean([np.mean(predictions[references == c] == c) for c in np.unique(references)]))


def test_short_training_beats_chance_on_held_out_actors(splits, trained):
    family, fitted, _ = trained
    predictions = family.predict_proba(fitted.model, splits["test"]).argmax(axis=1)
    chance = 1 / len(EMOTIONS)
    assert balanced_accuracy(predictions, splits["test"]["emotion"]) > 3 * chance
    assert 1 <= fitted.best_epoch <= 10


def test_saved_model_is_hub_format_and_reloads_to_identical_probabilities(splits, trained):
    _, fitted, output_dir = trained
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE == CNN_MODEL_TYPE  # what ser_train.inference knows a CNN by
    assert config["labels"] == list(EMOTIONS)
    assert FeatureConfig.from_dict(config["feature_config"]) == fitted.model.feature_config
    assert (output_dir / "model.safetensors").is_file()

    waveforms = audio_arrays(splits["test"])
    reloaded = EmotionCNN.from_pretrained(output_dir)
    np.testing.assert_array_equal(reloaded.predict_proba(waveforms), fitted.model.predict_proba(waveforms))
    torch.testing.assert_close(reloaded.feature_mean, fitted.model.feature_mean)


def test_probabilities_do_not_depend_on_batch_composition(splits, trained):
    """Padding must not leak into a clip's answer.

    In float32 a batch and a lone clip run through kernels with different summation orders, and
    the rounding that differs grows with the network's depth by an amount that depends on the
    CPU (1.2e-5 on one machine of ours). The network's own padding invariance is therefore
    checked in float64, where the same rounding is ~1e-16 relative and anything above 1e-9 can
    only be padding leaking in; the float32 answers must sum to 1 within 8 classes x eps.
    """
    _, fitted, _ = trained
    waveforms = audio_arrays(splits["test"])[:5]
    waveforms[1] = waveforms[1][: len(waveforms[1]) // 2]  # a shorter clip forces padding
    features = [matrix.astype(np.float64) for matrix in extract_features(waveforms, fitted.model.feature_config)]
    model64 = copy.deepcopy(fitted.model).double()

    together = model64.predict_proba_of_features(features)
    alone = np.concatenate([model64.predict_proba_of_features([matrix]) for matrix in features])

    assert together.dtype == np.float64
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-9)
    float32_sums = fitted.model.predict_proba(waveforms).sum(axis=1)
    np.testing.assert_allclose(float32_sums, 1, rtol=0, atol=8 * np.finfo(np.float32).eps)


def test_resume_continues_an_interrupted_run_exactly(splits, feature_cache, tmp_path, monkeypatch):
    family = CNNFamily(CNNHyperparameters(epochs=4, **SMALL), cache_dir=feature_cache)
    straight = family.fit(splits["train"], None, tmp_path / "straight", resume=False, max_epochs=4)

    family.fit(splits["train"], None, tmp_path / "interrupted", resume=False, max_epochs=2)  # "killed" after 2
    epochs_run = []
    original = CNNFamily._train_epoch
    monkeypatch.setattr(
        CNNFamily, "_train_epoch", lambda self, *args: epochs_run.append(args[-1]) or original(self, *args)
    )
    resumed = family.fit(splits["train"], None, tmp_path / "interrupted", resume=True, max_epochs=4)

    assert epochs_run == [3, 4]
    assert resumed.best_epoch == straight.best_epoch == 4
    for name, weights in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], weights, msg=name)
    assert (tmp_path / "interrupted" / CHECKPOINT_DIR).is_dir()


def test_resuming_a_finished_run_trains_nothing(splits, feature_cache, tmp_path, monkeypatch):
    family = CNNFamily(CNNHyperparameters(epochs=2, **SMALL), cache_dir=feature_cache)
    first = family.fit(splits["train"], None, tmp_path, resume=False)
    monkeypatch.setattr(CNNFamily, "_train_epoch", lambda *args: pytest.fail("trained again"))
    again = family.fit(splits["train"], None, tmp_path, resume=True)
    assert again.best_epoch == first.best_epoch == 2


def test_a_training_clip_longer_than_the_cap_is_seen_as_a_random_stretch_of_it(splits, feature_cache, tmp_path, monkeypatch):
    """A batch of clips several minutes long would not fit in memory (a 9.5-minute clip alone took
    4.9 GB before the cap); here the cap is 1 s, 100 frames, shorter than the synthetic clips."""
    batches = []
    pad = cnn_training.pad_features
    monkeypatch.setattr(cnn_training, "pad_features", lambda clips: batches.append([len(clip) for clip in clips]) or pad(clips))
    CNNFamily(CNNHyperparameters(epochs=1, max_training_clip_s=1.0, **SMALL), cache_dir=feature_cache).fit(splits["train"], None, tmp_path, resume=False)
    lengths = sum(batches, [])
    assert len(lengths) == len(splits["train"]) and max(lengths) == 100


def test_random_stretches_cut_only_longer_clips_and_draw_nothing_for_the_others():
    rng = np.random.default_rng(0)
    short, long = np.arange(50.0)[:, None], np.arange(300.0)[:, None]
    assert cnn_training.random_stretches([short, short], 100, rng)[0] is short
    assert rng.bit_generator.state == np.random.default_rng(0).bit_generator.state  # epochs on short clips go as before
    stretches = [cnn_training.random_stretches([long], 100, rng)[0] for _ in range(5)]
    for stretch in stretches:
        start = int(stretch[0, 0])
        np.testing.assert_array_equal(stretch, long[start : start + 100])
    assert len({int(stretch[0, 0]) for stretch in stretches}) > 1


def test_features_are_extracted_once_and_then_read_from_the_cache(splits, tmp_path, monkeypatch):
    family = CNNFamily(CNNHyperparameters(**SMALL), cache_dir=tmp_path)
    first = family._clean_features(splits["test"])
    monkeypatch.setattr(cnn_training, "extract_features", lambda *args: pytest.fail("extracted again"))
    second = family._clean_features(splits["test"])
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_channel_views_come_after_the_augmented_views_which_stay_as_they_were(splits, feature_cache):
    clips = splits["test"].select(range(4))
    before = CNNFamily(CNNHyperparameters(**SMALL), cache_dir=feature_cache)._training_views(clips)
    family = CNNFamily(CNNHyperparameters(**{**SMALL, "channel_views": 2}), cache_dir=feature_cache)
    with_channel = family._training_views(clips)

    assert len(with_channel) == len(before) + 2
    for view_before, view_after in zip(before, with_channel):
        assert all(np.array_equal(a, b) for a, b in zip(view_before, view_after))
    clean, first_channel, second_channel = with_channel[0], with_channel[-2], with_channel[-1]
    for clean_clip, channel_clip, other_channel_clip in zip(clean, first_channel, second_channel):
        assert channel_clip.shape == clean_clip.shape  # a channel view keeps the clip's length
        assert not np.allclose(channel_clip, clean_clip, rtol=1e-3)  # another room, band or codec
        assert not np.allclose(channel_clip, other_channel_clip, rtol=1e-3)  # each view draws its own


def test_train_then_evaluate_cli_reproduce_the_same_metrics(synthetic_ravdess, tmp_path, capsys):
    model_dir, evaluation_dir = tmp_path / "model", tmp_path / "evaluation"
    dataset = ["--dataset", str(synthetic_ravdess), "--test-actors", "5,6"]
    assert main(["train", "cnn", *dataset, "--output-dir", str(model_dir), "--epochs", "2"]) == 0
    assert main(["evaluate", "--model", str(model_dir), *dataset, "--output-dir", str(evaluation_dir)]) == 0

    trained = json.loads((model_dir / EVAL_RESULTS_FILE).read_text())["test"]
    evaluated = json.loads((evaluation_dir / EVAL_RESULTS_FILE).read_text())["test"]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    assert "UA" in capsys.readouterr().out
    # The weights are as readable as the run's other files (safetensors writes them 0600).
    expected_mode = (model_dir / EVAL_RESULTS_FILE).stat().st_mode & 0o777
    assert list(model_dir.rglob("*.safetensors")) and all(path.stat().st_mode & 0o777 == expected_mode for path in model_dir.rglob("*.safetensors"))
    # The folder's README.md is its card, with the figures it measured, not the mixin's placeholder.
    card = (model_dir / "README.md").read_text()
    assert "Rendered by `python -m ser_train card`" in card and "More Information Needed" not in card
    assert f"| {trained['balanced_accuracy']:.3f} |" in card

    # Without --test-actors, the actors its record says it never heard: the same figures (this
    # RAVDESS folder was refused for "RAVDESS models are trained on RAVDESS actors").
    default_dir = tmp_path / "evaluation-by-record"
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(synthetic_ravdess), "--output-dir", str(default_dir)]) == 0
    by_record = json.loads((default_dir / EVAL_RESULTS_FILE).read_text())
    assert by_record["folds"][0]["test_actors"] == [5, 6] and by_record["test"]["confusion_matrix"] == trained["confusion_matrix"]
    unrecorded = shutil.copytree(model_dir, tmp_path / "no-record", ignore=shutil.ignore_patterns("training_args.json", EVAL_RESULTS_FILE))
    assert main(["evaluate", "--model", str(unrecorded), "--dataset", str(synthetic_ravdess), "--output-dir", str(tmp_path / "unknown")]) == 2
    assert "has no training record (training_args.json), so which of these actors it heard is not known" in capsys.readouterr().err
    # A RAVDESS folder under another name may be a copy of its training data: with that data here,
    # its copied actors are found by their audio; with it elsewhere, which they are is not known
    # (a review found a copy's training actors all scored).
    elsewhere = shutil.copytree(model_dir, tmp_path / "trained-elsewhere", ignore=shutil.ignore_patterns(EVAL_RESULTS_FILE))
    record = json.loads((elsewhere / "training_args.json").read_text())
    (elsewhere / "training_args.json").write_text(json.dumps(record | {"dataset_locations": [str(tmp_path / "gone")]}))
    renamed = shutil.copytree(synthetic_ravdess, tmp_path / "renamed-copy")
    assert main(["evaluate", "--model", str(elsewhere), "--dataset", str(renamed), "--output-dir", str(tmp_path / "copy-unknown")]) == 2
    assert "trained on data that is not here to compare with, so which of these actors it heard is not known" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(renamed), "--no-calibration", "--output-dir", str(tmp_path / "copy-found")]) == 0
    assert json.loads((tmp_path / "copy-found" / EVAL_RESULTS_FILE).read_text())["folds"][0]["test_actors"] == [5, 6]
    # Actors it learned from (3, 4) or stopped early on (1, 2) are no test of voices it never heard.
    for actors in ("1,2", "3-6"):
        leak = ["--dataset", str(synthetic_ravdess), "--test-actors", actors, "--output-dir", str(tmp_path / "leak")]
        assert main(["evaluate", "--model", str(model_dir), *leak]) == 2
        assert "learned from or was validated on" in capsys.readouterr().err and not (tmp_path / "leak").exists()
    # Nor is the same corpus under another folder name a corpus it never heard.
    copy = shutil.copytree(synthetic_ravdess, tmp_path / "another-name")
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(copy), "--held-out-corpora", "--output-dir", str(tmp_path / "held")]) == 2
    assert "heard the speakers of another-name (a corpus it trained on, or a copy of one), so it is not held out" in capsys.readouterr().err
    # Its own held-out actors in that copy are voices it never heard; the others are not (this
    # RAVDESS folder, with no corpus column, ended in a traceback).
    copied = ["evaluate", "--model", str(model_dir), "--dataset", str(copy), "--no-calibration"]
    assert main([*copied, "--test-actors", "5,6", "--output-dir", str(tmp_path / "copy-held-out")]) == 0
    assert main([*copied, "--test-actors", "1,2", "--output-dir", str(tmp_path / "copy-heard")]) == 2
    assert "learned from or was validated on 1, 2" in capsys.readouterr().err
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    assert main(["evaluate", "--model", str(model_dir), *dataset, "--output-dir", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and a_file.read_text() == "notes"


def test_a_model_is_scored_on_the_emotions_it_trained_on(tmp_path, capsys):
    """Trained on 4 emotions, then judged on a corpus that also has fearful clips: `evaluate`
    scores it on the 4, as training scores its held-out corpora, not on an emotion it never
    learned (recall 0 by construction)."""
    taught = ("neutral", "happy", "sad", "angry")
    four = make_manifest_corpus(tmp_path / "four", {name: EMOTIONS.index(name) for name in taught}, speakers=("a", "b", "c", "d"))
    five = make_manifest_corpus(tmp_path / "five", {name: EMOTIONS.index(name) for name in (*taught, "fearful")}, speakers=("x", "y"))
    model_dir = tmp_path / "model"
    training = ["train", "cnn", "--dataset", str(four), "--test-speakers", "d", "--epochs", "1", "--channel-views", "0"]
    assert main([*training, "--output-dir", str(model_dir)]) == 0
    assert json.loads((model_dir / EVAL_RESULTS_FILE).read_text())["trained_labels"] == list(taught)

    for protocol in ([], ["--held-out-corpora"]):
        evaluation_dir = tmp_path / f"evaluation{len(protocol)}"
        assert main(["evaluate", "--model", str(model_dir), "--dataset", str(five), *protocol, "--output-dir", str(evaluation_dir)]) == 0
        results = json.loads((evaluation_dir / EVAL_RESULTS_FILE).read_text())
        scoring = results["scoring"] if not protocol else results["leave_one_corpus_out"]["five"]["scoring"]
        assert scoring["scored_labels"] == list(taught) and scoring["unscored_clips"] == 4  # x's and y's 2 fearful clips each
    assert "five: scored on neutral, happy, sad, angry; 4 clip(s) of other emotions left out." in capsys.readouterr().out
    # A corpus of emotions it never learned is refused, naming that corpus among those given.
    untaught = make_manifest_corpus(tmp_path / "untaught", {name: EMOTIONS.index(name) for name in ("fearful", "disgust")}, speakers=("z",))
    held = ["evaluate", "--model", str(model_dir), "--dataset", str(five), str(untaught), "--held-out-corpora", "--output-dir", str(tmp_path / "held")]
    assert main(held) == 2
    assert "error: untaught: The test clips share no emotion with the model" in capsys.readouterr().err


def test_corpora_a_model_never_heard_are_scored_into_its_folder_beside_training_and_shown_on_its_card(tmp_path, capsys):
    """`evaluate --held-out-corpora` with no --output-dir: the model's own folder gets
    outside_eval_results.json, training's results and the card are left as they were (the card
    may hold the user's edits), it is never written over, and `card` then shows it."""
    from huggingface_hub import ModelCard

    from ser_train.evaluation import OUTSIDE_RESULTS_FILE

    emotions = {name: EMOTIONS.index(name) for name in ("neutral", "happy", "sad", "angry")}
    trained_on = make_manifest_corpus(tmp_path / "trained-on", emotions, speakers=("a", "b", "c", "d"))
    unheard = make_manifest_corpus(tmp_path / "unheard", emotions, speakers=("x", "y"))
    model_dir = tmp_path / "model"
    training = ["train", "cnn", "--dataset", str(trained_on), "--test-speakers", "d", "--epochs", "1", "--channel-views", "0"]
    assert main([*training, "--output-dir", str(model_dir)]) == 0
    before = {name: (model_dir / name).read_bytes() for name in (EVAL_RESULTS_FILE, "README.md")}
    capsys.readouterr()

    evaluate = ["evaluate", "--model", str(model_dir), "--dataset", str(unheard), "--held-out-corpora"]
    assert main(evaluate) == 0
    assert f"Its card shows these once rendered again: python -m ser_train card --model-dir {model_dir}" in capsys.readouterr().out
    assert {name: (model_dir / name).read_bytes() for name in before} == before
    outside = json.loads((model_dir / OUTSIDE_RESULTS_FILE).read_text())
    scores = outside["leave_one_corpus_out"]["unheard"]
    assert outside["leave_one_corpus_out"]["mean"]["corpora"] == ["unheard"]
    assert scores["speakers"] == ["unheard/x", "unheard/y"] and scores["metrics"]["num_examples"] == 2 * 2 * len(emotions)

    written = (model_dir / OUTSIDE_RESULTS_FILE).read_bytes()
    for again in ([], ["--output-dir", str(model_dir)]):  # the folder named or not: never over an earlier evaluation
        assert main([*evaluate, *again]) == 2
        assert f"already holds {OUTSIDE_RESULTS_FILE}" in capsys.readouterr().err
    assert (model_dir / OUTSIDE_RESULTS_FILE).read_bytes() == written
    # A model folder without training's results gets its results as any evaluation's.
    bare = shutil.copytree(model_dir, tmp_path / "bare", ignore=shutil.ignore_patterns(EVAL_RESULTS_FILE, OUTSIDE_RESULTS_FILE, "*.png", "README.md"))
    assert main(["evaluate", "--model", str(bare), "--dataset", str(unheard), "--held-out-corpora"]) == 0
    assert json.loads((bare / EVAL_RESULTS_FILE).read_text())["leave_one_corpus_out"] == outside["leave_one_corpus_out"]
    assert not (bare / OUTSIDE_RESULTS_FILE).exists() and "python -m ser_train card" not in capsys.readouterr().out

    assert main(["card", "--model-dir", str(model_dir)]) == 0
    card = ModelCard.load(model_dir / "README.md")
    metrics = scores["metrics"]
    headline = f"| this model on corpora none of its training heard (mean over 1: unheard) | {metrics['accuracy']:.3f} | {metrics['balanced_accuracy']:.3f} | {metrics['macro_f1']:.3f} |"
    assert headline in card.text
    section = card.text.split("### Corpora none of its training heard")[1]
    assert "tested by this model itself, which never trained on any of them" in section
    assert f"| unheard | {metrics['accuracy']:.3f} | {metrics['balanced_accuracy']:.3f} |" in section
    assert f"`{outside['command']}`" in section
    entries = [entry for entry in card.data.eval_results if entry.dataset_split == "never heard by this model (every speaker)"]
    assert {(entry.dataset_type, entry.metric_type, entry.metric_value) for entry in entries} == {
        ("unheard", name, round(metrics[key], 4)) for name, key in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced_accuracy"), ("f1", "macro_f1"))
    }


def test_a_run_given_a_relative_dataset_path_is_judged_by_where_its_data_lay(tmp_path, monkeypatch, capsys):
    """A QA pass trained with `--dataset base` and ran `evaluate` from another folder: a copy of
    `base` was scored as never heard (6 speakers, 4 of them trained on), its own held-out speakers
    were refused, and `--resume` from there was refused as other data."""
    emotions = {name: EMOTIONS.index(name) for name in ("neutral", "happy", "sad", "angry")}
    make_manifest_corpus(tmp_path / "base", emotions, speakers=("s0", "s1", "s2", "s3"))
    copy = shutil.copytree(tmp_path / "base", tmp_path / "copy")
    model_dir = tmp_path / "model"
    training = ["train", "cnn", "--dataset", "base", "--test-speakers", "s3", "--epochs", "1", "--channel-views", "0", "--output-dir", str(model_dir)]
    monkeypatch.chdir(tmp_path)
    assert main(training) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()

    evaluate = ["evaluate", "--model", str(model_dir), "--no-calibration"]
    assert main([*evaluate, "--dataset", str(copy), "--output-dir", "copy-scores"]) == 0  # its held-out speaker only
    assert json.loads((elsewhere / "copy-scores" / EVAL_RESULTS_FILE).read_text())["folds"][0]["test_speakers"] == ["copy/s3"]
    assert main([*evaluate, "--dataset", str(tmp_path / "base"), "--test-speakers", "s3", "--output-dir", "own"]) == 0
    assert main([*evaluate, "--dataset", str(copy), "--held-out-corpora", "--output-dir", "held"]) == 2
    assert "heard the speakers of copy (a corpus it trained on, or a copy of one), so it is not held out" in capsys.readouterr().err
    training[training.index("base")] = str(tmp_path / "base")
    assert main([*training, "--resume"]) == 0


def test_training_scores_its_test_split_on_the_emotions_it_trained_on_as_evaluate_does(tmp_path, capsys):
    """A QA pass's test speaker had one "surprised" clip, an emotion no training clip taught: the
    run averaged its UA over 5 emotions, one never learned (recall 0), where `evaluate` gave 4;
    and a run answered test clips with "calm", which it never learned either."""
    taught = ("neutral", "happy", "sad", "angry")
    corpus = make_manifest_corpus(tmp_path / "base", {name: EMOTIONS.index(name) for name in taught}, speakers=("s0", "s1", "s2", "s3"))
    soundfile.write(corpus / "wav" / "s0_sur.wav", synth_clip(EMOTIONS.index("surprised"), 0, 16_000, seed=7), 16_000)
    with (corpus / "manifest.csv").open("a") as manifest:
        manifest.write("wav/s0_sur.wav,surprised,s0\n")
    model_dir = tmp_path / "model"
    assert main(["train", "cnn", "--dataset", str(corpus), "--test-speakers", "s0", "--epochs", "1", "--channel-views", "0", "--output-dir", str(model_dir)]) == 0
    printed = capsys.readouterr().out
    trained = json.loads((model_dir / EVAL_RESULTS_FILE).read_text())

    assert trained["untrained_test_clips"] == {"surprised": 1}
    assert "Left out of the test, as no training clip taught their emotion: 1 clip(s) of surprised." in printed
    test = trained["test"]
    assert test["num_examples"] == 2 * len(taught)
    answered = np.asarray(test["confusion_matrix"]).sum(axis=0)
    assert all(answered[EMOTIONS.index(name)] == 0 for name in EMOTIONS if name not in taught)  # never an untaught answer
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(corpus), "--test-speakers", "s0", "--output-dir", str(tmp_path / "evaluation")]) == 0
    evaluated = json.loads((tmp_path / "evaluation" / EVAL_RESULTS_FILE).read_text())["test"]
    assert evaluated["balanced_accuracy"] == test["balanced_accuracy"] and evaluated["accuracy"] == test["accuracy"]
    assert "Left out of the test" in (model_dir / "README.md").read_text()


def test_evaluate_refuses_to_overwrite_training_results(synthetic_ravdess, tmp_path, capsys):
    (tmp_path / EVAL_RESULTS_FILE).write_text("{}")
    EmotionCNN().save_pretrained(tmp_path)
    code = main(["evaluate", "--model", str(tmp_path), "--dataset", str(synthetic_ravdess), "--test-actors", "5,6"])
    assert code == 2
    assert "already" in capsys.readouterr().err
    # Nor a file of the user's own of a name it writes (a QA pass lost its confusion_matrix.png).
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "confusion_matrix.png").write_text("mine")
    code = main(["evaluate", "--model", str(tmp_path), "--dataset", str(synthetic_ravdess), "--test-actors", "5,6", "--output-dir", str(theirs)])
    assert code == 2 and "already holds confusion_matrix.png" in capsys.readouterr().err
    assert (theirs / "confusion_matrix.png").read_text() == "mine" and not (theirs / EVAL_RESULTS_FILE).exists()


def test_loading_a_cnn_prints_nothing(tmp_path, capfd):
    """huggingface_hub's mixin prints "Loading weights from local directory" at every load; a QA
    pass saw it before every CLI answer."""
    from ser_train.inference import load_model

    EmotionCNN(channels=8, blocks=1).save_pretrained(tmp_path)
    load_model(str(tmp_path))
    printed = capfd.readouterr()
    assert "Loading weights" not in printed.out + printed.err
