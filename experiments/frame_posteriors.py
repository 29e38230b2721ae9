"""Issue #18 probe: does a head that judges every encoder frame, its answers averaged over the clip,
carry to a corpus it never heard better than one head on the clip's pooled statistics?

    PYTHONPATH=. .venv/bin/python experiments/frame_posteriors.py   # after top_layer_adaptation.py cache
    PYTHONPATH=. .venv/bin/python experiments/frame_posteriors.py --every-layer --stride 2

A clip's mean and spread over its frames carry the clip as a whole: its speaker, room and length
as well as its emotion. A head on single frames (each labelled with its clip's emotion) sees none
of that at once, and learns from a hundred times more rows. On the top-layer probe's cache (every
clip's trimmed speech through the bundled model's encoder once; hidden state 5, the last layer's
input, kept frame by frame): the linear head `train whisper` fits (standardised inputs, L2 0.03,
full-batch L-BFGS), on frames weighted so that every clip counts as one row weighted as
`train whisper` weighs it; a clip's answer is the softmax of its frames' mean log-probabilities.
`--every-layer` puts every hidden state's frames (0-6) side by side instead, from one more encoder
pass cached in runs/probe/ (3.4 GB); `--stride n` keeps every n-th frame, to fit in memory.
Against the same head on the same hidden states' pooled statistics (mean and spread), leaving each
corpus out in turn. Settings fixed beforehand; the mean of the frames' probabilities is printed
beside, not chosen between. A probe behind a figure in docs/GENERALISATION.md, not part of the
package.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from experiments.layer_choice import frozen_statistics, held_out_scores, scores_on
from experiments.top_layer_adaptation import ADAPTED, CORPORA, encoded, fit_head, load_cache
from ser_train.corpora import load_corpora
from ser_train.training.cnn import balanced_row_weights

HIDDEN_STATE = ADAPTED  # the top-layer cache's frames: hidden state 5 of 0-6
EVERY_LAYER = Path("runs/probe/every_layer_frames.npy")  # [frames, 7 hidden states, 512], float16


def cache_every_layer(data: dict) -> None:
    """Every clip's frames of hidden states 0-6, in the top-layer cache's clip and frame order."""
    frames = np.lib.format.open_memmap(EVERY_LAYER, mode="w+", dtype=np.float16, shape=(int(data["lengths"].sum()), 7, 512))
    written = 0
    for hidden, n in encoded(load_corpora(CORPORA)):
        stacked = torch.stack(hidden, dim=2).half().numpy()  # [clips, window frames, 7, 512]
        for clip, length in enumerate(n.tolist()):
            frames[written : written + length] = stacked[clip, :length]
            written += length
    assert written == len(frames), "the encoder gave other frame counts than the top-layer cache"
    frames.flush()


def every_nth(frames: np.ndarray, lengths: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every `stride`-th frame of each clip, from its first, and the clips' new lengths."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    kept = np.concatenate([np.arange(offsets[i], offsets[i + 1], stride) for i in range(len(lengths))])
    return frames[kept], -(-lengths // stride)


def frame_answers(frames: np.ndarray, lengths: np.ndarray, data: dict, training_corpora: list[str], test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(geometric, arithmetic) mean over each test clip's frames of the frame head's probabilities."""
    clip_of_frame = np.repeat(np.arange(len(lengths)), lengths)
    train = np.flatnonzero(np.isin(data["corpus"], training_corpora))
    clip_weights = balanced_row_weights(data["emotion"][train], data["corpus"][train]) / lengths[train]
    weight_of_clip = np.zeros(len(lengths))
    weight_of_clip[train] = clip_weights
    training_frames = np.flatnonzero(np.isin(clip_of_frame, train))
    inputs = torch.from_numpy(frames[training_frames].astype(np.float32))
    targets = torch.from_numpy(data["emotion"][clip_of_frame[training_frames]]).long()
    weights = torch.from_numpy(weight_of_clip[clip_of_frame[training_frames]]).float()
    head, mean, std = fit_head(inputs, targets, weights, len(data["labels"]))
    del inputs
    geometric, arithmetic = [], []
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    with torch.inference_mode():
        for clip in test:
            log_probabilities = head((torch.from_numpy(frames[offsets[clip] : offsets[clip + 1]].astype(np.float32)) - mean) / std).log_softmax(-1)
            geometric.append(log_probabilities.mean(0).softmax(-1).numpy())
            arithmetic.append(log_probabilities.exp().mean(0).numpy())
    return np.stack(geometric), np.stack(arithmetic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=1, help="keep every n-th frame of a clip")
    parser.add_argument("--every-layer", action="store_true", help="frames of hidden states 0-6 side by side (one more encoder pass, 3.4 GB) instead of hidden state 5")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data, _ = load_cache()
    if args.every_layer:
        if not EVERY_LAYER.exists():
            cache_every_layer(data)
        layers = range(7)
        frames = np.load(EVERY_LAYER, mmap_mode="r")
    else:
        layers, frames = [HIDDEN_STATE], data["frames"]
    frames, lengths = every_nth(frames, data["lengths"], args.stride)
    frames = frames.reshape(len(frames), -1)
    pooled = frozen_statistics(data, [])  # computed by layer_choice.py; the frames are not needed then
    corpora = sorted(set(data["corpus"].tolist()))
    results = []
    for corpus in corpora:
        training_corpora = [c for c in corpora if c != corpus]
        test = np.flatnonzero(data["corpus"] == corpus)
        geometric, arithmetic = frame_answers(frames, lengths, data, training_corpora, test)
        row = {
            "corpus": corpus,
            "pooled statistics": held_out_scores(pooled, data, corpus, layers, training_corpora),
            "frames, mean log-probability": scores_on(corpus, geometric, data, training_corpora),
            "frames, mean probability": scores_on(corpus, arithmetic, data, training_corpora),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    for name in results[0]:
        if name != "corpus":
            print(f"{name}: mean UA {np.mean([row[name]['ua'] for row in results]):.3f}")


if __name__ == "__main__":
    main()
