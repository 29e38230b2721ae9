"""Issue #18 probe: the head's L2 penalty chosen by leaving training corpora out, not by RAVDESS folds.

    PYTHONPATH=. .venv/bin/python experiments/nested_penalty.py   # after layer_choice.py's cache

`train whisper`'s penalty (0.03) was measured on RAVDESS's actor-disjoint folds, where it barely
matters; on three corpora the head gets every training clip right, and a stronger penalty may
carry further. The penalties were fixed before any was scored. Picking the best by held-out UA
would let the held-out corpora choose, so the figure is the nested choice (as
`layer_choice.py`'s): for each held-out corpus, the penalty that did best when each of the other
two corpora was held out of a head trained on the remaining one, then scored once on the
held-out corpus. Every layer's frozen statistics of the clean trimmed clips. A probe behind a
figure in docs/GENERALISATION.md, not part of the package.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import torch

from experiments.layer_choice import frozen_statistics, held_out_scores
from experiments.top_layer_adaptation import fit_head, load_cache

PENALTIES = (0.03, 0.3, 1.0, 3.0, 10.0)  # 0.03 is train whisper's
EVERY_LAYER = range(7)


def main() -> None:
    torch.set_num_threads(2)
    data, frames = load_cache()
    statistics = frozen_statistics(data, frames)
    corpora = sorted(set(data["corpus"].tolist()))
    rows = {}
    for l2 in PENALTIES:
        row = {}
        for corpus in corpora:
            others = [c for c in corpora if c != corpus]
            fit = functools.partial(fit_head, l2=l2)
            row[corpus] = held_out_scores(statistics, data, corpus, EVERY_LAYER, others, fit)
            row[corpus]["inner_ua"] = float(np.mean([held_out_scores(statistics, data, inner, EVERY_LAYER, [c for c in others if c != inner], fit)["ua"] for inner in others]))
        rows[l2] = row
        print(json.dumps({"l2": l2, **row}), flush=True)
        print(f"l2 {l2:g}: mean UA {np.mean([row[c]['ua'] for c in corpora]):.3f}, "
              + ", ".join(f"{c} {row[c]['ua']:.3f} ({row[c]['most_predicted']['emotion']} {row[c]['most_predicted']['share']:.0%}; inner {row[c]['inner_ua']:.3f})" for c in corpora), flush=True)
    chosen = {corpus: max(PENALTIES, key=lambda l2: rows[l2][corpus]["inner_ua"]) for corpus in corpora}
    print("nested choice: " + ", ".join(f"{c} l2 {chosen[c]:g}: {rows[chosen[c]][c]['ua']:.3f}" for c in corpora)
          + f"; mean UA {np.mean([rows[chosen[c]][c]['ua'] for c in corpora]):.3f}", flush=True)


if __name__ == "__main__":
    main()
