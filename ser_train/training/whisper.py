"""The Whisper family for the runner: a linear classifier on a frozen Whisper encoder's statistics.

    python -m ser_train train whisper --dataset DIR --folds 6 --output-dir runs/whisper

The encoder is frozen, so what it makes of a clip is computed once: `prepare` adds each clip's
pooled statistics (see `ser_train.models.whisper`) to the whole dataset with `datasets.map`,
which caches them as Arrow on disk, memory-mapped, in pieces of PIECE_CLIPS clips, each keyed by
its clips' audio and place, the encoder's weights and the settings (a second run, a resumed run
and every fold read the same cache; a run interrupted while encoding, hours on 2 cores for eight
corpora, keeps every piece it finished; `map` could also fill it with `num_proc` workers or on a
GPU). Beside the clean clip, `augmented_views`
waveform-augmented copies of every clip can be encoded too (each costs one more encoder pass);
only training clips' augmented views are ever used.

The head is a multinomial logistic regression, a convex problem: L-BFGS solves it in seconds,
with a fixed L2 penalty, so there is no epoch to stop early at and validation actors train too
(never test actors). It learns from the clean statistics and from `calibrated_views` copies in
which each training speaker is calibrated as inference would calibrate them (random K clips, or
their neutral clips), so the same model answers with and without a calibration. An interrupted
run resumes at the next unfinished fold (the runner), or at the next piece of the encoder's
output it had not cached.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from ser_train.audio import QUIET_SPEECH_DB, TYPICAL_SPEECH_DB, SpeechLevel, quiet_speech_gain, raised_if_quiet
from ser_train.augment import AugmentConfig, ChannelConfig, augment_waveform, channel_view, random_crop, room_impulse_responses
from ser_train.calibration import CalibratedTrainingViews, population_statistics, write_population
from ser_train.data import audio_arrays, clip_digests
from ser_train.errors import SERError
from ser_train.models import whisper
from ser_train.models.wav2vec2 import resolve_base
from ser_train.training.cnn import balanced_row_weights, class_weights
from ser_train.training.runner import FitResult
from ser_train.vad import frame_speech_probabilities, trim_silence

STATISTICS_COLUMN = "whisper_statistics"  # [views, statistics_size]: view 0 is the clean clip
MIN_CROP_S = 0.5  # the shortest stretch a cropped view holds: the shortest clip audio checks accept
MIN_STD = 1e-6  # floor of the standardisation's spread
PIECE_CLIPS = 256  # clips per cached piece of the encoder's output: about 2 minutes of the 2 cores in 7 views


@dataclass
class WhisperHyperparameters:
    base: str = whisper.DEFAULT_BASE
    window_s: int = whisper.DEFAULT_WINDOW_S
    # The L2 penalty on the classifier's weights, per unit of mean loss. Measured on RAVDESS
    # folds it barely matters between 0.01 and 0.1 (see the model card).
    l2: float = 0.03
    max_iterations: int = 500  # L-BFGS iterations; the fit converges well before
    # Copies of the training clips, each with every speaker calibrated by a random sample of
    # their own clips (see CalibratedTrainingViews). Measured on RAVDESS folds (model card):
    # 4 rather than 2 keeps calibration from neutral speech from costing accuracy.
    calibrated_views: int = 4
    # Waveform-augmented copies (speed, gain, noise, cropping) of every clip, encoded once each:
    # about 4 minutes of encoder time per view over RAVDESS on 2 cores; 2 views lifted UA by 3 points.
    augmented_views: int = 2
    # Random stretches of 0.5 s to the window of every clip's speech: a second of speech is a
    # different input from a sentence, and live mode meets one at every onset.
    cropped_views: int = 2
    # Copies of every clip's speech in another simulated room, microphone band and codec
    # (augment.channel_view): what differs between corpora besides the voices. Measured leaving
    # each of RAVDESS, TESS and EMOVO out, 2 views raised the mean held-out UA from 0.395 to 0.428
    # (docs/GENERALISATION.md).
    channel_views: int = 2
    # Pool over each clip's speech only (see whisper.TRIM_SILENCE_KEY); views are made of the
    # trimmed clip.
    trim_silence: bool = True
    # Weigh every training corpus the same (and every emotion the same within it), so a corpus
    # of 2800 clips does not outvote one of 588.
    balance_corpora: bool = True
    # Directions in which the training speakers' voices differ most (speaker_directions), removed
    # from what the head sees, so that it cannot tell emotions apart by who is speaking. 0: none.
    # 10 moved the mean held-out UA over RAVDESS, TESS and EMOVO from 0.428 to 0.425
    # (docs/GENERALISATION.md).
    speaker_directions: int = 0
    seed: int = 0


class WhisperFamily:
    """Fit and apply a WhisperForEmotionRecognition head (see `ser_train.training.runner.Family`)."""

    name = "whisper"

    def __init__(self, hyperparameters: WhisperHyperparameters | None = None):
        self.hp = hyperparameters or WhisperHyperparameters()
        # Fails in seconds, before any audio is loaded, on a base that is missing or no encoder.
        self.base_folder = resolve_base(self.hp.base, model_types=[whisper.MODEL_TYPE])
        self.feature_extractor = whisper.window_feature_extractor(self.base_folder, self.hp.window_s)
        self._encoder = None

    def hyperparameters(self) -> dict:
        described = {
            "head": "linear on each layer's mean and standard deviation over the clip's frames",
            "train_mode": "head",
        }
        if Path(self.hp.base).resolve() == Path(whisper.DEFAULT_BASE).resolve():
            described["base_model_id"] = whisper.DEFAULT_BASE_HUB_ID
        return {**dataclasses.asdict(self.hp), **described}

    # --- The frozen encoder's output, once per clip ------------------------------------------

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """`dataset` with every clip's statistics in STATISTICS_COLUMN, computed once and cached
        in pieces of PIECE_CLIPS clips (see `_cache_key`)."""
        pieces = [self._encoded_piece(dataset, start) for start in range(0, dataset.num_rows, PIECE_CLIPS)]
        return datasets.concatenate_datasets([dataset, datasets.concatenate_datasets(pieces)], axis=1)

    def _encoded_piece(self, dataset: datasets.Dataset, first_index: int) -> datasets.Dataset:
        """STATISTICS_COLUMN alone, of the PIECE_CLIPS clips from `first_index` on: a piece found in
        the cache brings no other column of the run that cached it (its actor ids, say)."""
        piece = dataset.select(range(first_index, min(first_index + PIECE_CLIPS, dataset.num_rows)))
        return piece.map(
            self._encode_batch,
            batched=True,
            batch_size=whisper.CLIPS_PER_FORWARD,
            with_indices=True,
            fn_kwargs={"first_index": first_index},
            remove_columns=piece.column_names,
            new_fingerprint=self._cache_key(piece, first_index),
            desc=f"Whisper encoder (cached), clips {first_index + 1}-{first_index + piece.num_rows} of {dataset.num_rows}",
        )

    def _encode_batch(self, batch: dict, indices: list[int], first_index: int = 0) -> dict:
        """Each clip's views: the clean clip (its speech, if trimmed), `augmented_views` perturbed
        copies, `cropped_views` random stretches, `channel_views` copies through another room,
        band and codec; every view's randomness keyed by (seed, clip's index in the dataset, view)."""
        indices = [first_index + index for index in indices]
        waveforms = [np.asarray(audio["array"], dtype=np.float32) for audio in batch["audio"]]
        if self.hp.trim_silence:
            waveforms = [trim_silence(waveform) for waveform in waveforms]
        views = [waveforms]
        number = 0
        view_counts = (("augmented", self.hp.augmented_views), ("cropped", self.hp.cropped_views), ("channel", self.hp.channel_views))
        for kind, count in view_counts:
            for _ in range(count):
                number += 1
                views.append([self._view(kind, w, np.random.default_rng([self.hp.seed, i, number])) for w, i in zip(waveforms, indices)])
        encoder = self._frozen_encoder()
        return {STATISTICS_COLUMN: np.stack([encoder.pooled_statistics(clips) for clips in views], axis=1)}

    def _view(self, kind: str, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if kind == "augmented":
            return augment_waveform(waveform, rng, AugmentConfig())
        if kind == "channel":
            return channel_view(waveform, rng, ChannelConfig(), self.hp.seed)
        return random_crop(waveform, rng, MIN_CROP_S, self.hp.window_s)

    def _frozen_encoder(self) -> whisper.EmotionWhisper:
        if self._encoder is None:
            self._encoder = whisper.EmotionWhisper(self._new_model(["_"]), self.feature_extractor)
        return self._encoder

    def _cache_key(self, piece: datasets.Dataset, first_index: int) -> str:
        """What a piece's cached statistics depend on: its clips' audio and where they start in
        the dataset (which seeds their views), the encoder, the views and the code that computes
        them; not the head's settings (head experiments share one cache), nor the rest of the
        dataset: a run over more corpora reuses the pieces of the clips an earlier run began with,
        and an interrupted one redoes one piece at most."""
        digest = hashlib.sha256(f"{first_index}:{','.join(clip_digests(piece))}".encode())
        for shard in (whisper.ENCODER_SHARD, whisper.HEAD_SHARD):
            digest.update((Path(self.base_folder) / shard).read_bytes())
        views = (self.hp.window_s, self.hp.augmented_views, self.hp.cropped_views, self.hp.channel_views, self.hp.trim_silence, self.hp.seed)
        views += (AugmentConfig(), ChannelConfig(), QUIET_SPEECH_DB, TYPICAL_SPEECH_DB)
        digest.update(repr(views).encode())
        for code in (
            whisper.WhisperForEmotionRecognition.encoder_statistics,
            whisper.encoder_frame_counts,
            whisper.frame_statistics,
            whisper.EmotionWhisper.pooled_statistics,
            whisper.new_classifier,
            whisper.window_feature_extractor,
            WhisperFamily._encode_batch,
            WhisperFamily._view,
            augment_waveform,
            random_crop,
            channel_view,
            room_impulse_responses,
            trim_silence,
            frame_speech_probabilities,  # what trimming hears: a quiet view raised first
            raised_if_quiet,
            quiet_speech_gain,
            SpeechLevel,
        ):
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
        """Fit the head on the training and validation clips (a convex fit has nothing to stop
        early), save the model in output_dir. `resume` and `max_epochs` do not apply."""
        if validation is not None and validation.num_rows:
            train = datasets.concatenate_datasets([train, validation])
        labels = train.features["emotion"].names
        model = self._new_model(labels)
        statistics = _statistics(train)  # [clips, views, size]
        speakers, emotions = np.asarray(train["actor"]), [labels[e] for e in train["emotion"]]
        clean = list(statistics[:, 0, None])  # one "frame" per clip, as calibration sees it
        whisper_classifier = whisper.EmotionWhisper(model, self.feature_extractor)
        # What speaker calibration needs at inference: the training speakers' statistics.
        write_population(model, population_statistics(clean, speakers, emotions))

        rng = np.random.default_rng(self.hp.seed)
        calibrated = CalibratedTrainingViews(whisper_classifier, whisper.REPRESENTATION, clean, speakers, emotions, share=1.0)
        inputs = [statistics[:, view] for view in range(statistics.shape[1])]
        inputs += [np.concatenate(calibrated.apply(clean, rng)) for _ in range(self.hp.calibrated_views)]
        copies = len(inputs)
        inputs = torch.from_numpy(np.concatenate(inputs).astype(np.float32))
        targets = torch.tensor(train["emotion"]).repeat(copies)
        with torch.no_grad():
            model.input_mean.copy_(inputs.mean(dim=0))
            model.input_std.copy_(inputs.std(dim=0).clamp_min(MIN_STD))
        directions = self._speaker_directions(model, statistics[:, 0], speakers, train)
        iterations = self._fit_classifier(model, inputs, targets, torch.from_numpy(np.tile(self._row_weights(train), copies)).float(), directions)
        print(f"classifier fitted on {len(inputs)} rows ({train.num_rows} clips) in {iterations} L-BFGS iterations")
        whisper.save_classifier(model, self.feature_extractor, output_dir, self.base_folder)
        return FitResult(whisper_classifier, best_epoch=None)  # one fit to convergence, no epochs

    def _row_weights(self, train: datasets.Dataset) -> np.ndarray:
        """Each clip's weight in the loss: every corpus and every emotion within it the same
        (`balance_corpora`, several corpora), else every emotion the same."""
        targets = np.asarray(train["emotion"])
        if self.hp.balance_corpora and "corpus" in train.column_names:
            return balanced_row_weights(targets, np.asarray(train["corpus"]))
        return class_weights(torch.from_numpy(targets), len(train.features["emotion"].names)).numpy()[targets]

    def _speaker_directions(self, model, clean: np.ndarray, speakers: np.ndarray, train: datasets.Dataset) -> torch.Tensor:
        """`speaker_directions` of the clips' clean statistics, standardised as the head sees them;
        with none asked for (the default), nothing is computed."""
        if not self.hp.speaker_directions:
            return torch.zeros((0, clean.shape[1]))
        groups = np.asarray(train["corpus"]) if "corpus" in train.column_names else np.zeros(train.num_rows)
        standardised = ((torch.from_numpy(clean) - model.input_mean) / model.input_std).numpy()
        return torch.from_numpy(speaker_directions(standardised, speakers, np.asarray(train["emotion"]), groups, self.hp.speaker_directions))

    def _fit_classifier(self, model, inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, directions: torch.Tensor) -> int:
        """Fit the head on the standardised inputs with `directions` [k, size] projected out. The
        projection is then folded into the head's weights, which it leaves unchanged on any input
        it saw; so the saved model is a linear head like any other and calibrates as before."""
        standardised = (inputs - model.input_mean) / model.input_std
        if len(directions):
            standardised -= (standardised @ directions.T) @ directions
        iterations = fit_linear_head(model.classifier, standardised, targets, weights, self.hp.l2, self.hp.max_iterations)
        with torch.no_grad():
            model.classifier.weight -= (model.classifier.weight @ directions.T) @ directions
        return iterations

    def predict_proba(self, model: whisper.EmotionWhisper, dataset: datasets.Dataset) -> np.ndarray:
        """Class probabilities from the clips' cached clean statistics where present, else from
        the audio.

        Both give the saved model's answer on the clip (tests/test_whisper.py checks the two
        agree); the cache saves a second encoder pass over every test clip.
        """
        if STATISTICS_COLUMN not in dataset.column_names:
            return model.predict_proba(audio_arrays(dataset))
        return model.probabilities(_statistics(dataset)[:, 0])

    def representations(self, dataset: datasets.Dataset) -> list[dict[str, np.ndarray]] | None:
        """`EmotionWhisper.represent` of every clip, read from its cached clean statistics (the
        same numbers, as `predict_proba` uses them); None before `prepare`."""
        if STATISTICS_COLUMN not in dataset.column_names:
            return None
        return [{whisper.REPRESENTATION: row[None]} for row in _statistics(dataset)[:, 0]]

    def _new_model(self, labels: list[str]) -> whisper.WhisperForEmotionRecognition:
        try:
            return whisper.new_classifier(self.base_folder, labels, self.hp.window_s, self.hp.trim_silence)
        except ValueError as error:
            raise SERError(f"{self.hp.base}: {error}") from None


def speaker_directions(standardised: np.ndarray, speakers: np.ndarray, emotions: np.ndarray, groups: np.ndarray, count: int) -> np.ndarray:
    """[at most `count`, size]: orthonormal directions in which the speakers' voices differ most.

    A speaker's offset is the mean over their clips of (clip - the mean of their group's (corpus's)
    clips of that emotion), so it holds their voice and room rather than their mix of emotions;
    the directions are the offsets' principal axes, every speaker weighted the same
    (nuisance-attribute projection). There are at most as many as speakers less one.
    """
    if count == 0:
        return np.zeros((0, standardised.shape[1]), dtype=np.float32)
    residuals = np.empty_like(standardised)
    for group in np.unique(groups):
        for emotion in np.unique(emotions[groups == group]):
            cell = (groups == group) & (emotions == emotion)
            residuals[cell] = standardised[cell] - standardised[cell].mean(0)
    offsets = np.stack([residuals[speakers == speaker].mean(0) for speaker in np.unique(speakers)])
    axes = np.linalg.svd(offsets - offsets.mean(0), full_matrices=False)[2]
    return axes[: min(count, len(offsets) - 1)].astype(np.float32)


def fit_linear_head(
    classifier: torch.nn.Linear, standardised: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, l2: float, max_iterations: int
) -> int:
    """Minimise the row-weighted cross-entropy plus l2/2 |W|^2 with full-batch L-BFGS, in place;
    the iterations it took."""
    torch.nn.init.zeros_(classifier.weight)  # the problem is convex: any start converges, zeros are reproducible
    torch.nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=max_iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        losses = torch.nn.functional.cross_entropy(classifier(standardised), targets, reduction="none")
        value = (losses * weights).sum() / weights.sum()
        value = value + 0.5 * l2 * classifier.weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return optimizer.state[classifier.weight]["n_iter"]


def _statistics(dataset: datasets.Dataset) -> np.ndarray:
    if STATISTICS_COLUMN not in dataset.column_names:
        raise SERError("The Whisper family trains on prepared datasets: call WhisperFamily.prepare first.")
    return np.asarray(dataset.with_format("numpy")[STATISTICS_COLUMN], dtype=np.float32)


def from_args(args: argparse.Namespace) -> WhisperFamily:
    """The family `python -m ser_train train whisper` asked for."""
    overrides = {name: getattr(args, name) for name in ("base", "window_s", "l2", "calibrated_views", "augmented_views", "cropped_views", "channel_views", "speaker_directions") if getattr(args, name, None) is not None}
    return WhisperFamily(WhisperHyperparameters(seed=args.seed, **overrides))
