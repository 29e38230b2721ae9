"""Issue #18 probe: do views of each training clip in another voice (pitch and vocal tract length
changed independently) carry the head to corpora it never heard?

    .venv/bin/pip install pyworld                                      # MIT; not a dependency of the project
    PYTHONPATH=. .venv/bin/python experiments/voice_views.py cache   # WORLD + one encoder pass per view
    PYTHONPATH=. .venv/bin/python experiments/voice_views.py score

Speed views (`augment.augment_waveform`) change pitch and formants together, as a tape played
faster; two speakers differ in each on its own. A voice view re-synthesises the clip's trimmed
speech with the WORLD vocoder (pyworld, MIT licence; the parselmouth pitch mixing tried earlier is
GPL): the F0 contour scaled by a random factor (its shape, which carries the emotion, kept), the
spectral envelope stretched along frequency by another (a shorter or longer vocal tract), the
aperiodicity kept, loudness matched to the clip. Factors are drawn per (seed, clip, view), fixed
beforehand: pitch within +-PITCH_SEMITONES, envelope within ENVELOPE_RANGE (a man's to a woman's
formants differ by about 15-20 %).

Scored as `experiments/layer_choice.py` scores its every-layer row (the head `train whisper`
fits, rows weighted per corpus and emotion), leaving each corpus out, on statistics computed here
for the clean clips too (that probe's cache holds the top layer's from float16 frames): clean training clips, against clean plus VIEWS voice views of every training clip.
Test clips are always clean. A probe behind a figure in docs/GENERALISATION.md, not part of the
package; it writes under runs/.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyworld
import torch

from ser_train.audio import SAMPLING_RATE
from ser_train.corpora import load_corpora
from ser_train.data import audio_arrays
from ser_train.models.whisper import EmotionWhisper
from ser_train.vad import trim_silence

from experiments.layer_choice import held_out_scores
from experiments.top_layer_adaptation import CORPORA, MODEL, load_cache

VIEWS_FILE = Path("runs/probe/voice_views.npy")  # [1 + VIEWS, clips, statistics]: clean, then each view
RESULTS = Path("runs/probe/voice_views.json")
VIEWS = 2
HELD_OUT_VIEW = "held-out view"  # the corpus label of a view of the held-out corpus
SEED = 0
PITCH_SEMITONES = 5.0  # F0 scaled by up to this many semitones either way
ENVELOPE_RANGE = (0.85, 1.18)  # spectral envelope's frequency axis scaled by a factor in this range
FRAME_PERIOD_MS = 5.0  # WORLD's analysis hop


def voice_view(waveform: np.ndarray, pitch_factor: float, envelope_factor: float) -> np.ndarray:
    """The waveform re-synthesised by WORLD with F0 times `pitch_factor` and the spectral envelope's
    frequency axis times `envelope_factor` (above 1: formants up, a shorter vocal tract)."""
    x = waveform.astype(np.float64)
    f0, times = pyworld.dio(x, SAMPLING_RATE, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, SAMPLING_RATE)
    envelope = pyworld.cheaptrick(x, f0, times, SAMPLING_RATE)
    aperiodicity = pyworld.d4c(x, f0, times, SAMPLING_RATE)
    bins = np.arange(envelope.shape[1], dtype=np.float64)
    # new envelope at bin k is the old one at k / factor (edges held)
    warped = np.stack([np.interp(bins / envelope_factor, bins, frame) for frame in envelope])
    y = pyworld.synthesize(f0 * pitch_factor, np.ascontiguousarray(warped), aperiodicity, SAMPLING_RATE, FRAME_PERIOD_MS)
    y *= np.sqrt(np.mean(x**2) / max(np.mean(y**2), 1e-12))
    return y.astype(np.float32)


def view_factors(clip: int, view: int) -> tuple[float, float]:
    rng = np.random.default_rng([SEED, clip, view])
    return 2 ** (rng.uniform(-PITCH_SEMITONES, PITCH_SEMITONES) / 12), float(rng.uniform(*ENVELOPE_RANGE))


def cache() -> None:
    torch.set_num_threads(2)
    data, _ = load_cache()
    dataset = load_corpora(CORPORA)
    assert (np.array(dataset["emotion"]) == data["emotion"]).all(), "clip order differs from the probe cache"
    model = EmotionWhisper.from_pretrained(MODEL)
    waveforms = [trim_silence(w) for w in audio_arrays(dataset)]
    statistics = np.zeros((1 + VIEWS, len(waveforms), 7 * 1024), np.float32)
    started = time.time()
    for view in range(-1, VIEWS):
        for start in range(0, len(waveforms), 64):
            clips = range(start, min(start + 64, len(waveforms)))
            voiced = [waveforms[c] if view < 0 else voice_view(waveforms[c], *view_factors(c, view)) for c in clips]
            statistics[1 + view, clips.start : clips.stop] = model.pooled_statistics(voiced)
            if start % 640 == 0:
                print(f"view {view}: {start}/{len(waveforms)} clips, {time.time() - started:.0f} s", flush=True)
    np.save(VIEWS_FILE, statistics)
    print(f"cached {VIEWS} views of {len(waveforms)} clips in {time.time() - started:.0f} s")


def score() -> None:
    torch.set_num_threads(1)
    data, _ = load_cache()
    clean, *views = np.load(VIEWS_FILE)
    clips = len(clean)
    corpora = sorted(set(data["corpus"].tolist()))
    # Clean rows first, then each view's rows; only training rows are ever drawn from the views.
    augmented = np.concatenate([clean, *views])
    augmented_data = {key: np.concatenate([data[key]] * (VIEWS + 1)) for key in ("emotion", "corpus")}
    augmented_data["labels"] = data["labels"]
    results = {}
    for name, statistics, rows in (("clean", clean, data), (f"clean + {VIEWS} voice views", augmented, augmented_data)):
        row = {}
        is_view = np.arange(len(rows["corpus"])) >= clips
        for corpus in corpora:
            # Views of the held-out corpus are neither trained on nor scored: its clean clips are the test.
            relabelled = dict(rows, corpus=np.where(is_view & (rows["corpus"] == corpus), HELD_OUT_VIEW, rows["corpus"]))
            row[corpus] = held_out_scores(statistics, relabelled, corpus, range(7), [c for c in corpora if c != corpus])
        row["mean_ua"] = float(np.mean([row[c]["ua"] for c in corpora]))
        results[name] = row
        print(name, json.dumps(row), flush=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    {"cache": cache, "score": score}[sys.argv[1]]()
