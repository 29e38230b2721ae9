"""Issue #18 probe: does mixing each training clip's statistics with a clip of the same emotion from
another training corpus teach the head what the corpora share?

    PYTHONPATH=. .venv/bin/python experiments/corpus_mixup.py   # after experiments/voice_views.py cache

On the clean trimmed clips' statistics that `experiments/voice_views.py cache` computes: for every
training clip, one extra row, lambda * its statistics + (1 - lambda) * those of a random clip of
the same emotion from another training corpus, lambda uniform in [0, 1], labelled with that
emotion; the head `train whisper` fits (`experiments/layer_choice.held_out_scores`), leaving each
corpus out, against the same head on the clean rows alone. Settings fixed beforehand. A probe
behind a figure in docs/GENERALISATION.md, not part of the package.
"""

from __future__ import annotations

import numpy as np
import torch

from experiments.layer_choice import held_out_scores
from experiments.top_layer_adaptation import load_cache
from experiments.voice_views import VIEWS_FILE

SEED = 0


def mixed_rows(statistics: np.ndarray, data: dict, training_corpora: list[str], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rows, the clip each row is labelled and counted as): one mix per training clip that has a
    partner of its emotion in another training corpus."""
    training = np.isin(data["corpus"], training_corpora)
    rows, clips = [], []
    for clip in np.flatnonzero(training):
        partners = np.flatnonzero(training & (data["emotion"] == data["emotion"][clip]) & (data["corpus"] != data["corpus"][clip]))
        if len(partners):
            share = rng.uniform(0, 1)
            rows.append(share * statistics[clip] + (1 - share) * statistics[rng.choice(partners)])
            clips.append(clip)
    return np.stack(rows).astype(np.float32), np.array(clips)


def main() -> None:
    torch.set_num_threads(2)
    data, _ = load_cache()
    clean = np.load(VIEWS_FILE, mmap_mode="r")[0]
    clean = np.asarray(clean)
    corpora = sorted(set(data["corpus"].tolist()))
    rng = np.random.default_rng(SEED)
    for corpus in corpora:
        training_corpora = [c for c in corpora if c != corpus]
        rows, clips = mixed_rows(clean, data, training_corpora, rng)
        with_mixes = {key: np.concatenate([data[key], data[key][clips]]) for key in ("emotion", "corpus")} | {"labels": data["labels"]}
        plain = held_out_scores(clean, data, corpus, range(7), training_corpora)
        mixed = held_out_scores(np.concatenate([clean, rows]), with_mixes, corpus, range(7), training_corpora)
        print(f"{corpus}: clean UA {plain['ua']:.3f} {plain['most_predicted']}; with mixes UA {mixed['ua']:.3f} {mixed['most_predicted']}", flush=True)


if __name__ == "__main__":
    main()
