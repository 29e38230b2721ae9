"""The CNN family for `ser_train.training.runner`: features, augmentation, training loop, resume.

Features are computed once per clip and cached on disk, keyed by the clip's samples and the
feature code and settings, so cross-validation folds, the final model and later runs share them.
Each training clip has a clean view and a few waveform-augmented views (`augment_waveform`);
every epoch draws one view per clip, then masks parts of each batch.

Every epoch's randomness comes from generators seeded by (seed, epoch), so a run resumed from
its last checkpoint replays exactly the epochs an uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from ser_train import augment, features
from ser_train.augment import AugmentConfig, ChannelConfig, augment_waveform, channel_view, mask_features
from ser_train.calibration import CalibratedTrainingViews, population_statistics
from ser_train.data import audio_arrays
from ser_train.evaluation import classification_metrics
from ser_train.features import FeatureConfig, extract_features
from ser_train.models.cnn import REPRESENTATION, EmotionCNN, pad_features
from ser_train.training.runner import FitResult

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
CLIPS_PER_EXTRACTION = 64  # clips between two cache writes (and progress-bar steps)
BATCHES_PER_POOL = 8  # length bucketing: batches formed from one sorted pool of clips
VALIDATION_SMOOTHING = 0.3  # weight of the newest epoch in the moving average of validation UA


@dataclass
class CNNHyperparameters:
    epochs: int = 40  # the learning-rate schedule's length; early stopping may end sooner
    batch_size: int = 32
    learning_rate: float = 5e-3  # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 1e-2
    warmup_share: float = 0.3  # share of the schedule spent raising the learning rate
    patience: int = 15  # epochs without a better validation UA before stopping
    label_smoothing: float = 0.05
    augmented_views: int = 2  # waveform-augmented copies of each training clip, beside the clean one
    # Copies of each training clip as if recorded in another room, microphone band and codec
    # (augment.channel_view), beside the augmented ones. Measured leaving each of RAVDESS, TESS
    # and EMOVO out, 2 views raised the mean held-out UA from 0.293 to 0.365 (docs/GENERALISATION.md).
    channel_views: int = 2
    # Share of training clips seen, each epoch, through a calibration from a random sample of
    # their speaker's clips (any K, or their neutral and calm clips), so that one model learns
    # both calibrated and uncalibrated inputs. 0 trains on uncalibrated features only.
    calibrated_share: float = 0.0
    # A training clip longer than this is seen as a random stretch this long, drawn anew each
    # epoch: a batch of clips several minutes long would not fit in memory (one 9.5-minute clip
    # took 4.9 GB), and the page answers longer recordings in stretches of 4 s anyway
    # (timeline.MAX_SEGMENT_S). The longest clip of RAVDESS, TESS and EMOVO is 14 s.
    max_training_clip_s: float = 20.0
    channels: int = 96
    blocks: int = 3
    dropout: float = 0.1
    seed: int = 0
    threads: int = min(2, os.cpu_count() or 1)  # torch threads; the target machine has 2 cores
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint.

    Validation UA over four actors jumps by several points from epoch to epoch, and its single
    best epoch is often a lucky one in the middle of training that tests worse than the end of
    the learning-rate schedule. Epochs are therefore compared by an exponential moving average
    of validation UA, and a tie goes to the later epoch.
    """

    epoch: int = 0  # epochs completed
    best_epoch: int = 0
    best_score: float = -1.0  # smoothed validation UA at best_epoch
    smoothed_score: float | None = None  # smoothed validation UA at epoch
    stale_epochs: int = 0  # epochs since best_epoch

    def record(self, score: float | None) -> bool:
        """Note the finished epoch's validation UA (None: no validation); True if it is the best."""
        if score is None:  # without validation the latest epoch is the one to keep
            self.best_epoch = self.epoch
            return True
        previous = score if self.smoothed_score is None else self.smoothed_score
        self.smoothed_score = VALIDATION_SMOOTHING * score + (1 - VALIDATION_SMOOTHING) * previous
        if self.smoothed_score < self.best_score:
            self.stale_epochs += 1
            return False
        self.best_epoch, self.best_score, self.stale_epochs = self.epoch, self.smoothed_score, 0
        return True


class CNNFamily:
    """Fit and apply `EmotionCNN` (see `ser_train.training.runner.Family`)."""

    name = "cnn"

    def __init__(self, hyperparameters: CNNHyperparameters | None = None, cache_dir: Path | None = None):
        self.hp = hyperparameters or CNNHyperparameters()
        self.cache_dir = cache_dir or Path(datasets.config.HF_DATASETS_CACHE) / "ser_train" / "features"
        # Cache files already read by this process: the folds of a cross-validation share clips.
        self._loaded: dict[Path, np.ndarray] = {}

    def hyperparameters(self) -> dict:
        return dataclasses.asdict(self.hp)

    def fit(
        self,
        train: datasets.Dataset,
        validation: datasets.Dataset | None,
        output_dir: Path,
        resume: bool,
        max_epochs: int | None = None,
    ) -> FitResult:
        torch.set_num_threads(self.hp.threads)
        epochs = max_epochs or self.hp.epochs
        views = self._training_views(train)
        targets = torch.tensor(train["emotion"])
        labels = train.features["emotion"].names
        model = self._new_model(views[0], labels=labels)
        # What speaker calibration needs at inference: the training speakers' statistics.
        model.set_population(
            population_statistics(views[0], train["actor"], [labels[emotion] for emotion in train["emotion"]])
        )
        optimizer, scheduler = self._optimizer(model, epochs, len(targets))
        loss_function = torch.nn.CrossEntropyLoss(
            weight=class_weights(targets, len(model.labels)), label_smoothing=self.hp.label_smoothing
        )
        validation_data = (self._clean_features(validation), np.array(validation["emotion"])) if validation else None
        calibrated_views = (
            CalibratedTrainingViews(model, REPRESENTATION, views[0], train["actor"], [labels[e] for e in train["emotion"]], self.hp.calibrated_share)
            if self.hp.calibrated_share > 0
            else None
        )

        checkpoint = Path(output_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE
        progress, best_weights = Progress(), copy.deepcopy(model.state_dict())
        if resume and checkpoint.is_file():
            progress, best_weights = load_checkpoint(checkpoint, model, optimizer, scheduler)
            print(f"Resuming from epoch {progress.epoch} ({checkpoint})")

        bar = tqdm(total=epochs, initial=progress.epoch, desc="Training CNN", unit="epoch")
        while progress.epoch < epochs and progress.stale_epochs < self.hp.patience:
            progress.epoch += 1
            loss = self._train_epoch(model, views, targets, optimizer, scheduler, loss_function, calibrated_views, progress.epoch)
            score = _balanced_accuracy(model, *validation_data) if validation_data else None
            if progress.record(score):
                best_weights = copy.deepcopy(model.state_dict())
            postfix = {"loss": f"{loss:.3f}"}
            if score is not None:
                postfix.update(val_ua=f"{score:.3f}", smoothed=f"{progress.smoothed_score:.3f}", best_epoch=progress.best_epoch)
            bar.set_postfix(postfix)
            save_checkpoint(checkpoint, model, optimizer, scheduler, progress, best_weights)
            bar.update()
        bar.close()

        model.load_state_dict(best_weights)
        model.eval()
        model.save_pretrained(output_dir)
        return FitResult(model, progress.best_epoch)

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        return dataset  # features are cached per clip and view as the folds need them

    def predict_proba(self, model: EmotionCNN, dataset: datasets.Dataset) -> np.ndarray:
        torch.set_num_threads(self.hp.threads)
        return model.predict_proba_of_features(self._clean_features(dataset))

    def representations(self, dataset: datasets.Dataset) -> None:
        return None  # calibration's representations are computed from the audio when needed

    # --- Features ------------------------------------------------------------------------------

    def _clean_features(self, dataset: datasets.Dataset) -> list[np.ndarray]:
        return self._cached(audio_arrays(dataset), "clean", perturb=None)

    def _training_views(self, dataset: datasets.Dataset) -> list[list[np.ndarray]]:
        """Features of the clean clips, then of each augmented view, then of each channel view.

        Views are numbered 1, 2, ... across both kinds, and a clip's randomness in a view is keyed
        by (seed, view number, clip), so adding channel views leaves the augmented ones as they were."""
        waveforms = audio_arrays(dataset)
        views = [self._cached(waveforms, "clean", perturb=None)]
        perturbations = [
            ("augmented", self.hp.augment, lambda waveform, rng: augment_waveform(waveform, rng, self.hp.augment))
        ] * self.hp.augmented_views + [
            ("channel", self.hp.channel, lambda waveform, rng: channel_view(waveform, rng, self.hp.channel, self.hp.seed))
        ] * self.hp.channel_views
        for view, (kind, settings, perturbation) in enumerate(perturbations, start=1):

            def perturb(waveform: np.ndarray, clip_key: str, view: int = view, perturbation=perturbation) -> np.ndarray:
                return perturbation(waveform, np.random.default_rng([self.hp.seed, view, int(clip_key[:15], 16)]))

            name = f"{kind}-{_fingerprint(settings, augment)}-seed{self.hp.seed}-view{view}"
            views.append(self._cached(waveforms, name, perturb))
        return views

    def _cached(
        self,
        waveforms: list[np.ndarray],
        view: str,
        perturb: Callable[[np.ndarray, str], np.ndarray] | None,
    ) -> list[np.ndarray]:
        """Features of each (perturbed) waveform, read from or added to the on-disk cache."""
        folder = self.cache_dir / _fingerprint(self.hp.feature_config, features) / view
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{_clip_key(waveform)}.npy" for waveform in waveforms]
        missing = [i for i, path in enumerate(paths) if not path.is_file()]
        with tqdm(total=len(missing), desc=f"Features ({view})", unit="clip", disable=not missing) as bar:
            for start in range(0, len(missing), CLIPS_PER_EXTRACTION):
                chunk = missing[start : start + CLIPS_PER_EXTRACTION]
                inputs = [perturb(waveforms[i], paths[i].stem) if perturb else waveforms[i] for i in chunk]
                for i, matrix in zip(chunk, extract_features(inputs, self.hp.feature_config)):
                    _save_atomically(paths[i], matrix)
                bar.update(len(chunk))
        for path in paths:
            if path not in self._loaded:
                self._loaded[path] = np.load(path)
        return [self._loaded[path] for path in paths]

    # --- Training ------------------------------------------------------------------------------

    def _optimizer(self, model: EmotionCNN, epochs: int, num_clips: int):
        """AdamW with a one-cycle schedule (warm-up, then cosine annealing), stepped per batch."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.hp.learning_rate, weight_decay=self.hp.weight_decay)
        steps_per_epoch = -(-num_clips // self.hp.batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hp.learning_rate,
            # The schedule always spans hp.epochs, so the final model, trained for the folds'
            # median best epoch, sees the learning rates the fold models saw up to that epoch.
            total_steps=max(epochs, self.hp.epochs) * steps_per_epoch,
            pct_start=self.hp.warmup_share,
        )
        return optimizer, scheduler

    def _new_model(self, clean_features: list[np.ndarray], labels: list[str]) -> EmotionCNN:
        """A freshly initialised model, standardising with the clean training features' statistics."""
        torch.manual_seed(self.hp.seed)
        model = EmotionCNN(
            labels=labels,
            feature_config=self.hp.feature_config.to_dict(),
            channels=self.hp.channels,
            blocks=self.hp.blocks,
            dropout=self.hp.dropout,
            speaker_statistics=True,
        )
        frames = np.concatenate(clean_features)
        model.set_normalisation(frames.mean(axis=0), frames.std(axis=0))
        return model

    def _train_epoch(
        self,
        model: EmotionCNN,
        views: list[list[np.ndarray]],
        targets: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        loss_function: torch.nn.Module,
        calibrated_views: CalibratedTrainingViews | None,
        epoch: int,
    ) -> float:
        """One pass over the training clips, each in a randomly chosen view; the mean loss."""
        rng = np.random.default_rng([self.hp.seed, epoch])
        torch.manual_seed(self.hp.seed * 100_003 + epoch)  # dropout
        model.train()
        chosen_view = rng.integers(0, len(views), len(targets))
        clips = [views[view][i] for i, view in enumerate(chosen_view)]
        if calibrated_views is not None:
            clips = calibrated_views.apply(clips, rng)
        frame_rate = self.hp.feature_config.sampling_rate / self.hp.feature_config.hop_length
        clips = random_stretches(clips, round(self.hp.max_training_clip_s * frame_rate), rng)
        losses = []
        for batch in _length_bucketed_batches([len(clip) for clip in clips], self.hp.batch_size, rng):
            raw, lengths = pad_features([clips[i] for i in batch])
            inputs = mask_features(model.normalise(raw, lengths), lengths, rng, self.hp.augment)
            loss = loss_function(model(inputs, lengths), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        return float(np.mean(losses))


def from_args(args: argparse.Namespace) -> CNNFamily:
    """The family with the CLI's overrides (`train cnn --epochs/--batch-size/--learning-rate/--seed/--calibrated-share/--channel-views`)."""
    overrides = {
        name: getattr(args, argument)
        for name, argument in (
            ("epochs", "epochs"),
            ("batch_size", "batch_size"),
            ("learning_rate", "learning_rate"),
            ("calibrated_share", "calibrated_share"),
            ("channel_views", "channel_views"),
        )
        if getattr(args, argument, None) is not None
    }
    return CNNFamily(CNNHyperparameters(seed=args.seed, **overrides))


def random_stretches(clips: list[np.ndarray], max_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each clip's frames, or a random stretch of `max_frames` of a clip longer than that. Nothing
    is drawn for shorter clips, so an epoch without long clips goes as it did before the cap."""
    stretches = []
    for clip in clips:
        if len(clip) > max_frames:
            start = int(rng.integers(0, len(clip) - max_frames + 1))
            clip = clip[start : start + max_frames]
        stretches.append(clip)
    return stretches


def _length_bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random batches of similar-length clips, so little computation goes into padding.

    Clips are shuffled, cut into pools of BATCHES_PER_POOL batches, sorted by length within a
    pool, batched, and the batches shuffled.
    """
    order = rng.permutation(len(lengths))
    pool_size = batch_size * BATCHES_PER_POOL
    batches = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lambda i: lengths[i])
        batches += [np.array(pool[i : i + batch_size]) for i in range(0, len(pool), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def class_weights(targets: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced split gets weight 1 everywhere."""
    counts = torch.bincount(targets, minlength=num_labels).float().clamp_min(1)
    return len(targets) / (num_labels * counts)


def balanced_row_weights(targets: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """A weight per row so that every group (corpus) weighs the same and, within a group, every
    class it holds the same; the weights average 1."""
    targets, groups = np.asarray(targets), np.asarray(groups)
    weights = np.zeros(len(targets))
    names = np.unique(groups)
    for name in names:
        member = groups == name
        classes = np.unique(targets[member])
        for label in classes:
            cell = member & (targets == label)
            weights[cell] = 1.0 / (len(names) * len(classes) * cell.sum())
    return weights * len(targets) / weights.sum()


def _balanced_accuracy(model: EmotionCNN, clip_features: list[np.ndarray], references: np.ndarray) -> float:
    predictions = model.predict_proba_of_features(clip_features).argmax(axis=1)
    return classification_metrics(references, predictions, model.labels)["balanced_accuracy"]


# --- Cache keys and files ---------------------------------------------------------------------


def _clip_key(waveform: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(waveform, dtype=np.float32).tobytes()).hexdigest()[:32]


def _fingerprint(settings, module) -> str:
    """A short hash of a settings dataclass and the source of the module that uses it.

    Changing either the settings or the code makes new cache entries, never stale reads.
    """
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """Write then rename, so an interrupted run never leaves a truncated cache file."""
    partial = path.with_suffix(".partial.npy")
    np.save(partial, array)
    partial.replace(path)


def save_checkpoint(path: Path, model, optimizer, scheduler, progress: Progress, best_weights: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": dataclasses.asdict(progress),
            "best_weights": best_weights,
        },
        partial,
    )
    partial.replace(path)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[Progress, dict]:
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return Progress(**state["progress"]), state["best_weights"]
