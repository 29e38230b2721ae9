"""The whisper-base encoder conversion: real weights against the source's reference output, and
the converter itself on a tiny random encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioClassification, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ser_train.errors import SERError
from ser_train.models import whisper_conversion
from ser_train.models.whisper_conversion import ENCODER_SHARD, POSITIONS_SHARD, convert

ROOT = Path(__file__).resolve().parent.parent
CONVERTED = ROOT / "models" / "whisper-base-encoder"
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "whisper_base_reference"


def test_converted_encoder_reproduces_the_reference_output():
    """The source repository ran `WhisperModel.from_pretrained("openai/whisper-base")`'s encoder
    (layer_norm, then the 6 layers) on a 512 x 512 hidden-state input and saved the output.

    The tolerance: the reference and this run sum in different orders in float32, which moves
    the output by a few 1e-6 of its scale (5e-5 of 26 here); a 1e-4 share of the scale leaves
    room for other CPUs and is still far below what one wrong tensor does (the layer norm
    applied last instead of first: an error of 20).
    """
    model = AutoModelForAudioClassification.from_pretrained(CONVERTED, num_labels=8)
    encoder = model.encoder.eval()
    hidden = torch.from_numpy(np.load(REFERENCE / "input.npy"))[None]
    expected = np.load(REFERENCE / "output_pytorch.npy")

    with torch.inference_mode():
        hidden = encoder.layer_norm(hidden)
        for layer in encoder.layers:
            hidden = layer(hidden, None)
    output = hidden[0].numpy()

    assert model.dtype == torch.float32
    assert sum(p.numel() for p in encoder.parameters()) == whisper_conversion.WHISPER_BASE_ENCODER_PARAMETERS
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def tiny_config() -> WhisperConfig:
    return WhisperConfig(
        d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
        num_mel_bins=80, max_source_positions=1500, vocab_size=100, dtype="float32",
    )  # fmt: skip


def write_source(folder: Path, encoder: WhisperEncoder) -> None:
    """Write an encoder as the source stores whisper-base: one fp16 .npy per tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in encoder.state_dict().items():
        np.save(folder / f"{key.replace('.', '_')}_fp16.npy", value.half().numpy())


def test_convert_writes_a_folder_transformers_loads_tensor_for_tensor(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = tiny_config()
    encoder = WhisperEncoder(config)
    write_source(tmp_path / "source", encoder)
    monkeypatch.setattr(whisper_conversion, "whisper_base_config", lambda: WhisperConfig(**config.to_dict()))
    monkeypatch.setattr(whisper_conversion, "WHISPER_BASE_ENCODER_PARAMETERS", sum(p.numel() for p in encoder.parameters()))

    folder = convert(tmp_path / "source", tmp_path / "converted")

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["encoder.embed_positions.weight"] == POSITIONS_SHARD
    assert index["weight_map"]["encoder.conv1.weight"] == ENCODER_SHARD
    loaded = AutoModelForAudioClassification.from_pretrained(folder, num_labels=8).encoder
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.half().float(), rtol=0, atol=0, msg=key)
    assert "MIT" in (folder / "README.md").read_text()


def test_convert_refuses_a_folder_that_is_not_the_encoder(tmp_path):
    write_source(tmp_path / "source", WhisperEncoder(tiny_config()))
    with pytest.raises(SERError, match="is not the whisper-base encoder"):
        convert(tmp_path / "source", tmp_path / "converted")
    assert not (tmp_path / "converted").exists()
