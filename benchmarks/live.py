"""Live mode (ser_train.live) measured on RAVDESS speech played as if live.

Recordings here are "conversations": one actor's clips back to back with a pause of PAUSE_S
between them (plus the clips' own silences), so each clip is a spoken stretch with one known
emotion. Five measurements:

    speech detection  the timeline's energy rule, WebRTC VAD and Silero VAD on conversations mixed
                      with white noise and with music-like chords at several SNRs: frame F1
                      against the clean speech, and false alarms in the pauses
    settings          window, step and smoothing: accuracy of the live answers (the emotion of the
                      clip being spoken when the answer comes), agreement with the offline
                      timeline, and how often the answer flips inside one clip
    latency           from the end of a spoken stretch to its answer: the wait for the step that
                      ends it (an answer every STEP_S) plus the answer's computation, per model
    sessions          CPU share of one live session, how many simultaneous sessions (threads fed in
                      real time, as the server runs them) keep each answer under 1 s, memory per session;
                      one session's answers while the page analyses as many recordings as it takes,
                      and a calibration's time beside them
    agreement         the chosen settings' live answers against the offline timeline of the same file

The settings are judged on actors 21-24 with `--live-model`, a model trained without them
(e.g. `python -m ser_train train cnn --test-actors 21-24`); the bundled model heard every actor,
so its accuracy here would flatter it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.report import Row
from ser_train.audio import SAMPLING_RATE
from ser_train.data import EMOTIONS
from ser_train.inference import DEFAULT_MODEL

DEFAULT_NAME = f"default model {Path(DEFAULT_MODEL).name}"  # what the page and these rows run

SECTION = "live"
PAUSE_S = 1.0  # between clips, on top of their own leading and trailing silence (about 1 s)
TEST_ACTORS = (21, 22, 23, 24)
SNRS_DB = (20, 10, 0)
GRID_S = 0.010  # speech-detection decisions compared on a 10 ms grid
TRUTH_BELOW_PEAK_DB = 35.0  # clean-clip frames this close to the clip's loudest are speech
TRUTH_MAX_GAP_S = 0.25  # shorter gaps inside a clip are pauses between words, still speech
WINDOWS_S = (2.0, 3.0, 4.0)
STEPS_S = (0.5, 1.0)
SMOOTHINGS = (1.0, 0.5, 0.3)
ANSWER_TARGET_S = 1.0  # each answer within this of its chunk, for "sessions held"
SESSION_COUNTS = {False: (1, 2, 4, 8, 16, 32), True: (4, 16, 32)}  # by --quick: around the target of 4
SESSION_SECONDS = {False: 30.0, True: 3.0}  # each count's streams run this long, by --quick
BUSY_RECORDING_S = 120.0  # each recording analysed, again and again, beside a live session
PAGE_STREAM_S = {False: 60.0, True: 15.0}  # the conversation the page hears, by --quick (3 stretches)
CALIBRATION_S = 30.0  # what the page's mood prompt asks for (20-35 s)
CALIBRATIONS = {False: 6, True: 2}  # timed, idle and beside recordings, by --quick


# --- Conversations --------------------------------------------------------------------------


def conversations(corpus: Path, clips_per_actor: int) -> list[tuple[np.ndarray, list[tuple[float, float, str]]]]:
    """Per test actor: the conversation waveform and its clips' (start_s, end_s, emotion)."""
    import datasets

    from ser_train.data import audio_arrays, load_ravdess
    from ser_train.errors import DataError

    if not corpus.is_dir():
        raise DataError(f"{corpus}: no RAVDESS copy there; pass --corpus PATH.")
    datasets.disable_progress_bars()  # the table is what a run prints
    dataset = load_ravdess(str(corpus))
    result = []
    for actor in TEST_ACTORS:
        rows = dataset.filter(lambda actors: [a == actor for a in actors], input_columns="actor", batched=True)
        order = np.random.default_rng(actor).permutation(rows.num_rows)[:clips_per_actor]
        rows = rows.select(order.tolist())
        pause = np.zeros(round(PAUSE_S * SAMPLING_RATE), dtype=np.float32)
        parts, spans, position = [], [], 0
        for clip, emotion in zip(audio_arrays(rows), rows["emotion"]):
            spans.append((position / SAMPLING_RATE, (position + len(clip)) / SAMPLING_RATE, EMOTIONS[emotion]))
            parts += [clip, pause]
            position += len(clip) + len(pause)
        result.append((np.concatenate(parts), spans))
    return result


def speech_truth(waveform: np.ndarray, spans) -> np.ndarray:
    """Where the clean conversation is speech, on the GRID_S grid: each clip's frames within
    TRUTH_BELOW_PEAK_DB of its loudest, gaps under TRUTH_MAX_GAP_S closed."""
    from ser_train.timeline import frame_energy_db, merge_close_runs, voiced_runs

    grid = round(GRID_S * SAMPLING_RATE)
    truth = np.zeros(len(waveform) // grid, dtype=bool)
    for start_s, end_s, _ in spans:
        first = round(start_s / GRID_S)
        voiced = frame_energy_db(waveform[first * grid : round(end_s * SAMPLING_RATE)], grid) > -TRUTH_BELOW_PEAK_DB
        for start, end in merge_close_runs(voiced_runs(voiced), round(TRUTH_MAX_GAP_S / GRID_S)):
            truth[first + start : first + end] = True
    return truth


def music_like(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Chords of three harmonic notes changing every 0.4 s, each note with a plucked decay."""
    t = np.arange(num_samples) / SAMPLING_RATE
    note_samples = round(0.4 * SAMPLING_RATE)
    signal = np.zeros(num_samples, dtype=np.float64)
    for start in range(0, num_samples, note_samples):
        span = slice(start, min(num_samples, start + note_samples))
        local = t[span] - t[start]
        for semitone in rng.choice(np.arange(-12, 13), size=3, replace=False):
            f0 = 220.0 * 2 ** (semitone / 12)
            note = sum(0.5**k * np.sin(2 * np.pi * f0 * (k + 1) * local) for k in range(5))
            signal[span] += note * np.exp(-3.0 * local)
    return signal.astype(np.float32)


def mixed(waveform: np.ndarray, truth: np.ndarray, kind: str, snr_db: float, rng) -> np.ndarray:
    """`waveform` plus noise of `kind` scaled so speech power / noise power is `snr_db`."""
    grid = round(GRID_S * SAMPLING_RATE)
    speech = waveform[: len(truth) * grid].reshape(-1, grid)[truth]
    noise = rng.normal(0, 1, len(waveform)).astype(np.float32) if kind == "white noise" else music_like(len(waveform), rng)
    scale = np.sqrt(np.mean(speech**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (waveform + scale * noise).astype(np.float32)


# --- Speech detection -------------------------------------------------------------------------


def on_grid(decisions: np.ndarray, frame_s: float, length: int) -> np.ndarray:
    """Per-frame decisions of `frame_s` frames resampled to `length` points of the GRID_S grid."""
    index = np.minimum((np.arange(length) * GRID_S / frame_s).astype(int), len(decisions) - 1)
    return decisions[index]


def energy_decisions(waveform: np.ndarray, length: int) -> np.ndarray:
    """The offline timeline's rule: 25 ms frames within 40 dB of the recording's loudest."""
    from ser_train.timeline import FRAME_S, SILENCE_BELOW_PEAK_DB, frame_energy_db

    voiced = frame_energy_db(waveform, round(FRAME_S * SAMPLING_RATE)) > -SILENCE_BELOW_PEAK_DB
    return on_grid(voiced, FRAME_S, length)


def webrtc_decisions(waveform: np.ndarray, length: int, mode: int = 3) -> np.ndarray:
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    frame = round(0.030 * SAMPLING_RATE)
    pcm = (np.clip(waveform, -1, 1) * 32767).astype(np.int16)
    voiced = np.array([vad.is_speech(pcm[i : i + frame].tobytes(), SAMPLING_RATE) for i in range(0, len(pcm) - frame + 1, frame)])
    return on_grid(voiced, 0.030, length)


def silero_decisions(waveform: np.ndarray, length: int) -> np.ndarray:
    from ser_train.vad import SPEECH_THRESHOLD, VAD_FRAME, frame_speech_probabilities

    return on_grid(frame_speech_probabilities(waveform) > SPEECH_THRESHOLD, VAD_FRAME / SAMPLING_RATE, length)


DETECTORS = {
    "energy (timeline rule)": energy_decisions,
    "WebRTC VAD (mode 3)": webrtc_decisions,
    "Silero VAD": silero_decisions,
}


def detection_rows(talks) -> tuple[list[Row], dict[str, float]]:
    rng = np.random.default_rng(0)
    conditions = [("clean", None, None)] + [(f"{kind} {snr} dB", kind, snr) for kind in ("white noise", "music-like") for snr in SNRS_DB]
    counts = {(name, condition): np.zeros(4) for name in DETECTORS for condition, _, _ in conditions}  # tp fp fn tn
    for waveform, spans in talks:
        truth = speech_truth(waveform, spans)
        for condition, kind, snr in conditions:
            audio = waveform if kind is None else mixed(waveform, truth, kind, snr, rng)
            for name, detect in DETECTORS.items():
                found = detect(audio, len(truth))
                counts[name, condition] += [
                    np.sum(found & truth), np.sum(found & ~truth), np.sum(~found & truth), np.sum(~found & ~truth)
                ]  # fmt: skip
    rows, mean_noisy_f1 = [], {}
    for name in DETECTORS:
        noisy = []
        for condition, kind, _ in conditions:
            tp, fp, fn, tn = counts[name, condition]
            f1 = 2 * tp / (2 * tp + fp + fn)
            false_alarms = fp / (fp + tn)
            if kind is not None:
                noisy.append(f1)
            rows.append(Row(SECTION, f"speech detection, {name}, {condition}", f"F1 {f1:.3f}; pauses called speech {false_alarms:.0%}; speech missed {fn / (tp + fn):.0%}"))
        mean_noisy_f1[name] = float(np.mean(noisy))
    best = max(mean_noisy_f1, key=mean_noisy_f1.get)
    rows.append(
        Row(
            SECTION,
            "speech detection, mean F1 over the noisy conditions",
            "; ".join(f"{name} {f1:.3f}" for name, f1 in mean_noisy_f1.items()),
            "best: Silero VAD (used by live mode)",
            best == "Silero VAD",
        )
    )
    return rows, mean_noisy_f1


# --- Settings -------------------------------------------------------------------------------


class CachedModel:
    """A model whose answers are remembered by window content, so smoothing variants of the same
    window and step cost no extra forward passes."""

    def __init__(self, model):
        self.model, self.labels, self.cache = model, model.labels, {}
        self.is_unsure = model.is_unsure  # live answers say whether they are sure, as the model judges

    def predict_batch(self, waveforms):
        rows = []
        for waveform in waveforms:
            key = hashlib.blake2b(waveform.tobytes(), digest_size=16).digest()
            if key not in self.cache:
                self.cache[key] = self.model.predict_batch([waveform])[0]
            rows.append(self.cache[key])
        return np.array(rows)


def clip_at(spans, time_s: float):
    """The (start_s, end_s, emotion) being spoken at `time_s`, or None in a pause between clips."""
    return next((span for span in spans if span[0] <= time_s <= span[1]), None)


def offline_emotion(segments, time_s: float) -> str | None:
    """The offline timeline's emotion at `time_s`, None where it heard no speech."""
    return next((segment.top_emotion for segment in segments if segment.is_speech and segment.start_s <= time_s <= segment.end_s), None)


def score(answers, spans, segments) -> dict[str, float]:
    """Accuracy against the clip being spoken, agreement with the offline timeline, flips per
    pair of consecutive speech answers inside one clip."""
    correct = agree = compared = flips = pairs = 0
    labelled = 0
    previous = None
    for answer in answers:
        if not answer.judged:
            previous = None
            continue
        clip = clip_at(spans, answer.time_s)
        if clip is not None:
            labelled += 1
            correct += answer.top_emotion == clip[2]
            if previous is not None and previous[0] is clip:
                pairs += 1
                flips += answer.top_emotion != previous[1]
        offline = offline_emotion(segments, answer.time_s)
        if offline is not None:
            compared += 1
            agree += answer.top_emotion == offline
        previous = (clip, answer.top_emotion)
    return {
        "accuracy": correct / max(labelled, 1),
        "agreement": agree / max(compared, 1),
        "flips": flips / max(pairs, 1),
        "answers": labelled,
    }


def settings_rows(model, talks, every_window_and_step: bool = True) -> tuple[list[Row], tuple[float, int]]:
    """Each window, step and smoothing (or, if not `every_window_and_step`, each smoothing of
    live mode's window and step: every other pair costs a model pass per step of the talks);
    with the rows, live mode's own settings' agreement with the offline timeline and the speech
    answers it counted."""
    from ser_train.analysis import analyse_waveform
    from ser_train.live import SMOOTHING, STEP_S, WINDOW_S, LiveStream, play

    offline = [analyse_waveform(model, waveform)[1] for waveform, _ in talks]
    rows = []
    for window_s in WINDOWS_S if every_window_and_step else (WINDOW_S,):
        for step_s in STEPS_S if every_window_and_step else (STEP_S,):
            cached = CachedModel(model)
            for smoothing in SMOOTHINGS:
                totals = [
                    score(list(play(LiveStream(cached, window_s=window_s, step_s=step_s, smoothing=smoothing), waveform)), spans, segments)
                    for (waveform, spans), segments in zip(talks, offline)
                ]
                weights = np.array([total["answers"] for total in totals], dtype=float)
                mean = {key: float(np.average([total[key] for total in totals], weights=weights)) for key in ("accuracy", "agreement", "flips")}
                chosen = (window_s, step_s, smoothing) == (WINDOW_S, STEP_S, SMOOTHING)
                if chosen:
                    agreement = (mean["agreement"], int(weights.sum()))
                rows.append(
                    Row(
                        SECTION,
                        f"settings: window {window_s:g} s, step {step_s:g} s, smoothing {smoothing:g}{' (chosen)' if chosen else ''}",
                        f"accuracy {mean['accuracy']:.3f}; agrees with offline {mean['agreement']:.3f}; flips {mean['flips']:.3f}",
                    )
                )
    return rows, agreement


# --- Latency and sessions ---------------------------------------------------------------------


def latency_rows(models: dict[str, object], talks) -> list[Row]:
    """End of a spoken stretch to its answer: the wait for the step boundary (the chunk that
    holds the stretch's end is sent then) plus the time feeding that chunk takes."""
    from ser_train.live import STEP_S, LiveStream

    rows = []
    step = round(STEP_S * SAMPLING_RATE)
    for name, model in models.items():
        delays = []
        for waveform, spans in talks[:2]:
            truth = speech_truth(waveform, spans)
            stream = LiveStream(model)
            compute = []
            for start in range(0, len(waveform), step):
                began = time.perf_counter()
                stream.feed(waveform[start : start + step])
                compute.append(time.perf_counter() - began)
            for start_s, end_s, _ in spans:
                spoken = np.flatnonzero(truth[round(start_s / GRID_S) : round(end_s / GRID_S)])
                speech_end_s = start_s + (spoken[-1] + 1) * GRID_S if spoken.size else end_s
                boundary = int(np.ceil(speech_end_s / STEP_S))  # the chunk ending at this step
                if boundary - 1 < len(compute):
                    delays.append(boundary * STEP_S - speech_end_s + compute[boundary - 1])
        delays = np.array(delays)
        rows.append(
            Row(
                SECTION,
                f"end of a spoken stretch to its answer, {name} (step wait + computation; {len(delays)} stretches)",
                f"median {np.median(delays) * 1000:.0f} ms, p95 {np.percentile(delays, 95) * 1000:.0f} ms",
            )
        )
    return rows


def run_sessions(model, waveform: np.ndarray, count: int, seconds: float) -> tuple[np.ndarray, float]:
    """`count` live sessions in threads, each fed a CHUNK_S chunk every CHUNK_S of wall time for
    `seconds`, as the page sends them: how late each answer was (from the arrival of the chunk
    that brought it), and the CPU seconds used."""
    from ser_train.live import CHUNK_S, LiveStream

    chunk = round(CHUNK_S * SAMPLING_RATE)
    delays: list[float] = []
    lock = threading.Lock()
    began = time.monotonic()
    cpu_before = time.process_time()

    def session(offset: int) -> None:
        stream = LiveStream(model)
        for index in range(int(seconds / CHUNK_S)):
            due = began + (index + 1) * CHUNK_S + offset * CHUNK_S / count  # sessions out of phase
            time.sleep(max(0.0, due - time.monotonic()))
            start = (index * chunk + offset * 7 * chunk) % (len(waveform) - chunk)
            if stream.feed(waveform[start : start + chunk]):
                with lock:
                    delays.append(time.monotonic() - due)

    threads = [threading.Thread(target=session, args=(offset,)) for offset in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.array(delays), time.process_time() - cpu_before


def sessions_rows(model, talks, counts: tuple[int, ...], seconds: float) -> list[Row]:
    from ser_train.live import LiveStream, play

    waveform = talks[0][0]
    rows = []
    held = 0
    for count in counts:
        delays, cpu_s = run_sessions(model, waveform, count, seconds)
        if count == counts[0]:
            share = cpu_s / seconds / count
            rows.append(Row(SECTION, f"CPU share of one live session ({DEFAULT_NAME}; {count} running)", f"{share:.0%} of one core ({share / (os.cpu_count() or 1):.0%} of the machine)"))
        p95 = float(np.percentile(delays, 95))
        rows.append(Row(SECTION, f"{count} simultaneous live sessions ({DEFAULT_NAME})", f"answer delay median {np.median(delays) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"))
        if p95 >= ANSWER_TARGET_S:
            break
        held = count
    rows.append(Row(SECTION, "live sessions held with every answer's p95 under 1 s", f"{held} (of {', '.join(map(str, counts))} tried)"))

    # The streams' own buffers are what is measured, not the model's passes: the answers are
    # computed once, before tracing, and each traced stream is given them from the cache.
    answers = CachedModel(model)
    list(play(LiveStream(answers), waveform[: 20 * SAMPLING_RATE]))
    tracemalloc.start()
    try:
        streams = [LiveStream(answers) for _ in range(8)]
        for stream in streams:
            list(play(stream, waveform[: 20 * SAMPLING_RATE]))
        held_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows.append(Row(SECTION, "memory per live session (20 s streamed, buffers full)", f"{held_bytes / len(streams) / 2**10:.0f} KiB"))
    return rows


@contextlib.contextmanager
def server_model() -> Iterator[object]:
    """The default model as the server runs it: torch set by serving.configure_torch (restored
    afterwards) and the model loaded under it, sized for the server's passes at once."""
    import torch

    from ser_train.inference import load_model
    from ser_train.serving import configure_torch

    threads_before = torch.get_num_threads()
    configure_torch()
    try:
        yield load_model(DEFAULT_MODEL)
    finally:
        torch.set_num_threads(threads_before)


@contextlib.contextmanager
def recordings_analysed(model, talks) -> Iterator[str]:
    """`model` analysing all the recordings the page takes at once but one
    (serving.REQUESTS_AT_ONCE - 1) of BUSY_RECORDING_S each, again and again: their passes and
    whatever runs inside the block share the model's slots (ser_train.passes). Gives what is
    analysed, in words."""
    from ser_train.analysis import analyse_waveform
    from ser_train.serving import REQUESTS_AT_ONCE

    recordings = REQUESTS_AT_ONCE - 1
    recording = np.concatenate([waveform for waveform, _ in talks])[: round(BUSY_RECORDING_S * SAMPLING_RATE)]
    stop = threading.Event()

    def analyse_again_and_again() -> None:
        while not stop.is_set():
            analyse_waveform(model, recording)

    busy = [threading.Thread(target=analyse_again_and_again) for _ in range(recordings)]
    for thread in busy:
        thread.start()
    try:
        yield f"{recordings} recordings of {len(recording) / SAMPLING_RATE / 60:.1f} minutes are analysed"
    finally:
        stop.set()
        for thread in busy:
            thread.join()


def beside_recordings_row(talks, seconds: float) -> Row:
    """One live session's answer delay while the page analyses as many recordings as it takes."""
    with server_model() as model, recordings_analysed(model, talks) as analysed:
        delays, _ = run_sessions(model, talks[0][0], 1, seconds)
    p95 = float(np.percentile(delays, 95))
    return Row(
        SECTION,
        f"1 live session while {analysed} ({DEFAULT_NAME}, the server's threads)",
        f"answer delay median {np.median(delays) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms",
        f"p95 < {ANSWER_TARGET_S:g} s",
        p95 < ANSWER_TARGET_S,
    )


def calibration_beside_recordings_row(talks, calibrations: int) -> Row:
    """A visitor's calibration (CALIBRATION_S of a conversation through the mood prompt's
    source, as the page calibrates) while the page analyses as many recordings as it takes,
    against the same calibration on the idle model: each batch of its speech takes its own turn."""
    from ser_train.calibration_prompts import MOODS

    calibration_audio = talks[-1][0][: round(CALIBRATION_S * SAMPLING_RATE)]

    def calibration_times(model) -> list[float]:
        times = []
        for _ in range(calibrations):
            start = time.perf_counter()
            model.calibrate_recording(calibration_audio, MOODS.source)
            times.append(time.perf_counter() - start)
        return times

    with server_model() as model:
        idle = calibration_times(model)
        with recordings_analysed(model, talks) as analysed:
            busy = calibration_times(model)
    return Row(
        SECTION,
        f"a {CALIBRATION_S:g} s calibration while {analysed} ({DEFAULT_NAME}, the server's threads; {calibrations} calibrations)",
        f"median {np.median(busy):.1f} s, max {max(busy):.1f} s (idle: median {np.median(idle):.1f} s)",
    )


PAGE_LIVE_SCRIPT = """
(() => {
  const media = navigator.mediaDevices;
  const getUserMedia = media.getUserMedia.bind(media);
  window.liveTimes = {opened: null, updates: []};
  media.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    window.liveTimes.opened = performance.now();  // the fake microphone starts its file now
    return stream;
  };
  new MutationObserver(() => {
    const now = document.querySelector('#live-now');
    if (now) window.liveTimes.updates.push([performance.now(), now.innerText]);
  }).observe(document, {subtree: true, childList: true, characterData: true});
})();
"""


def page_latency_rows(server, waveform: np.ndarray, spans, seconds: float) -> list[Row]:
    """End of a spoken stretch to its answer on the page: `server` (`python app.py` with the
    bundled model, ready), Chromium's fake microphone playing the first `seconds` of a
    conversation into live mode, DOM updates timed in the page."""
    import re
    import tempfile

    import soundfile
    from playwright.sync_api import sync_playwright

    from ser_train.audio import resample
    from test_browser import CHROMIUM, CHROMIUM_FLAGS

    spans = [span for span in spans if span[1] < seconds - 1.0]
    truth = speech_truth(waveform, spans)
    with tempfile.TemporaryDirectory(prefix="ser-bench-live-talk-") as folder:
        wav = Path(folder) / "talk.wav"
        soundfile.write(wav, resample(waveform[: round(seconds * SAMPLING_RATE)], SAMPLING_RATE, 48_000), 48_000)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"]
            )
            page = browser.new_page()
            page.add_init_script(PAGE_LIVE_SCRIPT)
            page.goto(server.url)
            page.locator("#live-speech button.record-button").click()
            time.sleep(seconds + 2.0)
            times = page.evaluate("window.liveTimes")
            browser.close()
    opened, updates = times["opened"], times["updates"]
    delays = []
    for start_s, end_s, _ in spans:
        spoken = np.flatnonzero(truth[round(start_s / GRID_S) : round(end_s / GRID_S)])
        speech_end_s = start_s + (spoken[-1] + 1) * GRID_S if spoken.size else end_s
        # The page's first answer stamped at or after the end of the stretch ("at 12.5 s").
        for shown_ms, text in updates:
            stamp = re.search(r"at ([0-9.]+) s", text)
            if stamp and float(stamp.group(1)) >= speech_end_s:
                delays.append((shown_ms - opened) / 1000 - speech_end_s)
                break
    delays = np.array(delays)
    # Every answer, from the end of the audio it is about (its stamp) to the page first showing it.
    first_shown: dict[float, float] = {}
    for shown_ms, text in updates:
        stamp = re.search(r"at ([0-9.]+) s", text)
        if stamp:
            first_shown.setdefault(float(stamp.group(1)), (shown_ms - opened) / 1000)
    pipeline = np.array([shown_s - stamp_s for stamp_s, shown_s in first_shown.items()])
    return [
        Row(
            SECTION,
            f"end of a spoken stretch to its answer on the page, {DEFAULT_NAME} ({len(delays)} stretches, Chromium, local server)",
            f"median {np.median(delays) * 1000:.0f} ms, p95 {np.percentile(delays, 95) * 1000:.0f} ms",
            f"< {ANSWER_TARGET_S:g} s median",
            bool(np.median(delays) < ANSWER_TARGET_S),
        ),
        Row(
            SECTION,
            f"end of the audio an answer is about to the page showing it, {DEFAULT_NAME} ({len(pipeline)} answers)",
            f"median {np.median(pipeline) * 1000:.0f} ms, p95 {np.percentile(pipeline, 95) * 1000:.0f} ms",
        ),
    ]


# --- Agreement --------------------------------------------------------------------------------


def agreement_row(agreement: float, answers: int) -> Row:
    return Row(SECTION, f"live answers agreeing with the offline timeline of the same recording ({DEFAULT_NAME})", f"{agreement:.1%} of {answers} speech answers")


# --- Section ----------------------------------------------------------------------------------


def wav2vec2_base_model():
    """The latency section's randomly initialised wav2vec2-base as an EmotionModel: the stand-in
    for a large transformer model."""
    from benchmarks.latency import wav2vec2_base
    from ser_train.inference import EmotionModel

    return EmotionModel("wav2vec2-base (random init)", "wav2vec2", EMOTIONS, wav2vec2_base().predict_proba)


def run(corpus: Path, quick: bool, live_model: str | None = None) -> tuple[list[Row], list[str]]:
    import sys
    import tempfile

    from benchmarks.corpus import PROJECT_ROOT
    from ser_train.inference import load_model
    from ser_train.live import CHUNK_S

    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    from app_support import AppServer

    clips = 4 if quick else 20
    talks = conversations(corpus, clips)
    bundled = load_model(DEFAULT_MODEL)
    judge = load_model(live_model) if live_model else bundled
    with tempfile.TemporaryDirectory(prefix="ser-bench-live-") as folder, AppServer.all_starting([({}, Path(folder))]) as (server,):
        # While the page's server starts: the rows that count answers, not time.
        rows, _ = detection_rows(talks)
        settings, agreement = settings_rows(judge, talks, every_window_and_step=not quick)
        rows += settings
        if judge is not bundled:  # the settings rows judged another model's answers
            _, agreement = settings_rows(bundled, talks, every_window_and_step=False)
        server.wait_until_ready()
        timed = {DEFAULT_NAME: bundled}
        if not quick:  # the large-transformer stand-in answers a chunk in about 0.5 s: a minute of the run
            timed["wav2vec2-base architecture (random init)"] = wav2vec2_base_model()
        rows += latency_rows(timed, talks)
        rows += page_latency_rows(server, *talks[0], PAGE_STREAM_S[quick])
        rows += sessions_rows(bundled, talks, SESSION_COUNTS[quick], SESSION_SECONDS[quick])
        rows.append(beside_recordings_row(talks, SESSION_SECONDS[quick]))
        rows.append(calibration_beside_recordings_row(talks, CALIBRATIONS[quick]))
    rows.append(agreement_row(*agreement))
    minutes = sum(len(waveform) for waveform, _ in talks) / SAMPLING_RATE / 60
    judged_by = f"{live_model} (trained without actors {TEST_ACTORS[0]}-{TEST_ACTORS[-1]})" if live_model else f"the {DEFAULT_NAME}, which heard these actors in training: accuracy flatters it"
    notes = [
        f"Live: conversations of actors {', '.join(map(str, TEST_ACTORS))}, {clips} random clips each with {PAUSE_S:g} s pauses "
        f"({minutes:.1f} min in all). Speech detection: ground truth from the clean clips (10 ms frames within "
        f"{TRUTH_BELOW_PEAK_DB:g} dB of the clip's loudest, gaps under {TRUTH_MAX_GAP_S * 1000:.0f} ms closed); noise scaled to "
        "the speech's power; 'music-like' is three-note harmonic chords changing every 0.4 s. The energy rule sees the whole "
        "recording's peak (as offline); live it would only know the peak so far.",
        f"Live settings judged with {judged_by}. Accuracy: the answer's top emotion against the clip being spoken when it "
        "comes; agreement: against the offline timeline's segment at that time; flips: share of consecutive speech "
        "answers within one clip that change their top emotion.",
        "Live latency: the page sends a chunk every step; the figure is the wait from the end of speech to that chunk's "
        "end plus feeding it (voice activity, resampling, model), measured in this process. The browser's upload and "
        "Gradio's event round trip come on top; the 'on the page' row has them: the time from the microphone opening "
        "(the fake device starts its file then) to the page's first answer stamped at or after the stretch's end.",
        f"Live sessions: threads in one process, as the server runs stream events, each fed a {CHUNK_S:g} s chunk every "
        f"{CHUNK_S:g} s as the page sends them (phases spread), sharing the model's passes at once (ser_train.passes); delay is from the arrival "
        "of the chunk that completes an answer's step to the answer. Memory per "
        "session: Python/numpy allocations (tracemalloc) held by 8 streams after 20 s each. Beside recordings: the "
        "recordings are the conversations back to back, each analysed by analyse_waveform in a thread of its own "
        "(as the page's analyses run), again until the session ends; torch as the server sets it (configure_torch). "
        f"The calibration beside them is the last conversation's first {CALIBRATION_S:g} s, calibrated as the page calibrates "
        "the mood prompt's recording.",
    ]
    return rows, notes
