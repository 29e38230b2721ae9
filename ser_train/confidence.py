"""Confidence that means what it says: calibrated probabilities, and saying when an answer is unsure.

A classifier fitted on a few acted corpora is sure of itself on voices like theirs and just as sure
on voices it never heard, where it is far more often wrong. Three tools here:

- `expected_calibration_error`: the gap between how sure the answers were and how often they
  were right (top label, equal-width bins; Guo et al. 2017, "On calibration of modern neural
  networks"). It is a dozen lines of numpy, so no metrics library is pulled in for it.
- `fit_temperature`: one temperature T for the logits, `softmax(log p / T)`, fitted by maximum
  likelihood on predictions for corpora the model never trained on (the runner nests this inside
  leave-one-corpus-out, so the corpus being scored never tunes it). T > 1 softens over-confident
  answers; the ranking of emotions, and so every accuracy figure, is unchanged.
- `UnsureRule`: when the top emotion's probability is low, or the runner-up is close behind, the
  page says the answer is unsure instead of showing a bold label. Both thresholds are chosen
  from measured accuracy on held-out corpora (`choose_unsure_rule`): an answer counts as sure
  where answers like it were right at least SURE_ACCURACY of the time.

Speaker calibration changes how sure answers are and how often they are right, so answers
calibrated from each source (a read passage, the mood prompt) get their own temperature and unsure
rule (`Confidence`), fitted the same way on held-out answers calibrated the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# config.json keys that training writes (ser_train.training.runner) from predictions on corpora the
# model never trained on, and that loading reads (ser_train.inference.load_model).
TEMPERATURE_KEY = "probability_temperature"
UNSURE_RULE_KEY = "unsure_rule"
CALIBRATED_CONFIDENCE_KEY = "calibrated_confidence"  # {calibration source: Confidence.as_dict()}
# eval_results.json's record of the fitted confidence and how it split the held-out answers.
CONFIDENCE_RESULTS_KEY = "probability_calibration"
ECE_BINS = 10
TEMPERATURE_BOUNDS = (0.05, 50.0)  # a fitted temperature outside this range means something broke
SURE_ACCURACY = 0.5  # an answer is "sure" where answers like it were right at least this often
PROBABILITY_FLOOR = 1e-12  # log(0) guard for probabilities that underflowed


def expected_calibration_error(probabilities: np.ndarray, references: Sequence[int], bins: int = ECE_BINS) -> float:
    """Top-label ECE: the answers binned by their top probability (equal-width bins over
    (0, 1]), the bins' |accuracy - mean confidence| weighted by their share of the answers."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(references)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a model with logits z / T would give."""
    logits = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(probability_sets: Sequence[np.ndarray], reference_sets: Sequence[Sequence[int]]) -> float:
    """The temperature minimising the mean negative log-likelihood, each set (a held-out corpus)
    weighted equally, so that a large corpus does not decide it alone."""
    from scipy.optimize import minimize_scalar

    sets = [(np.asarray(p), np.asarray(r)) for p, r in zip(probability_sets, reference_sets) if len(r)]
    if not sets:
        raise ValueError("A temperature needs held-out predictions.")

    def mean_negative_log_likelihood(log_temperature: float) -> float:
        temperature = float(np.exp(log_temperature))
        losses = [
            -np.log(np.maximum(with_temperature(p, temperature)[np.arange(len(r)), r], PROBABILITY_FLOOR)).mean()
            for p, r in sets
        ]
        return float(np.mean(losses))

    low, high = np.log(TEMPERATURE_BOUNDS)
    return float(np.exp(minimize_scalar(mean_negative_log_likelihood, bounds=(low, high), method="bounded").x))


@dataclass(frozen=True)
class UnsureRule:
    """An answer is unsure when its top probability is under `min_confidence` or the runner-up
    is within `min_margin` of it."""

    min_confidence: float
    min_margin: float
    measured: bool = True  # False: the default for a model whose confidence was never measured
    calibrated_as: str | None = None  # the calibration source of the answers it was measured on

    def is_unsure(self, probabilities: Sequence[float]) -> bool:
        ranked = np.sort(np.asarray(probabilities, dtype=np.float64))[::-1]
        top, second = ranked[0], (ranked[1] if len(ranked) > 1 else 0.0)
        return bool(top < self.min_confidence or top - second < self.min_margin)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> UnsureRule:
        return cls(**values) if values else DEFAULT_UNSURE_RULE


# For models whose confidence was never measured on held-out corpora (stock Hub models, older
# folders): the thresholds the bundled models measured were of this size.
DEFAULT_UNSURE_RULE = UnsureRule(min_confidence=0.5, min_margin=0.15, measured=False)


@dataclass(frozen=True)
class Confidence:
    """How a model's answers are made to mean what they say: softened by `temperature`, and shown
    as unsure by `unsure_rule`."""

    temperature: float = 1.0
    unsure_rule: UnsureRule = DEFAULT_UNSURE_RULE

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "unsure_rule": self.unsure_rule.as_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> Confidence:
        return cls(float(values["temperature"]), UnsureRule.from_dict(values["unsure_rule"]))


def confidence_by_source(config: dict) -> dict[str | None, Confidence]:
    """A model config's confidence for uncalibrated answers (key None) and for answers calibrated
    from each source it was measured for."""
    uncalibrated = Confidence(float(config.get(TEMPERATURE_KEY, 1.0)), UnsureRule.from_dict(config.get(UNSURE_RULE_KEY)))
    calibrated = {source: Confidence.from_dict(values) for source, values in config.get(CALIBRATED_CONFIDENCE_KEY, {}).items()}
    return {None: uncalibrated, **calibrated}


def choose_unsure_rule(
    probability_sets: Sequence[np.ndarray], reference_sets: Sequence[Sequence[int]], calibrated_as: str | None = None
) -> UnsureRule:
    """Thresholds from held-out answers (one set per held-out corpus, each weighted equally):
    accuracy as a function of the top probability is fitted monotonically (isotonic regression),
    and `min_confidence` is where it reaches SURE_ACCURACY; then, among the answers above it,
    the same for the margin to the runner-up. `calibrated_as`: the answers' calibration source."""
    # Sets may score different emotions (so have different widths): each gives its own answers.
    confidence, margin, correct, weights = [], [], [], []
    for probabilities, references in zip(probability_sets, reference_sets):
        ranked = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)[:, ::-1]
        confidence.append(ranked[:, 0])
        margin.append(ranked[:, 0] - ranked[:, 1])
        correct.append((np.asarray(probabilities).argmax(axis=1) == np.asarray(references)).astype(float))
        weights.append(np.full(len(references), 1.0 / max(len(references), 1)))
    confidence, margin, correct, weights = map(np.concatenate, (confidence, margin, correct, weights))
    min_confidence = _where_accuracy_reaches(confidence, correct, weights)
    confident = confidence >= min_confidence
    min_margin = _where_accuracy_reaches(margin[confident], correct[confident], weights[confident])
    return UnsureRule(round(min_confidence, 3), round(min_margin, 3), calibrated_as=calibrated_as)


def _where_accuracy_reaches(score: np.ndarray, correct: np.ndarray, weights: np.ndarray) -> float:
    """The smallest score from which the (weighted) isotonic fit of accuracy on score is >=
    SURE_ACCURACY: 0 if it always is, 1 if it never is."""
    from sklearn.isotonic import IsotonicRegression

    if not len(score):
        return 1.0
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(score, correct, sample_weight=weights).predict(score)
    if fitted.min() >= SURE_ACCURACY:
        return 0.0
    reached = score[fitted >= SURE_ACCURACY]
    return float(reached.min()) if len(reached) else 1.0


def measured_unsure_accuracies(results: dict, calibrated_as: str | None) -> list[float]:
    """How often each held-out corpus's unsure answers were right (`unsure_summary`), from a
    model's eval_results.json, for answers calibrated from `calibrated_as` (None: uncalibrated);
    [] where that was not measured."""
    measured = results.get(CONFIDENCE_RESULTS_KEY, {})
    if calibrated_as is not None:
        measured = measured.get("calibrated", {}).get(calibrated_as, {})
    answers = measured.get("held_out_answers", {}).values()
    return [summary["accuracy_unsure"] for summary in answers if summary.get("accuracy_unsure") is not None]


def unsure_summary(probabilities: np.ndarray, references: Sequence[int], rule: UnsureRule) -> dict:
    """How the rule splits held-out answers: the unsure share and the accuracy of each side."""
    probabilities = np.asarray(probabilities)
    correct = probabilities.argmax(axis=1) == np.asarray(references)
    unsure = np.array([rule.is_unsure(row) for row in probabilities], dtype=bool)

    def accuracy(members: np.ndarray) -> float | None:
        return float(correct[members].mean()) if members.any() else None

    return {"unsure_share": float(unsure.mean()), "accuracy_sure": accuracy(~unsure), "accuracy_unsure": accuracy(unsure)}
