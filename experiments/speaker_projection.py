"""Issue #18 probe: does removing the directions in which the training speakers differ carry the
head to voices it never heard?

    PYTHONPATH=. .venv/bin/python experiments/speaker_projection.py   # after layer_choice.py's cache

TESS's two speakers come out "disgust" whatever the recipe, and centring each speaker on their
own clips lifts every held-out corpus: much of what misleads the head is who is speaking. Here
that is removed without any clip of the test speaker. On every layer's frozen statistics
(`layer_choice.frozen_statistics`), standardised by the training clips: the top K directions in
which the training speakers differ (`ser_train.training.whisper.speaker_directions`: each
speaker's offset from their corpus's mean clip of each emotion, its principal axes; at most one
less than the training speakers, 7 when RAVDESS is held out) are projected out of every clip,
training and test alike, and the head `train whisper` fits is trained on what remains
(nuisance-attribute projection, as speaker verification uses it for channels). K = 10 is the figure, fixed
beforehand; K = 5 and 20 are printed beside it, not chosen between. Leave one corpus out, clean
trimmed clips. A probe behind a figure in docs/GENERALISATION.md, not part of the package.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from experiments.layer_choice import frozen_statistics, held_out_scores
from experiments.top_layer_adaptation import CORPORA, load_cache
from ser_train.corpora import load_corpora
from ser_train.training.whisper import speaker_directions

DIRECTIONS = (10, 5, 20)  # the first is the figure
EVERY_LAYER = range(7)


def without_speaker_directions(statistics: np.ndarray, train: np.ndarray, speakers: np.ndarray, data: dict, k: int) -> np.ndarray:
    """Every clip's standardised statistics with the training speakers' top `k` directions removed."""
    mean, std = statistics[train].mean(0), statistics[train].std(0) + 1e-6
    standardised = (statistics - mean) / std
    directions = speaker_directions(standardised[train], speakers[train], data["emotion"][train], data["corpus"][train], k)
    return (standardised - (standardised @ directions.T) @ directions).astype(np.float32)


def main() -> None:
    torch.set_num_threads(2)
    data, _ = load_cache()
    statistics = frozen_statistics(data, [])
    speakers = np.array(load_corpora(CORPORA)["speaker"])
    corpora = sorted(set(data["corpus"].tolist()))
    results = {"none": [], **{k: [] for k in DIRECTIONS}}
    for corpus in corpora:
        training_corpora = [c for c in corpora if c != corpus]
        train = np.isin(data["corpus"], training_corpora)
        results["none"].append(held_out_scores(statistics, data, corpus, EVERY_LAYER, training_corpora))
        for k in DIRECTIONS:
            projected = without_speaker_directions(statistics, train, speakers, data, k)
            results[k].append(held_out_scores(projected, data, corpus, EVERY_LAYER, training_corpora))
        print(corpus, json.dumps({str(k): rows[-1] for k, rows in results.items()}), flush=True)
    for k, rows in results.items():
        print(f"directions removed {k}: mean UA {np.mean([row['ua'] for row in rows]):.3f}, "
              + ", ".join(f"{c} {row['ua']:.3f} ({row['most_predicted']['emotion']} {row['most_predicted']['share']:.0%})" for c, row in zip(corpora, rows)))


if __name__ == "__main__":
    main()
