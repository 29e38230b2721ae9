"""Feature-extraction throughput over the real corpus against the usual librosa recipe.

The corpus is decoded once up front (ser_train.data caches it), so only feature time is
counted. Ours (`ser_train.features.extract_features`, one torch thread and all threads) and the
baseline (`benchmarks.librosa_baseline.utterance_statistics`, numpy/librosa in this process)
take turns group by group, so load from other work on the machine falls on both alike.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks import latency
from benchmarks.corpus import waveforms
from benchmarks.librosa_baseline import utterance_statistics
from benchmarks.report import Row

SECTION = "features"
CLIPS_PER_GROUP = 48  # clips timed in one turn: three of our internal batches of 16
TARGET_SPEEDUP = 10.0
QUICK_CLIPS = 96  # about 6 minutes of speech: enough for a stable ratio, a few seconds of --quick


def run(corpus: Path, quick: bool, clips: int | None) -> tuple[list[Row], list[str]]:
    from ser_train.features import FeatureConfig, extract_features

    audio = waveforms(corpus, QUICK_CLIPS if quick and clips is None else clips)
    config = FeatureConfig()
    thread_counts = (1, latency.ALL_THREADS)

    def ours(group):
        return extract_features(group, config)

    def baseline(group):
        return [utterance_statistics(waveform, config.sampling_rate) for waveform in group]

    # Warm-up: librosa compiles its numba helpers and builds filter banks on first use.
    baseline(audio[:2])
    ours(audio[:2])

    seconds = {"baseline": 0.0, **{threads: 0.0 for threads in thread_counts}}
    for start in range(0, len(audio), CLIPS_PER_GROUP):
        group = audio[start : start + CLIPS_PER_GROUP]
        for threads in thread_counts:
            torch.set_num_threads(threads)
            seconds[threads] += timed(ours, group)
        seconds["baseline"] += timed(baseline, group)

    rate = {name: len(audio) / total for name, total in seconds.items()}
    rows = [Row(SECTION, "librosa baseline (utterance statistics)", f"{rate['baseline']:.1f} clips/s")]
    for threads in thread_counts:
        speedup = seconds["baseline"] / seconds[threads]
        rows.append(
            Row(
                SECTION,
                f"ser_train.features, {latency.thread_label(threads)}",
                f"{rate[threads]:.1f} clips/s = {speedup:.1f}x the baseline",
                f">= {TARGET_SPEEDUP:g}x",
                speedup >= TARGET_SPEEDUP,
            )
        )
    audio_s = sum(len(waveform) for waveform in audio) / config.sampling_rate
    notes = [
        f"Features: {len(audio)} RAVDESS clips ({audio_s / 60:.1f} min of audio), in groups of "
        f"{CLIPS_PER_GROUP} with ours and the baseline taking turns. The baseline runs on numpy/librosa "
        "as the public recipes do (numpy's FFT is single-threaded), so the 1-thread ratio is the "
        "like-for-like one.",
    ]
    return rows, notes


def timed(function, group) -> float:
    start = time.perf_counter()
    function(group)
    return time.perf_counter() - start
