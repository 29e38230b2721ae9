"""The wav2vec2 family for the runner: fine-tune a pretrained speech encoder with `Trainer`.

It follows transformers' audio-classification example: `AutoFeatureExtractor` and
`AutoModelForAudioClassification` (see `ser_train.models.wav2vec2`), `datasets` transforms applied
on the fly (a random crop of long clips at training time only; whole clips for evaluation), and
`Trainer` with an evaluation and a checkpoint every epoch, early stopping on the validation
balanced accuracy (UA), and the best epoch's weights kept at the end. With `resume`, training
continues from the newest checkpoint in the output folder.

Mixed precision (bf16 where supported, else fp16) and activation checkpointing switch on only on
a GPU. Nothing here is tied to one device: under `torchrun` or `accelerate launch` Trainer
spreads the batches over all GPUs.

The model folder is what `save_pretrained` writes (config.json, model.safetensors,
preprocessor_config.json), beside Trainer's `checkpoint-N` folders for `--resume`: the newest and
the best while training, the best alone once training has finished.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import datasets
import numpy as np
import torch

from ser_train.data import audio_arrays
from ser_train.errors import SERError
from ser_train.evaluation import SUMMARY_METRICS, classification_metrics
from ser_train.models.wav2vec2 import (
    DEFAULT_BASE,
    TRAIN_MODES,
    EmotionWav2Vec2,
    feature_extractor_of,
    inference_batch_size,
    load_for_training,
    resolve_base,
)
from ser_train.training.runner import FitResult

DEFAULT_TRAIN_MODE = "encoder"
DEFAULT_EPOCHS = 20  # a ceiling: early stopping usually ends training sooner
DEFAULT_BATCH_SIZE = 16
# Head-only training moves a small freshly initialised head, which tolerates a large step; the
# pretrained transformer layers need a small one not to forget what pretraining taught them.
DEFAULT_LEARNING_RATES = {"head": 1e-3, "encoder": 5e-5}
EARLY_STOPPING_PATIENCE = 5  # epochs without a better validation UA before training stops
WARMUP_RATIO = 0.1  # share of the steps spent ramping the learning rate up from zero
MAX_TRAINING_CROP_S = 6.0  # seconds; longer training clips are cropped at random (RAVDESS: ~3-5 s)
LOGGING_STEPS = 10
CHECKPOINTS_KEPT = 1  # the newest; Trainer also keeps the best one for load_best_model_at_end
CHECKPOINT_FOLDER = re.compile(r"checkpoint-(\d+)")  # Trainer's checkpoint-<global step>
TRAINER_STATE_FILE = "trainer_state.json"  # the last file Trainer writes into a checkpoint
BEST_METRIC = "balanced_accuracy"  # UA: fair to the classes with fewer clips (neutral)


@dataclass
class Wav2Vec2Family:
    """Fine-tunes `base` on one split per `fit`; see the module docstring."""

    name: ClassVar[str] = "wav2vec2"

    base: str = DEFAULT_BASE
    train_mode: str = DEFAULT_TRAIN_MODE
    seed: int = 0
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float | None = None  # None: DEFAULT_LEARNING_RATES[train_mode]
    base_folder: Path = field(init=False)

    def __post_init__(self):
        if self.train_mode not in TRAIN_MODES:
            raise SERError(f"The train mode must be one of {', '.join(TRAIN_MODES)}, got {self.train_mode!r}.")
        # Resolve (and, from the Hub, download) the base now: a missing model fails in seconds,
        # before the runner spends minutes loading audio.
        self.base_folder = resolve_base(self.base)
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATES[self.train_mode]

    def hyperparameters(self) -> dict:
        return {
            "base": self.base,
            "train_mode": self.train_mode,
            "head": "weighted layer sum, mean pooling (use_weighted_layer_sum=True)",
            "seed": self.seed,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "warmup_ratio": WARMUP_RATIO,
            "early_stopping_patience": EARLY_STOPPING_PATIENCE,
            "max_training_crop_s": MAX_TRAINING_CROP_S,
        }

    def fit(
        self,
        train: datasets.Dataset,
        validation: datasets.Dataset | None,
        output_dir: Path,
        resume: bool,
        max_epochs: int | None = None,
    ) -> FitResult:
        from transformers import EarlyStoppingCallback, Trainer, set_seed

        output_dir = Path(output_dir)
        labels = train.features["emotion"].names
        set_seed(self.seed)  # the new head's initial weights
        feature_extractor = feature_extractor_of(self.base_folder, self.base)
        model = load_for_training(self.base_folder, labels, self.train_mode)
        validating = validation is not None
        epochs = max_epochs or self.epochs
        trainer = Trainer(
            model=model,
            args=self._training_arguments(output_dir, epochs, validating, feature_extractor),
            train_dataset=train.with_transform(
                partial(model_inputs, feature_extractor=feature_extractor, max_crop_s=MAX_TRAINING_CROP_S)
            ),
            eval_dataset=(
                validation.with_transform(partial(model_inputs, feature_extractor=feature_extractor))
                if validating
                else None
            ),
            processing_class=feature_extractor,  # saved with the model; pads batches
            compute_metrics=partial(summary_metrics, labels=labels) if validating else None,
            callbacks=[EarlyStoppingCallback(EARLY_STOPPING_PATIENCE)] if validating else None,
        )
        checkpoint = last_complete_checkpoint(output_dir) if resume else None
        if checkpoint:
            print(f"Resuming from {checkpoint}")
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(output_dir))  # the best epoch's weights, after load_best_model_at_end
        best_epoch = _best_epoch(trainer.state) if validating else epochs
        return FitResult(EmotionWav2Vec2(trainer.model, feature_extractor), best_epoch)

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        return dataset  # the encoder learns, so nothing it computes can be kept between epochs

    def predict_proba(self, model: EmotionWav2Vec2, dataset: datasets.Dataset) -> np.ndarray:
        return model.predict_proba(audio_arrays(dataset))

    def representations(self, dataset: datasets.Dataset) -> None:
        return None  # calibration's representations are computed from the audio when needed

    def _training_arguments(self, output_dir: Path, epochs: int, validating: bool, feature_extractor):
        from transformers import TrainingArguments

        on_gpu = torch.cuda.is_available()
        bf16 = on_gpu and torch.cuda.is_bf16_supported()
        return TrainingArguments(
            output_dir=str(output_dir),
            seed=self.seed,
            num_train_epochs=epochs,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=inference_batch_size(feature_extractor),
            learning_rate=self.learning_rate,
            warmup_steps=WARMUP_RATIO,  # a float below 1 is a share of all steps
            eval_strategy="epoch" if validating else "no",
            save_strategy="epoch",
            save_total_limit=CHECKPOINTS_KEPT,
            load_best_model_at_end=validating,
            metric_for_best_model=BEST_METRIC if validating else None,
            greater_is_better=True,
            restore_callback_states_from_checkpoint=True,  # early stopping's patience survives a resume
            logging_steps=LOGGING_STEPS,
            report_to="none",
            remove_unused_columns=False,  # the transforms need the "audio" column, which forward() lacks
            bf16=bf16,
            fp16=on_gpu and not bf16,
            # Recomputing activations trades about a fifth of the speed for much less GPU memory;
            # with a frozen encoder no activations are kept, so there is nothing to save.
            activation_checkpointing=on_gpu and self.train_mode == "encoder",
        )


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint folder that Trainer finished writing, or None.

    Trainer fills a checkpoint folder file by file and writes trainer_state.json last, so a job
    killed while saving leaves a folder without it; transformers' `get_last_checkpoint` would
    pick that folder and resuming from it would fail.
    """
    steps = {
        int(match[1]): folder
        for folder in (output_dir.iterdir() if output_dir.is_dir() else [])
        if (match := CHECKPOINT_FOLDER.fullmatch(folder.name)) and (folder / TRAINER_STATE_FILE).is_file()
    }
    return str(steps[max(steps)]) if steps else None


def model_inputs(batch: dict, feature_extractor, max_crop_s: float | None = None) -> dict:
    """A `datasets` transform: raw audio and emotion ids to the model's inputs and labels.

    With `max_crop_s`, clips longer than that are cropped at a random offset (training only: the
    model hears a different stretch of a long clip each epoch, and batches stay bounded).
    """
    waveforms = [np.asarray(audio["array"], dtype=np.float32) for audio in batch["audio"]]
    if max_crop_s is not None:
        max_samples = int(max_crop_s * feature_extractor.sampling_rate)
        waveforms = [random_crop(waveform, max_samples) for waveform in waveforms]
    # Normalised per clip here, before the collator pads the batch with zeros.
    features = feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate)
    input_name = feature_extractor.model_input_names[0]
    return {input_name: features[input_name], "labels": batch["emotion"]}


def random_crop(waveform: np.ndarray, max_samples: int) -> np.ndarray:
    """A random `max_samples`-long stretch of `waveform`, or all of it if it is not longer.

    Python's `random` is the generator Trainer seeds and saves in its checkpoints, so crops are
    reproducible and a resumed run draws the ones the interrupted run would have drawn.
    """
    if len(waveform) <= max_samples:
        return waveform
    start = random.randint(0, len(waveform) - max_samples)
    return waveform[start : start + max_samples]


def summary_metrics(prediction, labels: list[str]) -> dict:
    """Trainer's compute_metrics: the headline scores (WA, UA, macro F1) of a validation pass."""
    metrics = classification_metrics(prediction.label_ids, np.argmax(prediction.predictions, axis=1), labels)
    return {name: metrics[name] for name in SUMMARY_METRICS}


def _best_epoch(state) -> int:
    """The epoch whose evaluation gave the weights load_best_model_at_end kept."""
    best = next(
        entry
        for entry in state.log_history
        if entry.get("step") == state.best_global_step and f"eval_{BEST_METRIC}" in entry
    )
    return round(best["epoch"])


def from_args(args: argparse.Namespace) -> Wav2Vec2Family:
    """The family `python -m ser_train train wav2vec2` asked for; fails fast on an unusable --base."""
    return Wav2Vec2Family(
        base=args.base,
        train_mode=args.train_mode,
        seed=args.seed,
        epochs=args.epochs or DEFAULT_EPOCHS,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
        learning_rate=args.learning_rate,
    )
