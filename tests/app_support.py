"""Helpers for the app tests: a tiny real model folder, speech-like recordings, a running app server."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import torch
from torchcodec.encoders import AudioEncoder

from ser_train.audio import SAMPLING_RATE
from ser_train.calibration_prompts import MOODS
from ser_train.data import EMOTIONS
from synthetic import synth_clip

ANGRY = EMOTIONS.index("angry")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 180  # importing torch, transformers and gradio on a busy 2-core machine
REQUEST_TIMEOUT_S = 120  # an analysis on a busy 2-core machine; longer is a hang


def make_tiny_wav2vec2(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised, very small wav2vec2 emotion classifier saved as a model folder.

    It is a real `transformers` audio-classification model with our eight labels, so the whole
    loading and prediction path runs; its predictions are arbitrary but deterministic.
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_labels=len(EMOTIONS),
        id2label=dict(enumerate(EMOTIONS)),
        label2id={emotion: index for index, emotion in enumerate(EMOTIONS)},
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SAMPLING_RATE).save_pretrained(folder)
    return folder


def utterances(emotions: list[int], speech_s: float, pause_s: float, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Synthetic utterances (one per emotion index) of `speech_s` each, separated by silent pauses."""
    pause = np.zeros(int(pause_s * sampling_rate), dtype=np.float32)
    parts = [pause]
    for number, emotion in enumerate(emotions):
        parts += [synth_clip(emotion, actor=1, sampling_rate=sampling_rate, seed=number, duration_s=speech_s), pause]
    return np.concatenate(parts)


def write_clip(path: Path, sampling_rate: int = 48_000, channels: int = 1, duration_s: float = 2.0, emotion: int = ANGRY) -> Path:
    """A synthetic utterance encoded in the format of `path`'s extension (FFmpeg via torchcodec)."""
    clip = torch.from_numpy(synth_clip(emotion, actor=1, sampling_rate=sampling_rate, seed=7, duration_s=duration_s))
    samples = torch.stack([clip, 0.8 * clip])[:channels]
    AudioEncoder(samples, sample_rate=sampling_rate).to_file(path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppServer:
    """`python app.py` in a subprocess on a free localhost port, with the given environment.

    Its log goes to `folder`/app.log, and Gradio keeps uploads (recordings included) under
    `folder`/uploads until the server removes them (ser_train.uploads).
    """

    def __init__(self, env: dict[str, str], folder: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "app.log"
        self.uploads = folder / "uploads"
        environment = {
            **os.environ,
            **env,
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_TEMP_DIR": str(self.uploads),
        }
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=PROJECT_ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"app.py did not answer within {SERVER_START_TIMEOUT_S} s:\n{self.log_path.read_text()}")

    @classmethod
    @contextlib.contextmanager
    def running(cls, env: dict[str, str], folder: Path) -> Iterator["AppServer"]:
        """A started server, ready to answer, stopped on leaving the block (also on errors)."""
        with cls.all_running([(env, folder)]) as (server,):
            yield server

    @classmethod
    @contextlib.contextmanager
    def all_starting(cls, settings: list[tuple[dict[str, str], Path]]) -> Iterator[list["AppServer"]]:
        """Servers of (environment, folder) pairs, started side by side and not yet waited for
        (work that measures no time can overlap their imports: call `wait_until_ready` before
        using one); all stopped on leaving the block (also on errors)."""
        with contextlib.ExitStack() as stack:
            servers = []
            for env, folder in settings:
                servers.append(cls(env, folder))
                stack.callback(servers[-1].stop)
            yield servers

    @classmethod
    @contextlib.contextmanager
    def all_running(cls, settings: list[tuple[dict[str, str], Path]]) -> Iterator[list["AppServer"]]:
        """Servers of (environment, folder) pairs, started side by side so that their imports
        overlap, each ready to answer; all stopped on leaving the block (also on errors)."""
        with cls.all_starting(settings) as servers:
            for server in servers:
                server.wait_until_ready()
            yield servers

    def new_visitor(self) -> dict[str, str]:
        """The cookies a new visitor gets with the page."""
        return dict(httpx.get(self.url).cookies)

    def upload(self, path: Path, cookies: dict[str, str]) -> str:
        """Upload `path` as the page does, as the visitor of `cookies`; the server's path of it."""
        with path.open("rb") as file:
            response = httpx.post(self.url + "gradio_api/upload", files={"files": (path.name, file, "audio/wav")}, cookies=cookies)
        response.raise_for_status()
        return response.json()[0]

    def fetch(self, uploaded: str, cookies: dict[str, str]) -> httpx.Response:
        """GET an upload by URL, as the page's player does."""
        return httpx.get(self.url + "gradio_api/file=" + uploaded, cookies=cookies)

    def call_predict(self, uploaded: str, cookies: dict[str, str], model: str = "") -> tuple[str, object]:
        """/predict through Gradio's plain HTTP API on a file already uploaded: ("complete",
        outputs) or ("error", the sentence)."""
        file = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
        # Every input in order, the optional ones too: the plain HTTP API fills in no defaults.
        inputs = [file, model, None, MOODS.name]
        started = httpx.post(self.url + "gradio_api/call/predict", json={"data": inputs}, cookies=cookies)
        started.raise_for_status()
        answer = httpx.get(
            self.url + f"gradio_api/call/predict/{started.json()['event_id']}", cookies=cookies, timeout=REQUEST_TIMEOUT_S
        )
        fields = dict(line.split(":", 1) for line in answer.text.splitlines() if line.startswith(("event:", "data:")))
        event, data = fields["event"].strip(), json.loads(fields["data"])
        return event, data["error"] if event == "error" else data

    def stored_files(self) -> list[Path]:
        """Every file in the server's upload folder now."""
        return [path for path in self.uploads.rglob("*") if path.is_file()]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
