"""What a server of the models needs besides its page: the shared models, one live stream per
visitor, and how many analyses run at once on the cores it has. The app (app.py), its tests and
the benchmarks use this module; what the server keeps of visitors' files is `ser_train.uploads`.

    configure_torch()                               # once, before the first model is loaded
    models = ModelRegistry(offered_models(["user/other"]))
    name = models.resolve(picked_or_typed)          # "" is the default; a typed id is a Hub id
    model = models.get(name)                        # loaded once, warmed up, shared by every request

Cores and threads: a forward pass of the Whisper default spread over 2 torch threads takes 0.6
of the time it takes on 1 on an idle machine, but the two threads wait for each other, so the
cores do more work per clip, and on a busy machine (a shared Space, or callers on the same
cores) a pass on 2 threads was up to 11 times slower than on 1 (RESULTS.md). A server therefore
runs each pass on TORCH_THREADS_PER_PASS threads and as many passes side by side as that leaves
cores for (ANALYSES_AT_ONCE); `EmotionModel` admits that many passes at once, and the page takes
more requests than that at once (REQUESTS_AT_ONCE), whose passes take turns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import joblib
import numpy as np
import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ser_train.audio import SAMPLING_RATE
from ser_train.errors import HubError
from ser_train.hub import split_revision
from ser_train.inference import DEFAULT_MODEL, EmotionModel, bundled_models_by_ua, load_model, passes_at_once
from ser_train.precision import DEFAULT_PRECISION
from ser_train.live import WINDOW_S, LiveStream

# The cores this process may use: joblib (loky) reads the container's CPU quota and affinity,
# where os.cpu_count() reports every core of the host (a Space's 2 vCPUs run on a larger host).
SERVING_CORES = joblib.cpu_count()
TORCH_THREADS_PER_PASS = int(os.environ.get("SER_TORCH_THREADS", 1))
ANALYSES_AT_ONCE = passes_at_once(TORCH_THREADS_PER_PASS)
# Requests a server handles at once: more than the passes its cores fit (EmotionModel admits
# ANALYSES_AT_ONCE at once), so that a short recording's passes take turns with a long one's
# instead of waiting for it to end. Behind two 10-minute recordings a 3.5 s clip waited 25.1 s
# with 2 request slots, 1.1 s with 8, and the long ones took as long (27.9 / 28.3 s against 26.7);
# 16 callers of /predict got 9.6 requests/s with 2 slots, 10.7 and 8.8 in two runs with 8: the
# same within what runs differ by (benchmarks/app_load.py). The page's visitors and programs
# calling the API have REQUESTS_AT_ONCE each (ANALYSIS_GROUPS), so that no flood of API calls
# keeps a visitor of the page waiting for a slot (a QA pass's 4 s clip waited 65 s behind eight
# /predict callers' 5-minute recordings). Together at most half of Gradio's worker threads, so
# that live steps and the page's small events always find one.
REQUESTS_PER_PASS = 4
GRADIO_WORKER_THREADS = 40  # gr.Blocks.launch's max_threads, left at its default
ANALYSIS_GROUPS = ("page", "api")  # Gradio concurrency groups: the page's events, the API's
REQUESTS_AT_ONCE = min(REQUESTS_PER_PASS * ANALYSES_AT_ONCE, GRADIO_WORKER_THREADS // 2 // len(ANALYSIS_GROUPS))
WARM_UP_NOISE_RMS = 0.01  # faint noise: a pass on it sets up torch's kernels, whatever it answers


def configure_torch() -> None:
    """Run every later forward pass of this process on TORCH_THREADS_PER_PASS threads.

    Call it before the first pass: request threads take torch's thread count when they first
    compute, and each model sizes its admission of parallel passes when it is loaded.
    """
    torch.set_num_threads(TORCH_THREADS_PER_PASS)


def offered_models(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The models a server offers: the default, the other bundled models (the best measured
    first), then `extra` (an operator's folders or Hub ids), each once."""
    return tuple(dict.fromkeys((DEFAULT_MODEL, *bundled_models_by_ua(), *extra)))


class ModelRegistry:
    """The models a server answers with, each loaded once, warmed up and shared by every request.

    Offered models load as they are named (a folder of the server or a Hub id); any other name is
    what a visitor typed and is looked up on the Hub (or its cache) only, so no visitor can make
    the server read a folder of its own disk.
    """

    def __init__(self, offered: Iterable[str]):
        self.offered = tuple(offered)
        self._models: dict[str, EmotionModel] = {}
        self._loading = threading.Lock()

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._models)

    def resolve(self, name: str | None) -> str:
        """The model to use for what a visitor picked or typed: empty means the first offered
        (the default); an offered folder may be named by its folder's name, as the page shows it
        (a caller of /predict does not know where the server keeps it); besides the offered
        models only Hub ids (user/name[@revision]) are accepted."""
        name = (name or "").strip()
        if not name:
            return self.offered[0]
        if name in self.offered:
            return name
        folders = {Path(offered).name: offered for offered in self.offered if Path(offered).is_dir()}
        if name in folders:
            return folders[name]
        try:
            validate_repo_id(split_revision(name)[0])
        except HFValidationError:
            raise HubError(f"'{name}' is not a Hub model id; type it as user/name or user/name@revision.") from None
        return name

    def get(self, name: str) -> EmotionModel:
        """The model called `name`, loaded on first use; a SERError if it cannot be loaded (the
        next request tries again)."""
        model = self._models.get(name)
        if model is None:
            with self._loading:  # one load at a time, so two first requests for a model load it once
                model = self._models.get(name)
                if model is None:
                    model = self._models[name] = warmed_up(load_model(name, precision=DEFAULT_PRECISION, hub_only=name not in self.offered))
        return model


def warmed_up(model: EmotionModel) -> EmotionModel:
    """`model` after one forward pass on a live window of faint noise: the first pass sets up
    torch's kernels (seconds on this CPU), which would otherwise delay a visitor's first answer,
    long enough for a live microphone to drop its first chunks."""
    noise = np.random.default_rng(0).normal(0, WARM_UP_NOISE_RMS, round(WINDOW_S * SAMPLING_RATE))
    model.predict_batch([noise.astype(np.float32)])
    return model


class LiveSessions:
    """Each browser session's live stream, keyed by Gradio's session hash.

    A stream belongs to the session that opened it and is dropped when its recording stops or
    its page closes (the page's unload event), so nothing of a visitor outlives their visit;
    each stream's own memory is bounded (ser_train.live).
    """

    def __init__(self):
        self._streams: dict[str, LiveStream] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._streams)

    def start(self, session: str, model: EmotionModel) -> LiveStream:
        with self._lock:
            stream = self._streams[session] = LiveStream(model)
        return stream

    def get(self, session: str) -> LiveStream | None:
        return self._streams.get(session)

    def close(self, session: str) -> LiveStream | None:
        with self._lock:
            return self._streams.pop(session, None)
