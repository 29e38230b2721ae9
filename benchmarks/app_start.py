"""The app's start: import time, each bundled model's load time, and resident memory after each.

Everything is measured in one fresh Python process (`python -m benchmarks.app_start --child`),
as a Space starts: import the app (which builds the page), then load the bundled models in the
order the picker offers them; RSS is the process's resident memory after each step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.long_audio import KIB_PER_MIB, memory_kib
from benchmarks.report import Row

SECTION = "app start"


def measure() -> list[dict]:
    """In this (fresh) process: seconds and RSS after importing the app and after each model load."""
    start = time.perf_counter()
    import app

    steps = [{"step": "import app (page built)", "seconds": time.perf_counter() - start, "rss_mib": memory_kib("VmRSS") / KIB_PER_MIB}]
    for name in app.models.offered:
        start = time.perf_counter()
        app.models.get(name)
        steps.append(
            {"step": f"load {Path(name).name}", "seconds": time.perf_counter() - start, "rss_mib": memory_kib("VmRSS") / KIB_PER_MIB}
        )
    return steps


def run() -> tuple[list[Row], list[str]]:
    job = [sys.executable, "-m", __spec__.name, "--child"]
    steps = json.loads(subprocess.run(job, check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
    rows = [Row(SECTION, step["step"], f"{step['seconds']:.1f} s; RSS {step['rss_mib']:.0f} MiB after it") for step in steps]
    notes = ["App start: one fresh process; the models load in the picker's order (best measured UA first)."]
    return rows, notes


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    print(json.dumps(measure()))
