"""Whisper encoders as emotion classifiers: a short input window and a frozen encoder.

The classifier is transformers' own `WhisperForAudioClassification` (a learned softmax-weighted
sum of the encoder's hidden states, a projection, the mean over time and a linear classifier),
so a trained folder loads with `pipeline("audio-classification", model=DIR)` and no custom code.

Whisper hears 30-second windows: 3000 log-mel frames of 10 ms, halved to 1500 encoder frames by
its second convolution's stride. An utterance of 3-4 s would be mostly padding, so the window is
cut to `window_s` seconds: the feature extractor pads to that length and the encoder's positional
table keeps its first `window_s * ENCODER_FRAMES_PER_S` rows. The table is sinusoidal, so the cut
rows are exactly what a model built for the shorter window has; config.json's
`max_source_positions` and preprocessor_config.json's `chunk_length` record the window, which
keeps the two in step for stock transformers.

The encoder stays frozen in training, so its output for a clip never changes: the head trains on
each clip's per-layer means over time, computed once (see `ser_train.training.whisper`). That is
exact, not an approximation: the head's projection and layer sum are linear, so they commute with
the mean over time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ser_train.audio import SAMPLING_RATE
from ser_train.models.whisper_conversion import (  # the converted base's layout, which classifiers share
    ENCODER_SHARD,
    POSITIONS_KEY,
    POSITIONS_SHARD,
    SAFETENSORS_METADATA,
    write_index,
)

MODEL_TYPE = "whisper"
DEFAULT_BASE = str(Path(__file__).resolve().parent.parent.parent / "models" / "whisper-base-encoder")
DEFAULT_BASE_HUB_ID = "openai/whisper-base"  # where DEFAULT_BASE's weights come from
# Seconds. RAVDESS clips last 3-5 s; each second of window costs the encoder about 0.1 s of CPU
# per clip here, and under mean pooling every second of padding dilutes the speech.
DEFAULT_WINDOW_S = 5
ENCODER_FRAMES_PER_S = 50  # 100 mel frames per second, halved by the encoder's second convolution
HEAD_SHARD = POSITIONS_SHARD  # a classifier's second shard: the cut positional table and the head


def window_feature_extractor(base_folder: str | Path, window_s: int):
    """The base's log-mel feature extractor, padding or truncating audio to `window_s` seconds."""
    from transformers import WhisperFeatureExtractor

    settings = WhisperFeatureExtractor.from_pretrained(base_folder).to_dict()
    settings.update(chunk_length=window_s)
    for derived in ("n_samples", "nb_max_frames", "mel_filters", "feature_extractor_type"):
        settings.pop(derived, None)  # recomputed from chunk_length by the constructor
    return WhisperFeatureExtractor(**settings)


def cut_window(model, window_s: int) -> None:
    """Make `model` (a Whisper audio classifier) take `window_s`-second inputs, in place."""
    positions = window_s * ENCODER_FRAMES_PER_S
    encoder = model.encoder
    if positions > encoder.embed_positions.num_embeddings:
        raise ValueError(f"A {window_s} s window needs {positions} positions; the encoder has {encoder.embed_positions.num_embeddings}.")
    table = encoder.embed_positions.weight.detach()[:positions].clone()
    encoder.embed_positions = torch.nn.Embedding(positions, table.shape[1])
    encoder.embed_positions.weight.data.copy_(table)
    encoder.embed_positions.requires_grad_(False)
    model.config.max_source_positions = positions



def layer_means(model, feature_extractor, waveforms: list[np.ndarray]) -> np.ndarray:
    """[clips, layers, hidden] float32: each clip's encoder hidden states averaged over the window.

    A clip longer than the window is cut at the window's end, as the feature extractor does.
    """
    inputs = feature_extractor(
        list(waveforms), sampling_rate=SAMPLING_RATE, return_tensors="pt"
    ).input_features.to(model.device, model.dtype)
    with torch.inference_mode():
        hidden_states = model.encoder(inputs, output_hidden_states=True).hidden_states
    return torch.stack([states.mean(dim=1) for states in hidden_states], dim=1).float().cpu().numpy()


def logits_from_layer_means(model, means: torch.Tensor) -> torch.Tensor:
    """The classifier's logits from [clips, layers, hidden] layer means.

    Equal to `model(input_features).logits`: WhisperForAudioClassification takes the softmax-
    weighted sum of the layers, projects every frame and averages over time, and both linear
    steps give the same result on the time average.
    """
    weights = torch.softmax(model.layer_weights, dim=-1)
    pooled = (means * weights.view(1, -1, 1)).sum(dim=1)
    return model.classifier(model.projector(pooled))


def head_parameters(model) -> list[torch.nn.Parameter]:
    """What trains: the layer weights, the projection and the classifier (the encoder is frozen)."""
    return [model.layer_weights, *model.projector.parameters(), *model.classifier.parameters()]


def save_classifier(model, feature_extractor, output_dir: str | Path, base_folder: str | Path) -> None:
    """Write a standard transformers folder, sharing the frozen encoder's shard with the base.

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
    model.config.architectures = [type(model).__name__]  # what save_pretrained records
    model.config.save_pretrained(output_dir)
    feature_extractor.save_pretrained(output_dir)
    (output_dir / "model.safetensors").unlink(missing_ok=True)  # a single-file save would win over shards
    shutil.copyfile(base_folder / ENCODER_SHARD, output_dir / ENCODER_SHARD)
    save_file(head, output_dir / HEAD_SHARD, metadata=SAFETENSORS_METADATA)
    write_index(output_dir, {ENCODER_SHARD: encoder_shard, HEAD_SHARD: head})
