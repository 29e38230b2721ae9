"""What a visitor records to calibrate a model to their voice, and how that recording is read.

Two prompts, each with the calibration source it stands for (see `ser_train.calibration`):

- "moods": one short line said eight times, twice in each of PROMPTED_MOODS (calm, happy, sad,
  angry). Speech across a speaker's moods is what calibration needs: its mean is the speaker's
  centre rather than one mood's, so mean and spread move, compared with the training speakers'
  statistics over the same moods (the calibration source "moods"). The same
  line each time, as the acted corpora do, so that the words do not differ between moods; twice
  round because two clips of each mood measured 3 points better than one (CLIPS_PER_PROMPTED_MOOD).
- "passage": a calm passage read aloud. One mood, so only the mean moves, toward the training
  speakers' neutral mean.

The page offers both, `/predict` and `python -m ser_train predict` take either by name, and the
protocol rows that measured them are named here too (`eval_results.json`'s "calibration").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser_train.audio import SAMPLING_RATE, load_audio
from ser_train.calibration import CLIPS_PER_PROMPTED_MOOD, PROMPTED_MOODS, calibrated_as, clips_per_mood
from ser_train.errors import AudioError, SERError

MAX_CALIBRATION_S = 60.0  # a calibration recording longer than this is not what was asked for

MOOD_LINE = "I'll see you tomorrow at the station."
PROMPTED_MOOD_WORDS = ("calm", "happy", "sad", "angry")  # how PROMPTED_MOODS are put to a visitor
assert len(PROMPTED_MOOD_WORDS) == len(PROMPTED_MOODS)

RAINBOW_PASSAGE = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colours. These take the shape "
    "of a long round arch, with its path high above, and its two ends apparently beyond the "
    "horizon. There is, according to legend, a boiling pot of gold at one end. People look, but "
    "no one ever finds it."
)  # the opening of "The Rainbow Passage" (Fairbanks, 1960), read in about 20 seconds


@dataclass(frozen=True)
class CalibrationPrompt:
    """What to record, and how the recording calibrates."""

    name: str  # how /predict and the CLI ask for it
    label: str  # the choice on the page
    asks_for: str  # what to record, for messages: "record or upload <asks_for>"
    instructions: str  # Markdown for the visitor
    source: str  # ser_train.calibration source the recording stands for
    min_s: float  # a shorter recording says too little about a voice
    min_speech_s: float  # nor does one in which less speech is heard (the rest being pauses or other sounds)
    protocol_row: str  # the row of eval_results.json's "calibration" that measured this kind of sample
    held_out_row: str  # the row of each "leave_one_corpus_out" entry that measured it on a corpus left out of training
    protocol_sample: str  # those rows' calibration sample, for a person
    protocol_clips_per_mood: int | None = None  # of a prompted-moods row (a row with another count measured another sample)

    def measured_by(self, row: dict) -> bool:
        """Whether a protocol_row or held_out_row record measured the sample this prompt asks for,
        read as it reads it."""
        if self.protocol_clips_per_mood is None:
            return True
        return clips_per_mood(row) == self.protocol_clips_per_mood and calibrated_as(row) == self.source

    def read(self, path: str | None) -> np.ndarray:
        """The recording as a checked 16 kHz waveform of min_s to MAX_CALIBRATION_S, or AudioError."""
        if not path:
            raise AudioError(f"No calibration recording yet: record or upload {self.asks_for}, then press Calibrate.")
        waveform = load_audio(path, max_duration_s=MAX_CALIBRATION_S)
        if len(waveform) < self.min_s * SAMPLING_RATE:
            raise AudioError(
                f"The calibration recording is {len(waveform) / SAMPLING_RATE:.1f} s long; record {self.asks_for} "
                f"(at least {self.min_s:g} s)."
            )
        return waveform

    def calibrate(self, model, path: str | None):
        """`model`'s calibration (an `ser_train.calibration.Calibration`) to the speaker recorded at
        `path` saying this prompt, or an AudioError saying what is wrong with the recording: the
        one call the page, /predict and the CLI make."""
        calibration = model.calibrate_recording(self.read(path), source=self.source)
        if calibration.seconds < self.min_speech_s:
            raise AudioError(
                f"Only {calibration.seconds:.1f} s of speech heard in the calibration recording; record "
                f"{self.asks_for} (at least {self.min_speech_s:g} s of speech), somewhere quiet: "
                "background noise hides speech from the voice-activity model."
            )
        return calibration


MOODS = CalibrationPrompt(
    name="moods",
    label="One line in four moods, twice",
    asks_for="yourself saying the line twice in each of the four moods",
    instructions=(
        f"Say this line once in each mood, with a short pause in between: "
        f"**{', '.join(PROMPTED_MOOD_WORDS)}**; then all four again (eight times, 20-35 s in all).\n\n> {MOOD_LINE}"
    ),
    source="moods",
    min_s=12.0,  # eight short lines with pauses
    min_speech_s=6.0,  # eight lines of about 1.5 s: half of them at least
    protocol_row="prompted_moods",
    held_out_row="mood_calibration",
    protocol_sample="two clips each of calm, happy, sad and angry speech",
    protocol_clips_per_mood=CLIPS_PER_PROMPTED_MOOD,
)
assert CLIPS_PER_PROMPTED_MOOD == 2  # the label, instructions and protocol_sample say "twice"
PASSAGE = CalibrationPrompt(
    name="passage",
    label="A calm passage",
    asks_for="yourself reading the whole passage",
    instructions=f"Read this passage aloud in your usual calm voice (15-30 s).\n\n> {RAINBOW_PASSAGE}",
    source="neutral",
    min_s=10.0,
    min_speech_s=5.0,  # half the shortest recording
    protocol_row="neutral",
    held_out_row="neutral_calibration",
    protocol_sample="their neutral and calm clips",
)
CALIBRATION_PROMPTS = {prompt.name: prompt for prompt in (MOODS, PASSAGE)}  # the page's first choice first


def calibration_prompt_named(name: str) -> CalibrationPrompt:
    """The prompt called `name`, or SERError naming the ones there are."""
    try:
        return CALIBRATION_PROMPTS[name]
    except KeyError:
        raise SERError(f"Unknown calibration prompt {name!r}: use one of {', '.join(CALIBRATION_PROMPTS)}.") from None
