"""The real server (`python app.py` on a free localhost port), called through gradio_client.

The "predict" endpoint must return what the library (ser_train.inference) returns for the same
file and model, and refuse bad input with the library's sentence.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import soundfile
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app_support import ANGRY, AppServer, make_tiny_wav2vec2, utterances, write_clip
from ser_train.audio import SAMPLING_RATE, load_audio
from ser_train.data import EMOTIONS
from ser_train.inference import DEFAULT_MODEL, load_model
from ser_train.precision import DEFAULT_PRECISION
from ser_train.timeline import average_probabilities, timeline

MAX_DURATION_S = 30  # the server's SER_MAX_DURATION_S
MAX_UPLOAD_MB = 1  # the server's SER_MAX_UPLOAD_MB


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-wav2vec2"))


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_dir, calibratable_cnn) -> Client:
    settings = {"SER_MODELS": f"{tiny_model_dir},{calibratable_cnn}", "SER_MAX_DURATION_S": str(MAX_DURATION_S), "SER_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB)}
    with AppServer.running(settings, tmp_path_factory.mktemp("server")) as server:
        yield Client(server.url, verbose=False)


def predict(client: Client, path: Path, model: str) -> dict:
    return client.predict(audio=handle_file(str(path)), model=model, api_name="/predict")


def test_predict_is_the_one_documented_endpoint(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/predict"]
    parameters = {parameter["parameter_name"]: parameter for parameter in api["named_endpoints"]["/predict"]["parameters"]}
    assert list(parameters) == ["audio", "model", "calibration_audio"]
    assert parameters["calibration_audio"]["parameter_has_default"]  # optional


def test_predict_with_a_calibration_recording_is_calibrated_for_that_request_only(client, calibratable_cnn, tmp_path):
    passage = tmp_path / "passage.wav"
    soundfile.write(passage, utterances([0, 1] * 3, speech_s=2.5, pause_s=0.8), 16_000)
    clip = write_clip(tmp_path / "speech.wav")
    model = load_model(str(calibratable_cnn))
    calibrated = model.predict_file(clip, calibration=model.calibrate_recording(load_audio(passage)))
    answer = client.predict(
        audio=handle_file(str(clip)), model=str(calibratable_cnn), calibration_audio=handle_file(str(passage)), api_name="/predict"
    )
    assert answer == pytest.approx(calibrated, abs=1e-5)
    assert predict(client, clip, str(calibratable_cnn)) == pytest.approx(model.predict_file(clip), abs=1e-5)


@pytest.mark.parametrize("extension", ["wav", "mp3", "webm"])
def test_predict_returns_the_librarys_probabilities(client, tiny_model_dir, tmp_path, extension):
    path = write_clip(tmp_path / f"speech.{extension}", channels=2)
    result = predict(client, path, tiny_model_dir)
    expected = load_model(tiny_model_dir).predict_file(path)
    assert list(result) == list(EMOTIONS)
    assert result == pytest.approx(expected, abs=1e-6)


def test_an_empty_model_means_the_bundled_model(client, tmp_path):
    if not Path(DEFAULT_MODEL).is_dir():
        pytest.skip(f"the bundled model ({DEFAULT_MODEL}) is not there yet")
    path = write_clip(tmp_path / "speech.flac")
    assert predict(client, path, "") == pytest.approx(load_model(DEFAULT_MODEL, precision=DEFAULT_PRECISION).predict_file(path), abs=1e-6)


def test_long_recordings_return_the_timelines_average(client, tiny_model_dir, tmp_path):
    waveform = utterances([ANGRY, 2, 5], speech_s=2.5, pause_s=1.0)
    path = tmp_path / "long.wav"
    soundfile.write(path, waveform, SAMPLING_RATE)
    expected = average_probabilities(timeline(load_model(tiny_model_dir), load_audio(path)))
    assert predict(client, path, tiny_model_dir) == pytest.approx(expected, abs=1e-5)


def test_unusable_audio_is_refused_with_the_librarys_sentence(client, tiny_model_dir, tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all\n" * 10)
    with pytest.raises(AppError, match="notes.wav: could not be read as audio"):
        predict(client, path, tiny_model_dir)


def test_an_unknown_model_is_refused_with_one_sentence(client, tmp_path):
    with pytest.raises(AppError, match="nobody/no-such-model"):
        predict(client, write_clip(tmp_path / "speech.wav"), "nobody/no-such-model")


def test_the_duration_limit_comes_from_the_environment(client, tiny_model_dir, tmp_path):
    path = write_clip(tmp_path / "too-long.wav", sampling_rate=SAMPLING_RATE, duration_s=MAX_DURATION_S + 2)
    with pytest.raises(AppError, match=f"the limit is {MAX_DURATION_S / 60:g} minutes"):
        predict(client, path, tiny_model_dir)


def test_uploads_over_the_size_cap_are_refused(client, tiny_model_dir, tmp_path):
    big = write_clip(tmp_path / "big.wav", sampling_rate=48_000, channels=2, duration_s=12)  # 2.3 MB
    small = write_clip(tmp_path / "small.wav")
    assert big.stat().st_size > MAX_UPLOAD_MB * 2**20 > small.stat().st_size
    # gradio_client reads the cap from the page's config and refuses before sending ...
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        predict(client, big, tiny_model_dir)
    # ... and the server refuses a direct upload itself.
    upload_url = client.src.rstrip("/") + "/gradio_api/upload"
    for path, status in [(big, 413), (small, 200)]:
        with path.open("rb") as file:
            assert httpx.post(upload_url, files={"files": (path.name, file, "audio/wav")}).status_code == status
