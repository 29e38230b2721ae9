"""Figures of a recording and of its emotions, for the page (matplotlib, no pyplot state).

Long recordings are drawn at a fixed level of detail, so drawing them costs the same for
3 seconds or 10 minutes, and the recording is read through its SpeechMap block by block:

    audio_figure(speech)                       # waveform over mel spectrogram
    timeline_figure(segments, duration_s, "ravdess-tess-emovo-cnn (bundled)")
    live_timeline_html(answers, now_s, 60, 0.5) # live mode's rolling timeline
"""

from __future__ import annotations

import librosa
import librosa.display
import numpy as np
from matplotlib.figure import Figure

from ser_train.audio import SAMPLING_RATE
from ser_train.data import EMOTIONS
from ser_train.timeline import Segment, SpeechMap, cut_segments, frame_statistics

EMOJI = {
    "neutral": "😐", "calm": "😌", "happy": "😄", "sad": "😢",
    "angry": "😠", "fearful": "😨", "disgust": "🤢", "surprised": "😲",
}  # fmt: skip
EMOTION_COLORS = {
    "neutral": "#9e9e9e", "calm": "#4db6ac", "happy": "#fbc02d", "sad": "#1e88e5",
    "angry": "#e53935", "fearful": "#8e24aa", "disgust": "#7cb342", "surprised": "#fb8c00",
}  # fmt: skip
NO_SPEECH_COLOR = "#bdbdbd"
NO_SPEECH_HEIGHT = 0.08  # bars of no speech (timeline and live) are low: there is no confidence to show
# Live mode's speech that was heard but not judged (too little yet, or caught up on while the server
# was busy): no confidence either, but not to be taken for silence.
UNJUDGED_COLOR = "#9fa8da"
UNJUDGED_HEIGHT = 0.25
# Legend entries per row under the timeline: all nine in one row overran a 10-inch figure,
# cutting the last off and squeezing the axes to about half the width.
LEGEND_COLUMNS = 5

WAVEFORM_POINTS = 4000  # min/max pairs drawn for the waveform
SPECTROGRAM_COLUMNS = 2000  # at most this many spectrogram frames
SPECTROGRAM_HOP_S = 0.010  # 10 ms frames for short clips
SPECTROGRAM_FFT = 512  # 32 ms window at 16 kHz
SPECTROGRAM_MELS = 64
SPECTROGRAM_FFT_ROWS = 250  # frames per FFT call, which bounds its working memory to a few MB


def audio_figure(speech: SpeechMap) -> Figure:
    """What the model heard: the waveform over its mel spectrogram, on one time axis."""
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    wave_axes, spectrum_axes = figure.subplots(2, 1, sharex=True, height_ratios=[1, 2])

    times, lows, highs = waveform_envelope(speech)
    wave_axes.fill_between(times, lows, highs, color="#4f46e5", linewidth=0.5)
    wave_axes.set(ylabel="amplitude", xlim=(0, speech.duration_s))
    wave_axes.set_title("What was heard", loc="left")  # at the left: a phone shows a figure's left part first

    hop = spectrogram_hop(speech.num_samples)
    librosa.display.specshow(
        librosa.power_to_db(mel_spectrogram(speech, hop), ref=np.max), sr=SAMPLING_RATE, hop_length=hop,
        x_axis="s", y_axis="mel", ax=spectrum_axes, cmap="magma",
    )  # fmt: skip
    spectrum_axes.set(xlabel="time (s)", ylabel="frequency (Hz)")
    return figure


def spectrogram_hop(num_samples: int) -> int:
    """Samples between spectrogram frames: 10 ms, or longer so at most SPECTROGRAM_COLUMNS frames."""
    return max(round(SPECTROGRAM_HOP_S * SAMPLING_RATE), int(np.ceil(num_samples / SPECTROGRAM_COLUMNS)))


def waveform_envelope(speech: SpeechMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, minima, maxima) over at most WAVEFORM_POINTS equal stretches of the recording,
    read block by block."""
    stretch = max(1, speech.num_samples // WAVEFORM_POINTS)
    extremes, _ = frame_statistics(speech.blocks(), stretch, lambda frames: np.stack([frames.min(1), frames.max(1)], 1))
    times = (np.arange(len(extremes)) + 0.5) * stretch / SAMPLING_RATE
    return times, extremes[:, 0], extremes[:, 1]


def mel_spectrogram(speech: SpeechMap, hop: int) -> np.ndarray:
    """[SPECTROGRAM_MELS, frames] mel power spectrogram of the recording, read block by block.

    The frames are librosa.feature.melspectrogram's (centred, zero-padded at the edges) but only
    these are cut from the stream: a long recording's hop is far longer than the window, and
    its samples are never all in memory.
    """
    half = SPECTROGRAM_FFT // 2
    centres = range(0, speech.num_samples + 1, hop)
    bounds = [(max(0, centre - half), min(speech.num_samples, centre + half)) for centre in centres]
    frames = np.zeros((len(bounds), SPECTROGRAM_FFT), dtype=np.float32)
    for row, (centre, piece) in enumerate(zip(centres, cut_segments(speech.blocks(), bounds))):
        offset = max(0, half - centre)  # zeros before the recording's start
        frames[row, offset : offset + len(piece)] = piece
    frames *= librosa.filters.get_window("hann", SPECTROGRAM_FFT).astype(np.float32)  # as melspectrogram's
    mel_basis = librosa.filters.mel(sr=SAMPLING_RATE, n_fft=SPECTROGRAM_FFT, n_mels=SPECTROGRAM_MELS)
    mel = np.zeros((SPECTROGRAM_MELS, len(frames)), dtype=np.float32)
    # A few hundred frames per FFT call: numpy's FFT holds several copies of its input.
    for first in range(0, len(frames), SPECTROGRAM_FFT_ROWS):
        spectrum = np.fft.rfft(frames[first : first + SPECTROGRAM_FFT_ROWS], axis=1)
        mel[:, first : first + SPECTROGRAM_FFT_ROWS] = mel_basis @ (spectrum.real**2 + spectrum.imag**2).T
    return mel


def timeline_figure(segments: list[Segment], duration_s: float, model_name: str) -> Figure:
    """One bar per segment: its span in time, coloured by its top emotion, as tall as its
    confidence; a segment without speech is a low grey bar (its answer is for a sound)."""
    figure = Figure(figsize=(10, 2.8), layout="constrained")
    axes = figure.subplots()
    for segment in segments:
        color = EMOTION_COLORS.get(segment.top_emotion, "#607d8b") if segment.is_speech else NO_SPEECH_COLOR
        height = segment.confidence if segment.is_speech else NO_SPEECH_HEIGHT
        axes.bar(segment.start_s, height, width=segment.duration_s, align="edge", color=color, edgecolor="white", linewidth=0.5)
    shown = sorted({segment.top_emotion for segment in segments if segment.is_speech}, key=EMOTIONS.index)
    handles = [axes.bar(0, 0, color=EMOTION_COLORS[emotion], label=emotion) for emotion in shown]
    if not all(segment.is_speech for segment in segments):
        handles.append(axes.bar(0, 0, color=NO_SPEECH_COLOR, label="no speech"))
    # Title and legend at the left, the legend in rows under the axis: a phone shows a figure's
    # left part first (app.py's CSS lets it scroll sideways).
    figure.legend(handles=handles, loc="outside lower left", ncols=min(len(handles), LEGEND_COLUMNS), frameon=False)
    axes.set(xlim=(0, duration_s), ylim=(0, 1), xlabel="time (s)", ylabel="confidence")
    axes.set_title(model_name, loc="left")
    return figure


def live_timeline_html(answers: list, now_s: float, span_s: float, step_s: float) -> str:
    """Live mode's rolling timeline of the last `span_s` seconds up to `now_s`, as HTML.

    One bar per answer (a `ser_train.live.LiveAnswer`, about the `step_s` before its time), coloured
    by its top emotion and as tall as its confidence; no speech is a thin grey bar, speech heard but
    not judged a low pale one, with its own legend entry. Plain HTML,
    not a figure: it is redrawn with every answer, and the browser draws it at no cost to the server.
    """
    start_s = max(0.0, now_s - span_s)
    bars = []
    for answer in answers:
        if answer.time_s <= start_s:
            continue
        emotion = answer.top_emotion
        if emotion:
            kind, color, height, label = emotion, EMOTION_COLORS.get(emotion, "#607d8b"), answer.confidence, f"{emotion} {answer.confidence:.0%}"
        elif answer.speech:
            kind, color, height, label = "unjudged", UNJUDGED_COLOR, UNJUDGED_HEIGHT, "speech, not judged"
        else:
            kind, color, height, label = "none", NO_SPEECH_COLOR, NO_SPEECH_HEIGHT, "no speech"
        bars.append(
            f'<div class="live-bar" data-emotion="{kind}" title="{answer.time_s:.1f} s: {label}" '
            f"style=\"position:absolute;bottom:0;left:{100 * (answer.time_s - step_s - start_s) / span_s:.2f}%;"
            f'width:{100 * step_s / span_s:.2f}%;height:{100 * height:.0f}%;background:{color}"></div>'
        )
    shown = [*EMOTION_COLORS.items(), ("speech, not judged", UNJUDGED_COLOR)]
    legend = " ".join(f'<span style="color:{color}">■</span>&nbsp;{name}' for name, color in shown)
    return (
        f'<div style="position:relative;height:80px;border-bottom:1px solid #999;overflow:hidden">{"".join(bars)}</div>'
        # The times stay whole at either end; on a phone the legend wraps between them.
        f'<div style="display:flex;gap:8px;font-size:small"><span style="white-space:nowrap">{start_s:.0f} s</span>'
        f'<span style="flex:1;text-align:center">{legend}</span>'
        f'<span style="white-space:nowrap">{max(now_s, span_s):.0f} s</span></div>'
    )
