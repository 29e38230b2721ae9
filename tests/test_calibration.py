"""Speaker calibration: the statistics, the protocol, the CNN family, and that speakers stay apart."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ser_train.calibration import (
    MIN_CLIPS_FOR_SPREAD,
    PROMPTED_MOODS,
    PROTOCOL_REPEATS,
    Calibration,
    calibrate,
    evaluate_calibration,
    fill_earlier_population,
    population_statistics,
    prompted_mood_clips,
    read_population,
    register_population,
    speaker_affine,
    summarise_folds,
    write_population,
)
from ser_train.data import EMOTIONS, audio_arrays, load_ravdess, split_by_actor
from ser_train.errors import ModelError, SERError
from ser_train.evaluation import calibration_rows, classification_metrics
from ser_train.inference import load_model

DIM = 4
FRAMES_PER_CLIP = 50
NEUTRAL_IDS = [EMOTIONS.index("neutral"), EMOTIONS.index("calm")]


def synthetic_speaker(rng, offset: np.ndarray, clips_per_emotion: int) -> tuple[list[np.ndarray], list[int]]:
    """Frames of one speaker: their offset (voice, microphone) + the emotion's pattern + noise."""
    patterns = np.linspace(-3, 3, len(EMOTIONS))[:, None] * np.array([1.0, -0.5, 0.8, 0.3])
    clips, emotions = [], []
    for emotion in range(len(EMOTIONS)):
        for _ in range(clips_per_emotion):
            clips.append(offset + patterns[emotion] + rng.normal(0, 0.7, (FRAMES_PER_CLIP, DIM)))
            emotions.append(emotion)
    return clips, emotions


def synthetic_population(rng, speakers: int, clips_per_emotion: int = 3):
    clips, emotions, owners = [], [], []
    for speaker in range(speakers):
        own, labels = synthetic_speaker(rng, rng.normal(0, 4, DIM), clips_per_emotion)
        clips += own
        emotions += labels
        owners += [speaker] * len(own)
    return clips, emotions, owners


@pytest.fixture(scope="module")
def population():
    clips, emotions, owners = synthetic_population(np.random.default_rng(0), speakers=12)
    return population_statistics(clips, owners, [EMOTIONS[e] for e in emotions])


def test_many_clips_map_a_speaker_onto_the_population(population):
    clips, _ = synthetic_speaker(np.random.default_rng(1), np.full(DIM, 10.0), clips_per_emotion=5)
    scale, shift, spread = speaker_affine(clips, population, "speech")
    assert spread
    calibrated = np.concatenate(clips) * scale + shift
    # 40 clips outweigh the prior (prior_clips is small here: speakers differ much more than
    # clip means of one speaker do), so the speaker lands on the population mean and spread.
    assert population.prior_clips.max() < 1
    np.testing.assert_allclose(calibrated.mean(axis=0), population.mean, atol=0.05 * population.std.max())
    np.testing.assert_allclose(calibrated.std(axis=0), population.std, rtol=0.1)


def test_few_clips_shift_the_mean_only_and_shrink_toward_the_population(population):
    clips, _ = synthetic_speaker(np.random.default_rng(2), np.full(DIM, 10.0), clips_per_emotion=1)
    scale, shift, spread = speaker_affine(clips[:1], population, "speech")
    assert not spread and np.all(scale == 1)
    assert MIN_CLIPS_FOR_SPREAD > 1
    # The estimated speaker mean lies between the population's and the sample's, nearer the
    # sample the more clips there are.
    sample_mean = clips[0].mean(axis=0)
    estimated = -shift + population.mean  # scale 1: shift = population mean - estimated mean
    between = (estimated - population.mean) / (sample_mean - population.mean)
    assert np.all((between > 0) & (between < 1))
    _, shift_two, _ = speaker_affine(clips[:2], population, "speech")
    pooled_two = np.concatenate(clips[:2]).mean(axis=0)
    weight_two = ((-shift_two + population.mean) - population.mean) / (pooled_two - population.mean)
    assert np.all(weight_two > between)


def test_neutral_speech_moves_the_neutral_mean_to_the_training_speakers_neutral_mean(population):
    clips, emotions = synthetic_speaker(np.random.default_rng(3), np.full(DIM, -6.0), clips_per_emotion=4)
    neutral = [clip for clip, emotion in zip(clips, emotions) if emotion in NEUTRAL_IDS]
    scale, shift, spread = speaker_affine(neutral, population, "neutral")
    assert not spread and np.all(scale == 1)
    moved = np.concatenate(neutral) + shift
    np.testing.assert_allclose(moved.mean(axis=0), population.neutral_mean, atol=0.3)
    # The neutral mean is not the overall mean: comparing neutral speech with the overall mean
    # would move the speaker by the neutral emotion's own pattern.
    assert np.abs(population.neutral_mean - population.mean).max() > 1


def test_a_calibration_says_why_it_did_not_measure_the_voices_range(population):
    """Calm speech never gives a range, however much of it: a QA pass's 15.5 s of the passage was
    told there was "too little speech to measure its range"."""
    clips, emotions = synthetic_speaker(np.random.default_rng(4), np.full(DIM, 2.0), clips_per_emotion=4)
    neutral = [{"frames": clip} for clip, emotion in zip(clips, emotions) if emotion in NEUTRAL_IDS]
    assert len(neutral) >= MIN_CLIPS_FOR_SPREAD
    assert calibrate(neutral, {"frames": population}, "neutral", 30.0).describe().endswith("(calm speech alone does not show its range)")
    assert calibrate([{"frames": clips[0]}], {"frames": population}, "speech", 3.0).describe().endswith("(too little speech to measure its range)")
    assert calibrate([{"frames": clip} for clip in clips], {"frames": population}, "speech", 30.0).describe().endswith("average and range")


def test_the_prompted_moods_are_compared_with_the_training_speakers_speech_in_those_moods(population):
    clips, emotions = synthetic_speaker(np.random.default_rng(5), np.full(DIM, 7.0), clips_per_emotion=2)
    names = [EMOTIONS[e] for e in emotions]
    sample = [clip for clip, name in zip(clips, names) if any(name in mood for mood in PROMPTED_MOODS)]
    # The population's prompted-mood mean: each mood's mean weighing the same (calm and neutral
    # are one mood), over speakers; here the patterns are known, so it is their mood mean.
    patterns = np.linspace(-3, 3, len(EMOTIONS))[:, None] * np.array([1.0, -0.5, 0.8, 0.3])
    by_mood = [np.mean([patterns[EMOTIONS.index(name)] for name in mood], axis=0) for mood in PROMPTED_MOODS]
    offsets = population.mean - patterns.mean(axis=0)  # the speakers' mean offset
    np.testing.assert_allclose(population.mood_mean, offsets + np.mean(by_mood, axis=0), atol=0.1)
    scale, shift, spread = speaker_affine(sample, population, "moods")
    assert spread
    moved = np.concatenate(sample) * scale + shift
    np.testing.assert_allclose(moved.mean(axis=0), population.mood_mean, atol=0.3 * population.mood_std.max())
    # As any speech, the same sample lands on the overall mean, one mood pattern away.
    scale, shift, _ = speaker_affine(sample, population, "speech")
    np.testing.assert_allclose((np.concatenate(sample) * scale + shift).mean(axis=0), population.mean, atol=0.3 * population.std.max())
    assert np.abs(population.mood_mean - population.mean).max() > 0.5


def test_a_model_file_saved_before_the_mood_statistics_compares_the_moods_with_all_speech(population):
    import torch

    module = torch.nn.Module()
    register_population(module, DIM)
    write_population(module, population)
    fill_earlier_population(module, ["population_mood_mean", "population_mood_std"])  # what loading an older file misses
    earlier = read_population(module)
    np.testing.assert_array_equal(earlier.mood_mean, population.mean)
    np.testing.assert_array_equal(earlier.mood_std, population.std)
    # Its mood lines calibrate as any speech, and say so (the records name what was measured).
    assert population.has_mood_statistics and not earlier.has_mood_statistics
    clips, _ = synthetic_speaker(np.random.default_rng(6), np.full(DIM, 3.0), clips_per_emotion=1)
    assert calibrate([{"frames": clip} for clip in clips], {"frames": earlier}, "moods", 8.0).source == "speech"
    assert calibrate([{"frames": clip} for clip in clips], {"frames": population}, "moods", 8.0).source == "moods"
    with pytest.raises(ModelError, match="population_std"):
        fill_earlier_population(module, ["population_std"])


def test_the_mood_prompt_draw_takes_two_clips_of_each_prompted_mood():
    emotions = ["calm", "happy", "happy", "sad", "angry", "fearful", "angry", "neutral", "sad", "happy", "neutral"]
    rng = np.random.default_rng(0)
    draws = [prompted_mood_clips(emotions, rng) for _ in range(50)]
    for positions in draws:
        assert len(positions) == len(set(positions)) == 2 * len(PROMPTED_MOODS)  # no clip twice
        pairs = positions.reshape(len(PROMPTED_MOODS), 2)  # mood by mood
        assert all(emotions[i] in mood for pair, mood in zip(pairs, PROMPTED_MOODS) for i in pair)
    # At random among the candidates: each of the three calm/neutral clips and the three happy
    # ones gets drawn.
    assert {i for positions in draws for i in positions[:2]} == {0, 7, 10}
    assert {i for positions in draws for i in positions[2:4]} == {1, 2, 9}
    assert prompted_mood_clips(["neutral", "calm", "happy", "happy", "sad", "sad", "angry"], rng) is None  # one angry clip
    assert len(prompted_mood_clips(["neutral", "happy", "sad", "angry"], rng, per_mood=1)) == 4


class CentroidModel:
    """A real classifier over synthetic frames (nearest class centroid of clip means), calibratable."""

    def __init__(self, clips, emotions, statistics):
        means = np.stack([clip.mean(axis=0) for clip in clips])
        self.centroids = np.stack([means[np.asarray(emotions) == k].mean(axis=0) for k in range(len(EMOTIONS))])
        self.statistics = {"frames": statistics}
        self.calibration_calls: list[list[int]] = []
        self.scoring_calls: list[list[int]] = []

    def represent(self, clips):
        return [{"frames": clip, "id": index} for index, clip in enumerate(clips)]

    def calibration_from(self, representations, source, seconds):
        self.calibration_calls.append([clip["id"] for clip in representations])
        return calibrate([{"frames": c["frames"]} for c in representations], self.statistics, source, seconds)

    def predict_represented(self, representations, calibration):
        if calibration is not None:
            self.scoring_calls.append([clip["id"] for clip in representations])
        frames = [clip["frames"] if calibration is None else calibration.apply("frames", clip["frames"]) for clip in representations]
        distances = ((np.stack([f.mean(axis=0) for f in frames])[:, None] - self.centroids[None]) ** 2).sum(-1)
        probabilities = np.exp(-distances)
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def test_protocol_calibrates_on_unscored_clips_and_calibration_lifts_accuracy():
    rng = np.random.default_rng(4)
    train_clips, train_emotions, owners = synthetic_population(rng, speakers=12)
    statistics = population_statistics(train_clips, owners, [EMOTIONS[e] for e in train_emotions])
    model = CentroidModel(train_clips, train_emotions, statistics)
    test_clips, test_emotions, test_speakers = synthetic_population(rng, speakers=4, clips_per_emotion=2)
    waveforms = [np.zeros(16_000, np.float32)] * len(test_clips)  # durations only; frames come from represent
    model.represent = lambda _: [{"frames": clip, "id": index} for index, clip in enumerate(test_clips)]

    results = evaluate_calibration(
        model, waveforms, test_emotions, test_speakers, list(EMOTIONS),
        predict_ids=lambda p: p.argmax(axis=1),
        metrics=lambda refs, preds: classification_metrics(refs, preds, list(EMOTIONS)),
    )

    speakers = np.asarray(test_speakers)
    for calibrated_on, scored in zip(model.calibration_calls, model.scoring_calls):
        assert not set(calibrated_on) & set(scored)  # calibration clips are never scored
        assert len(set(speakers[calibrated_on]) | set(speakers[scored])) == 1  # one speaker per calibration
    assert results["random_clips"]["3"]["calibrated"]["num_examples"] == PROTOCOL_REPEATS * 4 * (16 - 3)
    assert results["random_clips"]["all"]["calibrated"]["num_examples"] == len(test_clips)
    # Each draw's own UA is kept; the summary gives their spread, and none for the one "all" case.
    draws = results["random_clips"]["3"]["balanced_accuracy_per_draw"]
    assert len(draws) == PROTOCOL_REPEATS and len(set(draws)) > 1
    summary = summarise_folds([results, results])
    assert summary["random_clips"]["3"]["calibrated_std_over_draws"] == pytest.approx(np.std(draws, ddof=1))
    assert "calibrated_std_over_draws" not in summary["random_clips"]["all"]
    assert results["neutral"]["calibrated"]["num_examples"] == 4 * 12  # the six other emotions
    # 1-second clips: 15 s of speech is 15 of a speaker's 16 clips, 30 s more than they have.
    assert results["speech_seconds"]["15"]["calibrated"]["num_examples"] == PROTOCOL_REPEATS * 4 * (16 - 15)
    assert "30" not in results["speech_seconds"]
    assert results["self_one_emotion"]["calibrated"]["num_examples"] == len(test_clips)
    # The mood prompt (the last protocol run): two clips per prompted mood calibrate, the other 8
    # are scored. These synthetic emotions lie on one line, on which neutral, happy, sad and angry
    # sit to one side of the speaker's centre: compared with the training speakers' speech in the
    # same moods, calibration from them still lifts accuracy.
    assert results["prompted_moods"]["calibrated"]["num_examples"] == PROTOCOL_REPEATS * 4 * (16 - 8)
    # (Compared with all of the training speakers' speech, as before, it fell from 0.40 to 0.27.)
    moods = results["prompted_moods"]
    assert moods["calibrated"]["balanced_accuracy"] > moods["uncalibrated_same_clips"]["balanced_accuracy"] + 0.3
    emotion_of = np.asarray(test_emotions)
    for calibrated_on in model.calibration_calls[-PROTOCOL_REPEATS * 4:]:
        pairs = np.reshape(calibrated_on, (len(PROMPTED_MOODS), 2))
        assert all(EMOTIONS[emotion_of[i]] in mood for pair, mood in zip(pairs, PROMPTED_MOODS) for i in pair)
    # calibrated, uncalibrated on the same clips, spread over draws, and the clips per mood
    assert set(summary["prompted_moods"]) == {"calibrated", "uncalibrated_same_clips", "calibrated_std_over_draws", "clips_per_mood", "calibrated_as"}
    assert summary["prompted_moods"]["clips_per_mood"] == 2 and summary["prompted_moods"]["calibrated_as"] == "moods"
    assert ("2 clip(s) per prompted mood", *[summary["prompted_moods"][k] for k in ("calibrated", "uncalibrated_same_clips", "calibrated_std_over_draws")]) in calibration_rows({"mean_over_folds": summary})
    earlier = {**summary["prompted_moods"], "calibrated_as": "speech"}  # an earlier model's record says what it measured
    assert [r[0] for r in calibration_rows({"mean_over_folds": {**summary, "prompted_moods": earlier}}) if "prompted mood" in r[0]] == ["2 clip(s) per prompted mood, as any speech"]
    # Speakers here differ by large offsets: calibration must help, and never hurt on neutral.
    uncalibrated = results["uncalibrated"]["balanced_accuracy"]
    assert uncalibrated < 0.6
    assert results["random_clips"]["10"]["calibrated"]["balanced_accuracy"] > uncalibrated + 0.2
    assert results["random_clips"]["all"]["calibrated"]["balanced_accuracy"] > 0.9
    neutral = results["neutral"]
    assert neutral["calibrated"]["balanced_accuracy"] >= neutral["uncalibrated_same_clips"]["balanced_accuracy"]
    # A recording in one mood calibrated on itself loses that mood: far below mixed speech.
    assert results["self_one_emotion"]["calibrated"]["balanced_accuracy"] < results["random_clips"]["all"]["calibrated"]["balanced_accuracy"] - 0.3


# --- The CNN family ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_dir(calibratable_cnn, synthetic_ravdess):
    return calibratable_cnn, split_by_actor(load_ravdess(str(synthetic_ravdess)), [5, 6], [4])["test"]


def test_cnn_calibration_is_the_affine_map_of_its_features(cnn_dir):
    folder, test = cnn_dir
    model = load_model(str(folder))
    assert model.can_calibrate
    speaker = test.filter(lambda actor: actor == 5, input_columns="actor")
    waveforms = audio_arrays(speaker)
    calibration = model.calibrate(waveforms[:4])
    assert isinstance(calibration, Calibration) and calibration.clips == 4 and calibration.spread_estimated

    cnn = model._calibratable
    features = [clip["features"] for clip in cnn.represent(waveforms[4:])]
    by_hand = cnn.predict_proba_of_features([f * calibration.scale["features"] + calibration.shift["features"] for f in features])
    calibrated = model.predict_batch(waveforms[4:], calibration=calibration)
    np.testing.assert_allclose(calibrated, by_hand, atol=1e-6)
    assert not np.allclose(calibrated, model.predict_batch(waveforms[4:]), atol=1e-4)


def test_a_cnn_saved_before_the_mood_statistics_loads_and_a_file_missing_more_is_refused(cnn_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = cnn_dir
    weights = load_file(folder / "model.safetensors")
    for name, left_out in (("earlier", "population_mood"), ("broken", "feature_mean")):
        shutil.copytree(folder, tmp_path / name)
        save_file({k: v for k, v in weights.items() if left_out not in k}, tmp_path / name / "model.safetensors")
    population = load_model(str(tmp_path / "earlier"))._calibration_support().population()
    for statistics in population.values():
        np.testing.assert_array_equal(statistics.mood_mean, statistics.mean)
        np.testing.assert_array_equal(statistics.mood_std, statistics.std)
    with pytest.raises(SERError, match="feature_mean"):
        load_model(str(tmp_path / "broken"))


def test_a_calibration_changes_nothing_for_another_speaker_or_model(cnn_dir, precalibration_cnn):
    folder, test = cnn_dir
    model = load_model(str(folder))
    first = audio_arrays(test.filter(lambda actor: actor == 5, input_columns="actor"))
    second = audio_arrays(test.filter(lambda actor: actor == 6, input_columns="actor"))
    before = model.predict_batch(second)
    calibration = model.calibrate(first, source="neutral")
    model.predict_batch(first, calibration=calibration)
    # The model holds no calibration: another request (or session) gets exactly what it got before.
    np.testing.assert_array_equal(model.predict_batch(second), before)

    older = load_model(str(precalibration_cnn))  # saved before calibration existed: no statistics
    assert not older.can_calibrate
    np.testing.assert_allclose(older.predict_batch(second).sum(axis=1), 1, atol=1e-5)  # it still predicts
    with pytest.raises(ModelError, match="cannot be calibrated: it was trained before speaker calibration"):
        older.predict_batch(second, calibration=calibration)
    other = calibration.__class__(**{**calibration.__dict__, "model_id": "another"})
    with pytest.raises(ModelError, match="another model"):
        model.predict_batch(second, calibration=other)


def test_calibrated_training_views_calibrate_a_share_of_clips_per_speaker(cnn_dir):
    from ser_train.calibration import CalibratedTrainingViews
    from ser_train.models.cnn import REPRESENTATION, EmotionCNN

    folder, _ = cnn_dir
    model = EmotionCNN.from_pretrained(folder)
    rng = np.random.default_rng(0)
    clean = [rng.normal(3.0, 2.0, (30, model.feature_config.dim)).astype(np.float32) for _ in range(12)]
    speakers = [1] * 6 + [2] * 6
    emotions = ["neutral", "calm", "happy", "sad", "angry", "fearful"] * 2

    untouched = CalibratedTrainingViews(model, REPRESENTATION, clean, speakers, emotions, share=0.0).apply(clean, rng)
    assert all(a is b for a, b in zip(untouched, clean))

    views = CalibratedTrainingViews(model, REPRESENTATION, clean, speakers, emotions, share=1.0).apply(clean, np.random.default_rng(1))
    for speaker in (1, 2):
        own = [i for i, s in enumerate(speakers) if s == speaker]
        # One affine map per speaker: the scale and shift recovered from one clip hold for all.
        first = own[0]
        scale = (views[first][1] - views[first][0]) / (clean[first][1] - clean[first][0])
        shift = views[first][0] - clean[first][0] * scale
        for i in own:
            np.testing.assert_allclose(views[i], clean[i] * scale + shift, rtol=1e-3, atol=1e-3)
        assert not np.allclose(views[first], clean[first])


def test_the_printed_calibration_table_shows_a_row_without_figures_as_a_dash():
    """No speaker of any fold had neutral clips: the row is there, with no figure, not a crash."""
    from ser_train.evaluation import format_calibration_table

    summary = {"uncalibrated": 0.41, "random_clips": {}, "neutral": {"calibrated": None, "uncalibrated_same_clips": None}}
    table = format_calibration_table({"mean_over_folds": summary})
    assert table[2].split() == ["no", "calibration", "(all", "clips)", "0.410"]
    assert table[3].split() == ["neutral", "+", "calm", "clips", "-"]


def test_the_printed_calibration_table_keeps_its_columns_under_a_long_row_name():
    """A record from before the prompted moods had statistics of their own names its row
    "1 clip(s) per prompted mood, as any speech", longer than the other rows: the figures of
    every row still end under their headings."""
    from ser_train.evaluation import format_calibration_table

    moods = {"calibrated": 0.52, "uncalibrated_same_clips": 0.44, "calibrated_std_over_draws": 0.03}
    summary = {"uncalibrated": 0.41, "random_clips": {"3": {"calibrated": 0.47, "uncalibrated_same_clips": 0.40}}, "prompted_moods": moods}
    heading, *rows = format_calibration_table({"mean_over_folds": summary})[1:]
    assert rows[-1].startswith("1 clip(s) per prompted mood, as any speech  ")
    assert rows[-1].endswith("0.520 ± 0.030    0.440")
    assert [len(row) for row in rows] == [len(heading)] * 3  # "without" figures end where it does
    with_end = heading.index("with") + len("with")
    assert [row[:with_end].split()[-1] for row in rows] == ["clips)", "0.470", "0.030"]  # and "with" ones where it does
