"""Issue #18 probe: adapt Whisper-base's top encoder layer on cached lower-layer output, leave one
corpus out (RAVDESS, TESS, EMOVO).

    PYTHONPATH=. .venv/bin/python experiments/top_layer_adaptation.py cache         # one encoder pass, ~600 MB
    PYTHONPATH=. .venv/bin/python experiments/top_layer_adaptation.py train [CORPUS...]  # held-out corpora (default all)

Each clip's speech (Silero VAD trim, as the shipped recipe) goes through the bundled model's 5 s
window once; kept: every layer's mean and spread up to layer 5's input (frozen), and layer 5's
input frames over the clip's own frames. Layer 5 (the last) and the final layer norm are then
trained with a linear head on the statistics of all layers, rows weighted so that every training
corpus and every emotion within it counts the same (as `train whisper`). The frozen row is the
same head on the unadapted layer: the comparison. Settings are fixed beforehand (no held-out
corpus chooses anything); every epoch is printed, the last is the figure.

A probe behind a figure in docs/GENERALISATION.md, not part of the package; it writes under runs/.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from ser_train.audio import SAMPLING_RATE
from ser_train.corpora import load_corpora
from ser_train.data import audio_arrays
from ser_train.evaluation import SharedScoring
from ser_train.models.whisper import (
    CLIPS_PER_FORWARD,
    DEFAULT_WINDOW_S,
    ENCODER_FRAMES_PER_S,
    WhisperForEmotionRecognition,
    encoder_frame_counts,
    frame_statistics,
)
from ser_train.training.cnn import balanced_row_weights
from ser_train.training.whisper import fit_linear_head
from ser_train.vad import trim_silence

DATA = "../shared/data"
CORPORA = [f"{DATA}/ravdess-opus-16k", f"{DATA}/tess-opus-16k", f"{DATA}/emovo-opus-16k"]
MODEL = "models/six-corpora-whisper-base"  # its frozen encoder and window only: those of every bundled Whisper model
CACHE = Path("runs/probe/top_layer_cache.npz")
WINDOW_FRAMES = DEFAULT_WINDOW_S * ENCODER_FRAMES_PER_S  # the bundled model's 5 s window
ADAPTED = 5  # the layer trained (whisper-base has 6: 0-5)
EPOCHS = 3
BATCH = 16
LAYER_LR = 2e-5  # the default; --layer-lr tries others
HEAD_LR = 1e-3
L2 = 0.03  # the head's penalty, as train whisper
MAX_ITERATIONS = 500  # L-BFGS iterations, as train whisper
SEED = 0
torch.set_num_threads(1)  # one process per held-out corpus, one per core


def encoded(dataset: datasets.Dataset):
    """Every clip's trimmed speech through the bundled model's window, CLIPS_PER_FORWARD at a time:
    (the encoder's hidden states 0-6 [clips, window frames, 512], each clip's own frame count)."""
    model = WhisperForEmotionRecognition.from_pretrained(MODEL, use_safetensors=True).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(MODEL)
    waveforms = [trim_silence(w) for w in audio_arrays(dataset)]
    started = time.time()
    with torch.inference_mode():
        for start in range(0, len(waveforms), CLIPS_PER_FORWARD):
            inputs = extractor(waveforms[start : start + CLIPS_PER_FORWARD], sampling_rate=SAMPLING_RATE, return_attention_mask=True, return_tensors="pt")
            yield model.encoder(inputs.input_features, output_hidden_states=True).hidden_states, encoder_frame_counts(inputs.attention_mask, WINDOW_FRAMES)
            if start % 400 == 0:
                print(f"{start}/{len(waveforms)} clips, {time.time() - started:.0f} s", flush=True)


def cache() -> None:
    dataset = load_corpora(CORPORA)
    low, frames, lengths = [], [], []
    started = time.time()
    for hidden, n in encoded(dataset):
        low.append(torch.cat([frame_statistics(h, n) for h in hidden[: ADAPTED + 1]], dim=-1).numpy())
        for clip, length in enumerate(n.tolist()):
            frames.append(hidden[ADAPTED][clip, :length].half().numpy())
            lengths.append(length)
    np.savez(
        CACHE,
        low=np.concatenate(low),
        frames=np.concatenate(frames),
        lengths=np.array(lengths),
        emotion=np.array(dataset["emotion"]),
        corpus=np.array(dataset["corpus"]),
        labels=np.array(dataset.features["emotion"].names),
    )
    print(f"cached {len(lengths)} clips in {time.time() - started:.0f} s")


def load_cache() -> tuple[dict, list[np.ndarray]]:
    """The cached arrays, and each clip's layer-5 input frames."""
    data = dict(np.load(CACHE))
    offsets = np.concatenate([[0], np.cumsum(data["lengths"])])
    return data, [data["frames"][offsets[i] : offsets[i + 1]] for i in range(len(data["lengths"]))]


class TopLayer(torch.nn.Module):
    """The adapted layer and final norm over a padded batch of cached frames -> their statistics."""

    def __init__(self, model: WhisperForEmotionRecognition):
        super().__init__()
        self.layer = copy.deepcopy(model.encoder.layers[ADAPTED])
        self.norm = copy.deepcopy(model.encoder.layer_norm)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames_n = frames.shape[1]
        padded = torch.arange(frames_n)[None] >= lengths[:, None]  # [clips, frames]
        mask = torch.zeros(len(frames), 1, frames_n, frames_n).masked_fill(padded[:, None, None, :], float("-inf"))
        out = self.layer(frames, mask)
        out = out[0] if isinstance(out, tuple) else out
        return frame_statistics(self.norm(out), lengths)


def batch_of(frames: list[np.ndarray], rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(frames[r]) for r in rows])
    batch = torch.zeros(len(rows), int(lengths.max()), frames[rows[0]].shape[1])
    for i, r in enumerate(rows):
        batch[i, : lengths[i]] = torch.from_numpy(frames[r].astype(np.float32))
    return batch, lengths


def top_statistics(top: TopLayer, frames: list[np.ndarray], rows: np.ndarray) -> torch.Tensor:
    order = rows[np.argsort([len(frames[r]) for r in rows])]  # similar lengths together: little padding
    out = {}
    with torch.inference_mode():
        for start in range(0, len(order), 32):
            chunk = order[start : start + 32]
            stats = top(*batch_of(frames, chunk))
            out.update(zip(chunk.tolist(), stats))
    return torch.stack([out[r] for r in rows.tolist()])


def fit_head(inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, classes: int, l2: float = L2) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """The linear head `train whisper` fits (standardised inputs, row-weighted cross-entropy plus
    L2, full-batch L-BFGS from zeros), and the standardisation's mean and spread."""
    mean, std = inputs.mean(0), inputs.std(0).clamp_min(1e-6)
    head = torch.nn.Linear(inputs.shape[1], classes)
    fit_linear_head(head, (inputs - mean) / std, targets, weights, l2, MAX_ITERATIONS)
    return head, mean, std


def held_out(corpus: str, data: dict, frames: list[np.ndarray], base: WhisperForEmotionRecognition, layer_lr: float) -> list[dict]:
    labels = data["labels"].tolist()
    train = np.flatnonzero(data["corpus"] != corpus)
    test = np.flatnonzero(data["corpus"] == corpus)
    targets = torch.from_numpy(data["emotion"][train]).long()
    weights = torch.from_numpy(balanced_row_weights(data["emotion"][train], data["corpus"][train])).float()
    trained_labels = [labels[e] for e in sorted(set(data["emotion"][train].tolist()))]
    low = torch.from_numpy(data["low"]).float()
    top = TopLayer(base)

    def inputs(rows: np.ndarray) -> torch.Tensor:
        return torch.cat([low[rows], top_statistics(top, frames, rows)], dim=-1)

    head, mean, std = fit_head(inputs(train), targets, weights, len(labels))
    rows = []

    test_set = datasets.Dataset.from_dict({"emotion": data["emotion"][test]}, features=datasets.Features({"emotion": datasets.ClassLabel(names=labels)}))
    scoring = SharedScoring.of(test_set, labels, trained_labels)  # as leave-one-corpus-out scores

    def score(epoch: int) -> None:
        with torch.inference_mode():
            probabilities = head((inputs(test) - mean) / std).softmax(-1).numpy()
        metrics = scoring.metrics(scoring.references, scoring.predict_ids(probabilities[scoring.kept]))
        rows.append(
            {
                "corpus": corpus,
                "layer_lr": layer_lr,
                "epoch": epoch,
                "ua": metrics["balanced_accuracy"],
                "wa": metrics["accuracy"],
                "most_predicted": metrics["most_predicted"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    score(0)
    optimizer = torch.optim.AdamW(
        [{"params": top.parameters(), "lr": layer_lr}, {"params": head.parameters(), "lr": HEAD_LR, "weight_decay": 0.0}]
    )
    generator = np.random.default_rng(SEED)
    position = {r: i for i, r in enumerate(train.tolist())}  # a clip's row in targets and weights
    for epoch in range(1, EPOCHS + 1):
        order = generator.permutation(train)
        # batches of similar lengths, in random order
        pools = [order[i : i + BATCH * 8] for i in range(0, len(order), BATCH * 8)]
        batches = []
        for pool in pools:
            pool = pool[np.argsort([len(frames[r]) for r in pool])]
            batches += [pool[i : i + BATCH] for i in range(0, len(pool), BATCH)]
        generator.shuffle(batches)
        started = time.time()
        top.train()
        for rows_in_batch in batches:
            stats = torch.cat([low[rows_in_batch], top(*batch_of(frames, rows_in_batch))], dim=-1)
            index = torch.tensor([position[r] for r in rows_in_batch.tolist()])
            loss = (torch.nn.functional.cross_entropy(head((stats - mean) / std), targets[index], reduction="none") * weights[index]).sum() / weights[index].sum()
            loss = loss + 0.5 * L2 * head.weight.pow(2).sum() * BATCH / len(train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        top.eval()
        print(f"{corpus} epoch {epoch}: {time.time() - started:.0f} s", flush=True)
        score(epoch)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["cache", "train"])
    parser.add_argument("corpora", nargs="*", help="held-out corpora to train for (default: all)")
    parser.add_argument("--layer-lr", type=float, default=LAYER_LR)
    args = parser.parse_args()
    if args.step == "cache":
        return cache()
    data, frames = load_cache()
    base = WhisperForEmotionRecognition.from_pretrained(MODEL, use_safetensors=True).eval()
    results = []
    for corpus in args.corpora or sorted(set(data["corpus"].tolist())):
        results += held_out(corpus, data, frames, base, args.layer_lr)
    name = "-".join(["top_layer", f"lr{args.layer_lr:g}", *args.corpora])
    Path(f"runs/probe/{name}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
