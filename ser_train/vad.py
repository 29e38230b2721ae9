"""Speech activity: Silero VAD's speech probability per 32 ms frame of 16 kHz audio.

Silero VAD (MIT) ships its ONNX model inside the silero-vad wheel and runs on onnxruntime, so
nothing is downloaded at run time. It was chosen by measurement over an energy rule and WebRTC's
VAD on speech mixed with noise and music (benchmarks/live.py). Live mode asks it, step by step,
whether the newest audio holds speech (`VoiceActivity`); evaluation asks where a clip's speech
begins (`speech_onset`, `first_speech`), to judge models on the first second or two of speech;
the Whisper family hears a clip's speech only (`trim_silence`); the timeline of a long recording
asks which of its segments are speech (`speech_seconds_within`).
"""

from __future__ import annotations

import functools
import importlib.util
from collections import deque
from pathlib import Path

import numpy as np

from ser_train.audio import SAMPLING_RATE, raised_if_quiet
from ser_train.errors import ModelError

SPEECH_THRESHOLD = 0.5  # a voice-activity frame is speech above this probability (Silero's default)
# A stretch of audio (a live step, a timeline segment) is speech when at least this share of its
# frames is: Silero hears a stray frame of speech in a tone or a door now and then.
MIN_SPEECH_FRACTION = 0.25
TRIM_MARGIN_S = 0.1  # seconds kept either side of a clip's speech when its silence is trimmed
# Silero VAD v5/v6 at 16 kHz: 512-sample frames (32 ms), each seen with the 64 samples before it,
# and a recurrent state of 2 x 128 numbers carried from frame to frame.
VAD_FRAME = 512
VAD_CONTEXT = 64
VAD_STATE_SHAPE = (2, 1, 128)
VAD_PACKAGE = "silero_vad"
VAD_MODEL_FILE = Path("data") / "silero_vad.onnx"
PUSHED_SAMPLES = 64 * VAD_FRAME  # a long waveform goes to the stream 2 s at a time


class VoiceActivity:
    """Silero VAD over a 16 kHz stream: a speech probability per 32 ms frame, state carried on.

    Keeps the probabilities of the last KEPT_FRAMES frames, enough for any step, or of every frame
    (`keep_all`: a Python float, about 32 bytes, per 32 ms: 0.6 MiB for 10 minutes).
    """

    KEPT_FRAMES = 64  # 2 s of frames

    def __init__(self, keep_all: bool = False):
        self.session = vad_session()
        self._state = np.zeros(VAD_STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(VAD_CONTEXT, dtype=np.float32)  # context + samples not yet in a frame
        self.probabilities: deque[float] = deque(maxlen=None if keep_all else self.KEPT_FRAMES)

    def push(self, samples16k: np.ndarray) -> None:
        # Silero's ONNX graph takes float32 only; a caller's float64 (soundfile's default) would
        # stop it with onnxruntime's InvalidArgument.
        self._pending = np.concatenate([self._pending, samples16k.astype(np.float32, copy=False)])
        while len(self._pending) >= VAD_CONTEXT + VAD_FRAME:
            frame = self._pending[: VAD_CONTEXT + VAD_FRAME]
            self.probabilities.append(self._run(frame))
            self._pending = self._pending[VAD_FRAME:]

    def speech_fraction(self, samples: int) -> float:
        """The share of speech among the frames of about the last `samples` samples."""
        count = min(len(self.probabilities), max(1, round(samples / VAD_FRAME)))
        if not count:
            return 0.0
        recent = list(self.probabilities)[-count:]
        return sum(probability > SPEECH_THRESHOLD for probability in recent) / count

    def speech_span(self, samples: int) -> int:
        """How many of about the last `samples` samples lie from the first speech frame among
        them to the end (0 when they hold no speech frame)."""
        count = min(len(self.probabilities), max(1, round(samples / VAD_FRAME)))
        recent = list(self.probabilities)[-count:] if count else []
        first = next((i for i, probability in enumerate(recent) if probability > SPEECH_THRESHOLD), None)
        return 0 if first is None else (count - first) * VAD_FRAME

    def _run(self, frame: np.ndarray) -> float:
        probability, self._state = self.session.run(
            None, {"input": frame[None, :], "state": self._state, "sr": np.array(SAMPLING_RATE, dtype=np.int64)}
        )
        return float(probability[0, 0])


def frame_speech_probabilities(waveform16k: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each whole 32 ms frame of a waveform, as a stream sees it,
    speech quieter than the corpora's heard as the models hear it (`raised_if_quiet`): Silero
    misses much of it as it is."""
    waveform16k = raised_if_quiet(waveform16k)
    voice = VoiceActivity(keep_all=True)
    for start in range(0, len(waveform16k), PUSHED_SAMPLES):  # a push copies what it is given
        voice.push(waveform16k[start : start + PUSHED_SAMPLES])
    return np.array(voice.probabilities, dtype=np.float32)


@functools.cache
def vad_session():
    """The Silero VAD ONNX model that the silero-vad package ships, in one onnxruntime session
    shared by every stream (its `run` is thread-safe; the recurrent state is each stream's own).

    The file is found without importing the package, whose import would set torch's thread count
    to one for the whole process.
    """
    import onnxruntime

    spec = importlib.util.find_spec(VAD_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("Speech detection needs the silero-vad package (pip install -r requirements.txt).")
    path = Path(next(iter(spec.submodule_search_locations))) / VAD_MODEL_FILE
    if not path.is_file():
        raise ModelError(f"The silero-vad package has no {VAD_MODEL_FILE}; reinstall it.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a 32 ms frame is far too small to split across cores
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def speech_onset(waveform16k: np.ndarray) -> int:
    """The first sample of the first frame Silero hears as speech (0 if it hears none)."""
    speech = np.flatnonzero(frame_speech_probabilities(waveform16k) > SPEECH_THRESHOLD)
    return int(speech[0]) * VAD_FRAME if len(speech) else 0


def speech_seconds(waveform16k: np.ndarray) -> float:
    """How much of a waveform Silero hears as speech, in seconds (whole 32 ms frames)."""
    return speech_seconds_within(frame_speech_probabilities(waveform16k), [(0, len(waveform16k))])[0]


def speech_seconds_within(probabilities: np.ndarray, bounds: list[tuple[int, int]]) -> list[float]:
    """Seconds heard as speech within each (start, end) sample span of a recording, given Silero's
    frame probabilities over the recording (`frame_speech_probabilities`): every frame that
    overlaps the span counts."""
    speech = probabilities > SPEECH_THRESHOLD
    return [float(speech[start // VAD_FRAME : -(-end // VAD_FRAME)].sum()) * VAD_FRAME / SAMPLING_RATE for start, end in bounds]


def first_speech(waveform16k: np.ndarray, seconds: float) -> np.ndarray:
    """The first `seconds` of a clip from where its speech begins (shorter if the clip ends first)."""
    start = speech_onset(waveform16k)
    return waveform16k[start : start + round(seconds * SAMPLING_RATE)]


def trim_silence(waveform16k: np.ndarray, margin_s: float = TRIM_MARGIN_S) -> np.ndarray:
    """The clip from its first to its last speech frame, with `margin_s` either side (the whole
    clip when Silero hears no speech in it)."""
    speech = np.flatnonzero(frame_speech_probabilities(waveform16k) > SPEECH_THRESHOLD)
    if not len(speech):
        return waveform16k
    margin = round(margin_s * SAMPLING_RATE)
    return waveform16k[max(0, int(speech[0]) * VAD_FRAME - margin) : (int(speech[-1]) + 1) * VAD_FRAME + margin]
