"""Emotion over time: split a recording at its pauses and predict each stretch of speech in it.

A long recording holds many utterances, each with its own emotion; one prediction for all of it
would average them away, and the models here were trained on single utterances of 3-4 s. So:

1. frame energies locate sound: frames far below the recording's level are silence (a short
   loud event, such as a knock on the microphone, does not set that level);
2. sound separated by short gaps is one segment, very short segments are widened to the
   minimum a model can judge, long ones are cut into windows of about an utterance's length;
3. segments go to the model a batch at a time (a 10-minute recording is about 150 windows,
   never one 10-minute input), and to a voice-activity model (Silero), which tells the
   segments of speech from those of other sounds (a door, music, a fan in a long pause): a
   model answers with one of its emotions for any sound, so only speech counts in the
   recording's answer.

    segments = timeline(model, waveform16k)   # [Segment(start_s, end_s, probabilities, speech_s), ...]
    overall = average_probabilities(segments)  # its speech, duration-weighted: a whole-recording answer

A file need not be decoded whole: `timeline_file` reads it twice in blocks, first to find the
speech (silence is judged against the loudness of the whole recording), then to cut out
and predict the segments, so its memory does not grow with the recording's length:

    speech = map_speech("talk.wav")             # first pass: where the speech is, how long it is
    segments = timeline_file(model, speech)     # second pass: the same segments as timeline()
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_train import vad
from ser_train.audio import DEFAULT_MAX_DURATION_S, MIN_DURATION_S, SAMPLING_RATE, SpeechLevel, quiet_speech_gain, stream_audio

FRAME_S = 0.025  # energy frame length: the usual 25 ms speech-analysis frame
SILENCE_BELOW_PEAK_DB = 40.0  # frames this far below the reference level (db_below_reference) are silence
# A knock on the microphone, a cough, a door's slam: louder than speech and shorter than
# LOUD_EVENT_S. The reference level sets this much of the loudest frames aside and may be at most
# LOUD_EVENT_MARGIN_DB above what remains, so that one such event does not turn the quieter speech
# around it into silence, while a shouted sentence (its loudest half second a few dB above the
# rest of it) still sets the level as its loudest frame does.
LOUD_EVENT_S = 0.5
LOUD_EVENT_MARGIN_DB = 10.0
# Shorter gaps are pauses inside an utterance, not between utterances: acted RAVDESS sentences
# hold pauses of up to about half a second between words, and splitting there leaves one-word
# fragments that no model can judge.
MIN_PAUSE_S = 0.6
MIN_SEGMENT_S = MIN_DURATION_S  # shorter speech is widened to this, taking in its surroundings
MAX_SEGMENT_S = 4.0  # about one RAVDESS utterance; longer speech is cut into windows
BATCH_SIZE = 4  # segments per model call: at most 16 s of audio in memory at once
MIN_TIMELINE_DURATION_S = 6.0  # shorter recordings are about one utterance: one prediction says it


@dataclass(frozen=True)
class Segment:
    """One stretch of sound, the model's emotion probabilities for it, and how much of it is speech."""

    start_s: float
    end_s: float
    probabilities: dict[str, float]
    speech_s: float  # seconds of it Silero hears as speech

    @property
    def is_speech(self) -> bool:
        """Speech, as live mode judges a step; else another sound, whose answer is not counted."""
        return is_speech(self.speech_s, self.duration_s)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def top_emotion(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.top_emotion]


def timeline(model, waveform: np.ndarray) -> list[Segment]:
    """Segments of sound in `waveform` (checked float32 mono at 16 kHz), one prediction each, and
    the speech Silero hears in each.

    `model` is an `ser_train.inference.EmotionModel` (anything with `labels` and `predict_batch`).
    """
    bounds, speech_s = heard_segments(waveform)
    probabilities = predict_in_batches(model, [waveform[start:end] for start, end in bounds])
    return labelled_segments(model, bounds, probabilities, speech_s)


@dataclass(frozen=True)
class SpeechMap:
    """Where the speech is in an audio file: what a first pass over it tells `timeline_file`."""

    path: Path
    num_samples: int  # the whole recording's length at SAMPLING_RATE
    bounds: list[tuple[int, int]]  # (start, end) samples of each segment, in recording order
    max_duration_s: float
    # The whole checked recording when it came in one stream block (up to STREAM_BLOCK_S), as
    # most uploads do: later passes read it here instead of decoding the file again.
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)
    # What Silero hears the recording through: `quiet_speech_gain` of its speech level, as
    # `vad.frame_speech_probabilities` hears a waveform held whole.
    speech_gain: float = 1.0

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLING_RATE

    def blocks(self) -> Iterator[np.ndarray]:
        """The recording again, block by block (16 kHz mono float32)."""
        if self.samples is not None:
            return iter([self.samples])
        return stream_audio(self.path, max_duration_s=self.max_duration_s)


def map_speech(path: str | os.PathLike, max_duration_s: float = DEFAULT_MAX_DURATION_S) -> SpeechMap:
    """Decode `path` block by block, keeping one energy per frame, and find its speech segments.

    Every check of `ser_train.audio.load_audio` applies (an AudioError says what is wrong).
    """
    first_block: list[np.ndarray] = []
    level = SpeechLevel()

    def decoded() -> Iterator[np.ndarray]:
        for block in stream_audio(path, max_duration_s=max_duration_s):
            if not first_block:
                first_block.append(block)
            level.feed(block)
            yield block

    frame = round(FRAME_S * SAMPLING_RATE)
    power, num_samples = frame_powers(decoded(), frame)
    bounds = segments_from_energy(db_below_reference(power, FRAME_S), frame, num_samples, SAMPLING_RATE)
    whole = first_block[0] if len(first_block[0]) == num_samples else None  # the file was one block
    return SpeechMap(Path(path), num_samples, bounds, max_duration_s, whole, quiet_speech_gain(level.db))


def timeline_file(model, speech: SpeechMap, progress: Callable[[float], None] | None = None) -> list[Segment]:
    """`timeline` of the file `speech` maps, decoding it again block by block.

    Segments are cut from the stream as it passes and predicted BATCH_SIZE at a time in
    recording order, so memory holds a block and a batch, never the recording. The models here
    answer for a clip independently of its batch-mates, and Silero hears the stream as it passes
    (its state carried from block to block), so this equals `timeline` of the whole waveform.
    `progress`, if given, is told the share of the segments answered after each batch (a
    10-minute recording took about 100 s on 2 cores).
    """
    voice = vad.VoiceActivity(keep_all=True)
    pieces = cut_segments(fed_to(voice, speech.blocks(), speech.speech_gain), speech.bounds)
    probabilities = np.zeros((len(speech.bounds), len(model.labels)), dtype=np.float32)
    for first in range(0, len(speech.bounds), BATCH_SIZE):
        batch = [next(pieces) for _ in speech.bounds[first : first + BATCH_SIZE]]
        probabilities[first : first + len(batch)] = model.predict_batch(batch)
        if progress is not None:
            progress((first + len(batch)) / len(speech.bounds))
    # Every segment has been cut, so Silero has heard the stream past the last one's end.
    speech_s = vad.speech_seconds_within(np.array(voice.probabilities), speech.bounds)
    return labelled_segments(model, speech.bounds, probabilities, speech_s)


def fed_to(voice: vad.VoiceActivity, blocks: Iterable[np.ndarray], gain: float = 1.0) -> Iterator[np.ndarray]:
    """The blocks, each fed to `voice` on its way through (times `gain`: the blocks go on as they were)."""
    for block in blocks:
        voice.push(block if gain == 1.0 else block * np.float32(gain))
        yield block


def labelled_segments(model, bounds: list[tuple[int, int]], probabilities: np.ndarray, speech_s: list[float]) -> list[Segment]:
    return [
        Segment(start / SAMPLING_RATE, end / SAMPLING_RATE, dict(zip(model.labels, map(float, row))), seconds)
        for (start, end), row, seconds in zip(bounds, probabilities, speech_s, strict=True)
    ]


def average_probabilities(segments: list[Segment]) -> dict[str, float]:
    """The whole recording's probabilities: its speech segments' probabilities weighted by
    duration, or every segment's when none holds speech (then the answer is for sounds, and
    `ser_train.analysis` shows it as no verdict)."""
    segments = [segment for segment in segments if segment.is_speech] or segments
    weights = np.array([segment.duration_s for segment in segments])
    labels = list(segments[0].probabilities)
    rows = np.array([[segment.probabilities[label] for label in labels] for segment in segments])
    return dict(zip(labels, map(float, weights @ rows / weights.sum())))


def is_speech(speech_s: float, duration_s: float) -> bool:
    """Whether a stretch of `duration_s` in which Silero hears `speech_s` of speech is speech."""
    return speech_s >= vad.MIN_SPEECH_FRACTION * duration_s


def heard_segments(waveform: np.ndarray) -> tuple[list[tuple[int, int]], list[float]]:
    """The `sound_segments` of a 16 kHz waveform, and the seconds of speech Silero hears in each."""
    bounds = sound_segments(waveform, SAMPLING_RATE)
    return bounds, vad.speech_seconds_within(vad.frame_speech_probabilities(waveform), bounds)


def speech_bounds(waveform: np.ndarray) -> list[tuple[int, int]]:
    """The `sound_segments` of a 16 kHz waveform that are speech, as the timeline judges them."""
    bounds, speech_s = heard_segments(waveform)
    return [(start, end) for (start, end), seconds in zip(bounds, speech_s) if is_speech(seconds, (end - start) / SAMPLING_RATE)]


def sound_segments(waveform: np.ndarray, sampling_rate: int) -> list[tuple[int, int]]:
    """(start, end) sample indices of the stretches of sound, each MIN..MAX_SEGMENT_S long (speech
    or not: `timeline` asks a voice-activity model)."""
    frame = round(FRAME_S * sampling_rate)
    return segments_from_energy(frame_energy_db(waveform, frame, sampling_rate), frame, len(waveform), sampling_rate)


def segments_from_energy(energy_db: np.ndarray, frame: int, num_samples: int, sampling_rate: int) -> list[tuple[int, int]]:
    """`sound_segments` of a recording of `num_samples` given its frame energies (`frame_energy_db`)."""
    voiced = energy_db > -SILENCE_BELOW_PEAK_DB
    runs = merge_close_runs(voiced_runs(voiced), max_gap=round(MIN_PAUSE_S / FRAME_S))
    segments = []
    for start_frame, end_frame in runs:
        start, end = widen(start_frame * frame, min(end_frame * frame, num_samples), sampling_rate, num_samples)
        segments.extend(windows(start, end, sampling_rate))
    return segments


def frame_energy_db(waveform: np.ndarray, frame: int, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Mean power of consecutive frames in dB relative to the reference level (`db_below_reference`).

    A last partial frame is included, so trailing speech is not lost.
    """
    return db_below_reference(frame_powers([waveform], frame)[0], frame / sampling_rate)


def frame_powers(blocks: Iterable[np.ndarray], frame: int) -> tuple[np.ndarray, int]:
    """Mean power of consecutive `frame`-sample frames of a stream (see `frame_statistics`).

    einsum sums the squares of a block's frames without a temporary copy, so this needs memory
    for one number per frame, not per sample.
    """
    return frame_statistics(blocks, frame, _mean_squares)


def frame_statistics(
    blocks: Iterable[np.ndarray], frame: int, statistic: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, int]:
    """`statistic` of consecutive `frame`-sample frames of a stream given in blocks of any sizes
    (a last partial frame included), and the stream's length in samples.

    Frames run on across block edges; within a block they are a view of it. `statistic` maps
    frames [n, samples] to n rows of results.
    """
    results = []
    partial = np.zeros(0, dtype=np.float32)  # the start of a frame that the previous block cut off
    num_samples = 0
    for block in blocks:
        num_samples += len(block)
        if partial.size:
            needed = frame - partial.size
            partial, block = np.concatenate([partial, block[:needed]]), block[needed:]
            if partial.size < frame:  # a block shorter than the rest of the frame
                continue
            results.append(statistic(partial[None, :]))
        whole = len(block) // frame
        results.append(statistic(block[: whole * frame].reshape(whole, frame)))
        partial = block[whole * frame :].copy()
    if partial.size:
        results.append(statistic(partial[None, :]))
    return np.concatenate(results) if results else np.zeros(0, dtype=np.float32), num_samples


def _mean_squares(frames: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", frames, frames) / frames.shape[1]


def db_below_reference(power: np.ndarray, frame_s: float) -> np.ndarray:
    """Powers of `frame_s`-second frames in dB relative to the reference level: the loudest frame,
    or, when a short event (LOUD_EVENT_S) stands out, LOUD_EVENT_MARGIN_DB above the loudest frame
    once that event is set aside. At most half of the frames within SILENCE_BELOW_PEAK_DB of the
    loudest are set aside, so that when the only sound is one short word, the word sets the level.
    """
    tiny = np.finfo(np.float32).tiny  # log of zero (digital silence) is -inf
    peak = power.max()
    near_peak = int(np.count_nonzero(power >= peak * 10 ** (-SILENCE_BELOW_PEAK_DB / 10)))
    event_frames = math.ceil(LOUD_EVENT_S / frame_s - 1e-9) + 1  # an event between frames spans one more
    set_aside = min(event_frames, near_peak // 2)
    rest = np.partition(power, len(power) - 1 - set_aside)[len(power) - 1 - set_aside]
    reference = min(peak, rest * 10 ** (LOUD_EVENT_MARGIN_DB / 10))
    return 10 * np.log10(np.maximum(power, tiny) / max(reference, tiny))


def voiced_runs(voiced: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) frame indices of each run of True values, end exclusive."""
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def merge_close_runs(runs: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    """Join runs separated by at most `max_gap` frames."""
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def widen(start: int, end: int, sampling_rate: int, total: int) -> tuple[int, int]:
    """Grow a segment shorter than MIN_SEGMENT_S around its centre, staying inside the recording."""
    minimum = math.ceil(MIN_SEGMENT_S * sampling_rate)
    if end - start >= minimum:
        return start, end
    start = max(0, min((start + end - minimum) // 2, total - minimum))
    return start, min(total, start + minimum)


def windows(start: int, end: int, sampling_rate: int) -> list[tuple[int, int]]:
    """Cut a segment into equal windows of at most MAX_SEGMENT_S (each at least half of it)."""
    count = math.ceil((end - start) / (MAX_SEGMENT_S * sampling_rate))
    edges = np.linspace(start, end, count + 1).round().astype(int).tolist()
    return list(zip(edges[:-1], edges[1:]))


def predict_in_batches(model, segments: list[np.ndarray]) -> np.ndarray:
    """model.predict_batch over BATCH_SIZE segments at a time; rows in the order given.

    Segments are batched in order of length, so a batch holds similar lengths and a model that
    pads a batch to its longest member pads little.
    """
    probabilities = np.zeros((len(segments), len(model.labels)), dtype=np.float32)
    by_length = np.argsort([len(segment) for segment in segments], kind="stable")
    for first in range(0, len(by_length), BATCH_SIZE):
        batch = by_length[first : first + BATCH_SIZE]
        probabilities[batch] = model.predict_batch([segments[index] for index in batch])
    return probabilities


def cut_segments(blocks: Iterable[np.ndarray], bounds: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """The samples of each (start, end) of `bounds`, cut from a stream given in consecutive blocks.

    Starts must not decrease (`sound_segments` gives recording order), so whatever lies before
    the current segment's start is never needed again and is let go: memory holds about a block
    and a segment, whatever the gaps between segments.
    """
    blocks = iter(blocks)
    kept = np.zeros(0, dtype=np.float32)  # the stream's samples from kept_start on
    kept_start = 0
    for start, end in bounds:
        if start < kept_start:
            raise ValueError("cut_segments needs segments in recording order (starts must not decrease).")
        while kept_start + len(kept) < end:
            skipped = min(start - kept_start, len(kept))  # what lies before this segment goes
            kept, kept_start = np.concatenate([kept[skipped:], next(blocks)]), kept_start + skipped
        # A copy, so that a segment waiting in a batch does not keep a whole block alive.
        yield kept[start - kept_start : end - kept_start].copy()
