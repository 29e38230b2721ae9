"""The page in headless Chromium: upload a file, record from a (fake) microphone, see the emotion.

Chromium's fake media stream plays a WAV file as the microphone. The browser records it as
WebM/Opus and uploads a 16 kHz WAV, so the page's answer is checked against the library's answer
for exactly what the server received (fetched back as the page's own player fetches it, the one
client allowed to; once analysed it is gone from the server, while the player still plays it). That recording is also checked against the source: its
loudness contour and level match only when the page's raw-capture script has switched off the
browser's call filters (automatic gain control alone lifts the level by several dB).
Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import soundfile
from scipy.signal import correlate

from app_support import PROJECT_ROOT, AppServer, make_tiny_wav2vec2
from conftest import REAL_RAVDESS
from ser_train.audio import SAMPLING_RATE, load_audio
from ser_train.inference import BUNDLED_MODELS, DEFAULT_MODEL, load_model, measured_ua
from ser_train.precision import DEFAULT_PRECISION
from ser_train.uploads import UPLOAD_ROUTE
from speech import sentences, write_sentence

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "browser"
FAKE_MICROPHONE_RATE = 48_000  # Hz, what a real microphone delivers
CLEAR_CUT_PROBABILITY = 0.8  # a model this sure should not change its mind over an Opus round trip
RESULT_TIMEOUT_MS = 60_000  # model loading and analysis on a busy 2-core machine
# Measured here (10 ms loudness envelopes lined up to 1 ms): raw capture 0.975 (synthetic) /
# 0.994-0.9996 (RAVDESS) correlation at 0.0 dB, with two full-suite runs in a dozen at 0.948
# (the fake capture stumbling); with the call filters on 0.15 / 0.975 at +2 / +16 dB. So the
# correlation catches the filters on the synthetic clip and the level catches them on speech.
# Opus keeps the loudness contour of speech but not its waveform, so samples are not compared.
RAW_CAPTURE_MIN_ENVELOPE_CORRELATION = 0.9
RAW_CAPTURE_MAX_GAIN_DB = 1.0
ENVELOPE_FRAME = 160  # samples: 10 ms at 16 kHz
ENVELOPE_HOP = 16  # samples: 1 ms, so the recording is lined up with the source to within 1 ms
PHONE_VIEWPORT = {"width": 390, "height": 844}  # CSS pixels of a common phone
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip


@pytest.fixture(scope="module")
def model_name(tmp_path_factory) -> str:
    """The bundled model once it is there, a tiny wav2vec2 until then."""
    if Path(DEFAULT_MODEL).is_dir():
        return DEFAULT_MODEL
    return str(make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-wav2vec2"))


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory, model_name) -> Path:
    """The file the fake microphone plays and the tests upload (48 kHz WAV).

    With the bundled model and the real corpus at hand: the RAVDESS clip among a few whose
    emotion the model is surest of. Otherwise a sentence spoken by espeak-ng, speech to the
    voice-activity model, so that the page names an emotion.
    """
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    if not plays_real_speech(model_name):
        return write_sentence(path, sampling_rate=FAKE_MICROPHONE_RATE)
    model = load_model(model_name, precision=DEFAULT_PRECISION)
    candidates = sorted(REAL_RAVDESS.glob("Actor_0[12]/03-01-*-02-01-01-*.*"))  # strong intensity
    clearest = max(candidates, key=lambda clip: max(model.predict_file(clip).values()))
    soundfile.write(path, load_audio(clearest, sampling_rate=FAKE_MICROPHONE_RATE), FAKE_MICROPHONE_RATE)
    return path


def plays_real_speech(model_name: str) -> bool:
    """The microphone plays a real RAVDESS clip with the bundled model, when the corpus is at hand."""
    return model_name == DEFAULT_MODEL and REAL_RAVDESS.is_dir()


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_name):
    with AppServer.running({"SER_MODELS": model_name}, tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture(scope="module")
def browser(speech_wav):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={speech_wav}%noloop"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server, model_name):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("#speech")
    label = Path(model_name).name
    if model_name != DEFAULT_MODEL:
        page.locator("#model input").click()
        page.get_by_role("option", name=label).click()
    yield page
    page.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def uploaded(page, send, elem_id: str = "speech") -> str:
    """Do `send` (give the upload box a file, or stop a recording) and wait until the server holds
    the audio and the player has it; the URL of the file the server received.

    The Play button appears before a recording has been uploaded, and pressing Analyse then sends
    no audio at all. The player links to no file (it has no Download button), so the upload's own
    response says where the file went.
    """
    with page.expect_response(lambda response: UPLOAD_ROUTE in response.url and response.request.method == "POST") as upload:
        send()
    [path] = upload.value.json()
    page.locator(f'#{elem_id} button[aria-label="Play"]').wait_for()
    return urljoin(page.url, f"gradio_api/file={path}")


def upload(page, file) -> str:
    """Give the page's upload box `file` (a path, or Playwright's dict of name, type and bytes) and
    wait until the server holds it (`uploaded`); the URL of the file the server received."""
    page.locator('#speech button[aria-label="Upload file"]').click()
    return uploaded(page, lambda: page.locator("#speech input[type=file]").set_input_files(file))


def cleared_while_analysed(page, recording: Path) -> None:
    """Upload `recording`, press Analyse, and clear it at once, while it is being analysed."""
    upload(page, recording)
    page.locator("#analyse").click()
    page.locator('#speech button[aria-label="Clear"]').click()


def fetch_received(page, url: str, destination: Path) -> Path:
    """What the server received at `url`, fetched with this page's cookies (as its player does)."""
    response = page.request.get(url)
    assert response.ok, response.status
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(response.body())
    return destination



def playing_from_memory(page, elem_id: str = "speech") -> bool:
    """Press Play: whether the player's audio plays from the browser's own copy (a blob: URL)."""
    page.locator(f'#{elem_id} button[aria-label="Play"]').first.click()
    page.wait_for_timeout(1000)
    return page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id} *`)].flatMap((element) =>
            element.shadowRoot ? [...element.shadowRoot.querySelectorAll("audio")] : element.tagName === "AUDIO" ? [element] : []
        ).some((audio) => audio.src.startsWith("blob:") && audio.currentTime > 0 && !audio.error)""",
        elem_id,
    )


def analyse_and_read_result(page) -> tuple[str, str]:
    """Press Analyse; the top emotion and its confidence as the page shows them."""
    page.locator("#analyse").click()
    heading, status = page.locator("#summary h2"), page.locator("#status p")
    heading.or_(status).first.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert not status.is_visible(), status.inner_text()
    match = re.search(r"(?:unsure: )?(\w+)(?: ·)? (\d+%)", heading.inner_text())  # sure, or unsure between two
    assert match, heading.inner_text()
    return match.group(1), match.group(2)


def library_verdict(model_name: str, path: Path) -> tuple[str, str]:
    probabilities = load_model(model_name, precision=DEFAULT_PRECISION).predict_file(path)
    top = max(probabilities, key=probabilities.get)
    return top, f"{probabilities[top]:.0%}"


def test_uploaded_file_shows_the_librarys_emotion(page, model_name, speech_wav):
    upload(page, speech_wav)
    # The player offers no Download or Share: both would fetch a file the server removes once analysed.
    assert page.locator('#speech button[aria-label="Download"], #speech button[aria-label="Share"], #speech a[download]').count() == 0
    shown = analyse_and_read_result(page)
    page.locator("#audio-plot img, #audio-plot canvas").first.wait_for()
    screenshot(page, "upload-result")
    # A screen reader is told what the figure is (Gradio's own words for it were "undefined
    # plot…") and hears the answer and refusals as they come.
    assert page.locator("#audio-plot img").get_attribute("alt").startswith("Waveform and mel spectrogram plot")
    assert all(page.locator(f"#{area}").get_attribute("aria-live") == "polite" for area in ("status", "summary"))
    # On a phone the figure keeps a readable width and scrolls sideways, not shrunk to its text's third.
    page.set_viewport_size(PHONE_VIEWPORT)
    figure_width, frame_width = page.locator("#audio-plot .matplotlib").evaluate("frame => [frame.scrollWidth, frame.clientWidth]")
    assert figure_width >= 640 > PHONE_VIEWPORT["width"] > frame_width
    screenshot(page, "upload-result-phone")
    assert shown == library_verdict(model_name, speech_wav)
    shown_lines = page.locator("#probabilities").inner_text().splitlines()
    assert sum(re.fullmatch(r"\d+%", line) is not None for line in shown_lines) == 8  # all eight emotions listed
    # The bars carry no heading of their own: an unsure answer's top emotion is not printed large there.
    assert shown_lines.count(shown[0]) == 1, shown_lines
    # Another upload in its place takes the answer with it (a QA pass read an old answer beside it).
    page.set_viewport_size({"width": 1280, "height": 900})
    upload(page, speech_wav)
    page.locator("#summary h2").wait_for(state="detached", timeout=RESULT_TIMEOUT_MS)
    assert analyse_and_read_result(page) == shown  # and answered, the server keeps none of it (the next tests check)


def test_an_analysed_recording_is_gone_from_the_server_and_no_other_visitor_could_fetch_it(
    page, browser, server, model_name, speech_wav
):
    url = upload(page, speech_wav)
    assert page.request.get(url).body() == speech_wav.read_bytes()
    stranger = browser.new_context()  # another visitor: a browser profile of their own
    try:
        assert stranger.request.get(url).status == 404
        assert analyse_and_read_result(page) == library_verdict(model_name, speech_wav)
        assert server.stored_files() == []
        assert stranger.request.get(url).status == 404 and page.request.get(url).status == 404
    finally:
        stranger.close()
    assert playing_from_memory(page)  # the page's player still has it
    page.locator("#analyse").click()
    page.get_by_text("That recording is no longer on the server").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert "Compare with a second model" in page.locator("#status").inner_text()
    assert page.locator("#summary h2").is_visible()  # its answer stays: the page still holds that recording
    assert "Traceback" not in page.content()
    assert "Recordings and uploads are not stored" in page.locator("#privacy").inner_text()
    # Cleared, the recording takes its answer with it (a QA pass read an old answer beside a new upload).
    page.locator('#speech button[aria-label="Clear"]').click()
    page.locator("#summary h2").wait_for(state="detached", timeout=RESULT_TIMEOUT_MS)
    assert not page.locator("#status p").is_visible() and not page.locator("#audio-plot img").is_visible()


def test_an_answer_for_a_recording_cleared_while_it_was_analysed_is_never_shown(page, server, tmp_path):
    """A review found the old answer arriving beside a new upload when the recording was changed
    while it was analysed (clearing the page's results alone did not stop it)."""
    minute = tmp_path / "minute.wav"
    soundfile.write(minute, sentences(20, pause_s=0.5), SAMPLING_RATE)  # about a minute: seconds to analyse
    cleared_while_analysed(page, minute)
    deadline = time.monotonic() + RESULT_TIMEOUT_MS / 1000
    while server.stored_files() and time.monotonic() < deadline:  # removed once analysed
        time.sleep(0.2)
    assert server.stored_files() == []
    page.wait_for_timeout(2000)  # the answer's way to the page, had it been sent
    assert page.locator("#summary h2").count() == 0 and not page.locator("#audio-plot img").is_visible()
    assert "Error" not in page.locator("#probabilities").inner_text()


def test_analyse_pressed_while_an_earlier_analysis_runs_answers_the_new_recording(page, server, model_name, speech_wav, tmp_path):
    """A QA pass cleared a long recording being analysed, uploaded a short clip and pressed
    Analyse: Gradio dropped the press (an event already pending), and the page stayed blank."""
    long = tmp_path / "long.wav"
    soundfile.write(long, sentences(40, pause_s=0.5), SAMPLING_RATE)  # about two minutes: seconds to analyse
    cleared_while_analysed(page, long)
    upload(page, speech_wav)
    assert any(path.name == long.name for path in server.stored_files())  # still being analysed
    assert analyse_and_read_result(page) == library_verdict(model_name, speech_wav)
    assert server.stored_files() == []


@pytest.mark.parametrize("extension", ["webm", "mp4"])
def test_a_file_the_browser_types_as_video_is_analysed(page, model_name, tmp_path, extension):
    """Browsers type a .webm (a browser recorder's) or .mp4 file as video, which Gradio's audio box
    refused ("Invalid file type"); the page's script hands it over typed as audio."""
    recording = write_sentence(tmp_path / f"speech.{extension}")
    upload(page, {"name": recording.name, "mimeType": f"video/{extension}", "buffer": recording.read_bytes()})
    assert analyse_and_read_result(page) == library_verdict(model_name, recording)


def test_a_webm_file_dropped_on_the_box_is_analysed(page, model_name, tmp_path):
    """The same for a file dragged onto the box, which Gradio checks by the same type."""
    recording = write_sentence(tmp_path / "speech.webm")
    page.locator('#speech button[aria-label="Upload file"]').click()
    drop_target = page.locator("#speech").get_by_text("Drop Audio Here")
    drop = """(target, bytes) => {
        const files = new DataTransfer();
        files.items.add(new File([new Uint8Array(bytes)], "speech.webm", {type: "video/webm"}));
        target.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true, composed: true, dataTransfer: files}));
    }"""
    uploaded(page, lambda: drop_target.evaluate(drop, list(recording.read_bytes())))
    assert analyse_and_read_result(page) == library_verdict(model_name, recording)


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast of two CSS "rgb(r, g, b)" colours."""

    def luminance(colour: str) -> float:
        channels = [int(value) / 255 for value in re.findall(r"\d+", colour)[:3]]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_the_picker_says_what_the_picked_model_learned_from(page, model_name):
    """The line under the picker follows the pick: the list's names clip on a phone, and the
    page's description speaks of the default model only."""
    other = next(name for name in BUNDLED_MODELS if name != model_name)
    before, after = (f"UA (balanced accuracy) {measured_ua(name):.0%} on corpora it never trained on" for name in (model_name, other))
    picker = page.locator("#model")
    assert "Learned from RAVDESS, TESS, EMOVO" in picker.inner_text() and before in picker.inner_text()
    picker.locator("input").click()
    page.get_by_role("option", name=Path(other).name).click()
    picker.get_by_text(after).wait_for(timeout=RESULT_TIMEOUT_MS)
    assert before not in picker.inner_text()
    # Readable: the WCAG contrast of its text on the page is at least 4.5:1 (the theme's grey gave 2.5:1).
    text, behind = picker.locator(".info-text").evaluate(
        """info => {
            let element = info;  // the nearest element with a background of its own, or the canvas's white
            while (element && /^rgba\(.*, 0\)$/.test(getComputedStyle(element).backgroundColor)) element = element.parentElement;
            return [getComputedStyle(info).color, element ? getComputedStyle(element).backgroundColor : "rgb(255, 255, 255)"];
        }"""
    )
    assert contrast_ratio(text, behind) >= 4.5, (text, behind)
    # A screen reader reads the line with the list: it is the input's description.
    described_by = picker.locator("input").get_attribute("aria-describedby")
    assert described_by and after in page.locator(f"#{described_by}").inner_text()
    page.locator("#model-id textarea, #model-id input").first.fill("someone/their-model")  # a typed id wins
    picker.get_by_text("The typed id someone/their-model is used").wait_for(timeout=RESULT_TIMEOUT_MS)


def test_bad_input_shows_a_sentence_not_a_traceback(page, tmp_path):
    notes = tmp_path / "notes.wav"
    notes.write_text("not a recording\n" * 50)
    page.locator("#analyse").click()
    status = page.locator("#status p")
    status.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert "No audio yet" in status.inner_text()
    page.locator('#speech button[aria-label="Upload file"]').click()
    page.locator("#speech input[type=file]").set_input_files(notes)
    page.wait_for_timeout(1000)  # the upload settles (there is nothing to play)
    page.locator("#analyse").click()
    page.get_by_text("notes.wav could not be read as audio").wait_for(timeout=RESULT_TIMEOUT_MS)
    screenshot(page, "bad-input")
    assert "Traceback" not in page.content()


def test_microphone_recording_is_raw_and_shows_the_librarys_emotion(page, server, model_name, speech_wav):
    page.locator("#speech button.record-button").click()
    stop = page.locator("#speech button.stop-button")
    stop.wait_for(state="visible")
    time.sleep(soundfile.info(speech_wav).duration + 1.0)  # the fake microphone plays it once, then silence
    # Kept in test-artifacts, to listen to when this fails.
    received = fetch_received(page, uploaded(page, stop.click), SCREENSHOTS / "microphone-received.wav")
    shown = analyse_and_read_result(page)
    screenshot(page, "microphone-result")

    assert shown == library_verdict(model_name, received)
    assert soundfile.info(received).samplerate == SAMPLING_RATE  # the browser resampled as asked
    correlation, gain_db = envelope_match(load_audio(received), load_audio(speech_wav))
    assert correlation > RAW_CAPTURE_MIN_ENVELOPE_CORRELATION and abs(gain_db) < RAW_CAPTURE_MAX_GAIN_DB
    # A confident verdict on real speech must survive the Opus round trip. The synthetic stand-in
    # (used when the corpus is absent) is outside what the models learned, so a confident answer
    # on it means nothing and may flip; only the page-equals-library check above applies to it.
    source = load_model(model_name, precision=DEFAULT_PRECISION).predict_file(speech_wav)
    if plays_real_speech(model_name) and max(source.values()) >= CLEAR_CUT_PROBABILITY:
        assert shown[0] == max(source, key=source.get)

    settings = page.evaluate(
        """async () => {
            const stream = await navigator.mediaDevices.getUserMedia({audio: true});
            const settings = stream.getAudioTracks()[0].getSettings();
            stream.getTracks().forEach((track) => track.stop());
            return settings;
        }"""
    )
    assert (settings["echoCancellation"], settings["noiseSuppression"], settings["autoGainControl"]) == (False, False, False)


def envelope_match(recorded: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    """(correlation, gain in dB) of the recording's loudness envelope against the source's,
    where the two line up best. The recording may start a little after the source (the fake
    microphone was already playing: its first milliseconds are missing) or before it."""
    recorded_envelope, source_envelope = loudness_envelope(recorded), loudness_envelope(source)
    # recorded_envelope[lag + i] lines up with source_envelope[i]
    lag = int(np.argmax(correlate(recorded_envelope, source_envelope, mode="full"))) - (len(source_envelope) - 1)
    aligned = recorded_envelope[max(lag, 0) :]
    source_envelope = source_envelope[max(-lag, 0) :]
    overlap = min(len(aligned), len(source_envelope))
    aligned, source_envelope = aligned[:overlap], source_envelope[:overlap]
    correlation = float(np.corrcoef(aligned, source_envelope)[0, 1])
    gain_db = 10 * np.log10(np.mean(aligned**2) / np.mean(source_envelope**2))
    return correlation, float(gain_db)


def loudness_envelope(waveform: np.ndarray) -> np.ndarray:
    """RMS level of 10 ms frames every 1 ms: overlapping frames let the two envelopes line up
    to within 1 ms, where whole 10 ms steps could leave them up to 5 ms apart."""
    energy = np.concatenate([[0.0], np.cumsum(waveform.astype(np.float64) ** 2)])
    starts = np.arange(0, len(waveform) - ENVELOPE_FRAME + 1, ENVELOPE_HOP)
    return np.sqrt((energy[starts + ENVELOPE_FRAME] - energy[starts]) / ENVELOPE_FRAME)
