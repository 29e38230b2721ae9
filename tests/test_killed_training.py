"""Training killed by a real signal in mid-run and continued with --resume ends where an
uninterrupted run with the same seed ends, for both model families.

Each run is `python -m ser_train train ...` in its own process on the synthetic corpus. The
interrupted one is sent SIGKILL (a crash, an out-of-memory kill) or SIGTERM (a job scheduler
ending the job) once its first checkpoint exists, and then run again with --resume. The CNN
writes its checkpoint atomically; Trainer (wav2vec2) fills a checkpoint folder file by file, so
for it the test also leaves the half-written folder a kill during the next save would leave.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from ser_train.evaluation import EVAL_RESULTS_FILE
from test_wav2vec2 import TINY_ENCODER

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_ACTORS = "6"  # of the synthetic corpus's six; validation is actor 1, training actors 2-5
SEED = "0"
RUN_TIMEOUT_S = 300  # a run that takes longer is hung, not slow
CHECKPOINT_POLL_S = 0.05
METRIC_TOLERANCE = 0.01
WEIGHT_TOLERANCE = 1e-5
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")

CNN = {
    "arguments": ["cnn", "--epochs", "12"],
    "first_checkpoint": "checkpoints/last.pt",
    "signal": signal.SIGKILL,
}
WAV2VEC2 = {
    # 64 training clips in batches of 8: a checkpoint (checkpoint-8, -16, ...) every 8 steps.
    "arguments": ["wav2vec2", "--train-mode", "encoder", "--epochs", "4", "--batch-size", "8", "--learning-rate", "3e-3"],
    # Trainer writes trainer_state.json last: the first checkpoint is then complete.
    "first_checkpoint": "checkpoint-8/trainer_state.json",
    "signal": signal.SIGTERM,
}
# Toy-sized models gain nothing from a second thread, and on busy shared cores OpenMP's
# spin-waiting threads make every step many times slower (the CNN family sets its own count).
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny randomly initialised wav2vec2 encoder saved like a Hub checkpoint (as test_wav2vec2's)."""
    folder = tmp_path_factory.mktemp("tiny-base")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_ENCODER)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, return_attention_mask=False).save_pretrained(folder)
    return folder


def train_command(family: dict, dataset: Path, output_dir: Path, base: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "ser_train", "train", *family["arguments"]]
    if family is WAV2VEC2:
        command += ["--base", str(base)]
    command += ["--dataset", str(dataset), "--output-dir", str(output_dir), "--test-actors", TEST_ACTORS, "--seed", SEED]
    return command + list(extra)


def run_to_the_end(command: list[str]) -> str:
    finished = subprocess.run(command, cwd=PROJECT_ROOT, env=ENVIRONMENT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return finished.stdout + finished.stderr


def kill_after_first_checkpoint(command: list[str], checkpoint: Path, sent: signal.Signals, log: Path) -> None:
    """Start `command`, wait for `checkpoint` to exist, send the signal, and check it took effect."""
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=ENVIRONMENT, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not checkpoint.exists():
            assert process.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no checkpoint after {RUN_TIMEOUT_S} s:\n{log.read_text()}"
            time.sleep(CHECKPOINT_POLL_S)
        process.send_signal(sent)
        assert process.wait(timeout=RUN_TIMEOUT_S) == -sent, log.read_text()


def results(output_dir: Path) -> dict:
    return json.loads((output_dir / EVAL_RESULTS_FILE).read_text())


def assert_same_result(resumed: Path, uninterrupted: Path) -> None:
    """The same test metrics (within METRIC_TOLERANCE) and the same final weights."""
    expected, got = results(uninterrupted)["test"], results(resumed)["test"]
    for metric in METRICS:
        assert got[metric] == pytest.approx(expected[metric], abs=METRIC_TOLERANCE), metric
    expected_weights, resumed_weights = load_file(uninterrupted / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected_weights.keys() == resumed_weights.keys()
    for name, weights in expected_weights.items():
        torch.testing.assert_close(resumed_weights[name], weights, atol=WEIGHT_TOLERANCE, rtol=0, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(synthetic_ravdess, tiny_base, tmp_path_factory):
    """The output folder of an uninterrupted run of a family, trained on first use."""
    folders: dict[str, Path] = {}

    def run(family: dict) -> Path:
        name = family["arguments"][0]
        if name not in folders:
            folder = tmp_path_factory.mktemp(f"uninterrupted-{name}") / "run"
            run_to_the_end(train_command(family, synthetic_ravdess, folder, tiny_base))
            folders[name] = folder
        return folders[name]

    return run


def leave_a_half_written_checkpoint(output_dir: Path) -> None:
    """What a kill during Trainer's next save leaves: checkpoint-16 without trainer_state.json."""
    half_written = output_dir / "checkpoint-16"
    shutil.rmtree(half_written, ignore_errors=True)  # in case the kill came after it was finished
    half_written.mkdir()
    shutil.copy(output_dir / "checkpoint-8" / "model.safetensors", half_written)


@pytest.mark.slow
@pytest.mark.parametrize("family", [CNN, WAV2VEC2], ids=["cnn", "wav2vec2"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(family, uninterrupted, synthetic_ravdess, tiny_base, tmp_path):
    output_dir = tmp_path / "run"
    command = train_command(family, synthetic_ravdess, output_dir, tiny_base)
    kill_after_first_checkpoint(command, output_dir / family["first_checkpoint"], family["signal"], tmp_path / "killed.log")
    assert not (output_dir / EVAL_RESULTS_FILE).exists()  # killed before the end, not after
    if family is WAV2VEC2:
        # Trainer fills a checkpoint folder file by file: resuming must pass over one a kill cut short.
        leave_a_half_written_checkpoint(output_dir)

    output = run_to_the_end(command + ["--resume"])

    assert "Resuming from" in output
    if family is WAV2VEC2:
        assert f"Resuming from {output_dir / 'checkpoint-8'}" in output
    assert_same_result(output_dir, uninterrupted(family))
