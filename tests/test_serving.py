"""The server's model registry: one load per model across threads, typed names to the Hub only,
and the cores shared out between passes."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from app_support import make_tiny_wav2vec2
from ser_train import serving
from ser_train.errors import HubError
from ser_train.inference import DEFAULT_MODEL, EmotionModel, load_model, passes_at_once
from ser_train.precision import FP32
from ser_train.serving import ModelRegistry


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-wav2vec2"))


@pytest.fixture
def counted_loads(monkeypatch) -> list[tuple[str, bool]]:
    """(name, hub_only) of every load the registry asks for; the loads themselves are real."""
    loads = []

    def counting_load(name, precision=FP32, hub_only=False):
        loads.append((name, hub_only))
        return load_model(name, precision=precision, hub_only=hub_only)

    monkeypatch.setattr(serving, "load_model", counting_load)
    return loads


def test_a_model_loads_once_and_is_shared_across_threads(tiny_model_dir, counted_loads):
    models = ModelRegistry((DEFAULT_MODEL, tiny_model_dir))
    results = []
    threads = [threading.Thread(target=lambda: results.append(models.get(tiny_model_dir))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counted_loads == [(tiny_model_dir, False)]  # an offered folder, loaded as a folder
    assert len(results) == 4 and all(model is results[0] for model in results)
    assert models.loaded == (tiny_model_dir,)


def test_a_failed_load_is_retried_on_the_next_request(counted_loads):
    models = ModelRegistry((DEFAULT_MODEL,))
    for _ in range(2):
        with pytest.raises(HubError, match="user/model"):
            models.get("user/model")
    assert counted_loads == [("user/model", True), ("user/model", True)]
    assert models.loaded == ()


def test_a_typed_name_of_a_server_folder_goes_to_the_hub_only(tiny_model_dir, tmp_path, monkeypatch, counted_loads):
    """`models/tiny` is a folder in the server's working directory and a well-formed Hub id: typed
    by a visitor it is looked up in the (empty, offline) Hub cache, never read from the disk."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny")
    models = ModelRegistry((DEFAULT_MODEL, tiny_model_dir))
    assert models.resolve("models/tiny") == "models/tiny"
    with pytest.raises(HubError, match=r"^'models/tiny' is not \(completely\) in the Hugging Face cache"):
        models.get("models/tiny")
    assert counted_loads == [("models/tiny", True)] and models.loaded == ()


@pytest.mark.parametrize("typed", ["/etc", "../models", "~/.cache", "a/b/c"])
def test_what_is_no_hub_id_is_refused_before_any_load(typed, counted_loads):
    with pytest.raises(HubError, match=f"'{typed}' is not a Hub model id"):
        ModelRegistry((DEFAULT_MODEL,)).resolve(typed)
    assert counted_loads == []


def test_empty_means_the_first_offered_model_and_offered_names_pass(tiny_model_dir):
    models = ModelRegistry((tiny_model_dir, DEFAULT_MODEL))
    assert models.resolve("  ") == tiny_model_dir and models.resolve(None) == tiny_model_dir
    assert models.resolve(DEFAULT_MODEL) == DEFAULT_MODEL
    # A /predict caller names an offered folder as the page shows it, not by the server's path.
    assert models.resolve(Path(DEFAULT_MODEL).name) == DEFAULT_MODEL
    assert models.resolve(Path(tiny_model_dir).name) == tiny_model_dir


def test_offered_models_put_the_default_first_and_name_each_once(tiny_model_dir):
    offered = serving.offered_models([tiny_model_dir, DEFAULT_MODEL, tiny_model_dir])
    assert offered[0] == DEFAULT_MODEL and offered[-1] == tiny_model_dir
    assert len(offered) == len(set(offered))


def test_passes_run_side_by_side_when_each_runs_on_fewer_threads_than_there_are_cores():
    """Sized when the model is made: on 1 thread per pass, as many passes at once as cores (two
    passes here meet inside the forward function); on every core, one pass at a time."""
    if serving.SERVING_CORES < 2:
        pytest.skip("one core: one pass at a time either way")
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert passes_at_once() == serving.SERVING_CORES
        inside_together = threading.Barrier(2, timeout=10)

        def forward(waveforms):
            inside_together.wait()  # raises BrokenBarrierError if the other pass never gets in
            return np.zeros((len(waveforms), 1))

        model = EmotionModel("two-at-once", "test", ["neutral"], forward)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: model.predict_batch([np.zeros(16_000, np.float32)]), range(2)))
        assert [result.shape for result in results] == [(1, 1), (1, 1)]
        torch.set_num_threads(serving.SERVING_CORES)
        assert passes_at_once() == 1
    finally:
        torch.set_num_threads(threads_before)


def test_the_requests_taken_at_once_leave_gradio_worker_threads_for_live_steps():
    """More requests than passes at once, so that a short clip's passes take turns with a long
    recording's (benchmarks/app_load.py), but never every thread Gradio runs handlers on."""
    import inspect

    import gradio as gr

    assert serving.GRADIO_WORKER_THREADS == inspect.signature(gr.Blocks.launch).parameters["max_threads"].default
    assert serving.ANALYSES_AT_ONCE < serving.REQUESTS_AT_ONCE
    assert serving.REQUESTS_AT_ONCE * len(serving.ANALYSIS_GROUPS) <= serving.GRADIO_WORKER_THREADS // 2
