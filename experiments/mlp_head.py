"""Issue #18 probe: does a small non-linear head on the frozen statistics carry further than the linear one?

    PYTHONPATH=. .venv/bin/python experiments/mlp_head.py   # after layer_choice.py's cache

`train whisper` fits a linear head on every layer's frozen statistics; on three corpora it gets
every training clip right and still carries poorly to the corpus it never heard. A small MLP
might find emotion cues that are not linear in the statistics and hold across voices, or it
might only fit the training corpora more tightly. Settings fixed before any was scored: one
hidden layer (256 units, and 64 beside it), GELU, dropout 0.5 on the standardised input and on
the hidden layer, AdamW (lr 1e-3, weight decay 1e-2), 30 epochs of batches of 64, the shipped
head's row weights in the loss (each batch's weighted mean cross-entropy), torch.manual_seed(0)
before each fit; the 256-unit head also with seeds 1 and 2, for the spread from the seed alone.
Only the head changes: the split, standardisation, row weights and scoring are
`layer_choice.held_out_scores`'s. Every layer's frozen statistics of the clean trimmed clips,
leave one corpus out. If an MLP beats the linear head, the figure is the nested choice between
{linear, MLP 256, MLP 64} (as `nested_penalty.py`'s): for each held-out corpus, the head that
did best when each of the other two corpora was held out of a head trained on the remaining
one, then scored once on the held-out corpus. A probe behind a figure in docs/GENERALISATION.md,
not part of the package.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from experiments.layer_choice import frozen_statistics, held_out_scores
from experiments.top_layer_adaptation import fit_head, load_cache

EVERY_LAYER = range(7)
DROPOUT = 0.5
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2
EPOCHS = 30
BATCH = 64
HEADS = {  # name -> (hidden units, seed); None is the shipped linear head
    "linear (shipped)": None,
    "MLP 256": (256, 0),
    "MLP 64": (64, 0),
    "MLP 256, seed 1": (256, 1),
    "MLP 256, seed 2": (256, 2),
}
NESTED = ("linear (shipped)", "MLP 256", "MLP 64")  # the heads the nested choice picks among


def mlp(features: int, hidden: int, classes: int) -> torch.nn.Sequential:
    """Dropout on the input, one GELU hidden layer, dropout, the class logits."""
    return torch.nn.Sequential(
        torch.nn.Dropout(DROPOUT),
        torch.nn.Linear(features, hidden),
        torch.nn.GELU(),
        torch.nn.Dropout(DROPOUT),
        torch.nn.Linear(hidden, classes),
    )


def train_mlp(head: torch.nn.Module, standardised: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> None:
    """AdamW on shuffled batches, each batch's loss the row-weighted mean cross-entropy, in place."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    head.train()
    for _ in range(EPOCHS):
        for rows in torch.randperm(len(targets)).split(BATCH):
            losses = torch.nn.functional.cross_entropy(head(standardised[rows]), targets[rows], reduction="none")
            loss = (losses * weights[rows]).sum() / weights[rows].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()  # held_out_scores calls the head as it is: no dropout when scoring


def mlp_fit(hidden: int, seed: int):
    """A `fit` for `layer_choice.held_out_scores`: the MLP head on the shipped standardisation."""

    def fit(inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, classes: int):
        torch.manual_seed(seed)  # the same start, dropout and batch order for every fold
        mean, std = inputs.mean(0), inputs.std(0).clamp_min(1e-6)
        head = mlp(inputs.shape[1], hidden, classes)
        train_mlp(head, (inputs - mean) / std, targets, weights)
        return head, mean, std

    return fit


def fit_of(setting):
    return fit_head if setting is None else mlp_fit(*setting)


def outer_scores(statistics: np.ndarray, data: dict, corpora: list[str], fit) -> dict:
    """Each corpus's scores with the head trained on the other two."""
    return {c: held_out_scores(statistics, data, c, EVERY_LAYER, [o for o in corpora if o != c], fit) for c in corpora}


def inner_ua(statistics: np.ndarray, data: dict, corpus: str, corpora: list[str], fit) -> float:
    """Without `corpus`: the mean UA on each other corpus of a head trained on the remaining one."""
    others = [c for c in corpora if c != corpus]
    return float(np.mean([held_out_scores(statistics, data, inner, EVERY_LAYER, [c for c in others if c != inner], fit)["ua"] for inner in others]))


def short(corpus: str) -> str:
    return corpus.split("-")[0].upper()


def table(rows: dict, corpora: list[str]) -> str:
    """Markdown: UA per held-out corpus, mean UA, the largest most-predicted share."""
    lines = ["| head | " + " | ".join(short(c) for c in corpora) + " | mean UA | max most-predicted share |",
             "|---|" + "---:|" * (len(corpora) + 2)]
    for name, row in rows.items():
        worst = max(corpora, key=lambda c: row[c]["most_predicted"]["share"])
        lines.append(f"| {name} | " + " | ".join(f"{row[c]['ua']:.3f}" for c in corpora)
                     + f" | {np.mean([row[c]['ua'] for c in corpora]):.3f} | {row[worst]['most_predicted']['share']:.0%} ({short(worst)} {row[worst]['most_predicted']['emotion']}) |")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(2)
    start = time.time()
    data, frames = load_cache()
    statistics = frozen_statistics(data, frames)
    corpora = sorted(set(data["corpus"].tolist()))
    rows = {}
    for name, setting in HEADS.items():
        rows[name] = outer_scores(statistics, data, corpora, fit_of(setting))
        print(json.dumps({"head": name, **rows[name]}), f"({time.time() - start:.0f} s)", flush=True)
    mean_ua = {name: np.mean([row[c]["ua"] for c in corpora]) for name, row in rows.items()}
    if any(mean_ua[name] > mean_ua["linear (shipped)"] for name in HEADS if name != "linear (shipped)"):
        inner = {name: {c: inner_ua(statistics, data, c, corpora, fit_of(HEADS[name])) for c in corpora} for name in NESTED}
        print(json.dumps({"inner_ua": inner}), f"({time.time() - start:.0f} s)", flush=True)
        chosen = {c: max(NESTED, key=lambda name: inner[name][c]) for c in corpora}
        rows["nested choice (" + ", ".join(f"{short(c)}: {chosen[c]}" for c in corpora) + ")"] = {c: rows[chosen[c]][c] for c in corpora}
    else:
        print("no MLP beats the linear head: no nested choice", flush=True)
    print(f"\n{table(rows, corpora)}\n\n{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
