"""How a model does on a corpus it never trained on: the leave-one-corpus-out entry.

A visitor's voice is a corpus the model never heard: other speakers, rooms, microphones and
often another language. RAVDESS actors a model never heard still speak RAVDESS's two sentences
in RAVDESS's studio, so generalisation is judged by leaving whole corpora out. For one held-out
corpus, `held_out_corpus_entry` reports, over the emotions it shares with the model's training
labels (`ser_train.evaluation.SharedScoring`):

- WA, UA, macro F1, per-class recall, and the share of the most-predicted emotion;
- the expected calibration error (ECE) of the probabilities after temperature scaling (the
  temperature was fitted without this corpus, see `ser_train.training.runner`), and before it;
- the same with speaker calibration from each speaker's neutral (and calm) clips, which are
  then not scored (its ECE after the temperature fitted, without this corpus, on answers
  calibrated the same way); a speaker with under MIN_NEUTRAL_CALIBRATION_S of them is left out of that
  row and counted;
- the same with speaker calibration from CLIPS_PER_PROMPTED_MOOD clips of each prompted mood (what
  the page's mood prompt asks a visitor for, `ser_train.calibration.PROMPTED_MOODS`), those clips
  not scored, PROTOCOL_REPEATS random draws pooled;
- the same on the first 1 s and 2 s of speech of every clip (SHORT_SPEECH_S), since a model that
  learned from whole sentences meets a second of speech at every onset in live mode.

`python -m ser_train train ... --leave-one-corpus-out` fits a model per held-out corpus;
`python -m ser_train evaluate --held-out-corpora` applies a finished model to corpora it never
trained on. Both write the entries under `leave_one_corpus_out` in eval_results.json, with
their `mean` over corpora.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ser_train.audio import SAMPLING_RATE
from ser_train.calibration import (
    CLIPS_PER_PROMPTED_MOOD,
    NEUTRAL_EMOTIONS,
    PROMPTED_MOODS,
    PROTOCOL_REPEATS,
    PROTOCOL_SEED,
    prompted_mood_clips,
)
from ser_train.confidence import expected_calibration_error, with_temperature
from ser_train.data import audio_arrays
from ser_train.errors import DataError, SERError
from ser_train.evaluation import OUTSIDE_RESULTS_FILE, SharedScoring, read_record
from ser_train.vad import first_speech

SHORT_SPEECH_S = (1, 2)  # seconds of speech from each clip's onset
MIN_NEUTRAL_CALIBRATION_S = 10.0  # less neutral speech says too little about a voice (the page asks for 10 s too)
MEAN_KEY = "mean"
CALIBRATION_ROWS = ("neutral_calibration", "mood_calibration")  # an entry's speaker-calibrated rows
# What `leave_one_corpus_out_summary` says was tested.
FITTED_WITHOUT_EACH = "for each corpus, a model trained like this one on the other corpora only"
FINISHED_MODEL = "this model, which never trained on these corpora"


def held_out_corpus_entry(
    model,
    test: datasets.Dataset,
    probabilities: np.ndarray,
    temperature: float,
    known_labels=None,
    calibrated_temperatures: dict[str, float] | None = None,
    representations: list[dict[str, np.ndarray]] | None = None,
) -> dict:
    """The leave-one-corpus-out entry of one held-out corpus.

    `model` is an EmotionModel without a temperature of its own (its raw probabilities);
    `probabilities` are its answers for every clip of `test`, in order; `known_labels` are the
    emotions it trained on (default: all of its labels). `temperature` is judged on uncalibrated
    answers, `calibrated_temperatures` (by calibration source) on calibrated ones; a source
    without one gets `temperature`. `representations`: `model.represent` of every clip where
    training kept them (else computed here).
    """
    scoring = SharedScoring.of(test, model.labels, known_labels)
    waveforms = audio_arrays(test)
    scored_waveforms = [waveforms[i] for i in scoring.kept]
    entry = {
        "speakers": sorted(set(test["speaker"])) if "speaker" in test.column_names else sorted(set(test["actor"])),
        "scoring": scoring.describe(),
        "temperature": temperature,
        **_scores(scoring, scoring.references, np.asarray(probabilities)[scoring.kept], temperature),
        "short_speech": {
            str(seconds): _scores(
                scoring,
                scoring.references,
                model.predict_batch([first_speech(waveform, seconds) for waveform in scored_waveforms]),
                temperature,
            )
            for seconds in SHORT_SPEECH_S
        },
    }
    if model.can_calibrate:
        calibration = SpeakerCalibrationRows(model, test, waveforms, scoring, temperature, calibrated_temperatures, representations)
        entry["neutral_calibration"] = calibration.neutral()
        entry["mood_calibration"] = calibration.prompted_moods()
    return entry


def _scores(scoring: SharedScoring, references: np.ndarray, probabilities: np.ndarray, temperature: float) -> dict:
    """Metrics of the answers, and the ECE of their shared-emotion probabilities with and
    without the temperature."""
    shared = scoring.probabilities(probabilities)
    return {
        "metrics": scoring.metrics(references, shared.argmax(axis=1)),
        "ece": expected_calibration_error(with_temperature(shared, temperature), references),
        "ece_before_temperature": expected_calibration_error(shared, references),
    }


class SpeakerCalibrationRows:
    """A held-out corpus judged with each speaker calibrated on some of their own clips, which
    are then not scored; beside the uncalibrated model on exactly the clips scored."""

    def __init__(
        self,
        model,
        test: datasets.Dataset,
        waveforms: list[np.ndarray],
        scoring: SharedScoring,
        temperature: float = 1.0,
        calibrated_temperatures: dict[str, float] | None = None,
        representations: list[dict[str, np.ndarray]] | None = None,
    ):
        self.model, self.scoring, self.temperature = model, scoring, temperature
        self.calibrated_temperatures = calibrated_temperatures or {}
        names = test.features["emotion"].names
        self.emotions = np.array([names[e] for e in test["emotion"]])
        self.speakers = np.asarray(test["actor"])
        self.seconds = np.array([len(w) for w in waveforms]) / SAMPLING_RATE
        self.position = {row: i for i, row in enumerate(scoring.kept)}  # test row -> index into scoring.references
        self.representations = model.represent(waveforms) if representations is None else representations
        # What the uncalibrated model answers for each clip, computed once for every row and draw.
        self.uncalibrated = model.predict_represented(self.representations, None)

    def neutral(self) -> dict:
        """Each speaker calibrated on their neutral and calm clips, as neutral speech; a speaker
        with under MIN_NEUTRAL_CALIBRATION_S of them is left out and counted."""
        return {**self._row(self.neutral_answers()), "min_calibration_s": MIN_NEUTRAL_CALIBRATION_S}

    def prompted_moods(self) -> dict:
        """Each speaker calibrated on CLIPS_PER_PROMPTED_MOOD random clips of each prompted mood, as
        the prompted moods; PROTOCOL_REPEATS draws pooled; a speaker with too few clips of a mood is
        left out."""
        answers = self.mood_answers()
        return {
            **self._row(answers),
            "calibration_moods": [list(mood) for mood in PROMPTED_MOODS],
            "clips_per_mood": CLIPS_PER_PROMPTED_MOOD,
            "calibrated_as": answers.calibrated_as,
            "repeats": PROTOCOL_REPEATS,
        }

    def neutral_answers(self) -> CalibratedAnswers:
        """The model's answers for the neutral row's scored clips (see `neutral`)."""
        def pick(own: np.ndarray) -> np.ndarray | None:
            neutral = own[np.isin(self.emotions[own], NEUTRAL_EMOTIONS)]
            return neutral if self.seconds[neutral].sum() >= MIN_NEUTRAL_CALIBRATION_S else None

        return self._answers(pick, "neutral", draws=1)

    def mood_answers(self) -> CalibratedAnswers:
        """The model's answers for the mood row's scored clips (see `prompted_moods`)."""
        rng = np.random.default_rng(PROTOCOL_SEED)

        def pick(own: np.ndarray) -> np.ndarray | None:
            positions = prompted_mood_clips(self.emotions[own], rng)
            return None if positions is None else own[positions]

        return self._answers(pick, "moods", draws=PROTOCOL_REPEATS)

    def _answers(self, pick, source: str, draws: int) -> CalibratedAnswers:
        """`pick(own)` chooses a speaker's calibration clips (None: the speaker is left out)."""
        calibrated, scored, left_out, calibrated_as = [], [], set(), None
        for _ in range(draws):
            for speaker in np.unique(self.speakers):
                own = np.flatnonzero(self.speakers == speaker)
                calibration_clips = pick(own)
                rest = [] if calibration_clips is None else [row for row in np.setdiff1d(own, calibration_clips) if row in self.position]
                if not rest:
                    left_out.add(speaker)
                    continue
                calibration = self.model.calibration_from(
                    [self.representations[i] for i in calibration_clips], source, float(self.seconds[calibration_clips].sum())
                )
                calibrated.append(self.model.predict_represented([self.representations[i] for i in rest], calibration))
                calibrated_as = calibration.source
                scored += rest
        probabilities = np.concatenate(calibrated) if calibrated else np.zeros((0, len(self.model.labels)), np.float32)
        return CalibratedAnswers(
            probabilities, self.scoring.references[[self.position[row] for row in scored]], np.array(scored, dtype=int),
            len(np.unique(self.speakers)) - len(left_out), len(left_out), calibrated_as,
        )

    def _row(self, answers: CalibratedAnswers) -> dict:
        entry = {"speakers_calibrated": answers.speakers_calibrated, "speakers_left_out": answers.speakers_left_out}
        if not len(answers.scored):
            return entry
        temperature = self.calibrated_temperatures.get(answers.calibrated_as, self.temperature)
        with_calibration = _scores(self.scoring, answers.references, answers.probabilities, temperature)
        without = self.scoring.probabilities(self.uncalibrated[answers.scored]).argmax(axis=1)
        return {
            **entry,
            **with_calibration,
            "temperature": temperature,
            "uncalibrated_same_clips": self.scoring.metrics(answers.references, without),
        }


@dataclass(frozen=True)
class CalibratedAnswers:
    """A calibration row's answers: each scored clip's probabilities over the model's labels
    (with the model's own temperature), its reference among the shared emotions, its test row."""

    probabilities: np.ndarray
    references: np.ndarray
    scored: np.ndarray
    speakers_calibrated: int
    speakers_left_out: int
    calibrated_as: str | None  # the source the model calibrated as (see ser_train.calibration.calibrate)

    def shared(self, scoring: SharedScoring) -> tuple[np.ndarray, np.ndarray]:
        """The answers' probabilities over the shared emotions (renormalised), and their references."""
        return scoring.probabilities(self.probabilities), self.references


def calibrated_answers(
    model, test: datasets.Dataset, known_labels=None, representations: list[dict[str, np.ndarray]] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A model's answers for a held-out corpus with each calibration row's speaker calibration, by
    the source it calibrated as: (probabilities over the shared emotions, references), the
    answers a temperature and unsure rule for calibrated answers are fitted on. `model` and
    `representations` as for `held_out_corpus_entry`; {} for a model that cannot calibrate."""
    if not model.can_calibrate:
        return {}
    scoring = SharedScoring.of(test, model.labels, known_labels)
    rows = SpeakerCalibrationRows(model, test, audio_arrays(test), scoring, representations=representations)
    found = {}
    for answers in (rows.neutral_answers(), rows.mood_answers()):
        if answers.calibrated_as and len(answers.scored):
            found[answers.calibrated_as] = answers.shared(scoring)
    return found


# --- Summaries ---------------------------------------------------------------------------------


def outside_results_of(model_dir: str | Path) -> dict:
    """A model folder's outside_eval_results.json (the model itself scored on corpora none of its
    training heard, by `evaluate --held-out-corpora`), or {} without one. A SERError names one that
    is damaged or holds other results (e.g. a training run's, whose held-out corpora were scored
    by other models)."""
    path = Path(model_dir) / OUTSIDE_RESULTS_FILE
    results = read_record(path)
    corpora = results.get("leave_one_corpus_out")
    mean = corpora.get(MEAN_KEY) if isinstance(corpora, dict) else None
    if results and not (isinstance(mean, dict) and mean.get("models") == FINISHED_MODEL and isinstance(mean.get("balanced_accuracy"), float)):
        raise SERError(f"{path} does not hold the model itself scored on corpora it never heard (what `evaluate --held-out-corpora` writes there).")
    return results


def leave_one_corpus_out_summary(entries: dict[str, dict], models: str) -> dict:
    """The entries, and their `mean` over held-out corpora (each corpus counts once); `models`
    says which models were tested (one fitted without each corpus, or one finished model)."""
    corpora = list(entries)

    def mean(values) -> float | None:
        values = [value for value in values if value is not None]
        return float(np.mean(values)) if values else None

    def headline(pick) -> dict:
        scores = [pick(entries[c]) for c in corpora]
        scores = [s for s in scores if s and "metrics" in s]
        shares = [s["metrics"]["most_predicted"]["share"] for s in scores]
        return {
            **{name: mean(s["metrics"][name] for s in scores) for name in ("accuracy", "balanced_accuracy", "macro_f1")},
            "ece": mean(s["ece"] for s in scores),
            "most_predicted_share": mean(shares),
            "most_predicted_share_max": max(shares) if shares else None,
        }

    summary = headline(lambda entry: entry)
    summary["short_speech"] = {str(s): headline(lambda entry, s=s: entry["short_speech"][str(s)]) for s in SHORT_SPEECH_S}
    for row in CALIBRATION_ROWS:
        if all(row in entries[c] for c in corpora):
            calibrated = headline(lambda entry, row=row: entry[row])
            calibrated["uncalibrated_same_clips"] = mean(
                entries[c][row].get("uncalibrated_same_clips", {}).get("balanced_accuracy") for c in corpora
            )
            summary[row] = calibrated
    summary["corpora"] = corpora
    summary["models"] = models
    return {**entries, MEAN_KEY: summary}


def format_leave_one_corpus_out_table(loco: dict) -> list[str]:
    """Per held-out corpus: UA, WA, the most-predicted emotion's share, ECE, UA with neutral
    and with prompted-mood calibration, and on 1 s / 2 s of speech."""
    short = [str(s) for s in SHORT_SPEECH_S]
    header = f"{'held-out corpus':<18}{'UA':>7}{'WA':>7}{'top':>14}{'ECE':>7}{'T':>6}{'neutral':>9}{'moods':>7}" + "".join(
        f"{s + ' s UA/top/ECE':>22}" for s in short
    )
    lines = ["Leave one corpus out (each corpus tested by a model that never heard it):", header]

    def calibrated_cells(balanced_accuracies: list) -> str:
        neutral, moods = (f"{ua:.3f}" if ua is not None else "-" for ua in balanced_accuracies)
        return f"{neutral:>9}{moods:>7}"

    def top(scores: dict) -> str:
        most = scores["metrics"]["most_predicted"]
        return f"{most['emotion'][:7]} {most['share']:.0%}"

    for corpus, entry in loco.items():
        if corpus == MEAN_KEY:
            continue
        calibrated = [entry.get(row, {}).get("metrics", {}).get("balanced_accuracy") for row in CALIBRATION_ROWS]
        row = (
            f"{corpus[:17]:<18}{entry['metrics']['balanced_accuracy']:>7.3f}{entry['metrics']['accuracy']:>7.3f}"
            f"{top(entry):>14}{entry['ece']:>7.3f}{entry['temperature']:>6.2f}{calibrated_cells(calibrated)}"
        )
        for s in short:
            scores = entry["short_speech"][s]
            row += f"{scores['metrics']['balanced_accuracy']:>8.3f} {top(scores):>7} {scores['ece']:.3f}".rjust(22)
        lines.append(row)
    mean = loco[MEAN_KEY]
    calibrated = [mean.get(row, {}).get("balanced_accuracy") for row in CALIBRATION_ROWS]
    row = (
        f"{'mean':<18}{mean['balanced_accuracy']:>7.3f}{mean['accuracy']:>7.3f}{'max ' + format(mean['most_predicted_share_max'], '.0%'):>14}"
        f"{mean['ece']:>7.3f}{'':>6}{calibrated_cells(calibrated)}"
    )
    for s in short:
        scores = mean["short_speech"][s]
        row += f"{scores['balanced_accuracy']:>8.3f} {'max ' + format(scores['most_predicted_share_max'], '.0%'):>7} {scores['ece']:.3f}".rjust(22)
    lines.append(row)
    for corpus, entry in loco.items():  # what each row is a score of, where some clips were left out
        scoring = entry.get("scoring", {})
        if corpus != MEAN_KEY and scoring.get("unscored_clips"):
            lines.append(
                f"{corpus}: scored on {', '.join(scoring['scored_labels'])}; {scoring['unscored_clips']} clip(s) of "
                "other emotions left out."
            )
    return lines


# --- A finished model on corpora it never trained on ------------------------------------------------


def evaluate_held_out_corpora(model, dataset: datasets.Dataset, single_name: str, known_labels=None) -> dict:
    """Every corpus of `dataset` (or, for a source without a corpus column, all of it under
    `single_name`) as a corpus `model` never trained on: the entries and their mean, scored on
    the emotions each shares with `known_labels` (those the model trained on; None: all of its).

    The model's own temperatures (from its config.json) are the ones judged, so its untempered
    probabilities are computed and the temperatures applied in each entry.
    """
    untempered = model.untempered()
    calibrated_temperatures = {source: confidence.temperature for source, confidence in model.confidence.items() if source}
    corpora = sorted(set(dataset["corpus"])) if "corpus" in dataset.column_names else [single_name]
    entries = {}
    for corpus in corpora:
        test = dataset.filter(lambda name: name == corpus, input_columns="corpus") if len(corpora) > 1 else dataset
        probabilities = untempered.predict_batch(audio_arrays(test))
        try:
            entries[corpus] = held_out_corpus_entry(untempered, test, probabilities, model.temperature, known_labels, calibrated_temperatures)
        except DataError as error:  # e.g. no emotion in common: said of the corpus it is true of
            raise DataError(f"{corpus}: {error}") from None
    return leave_one_corpus_out_summary(entries, FINISHED_MODEL)
