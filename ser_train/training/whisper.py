"""The Whisper family for the runner: a classification head on a frozen Whisper encoder.

    python -m ser_train train whisper --dataset DIR --folds 6 --output-dir runs/whisper

The encoder is frozen, so what it makes of a clip is computed once: `prepare` adds each clip's
per-layer means over time (see `ser_train.models.whisper`) to the whole dataset with
`datasets.map`, which caches them as Arrow on disk, memory-mapped, keyed by the dataset, the
encoder's weights and the settings (a second run, a resumed run and every fold read the same
cache; `map` could also fill it with `num_proc` workers or on a GPU). Beside the clean clip,
`augmented_views` waveform-augmented copies of every clip are encoded too; training draws one
view per clip each epoch, and only training clips' augmented views are ever used.

An epoch of the head then costs milliseconds. Validation UA (smoothed, as for the CNN) stops
training early; every epoch is checkpointed for `--resume`. Test clips are always predicted from
their audio through the saved model, exactly as a user's clip would be.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from ser_train.augment import AugmentConfig, augment_waveform
from ser_train.data import audio_arrays
from ser_train.errors import SERError
from ser_train.evaluation import classification_metrics
from ser_train.models import whisper
from ser_train.models.wav2vec2 import EmotionWav2Vec2, resolve_base
# The CNN family's training helpers serve the Whisper head too: same early stopping, same checkpoints.
from ser_train.training.cnn import CHECKPOINT_DIR, CHECKPOINT_FILE, Progress, class_weights, load_checkpoint, save_checkpoint
from ser_train.training.runner import FitResult

MEANS_COLUMN = "whisper_layer_means"  # [views, layers, hidden]: view 0 is the clean clip
CLIPS_PER_ENCODER_CALL = 8


@dataclass
class WhisperHyperparameters:
    base: str = whisper.DEFAULT_BASE
    window_s: int = whisper.DEFAULT_WINDOW_S
    epochs: int = 300  # the cosine schedule's length; early stopping usually ends sooner
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 1e-2
    patience: int = 40  # epochs without a better smoothed validation UA
    projection_size: int = 256  # WhisperForAudioClassification's classifier_proj_size
    # Each augmented view costs one more encoder pass over the corpus (about 0.4 s a clip on
    # this 2-core CPU), which is why the default trains on the clean clips alone.
    augmented_views: int = 0
    standardise: bool = True
    seed: int = 0


class WhisperFamily:
    """Fit and apply a WhisperForAudioClassification head (see `ser_train.training.runner.Family`)."""

    name = "whisper"

    def __init__(self, hyperparameters: WhisperHyperparameters | None = None):
        self.hp = hyperparameters or WhisperHyperparameters()
        # Fails in seconds, before any audio is loaded, on a base that is missing or no encoder.
        self.base_folder = resolve_base(self.hp.base, model_types=[whisper.MODEL_TYPE])
        self.feature_extractor = whisper.window_feature_extractor(self.base_folder, self.hp.window_s)
        self._encoder = None

    def hyperparameters(self) -> dict:
        described = {"head": "WhisperForAudioClassification: weighted layer sum, mean pooling", "train_mode": "head"}
        if Path(self.hp.base).resolve() == Path(whisper.DEFAULT_BASE).resolve():
            described["base_model_id"] = whisper.DEFAULT_BASE_HUB_ID
        return {**dataclasses.asdict(self.hp), **described}

    # --- The frozen encoder's output, once per clip ------------------------------------------

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """`dataset` with every clip's layer means in MEANS_COLUMN (computed once, then cached)."""
        return dataset.map(
            self._encode_batch,
            batched=True,
            batch_size=CLIPS_PER_ENCODER_CALL,
            with_indices=True,
            new_fingerprint=self._cache_key(dataset),
            desc="Whisper encoder (cached)",
        )

    def _encode_batch(self, batch: dict, indices: list[int]) -> dict:
        waveforms = [np.asarray(audio["array"], dtype=np.float32) for audio in batch["audio"]]
        views = [waveforms]
        for view in range(1, self.hp.augmented_views + 1):
            views.append(
                [
                    augment_waveform(waveform, np.random.default_rng([self.hp.seed, index, view]), AugmentConfig())
                    for waveform, index in zip(waveforms, indices)
                ]
            )
        encoder = self._frozen_model()
        means = np.stack([whisper.layer_means(encoder, self.feature_extractor, clips) for clips in views], axis=1)
        return {MEANS_COLUMN: means}

    def _frozen_model(self):
        if self._encoder is None:
            self._encoder = self._new_model(["_"]).eval()
        return self._encoder

    def _cache_key(self, dataset: datasets.Dataset) -> str:
        """What the cached means depend on: the clips, the encoder, the views and the code that
        computes them (not the head's settings, so head experiments share one cache)."""
        digest = hashlib.sha256(dataset._fingerprint.encode())
        for shard in (whisper.ENCODER_SHARD, whisper.HEAD_SHARD):
            digest.update((Path(self.base_folder) / shard).read_bytes())
        digest.update(repr((self.hp.window_s, self.hp.augmented_views, self.hp.seed, AugmentConfig())).encode())
        for code in (whisper.layer_means, whisper.cut_window, whisper.window_feature_extractor, augment_waveform):
            digest.update(inspect.getsource(code).encode())
        return digest.hexdigest()[:16]

    # --- Training -----------------------------------------------------------------------------

    def fit(
        self,
        train: datasets.Dataset,
        validation: datasets.Dataset | None,
        output_dir: Path,
        resume: bool,
        max_epochs: int | None = None,
    ) -> FitResult:
        threads = torch.get_num_threads()
        # The head's matrices are small: a second thread only adds synchronisation, and on busy
        # cores OpenMP's spin-waiting makes every step many times slower.
        torch.set_num_threads(1)
        try:
            return self._fit(train, validation, Path(output_dir), resume, max_epochs)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, train, validation, output_dir: Path, resume: bool, max_epochs: int | None) -> FitResult:
        epochs = max_epochs or self.hp.epochs
        labels = train.features["emotion"].names
        model = self._new_model(labels)
        means = torch.from_numpy(_layer_means(train))
        # A few of Whisper's hidden dimensions are hundreds of times larger than the rest; the
        # head learns on standardised means, and the scaling is folded into its projection at
        # the end, so the saved model takes raw encoder output like any stock classifier.
        scale = Standardisation.of(means[:, 0]) if self.hp.standardise else Standardisation.identity(means.shape[-1])
        means = scale.apply(means)
        targets = torch.tensor(train["emotion"])
        parameters = whisper.head_parameters(model)
        optimizer = torch.optim.AdamW(parameters, lr=self.hp.learning_rate, weight_decay=self.hp.weight_decay)
        # The schedule always spans hp.epochs, so the final model (trained for the folds' median
        # best epoch) sees the learning rates the fold models saw up to that epoch.
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, self.hp.epochs))
        loss_function = torch.nn.CrossEntropyLoss(weight=class_weights(targets, len(labels)))
        validation_data = (
            (scale.apply(torch.from_numpy(_layer_means(validation)[:, 0])), np.array(validation["emotion"]))
            if validation
            else None
        )

        checkpoint = Path(output_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE
        head = _HeadState(model)
        progress, best_weights = Progress(), head.state_dict()
        if resume and checkpoint.is_file():
            progress, best_weights = load_checkpoint(checkpoint, head, optimizer, scheduler)
            print(f"Resuming from epoch {progress.epoch} ({checkpoint})")
        while progress.epoch < epochs and progress.stale_epochs < self.hp.patience:
            progress.epoch += 1
            self._train_epoch(model, means, targets, optimizer, loss_function, progress.epoch)
            scheduler.step()
            score = _balanced_accuracy(model, *validation_data) if validation_data else None
            if progress.record(score):
                best_weights = head.state_dict()
            save_checkpoint(checkpoint, head, optimizer, scheduler, progress, best_weights)
        if validation_data:
            print(f"best epoch {progress.best_epoch} of {progress.epoch} (smoothed validation UA {progress.best_score:.3f})")

        head.load_state_dict(best_weights)
        scale.fold_into(model.projector)
        model.eval()
        whisper.save_classifier(model, self.feature_extractor, output_dir, self.base_folder)
        return FitResult(EmotionWav2Vec2(model, self.feature_extractor), progress.best_epoch)

    def predict(self, model: EmotionWav2Vec2, dataset: datasets.Dataset) -> np.ndarray:
        """Class ids from the clips' cached clean layer means where present, else from the audio.

        Both give the saved model's answer on the clip (tests/test_whisper.py checks the two
        agree); the cache saves a second encoder pass over every test clip.
        """
        if MEANS_COLUMN not in dataset.column_names:
            return model.predict_proba(audio_arrays(dataset)).argmax(axis=1)
        model.model.eval()
        with torch.inference_mode():
            logits = whisper.logits_from_layer_means(model.model, torch.from_numpy(_layer_means(dataset)[:, 0]))
        return logits.argmax(dim=1).numpy()

    def _new_model(self, labels: list[str]):
        """whisper-base's encoder, cut to the window, frozen, under a freshly initialised head."""
        from transformers import AutoModelForAudioClassification

        torch.manual_seed(self.hp.seed)
        model = AutoModelForAudioClassification.from_pretrained(
            self.base_folder,
            num_labels=len(labels),
            label2id={label: index for index, label in enumerate(labels)},
            id2label={index: label for index, label in enumerate(labels)},
            use_weighted_layer_sum=True,
            classifier_proj_size=self.hp.projection_size,
            use_safetensors=True,
        )
        if model.config.model_type != whisper.MODEL_TYPE:
            raise SERError(f"{self.hp.base} is a '{model.config.model_type}' model; `train whisper` needs a Whisper encoder.")
        whisper.cut_window(model, self.hp.window_s)
        with torch.no_grad():  # from_pretrained may leave the new layer weights uninitialised
            model.layer_weights.fill_(1.0 / model.layer_weights.numel())
        model.encoder.requires_grad_(False)
        return model

    def _train_epoch(self, model, means, targets, optimizer, loss_function, epoch: int) -> None:
        """One pass over the training clips in random order, each in a randomly drawn view."""
        rng = np.random.default_rng([self.hp.seed, epoch])
        views = torch.from_numpy(rng.integers(0, means.shape[1], len(targets)))
        inputs = means[torch.arange(len(targets)), views]
        model.train()
        for batch in np.array_split(rng.permutation(len(targets)), max(1, len(targets) // self.hp.batch_size)):
            loss = loss_function(whisper.logits_from_layer_means(model, inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@dataclass
class Standardisation:
    """Per-dimension mean and spread of the training clips' layer means (all layers pooled, so
    that it commutes with the weighted layer sum, whose weights add up to 1)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, means: torch.Tensor) -> Standardisation:
        flat = means.reshape(-1, means.shape[-1])
        return cls(flat.mean(dim=0), flat.std(dim=0).clamp_min(1e-6))

    @classmethod
    def identity(cls, size: int) -> Standardisation:
        return cls(torch.zeros(size), torch.ones(size))

    def apply(self, means: torch.Tensor) -> torch.Tensor:
        return (means - self.mean) / self.std

    def fold_into(self, projector: torch.nn.Linear) -> None:
        """Make `projector(x)` equal what it gave on `apply(x)`: W(x - m)/s + b = (W/s)x + b - W(m/s)."""
        with torch.no_grad():
            projector.bias -= projector.weight @ (self.mean / self.std)
            projector.weight /= self.std


class _HeadState(torch.nn.Module):
    """The trainable part of the classifier as one module, for checkpoints (the encoder is frozen
    and rebuilt from the base, so checkpoints stay a few hundred kB)."""

    def __init__(self, model):
        super().__init__()
        self.layer_weights = model.layer_weights
        self.projector = model.projector
        self.classifier = model.classifier

    def state_dict(self, *args, **kwargs):
        return copy.deepcopy(super().state_dict(*args, **kwargs))


def _layer_means(dataset: datasets.Dataset) -> np.ndarray:
    if MEANS_COLUMN not in dataset.column_names:
        raise SERError("The Whisper family trains on prepared datasets: call WhisperFamily.prepare first.")
    return np.asarray(dataset.with_format("numpy")[MEANS_COLUMN], dtype=np.float32)


def _balanced_accuracy(model, means: torch.Tensor, references: np.ndarray) -> float:
    model.eval()
    with torch.inference_mode():
        predictions = whisper.logits_from_layer_means(model, means).argmax(dim=1).numpy()
    labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    return classification_metrics(references, predictions, labels)["balanced_accuracy"]


def from_args(args: argparse.Namespace) -> WhisperFamily:
    """The family `python -m ser_train train whisper` asked for."""
    overrides = {
        name: getattr(args, name)
        for name in ("base", "window_s", "epochs", "batch_size", "learning_rate")
        if getattr(args, name, None) is not None
    }
    return WhisperFamily(WhisperHyperparameters(seed=args.seed, **overrides))
