"""Speech emotion recognition demo: record or upload speech, pick a model, see the emotion.

`python app.py` serves it on http://127.0.0.1:7860 (GRADIO_SERVER_NAME and GRADIO_SERVER_PORT
change that); on Hugging Face Spaces this file is the Space. The page is a thin layer over the
library: `ser_train.inference` loads the models, `ser_train.analysis` analyses a recording (the
same call for the page and its "predict" API endpoint), `ser_train.live` follows a live
microphone, `ser_train.plots` draws. This file is the page's layout and wiring; its handlers
(`predict_handler` for the page, `predict_api` for /predict, `live_start`/`live_step`/`live_stop`
for live mode) are plain functions that the tests call directly.

Environment variables:
    SER_MODELS          comma-separated Hub model ids (or model folders) offered besides the
                        bundled model, e.g. "user/ravdess-wav2vec2,user/other@v2"
    SER_MAX_DURATION_S  longest recording accepted, in seconds (default 600: 10 minutes)
    SER_MAX_UPLOAD_MB   largest file accepted, in MB (default 128)
    SER_LIVE_TIME_LIMIT_S  longest live stream, in seconds (default 3600)
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from matplotlib.figure import Figure

from ser_train.analysis import RecordingAnalysis, analyse_recording, analyse_speech
from ser_train.audio import DEFAULT_MAX_DURATION_S, MIN_DURATION_S, SAMPLING_RATE, SUPPORTED_FORMATS, load_audio
from ser_train.data import EMOTIONS
from ser_train.errors import AudioError, HubError, SERError
from ser_train.evaluation import EVAL_RESULTS_FILE
from ser_train.hub import split_revision
from ser_train.inference import BUNDLED_MODELS, DEFAULT_MODEL, EmotionModel, bundled_models_by_ua, load_model, measured_ua
from ser_train.live import HISTORY_S, STEP_S, WINDOW_S, LiveAnswer, LiveStream, LiveSummary
from ser_train.plots import EMOJI, audio_figure, live_timeline_html, timeline_figure
from ser_train.precision import DEFAULT_PRECISION
from ser_train.timeline import MIN_TIMELINE_DURATION_S, Segment

# --- Configuration ----------------------------------------------------------------------------

EXTRA_MODELS = tuple(name.strip() for name in os.environ.get("SER_MODELS", "").split(",") if name.strip())
# The bundled models first, the best measured first (so the default), then SER_MODELS.
OFFERED_MODELS = tuple(dict.fromkeys((DEFAULT_MODEL, *bundled_models_by_ua(), *EXTRA_MODELS)))
MAX_DURATION_S = float(os.environ.get("SER_MAX_DURATION_S", DEFAULT_MAX_DURATION_S))
MAX_UPLOAD_MB = int(os.environ.get("SER_MAX_UPLOAD_MB", 128))  # a 10-minute 48 kHz stereo WAV is 115 MB
LIVE_TIME_LIMIT_S = int(os.environ.get("SER_LIVE_TIME_LIMIT_S", 3600))  # a live stream stops after this

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
                model = _models[name] = warmed_up(load_model(name, precision=DEFAULT_PRECISION))
    return model


def warmed_up(model: EmotionModel) -> EmotionModel:
    """`model` after one forward pass on a live window of faint noise: the first pass sets up
    torch's kernels (seconds on this CPU), which would otherwise delay a visitor's first answer,
    long enough for a live microphone to drop its first chunks."""
    faint_noise = np.random.default_rng(0).normal(0, 0.01, round(WINDOW_S * SAMPLING_RATE)).astype(np.float32)
    model.predict_batch([faint_noise])
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
    """How the page names a model: a bundled one with its cross-validated UA."""
    if name in BUNDLED_MODELS:
        ua = measured_ua(name)
        return f"{Path(name).name} (bundled" + (f", UA {ua:.0%} on unseen actors)" if ua is not None else ")")
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
        f" The default model ({Path(model_dir).name}) named the right emotion for "
        f"{test['accuracy']:.0%} of the clips of actors it never heard ({how}; balanced accuracy "
        f"{test['balanced_accuracy']:.0%}; chance is {1 / len(EMOTIONS):.1%})."
    )


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
        return analyse_recording(chosen, required_audio(audio), max_duration_s=MAX_DURATION_S).probabilities
    except SERError as error:
        raise gr.Error(str(error)) from None


def required_audio(audio_path: str | None) -> str:
    """The recording or upload's path, or an AudioError saying that there is none yet."""
    if not audio_path:
        raise AudioError(
            "No audio yet: record with the microphone or upload a file, and once it has arrived "
            "(the player shows it), press Analyse."
        )
    return audio_path


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
        name = resolve_model(picked(model_choice, custom_id))
        analysis = analyse_recording(session_model(name, calibrations), required_audio(audio_path), max_duration_s=MAX_DURATION_S)
    except SERError as error:
        return failure(str(error))

    comparison: RecordingAnalysis | None = None
    status = ""
    compare_name = picked(compare_choice, compare_custom_id)
    if compare_name:
        try:
            compare_name = resolve_model(compare_name)
            comparison = analyse_speech(session_model(compare_name, calibrations), analysis.speech)  # the same map, another model
        except SERError as error:  # the main result still stands
            status = f"⚠️ The comparison model was not used: {error}"

    segments = analysis.segments
    compared = {compare_name: comparison.probabilities} if comparison else {}
    return PageOutputs(
        status=status,
        summary=summary_markdown({name: analysis.probabilities, **compared}, analysis.duration_s),
        probabilities=gr.update(value=analysis.probabilities, label=display_name(name)),
        comparison=gr.update(
            value=comparison.probabilities if comparison else None,
            label=display_name(compare_name or ""),
            visible=comparison is not None,
        ),
        details_section=gr.update(visible=True),
        audio_plot=audio_figure(analysis.speech),
        timeline_section=gr.update(visible=bool(segments)),
        timeline_plot=timeline_figure(segments, analysis.duration_s, display_name(name)) if segments else None,
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


# --- Live mode ----------------------------------------------------------------------------------


class LiveSessions:
    """Each browser session's live stream, keyed by Gradio's session hash.

    A stream belongs to the session that opened it and is dropped when its recording stops or
    its page closes (the page's unload event), so nothing of a visitor outlives their visit;
    each stream's own memory is bounded (ser_train.live).
    """

    def __init__(self):
        self._streams: dict[str, LiveStream] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._streams)

    def start(self, session: str, model: EmotionModel) -> LiveStream:
        with self._lock:
            stream = self._streams[session] = LiveStream(model)
        return stream

    def get(self, session: str) -> LiveStream | None:
        return self._streams.get(session)

    def close(self, session: str) -> LiveStream | None:
        with self._lock:
            return self._streams.pop(session, None)


live_sessions = LiveSessions()


class LiveOutputs(NamedTuple):
    """What the live handlers send to the page, one field per output component."""

    now: str  # Markdown: the current emotion, or no speech, or why live mode cannot run
    timeline: str  # HTML: the rolling timeline of the last HISTORY_S
    summary: str  # Markdown: the whole stream, once it stops


def live_start(
    model_choice: str | None, custom_id: str | None, calibrations: dict | None, request: gr.Request
) -> LiveOutputs:
    """The microphone started: a fresh stream for this session with the picked model (calibrated
    when this session calibrated it)."""
    try:
        live_sessions.start(request.session_hash, session_model(resolve_model(picked(model_choice, custom_id)), calibrations))
    except SERError as error:
        return LiveOutputs(f"⚠️ {error}", "", "")
    return LiveOutputs("## 👂 listening…", live_timeline_html([], 0.0, HISTORY_S, STEP_S), "")


def live_step(chunk: tuple[int, np.ndarray] | None, request: gr.Request) -> LiveOutputs | dict:
    """A chunk of microphone audio (sampling rate, samples): the newest answer and the timeline."""
    stream = live_sessions.get(request.session_hash)
    if stream is None or chunk is None:  # stopped already (a late chunk) or not started
        return {}
    sampling_rate, samples = chunk
    try:
        answers = stream.feed(samples, sampling_rate)
    except SERError as error:
        live_sessions.close(request.session_hash)
        return LiveOutputs(f"⚠️ {error}", "", "")
    if not answers:
        return {}
    return LiveOutputs(live_now_markdown(answers[-1]), live_timeline_html(list(stream.history), stream.time_s, HISTORY_S, STEP_S), "")


def live_stop(request: gr.Request) -> LiveOutputs | dict:
    """The microphone stopped: the stream's summary; the stream itself is let go."""
    stream = live_sessions.close(request.session_hash)
    if stream is None:
        return {}
    return LiveOutputs("", live_timeline_html(list(stream.history), stream.time_s, HISTORY_S, STEP_S), live_summary_markdown(stream.summary()))


def live_close(request: gr.Request) -> None:
    """The page was closed or reloaded: free its stream."""
    live_sessions.close(request.session_hash)


def live_now_markdown(answer: LiveAnswer) -> str:
    if not answer.speech:
        return f"## 🤫 no speech\n\n<small>at {answer.time_s:.1f} s</small>"
    return f"## {verdict(answer.probabilities)}\n\n<small>at {answer.time_s:.1f} s, the last {answer.time_s - answer.start_s:.1f} s</small>"


def live_summary_markdown(summary: LiveSummary) -> str:
    heard = f"{summary.speech_s:.1f} s of speech in {summary.duration_s:.1f} s"
    if summary.probabilities is None:
        return f"### Summary: no speech heard\n\n<small>{summary.duration_s:.1f} s listened to</small>"
    return f"### Summary: {verdict(summary.probabilities)}\n\n<small>{heard}, averaged over the live answers</small>"


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
        with gr.Column(elem_id="live-section"):
            gr.Markdown(
                f"### 🔴 Live\nPress record and speak: every {STEP_S:g} s the model picked above judges the "
                f"last {WINDOW_S:g} s, and pauses show as no speech (a voice-activity model listens first). "
                f"The strip shows the last {HISTORY_S:g} s; stop for a summary. Raw capture, as above."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    live_audio = gr.Audio(
                        sources=["microphone"], type="numpy", streaming=True, label="Live microphone", elem_id="live-speech"
                    )
                with gr.Column(scale=6):
                    live_now = gr.Markdown(elem_id="live-now")
                    live_summary = gr.Markdown(elem_id="live-summary")
            live_timeline = gr.HTML(elem_id="live-timeline")
        live_outputs = list(LiveOutputs(now=live_now, timeline=live_timeline, summary=live_summary))
        # No progress overlay: the answers replace each other every STEP_S.
        live_events = dict(outputs=live_outputs, show_progress="hidden", api_visibility="private")
        live_audio.start_recording(live_start, inputs=[model, custom_id, calibrations], **live_events)
        live_audio.stream(
            live_step, inputs=live_audio, stream_every=STEP_S, time_limit=LIVE_TIME_LIMIT_S, concurrency_limit=None, **live_events
        )
        live_audio.stop_recording(live_stop, **live_events)
        demo.unload(live_close)
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
