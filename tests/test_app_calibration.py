"""Calibrate to my voice: the page's and /predict's calibrated answers are the library's, and a
calibration stays in its own session (never seen by another session or request)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import numpy as np
import pytest
import soundfile

import app
from app_support import ANGRY, utterances, write_clip
from ser_train.analysis import RecordingAnalysis, analyse_recording
from ser_train.audio import SAMPLING_RATE, load_audio
from ser_train.calibration_prompts import CALIBRATION_PROMPTS, MOODS, PASSAGE
from ser_train.confidence import (
    CALIBRATED_CONFIDENCE_KEY,
    DEFAULT_UNSURE_RULE,
    TEMPERATURE_KEY,
    UNSURE_RULE_KEY,
    Confidence,
    UnsureRule,
    measured_unsure_accuracies,
    with_temperature,
)
from ser_train import cli
from ser_train.cli import CALIBRATION_PROMPT_NAMES
from ser_train.data import EMOTIONS
from ser_train.errors import AudioError
from ser_train.inference import DEFAULT_MODEL, load_model, seconds_of
from ser_train.serving import ModelRegistry
from ser_train.timeline import BATCH_SIZE, Segment, SpeechMap, speech_bounds
from speech import sentences

@pytest.fixture(autouse=True)
def offer_calibratable_model(monkeypatch, calibratable_cnn, precalibration_cnn):
    monkeypatch.setattr(app, "models", ModelRegistry((DEFAULT_MODEL, str(calibratable_cnn), str(precalibration_cnn))))


@pytest.fixture(scope="module")
def passage(tmp_path_factory):
    """About 20 s of calm speech with pauses, as a visitor reading the passage gives."""
    path = tmp_path_factory.mktemp("calibration") / "passage.wav"
    soundfile.write(path, sentences(6, pause_s=0.8), SAMPLING_RATE)
    return str(path)


@pytest.fixture(scope="module")
def mood_lines(tmp_path_factory):
    """One line said calm, happy, sad and angry, twice round, with pauses (about 22 s), as the
    mood prompt asks."""
    path = tmp_path_factory.mktemp("calibration") / "moods.wav"
    soundfile.write(path, sentences(8, pause_s=0.7), SAMPLING_RATE)
    return str(path)


def shown(outputs: app.PageOutputs) -> list[float]:
    return list(outputs.probabilities["value"].values())


def test_a_calibrated_session_gets_the_librarys_calibrated_answer_and_others_do_not(calibratable_cnn, passage, tmp_path):
    name = str(calibratable_cnn)
    clip = str(write_clip(tmp_path / "angry.wav", sampling_rate=16_000, emotion=ANGRY))
    model = load_model(name)
    calibration = model.calibrate_recording(load_audio(passage), source="neutral")
    assert calibration.clips == 6 and not calibration.spread_estimated  # six sentences, mean shift
    calibrated = list(model.predict_file(clip, calibration=calibration).values())
    uncalibrated = list(model.predict_file(clip).values())
    assert not np.allclose(calibrated, uncalibrated, atol=1e-4)

    session_a, status = app.calibrate_handler(passage, name, "", {}, PASSAGE.name)
    assert "Calibration is **on**" in status and "a calm passage" in status and list(session_a) == [name]
    session_b: dict = {}  # another visitor, who never calibrated

    def page(session):
        return shown(app.predict_handler(clip, name, "", None, None, session))

    # Two sessions at once, interleaved on threads: each gets its own answer.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(page, [session_a, session_b] * 4))
    for answer in answers[0::2]:
        assert answer == pytest.approx(calibrated, abs=1e-6)
    for answer in answers[1::2]:
        assert answer == pytest.approx(uncalibrated, abs=1e-6)
    assert session_b == {}
    # Each answer says whether it came through the visitor's calibration.
    answered = {id(session): app.predict_handler(clip, name, "", None, None, session) for session in (session_a, session_b)}
    assert "calibrated to your voice" in answered[id(session_a)].summary.split("\n\n")[1]
    assert f"{app.display_name(name)}, calibrated to your voice" in answered[id(session_a)].probabilities["label"]
    assert "calibrated" not in answered[id(session_b)].summary and "calibrated" not in answered[id(session_b)].probabilities["label"]

    # /predict: the calibration recording counts for its own request only.
    assert list(app.predict_api(clip, name, passage, PASSAGE.name).values()) == pytest.approx(calibrated, abs=1e-6)
    assert list(app.predict_api(clip, name).values()) == pytest.approx(uncalibrated, abs=1e-6)

    state, status = app.reset_calibration()
    assert state == {} and "Calibration is **off**" in status
    assert page(state) == pytest.approx(uncalibrated, abs=1e-6)


def test_a_calibration_recording_counts_its_speech_and_one_without_speech_is_refused(calibratable_cnn, tmp_path, capsys):
    """Calibrating to a tone, music or a room's noise would move every later answer without a word:
    other sounds in a calibration recording are left out, and one with no speech is refused, on the
    page (the session keeps its calibration), by /predict and by the CLI."""
    name = str(calibratable_cnn)
    model = load_model(name)
    tones = utterances([ANGRY, ANGRY], speech_s=2.5, pause_s=1.0)
    with_tones = np.concatenate([load_audio(write_sentences(tmp_path / "six.wav", 6)), tones])
    assert model.calibrate_recording(with_tones, "neutral").clips == 6  # the six sentences, not the tones

    tones_wav = tmp_path / "tones.wav"
    soundfile.write(tones_wav, np.concatenate([tones] * 4), SAMPLING_RATE)  # 16 s: long enough to be read
    with pytest.raises(AudioError, match="No speech heard in the calibration recording"):
        model.calibrate_recording(load_audio(tones_wav), "neutral")
    session, status = app.calibrate_handler(str(tones_wav), name, "", {}, PASSAGE.name)
    assert status.startswith("⚠️ No speech heard in the calibration recording") and session == {}
    calibrated, _ = app.calibrate_handler(write_sentences(tmp_path / "passage.wav", 6), name, "", {}, PASSAGE.name)
    again, status = app.calibrate_handler(str(tones_wav), name, "", calibrated, PASSAGE.name)
    assert again == calibrated and "Calibration is **on**" in status  # the session's calibration stays
    clip = str(write_clip(tmp_path / "clip.wav"))
    with pytest.raises(gr.Error, match="No speech heard in the calibration recording"):
        app.predict_api(clip, name, str(tones_wav), PASSAGE.name)
    capsys.readouterr()
    assert cli.main(["predict", clip, "--model", name, "--calibration", str(tones_wav), "--calibration-prompt", PASSAGE.name]) == cli.EXIT_USER_ERROR
    assert "error: No speech heard in the calibration recording" in capsys.readouterr().err


def test_a_calibration_recording_with_too_little_speech_is_refused(calibratable_cnn, tmp_path, capsys):
    """One short sentence in 15 s of a quiet room passes the length check but says little about a
    voice: refused with how much speech was heard, on the page, by /predict and by the CLI."""
    name = str(calibratable_cnn)
    room = np.random.default_rng(0).normal(0, 1e-4, 7 * SAMPLING_RATE).astype(np.float32)
    recording = tmp_path / "one-line.wav"
    soundfile.write(recording, np.concatenate([room, sentences(1, pause_s=0.5), room]), SAMPLING_RATE)
    heard = load_model(name).calibrate_recording(load_audio(recording), PASSAGE.source).seconds
    assert 0.5 < heard < PASSAGE.min_speech_s < MOODS.min_speech_s

    for prompt in (PASSAGE, MOODS):
        session, status = app.calibrate_handler(str(recording), name, "", {}, prompt.name)
        assert session == {} and status.startswith(f"⚠️ Only {heard:.1f} s of speech heard in the calibration recording")
        assert f"(at least {prompt.min_speech_s:g} s of speech), somewhere quiet" in status
    clip = str(write_clip(tmp_path / "clip.wav"))
    with pytest.raises(gr.Error, match="s of speech heard in the calibration recording"):
        app.predict_api(clip, name, str(recording), PASSAGE.name)
    capsys.readouterr()
    assert cli.main(["predict", clip, "--model", name, "--calibration", str(recording)]) == cli.EXIT_USER_ERROR
    assert "s of speech heard in the calibration recording" in capsys.readouterr().err


def write_sentences(path, count: int) -> str:
    soundfile.write(path, sentences(count, pause_s=0.8), SAMPLING_RATE)
    return str(path)


def test_the_mood_prompt_calibrates_as_the_prompted_moods_on_the_page_predict_and_cli(calibratable_cnn, mood_lines, tmp_path, capsys):
    import json

    from ser_train.cli import main

    name = str(calibratable_cnn)
    clip = str(write_clip(tmp_path / "angry.wav", sampling_rate=16_000, emotion=ANGRY))
    model = load_model(name)
    calibration = model.calibrate_recording(load_audio(mood_lines), source="moods")
    assert calibration.clips == 8 and calibration.spread_estimated  # eight lines: mean and spread move
    expected = list(model.predict_file(clip, calibration=calibration).values())
    # The prompt decides how the recording is read: not as a passage, nor as any speech (compared
    # with all of the training speakers' speech instead of their speech in those moods).
    for other in ("neutral", "speech"):
        read_otherwise = model.predict_file(clip, calibration=model.calibrate_recording(load_audio(mood_lines), source=other))
        assert not np.allclose(expected, list(read_otherwise.values()), atol=1e-4)

    # The page offers it as the first choice (and /predict reads a recording so by default); its
    # instructions name the four moods.
    assert app.PAGE_CALIBRATION_PROMPT is MOODS and next(iter(CALIBRATION_PROMPTS.values())) is MOODS
    assert list(app.predict_api(clip, name, mood_lines).values()) == pytest.approx(expected, abs=1e-6)
    assert all(mood in app.prompt_instructions(MOODS.name) for mood in ("calm", "happy", "sad", "angry"))
    session, status = app.calibrate_handler(mood_lines, name, "", {}, MOODS.name)
    assert "one line in four moods" in status and "8 stretches" in status and "your voice's average and range" in status
    assert shown(app.predict_handler(clip, name, "", None, None, session)) == pytest.approx(expected, abs=1e-6)
    assert list(app.predict_api(clip, name, mood_lines, "moods").values()) == pytest.approx(expected, abs=1e-6)
    assert main(["predict", clip, "--model", name, "--calibration", mood_lines, "--calibration-prompt", "moods", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert list(result["probabilities"].values()) == pytest.approx(expected, abs=1e-6)
    assert set(CALIBRATION_PROMPT_NAMES) == set(CALIBRATION_PROMPTS)  # the CLI's choices, named without torch


def test_calibration_problems_are_explained_and_keep_the_session_state(calibratable_cnn, precalibration_cnn, passage, tmp_path):
    name = str(calibratable_cnn)
    short = str(write_clip(tmp_path / "short.wav", sampling_rate=16_000, duration_s=3.0))
    state, status = app.calibrate_handler(short, name, "", {}, PASSAGE.name)
    assert state == {} and "reading the whole passage (at least 10 s)" in status
    state, status = app.calibrate_handler(short, name, "", {}, MOODS.name)
    assert state == {} and "saying the line twice in each of the four moods (at least 12 s)" in status
    state, status = app.calibrate_handler(None, name, "", {})
    assert "No calibration recording yet" in status
    state, status = app.calibrate_handler(passage, name, "", {}, None)
    assert state == {} and "Choose what you recorded" in status
    with pytest.raises(gr.Error, match="Unknown calibration prompt 'shouting'"):
        app.predict_api(short, name, passage, "shouting")

    calibrated, _ = app.calibrate_handler(passage, name, "", {}, PASSAGE.name)
    state, status = app.calibrate_handler(passage, str(precalibration_cnn), "", calibrated)
    # A model that predates calibration: said so, and the session keeps its calibration.
    assert "cannot be calibrated" in status and "Calibration is **on**" in status
    assert state == calibrated and list(calibrated) == [name]


def test_cli_predict_with_a_calibration_recording_gives_the_librarys_answer(calibratable_cnn, passage, tmp_path, capsys):
    import json

    from ser_train.cli import main

    clip = write_clip(tmp_path / "angry.wav", sampling_rate=16_000, emotion=ANGRY)
    model = load_model(str(calibratable_cnn))
    expected = model.predict_file(clip, calibration=model.calibrate_recording(load_audio(passage), source="neutral"))
    assert main(["predict", str(clip), "--model", str(calibratable_cnn), "--calibration", passage, "--calibration-prompt", "passage", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["probabilities"] == pytest.approx(expected, abs=1e-6)


def test_the_status_reports_what_calibration_from_that_prompt_measured_for_the_model(tmp_path):
    import json

    (tmp_path / "eval_results.json").write_text(
        json.dumps({"calibration": {"mean_over_folds": {"neutral": {"calibrated": 0.626, "uncalibrated_same_clips": 0.637}}}})
    )
    said = app.measured_effect(str(tmp_path), PASSAGE)
    assert "neutral and calm clips: balanced accuracy 62.6%, against 63.7% uncalibrated" in said
    assert app.measured_effect(str(tmp_path), MOODS) == ""  # not measured for this model: nothing claimed
    # A record from before the prompt asked for each mood twice measured one clip per mood: another sample.
    moods_row = {"calibrated": 0.81, "uncalibrated_same_clips": 0.78}
    (tmp_path / "eval_results.json").write_text(json.dumps({"calibration": {"mean_over_folds": {"prompted_moods": moods_row}}}))
    assert app.measured_effect(str(tmp_path), MOODS) == ""
    # Nor is one that read them as any speech (before they were compared with the training
    # speakers' speech in those moods).
    for moods_row["clips_per_mood"], moods_row["calibrated_as"], claimed in ((2, "speech", False), (2, "moods", True)):
        (tmp_path / "eval_results.json").write_text(json.dumps({"calibration": {"mean_over_folds": {"prompted_moods": moods_row}}}))
        assert bool(app.measured_effect(str(tmp_path), MOODS)) is claimed
    said = app.measured_effect(str(tmp_path), MOODS)
    assert "two clips each of calm, happy, sad and angry speech: balanced accuracy 81.0%, against 78.0% uncalibrated" in said
    assert app.measured_effect(str(tmp_path / "no-such-model"), PASSAGE) == ""


def test_the_status_reports_first_what_calibration_did_on_corpora_left_out_of_training(tmp_path):
    import json

    def held_out_results(calibrated_as: str) -> dict:
        mood_row = {"clips_per_mood": 2, "calibrated_as": calibrated_as}
        return {
            "leave_one_corpus_out": {
                "corpus-a": {"mood_calibration": mood_row, "neutral_calibration": {}},
                "corpus-b": {"mood_calibration": mood_row, "neutral_calibration": {}},
                "mean": {
                    "mood_calibration": {"balanced_accuracy": 0.596, "uncalibrated_same_clips": 0.427},
                    "neutral_calibration": {"balanced_accuracy": 0.344, "uncalibrated_same_clips": 0.377},
                },
            },
            "calibration": {"mean_over_folds": {"prompted_moods": {**mood_row, "calibrated": 0.813, "uncalibrated_same_clips": 0.758}}},
        }

    (tmp_path / "eval_results.json").write_text(json.dumps(held_out_results("moods")))
    said = app.measured_effect(str(tmp_path), MOODS)
    on_corpora = said.index("On corpora it never trained on, calibrated from two clips each of calm, happy, sad and angry speech: balanced accuracy 59.6%, against 42.7% uncalibrated on the same clips.")
    assert on_corpora < said.index("On actors of its own corpora it never heard") and "81.3%, against 75.8%" in said
    # A calibration that lowered accuracy is reported as such, not left out.
    assert "their neutral and calm clips: balanced accuracy 34.4%, against 37.7% uncalibrated on the same clips" in app.measured_effect(str(tmp_path), PASSAGE)
    # Records that read the mood lines as any speech measured another sample: neither is claimed.
    (tmp_path / "eval_results.json").write_text(json.dumps(held_out_results("speech")))
    assert app.measured_effect(str(tmp_path), MOODS) == ""


def test_an_unsure_calibrated_answer_says_how_its_rule_was_measured(calibratable_cnn, passage, tmp_path):
    model = load_model(str(calibratable_cnn))
    clip = write_clip(tmp_path / "angry.wav", sampling_rate=16_000, emotion=ANGRY)
    calibration = model.calibrate_recording(load_audio(passage), source="neutral")
    assert analyse_recording(model.with_calibration(calibration), clip).calibrated
    assert not analyse_recording(model, clip).calibrated
    long_recording = SpeechMap(tmp_path / "long.wav", num_samples=600 * SAMPLING_RATE, bounds=[], max_duration_s=600.0)
    near_tie = {emotion: 0.02 for emotion in EMOTIONS} | {"angry": 0.44, "sad": 0.42}
    uncalibrated_rule = UnsureRule(0.7, 0.6)
    unmeasured_folder = str(tmp_path)  # no eval_results.json: how often unsure answers were right is not known
    for rule, calibrated, note in (
        (uncalibrated_rule, False, app.UNSURE_NOTE),
        # A rule measured on uncalibrated answers does not vouch for a calibrated one...
        (uncalibrated_rule, True, app.UNSURE_NOTE_CALIBRATED),
        # ...a rule measured on answers calibrated the same way does.
        (UnsureRule(0.6, 0.3, calibrated_as="neutral"), True, app.UNSURE_NOTE),
        (DEFAULT_UNSURE_RULE, True, app.UNSURE_NOTE_UNMEASURED),
    ):
        segments = [Segment(0.0, 4.0, near_tie, speech_s=3.5)]
        said = app.summary_markdown({unmeasured_folder: RecordingAnalysis(near_tie, segments, long_recording, True, rule, calibrated)}, 600.0)
        assert note in said and "unsure: angry 44%, then sad 42%" in said and app.unsure_reason(rule, near_tie) in said


def test_an_unsure_answer_says_how_often_such_answers_were_right_on_each_held_out_corpus(tmp_path):
    """The rule puts its bar where held-out answers were right half the time, pooled over corpora;
    each corpus's unsure answers were right more or less often than that (the bundled default:
    31 % to 56 %), and the note quotes that range from the model's eval_results.json, for answers
    calibrated as the rule was measured."""
    answers = {"a": {"accuracy_unsure": 0.26}, "b": {"accuracy_unsure": 0.554}, "c": {"accuracy_unsure": None}}
    calibrated_answers = {"a": {"accuracy_unsure": 0.31}, "b": {"accuracy_unsure": 0.47}}
    results = {"probability_calibration": {"held_out_answers": answers, "calibrated": {"moods": {"held_out_answers": calibrated_answers}}}}
    (tmp_path / "eval_results.json").write_text(json.dumps(results))
    uncalibrated = app.unsure_note(UnsureRule(0.7, 0.6), False, str(tmp_path))
    assert "right 26% to 55% of the time" in uncalibrated and "less than half" not in uncalibrated
    assert "right 31% to 47% of the time" in app.unsure_note(UnsureRule(0.5, 0.1, calibrated_as="moods"), True, str(tmp_path))
    # No figures for answers calibrated from neutral speech: the rule's own "less than half".
    assert app.unsure_note(UnsureRule(0.5, 0.1, calibrated_as="neutral"), True, str(tmp_path)) == app.UNSURE_NOTE
    # The bundled default's own figures: one per corpus its rule was measured on.
    default_results = app.eval_results_of(DEFAULT_MODEL)
    figures = measured_unsure_accuracies(default_results, None)
    assert len(figures) == len(default_results["probability_calibration"]["measured_on"]) and f"right {min(figures):.0%} to {max(figures):.0%}" in app.unsure_note(UnsureRule(0.711, 0.601), False, DEFAULT_MODEL)



def test_an_unsure_answer_says_which_bar_it_missed_in_figures_that_cannot_seem_to_clear_it():
    """A QA pass read "unsure: angry 72%, then happy 12%" under "another is close behind": the
    bundled default needs a lead of 60.1 points, and 72 - 12 rounds to 60."""
    default_rule = UnsureRule(0.711, 0.601)
    far_ahead = {emotion: 0.0267 for emotion in EMOTIONS} | {"angry": 0.7199, "happy": 0.1199}
    assert default_rule.is_unsure(list(far_ahead.values()))
    assert app.unsure_reason(default_rule, far_ahead) == f"{app.UNSURE_REASON_BEGINNING} a lead of 60.1 points over the next (happy: 60.0 behind)."
    # At the bar's own decimal the answer is rounded down and the bar up (a review's 60.06 read "60.1 behind").
    just_under = far_ahead | {"happy": 0.7199 - 0.6006}
    assert app.unsure_reason(default_rule, just_under).endswith("a lead of 60.1 points over the next (happy: 60.0 behind).")
    assert app.unsure_reason(UnsureRule(0.71149, 0.0), far_ahead | {"angry": 0.71121}).endswith("71.2% for its top emotion (angry: 71.1%).")
    weak = {emotion: 0.05 for emotion in EMOTIONS} | {"sad": 0.45, "calm": 0.15, "angry": 0.10}
    assert app.unsure_reason(UnsureRule(0.5, 0.2), weak) == f"{app.UNSURE_REASON_BEGINNING} 50.0% for its top emotion (sad: 45.0%)."
    assert app.unsure_reason(UnsureRule(0.5, 0.4), weak) == (
        f"{app.UNSURE_REASON_BEGINNING} 50.0% for its top emotion (sad: 45.0%) and a lead of 40.0 points over the next (calm: 30.0 behind)."
    )


def test_calibrated_answers_get_the_temperature_and_unsure_rule_of_their_source(calibratable_cnn, passage, tmp_path):
    folder = tmp_path / "cnn"
    shutil.copytree(calibratable_cnn, folder)
    config = json.loads((folder / "config.json").read_text())
    neutral = Confidence(3.0, UnsureRule(0.6, 0.3, calibrated_as="neutral"))
    config |= {TEMPERATURE_KEY: 2.0, UNSURE_RULE_KEY: UnsureRule(0.7, 0.6).as_dict(), CALIBRATED_CONFIDENCE_KEY: {"neutral": neutral.as_dict()}}
    (folder / "config.json").write_text(json.dumps(config))
    model, raw = load_model(str(folder)), load_model(str(calibratable_cnn))
    clip = [load_audio(write_clip(tmp_path / "angry.wav", sampling_rate=16_000, emotion=ANGRY))]
    segments = [load_audio(passage)]
    by_passage, by_speech = model.calibrate_recording(segments[0], "neutral"), model.calibrate(segments, "speech")
    # float32 probabilities through log / T and a softmax: a few ulps of 1.
    tolerance = 10 * np.finfo(np.float32).eps
    np.testing.assert_allclose(model.predict_batch(clip), with_temperature(raw.predict_batch(clip), 2.0), atol=tolerance)
    calibrated = model.with_calibration(by_passage)
    assert calibrated.temperature == 3.0 and calibrated.unsure_rule == neutral.unsure_rule
    expected = with_temperature(raw.predict_batch(clip, by_passage), 3.0)
    np.testing.assert_allclose(calibrated.predict_batch(clip), expected, atol=tolerance)
    np.testing.assert_allclose(model.predict_batch(clip, by_passage), expected, atol=tolerance)
    assert analyse_recording(calibrated, tmp_path / "angry.wav").unsure_rule == neutral.unsure_rule
    # A source measured for nothing gets the uncalibrated confidence; the original model is untouched.
    assert model.with_calibration(by_speech).temperature == 2.0 and model.with_calibration(by_speech).unsure_rule.calibrated_as is None
    assert model.temperature == 2.0 and model.unsure_rule == UnsureRule(0.7, 0.6)
    untempered = model.untempered()
    np.testing.assert_allclose(untempered.predict_batch(clip, by_passage), raw.predict_batch(clip, by_passage), atol=tolerance)


def test_a_calibration_takes_a_turn_per_batch_of_its_speech_as_a_long_recording_does(calibratable_cnn, mood_lines, monkeypatch):
    """One pass over a calibration's 20-36 s of speech would be due that long after it asked
    (ser_train.passes), behind every long recording's batch asked meanwhile: beside seven 2-minute
    recordings a 30 s calibration took 8.1-8.5 s so, 4.7-5.0 s a batch at a time (benchmarks/live.py)."""
    model = load_model(str(calibratable_cnn))
    speech = load_audio(mood_lines)
    segments = [speech[start:end] for start, end in speech_bounds(speech)]
    turns, take_turn = [], model._passes.turn
    monkeypatch.setattr(model._passes, "turn", lambda audio_s: turns.append(audio_s) or take_turn(audio_s))
    calibration = model.calibrate_recording(speech, MOODS.source)
    batches = [segments[first : first + BATCH_SIZE] for first in range(0, len(segments), BATCH_SIZE)]
    assert len(batches) == 2 and turns == [seconds_of(batch) for batch in batches]
    # A clip's representation is its own whatever its batch-mates: the calibration of one pass.
    whole = model.calibration_from(model._calibration_support().represent(segments), MOODS.source, seconds_of(segments))
    assert (calibration.clips, calibration.seconds) == (whole.clips, whole.seconds) == (8, seconds_of(segments))
    for name in whole.shift:
        np.testing.assert_array_equal(calibration.scale[name], whole.scale[name])
        np.testing.assert_array_equal(calibration.shift[name], whole.shift[name])
