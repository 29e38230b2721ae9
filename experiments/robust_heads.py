"""Issue #18 probe: does a head fitted for its worst training speaker carry to voices it never heard?

    PYTHONPATH=. .venv/bin/python experiments/robust_heads.py   # after layer_choice.py's cache

The head `train whisper` fits minimises the mean loss over its training clips (every corpus, and
every emotion within it, weighing the same), so it may settle for being right on most training
speakers and wrong on a few whose voices are unlike the rest, which is what a new voice is.
Distributionally robust optimisation over groups minimises a soft maximum of the groups' losses
instead, (1/eta) log sum_g p_g exp(eta L_g), with p_g a group's weight in the mean objective and
L_g its mean loss (each emotion within it weighing the same): eta -> 0 is the shipped head, a
large eta its worst group. Convex like the shipped objective, so L-BFGS from zeros as there.
Groups are the training speakers (the figure, eta = 5 fixed beforehand, 1 and 20 beside it) or
the training corpora (eta = 5). On every layer's frozen statistics of the clean trimmed clips
(`layer_choice.frozen_statistics`), leave one corpus out. A probe behind a figure in
docs/GENERALISATION.md, not part of the package.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from experiments.layer_choice import LAYER_SIZE, frozen_statistics, held_out_scores
from experiments.top_layer_adaptation import CORPORA, L2, MAX_ITERATIONS, fit_head, load_cache
from ser_train.corpora import load_corpora
from ser_train.training.cnn import balanced_row_weights

STRENGTHS = (5.0, 1.0, 20.0)  # eta; the first is the figure


def group_robust_head(inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, groups: np.ndarray, classes: int, eta: float) -> torch.nn.Linear:
    """A linear head on standardised `inputs` minimising the soft maximum of its groups' losses,
    plus the shipped head's L2 penalty; `weights`, the shipped objective's row weights, give each
    group its weight."""
    names, group_of_row = np.unique(groups, return_inverse=True)
    # Summed in float64, as the weights were computed, so the figures do not move with rounding.
    prior = torch.stack([weights.double()[torch.from_numpy(group_of_row == g)].sum() for g in range(len(names))]).float()
    prior = prior / prior.sum()
    # Within a group every emotion weighs the same.
    within = torch.from_numpy(balanced_row_weights(targets.numpy(), groups)).float()
    membership = torch.zeros(len(names), len(targets))
    membership[torch.from_numpy(group_of_row), torch.arange(len(targets))] = within
    membership = membership / membership.sum(1, keepdim=True)
    head = torch.nn.Linear(inputs.shape[1], classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=MAX_ITERATIONS, line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        group_losses = membership @ torch.nn.functional.cross_entropy(head(inputs), targets, reduction="none")
        value = torch.logsumexp(eta * group_losses + prior.log(), 0) / eta + 0.5 * L2 * head.weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return head


def robust_fit(groups: np.ndarray, eta: float):
    """A `fit` for `layer_choice.held_out_scores`: the group-robust head, `groups` naming the
    group of each training row (in the order of the training rows)."""

    def fit(inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, classes: int):
        mean, std = inputs.mean(0), inputs.std(0).clamp_min(1e-6)
        return group_robust_head((inputs - mean) / std, targets, weights, groups, classes, eta), mean, std

    return fit


def main() -> None:
    torch.set_num_threads(2)
    data, frames = load_cache()
    statistics = frozen_statistics(data, frames)  # computed from the frames once, then kept
    assert statistics.shape[1] == 7 * LAYER_SIZE  # every layer, as shipped
    speakers = np.array(load_corpora(CORPORA)["speaker"])
    corpora = sorted(set(data["corpus"].tolist()))
    settings = {"shipped head": None, **{f"speakers, eta {eta:g}": (speakers, eta) for eta in STRENGTHS}, "corpora, eta 5": (data["corpus"], 5.0)}
    for name, setting in settings.items():
        rows = []
        for corpus in corpora:
            others = [c for c in corpora if c != corpus]
            fit = fit_head if setting is None else robust_fit(setting[0][np.isin(data["corpus"], others)], setting[1])
            rows.append(held_out_scores(statistics, data, corpus, range(7), others, fit))
        print(json.dumps({"setting": name, **dict(zip(corpora, rows))}), flush=True)
        print(f"{name}: mean UA {np.mean([row['ua'] for row in rows]):.3f}, "
              + ", ".join(f"{c} {row['ua']:.3f} ({row['most_predicted']['emotion']} {row['most_predicted']['share']:.0%})" for c, row in zip(corpora, rows)), flush=True)


if __name__ == "__main__":
    main()
