"""Convert OpenAI whisper-base's encoder from per-tensor .npy files to a Hugging Face model folder.

The source is a folder of fp16 arrays, one per tensor of `transformers`' `WhisperEncoder`, named
after its state-dict key with dots as underscores (`layers.0.self_attn.q_proj.weight` is
`layers_0_self_attn_q_proj_weight_fp16.npy`). The output is a standard folder that
`AutoModelForAudioClassification.from_pretrained` starts a classifier from:

    config.json                 whisper-base's configuration (model_type "whisper")
    preprocessor_config.json    whisper-base's log-mel feature extractor
    model-00001-of-00002.safetensors   every encoder tensor but the positional table (fp16)
    model-00002-of-00002.safetensors   the positional table, 1500 x 512 (fp16)
    model.safetensors.index.json
    README.md                   where the weights came from, and their licence

The positional table has a shard of its own because a classifier cuts it to its shorter window
(the table is sinusoidal, so the cut rows are exactly the ones a shorter model would have): a
classifier trained on the frozen encoder then stores the first shard byte for byte, and git (or
Git LFS on a Space) keeps one copy of the encoder for both folders.

    python -m ser_train.models.whisper_conversion SOURCE_DIR models/whisper-base-encoder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ser_train.errors import SERError

SOURCE_SUFFIX = "_fp16.npy"
STATE_PREFIX = "encoder."  # WhisperForAudioClassification's (and WhisperModel's) name for it
POSITIONS_KEY = "encoder.embed_positions.weight"
ENCODER_SHARD = "model-00001-of-00002.safetensors"
POSITIONS_SHARD = "model-00002-of-00002.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SAFETENSORS_METADATA = {"format": "pt"}  # what transformers writes, so both load the same way

# openai/whisper-base (github.com/openai/whisper, model card "base"): 74 M parameters in all,
# of which the encoder is 20,590,592.
WHISPER_BASE = {
    "d_model": 512,
    "encoder_layers": 6,
    "encoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "decoder_layers": 6,
    "decoder_attention_heads": 8,
    "decoder_ffn_dim": 2048,
    "num_mel_bins": 80,
    "max_source_positions": 1500,  # 30 s of audio: 3000 mel frames of 10 ms, halved by conv2
    "max_target_positions": 448,
    "vocab_size": 51865,
}
WHISPER_BASE_ENCODER_PARAMETERS = 20_590_592

SOURCE_README = """---
license: mit
library_name: transformers
tags: [whisper, audio, speech]
---
# whisper-base encoder (converted)

The encoder of OpenAI's whisper-base (Radford et al., 2022, "Robust Speech Recognition via
Large-Scale Weak Supervision"; https://github.com/openai/whisper, MIT licence), {parameters:,}
parameters, stored in fp16 as the source stores them. Only the encoder is here (no decoder), as
`transformers` `WhisperEncoder` tensors under the `encoder.` prefix.

Source: the per-tensor fp16 arrays in the public repository Unicorn-Commander/Unicorn-Amanuensis,
commit ca8f7956e659abddb68dca73ef1c9a223c37a723, folder xdna2/weights/whisper_base_fp16/, converted
with `python -m ser_train.models.whisper_conversion`. The test
`tests/test_whisper.py::test_converted_encoder_reproduces_the_reference_output` checks it against
hidden states that repository saved from `WhisperModel.from_pretrained("openai/whisper-base")`.
"""


def whisper_base_config():
    from transformers import WhisperConfig

    # float32 compute: the fp16 storage only halves the files, and fp16 arithmetic is slow and
    # lossy on CPUs.
    return WhisperConfig(**WHISPER_BASE, dtype="float32")


def whisper_feature_extractor(window_s: int = 30):
    """Whisper's log-mel front end (80 bins, 25 ms windows, 10 ms hop) for a `window_s` input."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=WHISPER_BASE["num_mel_bins"], chunk_length=window_s)


def read_source(source: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """The tensors named `keys` (encoder state-dict keys) from the .npy files in `source`."""
    files = {path.name for path in source.glob(f"*{SOURCE_SUFFIX}")}
    wanted = {key: key.removeprefix(STATE_PREFIX).replace(".", "_") + SOURCE_SUFFIX for key in keys}
    missing = sorted(set(wanted.values()) - files)
    unexpected = sorted(files - set(wanted.values()))
    if missing or unexpected:
        raise SERError(
            f"{source} is not the whisper-base encoder: missing {missing[:3] or 'nothing'}, "
            f"unexpected {unexpected[:3] or 'nothing'}."
        )
    return {key: torch.from_numpy(np.load(source / name, allow_pickle=False)) for key, name in wanted.items()}


def convert(source: str | Path, output: str | Path) -> Path:
    """Write the model folder described in the module docstring; return its path."""
    from safetensors.torch import save_file
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    source, output = Path(source), Path(output)
    config = whisper_base_config()
    expected = {STATE_PREFIX + key: value for key, value in WhisperEncoder(config).state_dict().items()}
    tensors = read_source(source, list(expected))
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise SERError(f"{key}: shape {tuple(value.shape)} in {source}, whisper-base has {tuple(expected[key].shape)}.")
    total = sum(value.numel() for value in tensors.values())
    if total != WHISPER_BASE_ENCODER_PARAMETERS:
        raise SERError(f"{source} holds {total:,} parameters; whisper-base's encoder has {WHISPER_BASE_ENCODER_PARAMETERS:,}.")

    output.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(output)
    whisper_feature_extractor().save_pretrained(output)
    positions = {POSITIONS_KEY: tensors.pop(POSITIONS_KEY).contiguous()}
    save_file(tensors, output / ENCODER_SHARD, metadata=SAFETENSORS_METADATA)
    save_file(positions, output / POSITIONS_SHARD, metadata=SAFETENSORS_METADATA)
    write_index(output, {ENCODER_SHARD: tensors, POSITIONS_SHARD: positions})
    (output / "README.md").write_text(SOURCE_README.format(parameters=total))
    return output


def write_index(folder: Path, shards: dict[str, dict[str, torch.Tensor]]) -> None:
    """The safetensors index transformers reads to find each tensor's shard."""
    weight_map = {key: shard for shard, tensors in shards.items() for key in sorted(tensors)}
    total_size = sum(t.numel() * t.element_size() for tensors in shards.values() for t in tensors.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="folder of *_fp16.npy encoder tensors")
    parser.add_argument("output", help="model folder to write")
    args = parser.parse_args(argv)
    print(f"Wrote {convert(args.source, args.output)}")


if __name__ == "__main__":
    main()
