"""The training runner, driven by a small real classifier so the driver is tested on its own."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ser_train import cli
from ser_train.corpora import load_corpora
from ser_train.data import EMOTIONS, audio_arrays
from ser_train.errors import SERError
from ser_train.evaluation import CONFUSION_MATRIX_FILE, EVAL_RESULTS_FILE, SharedScoring, write_record
from ser_train.training import runner


def spectral_statistics(waveform: np.ndarray) -> np.ndarray:
    """Mean log-energy and spectral centroid over 32 ms frames: enough to tell synthetic emotions apart."""
    frames = waveform[: len(waveform) // 512 * 512].reshape(-1, 512)
    spectrum = np.abs(np.fft.rfft(frames, axis=1))
    centroid = (spectrum * np.arange(spectrum.shape[1])).sum(axis=1) / (spectrum.sum(axis=1) + 1e-9)
    return np.array([np.log(np.mean(frames**2) + 1e-9), centroid.mean() / 100])


class NearestCentroidFamily:
    """A model family whose 'training' is computing one centroid per emotion."""

    name = "centroid"

    def __init__(self):
        self.fit_calls: list[tuple[int, bool, int | None]] = []

    def fit(self, train, validation, output_dir: Path, resume: bool, max_epochs=None):
        self.fit_calls.append((train.num_rows, validation is not None, max_epochs))
        features = np.stack([spectral_statistics(w) for w in audio_arrays(train)])
        labels = np.array(train["emotion"])
        # An emotion the training corpora lack gets no centroid: it is infinitely far from every clip.
        centroids = np.stack([features[labels == k].mean(axis=0) if (labels == k).any() else np.full(features.shape[1], np.inf) for k in range(8)])
        output_dir.mkdir(parents=True, exist_ok=True)
        np.save(output_dir / "centroids.npy", centroids)
        return runner.FitResult(model=centroids, best_epoch=3 if validation is not None else max_epochs)

    def prepare(self, dataset):
        return dataset

    def predict_proba(self, centroids, dataset):
        """A softmax over negative squared distances to the emotions' centroids."""
        features = np.stack([spectral_statistics(w) for w in audio_arrays(dataset)])
        distances = ((features[:, None, :] - centroids[None]) ** 2).sum(axis=2)
        scores = np.exp(-(distances - distances.min(axis=1, keepdims=True)))
        return scores / scores.sum(axis=1, keepdims=True)

    def representations(self, dataset):
        return None  # it saves no model that could calibrate

    def hyperparameters(self):
        return {"distance": "euclidean"}


def test_holdout_writes_model_metrics_plot_and_split(synthetic_ravdess, tmp_path):
    family = NearestCentroidFamily()
    results = runner.run(family, str(synthetic_ravdess), tmp_path, test_actors=[5, 6], command=["train"])

    assert results["protocol"] == "holdout"
    assert results["folds"][0]["test_actors"] == [5, 6]
    assert results["folds"][0]["validation_actors"] == [1, 2]
    assert family.fit_calls == [(32, True, None)]  # actors 3 and 4 train: 2 x 16 clips
    assert results["test"]["num_examples"] == 32
    assert results["test"]["balanced_accuracy"] > 0.5  # chance is 0.125
    assert (tmp_path / "centroids.npy").is_file()  # the hold-out model is the published one
    assert (tmp_path / CONFUSION_MATRIX_FILE).stat().st_size > 10_000
    saved = json.loads((tmp_path / EVAL_RESULTS_FILE).read_text())
    assert saved["test"]["accuracy"] == results["test"]["accuracy"]
    args = json.loads((tmp_path / runner.TRAINING_ARGS_FILE).read_text())
    assert args["command"] == ["train"]
    assert args["splits"] == [{"name": "holdout", "test_actors": [5, 6], "validation_actors": [1, 2]}]
    assert args["hyperparameters"] == {"distance": "euclidean"}


def test_cross_validation_tests_every_clip_once_then_trains_on_all(synthetic_ravdess, tmp_path):
    family = NearestCentroidFamily()
    results = runner.run(family, str(synthetic_ravdess), tmp_path, num_folds=3, command=["train"])

    assert [fold["test_actors"] for fold in results["folds"]] == [[1, 2], [3, 4], [5, 6]]
    for fold in results["folds"]:
        assert not set(fold["test_actors"]) & set(fold["validation_actors"])
    assert results["test"]["num_examples"] == 96  # pooled: every clip tested exactly once
    fold_ua = [fold["metrics"]["balanced_accuracy"] for fold in results["folds"]]
    assert results["cross_validation"]["mean"]["balanced_accuracy"] == pytest.approx(np.mean(fold_ua))
    assert results["cross_validation"]["std"]["balanced_accuracy"] == pytest.approx(np.std(fold_ua))
    # Three folds with validation, then the final model on all 96 clips for the median best epoch.
    assert family.fit_calls[-1] == (96, False, 3)
    assert results["final_model"] == {"actors": [1, 2, 3, 4, 5, 6], "epochs": 3}


def test_resume_skips_finished_folds(synthetic_ravdess, tmp_path):
    first = runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, num_folds=3, command=["train"])
    (tmp_path / "folds" / "fold-3" / runner.FOLD_RESULT_FILE).unlink()  # as if killed during fold 3

    family = NearestCentroidFamily()
    resumed = runner.run(family, str(synthetic_ravdess), tmp_path, num_folds=3, resume=True, command=["train", "--resume"])
    assert [calls[1] for calls in family.fit_calls] == [True, False]  # fold 3, then the final model
    assert resumed["cross_validation"] == first["cross_validation"]
    # The record of how the run was started is kept, not replaced by the resume command.
    assert json.loads((tmp_path / runner.TRAINING_ARGS_FILE).read_text())["command"] == ["train"]


def test_a_record_cut_off_while_written_leaves_the_earlier_one(synthetic_ravdess, tmp_path, monkeypatch):
    """A run killed while it writes a fold's record (or a model's config.json) must leave a record
    that --resume reads, not half of one that stops it with a JSONDecodeError."""
    first = runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, num_folds=3, command=["train"])
    record = tmp_path / "folds" / "fold-3" / runner.FOLD_RESULT_FILE
    finished = record.read_text()

    def killed_half_way(path: Path, text: str) -> None:
        with open(path, "w") as file:
            file.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        write_record(record, {**json.loads(finished), "best_epoch": 7})
    monkeypatch.undo()
    assert record.read_text() == finished
    resumed = runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, num_folds=3, resume=True, command=["train", "--resume"])
    assert resumed["cross_validation"] == first["cross_validation"]


def test_a_damaged_fold_record_is_named_when_resuming(synthetic_ravdess, tmp_path):
    runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, num_folds=3, command=["train"])
    record = tmp_path / "folds" / "fold-2" / runner.FOLD_RESULT_FILE
    record.write_text(record.read_text()[:40])  # cut short, as by a copy broken off
    with pytest.raises(SERError, match=r"fold-2/fold_result.json is not valid JSON \(.*\); it is damaged"):
        runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, num_folds=3, resume=True, command=["train", "--resume"])


def train_options(family: str) -> dict[str, argparse.Action]:
    """The options of `train FAMILY`, by flag."""
    commands = cli.build_parser()._subparsers._group_actions[0]
    families = commands.choices["train"]._subparsers._group_actions[0]
    return {flag: action for action in families.choices[family]._actions for flag in action.option_strings}


def test_the_train_options_give_the_families_own_defaults():
    """cli.py names the families' defaults without importing them (so that --help stays instant):
    each one it passes or states in a help text must be the family's."""
    from ser_train.models.wav2vec2 import DEFAULT_BASE, TRAIN_MODES
    from ser_train.training.cnn import CNNHyperparameters
    from ser_train.training.wav2vec2 import DEFAULT_TRAIN_MODE
    from ser_train.training.whisper import WhisperHyperparameters

    wav2vec2 = train_options("wav2vec2")
    assert wav2vec2["--base"].default == DEFAULT_BASE
    assert (wav2vec2["--train-mode"].default, tuple(wav2vec2["--train-mode"].choices)) == (DEFAULT_TRAIN_MODE, TRAIN_MODES)
    stated = {  # family: (its hyperparameters, {option: hyperparameter})
        "whisper": (
            WhisperHyperparameters(),
            {
                "--window-s": "window_s",
                "--l2": "l2",
                "--augmented-views": "augmented_views",
                "--cropped-views": "cropped_views",
                "--channel-views": "channel_views",
                "--calibrated-views": "calibrated_views",
                "--speaker-directions": "speaker_directions",
            },
        ),
        "cnn": (CNNHyperparameters(), {"--calibrated-share": "calibrated_share", "--channel-views": "channel_views"}),
    }
    for family, (hyperparameters, options) in stated.items():
        found = train_options(family)
        for option, name in options.items():
            assert found[option].default is None  # so from_args leaves the family's own default
            value = getattr(hyperparameters, name)
            assert re.search(rf"default {value:g}\b", found[option].help), (family, option, value)


def test_an_earlier_run_is_never_overwritten(synthetic_ravdess, tmp_path):
    runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, test_actors=[6], command=["train"])
    with pytest.raises(SERError, match="already holds a training run; pass --resume"):
        runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, test_actors=[6], command=["train"])


def test_resuming_where_no_run_was_started_says_so_and_starts_one(synthetic_ravdess, tmp_path, capsys):
    """A mistyped --output-dir with --resume would otherwise train from scratch without a word."""
    runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path / "new", test_actors=[6], resume=True, command=["train"])
    assert f"{tmp_path / 'new'} holds no run to resume; starting a new one there." in capsys.readouterr().err
    assert (tmp_path / "new" / runner.TRAINING_ARGS_FILE).is_file()


def test_an_interrupted_command_says_how_to_go_on(monkeypatch, synthetic_ravdess, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def interrupted_once_started(*args, **kwargs):
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / runner.TRAINING_ARGS_FILE).write_text("{}")
        raise KeyboardInterrupt

    training = ["train", "cnn", "--dataset", str(synthetic_ravdess), "--output-dir", str(tmp_path / "run")]
    monkeypatch.setattr(runner, "run", interrupted)
    assert cli.main(training) == 130
    assert capsys.readouterr().err == "\nInterrupted.\n"  # before the run began: nothing to resume
    monkeypatch.setattr(runner, "run", interrupted_once_started)
    assert cli.main(training) == 130
    assert capsys.readouterr().err == "\nInterrupted. Run the same command with --resume to go on from its last checkpoint.\n"
    monkeypatch.setattr(cli, "run_predict", interrupted)
    assert cli.main(["predict", str(tmp_path / "a.wav")]) == 130
    assert capsys.readouterr().err == "\nInterrupted.\n"  # nothing to resume


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


class OtherFamily(NearestCentroidFamily):
    name = "other"


class CityBlockFamily(NearestCentroidFamily):
    def hyperparameters(self):
        return {"distance": "cityblock"}


class LaterFamily(NearestCentroidFamily):
    """The family after a setting was added to it; a run started before did without it."""

    def hyperparameters(self):
        return {"distance": "euclidean", "added_later": 0}


def test_resume_continues_the_same_run_only(synthetic_ravdess, tmp_path):
    """Another family, other data, other splits or other settings are refused, touching nothing;
    the same data by another path to it, and a setting added to the family since, are the same run."""
    run_dir = tmp_path / "run"
    runner.run(NearestCentroidFamily(), str(synthetic_ravdess), run_dir, num_folds=3, command=["train"])
    before = files_of(run_dir)
    other_data = tmp_path / "other-corpus"
    other_data.mkdir()
    for actor in ("Actor_01", "Actor_02", "Actor_03"):
        shutil.copytree(synthetic_ravdess / actor, other_data / actor)
    attempts = {
        "family": (OtherFamily(), str(synthetic_ravdess), {"num_folds": 3}),
        # Only the setting that differs is named (a QA pass got the hyperparameters cut at 77
        # characters, before the seed that differed).
        'hyperparameters.distance: "euclidean" there, "cityblock" here\\); resume': (CityBlockFamily(), str(synthetic_ravdess), {"num_folds": 3}),
        "splits": (NearestCentroidFamily(), str(synthetic_ravdess), {"test_actors": [6]}),
        "dataset": (NearestCentroidFamily(), str(other_data), {"num_folds": 3}),
    }
    # Within lists of as many splits, only the one that differs (a QA pass read two that looked alike).
    fold = {"name": "fold-2", "test_actors": [3, 4], "validation_actors": [5, 6]}
    assert runner._difference("splits", [{}, fold], [{}, fold | {"test_actors": [3, 5]}]) == "splits[1].test_actors: [3, 4] there, [3, 5] here"
    for differing, (family, source, split) in attempts.items():
        # Refused before the family prepares the data (for Whisper, its encoder over every clip:
        # a QA pass waited over 10 minutes for the refusal).
        family.prepare = lambda dataset: pytest.fail("the data was prepared before the refusal")
        with pytest.raises(SERError, match=f"holds a run started with other settings \\({differing}") as refusal:
            runner.run(family, source, run_dir, resume=True, command=["train", "--resume"], **split)
        assert differing != "family" or "hyperparameters" not in str(refusal.value)  # another family's settings go unnamed
        assert family.fit_calls == [] and files_of(run_dir) == before, differing
    same_data = tmp_path / "same-corpus"
    same_data.symlink_to(synthetic_ravdess)
    (run_dir / "folds" / "fold-3" / runner.FOLD_RESULT_FILE).unlink()
    family = LaterFamily()
    results = runner.run(family, str(same_data), run_dir, num_folds=3, resume=True, command=["train", "--resume"])
    assert [calls[1] for calls in family.fit_calls] == [True, False]  # fold 3, then the final model
    assert results["command"] == "train"  # the command that started the run, the one to rerun it by


def test_resume_refuses_data_changed_in_the_same_folder(synthetic_ravdess, tmp_path):
    """The same folder no longer holding the same clips is another run's data: its finished
    folds were trained and scored on what the folder held then. A run recorded before the data
    had a digest resumes as it did."""
    import soundfile

    corpus = tmp_path / "corpus"
    shutil.copytree(synthetic_ravdess, corpus)
    run_dir = tmp_path / "run"
    runner.run(NearestCentroidFamily(), str(corpus), run_dir, num_folds=3, command=["train"])
    (run_dir / "folds" / "fold-3" / runner.FOLD_RESULT_FILE).unlink()
    before = files_of(run_dir)
    clip = sorted(corpus.glob("Actor_01/*.wav"))[0]
    samples, rate = soundfile.read(clip)
    soundfile.write(clip, samples[::-1], rate)  # the same name, length and loudness; other audio
    family = NearestCentroidFamily()
    with pytest.raises(SERError, match="other settings \\(the data's clips, labels or speakers have changed since the run started\\)"):
        runner.run(family, str(corpus), run_dir, num_folds=3, resume=True, command=["train", "--resume"])
    assert family.fit_calls == [] and files_of(run_dir) == before
    args_file = run_dir / runner.TRAINING_ARGS_FILE
    args = json.loads(args_file.read_text())
    del args[runner.DATA_DIGEST_KEY]
    args_file.write_text(json.dumps(args))
    runner.run(family, str(corpus), run_dir, num_folds=3, resume=True, command=["train", "--resume"])
    assert [calls[1] for calls in family.fit_calls] == [True, False]  # fold 3, then the final model


def test_a_split_that_cannot_train_is_refused_before_the_run_claims_its_folder(synthetic_ravdess, tmp_path):
    """A QA pass's fold trained on one speaker's one clip and was scored as any other, and a
    refused --test-actors left a record behind that refused the corrected command."""
    from synthetic import make_manifest_corpus

    corpus = make_manifest_corpus(tmp_path / "lab", {"ang": EMOTIONS.index("angry"), "sad": EMOTIONS.index("sad")}, speakers=tuple("abcdef"))
    shutil.copy(corpus / "wav" / "a_ang_0.wav", corpus / "wav" / "solo.wav")
    with (corpus / "manifest.csv").open("a") as manifest:
        manifest.write("wav/solo.wav,ang,solo\n")  # a speaker with one clip
    run_dir = tmp_path / "run"
    with pytest.raises(SERError, match=r"^fold-1 would train on 1 clip\(s\) of angry only: a classifier needs clips of at least two emotions"):
        runner.run(NearestCentroidFamily(), [str(corpus)], run_dir, num_folds=3, command=["train"])
    assert not run_dir.exists()
    with pytest.raises(SERError, match=r"Test actors \[7, 8\] are not all in the dataset"):
        runner.run(NearestCentroidFamily(), str(synthetic_ravdess), run_dir, test_actors=[7, 8], command=["train"])
    assert not run_dir.exists()
    runner.run(NearestCentroidFamily(), str(synthetic_ravdess), run_dir, test_actors=[5, 6], command=["train"])  # the corrected command


def test_a_folder_holding_other_files_or_a_file_is_never_written_into(synthetic_ravdess, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": 1}')
    with pytest.raises(SERError, match="is not empty and holds no training run"):
        runner.run(NearestCentroidFamily(), str(synthetic_ravdess), mine, test_actors=[6], command=["train"])
    assert files_of(mine) == {"config.json": b'{"mine": 1}'}
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    with pytest.raises(SERError, match="is a file, not a folder"):
        runner.run(NearestCentroidFamily(), str(synthetic_ravdess), a_file, test_actors=[6], command=["train"])
    assert a_file.read_text() == "notes"
    # A run refused before it starts leaves no folder behind.
    with pytest.raises(SERError):
        runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path / "new", test_actors=[1], num_folds=3, command=["train"])
    assert not (tmp_path / "new").exists()


def test_data_of_one_emotion_is_neither_trained_on_nor_scored(synthetic_ravdess, tmp_path):
    """One emotion gives no classifier to learn, and a score over one emotion is always perfect."""
    angry_only = tmp_path / "angry-only"
    for clip in synthetic_ravdess.glob("Actor_*/03-01-05-*"):  # RAVDESS emotion code 05: angry
        (angry_only / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, angry_only / clip.parent.name / clip.name)
    with pytest.raises(SERError, match=r"holds one emotion only \(angry\)"):
        runner.run(NearestCentroidFamily(), str(angry_only), tmp_path / "run", test_actors=[6], command=["train"])
    assert not (tmp_path / "run").exists()
    angry = load_corpora(str(angry_only))
    with pytest.raises(SERError, match=r"share only one emotion with the model \(angry\)"):
        SharedScoring.of(angry, EMOTIONS)
    both = load_corpora(str(synthetic_ravdess)).filter(lambda row: row["emotion"] in (EMOTIONS.index("angry"), EMOTIONS.index("sad")))
    assert SharedScoring.of(both, EMOTIONS).labels == ["sad", "angry"]


def test_split_options_are_exclusive():
    with pytest.raises(SERError, match="either --test-actors or --folds"):
        runner.plan_splits(list(range(1, 25)), [1, 2], 6)


def test_actor_numbers_are_refused_where_speakers_have_names(synthetic_ravdess, tmp_path, capsys):
    """With several corpora the integer actor ids interleave the corpora, so `--test-actors 21-24`
    would test some mix of speakers; a QA pass used them on a manifest corpus too."""
    from synthetic import make_manifest_corpus

    corpus = make_manifest_corpus(tmp_path / "lab", {"ang": EMOTIONS.index("angry"), "sad": EMOTIONS.index("sad")}, speakers=("a", "b"))
    for sources in ([str(corpus)], [str(synthetic_ravdess), str(corpus)]):
        with pytest.raises(SERError, match=r"^--test-actors numbers the actors of a RAVDESS folder given alone; .* --test-speakers \(e\.g\. "):
            runner.run(NearestCentroidFamily(), sources, tmp_path / "run", test_actors=[1], command=["train"])
        assert not (tmp_path / "run").exists()
    from ser_train.models.cnn import EmotionCNN

    EmotionCNN(channels=8, blocks=1).save_pretrained(tmp_path / "cnn")
    evaluating = ["evaluate", "--model", str(tmp_path / "cnn"), "--dataset", str(corpus), "--test-actors", "1", "--output-dir", str(tmp_path / "e")]
    assert cli.main(evaluating) == 2
    assert "--test-actors numbers the actors of a RAVDESS folder given alone" in capsys.readouterr().err
