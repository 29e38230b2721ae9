"""The app under load: N concurrent gradio_client callers of /predict on a local server.

`python app.py` runs on a free 127.0.0.1 port (the tests' `AppServer`) with the bundled model.
Each caller has its own `Client` and sends its share of the requests one after another, so N
requests are in flight at once; every answer is compared with the server's first answer for the
same clip, and a request that fails, times out or answers differently counts as an error.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.corpus import PROJECT_ROOT
from benchmarks.report import Row
from benchmarks.timing import MS_PER_S

SECTION = "app load"
CONCURRENCY = (1, 4, 16)
REQUESTS = {False: 48, True: 16}  # per concurrency level, by --quick
REQUEST_TIMEOUT_S = 120.0  # a request still unanswered then is an error, not a hang
SAME_ANSWER_TOLERANCE = 1e-6


def run(corpus: Path, quick: bool) -> tuple[list[Row], list[str]]:
    from gradio_client import Client, handle_file

    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    from app_support import AppServer

    clip = next(path for path in sorted(corpus.glob("Actor_*/*")) if path.is_file())
    requests = REQUESTS[quick]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-app-") as folder:
        with AppServer.running({}, Path(folder)) as server:
            first = Client(server.url, verbose=False).predict(handle_file(str(clip)), "", api_name="/predict")
            expected = np.array(list(first.values()))
            for callers in CONCURRENCY:
                clients = [Client(server.url, verbose=False) for _ in range(callers)]
                latencies, errors, seconds = load(clients, handle_file(str(clip)), expected, requests // callers)
                rows.append(
                    Row(
                        SECTION,
                        f"{callers} concurrent caller{'s' if callers > 1 else ''}, {len(latencies) + errors} requests",
                        f"{len(latencies) / seconds:.1f} requests/s; p50 {np.median(latencies) * MS_PER_S:.0f} ms, "
                        f"p95 {np.percentile(latencies, 95) * MS_PER_S:.0f} ms; {errors} errors",
                        "0 errors",
                        errors == 0,
                    )
                )
    notes = [
        f"App load: `python app.py` on 127.0.0.1 with the bundled model; /predict on {clip.name} "
        "(a RAVDESS Opus clip, uploaded with each request) through gradio_client, one Client per "
        "caller. Latency is per request as the caller sees it (upload, queue, analysis, answer). "
        "Gradio's queue runs one /predict at a time (its default concurrency limit), so more callers "
        "mean longer waits, not more throughput.",
    ]
    return rows, notes


def load(clients, audio, expected: np.ndarray, requests_per_client: int) -> tuple[list[float], int, float]:
    """Every client sends its requests in turn, all clients at once: (latencies, errors, wall seconds)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def caller(client) -> None:
        nonlocal errors
        for _ in range(requests_per_client):
            start = time.perf_counter()
            try:
                answer = client.submit(audio, "", api_name="/predict").result(timeout=REQUEST_TIMEOUT_S)
                correct = np.allclose(list(answer.values()), expected, atol=SAME_ANSWER_TOLERANCE)
            except Exception:  # any failure counts, whatever its kind
                correct = False
            with lock:
                if correct:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

    threads = [threading.Thread(target=caller, args=(client,)) for client in clients]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - start
