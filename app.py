"""Speech emotion recognition demo: record or upload speech, pick a model, see the emotion.

`python app.py` serves it on http://127.0.0.1:7860 (GRADIO_SERVER_NAME and GRADIO_SERVER_PORT
change that); on Hugging Face Spaces this file is the Space. The page is a thin layer over the
library: `ser_train.serving` holds the models and the live streams, `ser_train.uploads` removes
every visitor's file once it is analysed, `ser_train.analysis` analyses a recording (the same
call for the page and its "predict" and "analyse" API endpoints), `ser_train.plots` draws. This
file is the page's layout and wiring; its handlers (`predict_handler` for the page, `predict_api`
and `analyse_api` for /predict and /analyse, `live_start`/`live_step`/`live_stop` for live mode)
are plain functions that the tests call directly (without a gr.Request: files of their own are
left alone).

Environment variables:
    SER_MODELS          comma-separated Hub model ids (or model folders) offered besides the
                        bundled models, e.g. "user/ravdess-wav2vec2,user/other@v2"
    SER_MAX_DURATION_S  longest recording accepted, in seconds (default 600: 10 minutes)
    SER_MAX_UPLOAD_MB   largest file accepted, in MB (default 128)
    SER_LIVE_TIME_LIMIT_S  longest live stream, in seconds (default 3600)
    SER_UNUSED_UPLOAD_MAX_AGE_S  an upload not analysed within this is removed, in seconds
                        (default 900)
    SER_TORCH_THREADS   torch threads per forward pass (default 1; see ser_train.serving)
    SER_PRECISION       fp32 (default) or int8: the precision Whisper models run at (see
                        ser_train.precision)
    GRADIO_TEMP_DIR     where uploads wait for their analysis: a folder for this app alone, since
                        it removes what it finds there (default: a new folder in the system's
                        temporary folder, removed when the server stops)
"""

from __future__ import annotations

import atexit
import html
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

# Gradio keeps uploads in GRADIO_TEMP_DIR, by default one folder that every Gradio app on the
# machine shares, and this app removes what it finds in its folder (ser_train.uploads). So unless
# the variable names a folder, the app makes one of its own, removed with what is left in it when
# the server stops. Set before Gradio is imported: some of its modules read the variable then.
if not os.environ.get("GRADIO_TEMP_DIR"):
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="ser-demo-uploads-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

import gradio as gr
from gradio.components.plot import PlotData
from gradio.processing_utils import encode_plot_to_base64
from matplotlib.figure import Figure

from ser_train.analysis import RecordingAnalysis, analyse_recording, analyse_speech
from ser_train.audio import DEFAULT_MAX_DURATION_S, MIN_DURATION_S, SAMPLING_RATE, SUPPORTED_FORMATS, read_chunk
from ser_train.calibration_prompts import CALIBRATION_PROMPTS, MOODS, CalibrationPrompt, calibration_prompt_named
from ser_train.confidence import UnsureRule, measured_unsure_accuracies
from ser_train.corpora import corpus_info
from ser_train.data import EMOTIONS
from ser_train.errors import AudioError, SERError
from ser_train.evaluation import eval_results_of
from ser_train.held_out import MEAN_KEY, outside_results_of
from ser_train.inference import BUNDLED_MODELS, DEFAULT_MODEL, HELD_OUT_CORPORA, EmotionModel, measured_ua
from ser_train.live import CHUNK_S, HISTORY_S, MIN_SURE_SPEECH_S, STEP_S, WINDOW_S, LiveAnswer, LiveSummary
from ser_train.model_card import chance_levels, training_corpora
from ser_train.plots import EMOJI, audio_figure, live_timeline_html, timeline_figure
from ser_train.serving import ANALYSIS_GROUPS, REQUESTS_AT_ONCE, LiveSessions, ModelRegistry, configure_torch, offered_models
from ser_train.timeline import MIN_TIMELINE_DURATION_S, Segment
from ser_train.uploads import DELETE_CACHE, RecordingGone, VisitorFiles

# --- Configuration ----------------------------------------------------------------------------

EXTRA_MODELS = tuple(name.strip() for name in os.environ.get("SER_MODELS", "").split(",") if name.strip())
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

# Gradio's upload boxes accept a file by the type the browser gives it, and browsers type a .webm
# or .mp4 file as video whatever it holds: a browser recorder's WebM was refused ("Invalid file
# type ... Only ... audio/webm ... allowed"). The server reads the sound of any of these
# (ser_train.audio, the same decoder as the API's and the CLI's), so this script hands such a file
# to the box typed as audio, whether it was picked or dropped; a video without sound is then
# refused by the server in a sentence, as any file it cannot read.
VIDEO_AS_AUDIO_SCRIPT = """
<script>
(() => {
  const asAudio = (files) => {
    if (![...files].some((file) => file.type.startsWith("video/"))) return null;
    const retyped = new DataTransfer();
    for (const file of files) {
      const type = file.type.replace(/^video\//, "audio/");
      retyped.items.add(type === file.type ? file : new File([file], file.name, {type, lastModified: file.lastModified}));
    }
    return retyped;
  };
  // Capture phase: these run before the box's own listeners see the files.
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.type === "file" && input.files) {
      const retyped = asAudio(input.files);
      if (retyped) input.files = retyped.files;
    }
  }, true);
  document.addEventListener("drop", (event) => {
    const retyped = event.dataTransfer && asAudio(event.dataTransfer.files);
    if (!retyped) return;  // the drop goes on as it came (a retyped one comes back here as audio)
    event.preventDefault();
    event.stopImmediatePropagation();
    event.target.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true, composed: true, dataTransfer: retyped}));
  }, true);
})();
</script>
"""

# Gradio's streaming microphone loads its WAV recorder (extendable-media-recorder) only once the
# box is on the page, and a Record pressed before that load ends fails in the browser ("... is not
# a constructor"): the box stays "recording", the page says "listening…" and nothing reaches the
# server, with the microphone left open. The page cannot see when that load ends, but it sees the
# failure: this script then presses Stop (closing the microphone) and Record again, a little later
# each time, until a Record starts; if the recorder never loads, it says so under the box.
LIVE_RECORDER_NOT_LOADED = "The browser could not load the live recorder. Reload the page, then press Record."
LIVE_RECORD_RETRIES_S = (0.25, 0.5, 1, 2, 2, 2, 2)  # waits before each new Record: about 10 s in all
LIVE_RECORD_RETRY_SCRIPT = f"""
<script>
(() => {{
  const RECORD = "#live-speech button.record-button", STOP = "#live-speech button.stop-button";
  const RETRIES_MS = {json.dumps([round(1000 * s) for s in LIVE_RECORD_RETRIES_S])};
  let retries = 0;
  const visible = (selector) => {{ const button = document.querySelector(selector); return button && button.offsetParent ? button : null; }};
  const whenVisible = (selector) => new Promise((resolve) => {{
    const poll = () => {{ const button = visible(selector); button ? resolve(button) : setTimeout(poll, 50); }};
    poll();
  }});
  const giveUp = () => {{
    const alert = document.createElement("p");
    alert.id = "live-recorder-error";
    alert.setAttribute("role", "alert");
    alert.textContent = "⚠️ " + {json.dumps(LIVE_RECORDER_NOT_LOADED)};
    document.querySelector("#live-recorder-error")?.remove();
    document.querySelector("#live-speech").after(alert);
  }};
  document.addEventListener("click", (event) => {{
    if (!event.isTrusted || !event.target.closest || !event.target.closest(RECORD)) return;
    retries = 0;  // the visitor's own press: a new series of tries
    document.querySelector("#live-recorder-error")?.remove();
  }}, true);
  window.addEventListener("unhandledrejection", async (event) => {{
    const notLoaded = event.reason instanceof TypeError && /is not a constructor/.test(event.reason.message);
    const stop = visible(STOP);
    if (!notLoaded || !stop) return;
    event.preventDefault();
    stop.click();
    const record = await whenVisible(RECORD);
    if (retries === RETRIES_MS.length) return giveUp();
    setTimeout(() => record.click(), RETRIES_MS[retries++]);
  }});
}})();
</script>
"""
LIVE_CONTROL_GROUP = "live-control"  # Gradio concurrency group of a stream's start and stop (one slot)

# A screen reader hears what changes in these areas (the answer, a refusal, the calibration's
# state, live mode's summary) without having to look for it; Gradio has no option for it. Live
# mode's running answer is left out: it changes every STEP_S.
ANNOUNCED_AREAS = ("status", "summary", "calibration-status", "live-summary")
# The model pickers, whose line under them (model_facts) a screen reader reads with the list:
# Gradio shows a dropdown's info text without tying it to the input.
DESCRIBED_PICKERS = ("model", "compare-model")
ACCESSIBILITY_SCRIPT = f"""
<script>
new MutationObserver(() => {{
  for (const id of {json.dumps(ANNOUNCED_AREAS)}) {{
    const area = document.getElementById(id);
    if (area && !area.hasAttribute("aria-live")) area.setAttribute("aria-live", "polite");
  }}
  for (const id of {json.dumps(DESCRIBED_PICKERS)}) {{
    const info = document.querySelector(`#${{id}} .info-text`), input = document.querySelector(`#${{id}} input`);
    if (!info || !input) continue;
    info.id = `${{id}}-facts`;
    if (input.getAttribute("aria-describedby") !== info.id) input.setAttribute("aria-describedby", info.id);
  }}
}}).observe(document.documentElement, {{childList: true, subtree: true}});
</script>
"""

CSS = """
#status p {border-left: 4px solid #f59e0b; padding: 6px 12px; background: rgba(245, 158, 11, 0.1);}
#summary h2 {margin: 0;}
/* A long name on a phone ends in an ellipsis before the arrow; model_facts has it whole. */
#model input, #compare-model input {text-overflow: ellipsis; padding-right: 28px;}
/* The picker's line holds the model's key facts: body text colour, not the theme's pale grey (2.5:1). */
#model .info-text, #compare-model .info-text {color: var(--body-text-color);}
@media (max-width: 640px) {  /* a phone: the figures keep a readable size and scroll sideways */
  #audio-plot .matplotlib, #timeline-plot .matplotlib {overflow-x: auto; align-items: flex-start;}
  #audio-plot img, #timeline-plot img {min-width: 640px;}
}
"""

# --- Models, visitors' files ------------------------------------------------------------------

# The bundled models first, the best measured first (so the default), then SER_MODELS.
models = ModelRegistry(offered_models(EXTRA_MODELS))
uploads = VisitorFiles()  # told the page once it is built (see build_app's caller below)
# The players' Download and Share buttons fetch the recording from the server, which removes it
# once analysed; playing uses the browser's own copy and keeps working.
NO_PLAYER_BUTTONS: list = []


def display_name(name: str) -> str:
    """How the page names a model: a bundled one with the UA it measured on voices it never heard."""
    if name in BUNDLED_MODELS:
        if corpora_figures := unheard_corpora_results(name):
            return Path(name).name + f" (UA {percent_range([ua for ua, _ in corpora_figures])} on unheard corpora)"
        ua = measured_ua(name)
        return Path(name).name + (f" (UA {ua:.0%} on unheard actors)" if ua is not None else " (bundled)")
    return Path(name).name if Path(name).is_absolute() else name


def unheard_corpora_results(model_dir: str) -> list[tuple[float, float | None]]:
    """The mean UA and its chance on corpora a local model folder never heard: left out of its
    training in turn (eval_results.json), then the model itself on corpora none of its training
    heard (outside_eval_results.json); [] where neither was measured."""
    measured = [results for results in (eval_results_of(model_dir), outside_results(model_dir)) if HELD_OUT_CORPORA in results]
    return [(results[HELD_OUT_CORPORA][MEAN_KEY]["balanced_accuracy"], chance_levels(results)[1]) for results in measured]


def outside_results(model_dir: str) -> dict:
    """A model folder's outside_eval_results.json (`outside_results_of`), or {} where it is damaged:
    an optional record, which must not keep the page from starting (a warning says why)."""
    try:
        return outside_results_of(model_dir)
    except SERError as error:
        warnings.warn(f"Not quoted on the page: {error}", stacklevel=2)
        return {}


def percent_range(values: list[float]) -> str:
    """'47%', or '47-52%' where the values differ once rounded."""
    low, high = f"{min(values):.0%}", f"{max(values):.0%}"
    return low if low == high else f"{low.rstrip('%')}-{high}"


# The languages of the corpora ser_train.corpora knows.
LANGUAGES = {"en": "English", "it": "Italian", "de": "German", "ur": "Urdu", "tr": "Turkish", "pl": "Polish", "am": "Amharic"}


def learned_from(results: dict) -> tuple[list[dict], list[str]]:
    """The corpora a model's eval_results.json says it learned from (model_card.training_corpora),
    and their languages by name."""
    corpora = training_corpora(results["dataset"]) if results.get("dataset") else []
    return corpora, sorted({LANGUAGES.get(corpus["language"], corpus["language"]) for corpus in corpora if corpus["language"]})


def model_facts(name: str) -> str:
    """The picker's line about the picked model: what it learned from (corpora and languages) and
    its UA on voices it never heard, from its eval_results.json. The list's names clip on a phone,
    and the page's description speaks of the default model only. "" (no line) for no model."""
    if not name:
        return ""
    results = eval_results_of(name)
    ua = measured_ua(name) if results else None
    if ua is None:
        return "No measured results at hand for this model; its card may say how it was tested."
    corpora, languages = learned_from(results)
    learned = ", ".join(corpus["title"] for corpus in corpora) + (f" ({', '.join(languages)})" if languages else "")
    unheard = "corpora it never trained on" if HELD_OUT_CORPORA in results else "actors it never heard"
    measured = f"UA (balanced accuracy) {ua:.0%} on {unheard}" + (f"; as finished, {outside}" if (outside := never_heard_figure(outside_results(name))) else "") + "."
    facts = f"Learned from {learned}; {measured}" if learned else measured
    taught = results.get("trained_labels", results.get("labels", []))
    if len(taught) < len(results.get("labels", [])):
        facts += f" It learned {len(taught)} emotions only: {', '.join(taught)}."
    return facts


def model_choices() -> list[tuple[str, str]]:
    return [(display_name(name), name) for name in models.offered]


def accuracy_note(model_dir: str = DEFAULT_MODEL) -> str:
    """How well the default model did on voices it never heard, from its eval_results.json: on
    whole corpora left out of its training (the better guess for a visitor's voice), then (from
    outside_eval_results.json) the model itself on corpora none of its training heard, and on new
    actors of its own corpora; each beside chance for the emotions it was scored on."""
    results = eval_results_of(model_dir)
    own_chance, held_out_chance = chance_levels(results) if results else (None, None)
    notes = []
    if HELD_OUT_CORPORA in results:
        mean = results[HELD_OUT_CORPORA][MEAN_KEY]
        notes.append(
            f"on a corpus it never trained on (other speakers, rooms and languages; each of "
            f"{', '.join(held_out_titles(mean['corpora']))} left out in turn) it reached a balanced accuracy of "
            f"{mean['balanced_accuracy']:.0%}" + (f" (chance: {held_out_chance:.1%})" if held_out_chance else "")
        )
    outside = outside_results(model_dir)
    if figure := never_heard_figure(outside):
        chance = chance_levels(outside)[1]
        notes.append(f"the finished model itself reached {figure}" + (f" (chance: {chance:.1%})" if chance else ""))
    if "test" in results:
        how = f"{len(results['folds'])}-fold cross-validation" if results.get("protocol") == "cross_validation" else "a held-out test set"
        chance = f"; chance: {own_chance:.1%}" if own_chance else ""
        notes.append(f"on actors of its own corpora it never heard, {results['test']['balanced_accuracy']:.0%} ({how}{chance})")
    if not notes:
        return ""
    return f" The default model ({Path(model_dir).name}): " + "; ".join(notes) + "."


def never_heard_figure(outside: dict) -> str:
    """'47% on ASED and nEMO, which none of its training heard': a model's UA in its
    outside_eval_results.json (`outside_results`), where `evaluate --held-out-corpora` scored it
    on corpora none of its training heard ("" where it did not)."""
    if HELD_OUT_CORPORA not in outside:
        return ""
    mean = outside[HELD_OUT_CORPORA][MEAN_KEY]
    return f"{mean['balanced_accuracy']:.0%} on {' and '.join(held_out_titles(mean['corpora']))}, which none of its training heard"


def held_out_titles(corpora: list[str]) -> list[str]:
    return [info.title if (info := corpus_info(corpus)) else corpus for corpus in corpora]


def predict_api(
    audio: str, model: str, calibration_audio: str | None = None, calibration_prompt: str = MOODS.name, request: gr.Request = None
) -> dict[str, float]:
    """Probabilities of the 8 emotions for an audio file (any common format, rate or channel count).

    `model` is "" for the bundled model, a model the Space offers (SER_MODELS; a folder by its
    name, e.g. "ravdess-tess-emovo-cnn"), or any Hub id (user/name or user/name@revision).
    Recordings longer than 6 s get the duration-weighted average over their stretches of speech.
    `calibration_audio`, optional, is the same speaker saying a calibration prompt:
    `calibration_prompt` "moods" (default: one line said calm, happy, sad and angry) or "passage"
    (15-30 s of calm reading); the answer is then calibrated to that voice, for this request only.
    Both files are removed from the server once answered.
    """
    return analyse_uploads(audio, model, calibration_audio, calibration_prompt, request).probabilities


def analyse_api(
    audio: str, model: str, calibration_audio: str | None = None, calibration_prompt: str = MOODS.name, request: gr.Request = None
) -> dict:
    """/predict's answer with how far to trust it: {"top", "unsure", "speech_seconds",
    "probabilities"}, as the CLI's `predict --json` gives it. "unsure" is true when the model's
    measured rule says the answer should not be read as a verdict, or when no speech was heard
    (a model answers with one of its emotions for any sound). Inputs as for /predict.
    """
    return analyse_uploads(audio, model, calibration_audio, calibration_prompt, request).summary()


def analyse_uploads(
    audio: str, model: str, calibration_audio: str | None, calibration_prompt: str, request: gr.Request | None
) -> RecordingAnalysis:
    """The API endpoints' one call: the uploaded recording analysed by the named model, calibrated
    by the uploaded calibration recording if one came, both files removed once answered."""
    try:
        # The uploads are taken first, so that they are removed whatever fails after: an API
        # caller sends its files again with every request (the page keeps a recording for another
        # try with another model; see predict_handler).
        with uploads.used(audio, request) as audio, uploads.used(calibration_audio, request) as calibration_audio:
            chosen = models.get(models.resolve(model))
            if calibration_audio:
                prompt = calibration_prompt_named(calibration_prompt)
                chosen = chosen.with_calibration(prompt.calibrate(chosen, calibration_audio))
            return analyse_recording(chosen, required_audio(audio, NO_AUDIO_SENT), max_duration_s=MAX_DURATION_S)
    except SERError as error:
        # The sentence goes to the caller only: the server's log is shared by every visitor, and
        # a refused input is not a fault of the server.
        raise gr.Error(str(error), print_exception=False) from None


NO_AUDIO_ON_PAGE = (
    "No audio yet: record with the microphone or upload a file, and once it has arrived "
    "(the player shows it), press Analyse."
)
NO_AUDIO_SENT = "No audio was sent: the first input is the audio file (with gradio_client, handle_file(path))."


def required_audio(audio_path: str | None, missing: str = NO_AUDIO_ON_PAGE) -> str:
    """The recording or upload's path, or an AudioError saying (`missing`) that there is none."""
    if not audio_path:
        raise AudioError(missing)
    return audio_path


# --- Calibration to a visitor's voice ---------------------------------------------------------
#
# A visitor records one of the calibration prompts (ser_train.calibration_prompts); the model's
# statistics of that speech (never the audio) are kept in the visitor's own gr.State, so they
# live in that browser session only and no other visitor, request or the server's disk ever
# sees them.

# The page's first choice: on corpora held out of the bundled model's training, calibration from
# two clips of each prompted mood, compared with the training speakers' speech in those moods,
# raised its mean UA from 0.458 to 0.558, where neutral speech left it at 0.458 (README,
# Generalisation; how the prompt was chosen: docs/CALIBRATION.md).
PAGE_CALIBRATION_PROMPT = MOODS


def calibrate_handler(
    audio_path: str | None,
    model_choice: str | None,
    custom_id: str | None,
    calibrations: dict | None,
    prompt_name: str | None = PAGE_CALIBRATION_PROMPT.name,
    request: gr.Request = None,
) -> tuple[dict, str]:
    """Calibrate the chosen model to this session's voice from a recording of the prompt
    `prompt_name`: (the session's new state, status). The recording is removed from the server
    once read; only its statistics are kept."""
    calibrations = dict(calibrations or {})  # a new dict: the session's old state is never changed in place
    try:
        prompt = chosen_prompt(prompt_name)
        name = models.resolve(picked(model_choice, custom_id))
        model = models.get(name)
        with uploads.used(audio_path, request) as audio_path:
            calibrations[name] = (prompt, prompt.calibrate(model, audio_path))
    except SERError as error:
        return calibrations, f"⚠️ {error}\n\n{calibration_status(calibrations)}"
    return calibrations, calibration_status(calibrations)


def chosen_prompt(prompt_name: str | None) -> CalibrationPrompt:
    if not prompt_name:
        raise SERError("Choose what you recorded for calibration: " + " or ".join(p.label for p in CALIBRATION_PROMPTS.values()) + ".")
    return calibration_prompt_named(prompt_name)


def prompt_instructions(prompt_name: str) -> str:
    return calibration_instructions(chosen_prompt(prompt_name))


def calibration_instructions(prompt: CalibrationPrompt) -> str:
    return (
        f"{prompt.instructions}\n\nThen press Calibrate: the model compares your later recordings "
        "with this sample of your voice instead of with the actors it learned from. Only statistics "
        "of the recording are kept, in the server's memory for this browser tab alone, never on its disk."
    )


def reset_calibration() -> tuple[dict, str]:
    return {}, calibration_status({})


def calibration_status(calibrations: dict) -> str:
    if not calibrations:
        return "Calibration is **off**: answers are the model's own."
    lines = [
        f"✅ Calibration is **on** for {display_name(name)}: {prompt.label.lower()} "
        f"({calibration.describe()}).{measured_effect(name, prompt)}"
        for name, (prompt, calibration) in calibrations.items()
    ]
    return "\n\n".join(lines + ["It applies to your recordings in this browser tab only; Reset turns it off."])


def measured_effect(model_dir: str, prompt: CalibrationPrompt) -> str:
    """What calibration from this kind of sample did for this model, from its eval_results.json:
    on corpora left out of its training (the better guess for a visitor's voice), then on actors
    of its own corpora it never heard. A figure is quoted only from records that measured the
    sample the prompt asks for, read as it reads it."""
    results = eval_results_of(model_dir)
    sentences = []
    held_out = results.get(HELD_OUT_CORPORA, {})
    entries = [entry[prompt.held_out_row] for corpus, entry in held_out.items() if corpus != MEAN_KEY and prompt.held_out_row in entry]
    mean = held_out.get(MEAN_KEY, {}).get(prompt.held_out_row)
    if mean and entries and all(prompt.measured_by(entry) for entry in entries):
        sentences.append(
            f" On corpora it never trained on, calibrated from {prompt.protocol_sample}: balanced accuracy "
            f"{mean['balanced_accuracy']:.1%}, against {mean['uncalibrated_same_clips']:.1%} uncalibrated on the same clips."
        )
    row = results.get("calibration", {}).get("mean_over_folds", {}).get(prompt.protocol_row)
    if row and prompt.measured_by(row):
        sentences.append(
            f" On actors of its own corpora it never heard, calibrated from {prompt.protocol_sample}: balanced "
            f"accuracy {row['calibrated']:.1%}, against {row['uncalibrated_same_clips']:.1%} uncalibrated."
        )
    return "".join(sentences)


def session_model(name: str, calibrations: dict | None) -> EmotionModel:
    """The model `name`, calibrated when this session calibrated it."""
    model = models.get(name)
    prompt_and_calibration = (calibrations or {}).get(name)
    return model.with_calibration(prompt_and_calibration[1]) if prompt_and_calibration else model


class DescribedPlot(PlotData):
    """A figure as gr.Plot sends it, with the words its image's alt text starts with: Gradio
    builds "<chart> plot visualising provided data" from a chart type it sets for Altair plots
    only, so a matplotlib figure's read "undefined plot…" to a screen reader."""

    chart: str


# gr.Plot's format for matplotlib figures, given to the components too: a DescribedPlot is sent as
# it is made. It relies on the front end reading `chart` for a matplotlib plot too (gradio is pinned
# in requirements.txt; the browser test reads the alt text).
PLOT_FORMAT = "webp"


def described(figure: Figure, words: str) -> DescribedPlot:
    return DescribedPlot(type="matplotlib", plot=encode_plot_to_base64(figure, PLOT_FORMAT), chart=words)


class PageOutputs(NamedTuple):
    """What predict_handler sends to the page, one field per output component."""

    status: str  # Markdown: why something could not be analysed (empty when all went well)
    summary: str  # Markdown: the top emotion and its confidence, per model
    probabilities: dict  # gr.update of the main model's gr.Label
    comparison: dict  # gr.update of the comparison model's gr.Label (hidden when not comparing)
    details_section: dict  # gr.update showing the plots (and table) only when there are results
    audio_plot: DescribedPlot | None  # waveform and spectrogram
    timeline_section: dict  # gr.update showing the timeline for long recordings only
    timeline_plot: DescribedPlot | None
    timeline_table: list[list[str]] | None  # start, end, emotion, confidence


COMPARE_FIRST = "To hear one recording with two models, pick the second under “Compare with a second model” before you press Analyse."


def predict_handler(
    audio_path: str | None,
    model_choice: str | None,
    custom_id: str | None,
    compare_choice: str | None = None,
    compare_custom_id: str | None = None,
    calibrations: dict | None = None,
    request: gr.Request = None,
    progress: Callable[[float, str], None] | None = None,
) -> PageOutputs:
    """Analyse a recording with the chosen model (a typed Hub id wins over the picker) and,
    when a second model is chosen, with that one too. The file is read in blocks, never whole,
    and removed from the server once the answer is drawn; a model that cannot be loaded leaves
    it in place, for another try with another model.
    `calibrations` is this session's {model name: (CalibrationPrompt, Calibration)} (see calibrate_handler).
    `progress`, if given, is told (share done, which model) as a long recording is analysed."""
    try:
        name = models.resolve(picked(model_choice, custom_id))
        model = session_model(name, calibrations)
        with uploads.used(audio_path, request) as audio_path:
            analysis = analyse_recording(model, required_audio(audio_path), MAX_DURATION_S, progress_of(name, progress))
            return page_outputs(name, analysis, *compared(analysis, picked(compare_choice, compare_custom_id), calibrations, progress))
    except RecordingGone as error:
        # Mostly a recording answered (or refused) already, whose answer is still on the page, so
        # it stays: pressing Analyse again after picking another model is how a visitor would
        # compare them. (Or one removed unused, or another visitor's: nothing of it is shown.)
        return PageOutputs(f"⚠️ {error} {COMPARE_FIRST}", *(gr.update() for _ in PageOutputs._fields[1:]))
    except SERError as error:
        return failure(str(error))


def analyse_on_page(
    audio_path: str | None,
    model_choice: str | None,
    custom_id: str | None,
    compare_choice: str | None,
    compare_custom_id: str | None,
    calibrations: dict | None,
    request: gr.Request,
    progress=gr.Progress(),  # Gradio passes its progress tracker in through this default
) -> tuple[str | None, PageOutputs]:
    """The page's Analyse: predict_handler's outputs with the recording they are of. A long
    recording's analysis shows how far it has got: Gradio's own estimate, from earlier requests
    of any length, read 50 s for a 10-minute recording that took about 100 s."""

    def report(share: float, model: str) -> None:
        progress(share, desc=f"Analysing with {model}")

    return audio_path, predict_handler(audio_path, model_choice, custom_id, compare_choice, compare_custom_id, calibrations, request, report)


def progress_of(name: str, progress: Callable[[float, str], None] | None) -> Callable[[float], None] | None:
    """The library's progress callback (share done) for an analysis by model `name`, told to
    `progress` with the model's name as the page shows it. That name is looked up once: a bundled
    model's reads its results files, and a long recording reports after every batch."""
    if progress is None:
        return None
    shown = display_name(name)
    return lambda share: progress(share, shown)


def shown_if_on_page(audio_path: str | None, analysed: tuple[str | None, PageOutputs]) -> tuple:
    """(nothing kept, then) the analysis's outputs if its recording is still the one on the page
    (`audio_path`), else no change: the recording was replaced or cleared while it was analysed,
    and its results went with it (a review found the old answer arriving beside a new upload)."""
    recording, outputs = analysed
    if recording != audio_path:
        outputs = PageOutputs(*(gr.update() for _ in PageOutputs._fields))
    return None, *outputs


def compared(
    analysis: RecordingAnalysis, compare_name: str, calibrations: dict | None, progress: Callable[[float, str], None] | None = None
) -> tuple[str, RecordingAnalysis | None, str]:
    """(the comparison model's name, its analysis of the same speech map or None, status): a
    comparison model that cannot be used leaves the main result standing."""
    if not compare_name:
        return "", None, ""
    try:
        compare_name = models.resolve(compare_name)
        return compare_name, analyse_speech(session_model(compare_name, calibrations), analysis.speech, progress_of(compare_name, progress)), ""
    except SERError as error:
        return compare_name, None, f"⚠️ The comparison model was not used: {error}"


def page_outputs(
    name: str, analysis: RecordingAnalysis, compare_name: str, comparison: RecordingAnalysis | None, status: str
) -> PageOutputs:
    """What the page shows for `analysis` by model `name` (and the comparison, when there is one);
    the figures read the recording, so this runs while it is still on disk."""
    segments = analysis.segments
    return PageOutputs(
        status=status,
        summary=summary_markdown({name: analysis, **({compare_name: comparison} if comparison else {})}, analysis.duration_s),
        probabilities=gr.update(value=analysis.probabilities, label=probabilities_label(name, analysis)),
        comparison=gr.update(
            value=comparison.probabilities if comparison else None,
            label=probabilities_label(compare_name, comparison) if comparison else "",
            visible=comparison is not None,
        ),
        details_section=gr.update(visible=True),
        audio_plot=described(audio_figure(analysis.speech), "Waveform and mel spectrogram"),
        timeline_section=gr.update(visible=bool(segments)),
        timeline_plot=described(timeline_figure(segments, analysis.duration_s, display_name(name)), "Emotion-over-time") if segments else None,
        timeline_table=timeline_rows(segments, analysis.unsure_rule) if segments else None,
    )


def picked(choice: str | None, typed_id: str | None) -> str:
    """A typed model id wins over the dropdown's choice."""
    return (typed_id or "").strip() or choice or ""


PROBABILITIES_LABEL = "Emotions"  # the bars' heading before a model has answered


def failure(message: str) -> PageOutputs:
    """Outputs that show `message` and clear every result of a previous analysis."""
    return no_results()._replace(status=f"⚠️ {message}")


def no_results() -> PageOutputs:
    """An empty page, for a recording replaced or removed: the results were of the one before it."""
    return PageOutputs(
        status="",
        summary="",
        probabilities=gr.update(value=None, label=PROBABILITIES_LABEL),
        comparison=gr.update(value=None, visible=False),
        details_section=gr.update(visible=False),
        audio_plot=None,
        timeline_section=gr.update(visible=False),
        timeline_plot=None,
        timeline_table=None,
    )


def summary_markdown(results: dict[str, RecordingAnalysis], duration_s: float) -> str:
    """'## 😠 angry · 82%' for the first (main) model, or its top two when the
    answer is unsure, or that no speech was heard; then a line for the compared one."""
    (name, analysis), *compared = results.items()
    lines = [f"## {headline(analysis)}", f"<small>{answered_by(name, analysis.calibrated)} · {duration_s:.1f} s of audio</small>"]
    if analysis.unsure_by_rule and analysis.speech_seconds > 0:
        lines.append(f"<small>{unsure_reason(analysis.unsure_rule, analysis.probabilities)} {unsure_note(analysis.unsure_rule, analysis.calibrated, name)}</small>")
    if analysis.speech_seconds < LITTLE_SPEECH_S:
        lines.append(f"<small>{short_speech_note(name, analysis.speech_seconds)}</small>")
    lines += [f"**Compared with {answered_by(other, other_analysis.calibrated)}:** {headline(other_analysis)}" for other, other_analysis in compared]
    return "\n\n".join(lines)


NO_SPEECH_HEADLINE = "🤫 no speech heard: no verdict"


def headline(analysis: RecordingAnalysis) -> str:
    """The verdict, or that there is none: a model answers with one of its emotions for any sound."""
    return verdict(analysis.probabilities, analysis.unsure) if analysis.speech_seconds > 0 else NO_SPEECH_HEADLINE


def answered_by(name: str, calibrated: bool) -> str:
    """The model that answered, and whether through this visitor's calibration."""
    return display_name(name) + (", calibrated to your voice" if calibrated else "")


def probabilities_label(name: str, analysis: RecordingAnalysis) -> str:
    """The heading of a model's probability bars: who answered, and what the bars are worth."""
    worth = "" if analysis.speech_seconds > 0 else " · no speech heard: its answers to a sound, not a verdict"
    return answered_by(name, analysis.calibrated) + worth


# Said under an unsure answer: why (`unsure_reason`), then what is known of such answers. A bundled
# model's thresholds come from measured accuracy on corpora it never trained on
# (ser_train.confidence), for uncalibrated answers and for answers calibrated from each source of
# the page's prompts; a model without them gets default thresholds. Where the model's
# eval_results.json has how often each held-out corpus's unsure answers were right, the note
# quotes that range rather than the rule's pooled "less than half".
UNSURE_NOTE = (
    "Answers like this were right less than half the time on voices the model never heard, so read the "
    "probabilities, not a label."
)
UNSURE_NOTE_MEASURED = (
    "On corpora it never trained on, answers like this were right {low:.0%} to {high:.0%} of the time, depending "
    "on the corpus, so read the probabilities, not a label."
)
# A calibrated answer judged by thresholds chosen on uncalibrated answers (a model measured before
# calibrated answers were, or a calibration source it was not measured with).
UNSURE_NOTE_CALIBRATED = (
    "Without calibration, answers like this were right less than half the time on voices the model never heard "
    "(calibrated ones were not measured this way), so read the probabilities, not a label."
)
UNSURE_NOTE_UNMEASURED = "How often such answers are right was never measured for this model, so read the probabilities, not a label."


UNSURE_REASON_BEGINNING = "Unsure: for a sure answer this model needs"


def unsure_reason(rule: UnsureRule, probabilities: dict[str, float]) -> str:
    """Which of the rule's bars the answer missed, in percents to one decimal, the bar rounded up
    and the answer down, so that the answer never seems to clear it: rounded to whole percents,
    72 % against 12 % seemed to clear a lead of 60.1 points (a QA pass read it so)."""
    first, second = top_two(probabilities)
    top, runner_up = probabilities[first], probabilities[second]
    needs = []
    if top < rule.min_confidence:
        needs.append(f"{percent(rule.min_confidence, math.ceil)}% for its top emotion ({first}: {percent(top, math.floor)}%)")
    if top - runner_up < rule.min_margin:
        needs.append(
            f"a lead of {percent(rule.min_margin, math.ceil)} points over the next ({second}: {percent(top - runner_up, math.floor)} behind)"
        )
    return f"{UNSURE_REASON_BEGINNING} {' and '.join(needs)}."


def percent(share: float, rounding) -> str:
    """`share` in percent to one decimal, rounded by `rounding` (math.floor or math.ceil); the
    float error of the product (0.601 * 1000 is 601.0000000000001) is not rounded up."""
    return f"{rounding(round(share * 1000, 6)) / 10:.1f}"


def unsure_note(rule: UnsureRule, calibrated: bool, model_dir: str) -> str:
    """What is known of how often unsure answers like this one (calibrated or not) are right."""
    if not rule.measured:
        return UNSURE_NOTE_UNMEASURED
    if calibrated and rule.calibrated_as is None:
        return UNSURE_NOTE_CALIBRATED
    if accuracies := measured_unsure_accuracies(eval_results_of(model_dir), rule.calibrated_as):
        return UNSURE_NOTE_MEASURED.format(low=min(accuracies), high=max(accuracies))
    return UNSURE_NOTE


# Under this much speech the page says how little it heard. The corpora's clips hold about 2 s of
# speech, so their whole-clip figures already stand for that much; nearer to 1 s, the models were
# right far less often on corpora they never trained on and leaned on one emotion (the default:
# UA 38 % against 46 %, one emotion up to 47 % of the answers; README, Generalisation).
LITTLE_SPEECH_S = 1.5


# Silero misses some shouted or screamed speech: it heard none in 5 of 1500 corpus clips (500 drawn
# from each corpus), 4 of them RAVDESS's strong happy, fearful and angry; no level, band or
# de-emphasis of the audio made it hear them, and a lower threshold would count tones as speech.
NO_SPEECH_NOTE = (
    "No speech heard (a voice-activity model listened; it misses a little shouted or screamed speech), so this is "
    "no verdict: the model answers with one of its emotions for any sound."
)


def short_speech_note(model_dir: str, speech_s: float) -> str:
    """Said under the answer for a recording with under LITTLE_SPEECH_S of speech: what the model
    measured on its shortest speech of corpora it never trained on, where its eval_results.json says."""
    if speech_s <= 0:
        return NO_SPEECH_NOTE
    held_out = eval_results_of(model_dir).get(HELD_OUT_CORPORA, {}).get(MEAN_KEY, {})
    # Rounded down, so that 1.47 s does not read "1.5 s" against LITTLE_SPEECH_S.
    note = f"Only {math.floor(speech_s * 10) / 10:.1f} s of speech heard, little to judge by"
    if short := held_out.get("short_speech"):
        seconds = min(short, key=float)  # the shortest speech measured, 1 s
        figures = short[seconds]
        note += (
            f": on the first {seconds} s of speech of corpora it never trained on, its balanced accuracy was "
            f"{figures['balanced_accuracy']:.0%} (whole clips: {held_out['balanced_accuracy']:.0%}) and one emotion "
            f"took up to {figures['most_predicted_share_max']:.0%} of a corpus's answers"
        )
    return note + "."


def top_two(probabilities: dict[str, float]) -> tuple[str, str]:
    """The two most probable emotions, the first first."""
    first, second = sorted(probabilities, key=probabilities.get, reverse=True)[:2]
    return first, second


def verdict(probabilities: dict[str, float], unsure: bool = False) -> str:
    """'😠 angry · 82%', or '🤔 unsure: angry 38%, then sad 31%' for an unsure answer (the runner-up
    however far behind: "or" read as a hesitation where a weak top emotion was the reason)."""
    first, second = top_two(probabilities)
    if unsure:
        return f"🤔 unsure: {first} {probabilities[first]:.0%}, then {second} {probabilities[second]:.0%}"
    return f"{EMOJI.get(first, '')} {first} · {probabilities[first]:.0%}"


def timeline_rows(segments: list[Segment], rule: UnsureRule) -> list[list[str]]:
    """start, end, emotion and confidence of each segment, a segment the model's unsure `rule`
    judges unsure worded as the headline words one; "no speech" for another sound, whose answer is
    not counted in the recording's."""
    rows = []
    for segment in segments:
        if not segment.is_speech:
            emotion, confidence = "no speech", ""
        elif rule.is_unsure(list(segment.probabilities.values())):
            first, second = top_two(segment.probabilities)
            emotion, confidence = f"🤔 unsure: {first}, then {second}", f"{segment.confidence:.0%}"
        else:
            emotion, confidence = f"{EMOJI.get(segment.top_emotion, '')} {segment.top_emotion}", f"{segment.confidence:.0%}"
        rows.append([f"{segment.start_s:.1f}", f"{segment.end_s:.1f}", emotion, confidence])
    return rows


# --- Live mode ----------------------------------------------------------------------------------


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
        stream = live_sessions.start(request.session_hash, session_model(models.resolve(picked(model_choice, custom_id)), calibrations))
    except SERError as error:
        # The page cannot stop the browser's microphone; what it sends meanwhile is dropped.
        return LiveOutputs(live_alert(f"{error} Press Stop, and Record again once that is fixed."), "", "")
    listening = f"## 👂 listening…\n\n<small>{live_model_note(stream.model)}</small>"
    return LiveOutputs(listening, live_timeline_html([], 0.0, HISTORY_S, STEP_S), "")


def live_step(chunk_path: str | None, request: gr.Request) -> LiveOutputs | dict:
    """A chunk of microphone audio (a short file, removed once read): the newest answer and the
    timeline, or gr.skip() (the page unchanged) when it brings none. Gradio 6 takes an empty dict
    for one value and fails the event ("Error" on the page), so skip() it is."""
    if uploads.repeats_last_chunk(request.session_hash, chunk_path):  # heard already: not gone, not new
        return gr.skip()
    try:
        with (
            uploads.used(chunk_path, request) as chunk_path,
            uploads.skipped_chunks(request.session_hash, chunk_path, request) as skipped_paths,
        ):
            stream = live_sessions.get(request.session_hash)
            if stream is None or chunk_path is None:  # stopped already (a late chunk) or not started
                return gr.skip()
            # With the chunks Gradio's stream route replaced while the last answer was drawn, so
            # that the stream stays whole; only the newest step is judged (LiveStream.catch_up).
            answers = stream.catch_up([read_chunk(path) for path in [*skipped_paths, chunk_path]])
    except SERError as error:
        live_sessions.close(request.session_hash)
        return LiveOutputs(live_alert(str(error)), "", "")
    if not answers:
        return gr.skip()
    return LiveOutputs(live_now_markdown(answers[-1], stream.model), live_timeline_html(list(stream.history), stream.time_s, HISTORY_S, STEP_S), "")


def live_stop(request: gr.Request) -> LiveOutputs | dict:
    """The microphone stopped: the stream's summary; the stream itself is let go."""
    uploads.forget_stream(request.session_hash)
    stream = live_sessions.close(request.session_hash)
    if stream is None:
        return gr.skip()
    return LiveOutputs("", live_timeline_html(list(stream.history), stream.time_s, HISTORY_S, STEP_S), live_summary_markdown(stream.summary(), stream.model))


def live_close(request: gr.Request) -> None:
    """The page was closed or reloaded: free its stream."""
    uploads.forget_stream(request.session_hash)
    live_sessions.close(request.session_hash)


def live_alert(message: str) -> str:
    """Why live mode stopped, in its answer's area, said at once to a screen reader: that area is
    no aria-live region (ANNOUNCED_AREAS), since its answers change every STEP_S."""
    return f'<p role="alert">⚠️ {html.escape(message)}</p>'


def live_model_note(model: EmotionModel) -> str:
    """Which model answers a live stream: the one picked when it started, until the next Record."""
    return f"{answered_by(model.name, model.calibration is not None)} answers; another model applies from the next Record"


def live_now_markdown(answer: LiveAnswer, model: EmotionModel) -> str:
    if not answer.speech:
        return f"## 🤫 no speech\n\n<small>at {answer.time_s:.1f} s</small>"
    if not answer.judged:
        return f"## 👂 listening…\n\n<small>at {answer.time_s:.1f} s: speech, too little yet to judge</small>"
    heard_s = answer.time_s - answer.start_s
    early = ": too little speech yet to be sure" if heard_s < MIN_SURE_SPEECH_S else ""
    return (
        f"## {verdict(answer.probabilities, answer.unsure)}\n\n"
        f"<small>at {answer.time_s:.1f} s, the last {heard_s:.1f} s{early} · {Path(model.name).name}</small>"
    )


def live_summary_markdown(summary: LiveSummary, model: EmotionModel) -> str:
    heard = f"{summary.speech_s:.1f} s of speech in {summary.duration_s:.1f} s"
    by = answered_by(model.name, model.calibration is not None)
    if summary.probabilities is None:
        return f"### Summary: no speech judged\n\n<small>{heard} listened to · {by}</small>"
    shown = verdict(summary.probabilities, model.is_unsure(summary.probabilities))
    return f"### Summary: {shown}\n\n<small>{heard}, averaged over the live answers · {by}</small>"


# --- Page ---------------------------------------------------------------------------------------


def description(model_dir: str = DEFAULT_MODEL) -> str:
    """What the page says the default model learned from (its training corpora and their
    languages, acted or not), how well it did on voices it never heard, and what to expect elsewhere."""
    results = eval_results_of(model_dir)
    corpora, languages = learned_from(results)
    learned = "; ".join(f"{corpus['title']}, {corpus['description']}" for corpus in corpora)
    kind = "acted" if all(corpus["acted"] is not False for corpus in corpora) else "mostly acted"
    # A phone shows the first sentences only before the recorder: the claim a visitor needs is
    # there, the corpora and protocols behind it one click away.
    return (
        f"Recognises eight emotions ({', '.join(EMOTIONS)}) in speech.{first_impression(model_dir)}\n\n"
        f"<details><summary>What the default model learned from, and how it was measured</summary>\n\n"
        f"The default model learned from {kind} {spoken_list(languages) or 'English'} speech ({learned}), so "
        f"expect less on spontaneous speech, other languages or noisy rooms.{accuracy_note(model_dir)}\n\n</details>"
    )


def spoken_list(words: list[str]) -> str:
    """'English', 'English and Italian', 'English, German and Italian'."""
    return " and ".join(filter(None, [", ".join(words[:-1]), *words[-1:]]))


def first_impression(model_dir: str = DEFAULT_MODEL) -> str:
    """How often the default model is right on voices it never heard, in one sentence ("" where
    that was never measured): on corpora left out of its training and, where measured, the model
    itself on corpora none of its training heard, as a range where the two differ."""
    if not (figures := sorted(unheard_corpora_results(model_dir))):
        return ""
    # Each figure's chance, in the same order; one where they read the same.
    chances = list(dict.fromkeys(f"{chance:.0%}" for _, chance in figures if chance))
    said_chance = f" (chance: {' and '.join(chances)})" if chances and all(chance for _, chance in figures) else ""
    return (
        f" On voices it never heard it is right about {percent_range([ua for ua, _ in figures])} of the time, emotions weighted alike"
        + said_chance
        + ", so it often errs, and says when it is unsure."
    )


def model_picker(label: str, elem_id: str, with_none: bool) -> tuple[gr.Dropdown, gr.Textbox]:
    """A dropdown of the offered models and a textbox for any Hub id (which wins when filled)."""
    choices = ([("none", "")] if with_none else []) + model_choices()
    dropdown = gr.Dropdown(choices, value=choices[0][1], label=label, info=model_facts(choices[0][1]), elem_id=elem_id)
    typed = gr.Textbox(
        label="…or any Hub model id", placeholder="user/name or user/name@revision", max_lines=1, elem_id=f"{elem_id}-id"
    )
    gr.on(
        [dropdown.change, typed.change], picker_facts, inputs=[dropdown, typed], outputs=dropdown, show_progress="hidden", api_visibility="private"
    )
    return dropdown, typed


def picker_facts(choice: str | None, typed_id: str | None) -> dict:
    """The picker's line (model_facts) for the model an analysis would use: a typed id wins."""
    used = picked(choice, typed_id)
    if used != (choice or ""):
        try:
            models.resolve(used)
        except SERError as error:  # said now, not only once Analyse is pressed
            return gr.update(info=f"⚠️ {error}")
        return gr.update(info=f"The typed id {used} is used, not this pick; its card says how it was tested.")
    return gr.update(info=model_facts(used))


def build_app() -> gr.Blocks:
    # delete_cache: Gradio's own sweep removes uploads that no request used (ser_train.uploads).
    with gr.Blocks(title="Speech emotion recognition", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(f"# 🎭 Speech emotion recognition\n{description()}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                audio = gr.Audio(
                    sources=["microphone", "upload"],
                    type="filepath",  # files reach ser_train.audio untouched: it decodes every format
                    label="Speech",
                    elem_id="speech",
                    waveform_options=gr.WaveformOptions(sample_rate=SAMPLING_RATE),
                    buttons=NO_PLAYER_BUTTONS,
                )
                gr.Markdown(
                    f"<small>Upload {SUPPORTED_FORMATS} (up to {MAX_UPLOAD_MB} MB), "
                    f"{MIN_DURATION_S:g} s to {MAX_DURATION_S / 60:g} min. 🎙️ The microphone records "
                    "raw sound, without echo cancellation, noise suppression or automatic gain: "
                    "those call filters reshape loudness and pitch, the cues emotion is read from. "
                    "Use headphones if something is playing.</small>"
                )
                gr.Markdown(
                    "<small>🔒 Recordings and uploads are not stored: each is removed from the server "
                    "as soon as it has been analysed, and no one else can fetch it.</small>",
                    elem_id="privacy",
                )
                model, custom_id = model_picker("Model", "model", with_none=False)
                with gr.Accordion("Compare with a second model", open=False):
                    compare, compare_custom_id = model_picker("Second model", "compare-model", with_none=True)
                with gr.Accordion("Calibrate to my voice", open=False, elem_id="calibration"):
                    gr.Markdown("Much of what a model hears is *who* is speaking and through which microphone.")
                    calibration_prompt = gr.Radio(
                        [(prompt.label, prompt.name) for prompt in CALIBRATION_PROMPTS.values()],
                        value=PAGE_CALIBRATION_PROMPT.name,
                        label="What you record",
                        elem_id="calibration-prompt",
                    )
                    calibration_instructions_note = gr.Markdown(
                        calibration_instructions(PAGE_CALIBRATION_PROMPT), elem_id="calibration-instructions"
                    )
                    calibration_audio = gr.Audio(
                        sources=["microphone", "upload"],
                        type="filepath",
                        label="Your voice",
                        elem_id="calibration-speech",
                        waveform_options=gr.WaveformOptions(sample_rate=SAMPLING_RATE),  # as the recording above
                        buttons=NO_PLAYER_BUTTONS,
                    )
                    with gr.Row():
                        calibrate_button = gr.Button("Calibrate", elem_id="calibrate")
                        reset_button = gr.Button("Reset", elem_id="reset-calibration")
                    calibration_note = gr.Markdown(calibration_status({}), elem_id="calibration-status")
                analyse_button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=6):
                status = gr.Markdown(elem_id="status")
                summary = gr.Markdown(elem_id="summary")
                # No heading on the bars: the summary above says whether the answer is a verdict, and
                # a Label's heading would print the top emotion large even for an unsure answer.
                with gr.Row():
                    probabilities = gr.Label(num_top_classes=len(EMOTIONS), label=PROBABILITIES_LABEL, show_heading=False, elem_id="probabilities")
                    comparison = gr.Label(num_top_classes=len(EMOTIONS), visible=False, show_heading=False, elem_id="comparison")
        with gr.Column(visible=False) as details_section:
            audio_plot = gr.Plot(show_label=False, format=PLOT_FORMAT, elem_id="audio-plot")
            with gr.Column(visible=False) as timeline_section:
                gr.Markdown(
                    f"### Emotion over time\nRecordings longer than {MIN_TIMELINE_DURATION_S:g} s are "
                    "split at their pauses into stretches of speech (long ones into windows of a few "
                    "seconds), and each is judged on its own. The overall result above is their "
                    "average, weighted by duration."
                )
                timeline_plot = gr.Plot(show_label=False, format=PLOT_FORMAT, elem_id="timeline-plot")
                timeline_table = gr.Dataframe(
                    headers=["start (s)", "end (s)", "emotion", "confidence"],
                    interactive=False,
                    elem_id="timeline-table",
                )

        calibrations = gr.State({})  # this session's {model name: (CalibrationPrompt, Calibration)}
        # Every event of the page that runs a model on a recording shares REQUESTS_AT_ONCE slots,
        # and the API's events as many others; all their forward passes take turns on the cores
        # (see ser_train.serving).
        page_group, api_group = ANALYSIS_GROUPS
        page_slots = dict(concurrency_limit=REQUESTS_AT_ONCE, concurrency_id=page_group)
        api_slots = dict(concurrency_limit=REQUESTS_AT_ONCE, concurrency_id=api_group)
        calibrate_button.click(
            calibrate_handler,
            inputs=[calibration_audio, model, custom_id, calibrations, calibration_prompt],
            outputs=[calibrations, calibration_note],
            api_visibility="private",
            **page_slots,
        )
        reset_button.click(reset_calibration, outputs=[calibrations, calibration_note], api_visibility="private")
        calibration_prompt.change(
            prompt_instructions, inputs=calibration_prompt, outputs=calibration_instructions_note, api_visibility="private"
        )
        result_components = list(
            PageOutputs(
                status=status, summary=summary, probabilities=probabilities, comparison=comparison,
                details_section=details_section, audio_plot=audio_plot, timeline_section=timeline_section,
                timeline_plot=timeline_plot, timeline_table=timeline_table,
            )
        )  # fmt: skip
        # An answer waits in `analysed` until it is shown, and is shown only if its recording is
        # still the one on the page: one replaced or cleared meanwhile took its results with it.
        analysed = gr.State()
        analyse_button.click(
            analyse_on_page,
            inputs=[audio, model, custom_id, compare, compare_custom_id, calibrations],
            outputs=analysed,
            show_progress_on=result_components,
            api_visibility="private",  # the page's own event; programs use /predict
            # Pressed while the last press is still answered (its recording replaced meanwhile),
            # it runs once that ends; Gradio's default for a click drops it.
            trigger_mode="always_last",
            **page_slots,
        ).then(shown_if_on_page, inputs=[audio, analysed], outputs=[analysed, *result_components], show_progress="hidden", api_visibility="private")
        # A new recording or upload, or the old one cleared: its results go (unqueued, so that
        # they go before an Analyse pressed at once can answer).
        audio.input(no_results, outputs=result_components, queue=False, show_progress="hidden", api_visibility="private")
        with gr.Column(elem_id="live-section"):
            gr.Markdown(
                f"### 🔴 Live\nPress record and speak: every {STEP_S:g} s the model picked above judges the "
                f"last {WINDOW_S:g} s, and pauses show as no speech (a voice-activity model listens first). "
                f"The strip shows the last {HISTORY_S:g} s; stop for a summary. Raw capture, as above."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    live_audio = gr.Audio(
                        sources=["microphone"], type="filepath", streaming=True, label="Live microphone", elem_id="live-speech", buttons=NO_PLAYER_BUTTONS
                    )
                with gr.Column(scale=6):
                    live_now = gr.Markdown(elem_id="live-now")
                    live_summary = gr.Markdown(elem_id="live-summary")
            live_timeline = gr.HTML(elem_id="live-timeline")
        live_outputs = list(LiveOutputs(now=live_now, timeline=live_timeline, summary=live_summary))
        # No progress overlay: the answers replace each other every STEP_S.
        live_events = dict(outputs=live_outputs, show_progress="hidden", api_visibility="private")
        # A stream's start and stop share one slot, so they run in the order pressed (Gradio's queue
        # is first come, first served within a group, and picks among groups at random): the
        # early-Record retry (LIVE_RECORD_RETRY_SCRIPT) presses Stop and then Record, and a start run
        # before that stop would be closed by it. One slot is what each had alone (Gradio's default).
        live_turns = dict(concurrency_id=LIVE_CONTROL_GROUP, concurrency_limit=1)
        live_audio.start_recording(live_start, inputs=[model, custom_id, calibrations], **live_turns, **live_events)
        live_audio.stream(
            live_step, inputs=live_audio, stream_every=CHUNK_S, time_limit=LIVE_TIME_LIMIT_S, concurrency_limit=None, **live_events
        )
        live_audio.stop_recording(live_stop, **live_turns, **live_events)
        demo.unload(live_close)
        with gr.Row(visible=False):  # the API endpoints' own (hidden) inputs and outputs
            api_audio = gr.Audio(type="filepath", label="audio")
            api_model = gr.Textbox("", label="model")
            api_calibration = gr.Audio(type="filepath", label="calibration_audio")
            api_prompt = gr.Textbox(MOODS.name, label="calibration_prompt")
            api_probabilities = gr.JSON(label="probabilities")
            api_analysis = gr.JSON(label="analysis")
            api_predict_button, api_analyse_button = gr.Button(), gr.Button()
        api_inputs = [api_audio, api_model, api_calibration, api_prompt]
        api_predict_button.click(predict_api, inputs=api_inputs, outputs=api_probabilities, api_name="predict", **api_slots)
        api_analyse_button.click(analyse_api, inputs=api_inputs, outputs=api_analysis, api_name="analyse", **api_slots)
    return demo


demo = build_app()
uploads.blocks = demo  # so that a removed upload leaves Gradio's own bookkeeping too


def preload_default_model() -> None:
    """Load the bundled model at start-up, so the first visitor does not wait for it."""
    try:
        models.get(DEFAULT_MODEL)
    except SERError as error:  # the page still works with other models and shows this on use
        print(f"warning: the bundled model could not be loaded: {error}", file=sys.stderr)


def serve(**launch_options):
    """Start the page (what `python app.py` does; the tests pass host, port and quiet): the
    bundled model loaded first, visitors' files guarded and removed (ser_train.uploads), and
    Gradio's run history off, so that it records no visitor's calls either."""
    configure_torch()  # before any model loads (see ser_train.serving)
    preload_default_model()
    return demo.queue().launch(
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        head=RAW_MICROPHONE_SCRIPT + VIDEO_AS_AUDIO_SCRIPT + LIVE_RECORD_RETRY_SCRIPT + ACCESSIBILITY_SCRIPT,
        css=CSS,
        theme=gr.themes.Soft(),
        run_history=False,
        app_kwargs={"middleware": [uploads.middleware()], "lifespan": uploads.sweeping},
        **launch_options,
    )


if __name__ == "__main__":
    serve()
