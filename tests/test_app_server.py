"""The real server (`python app.py` on a free localhost port), called through gradio_client and
plain HTTP.

The "predict" endpoint must return what the library (ser_train.inference) returns for the same
file and model, and refuse bad input with the library's sentence. Nothing a visitor sends stays
on the server's disk once answered, and no other client can fetch it, before or after.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import soundfile
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app_support import ANGRY, AppServer, make_tiny_wav2vec2, utterances, write_clip
from ser_train.analysis import analyse_files
from ser_train.audio import SAMPLING_RATE, load_audio
from ser_train.calibration_prompts import MOODS, PASSAGE
from ser_train.data import EMOTIONS
from ser_train.inference import DEFAULT_MODEL, load_model
from ser_train.precision import DEFAULT_PRECISION
from ser_train.timeline import average_probabilities, timeline
from ser_train.uploads import GONE
from speech import SENTENCES, sentences, spoken

MAX_DURATION_S = 30  # the server's SER_MAX_DURATION_S
MAX_UPLOAD_MB = 1  # the server's SER_MAX_UPLOAD_MB
UNUSED_UPLOAD_MAX_AGE_S = 12  # the server's SER_UNUSED_UPLOAD_MAX_AGE_S: short, to see the sweep
SWEEP_WAIT_S = 3 * UNUSED_UPLOAD_MAX_AGE_S  # the age, a sweep interval and a loaded machine's delays


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-wav2vec2"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, calibratable_cnn) -> AppServer:
    settings = {
        "SER_MODELS": f"{tiny_model_dir},{calibratable_cnn}",
        "SER_MAX_DURATION_S": str(MAX_DURATION_S),
        "SER_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        "SER_UNUSED_UPLOAD_MAX_AGE_S": str(UNUSED_UPLOAD_MAX_AGE_S),
    }
    with AppServer.running(settings, tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False)


def predict(client: Client, path: Path, model: str) -> dict:
    return client.predict(audio=handle_file(str(path)), model=model, api_name="/predict")


def test_predict_and_analyse_are_the_documented_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/predict", "/analyse"]
    for endpoint in api["named_endpoints"].values():
        parameters = {parameter["parameter_name"]: parameter for parameter in endpoint["parameters"]}
        assert list(parameters) == ["audio", "model", "calibration_audio", "calibration_prompt"]
        assert parameters["calibration_audio"]["parameter_has_default"]  # optional
        assert parameters["calibration_prompt"]["parameter_default"] == MOODS.name


def test_analyse_gives_the_clis_answer_with_how_far_to_trust_it(server, client, tiny_model_dir, tmp_path):
    """/analyse: what `predict --json` gives for the same file. A tone is no speech to Silero, so
    its answer is unsure whatever the probabilities; a spoken sentence is heard."""
    sentence = tmp_path / "sentence.wav"
    soundfile.write(sentence, spoken(SENTENCES[0]), SAMPLING_RATE)
    tone = write_clip(tmp_path / "tone.wav")
    model = load_model(tiny_model_dir)
    before = set(server.stored_files())
    answers = {}
    for path in (sentence, tone):
        answers[path] = client.predict(handle_file(str(path)), tiny_model_dir, api_name="/analyse")
        [expected] = analyse_files(model, path)
        assert answers[path]["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        assert {key: answers[path][key] for key in ("top", "unsure", "speech_seconds")} == {
            key: expected[key] for key in ("top", "unsure", "speech_seconds")
        }
    assert answers[sentence]["speech_seconds"] > 1.0
    assert answers[tone]["speech_seconds"] == 0.0 and answers[tone]["unsure"] and answers[tone]["top"] is None
    assert answers[tone]["probabilities"] == pytest.approx(predict(client, tone, tiny_model_dir), abs=1e-6)
    assert set(server.stored_files()) - before == set()


def test_predict_with_a_calibration_recording_is_calibrated_for_that_request_only(client, calibratable_cnn, tmp_path):
    mood_lines = tmp_path / "moods.wav"
    soundfile.write(mood_lines, sentences(8, pause_s=0.7), 16_000)
    clip = write_clip(tmp_path / "speech.wav")
    model = load_model(str(calibratable_cnn))
    # /predict reads a calibration recording as the page's first prompt, the mood lines.
    calibrated = model.predict_file(clip, calibration=model.calibrate_recording(load_audio(mood_lines), source=MOODS.source))
    answer = client.predict(
        audio=handle_file(str(clip)), model=str(calibratable_cnn), calibration_audio=handle_file(str(mood_lines)), api_name="/predict"
    )
    assert answer == pytest.approx(calibrated, abs=1e-5)
    assert predict(client, clip, str(calibratable_cnn)) == pytest.approx(model.predict_file(clip), abs=1e-5)
    # The same recording read as the passage (neutral speech) calibrates as the library does then.
    as_passage = model.predict_file(clip, calibration=model.calibrate_recording(load_audio(mood_lines), source=PASSAGE.source))
    assert as_passage != pytest.approx(calibrated, abs=1e-3)
    answer = client.predict(
        handle_file(str(clip)), str(calibratable_cnn), handle_file(str(mood_lines)), PASSAGE.name, api_name="/predict"
    )
    assert answer == pytest.approx(as_passage, abs=1e-5)
    with pytest.raises(AppError, match="Unknown calibration prompt 'shouting'"):
        client.predict(handle_file(str(clip)), str(calibratable_cnn), handle_file(str(mood_lines)), "shouting", api_name="/predict")


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


def test_unusable_audio_is_refused_with_the_librarys_sentence_and_kept_out_of_the_log(server, client, tiny_model_dir, tmp_path):
    """The sentence is the caller's; the server's log, which every visitor's errors share, gets
    neither a traceback nor the upload's name."""
    path = tmp_path / "notes-of-a-visitor.wav"
    path.write_text("not audio at all\n" * 10)
    with pytest.raises(AppError, match="notes-of-a-visitor.wav could not be read as audio"):
        predict(client, path, tiny_model_dir)
    log = server.log_path.read_text()
    assert "notes-of-a-visitor" not in log
    assert "Traceback" not in log


def test_an_unknown_model_is_refused_with_one_sentence(client, tmp_path):
    with pytest.raises(AppError, match="nobody/no-such-model"):
        predict(client, write_clip(tmp_path / "speech.wav"), "nobody/no-such-model")


def test_a_server_folder_named_as_a_model_id_is_not_read_from_its_disk(client, tmp_path):
    """models/ravdess-tess-emovo-cnn is a folder where the server runs, and a well-formed Hub id: sent to
    /predict it is looked up on the Hub only (offline and uncached in the tests)."""
    with pytest.raises(AppError, match=r"'models/ravdess-tess-emovo-cnn' is not \(completely\) in the Hugging Face cache"):
        predict(client, write_clip(tmp_path / "speech.wav"), "models/ravdess-tess-emovo-cnn")


def test_the_duration_limit_comes_from_the_environment(client, tiny_model_dir, tmp_path):
    path = write_clip(tmp_path / "too-long.wav", sampling_rate=SAMPLING_RATE, duration_s=MAX_DURATION_S + 2)
    with pytest.raises(AppError, match=f"the limit is {MAX_DURATION_S} s"):
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


# --- Nothing of a visitor kept ------------------------------------------------------------------



def test_predict_leaves_no_file_of_the_visitor_on_disk(server, tiny_model_dir, tmp_path):
    """Also when callers send the same bytes at once: Gradio stores those at one path."""
    clips = [write_clip(tmp_path / f"speech.{extension}") for extension in ("wav", "mp3", "webm")]
    expected = {clip: load_model(tiny_model_dir).predict_file(clip) for clip in clips}
    callers = [Client(server.url, verbose=False) for _ in range(2)]
    requests = [(caller, clip) for clip in clips for caller in callers for _ in range(2)]
    before = set(server.stored_files())  # earlier tests' uploads that were never used, until swept

    def send(caller_and_clip):
        caller, clip = caller_and_clip
        return caller.predict(handle_file(str(clip)), tiny_model_dir, api_name="/predict")

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, requests))
    for (_, clip), answer in zip(requests, answers):
        assert answer == pytest.approx(expected[clip], abs=1e-6)
    assert set(server.stored_files()) - before == set()


def test_an_upload_is_fetched_back_by_its_visitor_only_and_gone_once_answered(server, tiny_model_dir, tmp_path):
    clip = write_clip(tmp_path / "private.wav", emotion=6)  # bytes no other test uploads
    alice, bob = server.new_visitor(), server.new_visitor()
    assert alice and bob and alice != bob
    uploaded = server.upload(clip, alice)

    assert server.fetch(uploaded, alice).content == clip.read_bytes()  # the visitor's own player
    for stranger in (bob, {}):
        assert server.fetch(uploaded, stranger).status_code == 404
        assert httpx.head(server.url + "gradio_api/file=" + uploaded, cookies=stranger).status_code == 404
    # Knowing the path does not let another visitor analyse the file (or remove it) either.
    assert server.call_predict(uploaded, bob, tiny_model_dir) == ("error", GONE)
    assert Path(uploaded).is_file()

    event, [probabilities] = server.call_predict(uploaded, alice, tiny_model_dir)
    assert event == "complete"
    assert probabilities == pytest.approx(load_model(tiny_model_dir).predict_file(clip), abs=1e-6)
    assert not Path(uploaded).exists() and not Path(uploaded).parent.exists()
    for anyone in (alice, bob, {}):
        assert server.fetch(uploaded, anyone).status_code == 404
    assert server.call_predict(uploaded, alice, tiny_model_dir) == ("error", GONE)  # once: it is gone


def test_uploads_never_used_and_uploads_broken_off_are_swept(server, tmp_path):
    before = set(server.stored_files())
    abandoned = server.upload(write_clip(tmp_path / "abandoned.wav", emotion=2), server.new_visitor())
    break_off_an_upload(server)
    partial = [path for path in set(server.stored_files()) - before if path.parent == server.uploads]
    assert Path(abandoned).is_file() and len(partial) == 1  # Gradio writes an arriving upload there
    deadline = time.monotonic() + SWEEP_WAIT_S
    while server.stored_files() and time.monotonic() < deadline:
        time.sleep(1)
    assert server.stored_files() == [] and not Path(abandoned).exists()


def break_off_an_upload(server: AppServer) -> None:
    """Send the first 100 kB of a 300 kB upload, then hang up, as a closed tab does."""
    boundary = "recording-boundary"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="half.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + b"RIFF" + os.urandom(100_000)
    head = (
        f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {300_000}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.sendall(head + part)
        time.sleep(1)  # the server has written what arrived
