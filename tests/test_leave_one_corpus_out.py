"""Leave one corpus out: each corpus tested by models that never saw a clip of it.

Three small synthetic corpora train a real (tiny) CNN through the real runner. A spy records
every fit and every prediction, so the tests can check that no clip of a held-out corpus reaches
training, early stopping or the temperature that calibrates its probabilities.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ser_train.calibration import CLIPS_PER_PROMPTED_MOOD, PROTOCOL_REPEATS
from ser_train.confidence import CALIBRATED_CONFIDENCE_KEY, TEMPERATURE_KEY, UNSURE_RULE_KEY, fit_temperature, with_temperature
from ser_train.corpora import load_corpora
from ser_train.data import EMOTIONS, audio_arrays
from ser_train.evaluation import EVAL_RESULTS_FILE
from ser_train.held_out import MIN_NEUTRAL_CALIBRATION_S, SHORT_SPEECH_S, evaluate_held_out_corpora
from ser_train.inference import load_model
from ser_train.training import runner
from ser_train.training.cnn import CNNFamily, CNNHyperparameters
from synthetic import make_manifest_corpus

pytestmark = pytest.mark.slow

EMOTION = {name: EMOTIONS.index(name) for name in EMOTIONS}
# Three clips per emotion and speaker: the mood prompt's row calibrates on two of each mood and
# scores the rest. Long neutral clips in corpus "alpha" (3 x 5.5 s per speaker: enough to
# calibrate on); "beta" has 3 x 1.5 s, under MIN_NEUTRAL_CALIBRATION_S, so its speakers are left
# out of that row.
CORPORA = {
    "alpha": dict(labels={"neu": EMOTION["neutral"], "hap": EMOTION["happy"], "sad": EMOTION["sad"], "ang": EMOTION["angry"]},
                  speakers=("a1", "a2", "a3", "a4", "a5", "a6"), clip_duration_s=5.5),
    "beta": dict(labels={"neu": EMOTION["neutral"], "hap": EMOTION["happy"], "sad": EMOTION["sad"], "ang": EMOTION["angry"]},
                 speakers=("b1", "b2", "b3")),
    "gamma": dict(labels={"neu": EMOTION["neutral"], "hap": EMOTION["happy"], "sad": EMOTION["sad"], "fea": EMOTION["fearful"]},
                  speakers=("c1", "c2")),
}


class SpyCNNFamily(CNNFamily):
    """The real CNN family, recording which corpora each fit and prediction saw."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fits: list[dict] = []
        self.predictions: list[dict] = []

    def fit(self, train, validation, output_dir, resume, max_epochs=None):
        self.fits.append(
            {
                "dir": str(output_dir),
                "train": set(train["corpus"]),
                "validation": set(validation["corpus"]) if validation is not None else set(),
                "rows": (train["actor"], validation["actor"] if validation is not None else []),
            }
        )
        return super().fit(train, validation, output_dir, resume, max_epochs)

    def predict_proba(self, model, dataset):
        self.predictions.append({"corpora": set(dataset["corpus"]), "after_fit": self.fits[-1]["dir"]})
        return super().predict_proba(model, dataset)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    return [str(make_manifest_corpus(root / name, clips_per_label=3, **settings)) for name, settings in CORPORA.items()]


@pytest.fixture(scope="module")
def run(corpora, tmp_path_factory):
    family = SpyCNNFamily(
        CNNHyperparameters(epochs=3, patience=3, channels=16, blocks=1, batch_size=8, augmented_views=0, threads=1),
        cache_dir=tmp_path_factory.mktemp("features"),
    )
    output_dir = tmp_path_factory.mktemp("runs") / "loco"
    results = runner.run(family, corpora, output_dir, leave_one_corpus_out=True, command=["train"])
    return family, output_dir, results


def held_out_corpus(fit_dir: str) -> list[str]:
    """The corpora a fit's folder says it left out: corpora/X[/temperature/Y]."""
    parts = fit_dir.split("/")
    return [parts[i + 1] for i, part in enumerate(parts) if part in (runner.CORPORA_DIR, runner.TEMPERATURE_DIR) and i + 1 < len(parts)]


def test_no_clip_of_a_held_out_corpus_reaches_training_or_early_stopping(run):
    family, output_dir, _ = run
    held_out_fits = [fit for fit in family.fits if runner.CORPORA_DIR in fit["dir"]]
    # 3 held-out corpora; each temperature from 2 fits that also leave out one of the other two,
    # and those 6 are 3 twin pairs (each pair leaves out the same two corpora): 3 fits.
    assert len(held_out_fits) == 3 + 3
    for fit in held_out_fits:
        left_out = held_out_corpus(fit["dir"])
        assert left_out and not (fit["train"] | fit["validation"]) & set(left_out), fit
    # Every held-out prediction is of one corpus its model never saw: a nested fit answers for
    # its own held-out corpus, then for its twin's.
    for prediction in family.predictions:
        if runner.CORPORA_DIR in prediction["after_fit"]:
            left_out = held_out_corpus(prediction["after_fit"])
            assert len(prediction["corpora"]) == 1 and prediction["corpora"] <= set(left_out)
    # The published model hears all three.
    final = [fit for fit in family.fits if fit["dir"] == str(output_dir)]
    assert len(final) == 1 and final[0]["train"] == set(CORPORA)


def test_a_nested_fit_answers_for_its_twin_which_would_train_on_the_same_clips(run, corpora):
    family, output_dir, results = run
    dataset = load_corpora(corpora)
    nested = {fit["dir"]: fit["rows"] for fit in family.fits if runner.TEMPERATURE_DIR in fit["dir"]}
    for corpus in CORPORA:
        for other in set(CORPORA) - {corpus}:
            fit_dir = output_dir / runner.CORPORA_DIR / corpus / runner.TEMPERATURE_DIR / other
            twin_dir = output_dir / runner.CORPORA_DIR / other / runner.TEMPERATURE_DIR / corpus
            fitted_dir = fit_dir if str(fit_dir) in nested else twin_dir
            assert (str(fit_dir) in nested) != (str(twin_dir) in nested)  # exactly one of the pair was fitted
            # What the unfitted one would have trained and validated on is what its twin did.
            without_corpus = dataset.filter(lambda name: name != corpus, input_columns="corpus")
            parts = runner.corpus_split(without_corpus, other)
            assert nested[str(fitted_dir)] == (parts["train"]["actor"], parts["validation"]["actor"])
            # Its answers for its held-out corpus are the fitted model's.
            test = dataset.filter(lambda name: name == other, input_columns="corpus")
            model = load_model(str(fitted_dir)).untempered()
            fit = held_out_record(fit_dir)
            np.testing.assert_array_equal(fit.emotions, test["emotion"])
            # The same network on the same features, batched otherwise: float32 rounding apart.
            np.testing.assert_allclose(fit.probabilities, model.predict_batch(audio_arrays(test)), atol=1e-5)


def test_each_corpus_temperature_comes_from_fits_that_never_saw_it(run):
    _, output_dir, results = run
    labels = list(EMOTIONS)
    for corpus in CORPORA:
        entry = results["leave_one_corpus_out"][corpus]
        inner_dir = output_dir / runner.CORPORA_DIR / corpus / runner.TEMPERATURE_DIR
        assert sorted(entry["temperature_from"]) == sorted(set(CORPORA) - {corpus})
        scored = []
        for other in entry["temperature_from"]:
            scored.append(runner._scored(held_out_record(inner_dir / other), labels))
        expected = fit_temperature([p for p, _ in scored], [r for _, r in scored])
        assert entry["temperature"] == pytest.approx(expected, rel=1e-9)


def held_out_record(fit_dir) -> runner.HeldOutFit:
    return runner._read_held_out_fit(fit_dir / runner.HELD_OUT_FILE)


def test_calibrated_answers_are_of_the_corpus_each_fit_never_saw(run):
    """Each fit keeps its answers with speaker calibration for its own held-out corpus only: the
    mood prompt's PROTOCOL_REPEATS draws of 4 scored clips per speaker, and neutral calibration
    where the corpus has enough neutral speech (alpha only)."""
    _, output_dir, _ = run
    speakers = {"alpha": 6, "beta": 3}  # gamma has no angry clips, so no mood prompt
    for corpus in CORPORA:
        fit_dirs = {corpus: output_dir / runner.CORPORA_DIR / corpus}
        fit_dirs |= {other: output_dir / runner.CORPORA_DIR / corpus / runner.TEMPERATURE_DIR / other for other in set(CORPORA) - {corpus}}
        for tested, fit_dir in fit_dirs.items():
            fit = held_out_record(fit_dir)
            calibrated = dict(fit.calibrated)
            # Scored: the emotions the corpus shares with the fit's training.
            shared = {EMOTIONS[e] for e in CORPORA[tested]["labels"].values()} & set(fit.trained_labels)
            if tested == "alpha":
                assert len(calibrated.pop("neutral")[1]) == 6 * 3 * (len(shared) - 1)
            # The mood prompt's answers (one clip of each shared emotion left per speaker and draw),
            # keyed by what the fit calibrated them as: "speech" for a fit whose training lacked one
            # of the moods (trained on gamma alone: no angry clips).
            mood_prompt = [len(references) for _, references in calibrated.values()]
            assert mood_prompt == ([PROTOCOL_REPEATS * speakers[tested] * len(shared)] if tested in speakers else [])
            assert set(calibrated) <= {"moods", "speech"}


def test_calibrated_rows_are_tempered_by_fits_that_never_saw_the_corpus(run):
    _, output_dir, results = run
    loco = results["leave_one_corpus_out"]
    for corpus in CORPORA:
        nested = [held_out_record(output_dir / runner.CORPORA_DIR / corpus / runner.TEMPERATURE_DIR / other) for other in set(CORPORA) - {corpus}]
        for row, source in (("neutral_calibration", "neutral"), ("mood_calibration", "moods")):
            if "metrics" not in loco[corpus][row]:
                continue
            answers = [fit.calibrated[source] for fit in nested if source in fit.calibrated]
            # A source the nested fits never answered with falls back to the uncalibrated temperature.
            expected = fit_temperature(*zip(*answers)) if answers else loco[corpus]["temperature"]
            assert loco[corpus][row]["temperature"] == pytest.approx(expected, rel=1e-9)


def test_held_out_entries_report_what_the_issue_asks(run, corpora):
    _, _, results = run
    loco = results["leave_one_corpus_out"]
    assert set(loco) == set(CORPORA) | {"mean"}
    # gamma holds fearful, which no other corpus trains: it is not scored there.
    assert loco["gamma"]["scoring"]["scored_labels"] == ["neutral", "happy", "sad"]
    for corpus in CORPORA:
        entry = loco[corpus]
        metrics = entry["metrics"]
        assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "most_predicted"} <= set(metrics)
        assert 0 < metrics["most_predicted"]["share"] <= 1 and 0 <= entry["ece"] <= 1
        assert set(entry["short_speech"]) == {str(s) for s in SHORT_SPEECH_S}
    # alpha's speakers have 11 s of neutral speech each and are calibrated; beta's 3 s are too little.
    assert loco["alpha"]["neutral_calibration"]["speakers_calibrated"] == 6
    assert loco["beta"]["neutral_calibration"] == {
        "speakers_calibrated": 0, "speakers_left_out": 3, "min_calibration_s": MIN_NEUTRAL_CALIBRATION_S
    }
    # Neutral clips calibrate and are never scored: alpha scores its 6 x 3 x 3 other clips.
    assert loco["alpha"]["neutral_calibration"]["metrics"]["num_examples"] == 54
    # The mood prompt: two clips of each of neutral, happy, sad, angry calibrate, the speaker's
    # other 4 clips are scored, in each of PROTOCOL_REPEATS draws; gamma has no angry clips.
    for corpus, speakers in (("alpha", 6), ("beta", 3)):
        moods = loco[corpus]["mood_calibration"]
        assert moods["speakers_calibrated"] == speakers and moods["clips_per_mood"] == CLIPS_PER_PROMPTED_MOOD == 2 and moods["calibrated_as"] == "moods"
        assert moods["metrics"]["num_examples"] == PROTOCOL_REPEATS * speakers * 4
        assert moods["uncalibrated_same_clips"]["num_examples"] == moods["metrics"]["num_examples"]
    gamma = loco["gamma"]["mood_calibration"]
    assert (gamma["speakers_calibrated"], gamma["speakers_left_out"], "metrics" in gamma) == (0, 2, False)
    assert loco["mean"]["mood_calibration"]["balanced_accuracy"] == pytest.approx(
        np.mean([loco[c]["mood_calibration"]["metrics"]["balanced_accuracy"] for c in ("alpha", "beta")])
    )
    mean = loco["mean"]
    expected = np.mean([loco[c]["metrics"]["balanced_accuracy"] for c in CORPORA])
    assert mean["balanced_accuracy"] == pytest.approx(expected)
    assert mean["most_predicted_share_max"] == max(loco[c]["metrics"]["most_predicted"]["share"] for c in CORPORA)


def test_held_out_ua_is_that_of_the_saved_model_on_the_corpus(run, corpora):
    _, output_dir, results = run
    dataset = load_corpora(corpora)
    beta = dataset.filter(lambda name: name == "beta", input_columns="corpus")
    model = load_model(str(output_dir / runner.CORPORA_DIR / "beta"))
    probabilities = model.predict_batch(audio_arrays(beta))
    references = np.array(beta["emotion"])
    shared = [EMOTION[name] for name in results["leave_one_corpus_out"]["beta"]["scoring"]["scored_labels"]]
    predictions = np.array(shared)[probabilities[:, shared].argmax(axis=1)]
    recalls = [np.mean(predictions[references == e] == e) for e in shared]
    assert results["leave_one_corpus_out"]["beta"]["metrics"]["balanced_accuracy"] == pytest.approx(np.mean(recalls))


def test_the_published_model_carries_its_temperature_and_unsure_rule(run, corpora):
    _, output_dir, results = run
    config = json.loads((output_dir / "config.json").read_text())
    calibration = results["probability_calibration"]
    assert config[TEMPERATURE_KEY] == calibration["temperature"] > 0
    assert config[UNSURE_RULE_KEY] == calibration["unsure_rule"]
    assert sorted(calibration["measured_on"]) == sorted(CORPORA)
    # The final model's temperature is fitted on the held-out corpora's own fits (no new fits).
    labels = list(EMOTIONS)
    scored = []
    for corpus in CORPORA:
        scored.append(runner._scored(held_out_record(output_dir / runner.CORPORA_DIR / corpus), labels))
    assert calibration["temperature"] == pytest.approx(fit_temperature([p for p, _ in scored], [r for _, r in scored]), rel=1e-9)

    published = load_model(str(output_dir))
    assert published.temperature == calibration["temperature"] and published.unsure_rule.measured
    clips = audio_arrays(load_corpora(corpora[0]).select(range(4)))
    raw = published.untempered().predict_batch(clips)
    # float32 probabilities through float64 logs: agreement to float32 rounding.
    np.testing.assert_allclose(published.predict_batch(clips), with_temperature(raw, calibration["temperature"]), atol=1e-6)
    assert json.loads((output_dir / EVAL_RESULTS_FILE).read_text())["protocol"] == "leave_one_corpus_out"


def test_the_published_model_carries_a_temperature_and_unsure_rule_per_calibration_source(run, corpora):
    _, output_dir, results = run
    config = json.loads((output_dir / "config.json").read_text())
    calibrated = results["probability_calibration"]["calibrated"]
    fits = [held_out_record(output_dir / runner.CORPORA_DIR / corpus) for corpus in CORPORA]
    assert set(calibrated) == {"neutral", "moods"}
    published = load_model(str(output_dir))
    for source, found in calibrated.items():
        answers = [fit.calibrated[source] for fit in fits if source in fit.calibrated]
        assert found["temperature"] == pytest.approx(fit_temperature(*zip(*answers)), rel=1e-9)
        assert found["unsure_rule"]["calibrated_as"] == source and found["unsure_rule"]["measured"]
        assert config[CALIBRATED_CONFIDENCE_KEY][source] == {"temperature": found["temperature"], "unsure_rule": found["unsure_rule"]}
        assert published.confidence[source].temperature == found["temperature"]
    alpha = load_corpora(corpora[0])
    speaker = alpha.filter(lambda name: name == alpha["speaker"][0], input_columns="speaker")
    calibration = published.calibrate(audio_arrays(speaker), "neutral")
    assert published.with_calibration(calibration).unsure_rule.calibrated_as == "neutral"


def test_a_resumed_run_refits_nothing(run, corpora):
    family, output_dir, results = run
    # A record from before calibrated answers were kept gets them from its saved model.
    nested = output_dir / runner.CORPORA_DIR / "beta" / runner.TEMPERATURE_DIR / "gamma"  # a fit, not a twin's answers
    kept = held_out_record(nested)
    with np.load(nested / runner.HELD_OUT_FILE) as saved:
        np.savez(nested / runner.HELD_OUT_FILE, **{key: saved[key] for key in ("probabilities", "emotions", "trained_labels", "best_epoch")})
    assert held_out_record(nested).calibrated is None
    (output_dir / runner.CORPORA_DIR / "beta" / runner.HELD_OUT_RESULT_FILE).unlink()
    again = SpyCNNFamily(family.hp, cache_dir=family.cache_dir)
    resumed = runner.run(again, corpora, output_dir, leave_one_corpus_out=True, resume=True, command=["train"])
    assert [fit["dir"] for fit in again.fits] == [str(output_dir)]  # only the final model, which resumes from its checkpoint
    assert resumed["leave_one_corpus_out"] == results["leave_one_corpus_out"]
    for source, (probabilities, references) in kept.calibrated.items():
        np.testing.assert_array_equal(held_out_record(nested).calibrated[source][1], references)
        np.testing.assert_allclose(held_out_record(nested).calibrated[source][0], probabilities, atol=1e-6)


def test_the_card_shows_every_held_out_corpus_and_the_confidence_rule(run):
    from huggingface_hub import ModelCard

    from ser_train.model_card import CALIBRATION_SOURCE_TITLES, write_model_card

    _, output_dir, results = run
    card = ModelCard.load(write_model_card(output_dir))
    loco = results["leave_one_corpus_out"]
    # Synthetic corpora are unknown to the card: their licences are their own, so "other".
    assert card.data.license == "other"
    assert "### Corpora held out of training" in card.text and "### Confidence" in card.text
    assert "each of neutral/calm, happy, sad, angry\n(what the demo's mood prompt asks a visitor for) and compared with the training speakers' speech in those moods" in card.text
    for corpus in CORPORA:
        entry = loco[corpus]
        most = entry["metrics"]["most_predicted"]
        row = (
            f"| {corpus} | {entry['metrics']['accuracy']:.3f} | {entry['metrics']['balanced_accuracy']:.3f} | "
            f"{entry['metrics']['macro_f1']:.3f} | {most['emotion']} {100 * most['share']:.0f}% | {entry['ece']:.3f} |"
        )
        assert row in card.text
    assert f"| **mean** | {loco['mean']['accuracy']:.3f} | {loco['mean']['balanced_accuracy']:.3f} |" in card.text
    moods = loco["alpha"]["mood_calibration"]
    assert f"| {moods['metrics']['balanced_accuracy']:.3f} ({moods['uncalibrated_same_clips']['balanced_accuracy']:.3f}), {moods['ece']:.3f} |" in card.text
    temperature = results["probability_calibration"]["temperature"]
    assert f"T = {temperature:.2f}" in card.text
    for source, found in results["probability_calibration"]["calibrated"].items():
        rule = found["unsure_rule"]
        for corpus, summary in found["held_out_answers"].items():
            assert (
                f"| {CALIBRATION_SOURCE_TITLES[source]} | {found['temperature']:.2f} | {rule['min_confidence']:.3f} / {rule['min_margin']:.3f} "
                f"| {corpus} | {100 * summary['unsure_share']:.0f}% |"
            ) in card.text
    held_out = {entry.dataset_type: entry.metric_value for entry in card.data.eval_results if entry.metric_type == "balanced_accuracy"}
    assert held_out == {corpus: round(loco[corpus]["metrics"]["balanced_accuracy"], 4) for corpus in CORPORA}


def test_a_finished_model_is_judged_with_its_own_temperature_per_calibration_source(calibratable_cnn, corpora, tmp_path):
    """`evaluate --held-out-corpora`: each row of a corpus the model never trained on is tempered
    by the model's own temperature for that row's answers."""
    folder = tmp_path / "cnn"
    shutil.copytree(calibratable_cnn, folder)
    config = json.loads((folder / "config.json").read_text())
    rule = {"min_confidence": 0.5, "min_margin": 0.1}
    config |= {
        TEMPERATURE_KEY: 2.0,
        CALIBRATED_CONFIDENCE_KEY: {source: {"temperature": t, "unsure_rule": rule} for source, t in (("neutral", 3.0), ("moods", 1.5), ("speech", 1.25))},
    }
    (folder / "config.json").write_text(json.dumps(config))
    entry = evaluate_held_out_corpora(load_model(str(folder)), load_corpora(corpora[0]), "alpha")["alpha"]
    assert entry["temperature"] == 2.0 and entry["neutral_calibration"]["temperature"] == 3.0
    moods = entry["mood_calibration"]
    assert moods["temperature"] == {"neutral": 3.0, "moods": 1.5, "speech": 1.25}[moods["calibrated_as"]]
