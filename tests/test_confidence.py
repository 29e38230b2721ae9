"""Calibrated confidence: ECE, the temperature fit and the unsure rule on cases with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_train.confidence import (
    CALIBRATED_CONFIDENCE_KEY,
    DEFAULT_UNSURE_RULE,
    TEMPERATURE_KEY,
    UNSURE_RULE_KEY,
    Confidence,
    UnsureRule,
    confidence_by_source,
    choose_unsure_rule,
    expected_calibration_error,
    fit_temperature,
    unsure_summary,
    with_temperature,
)


def test_ece_of_answers_as_sure_as_they_are_right_is_zero():
    # Ten answers at 0.8 confidence, eight of them right: confidence equals accuracy in the one bin.
    probabilities = np.tile([[0.8, 0.2]], (10, 1))
    references = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probabilities, references) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy_per_bin():
    # Bin (0.9, 1.0]: 4 answers at 0.95, 2 right (gap 0.45); bin (0.6, 0.7]: 4 answers at 0.65, all
    # right (gap 0.35). Each bin holds half of the answers: ECE = 0.5 * 0.45 + 0.5 * 0.35 = 0.4.
    probabilities = np.array([[0.95, 0.05]] * 4 + [[0.65, 0.35]] * 4)
    references = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    assert expected_calibration_error(probabilities, references) == pytest.approx(0.4, abs=1e-9)


def test_temperature_scaling_keeps_the_ranking_and_sums_to_one():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(8), size=50).astype(np.float32)
    for temperature in (0.5, 1.0, 3.0):
        scaled = with_temperature(probabilities, temperature)
        np.testing.assert_array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-6)  # float32 rounding of 8 terms
    np.testing.assert_allclose(with_temperature(probabilities, 1.0), probabilities, atol=1e-6)


def sampled_answers(true_temperature: float, clips: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident model outputs softmax(z) whose labels are drawn from softmax(z / T):
    the temperature that calibrates them is T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(clips, 5))
    truth = with_temperature(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), true_temperature)
    references = np.array([rng.choice(5, p=row / row.sum()) for row in truth.astype(np.float64)])
    outputs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return outputs / outputs.sum(axis=1, keepdims=True), references


def test_fitted_temperature_recovers_the_one_that_generated_the_labels():
    probabilities, references = sampled_answers(true_temperature=2.5, clips=4000, seed=1)
    fitted = fit_temperature([probabilities], [references])
    # The maximum-likelihood estimate from 4000 draws: within 10 % of the truth.
    assert fitted == pytest.approx(2.5, rel=0.1)
    assert expected_calibration_error(with_temperature(probabilities, fitted), references) < expected_calibration_error(
        probabilities, references
    )


def test_temperature_weighs_each_held_out_set_equally():
    small, small_references = sampled_answers(true_temperature=4.0, clips=400, seed=2)
    large, large_references = sampled_answers(true_temperature=1.0, clips=4000, seed=3)
    pooled = fit_temperature([np.concatenate([small, large])], [np.concatenate([small_references, large_references])])
    balanced = fit_temperature([small, large], [small_references, large_references])
    # Pooled, the large set decides; weighted per set, the estimate moves toward the small set's.
    assert balanced > pooled
    assert 1.0 < balanced < 4.0


def test_unsure_rule_flags_a_low_top_probability_and_a_near_tie():
    rule = UnsureRule(min_confidence=0.5, min_margin=0.15)
    assert rule.is_unsure([0.40, 0.30, 0.30])  # low top probability
    assert rule.is_unsure([0.52, 0.45, 0.03])  # two emotions close together
    assert not rule.is_unsure([0.70, 0.20, 0.10])
    assert UnsureRule.from_dict(None) == DEFAULT_UNSURE_RULE and not DEFAULT_UNSURE_RULE.measured
    assert UnsureRule.from_dict(rule.as_dict()) == rule


def test_unsure_thresholds_come_from_where_held_out_accuracy_reaches_one_half():
    # Held-out answers whose accuracy is known by construction: answers with top probability
    # under 0.6 are right 30 % of the time, those above it 90 %.
    rng = np.random.default_rng(4)
    top = np.concatenate([rng.uniform(0.35, 0.6, 500), rng.uniform(0.6, 0.95, 500)])
    probabilities = np.stack([top, (1 - top) / 2, (1 - top) / 2], axis=1)  # emotion 0 is always the answer
    right = np.concatenate([rng.random(500) < 0.3, rng.random(500) < 0.9])
    references = np.where(right, 0, 1)
    rule = choose_unsure_rule([probabilities], [references])
    assert 0.55 <= rule.min_confidence <= 0.65
    summary = unsure_summary(probabilities, references, rule)
    assert summary["accuracy_sure"] > 0.8 and summary["accuracy_unsure"] < 0.4
    assert summary["unsure_share"] == pytest.approx(0.5, abs=0.1)


def test_a_model_right_everywhere_is_never_unsure_and_one_never_right_always_is():
    probabilities = np.array([[0.6, 0.4], [0.9, 0.1], [0.55, 0.45]])
    always_right = choose_unsure_rule([probabilities], [np.zeros(3, dtype=int)])
    assert (always_right.min_confidence, always_right.min_margin) == (0.0, 0.0)
    never_right = choose_unsure_rule([probabilities], [np.ones(3, dtype=int)])
    assert never_right.min_confidence == 1.0


def test_a_config_gives_the_confidence_of_uncalibrated_answers_and_of_each_calibration_source():
    # A folder measured before any of this: untempered, with the default (unmeasured) rule.
    assert confidence_by_source({}) == {None: Confidence(1.0, DEFAULT_UNSURE_RULE)}
    neutral = Confidence(2.5, UnsureRule(0.6, 0.2, calibrated_as="neutral"))
    config = {TEMPERATURE_KEY: 3.0, UNSURE_RULE_KEY: {"min_confidence": 0.7, "min_margin": 0.6}, CALIBRATED_CONFIDENCE_KEY: {"neutral": neutral.as_dict()}}
    assert confidence_by_source(json.loads(json.dumps(config))) == {None: Confidence(3.0, UnsureRule(0.7, 0.6)), "neutral": neutral}
