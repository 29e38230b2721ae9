"""One way to load and run any emotion model here, whichever family trained it.

`load_model(name)` takes a local model folder or a Hub repo id (`user/name` or
`user/name@revision`), reads its config.json to tell the family apart, fetches the weights
(safetensors only) and returns an `EmotionModel`:

    model = load_model("models/ravdess-tess-emovo-cnn")
    model.predict_file("speech.wav")          # {"neutral": 0.01, ..., "surprised": 0.02}
    model.predict(waveform, sampling_rate)    # any rate, any channel count
    model.predict_batch([w1, w2])             # 16 kHz mono waveforms -> [N, n_labels]

    calibration = model.calibrate([c1, c2, c3], source="neutral")  # one speaker's speech
    model.predict_batch([w4], calibration=calibration)             # that speaker's later clips

Precision: `load_model(name, precision="int8")` runs a Whisper model's encoder in int8 (see
`ser_train.precision`); the default, "fp32", is the exact path.

Families:
    cnn       config.json has "model_type": "ser-cnn" (ser_train.models.cnn.EmotionCNN)
    whisper   config.json has "model_type": "whisper-emotion"
              (ser_train.models.whisper.WhisperForEmotionRecognition)
    wav2vec2  any other transformers audio-classification model (wav2vec2, HuBERT, WavLM, a
              stock Whisper classifier, ...)
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import huggingface_hub
import joblib
import numpy as np
import torch

from ser_train.audio import SAMPLING_RATE, load_audio, prepare_waveform, raised_if_quiet
from ser_train.calibration import Calibratable, Calibration
from ser_train.confidence import Confidence, UnsureRule, confidence_by_source, with_temperature
from ser_train.data import canonical_emotion
from ser_train.errors import AudioError, HubError, ModelError, SERError
from ser_train.evaluation import CONFIG_FILE, eval_results_of
from ser_train.hub import MODEL_FILE_PATTERNS, SAFETENSORS_FILES, fetch_model_files
from ser_train.passes import PassQueue
from ser_train.precision import FP32, checked_precision

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED_WHISPER = str(MODELS_DIR / "six-corpora-whisper-base")
BUNDLED_CNN = str(MODELS_DIR / "ravdess-tess-emovo-cnn")
BUNDLED_MODELS = (BUNDLED_WHISPER, BUNDLED_CNN)

PREPROCESSOR_FILE = "preprocessor_config.json"  # the transformers feature-extractor settings
CNN_MODEL_TYPE = "ser-cnn"  # ser_train.models.cnn.MODEL_TYPE (tested equal)
WHISPER_MODEL_TYPE = "whisper-emotion"  # ser_train.models.whisper.EMOTION_MODEL_TYPE (tested equal)
# Loading reads what hub.MODEL_FILE_PATTERNS fetches, and only model types that transformers
# itself implements, or that this package does, are accepted (trust_remote_code stays off).

Forward = Callable[[list[np.ndarray]], np.ndarray]  # 16 kHz waveforms -> probabilities [N, labels]
WEIGHT_LOADING_BAR = "Loading weights"  # transformers' progress bar over a folder's tensors


HELD_OUT_CORPORA = "leave_one_corpus_out"  # eval_results.json's key: corpora left out of training
HELD_OUT_ACTORS = "test"  # its key: actors (of its own corpora) left out of training


def measured_ua(model_dir: str | os.PathLike, protocol: str | None = None) -> float | None:
    """The balanced accuracy (UA) a local model folder's eval_results.json reports on voices it
    never heard, or None without one: by default the mean over corpora left out of its training
    where it was measured so (a visitor's voice is such a corpus), else its test on actors it
    never heard (the cross-validation mean, or the hold-out test); `protocol` asks for one."""
    results = eval_results_of(model_dir)
    for key in (protocol,) if protocol else (HELD_OUT_CORPORA, HELD_OUT_ACTORS):
        if key in results:
            entry = results[key]["mean"] if key == HELD_OUT_CORPORA else results[key]
            return float(entry["balanced_accuracy"])
    return None


def bundled_models_by_ua() -> list[str]:
    """The bundled model folders present, the best measured UA first, compared by a protocol
    every one of them was measured by (held-out corpora are a harder test than held-out actors,
    so one model's figure on them never meets another's on actors)."""
    present = [name for name in BUNDLED_MODELS if Path(name, CONFIG_FILE).is_file()]
    everyone_held_out_corpora = all(measured_ua(name, HELD_OUT_CORPORA) is not None for name in present)
    protocol = HELD_OUT_CORPORA if everyone_held_out_corpora else HELD_OUT_ACTORS
    return sorted(present, key=lambda name: -(measured_ua(name, protocol) or 0.0))


# The default everywhere (the CLI, the app): the bundled model that measured best.
DEFAULT_MODEL = next(iter(bundled_models_by_ua()), BUNDLED_MODELS[-1])


def seconds_of(waveforms16k: Sequence[np.ndarray]) -> float:
    """How much audio 16 kHz waveforms hold, in seconds."""
    return sum(len(waveform) for waveform in waveforms16k) / SAMPLING_RATE


def passes_at_once(threads_per_pass: int | None = None) -> int:
    """How many forward passes may run side by side: the cores this process may use (joblib
    reads the container's CPU quota) over the torch threads each pass runs on (by default torch's
    thread count now), at least 1."""
    return max(1, joblib.cpu_count() // (threads_per_pass or torch.get_num_threads()))


class EmotionModel:
    """An emotion classifier of either family behind one interface; safe to share across threads.

    `calibratable` is the family's calibration support (see `ser_train.calibration`), or None
    for a family or model folder without it. Every probability it gives is the family's,
    softened by a temperature (`ser_train.confidence`; 1 leaves them as they are), and an unsure
    rule says when an answer should be shown as unsure: `confidence` holds them for uncalibrated
    answers (key None) and for answers calibrated from each source they were measured for; answers
    calibrated otherwise get the uncalibrated ones. `precision` is what the model runs at (see
    `ser_train.precision`): "int8" only for a Whisper model loaded so.
    """

    def __init__(
        self,
        name: str,
        family: str,
        labels: Sequence[str],
        forward: Forward,
        calibratable: Calibratable | None = None,
        confidence: dict[str | None, Confidence] | None = None,
        precision: str = FP32,
    ):
        self.name = name
        self.family = family  # "cnn", "whisper" or "wav2vec2"
        self.labels = tuple(labels)
        self.precision = precision
        self._forward = forward
        self._calibratable = calibratable
        self.confidence = {None: Confidence(), **(confidence or {})}
        self.calibration: Calibration | None = None  # set only on copies made by with_calibration
        # As many forward passes at once as torch's threads per pass leave cores for (the app
        # serves requests from several threads): by default torch spreads one pass over every
        # core, so a second pass would only compete for them and add its peak memory; a server
        # running passes on fewer threads (ser_train.serving) runs that many side by side, and
        # the others wait their turn, each due as long after it asked as its audio lasts
        # (ser_train.passes), so a live step goes ahead of a long recording's batches.
        self._passes = PassQueue(passes_at_once())

    def __repr__(self) -> str:
        return f"EmotionModel({self.name!r}, family={self.family!r}, precision={self.precision!r}, labels={self.labels})"

    def predict_batch(self, waveforms16k: list[np.ndarray], calibration: Calibration | None = None) -> np.ndarray:
        """Probabilities [N, len(labels)] for checked 16 kHz mono waveforms; rows sum to 1.

        With `calibration` (from `calibrate` on the same speaker's speech), the clips are first
        moved to the training speakers' population. Speech quieter than any the models learned
        from is heard at a typical level (`ser_train.audio.raised_if_quiet`), here and in `represent`.
        """
        if not waveforms16k:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        calibration = calibration or self.calibration
        if calibration is not None:
            return self.predict_represented(self.represent(waveforms16k), calibration)
        with self._passes.turn(seconds_of(waveforms16k)), torch.inference_mode():
            return self._tempered(self._forward([raised_if_quiet(waveform) for waveform in waveforms16k]), None)

    def predict(self, waveform: np.ndarray, sampling_rate: int, calibration: Calibration | None = None) -> dict[str, float]:
        """Probabilities per label for audio at any rate and channel count."""
        return self._as_dict(self.predict_batch([prepare_waveform(waveform, sampling_rate)], calibration)[0])

    def predict_file(self, path: str | os.PathLike, calibration: Calibration | None = None) -> dict[str, float]:
        """Probabilities per label for an audio file in any common format."""
        return self._as_dict(self.predict_batch([load_audio(path)], calibration)[0])

    # --- Speaker calibration ----------------------------------------------------------------------

    @property
    def can_calibrate(self) -> bool:
        return self._calibratable is not None

    def calibrate(self, waveforms16k: list[np.ndarray], source: str = "speech") -> Calibration:
        """A calibration from one speaker's 16 kHz clips (or the segments of one recording).

        `source` is "speech" (any speech, ideally spanning the speaker's moods), "moods" (the mood
        prompt's lines: compared with the training speakers' speech in those moods) or "neutral"
        (neutral speech, e.g. a read passage: only the mean moves, toward the training speakers'
        neutral mean); see `ser_train.calibration`. Holds statistics only, never audio.
        """
        if not waveforms16k:
            raise ModelError("Calibration needs at least one clip of speech.")
        return self.calibration_from(self.represent(waveforms16k), source, seconds_of(waveforms16k))

    def calibrate_recording(self, waveform16k: np.ndarray, source: str = "neutral") -> Calibration:
        """A calibration from one longer recording of one speaker (e.g. a read passage): its
        stretches of speech, split at pauses as the timeline splits them, are the clips. Other
        sounds in it are left out; an AudioError says when it holds no speech at all, since a
        calibration to a tone, music or a room's noise would move every later answer."""
        from ser_train.timeline import speech_bounds

        segments = [waveform16k[start:end] for start, end in speech_bounds(waveform16k)]
        if not segments:
            raise AudioError(
                "No speech heard in the calibration recording (a voice-activity model listened), so it "
                "cannot calibrate to a voice: record yourself speaking."
            )
        return self.calibrate(segments, source)

    def with_calibration(self, calibration: Calibration | None) -> EmotionModel:
        """This model answering for one speaker: every prediction of the returned copy (the
        timeline's too) goes through `calibration`. The copy shares the weights and the limit on
        passes at once; the original is untouched, so other users of it never see the calibration."""
        if calibration is not None:
            self._calibration_support()
        calibrated = copy.copy(self)
        calibrated.calibration = calibration
        return calibrated

    def represent(self, waveforms16k: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Each clip's representation for calibration, a batch of the timeline's size at a time,
        each batch taking its own turn (ser_train.passes): a calibration's 20-36 s of speech in one
        pass would be due that long after it asked, behind every long recording's batch asked
        meanwhile."""
        from ser_train.timeline import BATCH_SIZE

        calibratable, representations = self._calibration_support(), []
        for first in range(0, len(waveforms16k), BATCH_SIZE):
            batch = [raised_if_quiet(waveform) for waveform in waveforms16k[first : first + BATCH_SIZE]]
            with self._passes.turn(seconds_of(batch)), torch.inference_mode():
                representations += calibratable.represent(batch)
        return representations

    def calibration_from(self, representations: list[dict[str, np.ndarray]], source: str, seconds: float) -> Calibration:
        return self._calibration_support().calibration_from(representations, source, seconds)

    def predict_represented(
        self, representations: list[dict[str, np.ndarray]], calibration: Calibration | None
    ) -> np.ndarray:
        # On what `represent` computed (Whisper: its head alone; the CNN: its network, about 2 ms a
        # clip): next to no time, so it waits as a pass of no audio.
        with self._passes.turn(0.0), torch.inference_mode():
            return self._tempered(self._calibration_support().predict_represented(representations, calibration), calibration)

    def untempered(self) -> EmotionModel:
        """A copy giving the family's own probabilities, calibrated or not (every temperature 1);
        shares the weights."""
        untempered = copy.copy(self)
        untempered.confidence = {source: Confidence(1.0, confidence.unsure_rule) for source, confidence in self.confidence.items()}
        return untempered

    def confidence_for(self, calibration: Calibration | None) -> Confidence:
        """The temperature and unsure rule of answers through `calibration` (None: uncalibrated)."""
        source = None if calibration is None else calibration.source
        return self.confidence.get(source, self.confidence[None])

    @property
    def temperature(self) -> float:
        """The temperature of this model's answers (through its calibration, if it has one)."""
        return self.confidence_for(self.calibration).temperature

    @property
    def unsure_rule(self) -> UnsureRule:
        """The unsure rule of this model's answers (through its calibration, if it has one)."""
        return self.confidence_for(self.calibration).unsure_rule

    def is_unsure(self, probabilities: dict[str, float] | Sequence[float]) -> bool:
        """Whether an answer of this model should be shown as unsure (see `unsure_rule`)."""
        values = list(probabilities.values()) if isinstance(probabilities, dict) else list(probabilities)
        return self.unsure_rule.is_unsure(values)

    def _tempered(self, probabilities: np.ndarray, calibration: Calibration | None) -> np.ndarray:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        temperature = self.confidence_for(calibration).temperature
        return probabilities if temperature == 1.0 else with_temperature(probabilities, temperature)

    def _calibration_support(self) -> Calibratable:
        if self._calibratable is None:
            why = (
                "it was trained before speaker calibration existed, so its folder stores no "
                "training-speaker statistics (retrain it to calibrate)"
                if self.family == "cnn"
                else "speaker calibration is available for this project's CNN and Whisper models, not for "
                "stock transformers classifiers"
            )
            raise ModelError(f"{self.name} cannot be calibrated: {why}.")
        return self._calibratable

    def _as_dict(self, row: np.ndarray) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, row)}


def hide_weight_loading_bar() -> None:
    """No progress bar while transformers reads a model folder's weights: that takes under a
    second, and its bar is noise in a terminal and in logs on every load. Downloads keep theirs
    (huggingface_hub draws those, and a download can take minutes); other bars are untouched."""
    from transformers.utils import logging

    def hook(make_bar, args, kwargs):
        if kwargs.get("desc") == WEIGHT_LOADING_BAR:
            kwargs = {**kwargs, "disable": True}
        return make_bar(*args, **kwargs)

    logging.set_tqdm_hook(hook)


def folders_in_models() -> dict[str, str]:
    """The folders under models/ by name: the bundled models, and the Whisper encoder they share."""
    return {folder.name: str(folder) for folder in MODELS_DIR.iterdir() if folder.is_dir()} if MODELS_DIR.is_dir() else {}


def bundled_model_named(name: str) -> str:
    """The folder under models/ where `name` is its name (as the page and the API name the bundled
    models; the Whisper encoder there is then refused as no emotion model, not looked for on the
    Hub) and no folder of that name is here; else `name` as given."""
    bundled = folders_in_models()
    return bundled[name] if name in bundled and not Path(name).exists() else name


def bundled_name_hint(name: str) -> str:
    """' Did you mean ...?' where `name` (not found) is a bundled model's name mistyped, else ''."""
    close = difflib.get_close_matches(Path(name).name.lower(), list(folders_in_models()), n=1, cutoff=0.8)
    return f" Did you mean the bundled model {close[0]}?" if close else ""


def load_model(name: str = DEFAULT_MODEL, precision: str = FP32, hub_only: bool = False) -> EmotionModel:
    """Load a model folder, a bundled model by its folder's name, or a Hub repo
    (`user/name[@revision]`) of either family; with `hub_only`, `name` is looked up on the Hub
    (or its cache) only, never as a folder here.

    `precision` "int8" quantises a Whisper model's encoder (faster, answers within quantisation
    error; `ser_train.precision`); the other families have no int8 form and load at fp32.
    """
    checked_precision(precision)
    name = name if hub_only else bundled_model_named(name)
    hide_weight_loading_bar()
    # The config comes first and alone, so a repo that is no emotion model is refused before
    # any weights are downloaded.
    try:
        config = read_config(fetch_model_files(name, [CONFIG_FILE], hub_only), name)
    except HubError as error:
        raise HubError(f"{error}{'' if hub_only else bundled_name_hint(name)}") from None
    family = model_family(config, name)
    labels = emotion_labels(config_labels(config, family), name)
    folder = fetch_model_files(name, MODEL_FILE_PATTERNS, hub_only)
    require_safetensors(folder, name, from_hub=hub_only or not Path(name).expanduser().is_dir())
    confidence = confidence_by_source(config)
    with _weights_loaded(name):
        if family == "cnn":
            cnn = _load_cnn(folder)
            # Older CNN folders lack the training speakers' statistics and cannot calibrate.
            return EmotionModel(name, family, labels, cnn.predict_proba, cnn if cnn.speaker_statistics else None, confidence=confidence)
        if family == "whisper":
            classifier = _load_whisper(folder, name, precision)
            return EmotionModel(name, family, labels, classifier.predict_proba, classifier, precision=precision, confidence=confidence)
        return EmotionModel(name, family, labels, _load_transformers(folder, name), confidence=confidence)


@contextlib.contextmanager
def _weights_loaded(name: str) -> Iterator[None]:
    """A model whose files are there but do not load (a truncated download or copy, weights of
    another shape than its config says) gets one sentence instead of the loader's traceback."""
    from safetensors import SafetensorError

    try:
        yield
    except SERError:
        raise
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise ModelError(
            f"{name}: its weights could not be loaded ({reason}); the folder may be incomplete or corrupt, "
            "so download or copy it again."
        ) from None


def read_config(folder: Path, name: str) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{name} is not a model: it has no {CONFIG_FILE}.")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ModelError(f"{name} has a {CONFIG_FILE} that is not valid JSON.") from None
    if not isinstance(config, dict):
        raise ModelError(f"{name} has a {CONFIG_FILE} that is not a model configuration (a JSON object).")
    return config


def model_family(config: dict, name: str) -> str:
    """'cnn', 'whisper' or 'wav2vec2' from config.json, or a ModelError if it is no audio classifier."""
    model_type = config.get("model_type")
    if model_type == CNN_MODEL_TYPE:
        return "cnn"
    if model_type == WHISPER_MODEL_TYPE:
        return "whisper"
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    classifier_class = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    # A pretrained encoder without its classification head (e.g. Wav2Vec2ForPreTraining) would
    # load with a random head, so the saved architecture must be the classifier itself.
    if classifier_class and classifier_class in config.get("architectures", []):
        return "wav2vec2"
    architectures = ", ".join(config.get("architectures", [])) or "no architecture"
    raise ModelError(
        f"{name} is not an emotion model: its config.json describes a '{model_type}' model "
        f"({architectures}), not audio classification."
    )


def config_labels(config: dict, family: str) -> list[str]:
    """The label names in output order, as config.json stores them for the family."""
    if family == "cnn":
        return list(config.get("labels", []))
    id2label = config.get("id2label", {})
    return [id2label[key] for key in sorted(id2label, key=int)]


def emotion_labels(labels: list[str], name: str) -> tuple[str, ...]:
    """Map label names to ours ('fear' -> 'fearful', 'neu' -> 'neutral'), or refuse the model.

    Our eight emotion names differ in their first three letters, which is how other datasets'
    spellings and abbreviations are recognised; a label matching none is not an emotion.
    """
    if not labels:
        raise ModelError(f"{name}: its {CONFIG_FILE} lists no labels, so it is not a usable emotion model.")
    canonical = [canonical_emotion(label) for label in labels]
    if None in canonical or len(set(canonical)) != len(canonical):
        shown = ", ".join(map(str, labels[:8])) + (", ..." if len(labels) > 8 else "")
        raise ModelError(
            f"{name} is an audio classifier, but its labels ({shown}) are not distinct emotions, "
            "so it is not an emotion model."
        )
    return tuple(canonical)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(folder: Path, name: str, from_hub: bool) -> None:
    """A ModelError unless `folder` (model `name`'s files, a Hub snapshot when `from_hub`) holds
    safetensors weights, saying what is there instead."""
    if any((folder / file).is_file() for file in SAFETENSORS_FILES):
        return
    pickled = any(path.suffix in PICKLE_SUFFIXES for path in folder.iterdir())
    if from_hub and not pickled and huggingface_hub.constants.is_offline_mode():  # the cache may hold part of a repo
        raise ModelError(
            f"{name}: its weights are not in the Hugging Face cache (only part of the model was downloaded), "
            "and offline mode is on (HF_HUB_OFFLINE=1): run once with network access to download it."
        )
    if from_hub or pickled:  # a Hub repo's other files are not downloaded: pickles, if any
        raise ModelError(
            f"{name} has no safetensors weights (model.safetensors); weights in pickle formats "
            "(.bin, .pt) are refused because loading them can run arbitrary code."
        )
    raise ModelError(f"{name} has no weights (model.safetensors): the folder is incomplete, so copy or save the model again.")


def _load_cnn(folder: Path):
    from ser_train.models.cnn import EmotionCNN

    model = EmotionCNN.from_pretrained(folder)
    model.eval()
    return model


def _require_feature_extractor(folder: Path, name: str) -> None:
    if not (folder / PREPROCESSOR_FILE).is_file():
        raise ModelError(f"{name} has no feature-extractor settings ({PREPROCESSOR_FILE}).")


def _load_whisper(folder: Path, name: str, precision: str):
    from ser_train.models.whisper import EmotionWhisper

    _require_feature_extractor(folder, name)
    return EmotionWhisper.from_pretrained(folder, precision)


def _load_transformers(folder: Path, name: str) -> Forward:
    from ser_train.models.wav2vec2 import EmotionWav2Vec2

    _require_feature_extractor(folder, name)
    model = EmotionWav2Vec2.from_pretrained(folder, name)
    rate = model.feature_extractor.sampling_rate
    if rate != SAMPLING_RATE:
        raise ModelError(f"{name} expects {rate} Hz audio; models here work at {SAMPLING_RATE} Hz.")
    return model.predict_proba

