"""Segmentation and per-segment prediction for long recordings (ser_train.timeline)."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

from app_support import make_tiny_wav2vec2, utterances
from ser_train.audio import SAMPLING_RATE
from ser_train.confidence import DEFAULT_UNSURE_RULE
from ser_train.data import EMOTIONS
from ser_train.live import LiveAnswer
from ser_train.plots import NO_SPEECH_HEIGHT, UNJUDGED_COLOR, UNJUDGED_HEIGHT, live_timeline_html
from ser_train.timeline import (
    BATCH_SIZE,
    MAX_SEGMENT_S,
    MIN_SEGMENT_S,
    Segment,
    average_probabilities,
    sound_segments,
    timeline,
)

FRAME_TOLERANCE_S = 0.05  # two energy frames


class LoudnessModel:
    """A stand-in model whose top emotion is the segment's peak level in tenths (0.1 -> EMOTIONS[0]).

    It records the batches it is given, so tests can check how timeline() batches.
    """

    labels = EMOTIONS

    def __init__(self):
        self.batches: list[list[int]] = []

    def is_unsure(self, probabilities: dict) -> bool:
        return DEFAULT_UNSURE_RULE.is_unsure(list(probabilities.values()))

    def predict_batch(self, waveforms):
        self.batches.append([len(waveform) for waveform in waveforms])
        rows = np.full((len(waveforms), len(EMOTIONS)), 0.02, dtype=np.float32)
        for row, waveform in zip(rows, waveforms):
            row[int(round(np.abs(waveform).max() * 10)) - 1] = 1 - 0.02 * (len(EMOTIONS) - 1)
        return rows


def seconds(bounds):
    return [(start / SAMPLING_RATE, end / SAMPLING_RATE) for start, end in bounds]


def test_utterances_separated_by_pauses_become_one_segment_each():
    waveform = utterances([0, 3, 6], speech_s=1.5, pause_s=1.0)
    found = seconds(sound_segments(waveform, SAMPLING_RATE))
    expected = [(1.0, 2.5), (3.5, 5.0), (6.0, 7.5)]
    assert len(found) == len(expected)
    for (start, end), (true_start, true_end) in zip(found, expected):
        assert start == pytest.approx(true_start, abs=FRAME_TOLERANCE_S)
        assert end == pytest.approx(true_end, abs=FRAME_TOLERANCE_S)


@pytest.mark.parametrize("burst_s", [0.1, 0.3, 0.5])
def test_a_short_loud_event_does_not_turn_the_quieter_speech_around_it_into_silence(burst_s):
    """A knock on the microphone 30 dB above the speech (frame power): set aside, the speech's own level
    decides what is silence, so every utterance is found as it is without the knock."""
    speech = 0.2 * utterances([0, 3, 6], speech_s=1.5, pause_s=1.0)  # frames 34-47 dB under full scale
    knock = np.random.default_rng(0).uniform(-1, 1, round(burst_s * SAMPLING_RATE)).astype(np.float32)
    pause = np.zeros(SAMPLING_RATE, dtype=np.float32)
    between_frames = np.zeros(160, dtype=np.float32)  # 10 ms: the knock straddles the energy frames
    without = seconds(sound_segments(speech, SAMPLING_RATE))
    with_knock = seconds(sound_segments(np.concatenate([speech, between_frames, knock, pause]), SAMPLING_RATE))

    assert len(without) == 3
    assert with_knock[:3] == without
    knock_start = len(speech) / SAMPLING_RATE
    assert len(with_knock) == 4  # the knock is a segment of its own (widened when short), for Silero to judge
    assert with_knock[3][0] <= knock_start + FRAME_TOLERANCE_S and with_knock[3][1] >= knock_start + burst_s - FRAME_TOLERANCE_S


@pytest.mark.parametrize("pause_s", [0.2, 0.5])
def test_pauses_between_words_do_not_split_an_utterance(pause_s):
    waveform = utterances([2, 2], speech_s=1.0, pause_s=pause_s)
    found = seconds(sound_segments(waveform, SAMPLING_RATE))
    assert len(found) == 1
    assert found[0][1] - found[0][0] == pytest.approx(2 + pause_s, abs=FRAME_TOLERANCE_S)


def test_long_speech_is_cut_into_contiguous_windows_of_at_most_max_length():
    waveform = utterances([4], speech_s=10.0, pause_s=0.5)
    found = seconds(sound_segments(waveform, SAMPLING_RATE))
    assert len(found) == 3  # 10 s in windows of at most 4 s
    assert all(MAX_SEGMENT_S / 2 <= end - start <= MAX_SEGMENT_S for start, end in found)
    assert all(previous[1] == following[0] for previous, following in zip(found, found[1:]))
    assert found[0][0] == pytest.approx(0.5, abs=FRAME_TOLERANCE_S)
    assert found[-1][1] == pytest.approx(10.5, abs=FRAME_TOLERANCE_S)


def synth_burst(duration_s):
    return utterances([5], speech_s=duration_s, pause_s=0.0)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_short_burst_is_widened_to_the_minimum_inside_the_recording(where):
    total = np.zeros(3 * SAMPLING_RATE, dtype=np.float32)
    burst = synth_burst(0.2)
    offset = {"start": 0, "middle": SAMPLING_RATE, "end": len(total) - len(burst)}[where]
    total[offset : offset + len(burst)] = burst
    [(start, end)] = sound_segments(total, SAMPLING_RATE)
    assert end - start == pytest.approx(MIN_SEGMENT_S * SAMPLING_RATE, abs=1)
    assert 0 <= start and end <= len(total)
    assert start <= offset and offset + len(burst) <= end


def test_each_segment_gets_its_own_prediction_in_recording_order():
    # Utterances of different lengths (so batching by length reorders them) and peak levels.
    levels = [0.3, 0.8, 0.1, 0.5]
    pause = np.zeros(SAMPLING_RATE, dtype=np.float32)
    parts = [pause]
    for level, speech_s in zip(levels, [1.0, 3.0, 0.7, 2.0]):
        clip = utterances([1], speech_s=speech_s, pause_s=0.0)
        parts += [clip / np.abs(clip).max() * level, pause]
    segments = timeline(LoudnessModel(), np.concatenate(parts))
    assert [segment.top_emotion for segment in segments] == [EMOTIONS[round(level * 10) - 1] for level in levels]
    assert all(segment.start_s < segment.end_s for segment in segments)
    assert [segment.start_s for segment in segments] == sorted(segment.start_s for segment in segments)


def test_segments_are_predicted_in_batches_of_similar_length():
    waveform = utterances(list(range(8)) * 5, speech_s=1.0, pause_s=1.0)  # 40 utterances
    model = LoudnessModel()
    segments = timeline(model, waveform)
    assert len(segments) == 40
    full, rest = divmod(40, BATCH_SIZE)
    assert [len(batch) for batch in model.batches] == [BATCH_SIZE] * full + ([rest] if rest else [])
    flat = [length for batch in model.batches for length in batch]
    assert flat == sorted(flat)


def test_overall_probabilities_weigh_segments_by_duration():
    segments = [
        Segment(0.0, 3.0, {"happy": 0.9, "sad": 0.1}, speech_s=2.5),
        Segment(5.0, 6.0, {"happy": 0.1, "sad": 0.9}, speech_s=0.8),
    ]
    overall = average_probabilities(segments)
    assert overall == pytest.approx({"happy": 0.7, "sad": 0.3})
    assert segments[0].top_emotion == "happy" and segments[0].confidence == 0.9


def test_overall_probabilities_count_speech_only_unless_there_is_none():
    """A model answers with an emotion for any sound; a door or a tone is not counted beside speech."""
    speech = Segment(0.0, 3.0, {"happy": 0.9, "sad": 0.1}, speech_s=2.5)
    door = Segment(5.0, 9.0, {"happy": 0.1, "sad": 0.9}, speech_s=0.0)
    assert average_probabilities([speech, door]) == pytest.approx(speech.probabilities)
    assert average_probabilities([door]) == pytest.approx(door.probabilities)  # sounds only: every segment
    assert speech.is_speech and not door.is_speech


def test_a_ten_minute_recording_is_segmented_without_copying_it():
    # 10 minutes of 3 s utterances and 1 s pauses, in 16 kHz float32 (38 MB).
    one_cycle = utterances([2], speech_s=3.0, pause_s=0.5)
    waveform = np.tile(one_cycle, int(np.ceil(600 / (len(one_cycle) / SAMPLING_RATE))))[: 600 * SAMPLING_RATE]
    model = LoudnessModel()
    tracemalloc.start()
    try:
        segments = timeline(model, waveform)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(segments) == pytest.approx(600 / 4, abs=2)  # one per 4 s cycle
    assert segments[-1].end_s <= 600
    # One batch of windows at a time, never the recording: far below its 38 MB.
    assert peak_bytes < 0.1 * waveform.nbytes
    assert max(sum(batch) for batch in model.batches) <= BATCH_SIZE * MAX_SEGMENT_S * SAMPLING_RATE


def test_batched_predictions_equal_one_segment_at_a_time_with_a_real_model(tmp_path):
    from ser_train.inference import load_model

    model = load_model(str(make_tiny_wav2vec2(tmp_path / "tiny")))
    waveform = utterances([0, 4, 7], speech_s=1.2, pause_s=0.8)
    segments = timeline(model, waveform)
    assert len(segments) == 3
    for segment in segments:
        start, end = round(segment.start_s * SAMPLING_RATE), round(segment.end_s * SAMPLING_RATE)
        alone = model.predict_batch([waveform[start:end]])[0]
        assert list(segment.probabilities.values()) == pytest.approx(alone.tolist(), abs=1e-5)
        assert sum(segment.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.real_data
def test_real_acted_sentences_become_one_segment_each(real_ravdess):
    from ser_train.audio import load_audio

    # One strong-intensity sentence per emotion by one actor, played back to back.
    clips = [load_audio(next(real_ravdess.glob(f"Actor_03/03-01-0{code}-02-01-01-03.*"))) for code in range(2, 9)]
    spans, start = [], 0
    for clip in clips:
        spans.append((start, start + len(clip)))
        start += len(clip)
    found = sound_segments(np.concatenate(clips), SAMPLING_RATE)
    assert len(found) == len(clips)
    for (start, end), (clip_start, clip_end) in zip(found, spans):
        assert clip_start <= start < end <= clip_end


def test_the_live_strip_draws_each_answer_of_its_span_where_and_as_tall_as_it_should():
    answers = [
        LiveAnswer(10.0, 9.5, True, {"angry": 0.9, "sad": 0.1}),  # before the span: left out
        LiveAnswer(10.5, 10.0, False, None),
        LiveAnswer(11.0, 10.5, True, None),  # speech heard, not judged (too early, or caught up on)
        LiveAnswer(11.5, 10.5, True, {"angry": 0.7, "sad": 0.3}),
    ]
    html = live_timeline_html(answers, now_s=70.0, span_s=60.0, step_s=0.5)
    bars = re.findall(r'data-emotion="(\w+)" title="([^"]+)" style="[^"]*left:([\d.]+)%;width:([\d.]+)%;height:(\d+)%', html)
    assert bars == [
        ("none", "10.5 s: no speech", "0.00", "0.83", f"{100 * NO_SPEECH_HEIGHT:.0f}"),
        ("unjudged", "11.0 s: speech, not judged", "0.83", "0.83", f"{100 * UNJUDGED_HEIGHT:.0f}"),  # not drawn as silence
        ("angry", "11.5 s: angry 70%", "1.67", "0.83", "70"),
    ]
    # The span's two ends under it, whole on a narrow screen (a QA pass saw "0 / s" on a phone).
    assert f'<span style="color:{UNJUDGED_COLOR}">■</span>&nbsp;speech, not judged' in html  # in the legend
    assert '<span style="white-space:nowrap">10 s</span>' in html and '<span style="white-space:nowrap">70 s</span>' in html
