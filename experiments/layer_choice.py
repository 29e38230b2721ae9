"""Issue #18 probe: which of Whisper-base's layers carry emotion to a corpus the head never heard.

    PYTHONPATH=. .venv/bin/python experiments/layer_choice.py

On the top-layer probe's cache (`experiments/top_layer_adaptation.py cache`: every clip's trimmed
speech through the bundled model's encoder once), every layer's frozen statistics (the input
embeddings and the six layers' outputs, mean and spread over the clip's own frames; computed
once, then kept in runs/probe/frozen_statistics.npy), and the head `train whisper` fits
(`fit_head`: rows weighted so every training corpus and every emotion within it counts the same)
on a set of layers, leaving each corpus out in turn. The layer sets were fixed before any was
scored. Picking the best of them by held-out UA would let the held-out corpora choose, so the
figure is the nested choice: for each held-out corpus, the set chosen by leaving out each of the
other corpora in turn (a head on one, scored on the other), then scored once on the held-out
corpus. Clean clips only (no crops, augmented or calibrated views), so the "every layer" row is
the top-layer probe's frozen row.

A probe behind a figure in docs/GENERALISATION.md, not part of the package; it writes under runs/.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import torch

from ser_train.evaluation import SharedScoring
from ser_train.models.whisper import WhisperForEmotionRecognition
from ser_train.training.cnn import balanced_row_weights

from experiments.top_layer_adaptation import MODEL, TopLayer, fit_head, load_cache, top_statistics

STATISTICS = Path("runs/probe/frozen_statistics.npy")
RESULTS = Path("runs/probe/layer_choice.json")
LAYER_SIZE = 2 * 512  # mean and spread of whisper-base's 512 dimensions
# hidden state 0 is the input embeddings, 1-6 the layers' outputs (6 after the final norm)
LAYER_SETS = {
    "every layer (0-6)": range(7),
    "embeddings and layers 1-3": range(4),
    "layers 4-6": range(4, 7),
    "layers 2-5": range(2, 6),
    **{f"layer {layer} alone": [layer] for layer in range(7)},
}


def frozen_statistics(data: dict, frames: list[np.ndarray]) -> np.ndarray:
    """[clips, 7 * LAYER_SIZE]: the cached statistics of hidden states 0-5 and the frozen top's."""
    if not STATISTICS.exists():
        base = WhisperForEmotionRecognition.from_pretrained(MODEL, use_safetensors=True).eval()
        top = top_statistics(TopLayer(base), frames, np.arange(len(frames))).numpy()
        np.save(STATISTICS, np.concatenate([data["low"], top], axis=1).astype(np.float32))
    return np.load(STATISTICS)


def held_out_scores(statistics: np.ndarray, data: dict, corpus: str, layers, training_corpora: list[str], fit=fit_head) -> dict:
    """UA and most-predicted share on `corpus` of the head fitted on `training_corpora`; `fit`, as
    `fit_head`, gives the head and the standardisation's mean and spread for the training rows
    (inputs, targets, the shipped objective's row weights, classes)."""
    columns = np.concatenate([np.arange(layer * LAYER_SIZE, (layer + 1) * LAYER_SIZE) for layer in layers])
    labels = data["labels"].tolist()
    train, test = np.flatnonzero(np.isin(data["corpus"], training_corpora)), np.flatnonzero(data["corpus"] == corpus)
    emotions = data["emotion"]
    weights = torch.from_numpy(balanced_row_weights(emotions[train], data["corpus"][train])).float()
    inputs = torch.from_numpy(statistics[np.ix_(train, columns)])
    head, mean, std = fit(inputs, torch.from_numpy(emotions[train]).long(), weights, len(labels))
    with torch.inference_mode():
        probabilities = head((torch.from_numpy(statistics[np.ix_(test, columns)]) - mean) / std).softmax(-1).numpy()
    return scores_on(corpus, probabilities, data, training_corpora)


def scores_on(corpus: str, probabilities: np.ndarray, data: dict, training_corpora: list[str]) -> dict:
    """UA and most-predicted share of `probabilities` [the corpus's clips, emotions], scored on the
    emotions `corpus` shares with `training_corpora`, as leave-one-corpus-out scores."""
    labels, emotions = data["labels"].tolist(), data["emotion"]
    features = datasets.Features({"emotion": datasets.ClassLabel(names=labels)})
    test_set = datasets.Dataset.from_dict({"emotion": emotions[data["corpus"] == corpus]}, features=features)
    trained_labels = [labels[e] for e in sorted(set(emotions[np.isin(data["corpus"], training_corpora)].tolist()))]
    scoring = SharedScoring.of(test_set, labels, trained_labels)
    metrics = scoring.metrics(scoring.references, scoring.predict_ids(probabilities[scoring.kept]))
    return {"ua": metrics["balanced_accuracy"], "most_predicted": metrics["most_predicted"]}


def main() -> None:
    torch.set_num_threads(1)  # beside a training run
    data, frames = load_cache()
    statistics = frozen_statistics(data, frames)
    corpora = sorted(set(data["corpus"].tolist()))
    results = {"layer_sets": [], "nested_choice": []}
    for name, layers in LAYER_SETS.items():
        row = {"layers": name}
        for corpus in corpora:
            others = [c for c in corpora if c != corpus]
            row[corpus] = held_out_scores(statistics, data, corpus, layers, others)
            # Within the other corpora, each in turn held out of a head trained on the rest: how a
            # layer set can be chosen for `corpus` without it (the nested choice below).
            row[corpus]["inner_ua"] = float(np.mean([held_out_scores(statistics, data, inner, layers, [c for c in others if c != inner])["ua"] for inner in others]))
        row["mean_ua"] = float(np.mean([row[corpus]["ua"] for corpus in corpora]))
        results["layer_sets"].append(row)
        print(json.dumps(row), flush=True)
    for corpus in corpora:
        chosen = max(results["layer_sets"], key=lambda row: row[corpus]["inner_ua"])
        results["nested_choice"].append({"corpus": corpus, "layers": chosen["layers"], **chosen[corpus]})
        print(json.dumps(results["nested_choice"][-1]), flush=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
