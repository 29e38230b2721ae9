"""Speech emotion recognition demo: record or upload speech, pick a model, see the emotion.

`python app.py` serves it on http://127.0.0.1:7860 (GRADIO_SERVER_NAME and GRADIO_SERVER_PORT
change that); on Hugging Face Spaces this file is the Space. The page is a thin layer over the
library: `ser_train.audio` decodes and checks the audio, `ser_train.inference` loads and runs
the models, `ser_train.timeline` follows the emotion through long recordings. The handlers
(`predict_handler` for the page, `predict_api` for the "predict" API endpoint) are plain
functions that the tests call directly.

Environment variables:
    SER_MODELS          comma-separated Hub model ids (or model folders) offered besides the
                        bundled model, e.g. "user/ravdess-wav2vec2,user/other@v2"
    SER_MAX_DURATION_S  longest recording accepted, in seconds (default 600: 10 minutes)
    SER_MAX_UPLOAD_MB   largest file accepted, in MB (default 128)
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import librosa
import librosa.display
import numpy as np
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from matplotlib.figure import Figure

from ser_train.audio import DEFAULT_MAX_DURATION_S, MIN_DURATION_S, SAMPLING_RATE, SUPPORTED_FORMATS, load_audio
from ser_train.data import EMOTIONS
from ser_train.errors import AudioError, HubError, SERError
from ser_train.evaluation import EVAL_RESULTS_FILE
from ser_train.hub import split_revision
from ser_train.inference import DEFAULT_MODEL, EmotionModel, load_model
from ser_train.timeline import (
    MIN_TIMELINE_DURATION_S,
    Segment,
    SpeechMap,
    average_probabilities,
    cut_segments,
    frame_statistics,
    map_speech,
    timeline,
    timeline_file,
)

# --- Configuration ----------------------------------------------------------------------------

EXTRA_MODELS = tuple(name.strip() for name in os.environ.get("SER_MODELS", "").split(",") if name.strip())
OFFERED_MODELS = tuple(dict.fromkeys((DEFAULT_MODEL, *EXTRA_MODELS)))  # in order, without repeats
MAX_DURATION_S = float(os.environ.get("SER_MAX_DURATION_S", DEFAULT_MAX_DURATION_S))
MAX_UPLOAD_MB = int(os.environ.get("SER_MAX_UPLOAD_MB", 128))  # a 10-minute 48 kHz stereo WAV is 115 MB

EMOJI = {
    "neutral": "😐", "calm": "😌", "happy": "😄", "sad": "😢",
    "angry": "😠", "fearful": "😨", "disgust": "🤢", "surprised": "😲",
}  # fmt: skip
EMOTION_COLORS = {
    "neutral": "#9e9e9e", "calm": "#4db6ac", "happy": "#fbc02d", "sad": "#1e88e5",
    "angry": "#e53935", "fearful": "#8e24aa", "disgust": "#7cb342", "surprised": "#fb8c00",
}  # fmt: skip

# Plots show long recordings at a fixed level of detail, so drawing them costs the same for
# 3 seconds or 10 minutes.
WAVEFORM_POINTS = 4000  # min/max pairs drawn for the waveform
SPECTROGRAM_COLUMNS = 2000  # at most this many spectrogram frames
SPECTROGRAM_HOP_S = 0.010  # 10 ms frames for short clips
SPECTROGRAM_FFT = 512  # 32 ms window at 16 kHz
SPECTROGRAM_MELS = 64
SPECTROGRAM_FFT_ROWS = 250  # frames per FFT call, which bounds its working memory to a few MB

# Browsers filter microphone audio for calls by default (echo cancellation, noise suppression,
# automatic gain control). Those filters flatten loudness and pitch dynamics, the very cues
# emotion is read from, so the page asks for raw capture: this script, in the page's <head>,
# runs before Gradio's own code and adds the three constraints to every microphone request.
RAW_MICROPHONE_SCRIPT = """
<script>
(() => {
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) return;
  const getUserMedia = media.getUserMedia.bind(media);
  const raw = {echoCancellation: false, noiseSuppression: false, autoGainControl: false};
  media.getUserMedia = (constraints = {}) => {
    if (constraints.audio) {
      const audio = constraints.audio === true ? {} : constraints.audio;
      constraints = {...constraints, audio: {...audio, ...raw}};
    }
    return getUserMedia(constraints);
  };
})();
</script>
"""

CSS = """
#status p {border-left: 4px solid #f59e0b; padding: 6px 12px; background: rgba(245, 158, 11, 0.1);}
#summary h2 {margin: 0;}
"""

# --- Models -----------------------------------------------------------------------------------

_models: dict[str, EmotionModel] = {}
_loading = threading.Lock()


def get_model(name: str) -> EmotionModel:
    """The model called `name`, loaded on first use and kept; a SERError if it cannot be loaded."""
    model = _models.get(name)
    if model is None:
        with _loading:  # one load at a time, so two first requests for a model load it once
            model = _models.get(name)
            if model is None:
                model = _models[name] = load_model(name)
    return model


def resolve_model(name: str | None) -> str:
    """The model to load for what the user picked or typed; empty means the bundled default.

    Besides the offered models only Hub ids are accepted, so visitors cannot make the server
    read folders of its own disk.
    """
    name = (name or "").strip()
    if not name:
        return DEFAULT_MODEL
    if name in OFFERED_MODELS:
        return name
    try:
        validate_repo_id(split_revision(name)[0])
    except HFValidationError:
        raise HubError(f"'{name}' is not a Hub model id; type it as user/name or user/name@revision.") from None
    return name


def display_name(name: str) -> str:
    if name == DEFAULT_MODEL:
        return f"{Path(DEFAULT_MODEL).name} (bundled)"
    return Path(name).name if Path(name).is_absolute() else name


def model_choices() -> list[tuple[str, str]]:
    return [(display_name(name), name) for name in OFFERED_MODELS]


def accuracy_note(model_dir: str = DEFAULT_MODEL) -> str:
    """How well the bundled model did on actors it never heard, from its eval_results.json."""
    path = Path(model_dir) / EVAL_RESULTS_FILE
    if not path.is_file():
        return ""
    results = json.loads(path.read_text())
    test = results["test"]
    how = (
        f"{len(results['folds'])}-fold cross-validation"
        if results.get("protocol") == "cross_validation"
        else "a held-out test set"
    )
    return (
        f" The bundled model named the right emotion for "
        f"{test['accuracy']:.0%} of the clips of actors it never heard ({how}; balanced accuracy "
        f"{test['balanced_accuracy']:.0%}; chance is {1 / len(EMOTIONS):.1%})."
    )


# --- Analysis ---------------------------------------------------------------------------------


def analyse(model: EmotionModel, waveform: np.ndarray) -> tuple[dict[str, float], list[Segment]]:
    """Probabilities for the whole recording, and its timeline when it is long.

    A long recording is judged segment by segment, and its overall probabilities are the
    segments' average weighted by duration: the models were trained on single utterances,
    and this keeps memory flat however long the recording is.
    """
    if len(waveform) / SAMPLING_RATE <= MIN_TIMELINE_DURATION_S:
        return model.predict(waveform, SAMPLING_RATE), []
    segments = timeline(model, waveform)
    return average_probabilities(segments), segments


def map_recording(audio_path: str | None) -> SpeechMap:
    """A first pass over the recording or upload: its length and its speech, or AudioError."""
    if not audio_path:
        raise AudioError(
            "No audio yet: record with the microphone or upload a file, and once it has arrived "
            "(the player shows it), press Analyse."
        )
    return map_speech(audio_path, max_duration_s=MAX_DURATION_S)


def analyse_file(model: EmotionModel, speech: SpeechMap) -> tuple[dict[str, float], list[Segment]]:
    """`analyse` of a mapped file without holding a long recording in memory.

    A short recording is judged whole (the first pass kept its samples), a long one streamed
    through the timeline segment batch by segment batch, so memory does not grow with its length.
    """
    if speech.duration_s <= MIN_TIMELINE_DURATION_S:  # well under a stream block, so samples are kept
        return analyse(model, speech.samples)
    segments = timeline_file(model, speech)
    return average_probabilities(segments), segments


def predict_api(audio: str, model: str, calibration_audio: str | None = None) -> dict[str, float]:
    """Probabilities of the 8 emotions for an audio file (any common format, rate or channel count).

    `model` is "" for the bundled model, a model the Space offers (SER_MODELS), or any Hub id
    (user/name or user/name@revision). Recordings longer than 6 s get the duration-weighted
    average over their stretches of speech. `calibration_audio`, optional, is 15-30 s of the
    same speaker's calm speech: the answer is then calibrated to that voice, for this request only.
    """
    try:
        chosen = get_model(resolve_model(model))
        if calibration_audio:
            chosen = chosen.with_calibration(chosen.calibrate_recording(read_calibration(calibration_audio)))
        probabilities, _ = analyse_file(chosen, map_recording(audio))
    except SERError as error:
        raise gr.Error(str(error)) from None
    return probabilities


# --- Calibration to a visitor's voice ---------------------------------------------------------
#
# A visitor reads a neutral passage; the model's statistics of that speech (never the audio) are
# kept in the visitor's own gr.State, so they live in that browser session only and no other
# visitor, request or the server's disk ever sees them. Calibration from neutral speech only
# moves the visitor's neutral mean onto the training speakers' (see ser_train.calibration).

CALIBRATION_PASSAGE = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colours. These take the shape "
    "of a long round arch, with its path high above, and its two ends apparently beyond the "
    "horizon. There is, according to legend, a boiling pot of gold at one end. People look, but "
    "no one ever finds it."
)  # the opening of "The Rainbow Passage" (Fairbanks, 1960), read in about 20 seconds
CALIBRATION_MIN_S = 10.0  # less calm speech says too little about a voice
CALIBRATION_MAX_S = 60.0


def read_calibration(audio_path: str | None) -> np.ndarray:
    """The calibration recording as a checked 16 kHz waveform of 10-60 s, or AudioError."""
    if not audio_path:
        raise AudioError("No calibration recording yet: record or upload yourself reading the passage, then press Calibrate.")
    waveform = load_audio(audio_path, max_duration_s=CALIBRATION_MAX_S)
    if len(waveform) < CALIBRATION_MIN_S * SAMPLING_RATE:
        raise AudioError(
            f"The calibration recording is {len(waveform) / SAMPLING_RATE:.1f} s long; read the whole "
            f"passage (15-30 s, at least {CALIBRATION_MIN_S:g} s)."
        )
    return waveform


def calibrate_handler(
    audio_path: str | None, model_choice: str | None, custom_id: str | None, calibrations: dict | None
) -> tuple[dict, str]:
    """Calibrate the chosen model to this session's voice: (the session's new state, status)."""
    calibrations = dict(calibrations or {})  # a new dict: the session's old state is never changed in place
    try:
        name = resolve_model(picked(model_choice, custom_id))
        model = get_model(name)
        calibrations[name] = model.calibrate_recording(read_calibration(audio_path), source="neutral")
    except SERError as error:
        return calibrations, f"⚠️ {error}\n\n{calibration_status(calibrations)}"
    return calibrations, calibration_status(calibrations)


def reset_calibration() -> tuple[dict, str]:
    return {}, calibration_status({})


def calibration_status(calibrations: dict) -> str:
    if not calibrations:
        return "Calibration is **off**: answers are the model's own."
    lines = [
        f"✅ Calibration is **on** for {display_name(name)} ({calibration.describe()}).{measured_effect(name)}"
        for name, calibration in calibrations.items()
    ]
    return "\n\n".join(lines + ["It applies to your recordings in this browser tab only; Reset turns it off."])


def measured_effect(model_dir: str) -> str:
    """What neutral calibration did for this model on actors it never heard, from its eval_results.json."""
    path = Path(model_dir) / EVAL_RESULTS_FILE
    if not path.is_file():
        return ""
    neutral = json.loads(path.read_text()).get("calibration", {}).get("mean_over_folds", {}).get("neutral")
    if not neutral:
        return ""
    return (
        f" Measured on actors it never heard, calibrated from their neutral and calm clips: balanced "
        f"accuracy {neutral['calibrated']:.1%}, against {neutral['uncalibrated_same_clips']:.1%} uncalibrated."
    )


def session_model(name: str, calibrations: dict | None) -> EmotionModel:
    """The model `name`, calibrated when this session calibrated it."""
    model = get_model(name)
    calibration = (calibrations or {}).get(name)
    return model.with_calibration(calibration) if calibration else model


class PageOutputs(NamedTuple):
    """What predict_handler sends to the page, one field per output component."""

    status: str  # Markdown: why something could not be analysed (empty when all went well)
    summary: str  # Markdown: the top emotion and its confidence, per model
    probabilities: dict  # gr.update of the main model's gr.Label
    comparison: dict  # gr.update of the comparison model's gr.Label (hidden when not comparing)
    details_section: dict  # gr.update showing the plots (and table) only when there are results
    audio_plot: Figure | None  # waveform and spectrogram
    timeline_section: dict  # gr.update showing the timeline for long recordings only
    timeline_plot: Figure | None
    timeline_table: list[list[str]] | None  # start, end, emotion, confidence


def predict_handler(
    audio_path: str | None,
    model_choice: str | None,
    custom_id: str | None,
    compare_choice: str | None = None,
    compare_custom_id: str | None = None,
    calibrations: dict | None = None,
) -> PageOutputs:
    """Analyse a recording with the chosen model (a typed Hub id wins over the picker) and,
    when a second model is chosen, with that one too. The file is read in blocks, never whole.
    `calibrations` is this session's {model name: Calibration} (see calibrate_handler)."""
    try:
        speech = map_recording(audio_path)
        name = resolve_model(picked(model_choice, custom_id))
        probabilities, segments = analyse_file(session_model(name, calibrations), speech)
    except SERError as error:
        return failure(str(error))

    comparison, status = None, ""
    compare_name = picked(compare_choice, compare_custom_id)
    if compare_name:
        try:
            compare_name = resolve_model(compare_name)
            comparison, _ = analyse_file(session_model(compare_name, calibrations), speech)
        except SERError as error:  # the main result still stands
            status = f"⚠️ The comparison model was not used: {error}"

    duration_s = speech.duration_s
    compared = {compare_name: comparison} if comparison else {}
    return PageOutputs(
        status=status,
        summary=summary_markdown({name: probabilities, **compared}, duration_s),
        probabilities=gr.update(value=probabilities, label=display_name(name)),
        comparison=gr.update(
            value=comparison, label=display_name(compare_name or ""), visible=comparison is not None
        ),
        details_section=gr.update(visible=True),
        audio_plot=audio_figure(speech),
        timeline_section=gr.update(visible=bool(segments)),
        timeline_plot=timeline_figure(segments, duration_s, display_name(name)) if segments else None,
        timeline_table=timeline_rows(segments) if segments else None,
    )


def picked(choice: str | None, typed_id: str | None) -> str:
    """A typed model id wins over the dropdown's choice."""
    return (typed_id or "").strip() or choice or ""


def failure(message: str) -> PageOutputs:
    """Outputs that show `message` and clear every result of a previous analysis."""
    return PageOutputs(
        status=f"⚠️ {message}",
        summary="",
        probabilities=gr.update(value=None),
        comparison=gr.update(value=None, visible=False),
        details_section=gr.update(visible=False),
        audio_plot=None,
        timeline_section=gr.update(visible=False),
        timeline_plot=None,
        timeline_table=None,
    )


def summary_markdown(results: dict[str, dict[str, float]], duration_s: float) -> str:
    """'## 😠 angry · 82%' for the first (main) model, then a line for the compared one."""
    (name, probabilities), *compared = results.items()
    lines = [f"## {verdict(probabilities)}", f"<small>{display_name(name)} · {duration_s:.1f} s of audio</small>"]
    lines += [f"**Compared with {display_name(other)}:** {verdict(scores)}" for other, scores in compared]
    return "\n\n".join(lines)


def verdict(probabilities: dict[str, float]) -> str:
    top = max(probabilities, key=probabilities.get)
    return f"{EMOJI.get(top, '')} {top} · {probabilities[top]:.0%}"


def timeline_rows(segments: list[Segment]) -> list[list[str]]:
    return [
        [f"{s.start_s:.1f}", f"{s.end_s:.1f}", f"{EMOJI.get(s.top_emotion, '')} {s.top_emotion}", f"{s.confidence:.0%}"]
        for s in segments
    ]


# --- Plots ------------------------------------------------------------------------------------


def audio_figure(speech: SpeechMap) -> Figure:
    """What the model heard: the waveform over its mel spectrogram, on one time axis."""
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    wave_axes, spectrum_axes = figure.subplots(2, 1, sharex=True, height_ratios=[1, 2])

    times, lows, highs = waveform_envelope(speech)
    wave_axes.fill_between(times, lows, highs, color="#4f46e5", linewidth=0.5)
    wave_axes.set(ylabel="amplitude", xlim=(0, speech.duration_s), title="What was heard")

    hop = max(round(SPECTROGRAM_HOP_S * SAMPLING_RATE), int(np.ceil(speech.num_samples / SPECTROGRAM_COLUMNS)))
    librosa.display.specshow(
        librosa.power_to_db(mel_spectrogram(speech, hop), ref=np.max), sr=SAMPLING_RATE, hop_length=hop,
        x_axis="s", y_axis="mel", ax=spectrum_axes, cmap="magma",
    )  # fmt: skip
    spectrum_axes.set(xlabel="time (s)", ylabel="frequency (Hz)")
    return figure


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
    """One bar per segment: its span in time, coloured by its top emotion, as tall as its confidence."""
    figure = Figure(figsize=(10, 2.8), layout="constrained")
    axes = figure.subplots()
    for segment in segments:
        axes.bar(
            segment.start_s, segment.confidence, width=segment.duration_s, align="edge",
            color=EMOTION_COLORS.get(segment.top_emotion, "#607d8b"), edgecolor="white", linewidth=0.5,
        )  # fmt: skip
    shown = sorted({segment.top_emotion for segment in segments}, key=EMOTIONS.index)
    handles = [axes.bar(0, 0, color=EMOTION_COLORS[emotion], label=emotion) for emotion in shown]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes.set(xlim=(0, duration_s), ylim=(0, 1), xlabel="time (s)", ylabel="confidence", title=model_name)
    return figure


# --- Page ---------------------------------------------------------------------------------------


def description() -> str:
    return (
        f"Recognises eight emotions ({', '.join(EMOTIONS)}) in English speech. The models learned "
        "from RAVDESS: two sentences acted by 24 North American actors in a studio, so expect less "
        f"on spontaneous speech, other languages or noisy rooms.{accuracy_note()}"
    )


def model_picker(label: str, elem_id: str, with_none: bool) -> tuple[gr.Dropdown, gr.Textbox]:
    """A dropdown of the offered models and a textbox for any Hub id (which wins when filled)."""
    choices = ([("none", "")] if with_none else []) + model_choices()
    dropdown = gr.Dropdown(choices, value=choices[0][1], label=label, elem_id=elem_id)
    typed = gr.Textbox(
        label="…or any Hub model id", placeholder="user/name or user/name@revision", max_lines=1, elem_id=f"{elem_id}-id"
    )
    return dropdown, typed


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Speech emotion recognition") as demo:
        gr.Markdown(f"# 🎭 Speech emotion recognition\n{description()}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                audio = gr.Audio(
                    sources=["microphone", "upload"],
                    type="filepath",  # files reach ser_train.audio untouched: it decodes every format
                    label="Speech",
                    elem_id="speech",
                    waveform_options=gr.WaveformOptions(sample_rate=SAMPLING_RATE),
                )
                gr.Markdown(
                    f"<small>Upload {SUPPORTED_FORMATS} (up to {MAX_UPLOAD_MB} MB), "
                    f"{MIN_DURATION_S:g} s to {MAX_DURATION_S / 60:g} min. 🎙️ The microphone records "
                    "raw sound, without echo cancellation, noise suppression or automatic gain: "
                    "those call filters reshape loudness and pitch, the cues emotion is read from. "
                    "Use headphones if something is playing.</small>"
                )
                model, custom_id = model_picker("Model", "model", with_none=False)
                with gr.Accordion("Compare with a second model", open=False):
                    compare, compare_custom_id = model_picker("Second model", "compare-model", with_none=True)
                with gr.Accordion("Calibrate to my voice", open=False, elem_id="calibration"):
                    gr.Markdown(
                        "Much of what a model hears is *who* is speaking and through which microphone. "
                        "Read this passage aloud in your usual calm voice (15-30 s), then press "
                        "Calibrate: the model compares your later recordings with your calm voice "
                        "instead of with the actors it learned from. Only statistics of the "
                        "recording are kept, in this browser tab, never on the server's disk.\n\n"
                        f"> {CALIBRATION_PASSAGE}"
                    )
                    calibration_audio = gr.Audio(
                        sources=["microphone", "upload"], type="filepath", label="Calm speech", elem_id="calibration-speech"
                    )
                    with gr.Row():
                        calibrate_button = gr.Button("Calibrate", elem_id="calibrate")
                        reset_button = gr.Button("Reset", elem_id="reset-calibration")
                    calibration_note = gr.Markdown(calibration_status({}), elem_id="calibration-status")
                analyse_button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=6):
                status = gr.Markdown(elem_id="status")
                summary = gr.Markdown(elem_id="summary")
                with gr.Row():
                    probabilities = gr.Label(num_top_classes=len(EMOTIONS), label="Emotions", elem_id="probabilities")
                    comparison = gr.Label(num_top_classes=len(EMOTIONS), visible=False, elem_id="comparison")
        with gr.Column(visible=False) as details_section:
            audio_plot = gr.Plot(show_label=False, elem_id="audio-plot")
            with gr.Column(visible=False) as timeline_section:
                gr.Markdown(
                    f"### Emotion over time\nRecordings longer than {MIN_TIMELINE_DURATION_S:g} s are "
                    "split at their pauses into stretches of speech (long ones into windows of a few "
                    "seconds), and each is judged on its own. The overall result above is their "
                    "average, weighted by duration."
                )
                timeline_plot = gr.Plot(show_label=False, elem_id="timeline-plot")
                timeline_table = gr.Dataframe(
                    headers=["start (s)", "end (s)", "emotion", "confidence"],
                    interactive=False,
                    elem_id="timeline-table",
                )

        calibrations = gr.State({})  # this session's {model name: Calibration}
        calibrate_button.click(
            calibrate_handler,
            inputs=[calibration_audio, model, custom_id, calibrations],
            outputs=[calibrations, calibration_note],
            api_visibility="private",
        )
        reset_button.click(reset_calibration, outputs=[calibrations, calibration_note], api_visibility="private")
        analyse_button.click(
            predict_handler,
            inputs=[audio, model, custom_id, compare, compare_custom_id, calibrations],
            outputs=list(
                PageOutputs(
                    status=status, summary=summary, probabilities=probabilities, comparison=comparison,
                    details_section=details_section, audio_plot=audio_plot, timeline_section=timeline_section,
                    timeline_plot=timeline_plot, timeline_table=timeline_table,
                )
            ),  # fmt: skip
            api_visibility="private",  # the page's own event; programs use /predict
        )
        with gr.Row(visible=False):  # the "predict" API endpoint's own (hidden) inputs and output
            api_audio = gr.Audio(type="filepath", label="audio")
            api_model = gr.Textbox("", label="model")
            api_calibration = gr.Audio(type="filepath", label="calibration_audio")
            api_result = gr.JSON(label="probabilities")
            api_button = gr.Button()
        api_button.click(
            predict_api, inputs=[api_audio, api_model, api_calibration], outputs=api_result, api_name="predict"
        )
    return demo


demo = build_app()


def preload_default_model() -> None:
    """Load the bundled model at start-up, so the first visitor does not wait for it."""
    try:
        get_model(DEFAULT_MODEL)
    except SERError as error:  # the page still works with other models and shows this on use
        print(f"warning: the bundled model could not be loaded: {error}", file=sys.stderr)


if __name__ == "__main__":
    preload_default_model()
    demo.queue().launch(
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        head=RAW_MICROPHONE_SCRIPT,
        css=CSS,
        theme=gr.themes.Soft(),
    )
