"""Speaker calibration: map one speaker's features onto the training speakers' population.

Much of what a model sees in a clip is who is speaking and through which microphone. A little
unlabelled speech of one speaker tells us where that speaker's features sit; calibration then
moves their later clips so that the speaker looks like the average training speaker. Every
family calibrates some per-frame representation (the CNN its handcrafted frame features; an
encoder its hidden states per layer), so a calibration is a set of per-dimension affine maps,
one per named representation, `x -> x * scale + shift`, computed as follows:

- **any speech** (clips spanning the speaker's emotions): the speaker's mean is estimated from
  their frames and shrunk toward the training population's speaker mean (empirical Bayes: the
  fewer clips, the more the prior counts; how much a clip is worth per dimension is stored
  with the model); with at least MIN_CLIPS_FOR_SPREAD clips their spread is estimated too and
  shrunk toward the population's within-speaker spread (z-normalisation), with fewer clips only
  the mean moves (one clip gives no usable spread).
- **neutral speech** (what a visitor gives by reading a passage): calibration subtracts what the
  calibration speech has in common, emotion included, so a neutral sample is compared with the
  training speakers' *neutral* mean, and only the mean moves: a narrow sample estimates the
  spread badly.

- **the prompted moods** (what a visitor gives by saying one line in each of PROMPTED_MOODS,
  twice round, CLIPS_PER_PROMPTED_MOOD): as any speech, except that the sample is compared with
  the training speakers' statistics *over those moods*, each mood weighing the same (their mean
  and spread over all of their speech include fear, disgust and surprise, which the prompt does
  not ask for; on corpora held out of the bundled Whisper recipe this raised the mood prompt's
  mean UA from 0.586 to 0.596 and cut the most-predicted emotion's share from 37 % to 28 %).

What a model needs at inference (`PopulationStatistics`) is computed from its training split
(`population_statistics`) and stored in the model folder. `evaluate_calibration` is the honest
protocol: calibration clips of a test speaker are drawn from that speaker and never scored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ser_train.audio import SAMPLING_RATE
from ser_train.errors import ModelError

# What the calibration sample is: any speech, neutral speech, or the prompted moods.
SOURCES = ("speech", "neutral", "moods")
NEUTRAL_EMOTIONS = ("neutral", "calm")  # the emotions a read neutral passage stands for
# The moods a visitor is asked to say one line in each of (the page's mood prompt), as the
# corpora's emotions that stand for each: a calm line is a neutral or a calm clip.
PROMPTED_MOODS = (NEUTRAL_EMOTIONS, ("happy",), ("sad",), ("angry",))
# How many times the mood prompt asks for each mood. On corpora held out of the bundled Whisper
# model's training, two clips per mood gave a mean UA of 0.586 against 0.556 from one (three:
# 0.595), for 20-35 s of speech against 10-20 s (docs/CALIBRATION.md).
CLIPS_PER_PROMPTED_MOOD = 2
MIN_CLIPS_FOR_SPREAD = 3  # fewer clips (or a neutral sample) move the mean only
SPREAD_PRIOR_CLIPS = 5.0  # the population spread counts as this many clips of the speaker
MIN_VARIANCE = 1e-6  # floor for variances of features that hardly vary
RANDOM_CLIP_COUNTS = (3, 5, 10)  # K of the protocol: K random clips of a test speaker
SPEECH_SECONDS = (15, 30)  # S of the protocol: random clips of a test speaker adding up to S s
# Random draws of K clips (or S seconds) per speaker, pooled. Which clips are drawn moves a
# 6-fold mean by about half a point with 3 draws; 10 draws cost seconds on cached representations.
PROTOCOL_REPEATS = 10
PROTOCOL_SEED = 0


@dataclass(frozen=True)
class PopulationStatistics:
    """Training speakers' statistics of one representation, per dimension (all shape [dim])."""

    mean: np.ndarray  # mean over training speakers of each speaker's frame mean
    std: np.ndarray  # root mean over training speakers of each speaker's frame variance
    neutral_mean: np.ndarray  # the same mean over the speakers' neutral and calm clips only
    prior_clips: np.ndarray  # how many clips of a speaker weigh as much as the population prior
    mood_mean: np.ndarray  # mean over speakers of the mean of each prompted mood's frame mean
    mood_std: np.ndarray  # root mean over speakers of the variance of their prompted moods' frames

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in POPULATION_FIELDS}

    @property
    def has_mood_statistics(self) -> bool:
        """False where the prompted moods fall back to all speech (a model saved before they had
        statistics, or training speakers none of whom had every prompted mood)."""
        return not np.array_equal(self.mood_std, self.std)


@dataclass(frozen=True)
class Calibration:
    """One speaker's calibration for one model: `x * scale[name] + shift[name]` per representation.

    Holds only statistics (no audio). `model_id` names the model it was computed for, so it is
    never applied to another one.
    """

    model_id: str
    source: str  # one of SOURCES
    clips: int  # clips (or segments of one recording) it was computed from
    seconds: float  # their total duration
    spread_estimated: bool  # False: a mean shift only
    scale: dict[str, np.ndarray] = field(repr=False)
    shift: dict[str, np.ndarray] = field(repr=False)

    def apply(self, name: str, frames: np.ndarray) -> np.ndarray:
        """Frames [.., dim] of representation `name`, moved to the training population."""
        return (frames * self.scale[name] + self.shift[name]).astype(np.float32)

    def check_model(self, model_id: str) -> None:
        if model_id != self.model_id:
            raise ModelError("This calibration was computed for another model; calibrate again with this one.")

    def describe(self) -> str:
        """A few words for a person: what the calibration was made from and what it does."""
        kind = {"neutral": "calm speech", "moods": "speech in the prompted moods"}.get(self.source, "speech")
        stretches = f"{self.clips} stretch{'es' if self.clips != 1 else ''}"
        if self.spread_estimated:
            effect = "answers adjusted to your voice's average and range"
        elif self.source == "neutral":  # never a range, however long (see speaker_affine)
            effect = "answers adjusted to your voice's average (calm speech alone does not show its range)"
        else:
            effect = "answers adjusted to your voice's average (too little speech to measure its range)"
        return f"{stretches}, {self.seconds:.1f} s of your {kind}; {effect}"


POPULATION_FIELDS = ("mean", "std", "neutral_mean", "prior_clips", "mood_mean", "mood_std")  # PopulationStatistics fields


def register_population(module, size: int) -> None:
    """Give a torch module buffers `population_<field>` of `size` dimensions, so that the
    training speakers' statistics are saved in (and loaded from) the model's own weights."""
    import torch

    for name in POPULATION_FIELDS:
        module.register_buffer(f"population_{name}", torch.zeros(size))


def write_population(module, population: PopulationStatistics) -> None:
    import torch

    for name, values in population.as_arrays().items():
        getattr(module, f"population_{name}").copy_(torch.as_tensor(values, dtype=torch.float32))


# Buffers that model files saved before the prompted moods had statistics of their own lack.
LATER_POPULATION_KEYS = frozenset({"population_mood_mean", "population_mood_std"})


def fill_earlier_population(module, missing_keys) -> None:
    """After loading a model file: if it was saved before the prompted moods had statistics of
    their own (`missing_keys` holds exactly LATER_POPULATION_KEYS), the prompted moods are
    compared with all of the training speakers' speech, as they were then. Any other missing
    population buffer is a broken file."""
    missing = {key for key in missing_keys if key.startswith("population_")}
    if not missing:
        return
    if missing != LATER_POPULATION_KEYS:
        raise ModelError(f"The model file lacks {', '.join(sorted(missing))}; it cannot calibrate.")
    module.population_mood_mean.copy_(module.population_mean)
    module.population_mood_std.copy_(module.population_std)


def read_population(module) -> PopulationStatistics:
    return PopulationStatistics(
        **{name: getattr(module, f"population_{name}").detach().cpu().numpy().copy() for name in POPULATION_FIELDS}
    )


def statistics_fingerprint(statistics: dict[str, PopulationStatistics]) -> str:
    """A short id of a model's population statistics, used as a calibration's `model_id`."""
    digest = hashlib.sha256()
    for name in sorted(statistics):
        digest.update(name.encode())
        for array in statistics[name].as_arrays().values():
            digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def population_statistics(
    clip_frames: Sequence[np.ndarray], speakers: Sequence, emotions: Sequence[str]
) -> PopulationStatistics:
    """Statistics of training clips ([frames, dim] each) with their speakers and emotion names.

    prior_clips is, per dimension, the within-speaker variance of clip means over the
    between-speaker variance of speaker means: with that many clips, a speaker's own mean is as
    trustworthy as the population's.
    """
    speakers, emotions = np.asarray(speakers), np.asarray(emotions)
    neutral = np.isin(emotions, NEUTRAL_EMOTIONS)
    means, variances, neutral_means, clip_mean_variances, mood_means, mood_variances = [], [], [], [], [], []
    for speaker in np.unique(speakers):
        own = np.flatnonzero(speakers == speaker)
        frames = np.concatenate([clip_frames[i] for i in own]).astype(np.float64)
        means.append(frames.mean(axis=0))
        variances.append(frames.var(axis=0))
        clip_means = np.stack([clip_frames[i].mean(axis=0) for i in own])
        if len(own) > 1:
            clip_mean_variances.append(clip_means.var(axis=0, ddof=1))
        own_neutral = [clip_frames[i] for i in own if neutral[i]]
        if own_neutral:
            neutral_means.append(np.concatenate(own_neutral).mean(axis=0))
        per_mood = [[clip_frames[i] for i in own if emotions[i] in mood] for mood in PROMPTED_MOODS]
        if all(per_mood):  # a speaker with clips of every prompted mood
            mood_means.append(np.mean([np.concatenate(clips).mean(axis=0) for clips in per_mood], axis=0))
            mood_variances.append(np.concatenate([frames for clips in per_mood for frames in clips]).astype(np.float64).var(axis=0))
    means = np.stack(means)
    within = np.mean(clip_mean_variances, axis=0) if clip_mean_variances else np.ones(means.shape[1])
    between = means.var(axis=0) if len(means) > 1 else np.full(means.shape[1], MIN_VARIANCE)
    mean = means.mean(axis=0)
    std = np.sqrt(np.mean(variances, axis=0) + MIN_VARIANCE)
    return PopulationStatistics(
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        # Without neutral clips in training, neutral calibration falls back to the overall mean.
        neutral_mean=(np.mean(neutral_means, axis=0) if neutral_means else mean).astype(np.float32),
        prior_clips=(within / np.maximum(between, MIN_VARIANCE)).astype(np.float32),
        # Without a speaker of every prompted mood, the prompted moods count as any speech.
        mood_mean=(np.mean(mood_means, axis=0) if mood_means else mean).astype(np.float32),
        mood_std=(np.sqrt(np.mean(mood_variances, axis=0) + MIN_VARIANCE) if mood_variances else std).astype(np.float32),
    )


def speaker_affine(
    clip_frames: Sequence[np.ndarray], population: PopulationStatistics, source: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(scale, shift, spread_estimated) mapping one speaker's frames onto the population."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    clips = len(clip_frames)
    frames = np.concatenate(clip_frames).astype(np.float64)
    # A sample is compared with the training speakers' statistics over the same kind of speech
    # (neutral, the prompted moods, or all of it): that is both the prior of the speaker's mean
    # and where it is moved to.
    target_mean, target_std = {
        "neutral": (population.neutral_mean, population.std),
        "moods": (population.mood_mean, population.mood_std),
        "speech": (population.mean, population.std),
    }[source]
    weight = clips / (clips + population.prior_clips.astype(np.float64))
    speaker_mean = weight * frames.mean(axis=0) + (1 - weight) * target_mean
    spread_estimated = source != "neutral" and clips >= MIN_CLIPS_FOR_SPREAD
    if spread_estimated:
        population_variance = target_std.astype(np.float64) ** 2
        variance = (clips * frames.var(axis=0) + SPREAD_PRIOR_CLIPS * population_variance) / (clips + SPREAD_PRIOR_CLIPS)
        scale = np.sqrt(population_variance / np.maximum(variance, MIN_VARIANCE))
    else:
        scale = np.ones_like(speaker_mean)
    shift = target_mean - speaker_mean * scale
    return scale.astype(np.float32), shift.astype(np.float32), spread_estimated


def calibrate(
    representations: Sequence[dict[str, np.ndarray]],
    statistics: dict[str, PopulationStatistics],
    source: str,
    seconds: float,
) -> Calibration:
    """A calibration from clips' representations ({name: [frames, dim]} per clip)."""
    if not representations:
        raise ModelError("Calibration needs at least one clip of speech.")
    if source == "moods" and not all(population.has_mood_statistics for population in statistics.values()):
        source = "speech"  # what it amounts to, so that the calibration and the records say so
    scale, shift, spread = {}, {}, False
    for name, population in statistics.items():
        scale[name], shift[name], spread = speaker_affine([clip[name] for clip in representations], population, source)
    return Calibration(statistics_fingerprint(statistics), source, len(representations), seconds, spread, scale, shift)


def prompted_mood_clips(
    emotions: Sequence[str], rng: np.random.Generator, per_mood: int = CLIPS_PER_PROMPTED_MOOD
) -> np.ndarray | None:
    """Positions in one speaker's clips (with these emotion names) of `per_mood` clips of each
    prompted mood, drawn at random without replacement, mood by mood: what the mood prompt would
    have given. None when a mood has fewer clips."""
    emotions = np.asarray(emotions)
    picked = []
    for mood in PROMPTED_MOODS:
        candidates = np.flatnonzero(np.isin(emotions, mood))
        if len(candidates) < per_mood:
            return None
        picked.extend(rng.choice(candidates, size=per_mood, replace=False))
    return np.array(picked)


# --- The honest protocol -----------------------------------------------------------------------


class Calibratable(Protocol):
    """What a family gives for calibration (`ser_train.models.cnn.EmotionCNN`,
    `ser_train.models.whisper.EmotionWhisper`).

    A representation is one clip's {name: [frames, dim]} arrays, computed once per clip so that
    the protocol can try many calibrations on the same clips.
    """

    def represent(self, waveforms: list[np.ndarray]) -> list[dict[str, np.ndarray]]: ...

    def calibration_from(self, representations: list[dict[str, np.ndarray]], source: str, seconds: float) -> Calibration: ...

    def predict_represented(self, representations: list[dict[str, np.ndarray]], calibration: Calibration | None) -> np.ndarray: ...


class CalibratedTrainingViews:
    """Training clips as calibrated inference sees them, so that one model serves calibrated and
    uncalibrated use: a `share` of the clips goes through a calibration of its speaker computed
    from a random sample of that speaker's clean clips (K of 1, 3, 5, 10 or all of them as any
    speech, or their neutral and calm clips as neutral speech), with the model's own population
    statistics. `clean` holds each clip's `representation` ([frames, dim])."""

    SAMPLE_SIZES = (1, 3, 5, 10, None)  # None: all of the speaker's clips

    def __init__(
        self, model: Calibratable, representation: str, clean: Sequence[np.ndarray], speakers, emotions: Sequence[str], share: float
    ):
        self.model, self.representation, self.clean, self.share = model, representation, clean, share
        self.speakers = np.asarray(speakers)
        self.neutral = np.isin(emotions, NEUTRAL_EMOTIONS)

    def apply(self, clips: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """`clips` (views of the clean clips, in the same order) with the chosen share calibrated."""
        chosen = rng.random(len(clips)) < self.share
        clips = list(clips)
        for speaker in np.unique(self.speakers[chosen]):
            own = np.flatnonzero(self.speakers == speaker)
            calibration = self._random_calibration(own, rng)
            for i in own[chosen[own]]:
                clips[i] = calibration.apply(self.representation, clips[i])
        return clips

    def _random_calibration(self, own: np.ndarray, rng: np.random.Generator) -> Calibration:
        neutral = own[self.neutral[own]]
        if len(neutral) and rng.random() < 0.5:
            sample, source = neutral, "neutral"
        else:
            size = self.SAMPLE_SIZES[rng.integers(len(self.SAMPLE_SIZES))] or len(own)
            sample, source = rng.choice(own, size=min(size, len(own)), replace=False), "speech"
        return self.model.calibration_from([{self.representation: self.clean[i]} for i in sample], source, seconds=0.0)


def evaluate_calibration(
    model: Calibratable,
    waveforms: list[np.ndarray],
    references: Sequence[int],
    speakers: Sequence,
    labels: Sequence[str],
    predict_ids: Callable[[np.ndarray], np.ndarray],
    metrics: Callable[[Sequence[int], Sequence[int]], dict],
    seed: int = PROTOCOL_SEED,
) -> dict:
    """UA without calibration and with each protocol, calibration clips never scored.

    - random K (K in RANDOM_CLIP_COUNTS): per test speaker, K of their clips at random (any
      emotion) calibrate, their other clips are scored; PROTOCOL_REPEATS draws, pooled.
    - all: every clip is scored with a calibration from all of its speaker's other clips.
    - S seconds (S in SPEECH_SECONDS): per test speaker, random clips of any emotion until they
      add up to S seconds of speech calibrate, their other clips are scored; PROTOCOL_REPEATS draws.
    - neutral: the speaker's neutral and calm clips calibrate (as neutral speech, the realistic
      case of a visitor reading a passage); their other clips are scored, beside the
      uncalibrated model on exactly those clips.
    - prompted moods: CLIPS_PER_PROMPTED_MOOD clips of each of PROMPTED_MOODS, at random,
      calibrate as the prompted moods (a visitor saying the mood prompt's lines); the speaker's other clips
      are scored; PROTOCOL_REPEATS draws pooled. Speakers with too few clips of a mood are left out.
    - self, one emotion: a recording in one mood calibrating on its own segments. Each clip is
      scored with a calibration from the speaker's other clips of the same emotion (as speech).
    Each entry holds the calibrated metrics and the uncalibrated ones on the same clips.
    `predict_ids` turns probabilities into class ids (e.g. argmax over shared labels).
    """
    references, speakers = np.asarray(references), np.asarray(speakers)
    representations = model.represent(list(waveforms))
    seconds = np.array([len(w) for w in waveforms]) / SAMPLING_RATE
    uncalibrated = predict_ids(model.predict_represented(representations, None))
    rng = np.random.default_rng(seed)
    source_used = {}  # source asked for -> the source the model calibrated as (see `calibrate`)

    def calibrated_predictions(calibration_clips: np.ndarray, scored: np.ndarray, source: str) -> np.ndarray:
        calibration = model.calibration_from(
            [representations[i] for i in calibration_clips], source, float(seconds[calibration_clips].sum())
        )
        source_used[source] = calibration.source
        return predict_ids(model.predict_represented([representations[i] for i in scored], calibration))

    def entry(scored: list[int], predicted: list[int], **extra) -> dict:
        scored = np.asarray(scored, dtype=int)
        return {
            "calibrated": _headline(metrics(references[scored], predicted)),
            "uncalibrated_same_clips": _headline(metrics(references[scored], uncalibrated[scored])),
            **extra,
        }

    results = {
        "protocol": (
            f"Per test speaker: K random clips of any emotion (K = {', '.join(map(str, RANDOM_CLIP_COUNTS))}; "
            f"{PROTOCOL_REPEATS} draws pooled, seed {seed}) or all their other clips (leave one out) "
            f"calibrate, as unlabelled speech, or random clips adding up to S seconds (S = {', '.join(map(str, SPEECH_SECONDS))}); "
            "only the speaker's remaining clips are scored. Neutral: "
            f"the speaker's {' and '.join(NEUTRAL_EMOTIONS)} clips calibrate as neutral speech "
            "(mean shift toward the training speakers' neutral mean); their other clips are scored, "
            "beside the uncalibrated model on the same clips. Self (one emotion): each clip is scored "
            "with a calibration from the speaker's other clips of its emotion, as a recording in one "
            "mood calibrated on its own segments would be. Prompted moods: "
            f"{CLIPS_PER_PROMPTED_MOOD} random clip(s) of each of "
            f"{', '.join('/'.join(mood) for mood in PROMPTED_MOODS)} calibrate, compared with the training "
            f"speakers' statistics over those moods; the speaker's other clips are scored ({PROTOCOL_REPEATS} draws pooled)."
        ),
        "uncalibrated": _headline(metrics(references, uncalibrated)),
        "random_clips": {},
    }
    by_speaker = [np.flatnonzero(speakers == speaker) for speaker in np.unique(speakers)]

    def drawn_entry(draw: Callable[[np.ndarray], np.ndarray | None], source: str = "speech", **extra) -> dict | None:
        """PROTOCOL_REPEATS draws pooled; `draw(own)` picks the calibration clips among a
        speaker's clips `own` (None: the speaker sits this protocol out). Each draw's own UA is
        kept, to show how much the choice of clips moves the result."""
        scored, predicted, per_draw = [], [], []
        for _ in range(PROTOCOL_REPEATS):
            draw_scored, draw_predicted = [], []
            for own in by_speaker:
                calibration_clips = draw(own)
                if calibration_clips is None or len(calibration_clips) >= len(own):
                    continue  # nothing left to score
                rest = np.setdiff1d(own, calibration_clips)
                draw_scored.extend(rest)
                draw_predicted.extend(calibrated_predictions(calibration_clips, rest, source))
            if draw_scored:
                per_draw.append(metrics(references[draw_scored], draw_predicted)["balanced_accuracy"])
            scored += draw_scored
            predicted += draw_predicted
        if not scored:
            return None
        return entry(scored, predicted, repeats=PROTOCOL_REPEATS, balanced_accuracy_per_draw=per_draw, **extra)

    def first_of_random_order(count_of: Callable[[np.ndarray], int]) -> Callable[[np.ndarray], np.ndarray]:
        """A draw: the speaker's clips in random order, the first `count_of(that order)` of them."""
        def draw(own: np.ndarray) -> np.ndarray:
            chosen = rng.permutation(own)
            return chosen[: count_of(chosen)]
        return draw

    for count in RANDOM_CLIP_COUNTS:
        drawn = drawn_entry(first_of_random_order(lambda chosen, count=count: count), calibration_clips=count)
        if drawn:
            results["random_clips"][str(count)] = drawn

    scored, predicted = [], []
    for own in by_speaker:
        if len(own) < 2:
            continue
        for clip in own:
            scored.append(clip)
            predicted.extend(calibrated_predictions(own[own != clip], np.array([clip]), "speech"))
    if scored:
        results["random_clips"]["all"] = entry(scored, predicted, calibration_clips="all other clips of the speaker")

    results["speech_seconds"] = {}
    for duration in SPEECH_SECONDS:
        # The clips it takes to reach S seconds.
        drawn = drawn_entry(
            first_of_random_order(lambda chosen, duration=duration: int(np.searchsorted(np.cumsum(seconds[chosen]), duration)) + 1),
            seconds=duration,
        )
        if drawn:
            results["speech_seconds"][str(duration)] = drawn

    scored, predicted = [], []
    for own in by_speaker:
        for clip in own:
            same_mood = own[(references[own] == references[clip]) & (own != clip)]
            if len(same_mood):
                scored.append(clip)
                predicted.extend(calibrated_predictions(same_mood, np.array([clip]), "speech"))
    if scored:
        results["self_one_emotion"] = entry(scored, predicted, calibration_clips="the speaker's other clips of the same emotion")

    neutral_ids = [labels.index(name) for name in NEUTRAL_EMOTIONS if name in labels]
    scored, predicted = [], []
    for own in by_speaker:
        is_neutral = np.isin(references[own], neutral_ids)
        if is_neutral.any() and (~is_neutral).any():
            rest = own[~is_neutral]
            scored.extend(rest)
            predicted.extend(calibrated_predictions(own[is_neutral], rest, "neutral"))
    if scored:
        results["neutral"] = entry(scored, predicted, calibration_emotions=list(NEUTRAL_EMOTIONS))

    def prompted(own: np.ndarray) -> np.ndarray | None:
        positions = prompted_mood_clips([labels[r] for r in references[own]], rng)
        return None if positions is None else own[positions]

    drawn = drawn_entry(prompted, "moods", calibration_moods=[list(mood) for mood in PROMPTED_MOODS], clips_per_mood=CLIPS_PER_PROMPTED_MOOD)
    if drawn:
        results["prompted_moods"] = {**drawn, "calibrated_as": source_used["moods"]}
    return results


def _headline(metrics: dict) -> dict:
    return {
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "num_examples": metrics["num_examples"],
    }


def calibration_summary(fold_results: list[dict]) -> dict:
    """eval_results.json's top-level "calibration": the protocol and its means over test splits."""
    return {
        "protocol": fold_results[0]["protocol"],
        "mean_over_folds": summarise_folds(fold_results),
        "num_folds": len(fold_results),
    }


def summarise_folds(fold_results: list[dict]) -> dict:
    """Mean over folds of each protocol's calibrated and uncalibrated UA."""
    def mean_of(path: Callable[[dict], float]) -> float | None:
        values = []
        for fold in fold_results:
            try:
                values.append(path(fold))
            except KeyError:
                return None
        return float(np.mean(values))

    def both(entry: Callable[[dict], dict]) -> dict:
        return {
            kind: mean_of(lambda fold, kind=kind: entry(fold)[kind]["balanced_accuracy"])
            for kind in ("calibrated", "uncalibrated_same_clips")
        }

    def draw_spread(entry: Callable[[dict], dict]) -> dict:
        """The standard deviation over draws of the mean over folds: how much the choice of
        calibration clips moves the calibrated figure (absent for records without draws)."""
        try:
            draws = np.mean([entry(fold)["balanced_accuracy_per_draw"] for fold in fold_results], axis=0)
        except (KeyError, ValueError):  # ValueError: folds with different draw counts
            return {}
        return {"calibrated_std_over_draws": float(np.std(draws, ddof=1)) if len(draws) > 1 else None}

    summary = {"uncalibrated": mean_of(lambda fold: fold["uncalibrated"]["balanced_accuracy"])}
    for protocol in ("random_clips", "speech_seconds"):
        summary[protocol] = {}
        for size in fold_results[0].get(protocol, {}):
            def entry(fold: dict, size=size, protocol=protocol) -> dict:
                return fold[protocol][size]

            summary[protocol][size] = {**both(entry), **draw_spread(entry)}
    for protocol in ("neutral", "self_one_emotion", "prompted_moods"):
        if protocol in fold_results[0]:
            def entry(fold: dict, protocol=protocol) -> dict:
                return fold[protocol]

            summary[protocol] = {**both(entry), **draw_spread(entry)}  # draw_spread: {} for one fixed sample
    if "prompted_moods" in summary:
        first = fold_results[0]["prompted_moods"]
        summary["prompted_moods"].update(clips_per_mood=clips_per_mood(first), calibrated_as=calibrated_as(first))
    return summary


# What a prompted-moods record's sample was compared with, by its `calibrated_as`, for a person.
MOODS_COMPARED_WITH = {
    "moods": "the training speakers' speech in those moods",
    "speech": "all of the training speakers' speech",
}


def calibrated_as(prompted_moods_entry: dict) -> str:
    """The source a "prompted_moods" record calibrated as (records written before the prompted
    moods had statistics of their own calibrated as any speech)."""
    return prompted_moods_entry.get("calibrated_as", "speech")


def clips_per_mood(prompted_moods_entry: dict) -> int:
    """How many clips of each prompted mood a "prompted_moods" record calibrated on (records
    written before the prompt asked for each mood twice drew one)."""
    return prompted_moods_entry.get("clips_per_mood", 1)
