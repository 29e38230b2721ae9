"""Live emotion: feed audio as it arrives, get time-stamped answers while the speaker talks.

    stream = LiveStream(model)                     # any EmotionModel (CNN, wav2vec2, Whisper ...)
    for chunk in microphone_chunks():              # any size, any rate
        for answer in stream.feed(chunk, 48_000):
            print(answer.time_s, answer.top_emotion if answer.speech else "no speech")
    print(stream.summary())                        # the whole stream's average emotion

    answers = list(play(LiveStream(model), waveform16k))   # a recording played as if live

Every STEP_S of audio the stream answers for the last WINDOW_S (about an utterance, as the
models were trained on). A voice-activity model (Silero VAD, whose ONNX weights ship inside the
silero-vad wheel and run on onnxruntime) decides first whether the newest step holds speech:
silence, breathing and steady background noise give a "no speech" answer instead of an
emotion. Consecutive speech answers are smoothed by an exponential moving average, restarted
after each pause. The constants were chosen by measurement (benchmarks/live.py, RESULTS.md).

Memory is bounded: a stream keeps the last window of samples, the voice-activity model's state,
the last HISTORY_S of answers and running sums for the summary, so a stream left open for an
hour holds no more than one of a minute. The page, the tests and `python -m ser_train live`
share this class.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ser_train.audio import MIN_DURATION_S, SAMPLING_RATE, check_sampling_rate, resample, to_mono_float
from ser_train.errors import AudioError
from ser_train.vad import MIN_SPEECH_FRACTION, VoiceActivity

# Measured on RAVDESS conversations with a model that never heard their actors (RESULTS.md):
# 4 s windows lag into the next utterance, 2 s ties 3 s; a 1 s step was no surer and doubles the
# wait; smoothing 0.5 cuts the flips inside an utterance by a third at equal accuracy.
WINDOW_S = 3.0  # seconds of audio each answer is about
STEP_S = 0.5  # a new answer every this many seconds of audio
SMOOTHING = 0.5  # weight of the newest answer in the moving average (1.0: no smoothing)
# After a pause, the first half second or so of speech is too little to judge: a model that learned
# from whole sentences answered one emotion, very sure, at every onset. Until the utterance holds
# this much speech the stream says it hears speech without naming an emotion.
MIN_JUDGED_SPEECH_S = 1.0
# The first answers of an utterance are about its first second or so of speech: the case measured
# on corpora the models never trained on as the first 1 s of each clip, where the default was right
# far less often than on whole clips and gave one emotion up to 47 % of a corpus's answers (the
# previous default: 81 %; README, Generalisation). Until the utterance holds this much speech its
# answers are unsure, whatever the probabilities. (A short upload is a whole utterance, as the
# corpora's clips are, and is judged by the model's rule, which was measured on those.)
MIN_SURE_SPEECH_S = 1.5
HISTORY_S = 60.0  # answers kept for the page's rolling timeline
# The page's microphone sends what it recorded every CHUNK_S, and `play` feeds recordings in chunks
# this long. An answer reaches the page only with the chunk that holds its step's last sample, and
# the browser holds back a chunk that is ready while the previous chunk's event is pending: chunks
# of half a step cut the median wait from the end of a spoken stretch to its answer on the page
# from 1.04-1.09 s to 0.78-0.82 s (benchmarks, live section), for twice the events, every other
# one only buffering audio.
CHUNK_S = STEP_S / 2

# Resampling context on each side of a chunk, in input samples: more than the half-width of
# torchaudio's sinc kernel (6 zero crossings) at any rate ratio a microphone uses.
RESAMPLE_MARGIN = 64


@dataclass(frozen=True)
class LiveAnswer:
    """One answer of a live stream: about the audio from `start_s` to `time_s` (stream time)."""

    time_s: float
    start_s: float
    speech: bool
    # Smoothed; None when the newest step held no speech, the utterance is still too short to judge,
    # or the step was heard without judging (`catch_up`).
    probabilities: dict[str, float] | None
    unsure: bool = False  # the model's unsure rule flags the answer (ser_train.confidence), or too little speech yet

    @property
    def judged(self) -> bool:
        return self.probabilities is not None

    @property
    def top_emotion(self) -> str | None:
        return max(self.probabilities, key=self.probabilities.get) if self.probabilities else None

    @property
    def confidence(self) -> float:
        return self.probabilities[self.top_emotion] if self.probabilities else 0.0

    def as_dict(self) -> dict:
        return {
            "time_s": round(self.time_s, 3),
            "start_s": round(self.start_s, 3),
            "speech": self.speech,
            "top": self.top_emotion,
            "unsure": self.unsure,
            "probabilities": self.probabilities,
        }


@dataclass(frozen=True)
class LiveSummary:
    """The whole stream: its length, how much of it was speech, its average emotion."""

    duration_s: float
    speech_s: float
    probabilities: dict[str, float] | None  # mean of the judged speech answers (unsmoothed); None without any

    @property
    def top_emotion(self) -> str | None:
        return max(self.probabilities, key=self.probabilities.get) if self.probabilities else None

    def as_dict(self) -> dict:
        return {
            "duration_s": round(self.duration_s, 3),
            "speech_s": round(self.speech_s, 3),
            "top": self.top_emotion,
            "probabilities": self.probabilities,
        }


class LiveStream:
    """One live stream (one speaker, one microphone): feed it chunks, get answers.

    Not thread-safe: one stream belongs to one session, whose chunks arrive one after another.
    The model may be shared by many streams.
    """

    def __init__(
        self,
        model,
        window_s: float = WINDOW_S,
        step_s: float = STEP_S,
        smoothing: float = SMOOTHING,
    ):
        self.model = model  # calibrated to the speaker when it is model.with_calibration(...)
        self.window = round(window_s * SAMPLING_RATE)
        self.step = round(step_s * SAMPLING_RATE)
        self.smoothing = smoothing
        self.history: deque[LiveAnswer] = deque(maxlen=math.ceil(HISTORY_S / step_s))
        self.voice = VoiceActivity()
        self._resampler: StreamResampler | None = None
        self._recent = np.zeros(0, dtype=np.float32)  # the last `window` samples
        self._samples = 0  # samples received so far (16 kHz): the stream's clock
        self._since_answer = 0
        self._utterance = 0  # samples of speech since the current utterance began (0 in a pause)
        self._speech_steps = 0
        self._smoothed: np.ndarray | None = None
        self._speech_sum = np.zeros(len(model.labels), dtype=np.float64)
        self._speech_answers = 0

    @property
    def time_s(self) -> float:
        return self._samples / SAMPLING_RATE

    def feed(self, chunk: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> list[LiveAnswer]:
        """Take the next chunk (integer or float samples, mono or multichannel, any rate) and
        return the answers it completes, oldest first."""
        return self._hear(self._to_16k(chunk, sampling_rate), judge_last_only=False)

    def catch_up(self, chunks: list[tuple[int, np.ndarray]]) -> list[LiveAnswer]:
        """Take several (sampling rate, chunk) at once, oldest first, as `read_chunk` gives them:
        audio that piled up while the previous answer was drawn. Only the last step they complete
        is judged; the ones before it are heard (the clock, the window, speech or no speech)
        without a model pass, so a busy server does not fall further behind. Those answers say
        whether there was speech, not which emotion; the judged one is smoothed with the last
        judged answer of the utterance, however many steps back it was."""
        samples = [self._to_16k(chunk, sampling_rate) for sampling_rate, chunk in chunks]
        return self._hear(np.concatenate(samples) if samples else np.zeros(0, dtype=np.float32), judge_last_only=True)

    def _hear(self, samples: np.ndarray, judge_last_only: bool) -> list[LiveAnswer]:
        steps = (self._since_answer + len(samples)) // self.step  # the answers these samples complete
        answers = []
        while samples.size:
            piece, samples = samples[: self.step - self._since_answer], samples[self.step - self._since_answer :]
            self._take(piece)
            if self._since_answer == self.step:
                answers.append(self._answer(judge=not judge_last_only or len(answers) == steps - 1))
        return answers

    def summary(self) -> LiveSummary:
        probabilities = None
        if self._speech_answers:
            mean = self._speech_sum / self._speech_answers
            probabilities = dict(zip(self.model.labels, map(float, mean)))
        return LiveSummary(self.time_s, self._speech_steps * self.step / SAMPLING_RATE, probabilities)

    def _to_16k(self, chunk: np.ndarray, sampling_rate: int) -> np.ndarray:
        samples = to_mono_float(chunk)
        if not np.all(np.isfinite(samples)):
            raise AudioError("The microphone sent invalid samples (NaN or infinity).")
        if self._resampler is None:
            self._resampler = StreamResampler(sampling_rate)
        elif self._resampler.orig_rate != sampling_rate:
            raise AudioError(
                f"The microphone changed its sampling rate mid-stream ({self._resampler.orig_rate} -> "
                f"{sampling_rate} Hz); stop and start again."
            )
        return self._resampler.push(samples)

    def _take(self, piece: np.ndarray) -> None:
        self._recent = np.concatenate([self._recent, piece])[-self.window :]
        self.voice.push(piece)
        self._samples += len(piece)
        self._since_answer += len(piece)

    def _answer(self, judge: bool) -> LiveAnswer:
        self._since_answer = 0
        speech = self.voice.speech_fraction(self.step) >= MIN_SPEECH_FRACTION
        # The model hears the current utterance only (at most the window): silence before the
        # onset is no part of what it judges.
        if not speech:
            self._utterance = 0
        elif self._utterance:
            self._utterance = min(self._utterance + self.step, self.window)
        else:  # an onset: the utterance began at the step's first speech frame
            self._utterance = self.voice.speech_span(self.step)
        if speech:
            self._speech_steps += 1
        heard = self._recent[len(self._recent) - self._utterance :]
        start_s = max(0.0, self.time_s - len(heard) / SAMPLING_RATE)
        if not speech:
            self._smoothed = None  # a pause ends an utterance: the next one starts afresh
            answer = LiveAnswer(self.time_s, start_s, False, None)
        elif not judge or len(heard) < max(MIN_JUDGED_SPEECH_S, MIN_DURATION_S) * SAMPLING_RATE:
            answer = LiveAnswer(self.time_s, start_s, True, None)  # speech, not judged (or too little yet to judge)
        else:
            row = self.model.predict_batch([heard])[0].astype(np.float64)
            self._speech_sum += row
            self._speech_answers += 1
            previous = self._smoothed
            self._smoothed = row if previous is None else self.smoothing * row + (1 - self.smoothing) * previous
            probabilities = dict(zip(self.model.labels, map(float, self._smoothed)))
            unsure = len(heard) < MIN_SURE_SPEECH_S * SAMPLING_RATE or self.model.is_unsure(probabilities)
            answer = LiveAnswer(self.time_s, start_s, True, probabilities, unsure)
        self.history.append(answer)
        return answer


def play(stream: LiveStream, waveform: np.ndarray, chunk_s: float = CHUNK_S, realtime: bool = False) -> Iterator[LiveAnswer]:
    """Feed a recording (checked 16 kHz waveform) to `stream` in chunks of `chunk_s`, as if it came
    live, and yield the answers as they come; with `realtime`, at the pace the recording plays."""
    started = time.monotonic()
    size = round(chunk_s * SAMPLING_RATE)
    for first in range(0, len(waveform), size):
        chunk = waveform[first : first + size]
        if realtime:  # wait until this chunk would have been spoken
            time.sleep(max(0.0, started + (first + len(chunk)) / SAMPLING_RATE - time.monotonic()))
        yield from stream.feed(chunk)


class StreamResampler:
    """Resample a stream chunk by chunk to 16 kHz, giving the samples that resampling the whole
    stream at once would give (torchaudio's windowed sinc), except at its very end.

    Each chunk is resampled with RESAMPLE_MARGIN input samples of real context on both sides, so
    the output lags the input by that margin (RESAMPLE_MARGIN input samples, rounded up to whole
    periods: about 1.4 ms at 48 kHz), which a live stream never misses. At 16 kHz a chunk passes
    through as it is.
    Input is consumed in
    whole periods of the rate ratio (3 samples for 48 kHz, 441 for 44.1 kHz), which keeps every
    piece aligned with the whole stream's output grid.
    """

    def __init__(self, orig_rate: int):
        check_sampling_rate(orig_rate)
        self.orig_rate = orig_rate
        divisor = math.gcd(orig_rate, SAMPLING_RATE)
        self.in_period, self.out_period = orig_rate // divisor, SAMPLING_RATE // divisor
        self.margin = math.ceil(RESAMPLE_MARGIN / self.in_period) * self.in_period
        self._pending = np.zeros(self.margin, dtype=np.float32)  # left context (silence before the start) + unread input

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.orig_rate == SAMPLING_RATE:
            return samples
        self._pending = np.concatenate([self._pending, samples])
        usable = (len(self._pending) - 2 * self.margin) // self.in_period * self.in_period
        if usable <= 0:
            return np.zeros(0, dtype=np.float32)
        resampled = resample(self._pending[: usable + 2 * self.margin], self.orig_rate, SAMPLING_RATE)
        first = self.margin // self.in_period * self.out_period
        self._pending = self._pending[usable:]
        return resampled[first : first + usable // self.in_period * self.out_period]
