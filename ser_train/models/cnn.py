"""`EmotionCNN`: a small multi-scale 1-D CNN over handcrafted frame-level features.

    features [clips, frames, FEATURE_DIM]  (ser_train.features, silence-trimmed, 100 frames/s)
      -> per-dimension standardisation with training-split statistics (buffers in the weights)
      -> strided convolution stem (50 frames/s)
      -> residual multi-scale blocks: parallel kernels of 3, 5 and 9 frames, i.e. 60-180 ms,
         the span of a phone to a syllable; a halving of the frame rate after the first block
      -> attentive statistics pooling: attention-weighted mean and standard deviation over time
      -> two-layer classifier

Clips of any length are batched by zero padding; every layer re-zeroes the padded frames and
the pooling ignores them, so a clip's probabilities do not depend on what it is batched with.

Saved in Hub format by `huggingface_hub.PyTorchModelHubMixin`: config.json holds the
constructor arguments (`model_type`, `labels`, `feature_config`, architecture sizes) and
model.safetensors the weights and normalisation statistics.

Speaker calibration (`ser_train.calibration`) maps a speaker's raw frame features onto the
training speakers' population before the standardisation; models trained since it exists store
that population's statistics as buffers too (config.json: "speaker_statistics": true).
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ser_train import calibration as calibration_lib
from ser_train.calibration import Calibration, PopulationStatistics
from ser_train.data import EMOTIONS
from ser_train.errors import ModelError, SERError
from ser_train.features import FeatureConfig, extract_features

MODEL_TYPE = "ser-cnn"
KERNEL_SIZES = (3, 5, 9)  # frames at 50 frames/s in the first block, 25 after pooling
MIN_STD = 1e-3  # a feature that never varies in training is centred, not blown up
CLIPS_PER_FORWARD = 32  # bounds memory in predict_proba
PAD_TO_MULTIPLE_OF = 32  # frames (0.32 s): batches are padded to a multiple of this length
REPRESENTATION = "features"  # the name calibrations give the CNN's frame features


class EmotionCNN(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ser_train",
    pipeline_tag="audio-classification",
    tags=["speech-emotion-recognition", "ravdess"],
):
    def __init__(
        self,
        labels: list[str] | tuple[str, ...] = EMOTIONS,
        feature_config: dict | None = None,
        channels: int = 96,
        blocks: int = 3,
        dropout: float = 0.1,
        model_type: str = MODEL_TYPE,
        speaker_statistics: bool = False,
    ):
        super().__init__()
        if model_type != MODEL_TYPE:
            raise SERError(f"This is a '{model_type}' model, not a '{MODEL_TYPE}' CNN.")
        self.labels = list(labels)
        self.feature_config = FeatureConfig.from_dict(feature_config or {})
        dim = self.feature_config.dim
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        # Older model folders have no population statistics; they predict, but cannot calibrate.
        self.speaker_statistics = speaker_statistics
        if speaker_statistics:
            calibration_lib.register_population(self, dim)
        self.stem = nn.Sequential(
            nn.Conv1d(dim, channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.blocks = nn.ModuleList(MultiScaleBlock(channels, dropout) for _ in range(blocks))
        self.pooling = AttentiveStatisticsPooling(channels)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * channels, channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(channels, len(self.labels)),
        )

    @classmethod
    def _from_pretrained(cls, *, strict: bool = True, **kwargs):
        # The mixin loads weights non-strictly by default, which would silently keep default
        # normalisation statistics if a file lacked them. It also prints "Loading weights from
        # local directory" on stdout, where `predict --json` writes its JSON, at every load: dropped.
        with contextlib.redirect_stdout(io.StringIO()):
            return super()._from_pretrained(strict=strict, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        import safetensors.torch

        missing, unexpected = safetensors.torch.load_model(model, model_file, strict=False, device=map_location)
        earlier = set(missing) & calibration_lib.LATER_POPULATION_KEYS
        if strict and (set(missing) - earlier or unexpected):
            raise ModelError(f"{model_file} does not hold this CNN's weights (missing {sorted(set(missing) - earlier)}, unexpected {sorted(unexpected)}).")
        calibration_lib.fill_earlier_population(model, earlier)
        return model

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store the training split's per-dimension feature statistics in the model."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(MIN_STD))

    def set_population(self, population: PopulationStatistics) -> None:
        """Store the training speakers' feature statistics that calibration needs."""
        if not self.speaker_statistics:
            raise ModelError("This model was built without speaker statistics (speaker_statistics=False).")
        calibration_lib.write_population(self, population)

    def population(self) -> dict[str, PopulationStatistics]:
        """{representation name: training speakers' statistics}, or ModelError for an older model."""
        if not self.speaker_statistics:
            raise ModelError(
                "This model was trained before speaker calibration existed: its folder has no "
                "training-speaker statistics. Retrain it to calibrate."
            )
        return {REPRESENTATION: calibration_lib.read_population(self)}

    def normalise(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Standardise a padded batch [clips, frames, dim]; padding stays 0 (the mean frame)."""
        standardised = (features - self.feature_mean) / self.feature_std
        return standardised * _frame_mask(lengths, features.shape[1]).transpose(1, 2)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [clips, labels] of standardised features [clips, frames, dim] and frame counts."""
        mask = _frame_mask(lengths, features.shape[1])
        x = features.transpose(1, 2) * mask  # convolutions want [clips, dim, frames]
        x, mask = _strided(self.stem(x), mask, stride=2)
        for number, block in enumerate(self.blocks):
            x = block(x, mask)
            if number == 0:
                # Max, not average: block outputs are >= 0, so a padded zero never wins and a
                # clip's last frame pools the same alone as beside padding.
                x, mask = _strided(nn.functional.max_pool1d(x, 2, ceil_mode=True), mask, stride=2)
        return self.classifier(self.pooling(x, mask))

    @torch.no_grad()
    def predict_proba_of_features(
        self, features: list[np.ndarray], calibration: Calibration | None = None
    ) -> np.ndarray:
        """Class probabilities [clips, labels] of raw (unstandardised) feature matrices."""
        self.eval()
        if calibration is not None:
            calibration.check_model(calibration_lib.statistics_fingerprint(self.population()))
            features = [calibration.apply(REPRESENTATION, matrix) for matrix in features]
        probabilities = []
        for start in range(0, len(features), CLIPS_PER_FORWARD):
            batch, lengths = pad_features(features[start : start + CLIPS_PER_FORWARD])
            logits = self(self.normalise(batch, lengths), lengths)
            probabilities.append(logits.softmax(-1).numpy())
        return np.concatenate(probabilities) if probabilities else np.zeros((0, len(self.labels)), np.float32)

    def predict_proba(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Class probabilities [clips, labels] of 16 kHz float32 mono waveforms (calibrated
        predictions go through `represent` and `predict_represented`, as EmotionModel does)."""
        return self.predict_proba_of_features(extract_features(waveforms, self.feature_config))

    # --- Calibration (see ser_train.calibration.Calibratable) -----------------------------------

    def represent(self, waveforms: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return [{REPRESENTATION: matrix} for matrix in extract_features(waveforms, self.feature_config)]

    def calibration_from(self, representations: list[dict[str, np.ndarray]], source: str, seconds: float) -> Calibration:
        return calibration_lib.calibrate(representations, self.population(), source, seconds)

    def predict_represented(
        self, representations: list[dict[str, np.ndarray]], calibration: Calibration | None
    ) -> np.ndarray:
        return self.predict_proba_of_features([clip[REPRESENTATION] for clip in representations], calibration)


class MultiScaleBlock(nn.Module):
    """Parallel convolutions of several widths, merged, added to the input (residual)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        branch_channels = channels // len(KERNEL_SIZES)
        self.branches = nn.ModuleList(
            nn.Conv1d(channels, branch_channels, kernel, padding=kernel // 2, bias=False) for kernel in KERNEL_SIZES
        )
        merged = branch_channels * len(KERNEL_SIZES)
        self.merge = nn.Sequential(
            nn.BatchNorm1d(merged),
            nn.ReLU(),
            nn.Conv1d(merged, channels, kernel_size=1, bias=False),
            nn.BatchNorm1d(channels),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        branches = torch.cat([branch(x) for branch in self.branches], dim=1)
        merged = self.merge(branches * mask)
        return self.dropout(torch.relu(x + merged) * mask)


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation over valid frames (Okabe et al., 2018).

    Emotion shows in some frames more than others (a stressed syllable, a laugh); attention
    learns which, and the standard deviation keeps how much each channel varies.
    """

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv1d(channels, hidden, kernel_size=1), nn.Tanh(), nn.Conv1d(hidden, channels, kernel_size=1)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.attention(x).masked_fill(mask == 0, float("-inf"))
        weights = scores.softmax(dim=-1)
        mean = (weights * x).sum(-1)
        variance = (weights * x.square()).sum(-1) - mean.square()
        return torch.cat([mean, variance.clamp_min(1e-6).sqrt()], dim=1)


def pad_features(features: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad [frames, dim] matrices into [clips, frames, dim] plus each clip's frame count.

    The padded length is the longest clip's rounded up to PAD_TO_MULTIPLE_OF frames, so that
    oneDNN's per-shape kernel cache (see ser_train.features) meets few distinct shapes.
    """
    lengths = torch.tensor([len(matrix) for matrix in features])
    frames = math.ceil(int(lengths.max()) / PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF
    batch = torch.zeros(len(features), frames, features[0].shape[1], dtype=torch.as_tensor(features[0]).dtype)
    for row, matrix in enumerate(features):
        batch[row, : len(matrix)] = torch.as_tensor(matrix)
    return batch, lengths


def _frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """[clips, 1, frames]: 1 on a clip's frames, 0 on its padding."""
    return (torch.arange(frames)[None, :] < lengths[:, None]).float().unsqueeze(1)


def _strided(x: torch.Tensor, mask: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """After a layer with `stride`: the mask of the output frames, and the output masked by it."""
    lengths = (mask.sum(-1).squeeze(1).long() + stride - 1) // stride
    mask = _frame_mask(lengths, x.shape[-1])
    return x * mask, mask
