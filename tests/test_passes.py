"""Which forward pass goes next (ser_train.passes), with threads standing in for requests."""

from __future__ import annotations

import threading
import time

from ser_train.passes import PassQueue

TIMEOUT_S = 10.0  # far beyond any wait here: a thread that needs it has hung


def wait_until(condition) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def waiting(queue: PassQueue) -> int:
    with queue._lock:
        return len(queue._waiting)


class Passes:
    """Threads that each take a turn of `queue` for some audio, noting the order they got in."""

    def __init__(self, queue: PassQueue):
        self.queue = queue
        self.order: list[str] = []
        self.threads: list[threading.Thread] = []

    def ask(self, name: str, audio_s: float) -> None:
        """Start a pass and return once it waits for its turn."""
        before = waiting(self.queue)

        def take_turn() -> None:
            with self.queue.turn(audio_s):
                self.order.append(name)

        thread = threading.Thread(target=take_turn)
        thread.start()
        self.threads.append(thread)
        wait_until(lambda: waiting(self.queue) == before + 1)

    def finish(self) -> list[str]:
        for thread in self.threads:
            thread.join(TIMEOUT_S)
        return self.order


def holding_the_only_slot(queue: PassQueue) -> threading.Event:
    """Occupy `queue`'s one slot until the returned event is set."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        with queue.turn(1.0):
            held.set()
            release.wait(TIMEOUT_S)

    threading.Thread(target=hold).start()
    assert held.wait(TIMEOUT_S)
    return release


def test_a_freed_slot_goes_to_the_shorter_pass_that_asked_at_about_the_same_time():
    """A live step (3 s of audio) goes ahead of a long recording's batch (16 s) asked for just
    before it; a plain semaphore let such a step wait 26 s behind seven long recordings."""
    queue = PassQueue(1)
    release = holding_the_only_slot(queue)
    passes = Passes(queue)
    passes.ask("long recording's batch", 16.0)
    passes.ask("another batch", 16.0)
    passes.ask("live step", 3.0)
    release.set()
    assert passes.finish() == ["live step", "long recording's batch", "another batch"]


def test_a_pass_that_waited_longer_than_its_audio_lasts_goes_ahead_of_newer_ones():
    """Shorter passes first would let a stream of them hold a long recording back for ever."""
    queue = PassQueue(1, wait_per_audio_s=0.01)  # a 10 s batch is due 0.1 s after it asked
    release = holding_the_only_slot(queue)
    passes = Passes(queue)
    passes.ask("long recording's batch", 10.0)
    time.sleep(0.2)
    passes.ask("live step", 1.0)  # due 0.01 s after it asked: later than the batch
    release.set()
    assert passes.finish() == ["long recording's batch", "live step"]


def test_no_more_passes_run_at_once_than_there_are_slots():
    queue = PassQueue(2)
    inside, most_inside = 0, 0
    count_lock = threading.Lock()

    def one_pass(audio_s: float) -> None:
        nonlocal inside, most_inside
        with queue.turn(audio_s):
            with count_lock:
                inside += 1
                most_inside = max(most_inside, inside)
            time.sleep(0.005)
            with count_lock:
                inside -= 1

    threads = [threading.Thread(target=one_pass, args=(float(number % 5),)) for number in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert most_inside <= 2 and inside == 0
    assert waiting(queue) == 0 and queue._free == 2  # every slot given back
