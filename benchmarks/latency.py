"""Inference latency per 4-second clip on the CPU, with one torch thread and with all of them.

The default CNN is timed in its two stages (handcrafted features, then the network) and end to
end through `EmotionModel.predict_batch` (what the app and the CLI call). The bundled Whisper
classifier is timed at fp32 and int8 (issue #19's target: int8 at most half fp32's time on all
threads), with its fixed window and with a window fitted to the clip. wav2vec2-base is timed
end to end: its real architecture (`Wav2Vec2Config()` defaults) under the audio-classification
head with the family's settings, randomly initialised, since weights do not change the cost.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.corpus import CLIP_S, four_second_clip
from benchmarks.report import Row
from benchmarks.timing import Case, latency_text, median_ms, time_in_turns

SECTION = "latency"
CNN_TARGET_MS = 20.0  # features + model per clip
WHISPER_OWN_WINDOW_S = 30  # the window Whisper was trained on
INT8_TARGET_RATIO = 0.5  # issue #19: the int8 default per clip, on all threads, against fp32's time
ALL_THREADS = os.cpu_count() or 1


def thread_label(threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}"


def cnn_rows(corpus: Path, rounds: int, calls_per_turn: int) -> list[Row]:
    from ser_train.features import extract_features
    from ser_train.inference import BUNDLED_CNN, load_model
    from ser_train.models.cnn import EmotionCNN

    clip = four_second_clip(corpus)
    network = EmotionCNN.from_pretrained(BUNDLED_CNN).eval()
    model = load_model(BUNDLED_CNN)
    features = extract_features([clip], network.feature_config)
    stages = {
        "features": lambda: extract_features([clip], network.feature_config),
        "model": lambda: network.predict_proba_of_features(features),
        "features + model (predict_batch)": lambda: model.predict_batch([clip]),
    }
    cases = {
        (stage, threads): Case(run, threads) for threads in (1, ALL_THREADS) for stage, run in stages.items()
    }
    seconds = time_in_turns(cases, rounds, calls_per_turn)
    rows = []
    for (stage, threads), values in seconds.items():
        end_to_end = stage.startswith("features + model")
        rows.append(
            Row(
                SECTION,
                f"bundled CNN, {stage}, {thread_label(threads)}",
                latency_text(values),
                f"< {CNN_TARGET_MS:g} ms median" if end_to_end else "",
                median_ms(values) < CNN_TARGET_MS if end_to_end else None,
            )
        )
    return rows


def wav2vec2_base():
    """wav2vec2-base's real architecture under the family's head, randomly initialised (weights
    do not change the cost): an EmotionWav2Vec2."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    from ser_train.audio import SAMPLING_RATE
    from ser_train.data import EMOTIONS
    from ser_train.models.wav2vec2 import HEAD_CONFIG, EmotionWav2Vec2

    torch.manual_seed(0)
    network = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=len(EMOTIONS), **HEAD_CONFIG))
    # wav2vec2-base's own feature extractor settings: per-clip normalisation, no attention mask.
    return EmotionWav2Vec2(network, Wav2Vec2FeatureExtractor(sampling_rate=SAMPLING_RATE, return_attention_mask=False))


def wav2vec2_rows(corpus: Path, rounds: int, calls_per_turn: int) -> list[Row]:
    clip = four_second_clip(corpus)
    model = wav2vec2_base()
    cases = {threads: Case(lambda: model.predict_proba([clip]), threads) for threads in (1, ALL_THREADS)}
    seconds = time_in_turns(cases, rounds, calls_per_turn)
    return [
        Row(SECTION, f"wav2vec2-base (random init), end to end, {thread_label(threads)}", latency_text(values))
        for threads, values in seconds.items()
    ]


def whisper_rows(corpus: Path, rounds: int, calls_per_turn: int, own_window: bool = True) -> list[Row]:
    """The bundled Whisper classifier end to end at fp32 and int8, with its fixed window and with
    a window fitted to the clip, beside (if `own_window`) the same encoder at Whisper's own 30 s
    window (the weights do not change the cost; only the window and the precision do)."""
    from benchmarks.int8_check import fitted_window_s, windowed_encoder
    from ser_train.inference import BUNDLED_WHISPER, load_model
    from ser_train.models.whisper import DEFAULT_BASE
    from ser_train.precision import FP32, INT8, PRECISIONS

    bundled = BUNDLED_WHISPER
    if not Path(bundled).is_dir():
        return [Row(SECTION, "bundled Whisper model", f"not measured: {bundled} is missing")]
    clip = four_second_clip(corpus)
    models = {precision: load_model(bundled, precision=precision) for precision in PRECISIONS}
    window_s = round(model_window_s(bundled))
    fitted_s = fitted_window_s(clip, window_s)
    labels = list(models[FP32].labels)
    fitted = {precision: windowed_encoder(bundled, labels, fitted_s, precision) for precision in PRECISIONS}
    bundled_window = f"{window_s} s window (bundled)"
    runs = {}
    for precision in PRECISIONS:
        runs[(bundled_window, precision)] = lambda model=models[precision]: model.predict_batch([clip])
        runs[(f"{fitted_s} s window fitted to the clip", precision)] = lambda model=fitted[precision]: model.predict_proba([clip])
    if own_window:
        full_window = windowed_encoder(DEFAULT_BASE, labels, WHISPER_OWN_WINDOW_S, FP32)
        runs[(f"{WHISPER_OWN_WINDOW_S} s window", FP32)] = lambda: full_window.predict_proba([clip])
    cases = {(*key, threads): Case(run, threads) for threads in (1, ALL_THREADS) for key, run in runs.items()}
    seconds = time_in_turns(cases, rounds, calls_per_turn)
    rows = []
    for (window, precision, threads), values in seconds.items():
        result, target, met = latency_text(values), "", None
        if window != bundled_window and (bundled_window, precision, threads) in seconds:
            result += f"; {median_ms(values) / median_ms(seconds[(bundled_window, precision, threads)]):.2f}x the {bundled_window}"
        if precision == INT8:
            ratio = median_ms(values) / median_ms(seconds[(window, FP32, threads)])
            result += f"; {ratio:.2f}x {FP32}"
            if window == bundled_window and threads == ALL_THREADS:  # the default the app serves
                target, met = f"<= {INT8_TARGET_RATIO:g}x {FP32}", ratio <= INT8_TARGET_RATIO
        rows.append(Row(SECTION, f"Whisper-base classifier, {window}, {precision}, end to end, {thread_label(threads)}", result, target, met))
    return rows


def model_window_s(model_dir: str) -> float:
    import json

    return json.loads(Path(model_dir, "preprocessor_config.json").read_text())["chunk_length"]


def run(corpus: Path, quick: bool) -> tuple[list[Row], list[str]]:
    cnn_rounds, whisper_rounds, w2v_rounds = (3, 1, 1) if quick else (10, 6, 3)
    rows = cnn_rows(corpus, cnn_rounds, calls_per_turn=10)
    # --quick leaves out the comparisons of architecture and window that no target rests on (a
    # 30 s window and wav2vec2-base cost 0.4-0.8 s a call: a third of the section).
    rows += whisper_rows(corpus, whisper_rounds, calls_per_turn=5, own_window=not quick)
    if quick:
        rows.append(Row(SECTION, "Whisper-base classifier, 30 s window; wav2vec2-base (random init)", "not measured: --quick"))
    else:
        rows += wav2vec2_rows(corpus, w2v_rounds, calls_per_turn=3)
    notes = [
        f"Latency: one {CLIP_S:g} s RAVDESS clip per call; median and 95th percentile over "
        f"{cnn_rounds * 10} calls per CNN case, {whisper_rounds * 5} per Whisper case and {w2v_rounds * 3} per "
        "wav2vec2 case, the cases of a model taking turns "
        "(one untimed call after each change of thread count). The CNN's features trim leading and "
        "trailing silence, as in use.",
        "Whisper precision: int8 is `load_model(..., precision=\"int8\")` (the encoder's linear layers "
        "quantised by torch at load time), timed in turns with fp32 in the same run; the fitted window "
        "is the whole seconds just covering the clip (benchmarks/int8_check.py judges its answers).",
    ]
    return rows, notes
