"""Whisper encoders as emotion classifiers: a frozen encoder, statistics pooling, a linear head.

    log-mel frames of the clip, padded to a short window (DEFAULT_WINDOW_S)
      -> Whisper's encoder, frozen: its input embeddings and each layer's output
      -> per layer, the mean and standard deviation over the clip's own frames (not the padding)
      -> per-dimension standardisation with the training clips' statistics (buffers)
      -> one linear layer to the emotions (multinomial logistic regression)

Why not transformers' own `WhisperForAudioClassification`: its head mixes the layers with one
weight each and averages over the whole window, padding included. Trained on the same cached
encoder output and the same actor-disjoint RAVDESS folds, it reached UA 0.706; a linear model on
every layer's mean and spread over real frames reaches 0.76-0.79 (README, Whisper section), and
emotion lives in how frames vary as much as in their average. The model stays a transformers
model (`WhisperPreTrainedModel`, config.json, sharded safetensors, `from_pretrained`); its
`model_type` is our own ("whisper-emotion"), so stock transformers refuses the folder with an
"unrecognised model type" instead of loading it under a random stock head. Importing this module
registers the type, after which `AutoModelForAudioClassification` and
`pipeline("audio-classification", model=DIR)` load it, with no remote code.

Whisper hears 30-second windows: 3000 log-mel frames of 10 ms, halved to 1500 encoder frames by
its second convolution's stride. An utterance of 3-4 s would be mostly padding, so the window is
cut to `window_s` seconds: the feature extractor pads to that length and the encoder's positional
table keeps its first `window_s * ENCODER_FRAMES_PER_S` rows. The table is sinusoidal, so the cut
rows are exactly what a model built for the shorter window has.

Speaker calibration (`ser_train.calibration`) works on the pooled statistics: a per-dimension
affine map of a speaker's clips. The model stores the training speakers' statistics as buffers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForAudioClassification, WhisperConfig
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperPreTrainedModel

from ser_train import calibration as calibration_lib
from ser_train.audio import SAMPLING_RATE
from ser_train.calibration import Calibration
from ser_train.confidence import TEMPERATURE_KEY
from ser_train.vad import trim_silence
from ser_train.models.whisper_conversion import (  # the converted base's layout, which classifiers share
    ENCODER_SHARD,
    INDEX_FILE,
    POSITIONS_KEY,
    POSITIONS_SHARD,
    SAFETENSORS_METADATA,
    write_index,
)
from ser_train.precision import FP32, INT8, checked_precision

MODEL_TYPE = "whisper"  # what a base encoder's config.json says
EMOTION_MODEL_TYPE = "whisper-emotion"  # what a trained classifier's config.json says
DEFAULT_BASE = str(Path(__file__).resolve().parent.parent.parent / "models" / "whisper-base-encoder")
DEFAULT_BASE_HUB_ID = "openai/whisper-base"  # where DEFAULT_BASE's weights come from
# Seconds. RAVDESS clips last 3-5 s; each second of window costs the encoder about 0.1 s of CPU
# per clip here. Longer speech is cut at the window's end.
DEFAULT_WINDOW_S = 5
ENCODER_FRAMES_PER_S = 50  # 100 mel frames per second, halved by the encoder's second convolution
HEAD_SHARD = POSITIONS_SHARD  # a classifier's second shard: the cut positional table and the head
MIN_VARIANCE = 1e-12  # floor of a frame variance, far under any real one (float32 hidden states)
CLIPS_PER_FORWARD = 8  # bounds memory: 8 clips x 7 layers x 250 frames x 512 floats
REPRESENTATION = "encoder_statistics"  # the name calibrations give the pooled statistics
# config.json: the model pools over each clip's speech only. The share of silence around a clip
# differs between corpora (RAVDESS clips hold about a second of it, TESS's much less), and
# statistics over every frame learned that share as part of the emotion: measured leaving each
# corpus out, trimming raised the mean UA by 4 points (docs/GENERALISATION.md).
TRIM_SILENCE_KEY = "trim_silence"


class WhisperEmotionConfig(WhisperConfig):
    model_type = EMOTION_MODEL_TYPE


class WhisperForEmotionRecognition(WhisperPreTrainedModel):
    """Whisper's encoder under a linear classifier of per-layer frame statistics."""

    config_class = WhisperEmotionConfig
    # Files saved before the prompted moods had statistics lack them (see fill_earlier_population).
    _keys_to_ignore_on_load_missing = [r"population_mood_(mean|std)"]

    def __init__(self, config: WhisperEmotionConfig):
        super().__init__(config)
        self.encoder = WhisperEncoder(config)
        size = statistics_size(config)
        self.register_buffer("input_mean", torch.zeros(size))
        self.register_buffer("input_std", torch.ones(size))
        calibration_lib.register_population(self, size)
        self.classifier = nn.Linear(size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """Logits of log-mel windows; `attention_mask` (the feature extractor's) marks the clip's
        own frames; without it the whole window counts as the clip. The logits are divided by the
        temperature training measured (`ser_train.confidence`), so that a transformers pipeline
        gives the probabilities `ser_train.inference.load_model` gives."""
        temperature = getattr(self.config, TEMPERATURE_KEY, 1.0)
        logits = self.classify(self.encoder_statistics(input_features, attention_mask)) / temperature
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def encoder_statistics(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """[clips, statistics_size]: each layer's mean and standard deviation over real frames."""
        hidden = torch.stack(self.encoder(input_features, output_hidden_states=True).hidden_states, dim=1)
        clips, _, frames, _ = hidden.shape  # [clips, layers, frames, dim]
        if attention_mask is None:
            lengths = torch.full((clips,), frames, device=hidden.device)
        else:
            lengths = encoder_frame_counts(attention_mask, frames)
        return frame_statistics(hidden, lengths).flatten(1)

    def classify(self, statistics: torch.Tensor) -> torch.Tensor:
        """The untempered logits of pooled statistics."""
        return self.classifier((statistics - self.input_mean) / self.input_std)

    def population(self) -> dict[str, calibration_lib.PopulationStatistics]:
        return {REPRESENTATION: calibration_lib.read_population(self)}


def encoder_frame_counts(attention_mask: torch.Tensor, frames: int) -> torch.Tensor:
    """[clips]: how many of the window's `frames` encoder frames are each clip's own.

    The extractor's mask has one value per mel frame when asked for explicitly, one per sample
    when its settings ask (as in a pipeline): either way the clip's share of the window, rounded
    up to whole encoder frames."""
    window = attention_mask.shape[-1]
    return ((attention_mask.long().sum(dim=-1) * frames + window - 1) // window).clamp(1, frames)


def frame_statistics(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation over each clip's first `lengths` frames, concatenated.

    `hidden` is [clips, ..., frames, dim] (frames second to last, e.g. [clips, layers, frames,
    dim]); the result is [clips, ..., 2 * dim]. The variance is floored before its square root so
    that the spread has a finite gradient where anything trains through it."""
    frames = hidden.shape[-2]
    mask = (torch.arange(frames, device=hidden.device) < lengths[:, None]).to(hidden.dtype)
    mask = mask.view(mask.shape[0], *[1] * (hidden.dim() - 3), frames, 1)
    count = lengths.to(hidden.dtype).view(-1, *[1] * (hidden.dim() - 2))
    mean = (hidden * mask).sum(dim=-2) / count
    variance = ((hidden - mean.unsqueeze(-2)) ** 2 * mask).sum(dim=-2) / count
    return torch.cat([mean, variance.clamp_min(MIN_VARIANCE).sqrt()], dim=-1)


def statistics_size(config: WhisperConfig) -> int:
    """Mean and standard deviation of d_model dimensions for the input embeddings and each layer."""
    return (config.encoder_layers + 1) * 2 * config.d_model


AutoConfig.register(EMOTION_MODEL_TYPE, WhisperEmotionConfig)
AutoModelForAudioClassification.register(WhisperEmotionConfig, WhisperForEmotionRecognition)


def quantize_encoder(model: WhisperForEmotionRecognition) -> None:
    """Give the encoder's linear layers int8 weights, in place (torch's dynamic quantisation).

    Each weight matrix is rounded to 255 levels of one scale, and each call rounds the layer's
    input to int8 on the fly (7 bits on x86, where fbgemm keeps its sums from overflowing that
    way). The linear layers (attention projections and feed-forward) do 88 % of the encoder's
    multiply-adds; the convolutions, layer norms, attention itself and the classifier stay fp32.
    The quantisation takes about a second, so nothing is stored: every Whisper folder has an
    int8 form. `torch.ao.quantization` is deprecated in favour of torchao, whose int8 linear
    layers measured slower here when this path was chosen (2026-12-01; those figures were not
    kept); the API is kept while torch is pinned.
    """
    torch.ao.quantization.quantize_dynamic(model.encoder, {nn.Linear}, dtype=torch.qint8, inplace=True)


class EmotionWhisper:
    """A trained classifier with its feature extractor: predictions and speaker calibration
    (`ser_train.calibration.Calibratable`) from 16 kHz waveforms."""

    def __init__(self, model: WhisperForEmotionRecognition, feature_extractor):
        self.model = model.eval()
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(cls, folder: str | Path, precision: str = FP32) -> EmotionWhisper:
        """The classifier saved in `folder`, its encoder quantised to int8 if asked (see
        `ser_train.precision`); the weights are read from safetensors either way."""
        from transformers import WhisperFeatureExtractor

        model = WhisperForEmotionRecognition.from_pretrained(folder, use_safetensors=True)
        saved = json.loads((Path(folder) / INDEX_FILE).read_text())["weight_map"]
        calibration_lib.fill_earlier_population(model, calibration_lib.LATER_POPULATION_KEYS - set(saved))
        if checked_precision(precision) == INT8:
            quantize_encoder(model)
        return cls(model, WhisperFeatureExtractor.from_pretrained(folder))

    def statistics(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """[clips, statistics_size] float32: the representation the classifier and calibration use,
        of each clip's speech only when the model was trained so (config `trim_silence`)."""
        if getattr(self.model.config, TRIM_SILENCE_KEY, False):
            waveforms = [trim_silence(waveform) for waveform in waveforms]
        return self.pooled_statistics(waveforms)

    def pooled_statistics(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """`statistics` of the waveforms as they are (training trims before it augments)."""
        rows = []
        with torch.inference_mode():
            for start in range(0, len(waveforms), CLIPS_PER_FORWARD):
                inputs = self.feature_extractor(
                    list(waveforms[start : start + CLIPS_PER_FORWARD]),
                    sampling_rate=SAMPLING_RATE,
                    return_attention_mask=True,
                    return_tensors="pt",
                ).to(self.model.device)
                statistics = self.model.encoder_statistics(inputs.input_features.to(self.model.dtype), inputs.attention_mask)
                rows.append(statistics.float().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, statistics_size(self.model.config)), np.float32)

    def probabilities(self, statistics: np.ndarray, calibration: Calibration | None = None) -> np.ndarray:
        """Class probabilities [clips, labels] of pooled statistics, calibrated if asked."""
        if calibration is not None:
            calibration.check_model(calibration_lib.statistics_fingerprint(self.model.population()))
            statistics = calibration.apply(REPRESENTATION, statistics)
        with torch.inference_mode():
            logits = self.model.classify(torch.from_numpy(np.asarray(statistics, dtype=np.float32)))
        return logits.softmax(dim=-1).numpy()

    def predict_proba(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Class probabilities [clips, labels] of 16 kHz float32 mono waveforms (calibrated
        predictions go through `represent` and `predict_represented`, as EmotionModel does)."""
        return self.probabilities(self.statistics(waveforms))

    # --- Calibration (see ser_train.calibration.Calibratable) -----------------------------------

    def represent(self, waveforms: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return [{REPRESENTATION: row[None]} for row in self.statistics(waveforms)]  # one "frame" per clip

    def calibration_from(self, representations: list[dict[str, np.ndarray]], source: str, seconds: float) -> Calibration:
        return calibration_lib.calibrate(representations, self.model.population(), source, seconds)

    def predict_represented(
        self, representations: list[dict[str, np.ndarray]], calibration: Calibration | None
    ) -> np.ndarray:
        if not representations:
            return np.zeros((0, self.model.config.num_labels), np.float32)
        return self.probabilities(np.concatenate([clip[REPRESENTATION] for clip in representations]), calibration)


# --- Building from a base encoder, and saving ------------------------------------------------------


def window_feature_extractor(base_folder: str | Path, window_s: int):
    """The base's log-mel feature extractor for `window_s`-second inputs, which reports which
    frames are the clip's own (so that a stock pipeline passes that mask to the model)."""
    from transformers import WhisperFeatureExtractor

    settings = WhisperFeatureExtractor.from_pretrained(base_folder).to_dict()
    settings.update(chunk_length=window_s, return_attention_mask=True)
    for derived in ("n_samples", "nb_max_frames", "mel_filters", "feature_extractor_type"):
        settings.pop(derived, None)  # recomputed from chunk_length by the constructor
    return WhisperFeatureExtractor(**settings)


def new_classifier(base_folder: str | Path, labels: list[str], window_s: int, trim_silence: bool = False) -> WhisperForEmotionRecognition:
    """The base's encoder, cut to the window and frozen, under an untrained classifier; with
    `trim_silence`, the model hears each clip's speech only."""
    from safetensors.torch import load_file

    base_folder = Path(base_folder)
    settings = WhisperConfig.from_pretrained(base_folder).to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        settings.pop(key, None)
    positions = window_s * ENCODER_FRAMES_PER_S
    if positions > settings["max_source_positions"]:
        raise ValueError(f"A {window_s} s window needs {positions} positions; the encoder has {settings['max_source_positions']}.")
    config = WhisperEmotionConfig(
        **{
            **settings,
            "max_source_positions": positions,
            "id2label": dict(enumerate(labels)),
            "label2id": {label: index for index, label in enumerate(labels)},
            "architectures": [WhisperForEmotionRecognition.__name__],
            TRIM_SILENCE_KEY: trim_silence,
        }
    )
    model = WhisperForEmotionRecognition(config)
    encoder = {**load_file(base_folder / ENCODER_SHARD), **load_file(base_folder / POSITIONS_SHARD)}
    encoder[POSITIONS_KEY] = encoder[POSITIONS_KEY][:positions]
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if unexpected or any(key.startswith("encoder.") for key in missing):
        raise ValueError(f"{base_folder} is not a Whisper encoder in the converted layout.")
    model.encoder.requires_grad_(False)
    return model.eval()


def save_classifier(model: WhisperForEmotionRecognition, feature_extractor, output_dir: str | Path, base_folder: str | Path) -> None:
    """Write a transformers folder, sharing the frozen encoder's shard with the base.

    The base's first shard holds every encoder tensor but the positional table; it is copied byte
    for byte, so git and Git LFS store the encoder once for the base and every classifier on it.
    The second shard holds the cut positional table and the trained head.
    """
    from safetensors.torch import load_file, save_file

    output_dir, base_folder = Path(output_dir), Path(base_folder)
    encoder_shard = load_file(base_folder / ENCODER_SHARD)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    for key, frozen in encoder_shard.items():  # the shard is only shared if the encoder is unchanged
        if not torch.equal(state.pop(key).to(frozen.dtype), frozen):
            raise ValueError(f"{key} differs from the base's; the encoder must stay frozen.")
    head = {key: value.contiguous() for key, value in state.items()}
    head[POSITIONS_KEY] = head[POSITIONS_KEY].to(encoder_shard["encoder.conv1.weight"].dtype)

    output_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(output_dir)
    feature_extractor.save_pretrained(output_dir)
    (output_dir / "model.safetensors").unlink(missing_ok=True)  # a single-file save would win over shards
    shutil.copyfile(base_folder / ENCODER_SHARD, output_dir / ENCODER_SHARD)
    save_file(head, output_dir / HEAD_SHARD, metadata=SAFETENSORS_METADATA)
    write_index(output_dir, {ENCODER_SHARD: encoder_shard, HEAD_SHARD: head})
