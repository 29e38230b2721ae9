"""Calibrate to my voice in headless Chromium: a calibration recording through the fake microphone,
then a second recording, and the page's answer is the library's calibrated answer for exactly the
audio the server received; neither recording stays on the server. See test_browser.py for the
fake microphone and what arrives."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from app_support import ANGRY, AppServer
from ser_train.audio import load_audio
from ser_train.calibration_prompts import MOOD_LINE, PASSAGE
from speech import sentences
from synthetic import synth_clip
from test_browser import (
    CHROMIUM, CHROMIUM_FLAGS, FAKE_MICROPHONE_RATE, analyse_and_read_result, fetch_received, screenshot,
    uploaded,
)  # fmt: skip

pytestmark = pytest.mark.browser

CALIBRATION_RECORDING_S = 21.0  # the passage: the page asks for 15-30 s and refuses under 10 s
SECOND_RECORDING_S = 4.0


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory) -> Path:
    """What the fake microphone plays, looping: six sentences with pauses (the passage read), then
    a synthetic angry clip."""
    passage = sentences(6, pause_s=0.8, sampling_rate=FAKE_MICROPHONE_RATE)
    angry = synth_clip(ANGRY, actor=1, sampling_rate=FAKE_MICROPHONE_RATE, seed=99, duration_s=3.0)
    path = tmp_path_factory.mktemp("microphone") / "voice.wav"
    soundfile.write(path, np.concatenate([passage, angry, np.zeros(FAKE_MICROPHONE_RATE // 2, np.float32)]), FAKE_MICROPHONE_RATE)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, calibratable_cnn):
    with AppServer.running({"SER_MODELS": str(calibratable_cnn)}, tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture(scope="module")
def page(server, calibratable_cnn, microphone_wav):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone_wav}"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(server.url)
        page.wait_for_selector("#speech")
        page.locator("#model input").click()
        page.get_by_role("option", name=calibratable_cnn.name).click()
        yield page
        browser.close()


def record(page, elem_id: str, seconds: float) -> str:
    """Record `seconds` into the audio component `elem_id`; the URL of what the server received."""
    page.locator(f"#{elem_id} button.record-button").click()
    stop = page.locator(f"#{elem_id} button.stop-button")
    stop.wait_for(state="visible")
    time.sleep(seconds)
    return uploaded(page, stop.click, elem_id)


def test_calibrated_page_answers_as_the_library_does(page, server, calibratable_cnn, tmp_path):
    from ser_train.inference import load_model

    page.get_by_text("Calibrate to my voice").click()
    page.get_by_text(MOOD_LINE).wait_for()  # the mood lines come first
    assert "Calibration is off" in page.locator("#calibration-status").inner_text()
    # The other prompt's instructions replace the mood lines' (the passage is what is recorded here).
    page.locator("#calibration-prompt").get_by_text(PASSAGE.label).click()
    page.get_by_text("When the sunlight strikes raindrops").wait_for()

    calibration_wav = fetch_received(page, record(page, "calibration-speech", CALIBRATION_RECORDING_S), tmp_path / "calm.wav")
    page.locator("#calibrate").click()
    page.get_by_text("Calibration is on").wait_for(timeout=60_000)
    assert PASSAGE.label.lower() in page.locator("#calibration-status").inner_text()
    assert server.stored_files() == []  # only its statistics stay, in this tab's session

    clip_wav = fetch_received(page, record(page, "speech", SECOND_RECORDING_S), tmp_path / "speech.wav")
    shown = analyse_and_read_result(page)
    screenshot(page, "calibrated-result")
    assert server.stored_files() == []

    model = load_model(str(calibratable_cnn))
    calibration = model.calibrate_recording(load_audio(calibration_wav), source="neutral")
    probabilities = model.predict_file(clip_wav, calibration=calibration)
    top = max(probabilities, key=probabilities.get)
    assert shown == (top, f"{probabilities[top]:.0%}")
    assert soundfile.info(calibration_wav).duration > 15
    # Both recordings reach the server at the models' rate (the calibration came at 44.1 kHz, 2.8 times the bytes).
    assert soundfile.info(calibration_wav).samplerate == soundfile.info(clip_wav).samplerate == 16_000

    page.locator("#reset-calibration").click()
    page.get_by_text("Calibration is off").wait_for()
