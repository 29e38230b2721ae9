"""The training runner, driven by a small real classifier so the driver is tested on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_train.data import audio_arrays
from ser_train.errors import SERError
from ser_train.evaluation import CONFUSION_MATRIX_FILE, EVAL_RESULTS_FILE
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


def test_an_earlier_run_is_never_overwritten(synthetic_ravdess, tmp_path):
    runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, test_actors=[6], command=["train"])
    with pytest.raises(SERError, match="already holds a training run; pass --resume"):
        runner.run(NearestCentroidFamily(), str(synthetic_ravdess), tmp_path, test_actors=[6], command=["train"])


def test_split_options_are_exclusive():
    with pytest.raises(SERError, match="either --test-actors or --folds"):
        runner.plan_splits(list(range(1, 25)), [1, 2], 6)
