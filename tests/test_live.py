"""The streaming API (ser_train.live) and `python -m ser_train live`: answers while the speaker
talks, "no speech" in the pauses, the same answers however the audio is chunked, bounded memory."""

from __future__ import annotations

import copy
import gc
import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile

from app_support import PROJECT_ROOT, make_tiny_wav2vec2
from ser_train.audio import SAMPLING_RATE, resample
from ser_train.confidence import Confidence, UnsureRule
from ser_train.errors import AudioError
from ser_train.inference import DEFAULT_MODEL, load_model
from ser_train.live import (
    HISTORY_S,
    MIN_JUDGED_SPEECH_S,
    MIN_SURE_SPEECH_S,
    STEP_S,
    WINDOW_S,
    LiveAnswer,
    LiveStream,
    StreamResampler,
    play,
)
from ser_train.vad import VAD_FRAME, VoiceActivity, speech_seconds
from speech import SENTENCES, silence, spoken, talk_with_pauses

FLOAT32_TOLERANCE = 1e-5  # probabilities through the same float32 model, batch and shapes equal
SENTENCE_FOR_MEMORY = "The stream keeps a window, not the recording."


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return load_model(str(make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny")))


@pytest.fixture(scope="module")
def talk():
    return talk_with_pauses()


def speech_answers_inside(answers, start_s, end_s):
    return [answer for answer in answers if start_s + STEP_S <= answer.time_s <= end_s]


def test_answers_every_step_with_emotions_while_speaking_and_no_speech_in_pauses(model, talk):
    waveform, spans = talk
    stream = LiveStream(model)
    answers = list(play(stream, waveform))

    assert len(answers) == int(len(waveform) / SAMPLING_RATE / STEP_S)
    assert [answer.time_s for answer in answers] == pytest.approx([STEP_S * (n + 1) for n in range(len(answers))])
    for start_s, end_s in spans:
        during = speech_answers_inside(answers, start_s, end_s)
        assert len(during) >= 3 and all(answer.speech for answer in during)
        judged = [answer for answer in during if answer.judged]
        assert len(judged) >= 2 and all(sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-4) for answer in judged)
    # The pause between the sentences, once the last words have left the newest step.
    pause = [answer for answer in answers if spans[0][1] + 2 * STEP_S <= answer.time_s <= spans[1][0]]
    assert pause and not any(answer.speech for answer in pause)
    assert all(answer.probabilities is None and answer.top_emotion is None for answer in pause)
    assert not answers[0].speech  # the leading silence


def test_each_answer_is_the_models_for_its_window_when_not_smoothed(tiny_model, talk):
    waveform, _ = talk
    answers = list(play(LiveStream(tiny_model, smoothing=1.0), waveform))
    spoken_answers = [answer for answer in answers if answer.judged]
    assert spoken_answers
    for answer in spoken_answers:
        start, end = round(answer.start_s * SAMPLING_RATE), round(answer.time_s * SAMPLING_RATE)
        assert end - start <= WINDOW_S * SAMPLING_RATE
        expected = tiny_model.predict_batch([waveform[start:end]])[0]
        assert list(answer.probabilities.values()) == pytest.approx(expected.tolist(), abs=FLOAT32_TOLERANCE)


def test_smoothing_averages_consecutive_answers_and_restarts_after_a_pause(tiny_model, talk):
    waveform, _ = talk
    raw = list(play(LiveStream(tiny_model, smoothing=1.0), waveform))
    smoothed = list(play(LiveStream(tiny_model, smoothing=0.5), waveform))
    previous = None
    for plain, answer in zip(raw, smoothed, strict=True):
        assert (plain.speech, plain.judged) == (answer.speech, answer.judged)
        if not plain.judged:
            previous = None if not plain.speech else previous
            continue
        row = np.array(list(plain.probabilities.values()))
        expected = row if previous is None else 0.5 * row + 0.5 * previous
        assert list(answer.probabilities.values()) == pytest.approx(expected.tolist(), abs=FLOAT32_TOLERANCE)
        previous = expected


def test_the_summary_is_the_mean_of_the_speech_answers(tiny_model, talk):
    waveform, _ = talk
    stream = LiveStream(tiny_model, smoothing=1.0)
    answers = list(play(stream, waveform))
    summary = stream.summary()
    speech = [answer for answer in answers if answer.speech]
    expected = np.mean([list(answer.probabilities.values()) for answer in speech if answer.judged], axis=0)
    assert summary.duration_s == pytest.approx(len(waveform) / SAMPLING_RATE)
    assert summary.speech_s == pytest.approx(len(speech) * STEP_S)
    assert list(summary.probabilities.values()) == pytest.approx(expected.tolist(), abs=FLOAT32_TOLERANCE)


def test_after_a_pause_the_first_second_of_speech_is_heard_but_not_judged(tiny_model, talk):
    """At an onset a model that learned from whole sentences has too little to judge: the stream
    names no emotion until the utterance holds MIN_JUDGED_SPEECH_S, and then judges the
    utterance only, not the silence before it."""
    waveform, spans = talk
    answers = list(play(LiveStream(tiny_model, smoothing=1.0), waveform))
    for start_s, end_s in spans:
        utterance = [answer for answer in answers if start_s < answer.time_s <= end_s + STEP_S and answer.speech]
        first_judged = next(answer for answer in utterance if answer.judged)
        unjudged = [answer for answer in utterance if answer.time_s < first_judged.time_s]
        assert unjudged and all(answer.probabilities is None and answer.top_emotion is None for answer in unjudged)
        assert first_judged.time_s - first_judged.start_s >= MIN_JUDGED_SPEECH_S
        # It heard the utterance from its onset (within one 32 ms voice-activity frame of a step).
        assert first_judged.start_s >= start_s - STEP_S


def test_until_an_utterance_holds_a_second_and_a_half_its_answers_are_unsure(tiny_model, talk):
    """The first answers after a pause are about the first second or so of speech, where models
    that learned from whole sentences lean on one emotion: unsure, even for a model whose rule
    would call every answer sure; later answers follow the rule."""
    waveform, _ = talk
    never_unsure = copy.copy(tiny_model)
    never_unsure.confidence = {None: Confidence(unsure_rule=UnsureRule(min_confidence=0.0, min_margin=0.0))}
    judged = [answer for answer in play(LiveStream(never_unsure), waveform) if answer.judged]
    early = [answer for answer in judged if answer.time_s - answer.start_s < MIN_SURE_SPEECH_S]
    later = [answer for answer in judged if answer.time_s - answer.start_s >= MIN_SURE_SPEECH_S]
    assert early and later
    assert all(answer.unsure for answer in early) and not any(answer.unsure for answer in later)


def test_silence_only_gives_no_speech_and_an_empty_summary(tiny_model):
    stream = LiveStream(tiny_model)
    noise = np.random.default_rng(0).normal(0, 1e-3, 5 * SAMPLING_RATE).astype(np.float32)  # breath-quiet hiss
    answers = list(play(stream, noise))
    assert len(answers) == 10 and not any(answer.speech for answer in answers)
    assert stream.summary().probabilities is None and stream.summary().top_emotion is None


@pytest.mark.parametrize("chunk_s", [0.1, 0.37, 1.3])
def test_the_answers_do_not_depend_on_how_the_audio_is_chunked(tiny_model, talk, chunk_s):
    waveform, _ = talk
    expected = list(play(LiveStream(tiny_model), waveform, chunk_s=0.5))
    answers = list(play(LiveStream(tiny_model), waveform, chunk_s=chunk_s))
    assert [(a.time_s, a.speech) for a in answers] == [(a.time_s, a.speech) for a in expected]
    for answer, reference in zip(answers, expected):
        if answer.speech:
            assert answer.probabilities == pytest.approx(reference.probabilities, abs=FLOAT32_TOLERANCE)


def test_catching_up_judges_only_the_newest_step_and_keeps_the_streams_clock_and_window(tiny_model, talk):
    """The page catches up on chunks Gradio's stream route replaced while an answer was drawn:
    the steps before the newest are heard (speech or not) with no model pass; unsmoothed, every
    answer is the model's for its window, so the judged ones match a stream fed chunk by chunk."""
    waveform, _ = talk
    expected = list(play(LiveStream(tiny_model, smoothing=1.0), waveform))
    stream, calls = LiveStream(tiny_model, smoothing=1.0), []
    stream.model = CountingModel(tiny_model, calls)
    piles = np.array_split(waveform, 7)  # piles of about 1.7 s: each completes three or four steps
    answers = []
    for pile in piles:
        passes = len(calls)
        caught_up = stream.catch_up([(SAMPLING_RATE, part) for part in np.array_split(pile, 5)])
        assert len(caught_up) in (3, 4) and not any(answer.judged for answer in caught_up[:-1])
        reference = expected[len(answers) + len(caught_up) - 1]
        assert caught_up[-1].judged == reference.judged and len(calls) - passes == reference.judged  # the newest is judged as ever
        answers += caught_up
    assert [(a.time_s, a.start_s, a.speech) for a in answers] == [(a.time_s, a.start_s, a.speech) for a in expected]
    judged = [(answer, reference) for answer, reference in zip(answers, expected) if answer.judged]
    assert judged and all(reference.judged for _, reference in judged)
    for answer, reference in judged:
        assert answer.probabilities == pytest.approx(reference.probabilities, abs=FLOAT32_TOLERANCE)


class CountingModel:
    """`model`, noting each pass in `calls`."""

    def __init__(self, model, calls: list):
        self._model, self._calls = model, calls

    def predict_batch(self, waveforms):
        self._calls.append(len(waveforms))
        return self._model.predict_batch(waveforms)

    def __getattr__(self, name):
        return getattr(self._model, name)


def test_a_48_khz_microphone_gets_the_answers_of_its_16_khz_twin(tiny_model, talk):
    waveform, _ = talk
    microphone = resample(waveform, SAMPLING_RATE, 48_000)
    stream = LiveStream(tiny_model)
    answers = [answer for start in range(0, len(microphone), 24_000) for answer in stream.feed(microphone[start : start + 24_000], 48_000)]
    expected = list(play(LiveStream(tiny_model), resample(microphone, 48_000, SAMPLING_RATE)))
    # The stream resampler holds back its last 4 ms, so the final step can be one short.
    assert len(expected) - 1 <= len(answers) <= len(expected)
    assert [a.speech for a in answers] == [a.speech for a in expected[: len(answers)]]


@pytest.mark.parametrize("rate", [48_000, 44_100, 8_000])
def test_the_stream_resampler_equals_resampling_the_whole_stream(rate):
    signal = np.random.default_rng(1).normal(0, 0.1, 3 * rate).astype(np.float32)
    resampler = StreamResampler(rate)
    pieces = [resampler.push(chunk) for chunk in np.array_split(signal, 11)]
    streamed, whole = np.concatenate(pieces), resample(signal, rate, SAMPLING_RATE)
    assert len(whole) - len(streamed) <= 2 * resampler.margin * SAMPLING_RATE // rate + 1
    # The same float32 sums in another order: a few ulps of the signal's scale.
    np.testing.assert_allclose(streamed, whole[: len(streamed)], atol=1e-6)


def test_two_streams_fed_in_turns_do_not_hear_each_other(tiny_model, talk):
    waveform, _ = talk
    other = np.concatenate([spoken("Where is the door? Open it now!"), silence(4.0)])
    alone = [list(play(LiveStream(tiny_model), audio)) for audio in (waveform, other)]
    streams = [LiveStream(tiny_model), LiveStream(tiny_model)]
    together: list[list] = [[], []]
    size = SAMPLING_RATE // 2
    for start in range(0, max(len(waveform), len(other)), size):
        for index, audio in enumerate((waveform, other)):
            if start < len(audio):
                together[index] += streams[index].feed(audio[start : start + size])
    for mixed, single in zip(together, alone):
        assert [(a.time_s, a.speech) for a in mixed] == [(a.time_s, a.speech) for a in single]
        assert [a.probabilities for a in mixed] == [a.probabilities for a in single]


def memory_held_by_the_library() -> int:
    """Bytes still allocated from ser_train's own lines: what other threads (torch, datasets)
    allocate meanwhile is not the stream's."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/ser_train/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.slow
def test_an_hour_long_stream_holds_what_a_minute_long_one_holds(tiny_model):
    # Ten minutes stand for the hour: past its first minute nothing of a stream may grow. The voice-activity model runs on every frame; the emotion model only on speech, so a quiet
    # stream (after a sentence) exercises every buffer cheaply.
    stream = LiveStream(tiny_model)
    minute = np.concatenate([spoken(SENTENCE_FOR_MEMORY), silence(60.0)])[: 60 * SAMPLING_RATE]
    stream.feed(minute)
    tracemalloc.start()
    try:
        stream.feed(minute)  # now full: every buffer at its bound
        after_two = memory_held_by_the_library()
        for _ in range(8):
            stream.feed(minute)
        after_ten = memory_held_by_the_library()
    finally:
        tracemalloc.stop()
    assert stream.summary().duration_s == pytest.approx(600.0)
    assert len(stream.history) == HISTORY_S / STEP_S
    assert len(stream.voice.probabilities) == VoiceActivity.KEPT_FRAMES
    assert after_two > 128 * 1024  # the filter sees the buffers the stream keeps renewing (about 270 KiB)
    assert after_ten - after_two < 64 * 1024  # nothing grows with the stream's length


def test_invalid_samples_and_a_changing_rate_are_refused_with_a_sentence(tiny_model):
    stream = LiveStream(tiny_model)
    with pytest.raises(AudioError, match="invalid samples"):
        stream.feed(np.full(1000, np.nan, dtype=np.float32))
    stream.feed(np.zeros(4800, dtype=np.int16), 48_000)
    with pytest.raises(AudioError, match="changed its sampling rate"):
        stream.feed(np.zeros(4410, dtype=np.int16), 44_100)


def test_a_calibrated_model_answers_each_window_through_its_calibration(calibratable_cnn, talk):
    cnn = load_model(str(calibratable_cnn))
    waveform, _ = talk
    speaker = cnn.with_calibration(cnn.calibrate_recording(waveform, source="speech"))
    plain = list(play(LiveStream(cnn, smoothing=1.0), waveform))
    calibrated = list(play(LiveStream(speaker, smoothing=1.0), waveform))

    spoken = [(answer, reference) for answer, reference in zip(calibrated, plain, strict=True) if reference.judged]
    assert spoken
    for answer, reference in spoken:
        start, end = round(answer.start_s * SAMPLING_RATE), round(answer.time_s * SAMPLING_RATE)
        expected = speaker.predict_batch([waveform[start:end]])[0]
        np.testing.assert_allclose(list(answer.probabilities.values()), expected, rtol=0, atol=1e-6)
    assert any(
        not np.allclose(list(a.probabilities.values()), list(r.probabilities.values()), atol=1e-3) for a, r in spoken
    )


def test_the_cli_prints_the_librarys_answers_as_json(model, talk, tmp_path):
    waveform, _ = talk
    path = tmp_path / "talk.flac"
    soundfile.write(path, waveform, SAMPLING_RATE, subtype="PCM_24")
    result = subprocess.run(
        [sys.executable, "-m", "ser_train", "live", str(path), "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    printed = json.loads(result.stdout)
    from ser_train.audio import load_audio

    stream = LiveStream(model)
    expected = [answer.as_dict() for answer in play(stream, load_audio(path))]
    assert [(a["time_s"], a["start_s"], a["speech"], a["top"]) for a in printed["answers"]] == [
        (a["time_s"], a["start_s"], a["speech"], a["top"]) for a in expected
    ]
    for shown, reference in zip(printed["answers"], expected):
        if reference["probabilities"]:
            assert shown["probabilities"] == pytest.approx(reference["probabilities"], abs=FLOAT32_TOLERANCE)
    assert printed["summary"]["top"] == stream.summary().top_emotion
    assert printed["summary"]["speech_s"] == pytest.approx(stream.summary().speech_s)


def test_the_cli_refuses_a_bad_file_with_one_sentence(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio\n" * 20)
    result = subprocess.run([sys.executable, "-m", "ser_train", "live", str(path), "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    # Named by the path given, as `predict` names it (the library's message names the file alone).
    assert f"error: {path} could not be read as audio" in result.stderr and "Traceback" not in result.stderr


def test_the_cli_plays_one_file_and_says_so_with_its_own_usage_line(capsys):
    """A QA pass gave `live` two files and got the top-level usage line ("COMMAND ...")."""
    from ser_train.cli import main

    with pytest.raises(SystemExit):
        main(["live", "a.wav", "b.wav"])
    usage, *_, error = capsys.readouterr().err.strip().splitlines()
    assert usage.startswith("usage: python -m ser_train live ")
    assert error == "python -m ser_train live: error: unrecognized arguments: b.wav"


def test_the_cli_prints_a_step_without_an_utterance_as_a_moment_not_a_span(capsys):
    from ser_train.cli import print_live_answer

    print_live_answer(LiveAnswer(time_s=3.5, start_s=3.5, speech=False, probabilities=None))
    print_live_answer(LiveAnswer(time_s=5.0, start_s=3.5, speech=True, probabilities={"sad": 0.7, "calm": 0.3}))
    assert capsys.readouterr().out.splitlines() == ["          3.5 s  no speech", "   3.5-   5.0 s  sad 70%"]


def test_speech_seconds_counts_what_silero_hears_as_speech_and_nothing_of_silence():
    sentence = spoken(SENTENCES[0])
    padded = np.concatenate([silence(1.0), sentence, silence(1.0)])
    heard = speech_seconds(padded)
    # Espeak's waveform has short silences of its own at each end and between words, so Silero
    # hears less than its length, and pauses add nothing (a frame either side for its state).
    assert 0.5 * len(sentence) / SAMPLING_RATE < heard <= len(sentence) / SAMPLING_RATE + 2 * VAD_FRAME / SAMPLING_RATE
    assert speech_seconds(silence(3.0)) == 0.0

