"""One analysis of a recording, whichever front end asks: the page, its /predict endpoint,
`python -m ser_train predict` and live mode all call this module.

A recording up to MIN_TIMELINE_DURATION_S is about one utterance and gets one answer for all of
it. A longer one is split at its pauses (`ser_train.timeline`), each stretch of speech is judged
on its own, and the whole recording's answer is the stretches' average weighted by duration:
the models were trained on single utterances, and memory stays flat however long it is.

    analysis = analyse_recording(model, "talk.wav")
    analysis.probabilities        # {"neutral": 0.02, ...}: the whole recording
    analysis.segments             # [Segment(start_s, end_s, probabilities), ...]; [] when short
    analysis.speech               # the SpeechMap: duration, speech bounds, blocks for the plots

A file is read in blocks (never whole when long), mapped once, and a second model can be run on
the same map (`analyse_speech`), as the page does when comparing two models.

Calibration: every function takes an optional `calibration`, a function that maps a batch of
the model's probabilities [N, labels] to calibrated ones (the calibration issue provides it).
It is applied to every answer the model gives, before segments are averaged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ser_train.audio import DEFAULT_MAX_DURATION_S, SAMPLING_RATE
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

Calibration = Callable[[np.ndarray], np.ndarray]  # probabilities [N, labels] -> calibrated [N, labels]


@dataclass(frozen=True)
class RecordingAnalysis:
    """What the library says about one recording with one model."""

    probabilities: dict[str, float]  # the whole recording
    segments: list[Segment]  # one per stretch of speech for long recordings, else empty
    speech: SpeechMap

    @property
    def duration_s(self) -> float:
        return self.speech.duration_s

    @property
    def top_emotion(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


class CalibratedModel:
    """An EmotionModel's answers passed through a calibration: same labels, same predict_batch."""

    def __init__(self, model, calibration: Calibration):
        self.model = model
        self.labels = model.labels
        self.calibration = calibration

    def predict_batch(self, waveforms16k: list[np.ndarray]) -> np.ndarray:
        return np.asarray(self.calibration(self.model.predict_batch(waveforms16k)), dtype=np.float32)


def calibrated(model, calibration: Calibration | None):
    """`model` itself without a calibration, else a CalibratedModel around it."""
    return model if calibration is None else CalibratedModel(model, calibration)


def analyse_recording(
    model,
    path: str | os.PathLike,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    calibration: Calibration | None = None,
) -> RecordingAnalysis:
    """Map the speech of the audio file `path` and analyse it with `model` (an EmotionModel).

    Every check of `ser_train.audio.load_audio` applies (an AudioError says what is wrong).
    """
    return analyse_speech(model, map_speech(path, max_duration_s=max_duration_s), calibration)


def analyse_speech(model, speech: SpeechMap, calibration: Calibration | None = None) -> RecordingAnalysis:
    """The analysis of a mapped file, without holding a long recording in memory.

    A short recording is judged whole (the first pass kept its samples), a long one streamed
    through the timeline a batch of segments at a time.
    """
    model = calibrated(model, calibration)
    if speech.duration_s <= MIN_TIMELINE_DURATION_S:  # well under a stream block, so samples are kept
        probabilities, segments = analyse_waveform(model, speech.samples)
    else:
        segments = timeline_file(model, speech)
        probabilities = average_probabilities(segments)
    return RecordingAnalysis(probabilities, segments, speech)


def analyse_waveform(
    model, waveform: np.ndarray, calibration: Calibration | None = None
) -> tuple[dict[str, float], list[Segment]]:
    """(probabilities, segments) of a checked 16 kHz waveform held in memory: `analyse_speech`'s
    answer for the same samples."""
    model = calibrated(model, calibration)
    if len(waveform) / SAMPLING_RATE <= MIN_TIMELINE_DURATION_S:
        row = model.predict_batch([waveform])[0]
        return dict(zip(model.labels, map(float, row))), []
    segments = timeline(model, waveform)
    return average_probabilities(segments), segments


def analyse_files(model, paths: list[str | os.PathLike], calibration: Calibration | None = None) -> list[dict]:
    """One result per file, in order: {"file", "top", "probabilities"} or {"file", "error"}.

    A file that cannot be used gets an error entry and the rest are still analysed.
    """
    results = []
    for path in paths:
        try:
            analysis = analyse_recording(model, path, calibration=calibration)
        except SERError as error:
            results.append({"file": str(path), "error": str(error)})
            continue
        results.append({"file": str(path), "top": analysis.top_emotion, "probabilities": analysis.probabilities})
    return results
