"""Long recordings streamed from their files: the same timeline as the whole waveform, flat memory.

`ser_train.audio.stream_audio` decodes a file block by block; `ser_train.timeline.map_speech`
and `timeline_file` build the timeline from two passes over those blocks, and the library's
analysis of a recording (`ser_train.analysis`, behind the page and /predict) uses them, so a 10-minute upload is never held in memory whole.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from ser_train import plots
from ser_train.analysis import analyse_recording, analyse_waveform
from app_support import make_tiny_wav2vec2, utterances
from bad_inputs import write_refused
from ser_train.audio import SAMPLING_RATE, STREAM_BLOCK_S, load_audio, resample, stream_audio
from ser_train.cli import main
from ser_train.errors import AudioError
from ser_train.inference import load_model
from ser_train.timeline import (
    BATCH_SIZE,
    MAX_SEGMENT_S,
    cut_segments,
    frame_powers,
    map_speech,
    sound_segments,
    timeline,
    timeline_file,
)
from test_timeline import LoudnessModel

FRAME = 400  # samples: the timeline's 25 ms energy frame at 16 kHz
# (extension, sampling rate, subtype): formats whose consecutive decoded ranges are the whole
# decoded file sample for sample, resampled by FFmpeg or not.
EXACT_FORMATS = [
    ("wav", 16_000, "PCM_16"),
    ("wav", 48_000, "PCM_16"),
    ("flac", 16_000, "PCM_16"),
    ("ogg", 48_000, "OPUS"),
    ("mp3", 16_000, "MPEG_LAYER_III"),
]


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    """About 85 s of utterances, a long silence and a long stretch of speech: three 30 s blocks."""
    talk = utterances(list(range(8)) * 4, speech_s=1.7, pause_s=0.7)
    silence = np.zeros(10 * SAMPLING_RATE, dtype=np.float32)
    waveform = np.concatenate([talk, silence, utterances([3], speech_s=9.0, pause_s=0.2)])
    assert len(waveform) > 2 * STREAM_BLOCK_S * SAMPLING_RATE
    return waveform


class SegmentRecorder(LoudnessModel):
    """The stand-in model, also keeping a copy of every segment it is given."""

    def __init__(self):
        super().__init__()
        self.segments: list[np.ndarray] = []

    def predict_batch(self, waveforms):
        self.segments += [np.array(waveform) for waveform in waveforms]
        return super().predict_batch(waveforms)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def blocks_of(waveform: np.ndarray, size: int) -> list[np.ndarray]:
    return [waveform[start : start + size] for start in range(0, len(waveform), size)]


def write_repeated(path: Path, cycle: np.ndarray, minutes: float) -> Path:
    """A 16-bit WAV of `cycle` repeated for `minutes`, written without holding it whole."""
    with soundfile.SoundFile(path, "w", SAMPLING_RATE, 1, subtype="PCM_16") as out:
        for _ in range(round(minutes * 60 * SAMPLING_RATE / len(cycle))):
            out.write(cycle)
    return path


@pytest.mark.parametrize("block_size", [160, FRAME - 1, FRAME, FRAME + 1, 12_345])
def test_frame_powers_run_on_across_block_edges(recording, block_size):
    whole, length = frame_powers([recording], FRAME)
    blocked, blocked_length = frame_powers(blocks_of(recording, block_size), FRAME)
    assert blocked_length == length == len(recording)
    np.testing.assert_array_equal(blocked, whole)


@pytest.mark.parametrize("block_size", [1_000, 16_000, 100_000])
def test_segments_cut_from_blocks_are_the_waveforms_slices(recording, block_size):
    bounds = sound_segments(recording, SAMPLING_RATE)
    pieces = list(cut_segments(blocks_of(recording, block_size), bounds))
    assert len(pieces) == len(bounds)
    for piece, (start, end) in zip(pieces, bounds):
        np.testing.assert_array_equal(piece, recording[start:end])


def test_segments_out_of_order_are_refused(recording):
    with pytest.raises(ValueError, match="recording order"):
        list(cut_segments(blocks_of(recording, 16_000), [(32_000, 40_000), (0, 8_000)]))


def test_the_blocks_make_up_the_decoded_file(recording, tmp_path):
    path = tmp_path / "long.flac"
    soundfile.write(path, recording, SAMPLING_RATE)
    blocks = list(stream_audio(path))
    assert [len(block) for block in blocks[:-1]] == [int(STREAM_BLOCK_S * SAMPLING_RATE)] * (len(blocks) - 1)
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(path))


@pytest.mark.parametrize("extension, sampling_rate, subtype", EXACT_FORMATS)
def test_the_streamed_timeline_is_the_whole_waveforms(recording, tmp_path, extension, sampling_rate, subtype):
    path = tmp_path / f"long.{extension}"
    soundfile.write(path, resample(recording, SAMPLING_RATE, sampling_rate), sampling_rate, subtype=subtype)
    waveform = load_audio(path)
    expected = timeline(LoudnessModel(), waveform)
    speech = map_speech(path)
    model = SegmentRecorder()

    shares = []

    assert speech.num_samples == len(waveform)
    assert timeline_file(model, speech, progress=shares.append) == expected  # same bounds, same probabilities
    # The model heard exactly the whole waveform's samples, BATCH_SIZE segments at a time.
    for heard, segment in zip(model.segments, expected, strict=True):
        start, end = round(segment.start_s * SAMPLING_RATE), round(segment.end_s * SAMPLING_RATE)
        np.testing.assert_array_equal(heard, waveform[start:end])
    assert [len(batch) for batch in model.batches[:-1]] == [BATCH_SIZE] * (len(model.batches) - 1)
    # After each batch, the share of the segments answered so far.
    assert shares == [sum(map(len, model.batches[: i + 1])) / len(expected) for i in range(len(model.batches))]
    assert shares[-1] == 1.0 and len(shares) > 1


def test_a_recording_of_one_block_is_kept_from_the_first_pass_and_a_longer_one_is_not(recording, tmp_path):
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    soundfile.write(short, recording[: 5 * SAMPLING_RATE], SAMPLING_RATE)
    soundfile.write(long, recording, SAMPLING_RATE)
    kept = map_speech(short)
    np.testing.assert_array_equal(kept.samples, load_audio(short))
    np.testing.assert_array_equal(np.concatenate(list(kept.blocks())), load_audio(short))
    assert map_speech(long).samples is None  # longer than a block: later passes decode again


def test_streaming_refuses_what_loading_refuses_with_the_same_sentence(tmp_path):
    for name, (path, _) in write_refused(tmp_path).items():
        with pytest.raises(AudioError) as loading:
            load_audio(path)
        with pytest.raises(AudioError) as streaming:
            map_speech(path)
        assert str(streaming.value) == str(loading.value), name


def test_a_recording_over_the_limit_is_refused_while_streaming(recording, tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(path, recording, SAMPLING_RATE)
    with pytest.raises(AudioError, match=r"is \d+(\.\d)? s long; the limit is 60 s\."):
        map_speech(path, max_duration_s=60)


def test_a_recording_just_over_the_limit_is_not_said_to_be_as_long_as_it():
    from ser_train.audio import check_waveform

    noise = np.random.default_rng(0).normal(0, 0.1, round(602 * SAMPLING_RATE)).astype(np.float32)
    with pytest.raises(AudioError, match=r"^602s.wav is over 10 minutes long; the limit is 10 minutes\.$"):
        check_waveform(noise, SAMPLING_RATE, "602s.wav")
    with pytest.raises(AudioError, match=r"^long.wav is 61 s long; the limit is 60 s\.$"):
        check_waveform(noise[: 61 * SAMPLING_RATE], SAMPLING_RATE, "long.wav", max_duration_s=60)


def test_memory_does_not_grow_with_the_recordings_length(tmp_path):
    # 3 s utterances and 0.5 s pauses; 10 minutes are 38 MB as float32.
    cycle = utterances([2], speech_s=3.0, pause_s=0.5)
    peaks = {}
    for minutes in (2, 10):
        path = write_repeated(tmp_path / f"{minutes}min.wav", cycle, minutes)
        model = LoudnessModel()
        tracemalloc.start()  # numpy's allocations; torchcodec's blocks are one at a time by design
        try:
            speech = map_speech(path)
            segments = timeline_file(model, speech)
            plots.waveform_envelope(speech), plots.mel_spectrogram(speech, plots.spectrogram_hop(speech.num_samples))  # the page's plots
            _, peaks[minutes] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(segments) == pytest.approx(minutes * 60 * SAMPLING_RATE / len(cycle), abs=2)  # one per utterance
        assert max(sum(batch) for batch in model.batches) <= BATCH_SIZE * MAX_SEGMENT_S * SAMPLING_RATE
    block_bytes = STREAM_BLOCK_S * SAMPLING_RATE * np.dtype(np.float32).itemsize
    # Flat: only where the block edges fall differs (a whole-file decode would add 30 MB here).
    assert peaks[10] < peaks[2] + block_bytes
    assert peaks[10] < 8 * block_bytes  # a few blocks and a batch, against the recording's 20 blocks


@pytest.mark.parametrize("minutes", [0.05, 1.0])
def test_the_pages_plots_read_in_blocks_equal_librosas_of_the_whole_waveform(recording, tmp_path, minutes):
    path = write_repeated(tmp_path / "talk.wav", recording[: round(minutes * 60 * SAMPLING_RATE)], minutes)
    waveform, speech = load_audio(path), map_speech(path)
    hop = plots.spectrogram_hop(len(waveform))
    expected = librosa.feature.melspectrogram(
        y=waveform, sr=SAMPLING_RATE, n_fft=plots.SPECTROGRAM_FFT, hop_length=hop, n_mels=plots.SPECTROGRAM_MELS
    )
    spectrogram = plots.mel_spectrogram(speech, hop)
    np.testing.assert_allclose(spectrogram, expected, rtol=1e-3, atol=1e-6 * expected.max())
    times, lows, highs = plots.waveform_envelope(speech)
    assert len(times) <= plots.WAVEFORM_POINTS + 1 and times[-1] <= len(waveform) / SAMPLING_RATE
    assert (lows.min(), highs.max()) == (waveform.min(), waveform.max())


def test_the_api_streams_long_recordings_and_answers_like_the_page(tiny_model, tmp_path):
    path = write_repeated(tmp_path / "long.wav", utterances([1, 4, 6], speech_s=2.0, pause_s=1.0), minutes=0.6)
    analysis = analyse_recording(tiny_model, path)
    expected, expected_segments = analyse_waveform(tiny_model, load_audio(path))
    assert analysis.segments == pytest.approx(expected_segments) and len(analysis.segments) > 1
    assert analysis.probabilities == pytest.approx(expected, abs=1e-5)


def test_the_predict_command_shows_a_long_files_progress_on_stderr_and_keeps_stdout_json(tiny_model_dir, tmp_path, capsys):
    path = write_repeated(tmp_path / "long.wav", utterances([1, 4, 6], speech_s=2.0, pause_s=1.0), minutes=0.6)
    assert main(["predict", "--model", str(tiny_model_dir), str(path), "--json"]) == 0
    captured = capsys.readouterr()
    [result] = json.loads(captured.out)
    assert result["file"] == str(path)
    assert "long.wav: 100%" in captured.err


def test_the_api_reads_short_recordings_whole(tiny_model, tmp_path):
    path = tmp_path / "short.wav"
    soundfile.write(path, utterances([5], speech_s=2.0, pause_s=0.5), SAMPLING_RATE)
    analysis = analyse_recording(tiny_model, path)
    assert analysis.segments == []
    assert analysis.probabilities == pytest.approx(tiny_model.predict_file(path), abs=1e-6)
