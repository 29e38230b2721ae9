"""Timing helpers: interleaved repetitions, so competing work on a shared machine hits all cases alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

MS_PER_S = 1000.0


@dataclass(frozen=True)
class Case:
    """Something to time, and the number of torch threads to time it with."""

    run: Callable[[], object]
    threads: int


def time_in_turns(cases: dict[str, Case], rounds: int, calls_per_turn: int) -> dict[str, np.ndarray]:
    """Seconds per call of each case, the cases taking turns for `rounds` rounds.

    Each turn sets the case's thread count and makes one untimed call (after a change of thread
    count the first call pays for resizing the thread pool), then `calls_per_turn` timed calls.
    Load from other processes comes and goes; taking turns spreads it over every case, so the
    ratios between cases are fair even when the absolute figures are not.
    """
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            torch.set_num_threads(case.threads)
            case.run()
            for _ in range(calls_per_turn):
                start = time.perf_counter()
                case.run()
                seconds[name].append(time.perf_counter() - start)
    return {name: np.array(values) for name, values in seconds.items()}


def median_ms(seconds: np.ndarray) -> float:
    return float(np.median(seconds)) * MS_PER_S


def p95_ms(seconds: np.ndarray) -> float:
    return float(np.percentile(seconds, 95)) * MS_PER_S


def latency_text(seconds: np.ndarray) -> str:
    return f"{median_ms(seconds):.1f} ms (p95 {p95_ms(seconds):.1f} ms)"
