"""Issue #18 probe: does training on more corpora carry to the corpus left out?

    PYTHONPATH=. .venv/bin/python experiments/more_corpora.py cache CORPUS_DIR...  # their encoder statistics
    PYTHONPATH=. .venv/bin/python experiments/more_corpora.py score                 # the table

The corpora beyond RAVDESS, TESS and EMOVO come from `experiments/extra_corpora.py` (outside the
repository). Each clip's trimmed speech goes through the bundled model's encoder exactly as the
layer probe's cache (`top_layer_adaptation.encoded`, then the top layer over the half-precision
layer-5 frames, as `layer_choice.frozen_statistics`), so the new rows sit beside the cached
statistics of the three corpora. The encoder is whisper-base's, trained on none of these corpora.

`cache` adds the corpora not cached yet to the further corpora's cache, so corpora found later
(nEMO, ASED) join those cached before (EmoDB, URDU, TurEV-DB).

Then the head `train whisper` fits (every layer's statistics, rows weighted so every training
corpus and every emotion within it counts the same), leaving one corpus out: RAVDESS, TESS and
EMOVO each held out of a head trained on the other two, without and with the further corpora in
training (all of them, each alone, all but each one, and those the bundled default learned from),
and each further corpus held out of a head trained on all the rest. Settings fixed beforehand; a
probe behind a figure in docs/GENERALISATION.md, not part of the package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from experiments.layer_choice import frozen_statistics, held_out_scores
from experiments.top_layer_adaptation import MODEL, TopLayer, encoded, load_cache, top_statistics
from ser_train.corpora import corpus_names_of, load_corpora
from ser_train.models.whisper import WhisperForEmotionRecognition, frame_statistics

EXTRA_CACHE = Path("runs/probe/more_corpora.npz")
RESULTS = Path("runs/probe/more_corpora.json")
EVERY_LAYER = range(7)
THREE = ["emovo-opus-16k", "ravdess-opus-16k", "tess-opus-16k"]
CALM = 1  # the emotion's index in the cache's labels (ser_train.data.EMOTIONS)
BUNDLED_FURTHER = ["emodb-opus-16k", "turev-opus-16k", "urdu-opus-16k"]  # models/six-corpora-whisper-base's


def cache(folders: list[str]) -> None:
    cached = dict(np.load(EXTRA_CACHE)) if EXTRA_CACHE.is_file() else None
    if cached is not None:
        known = set(cached["corpus"].tolist())
        folders = [folder for folder, name in zip(folders, corpus_names_of(folders)) if name not in known]
    dataset = load_corpora(folders)
    base = WhisperForEmotionRecognition.from_pretrained(MODEL, use_safetensors=True).eval()
    low, frames = [], []
    for hidden, n in encoded(dataset):
        low.append(torch.cat([frame_statistics(h, n) for h in hidden[:6]], dim=-1).numpy())
        frames += [hidden[5][clip, :length].half().numpy() for clip, length in enumerate(n.tolist())]
    top = top_statistics(TopLayer(base), frames, np.arange(len(frames))).numpy()
    found = {
        "statistics": np.concatenate([np.concatenate(low), top], axis=1).astype(np.float32),
        "emotion": np.array(dataset["emotion"]),
        "corpus": np.array(dataset["corpus"]),
        "speaker": np.array(dataset["speaker"]),
    }
    if cached is not None:
        found = {name: np.concatenate([cached[name], found[name]]) for name in found}
    np.savez(EXTRA_CACHE, **found)


def combined() -> tuple[np.ndarray, dict]:
    """Every clip's statistics, the three corpora's then the further ones', and their labels."""
    data, _ = load_cache()
    extra = dict(np.load(EXTRA_CACHE))
    statistics = np.concatenate([frozen_statistics(data, []), extra["statistics"]])
    return statistics, {
        "labels": data["labels"],
        "emotion": np.concatenate([data["emotion"], extra["emotion"]]),
        "corpus": np.concatenate([data["corpus"], extra["corpus"]]),
    }


def three_held_out(statistics: np.ndarray, data: dict, setting: str, added: list[str]) -> dict:
    """RAVDESS, TESS and EMOVO each held out of a head on the other two and `added`."""
    row = {"training": setting}
    for corpus in THREE:
        row[corpus] = held_out_scores(statistics, data, corpus, EVERY_LAYER, [c for c in THREE if c != corpus] + added)
    row["mean_ua"] = float(np.mean([row[c]["ua"] for c in THREE]))
    print(json.dumps(row), flush=True)
    return row


def score() -> None:
    torch.set_num_threads(2)
    statistics, data = combined()
    further = sorted(set(data["corpus"].tolist()) - set(THREE))
    settings = {"the other two": []}
    if set(BUNDLED_FURTHER) < set(further):
        settings |= {"+ the bundled default's (" + ", ".join(BUNDLED_FURTHER) + ")": BUNDLED_FURTHER}
    settings |= {"+ " + ", ".join(further): further} | {f"+ {name}": [name] for name in further}
    if len(further) > 2:
        settings |= {f"+ all further but {name}": [c for c in further if c != name] for name in further}
    results = [three_held_out(statistics, data, setting, added) for setting, added in settings.items()]
    if "turev-opus-16k" in further:
        # TurEV's calm clips are the only calm ones besides RAVDESS's: with them in training, a
        # model that never heard RAVDESS claims calm and RAVDESS is scored on 8 emotions instead of
        # 7. This row leaves them out to show how much of RAVDESS's change that is (looked at after
        # the rows above, so not a setting chosen beforehand).
        calm_left_out = np.where((data["corpus"] == "turev-opus-16k") & (data["emotion"] == CALM), "(left out)", data["corpus"])
        results.append(three_held_out(statistics, dict(data, corpus=calm_left_out), "+ " + ", ".join(further) + ", TurEV's calm clips left out", further))
    for corpus in further:
        training = [c for c in THREE + further if c != corpus]
        row = {"training": "every other corpus", corpus: held_out_scores(statistics, data, corpus, EVERY_LAYER, training)}
        row_three = {"training": "the three", corpus: held_out_scores(statistics, data, corpus, EVERY_LAYER, THREE)}
        results += [row_three, row]
        print(json.dumps(row_three), json.dumps(row), flush=True)
    RESULTS.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["cache", "score"])
    parser.add_argument("folders", nargs="*")
    args = parser.parse_args()
    if args.step == "cache":
        return cache(args.folders)
    score()


if __name__ == "__main__":
    sys.exit(main())
