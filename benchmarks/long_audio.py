"""Long recordings through the app's handlers: wall time and peak memory for 1, 5 and 10 minutes.

Each measurement runs in a fresh Python process, which imports the app, loads the bundled
model, analyses a 20-second recording once (so lazy imports and first-call allocations are
behind it), resets its peak-RSS mark, and then analyses the long recording. Peak memory must
not grow with the recording's length: the timeline holds a batch of segments at a time.

Three ways through the app are compared:
    whole   `analyse_waveform(model, load_audio(path))`: the recording decoded into memory first
    api     `predict_api(path, "")`: the /predict endpoint
    page    `predict_handler(path, model, "")`: the page, with its waveform and timeline plots

The last two read the file in blocks and never hold it whole.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import write_long_recording
from benchmarks.report import Row

SECTION = "long audio"
WARM_UP_MINUTES = 1 / 3  # 20 s: long enough to take the timeline path (over 6 s)
FLAT_TOLERANCE_MIB = 16.0  # peak growth allowed from the shortest to the longest recording
MODES = {
    "whole": "timeline after decoding the whole file (analyse_waveform + load_audio)",
    "api": "/predict handler (predict_api)",
    "page": "page handler with plots (predict_handler)",
}
QUICK_MODES = ("api",)  # --quick: the /predict handler alone (each mode costs a fresh process per length)
KIB_PER_MIB = 1024


def run_handler(mode: str, path: str) -> None:
    import app
    from ser_train.analysis import analyse_waveform
    from ser_train.audio import load_audio
    from ser_train.inference import DEFAULT_MODEL

    if mode == "whole":
        analyse_waveform(app.models.get(DEFAULT_MODEL), load_audio(path, max_duration_s=app.MAX_DURATION_S))
    elif mode == "api":
        app.predict_api(path, "")
    else:
        status = app.predict_handler(path, DEFAULT_MODEL, "").status
        if status:
            raise RuntimeError(f"the page refused the recording: {status}")


def memory_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status: VmRSS (now) or VmHWM (peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_memory() -> None:
    """Linux resets VmHWM to the current RSS when "5" is written to clear_refs."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(mode: str, path: str, warm_up_path: str) -> dict:
    """In this (fresh) process: seconds and peak memory of analysing `path` the way `mode` says."""
    run_handler(mode, warm_up_path)
    reset_peak_memory()
    before_kib = memory_kib("VmRSS")
    start = time.perf_counter()
    run_handler(mode, path)
    seconds = time.perf_counter() - start
    return {"wall_s": seconds, "peak_mib": memory_kib("VmHWM") / KIB_PER_MIB, "before_mib": before_kib / KIB_PER_MIB}


def measure_in_child(mode: str, path: Path, warm_up_path: Path) -> dict:
    job = [sys.executable, "-m", __spec__.name, "--child", mode, str(path), str(warm_up_path)]
    output = subprocess.run(job, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.splitlines()[-1])


def run(corpus: Path, minutes: list[float], quick: bool) -> tuple[list[Row], list[str]]:
    from ser_train.inference import DEFAULT_MODEL

    rows = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-long-") as folder:
        warm_up = write_long_recording(corpus, WARM_UP_MINUTES, Path(folder) / "warm-up.wav")
        recordings = {length: write_long_recording(corpus, length, Path(folder) / f"{length:g}min.wav") for length in minutes}
        for mode in QUICK_MODES if quick else MODES:
            description = MODES[mode]
            results = {length: measure_in_child(mode, path, warm_up) for length, path in recordings.items()}
            growth = {length: result["peak_mib"] - result["before_mib"] for length, result in results.items()}
            spread = growth[max(minutes)] - growth[min(minutes)]
            for length, result in results.items():
                last = length == max(minutes) and len(minutes) > 1  # flatness needs two lengths
                rows.append(
                    Row(
                        SECTION,
                        f"{description}, {length:g} min",
                        f"{result['wall_s']:.1f} s; peak RSS {result['peak_mib']:.0f} MiB "
                        f"(+{growth[length]:.0f} MiB over the loaded app)",
                        f"peak growth {min(minutes):g} -> {max(minutes):g} min < {FLAT_TOLERANCE_MIB:g} MiB "
                        f"(got {spread:+.0f} MiB)" if last else "",
                        spread < FLAT_TOLERANCE_MIB if last else None,
                    )
                )
    notes = [
        "Long audio: 16 kHz 16-bit mono WAV made of RAVDESS clips back to back, analysed with the "
        f"default model ({Path(DEFAULT_MODEL).name}); each figure from a fresh process (imports, model load and a 20 s warm-up run "
        "first, then the peak-RSS mark VmHWM is reset). '+N MiB' is the peak minus the RSS just "
        "before the analysis. A 10-minute 16 kHz float32 waveform is 37 MiB. /predict and the page "
        "read the file in 30 s blocks and hold one batch of 4 segments; the growth they still show "
        "is glibc's heap keeping freed tensor memory (run with MALLOC_MMAP_THRESHOLD_=65536, which "
        "returns large blocks to the system at once, both grew by 9 MiB here, at twice the wall time).",
    ]
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description="one long-audio measurement (used by python -m benchmarks)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "WARM_UP_PATH"), required=True)
    mode, path, warm_up_path = parser.parse_args().child
    print(json.dumps(measure(mode, path, warm_up_path)))


if __name__ == "__main__":
    main()
