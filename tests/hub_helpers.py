"""Offline stand-ins for the Hugging Face Hub, and tiny models to publish and load.

- `make_tiny_wav2vec2`: a randomly initialised transformers audio classifier, saved exactly as
  a fine-tuned one is (config.json with id2label, model.safetensors, preprocessor_config.json).
- `write_real_eval_results`: eval_results.json + confusion matrix from the model's actual
  predictions on synthetic clips, so cards show numbers that were computed, not typed in.
- `fill_hub_cache`: lays a folder out as huggingface_hub's cache holds a downloaded repo,
  which is what `snapshot_download` serves when offline.
- `HubStandIn`: a local HTTP server answering chosen Hub API routes, so the real
  `huggingface_hub` client runs its real requests (and turns error answers into its real
  exceptions) without a network.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants

from ser_train.audio import SAMPLING_RATE
from ser_train.data import EMOTIONS
from ser_train.evaluation import classification_metrics, eval_results, write_eval_results
from synthetic import synth_clip

TINY_WAV2VEC2 = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(32, 32),
    conv_stride=(4, 4),
    conv_kernel=(8, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    classifier_proj_size=16,
)
ACTORS = (1, 2, 3, 4, 5, 6)
TRAINING_COMMAND = ["python", "-m", "ser_train", "train", "wav2vec2", "--base", "facebook/wav2vec2-base"]


def make_tiny_wav2vec2(folder: Path, labels=EMOTIONS, seed: int = 0, architecture: str = "classifier") -> Path:
    """Save a tiny random wav2vec2 (`classifier` or `pretraining` head) as save_pretrained does."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForPreTraining,
        Wav2Vec2ForSequenceClassification,
    )

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        **TINY_WAV2VEC2,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model_class = Wav2Vec2ForSequenceClassification if architecture == "classifier" else Wav2Vec2ForPreTraining
    model_class(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SAMPLING_RATE, return_attention_mask=False).save_pretrained(folder)
    return folder


def evaluation_clips(actors=ACTORS) -> list[tuple[np.ndarray, int, int]]:
    """(16 kHz waveform, emotion, actor) for one clip per emotion and actor."""
    return [
        (synth_clip(emotion, actor, SAMPLING_RATE, seed=10 * actor + emotion), emotion, actor)
        for actor in actors
        for emotion in range(len(EMOTIONS))
    ]


def write_real_eval_results(model_dir: Path, folds_of_actors: list[list[int]]) -> dict:
    """Evaluate the model in `model_dir` on synthetic clips and write what training writes.

    One actor group is a hold-out evaluation; several are cross-validation folds (the same model
    stands in for every fold model, which is all a card needs).
    """
    from ser_train.inference import load_model

    model = load_model(str(model_dir))
    clips = evaluation_clips(actors=sorted({actor for actors in folds_of_actors for actor in actors}))
    predictions = model.predict_batch([clip for clip, _, _ in clips]).argmax(axis=1)
    folds = []
    for number, test_actors in enumerate(folds_of_actors):
        rows = [i for i, (_, _, actor) in enumerate(clips) if actor in test_actors]
        metrics = classification_metrics([clips[i][1] for i in rows], predictions[rows], list(EMOTIONS))
        validation = folds_of_actors[(number + 1) % len(folds_of_actors)] if len(folds_of_actors) > 1 else [1]
        folds.append({"test_actors": test_actors, "validation_actors": validation, "best_epoch": 2, "metrics": metrics})
    extra = {"labels": list(EMOTIONS)}
    if len(folds) > 1:
        extra["final_model"] = {"actors": list(ACTORS), "epochs": 2}
    results = eval_results("wav2vec2", "xbgoose/ravdess", folds, TRAINING_COMMAND, **extra)
    write_eval_results(model_dir, results)
    training_args = {
        "command": TRAINING_COMMAND,
        "family": "wav2vec2",
        "dataset": "xbgoose/ravdess",
        "splits": [{"test_actors": f["test_actors"], "validation_actors": f["validation_actors"]} for f in folds],
        "hyperparameters": {"base": "facebook/wav2vec2-base", "learning_rate": 3e-5, "epochs": 2},
    }
    (model_dir / "training_args.json").write_text(json.dumps(training_args, indent=2))
    return results


def fill_hub_cache(cache_dir: Path, repo_id: str, files_from: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Lay `files_from`'s files out as the cache holds repo `repo_id` at `commit`.

    huggingface_hub's cache: models--user--name/refs/<branch> holds the commit hash and
    models--user--name/snapshots/<commit>/ the files (symlinks into blobs/ in a real cache;
    plain copies read the same).
    """
    repo_folder = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / commit
    shutil.copytree(files_from, snapshot)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo_folder / "refs" / ref).write_text(commit)
    return snapshot


@dataclass
class Route:
    """An answer: status, JSON body (or a function of the request body giving it), headers."""

    status: int
    body: dict | Callable[[bytes], dict] = field(default_factory=dict)
    headers: dict = field(default_factory=dict)

    def body_for(self, request_body: bytes) -> bytes:
        return json.dumps(self.body(request_body) if callable(self.body) else self.body).encode()


class HubStandIn:
    """A local HTTP server answering like the Hub for the routes given ('GET /api/whoami-v2').

    A route matches a request whose method and path start with it; anything else gets 404.
    `requests` records (method, path) of every request, in order, and `bodies` what each sent.
    """

    def __init__(self, routes: dict[str, Route]):
        self.routes = routes
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                request_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.requests.append((self.command, self.path))
                stand_in.bodies.append(request_body)
                route = stand_in.match(self.command, self.path)
                body = route.body_for(request_body)
                self.send_response(route.status)
                for name, value in {"Content-Type": "application/json", **route.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = _answer

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()  # quick shutdown

    def match(self, method: str, path: str) -> Route:
        for key, route in self.routes.items():
            route_method, route_path = key.split(" ", 1)
            if method == route_method and path.startswith(route_path):
                return route
        return Route(404, {"error": "Not Found"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def online_hub(monkeypatch):
    """`online_hub(routes)` starts a stand-in, makes it the Hub endpoint and goes online."""
    started = []

    def start(routes: dict[str, Route]) -> HubStandIn:
        started.append(HubStandIn(routes))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run offline otherwise
        monkeypatch.setattr(constants, "ENDPOINT", started[-1].url)
        return started[-1]

    yield start
    for stand_in in started:
        stand_in.close()
