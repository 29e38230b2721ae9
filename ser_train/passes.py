"""Which forward pass runs next when more are asked for than the cores fit.

A server analyses several recordings at once (ser_train.serving), but only a few forward passes
run side by side (`EmotionModel` admits one per core). The others wait here. A plain semaphore
hands a freed slot to whichever thread grabs it first, which is usually the one that just let
it go: a long recording's next batch. A live step's answers then came 25-30 s late (p95) while
seven 2-minute recordings were analysed (benchmarks/live.py measures it).

So every waiting pass is given a time it is due: when it asked, plus as long as the audio it
holds (WAIT_PER_AUDIO_S per second of audio); a freed slot goes to the waiting pass due first.
A live step (3 s of audio) or a short clip then goes ahead of a long recording's batches
(16 s each) that asked at about the same time, and a batch that has waited longer than its
audio lasts goes ahead of anything newer, so long recordings still finish.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Iterator

WAIT_PER_AUDIO_S = 1.0  # seconds a waiting pass gives way, per second of audio it holds


class PassQueue:
    """At most `slots` forward passes at once; the waiting ones go in order of the time they are due."""

    def __init__(self, slots: int, wait_per_audio_s: float = WAIT_PER_AUDIO_S):
        self._free = slots
        self._wait_per_audio_s = wait_per_audio_s
        self._waiting: list[tuple[float, int, threading.Event]] = []  # a heap of (due, arrival, wake)
        self._arrivals = itertools.count()  # breaks ties between passes due at the same time
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def turn(self, audio_s: float) -> Iterator[None]:
        """Wait for a slot for a pass over `audio_s` seconds of audio; hold it inside the block."""
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                wake = None
            else:
                wake = threading.Event()
                due = time.monotonic() + audio_s * self._wait_per_audio_s
                heapq.heappush(self._waiting, (due, next(self._arrivals), wake))
        if wake is not None:
            wake.wait()  # the slot is handed over by the pass that frees it (`_free_slot`)
        try:
            yield
        finally:
            self._free_slot()

    def _free_slot(self) -> None:
        """Hand the slot to the waiting pass due first, or give it back."""
        with self._lock:
            if self._waiting:
                heapq.heappop(self._waiting)[2].set()
            else:
                self._free += 1
