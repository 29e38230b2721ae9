"""One analysis of a recording, whichever front end asks: the page, its /predict and /analyse
endpoints and `python -m ser_train predict` all call this module (live mode answers a stream
as it comes, in ser_train.live).

A recording up to MIN_TIMELINE_DURATION_S is about one utterance and gets one answer for all of
it. A longer one is split at its pauses (`ser_train.timeline`), each stretch is judged on its
own, and the whole recording's answer is the average of its stretches of speech weighted by
duration: the models were trained on single utterances, and memory stays flat however long it is.

    analysis = analyse_recording(model, "talk.wav")
    analysis.probabilities        # {"neutral": 0.02, ...}: the whole recording
    analysis.segments             # [Segment(start_s, end_s, probabilities, speech_s), ...]; [] when short
    analysis.speech               # the SpeechMap: duration, speech bounds, blocks for the plots
    analysis.unsure               # not to be read as a verdict: the model's unsure rule, or no speech heard
    analysis.speech_seconds       # seconds of speech a voice-activity model hears

A file is read in blocks (never whole when long), mapped once, and a second model can be run on
the same map (`analyse_speech`), as the page does when comparing two models.

Calibration to one speaker needs nothing here: pass the calibrated view of the model,
`model.with_calibration(...)` (see `ser_train.calibration`), which answers through it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ser_train import vad
from ser_train.audio import DEFAULT_MAX_DURATION_S, SAMPLING_RATE
from ser_train.confidence import DEFAULT_UNSURE_RULE, UnsureRule
from ser_train.errors import SERError
from ser_train.timeline import (
    MIN_TIMELINE_DURATION_S,
    Segment,
    SpeechMap,
    average_probabilities,
    map_speech,
    timeline,
    timeline_file,
)


@dataclass(frozen=True)
class RecordingAnalysis:
    """What the library says about one recording with one model."""

    probabilities: dict[str, float]  # the whole recording
    segments: list[Segment]  # one per stretch of speech for long recordings, else empty
    speech: SpeechMap
    unsure_by_rule: bool  # the model's unsure rule says this answer should not be read as a verdict
    unsure_rule: UnsureRule = DEFAULT_UNSURE_RULE  # the rule that judged it
    calibrated: bool = False  # answered through a speaker calibration (`EmotionModel.with_calibration`)

    @property
    def duration_s(self) -> float:
        return self.speech.duration_s

    @property
    def top_emotion(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def unsure(self) -> bool:
        """Whether the answer should not be read as a verdict: the model's unsure rule says so, or
        the recording holds no speech (a model answers with one of its emotions for any sound, a
        tone or a door, and can be sure of it)."""
        return self.unsure_by_rule or self.speech_seconds == 0.0

    @cached_property
    def speech_seconds(self) -> float:
        """Seconds of speech Silero hears in the recording: in its segments of speech when long (the
        timeline asked already), else computed on first use, so an answer that only needs the
        probabilities (`/predict`) does not pay for it. The models learned from whole sentences
        and judge a second of speech far worse."""
        if self.segments:  # a long recording, judged by its segments (a short one has none)
            return sum(segment.speech_s for segment in self.segments if segment.is_speech)
        return vad.speech_seconds(self.speech.samples)

    def summary(self) -> dict:
        """{"top" (None when no speech was heard: no verdict), "unsure", "speech_seconds" (to
        10 ms: Silero hears 32 ms frames), "probabilities"}: what the CLI's JSON and the `analyse`
        API endpoint give per recording."""
        return {
            "top": self.top_emotion if self.speech_seconds else None,
            "unsure": self.unsure,
            "speech_seconds": round(self.speech_seconds, 2),
            "probabilities": self.probabilities,
        }


def analyse_recording(
    model,
    path: str | os.PathLike,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    progress: Callable[[float], None] | None = None,
) -> RecordingAnalysis:
    """Map the speech of the audio file `path` and analyse it with `model` (an EmotionModel).

    Every check of `ser_train.audio.load_audio` applies (an AudioError says what is wrong).
    `progress`: see `analyse_speech`.
    """
    return analyse_speech(model, map_speech(path, max_duration_s=max_duration_s), progress)


def analyse_speech(model, speech: SpeechMap, progress: Callable[[float], None] | None = None) -> RecordingAnalysis:
    """The analysis of a mapped file, without holding a long recording in memory.

    A short recording is judged whole (the first pass kept its samples), a long one streamed
    through the timeline a batch of segments at a time; `progress`, if given, is told the share
    of a long recording's segments answered after each batch (a short one is a single pass).
    """
    if is_one_utterance(speech.duration_s):  # well under a stream block, so samples are kept
        probabilities, segments = analyse_waveform(model, speech.samples)
    else:
        segments = timeline_file(model, speech, progress)
        probabilities = average_probabilities(segments)
    return RecordingAnalysis(
        probabilities, segments, speech, model.is_unsure(probabilities), model.unsure_rule, model.calibration is not None
    )


def analyse_waveform(model, waveform: np.ndarray) -> tuple[dict[str, float], list[Segment]]:
    """(probabilities, segments) of a checked 16 kHz waveform held in memory: `analyse_speech`'s
    answer for the same samples."""
    if is_one_utterance(len(waveform) / SAMPLING_RATE):
        row = model.predict_batch([waveform])[0]
        return dict(zip(model.labels, map(float, row))), []
    segments = timeline(model, waveform)
    return average_probabilities(segments), segments


def is_one_utterance(duration_s: float) -> bool:
    """Whether a recording is short enough to be answered whole, without a timeline."""
    return duration_s <= MIN_TIMELINE_DURATION_S


def analyse_files(
    model, paths: list[str | os.PathLike] | str | os.PathLike, progress: Callable[[str, float], None] | None = None
) -> list[dict]:
    """One result per file (or for the one file `paths` names), in order: {"file", **the
    analysis's `summary()`} or {"file", "error"}.

    A file that cannot be used gets an error entry and the rest are still analysed. `progress`,
    if given, is told (the file, the share of its segments answered) as a long file is analysed.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    results = []
    for path in paths:
        try:
            analysis = analyse_recording(model, path, progress=None if progress is None else functools.partial(progress, str(path)))
        except SERError as error:
            results.append({"file": str(path), "error": str(error)})
            continue
        results.append({"file": str(path), **analysis.summary()})
    return results
