"""Emotion classifiers on a pretrained speech encoder (wav2vec2, HuBERT, WavLM), all transformers.

The classifier is the head transformers ships for these encoders (`AutoModelForAudioClassification`)
with `use_weighted_layer_sum=True`: a learned softmax-weighted sum of the transformer's input and
every transformer layer's output, mean-pooled over time, projected and classified. SUPERB- and
EmoBox-style evaluations find that this beats the last layer alone on emotion, whose cues sit in
the middle layers. Attentive pooling (instead of the mean) would need modelling code of our own,
so it is left out: we keep to the built-in head so that a trained folder loads with
`pipeline("audio-classification", model=DIR)` or `AutoModelForAudioClassification`, with no
custom code and no trust_remote_code. The saved config.json records `use_weighted_layer_sum`.

A pretrained base is named by a local folder or a Hub id; only its configs and safetensors weights
are ever read (pickled .bin weights can run code when loaded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ser_train.audio import SAMPLING_RATE
from ser_train.errors import HubError, ModelError, SERError
from ser_train.hub import MODEL_FILE_PATTERNS, fetch_model_files

DEFAULT_BASE = "facebook/wav2vec2-base"
TRAIN_MODES = ("head", "encoder")

# Encoders with a convolutional feature encoder, whose audio-classification heads offer
# use_weighted_layer_sum, freeze_feature_encoder() and freeze_base_model().
SUPPORTED_MODEL_TYPES = (
    "wav2vec2",
    "wav2vec2-conformer",
    "hubert",
    "wavlm",
    "data2vec-audio",
    "unispeech",
    "unispeech-sat",
    "sew",
    "sew-d",
)

# Settings of the classification head, on top of the base's config.json.
HEAD_CONFIG = {
    "use_weighted_layer_sum": True,
    # LayerDrop skips random layers in training, and a skipped layer's output is then missing
    # from the hidden states that the weighted sum stacks (a shape error); SUPERB's weighted-sum
    # evaluations switch it off for the same reason.
    "layerdrop": 0.0,
}

# Clips per forward pass at inference, for feature extractors that mask padding (see
# `inference_batch_size`).
MASKED_INFERENCE_BATCH_SIZE = 16


def resolve_base(base: str, model_types: Sequence[str] = SUPPORTED_MODEL_TYPES) -> Path:
    """The local folder holding the pretrained encoder `base`: the folder itself or its Hub snapshot.

    Everything that could stop training later is checked here, in seconds and before any audio
    is loaded: that the model can be had at all (offline, nothing cached), that it has
    safetensors weights, that it is a supported speech encoder and that it expects 16 kHz audio.
    """
    folder = Path(base).expanduser()
    if not folder.is_dir() and base.startswith(("/", ".", "~")):  # a path, not a Hub id
        raise SERError(f"{base}: no such folder; --base needs a model folder or a Hub id.")
    if not folder.is_dir():
        try:
            folder = fetch_model_files(base, MODEL_FILE_PATTERNS)
        except HubError as error:
            raise SERError(f"--base {base}: {error}") from None
    if not (folder / "config.json").is_file():
        raise SERError(
            f"{base}: no config.json there; --base needs a model folder written by save_pretrained "
            "or `hf download`."
        )
    if not any(folder.glob("*.safetensors")):
        raise SERError(
            f"{base}: {folder} holds no safetensors weights (pickled .bin weights are refused because "
            "loading them can run code); point --base at a folder re-saved with save_pretrained."
        )
    _check_encoder(base, folder, model_types)
    return folder


def feature_extractor_of(folder: str | Path, name: str):
    """The feature extractor of model folder `folder` (`name`: the model as given), of a class
    transformers ships. Settings that name a class of the folder's own code get a ModelError:
    such code is never run (left to transformers, it would ask at a terminal whether to run it)."""
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=False)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise ModelError(
            f"{name}: its preprocessor_config.json needs code that comes with the model to read audio; "
            "code a model brings is never run here."
        ) from None


def _check_encoder(base: str, folder: Path, model_types: Sequence[str]) -> None:
    """A speech encoder of `model_types` with a 16 kHz feature extractor, or an SERError saying why not."""
    # Read as JSON, not through AutoConfig, which raises on a model type transformers does not
    # know (this project's own CNN folders, for one) before it could be named.
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):  # not JSON, or JSON that is no object
        raise SERError(f"{base}: its config.json is not a model configuration (not a JSON object).") from None
    if model_type not in model_types:
        raise SERError(
            f"{base} is a '{model_type}' model; --base needs a speech encoder of the type "
            f"{', '.join(model_types)}."
        )
    if not (folder / "preprocessor_config.json").is_file():
        raise SERError(
            f"{base} has no feature extractor settings (preprocessor_config.json); save the base's "
            "feature extractor into that folder with save_pretrained."
        )
    sampling_rate = feature_extractor_of(folder, base).sampling_rate
    if sampling_rate != SAMPLING_RATE:
        raise SERError(f"{base} expects {sampling_rate} Hz audio; only {SAMPLING_RATE} Hz encoders are supported.")


def load_for_training(base_folder: Path, labels: list[str], train_mode: str):
    """The pretrained encoder under a new weighted-layer-sum head for `labels`, frozen per `train_mode`."""
    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(
        base_folder,
        num_labels=len(labels),
        label2id={label: index for index, label in enumerate(labels)},
        id2label={index: label for index, label in enumerate(labels)},
        use_safetensors=True,
        trust_remote_code=False,
        **HEAD_CONFIG,
    )
    # from_pretrained leaves the new `layer_weights` as uninitialised memory for wav2vec2 and
    # WavLM (transformers 5.23 initialises it for HuBERT only), which can put all the weight on
    # one layer or make it NaN; start from the uniform mix the model's constructor intends.
    with torch.no_grad():
        model.layer_weights.fill_(1.0 / model.layer_weights.numel())
    freeze(model, train_mode)
    return model


def freeze(model, train_mode: str) -> None:
    """Stop gradients to the parts of `model` that `train_mode` keeps as pretrained.

    head:     the whole encoder is frozen; only the layer weights, projector and classifier learn.
    encoder:  the convolutional feature encoder is frozen; the transformer layers learn too.
    """
    if train_mode == "head":
        model.freeze_base_model()
    else:
        model.freeze_feature_encoder()


def inference_batch_size(feature_extractor) -> int:
    """Clips per forward pass when clips are heard whole: batch only where padding is masked.

    Without an attention mask (wav2vec2-base and the other group-norm checkpoints) the zeros that
    pad short clips would enter the feature encoder's normalisation and the mean over time, and a
    clip's prediction would depend on its batch-mates; one clip at a time gives exactly what
    `pipeline("audio-classification")` gives. Whisper pads every clip to its fixed window
    whatever the batch, so its batches are safe too.
    """
    safe = feature_extractor.return_attention_mask or has_fixed_window(feature_extractor)
    return MASKED_INFERENCE_BATCH_SIZE if safe else 1


def has_fixed_window(feature_extractor) -> bool:
    """Whisper's extractor pads (or cuts) every clip to one window length, `n_samples`."""
    return getattr(feature_extractor, "n_samples", None) is not None


class EmotionWav2Vec2:
    """A trained audio-classification model and its feature extractor, used together."""

    def __init__(self, model, feature_extractor):
        self.model = model
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(cls, folder: str | Path, name: str | None = None) -> EmotionWav2Vec2:
        """Load a folder written by training (config.json, model.safetensors, preprocessor_config.json);
        `name`, the model as given, names it in errors."""
        from transformers import AutoModelForAudioClassification

        feature_extractor = feature_extractor_of(folder, name or str(folder))
        model = AutoModelForAudioClassification.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        return cls(model, feature_extractor)

    @property
    def labels(self) -> list[str]:
        return [self.model.config.id2label[index] for index in range(self.model.config.num_labels)]

    def predict_proba(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities [N, num_labels] for 16 kHz mono float32 waveforms, each heard whole."""
        self.model.eval()
        batch_size = inference_batch_size(self.feature_extractor)
        probabilities = []
        with torch.inference_mode():
            for start in range(0, len(waveforms), batch_size):
                inputs = self.feature_extractor(
                    list(waveforms[start : start + batch_size]),
                    sampling_rate=self.feature_extractor.sampling_rate,
                    padding="max_length" if has_fixed_window(self.feature_extractor) else True,
                    return_tensors="pt",
                ).to(self.model.device)
                logits = self.model(**inputs).logits
                probabilities.append(logits.float().softmax(dim=-1).cpu().numpy())
        return np.concatenate(probabilities)
