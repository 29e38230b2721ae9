"""`python -m benchmarks`: measure speed, memory and load, print one table, write RESULTS.md.

    python -m benchmarks                          # every section, full size (8 to 31 minutes on 2 cores)
    python -m benchmarks --quick                  # every section, shortened (under 2 minutes): fewer clips
                                                  # and calls, no comparison that no target rests on (Whisper's
                                                  # 30 s window, wav2vec2-base, gradio_client's TLS defaults),
                                                  # one 3-minute recording through /predict's handler, the CNN
                                                  # epoch on a quarter of the fold, live mode's own window and
                                                  # step, a 15 s stream on the page, 4/16/32 sessions for 3 s
    python -m benchmarks --sections latency,features --clips 480
    python -m benchmarks --output /tmp/results.md # keep benchmarks/RESULTS.md as it is

Sections (in this order):
    latency     CPU latency per 4 s clip: bundled CNN (features, model, both), bundled Whisper
                (fp32 and int8; its window, one fitted to the clip, Whisper's 30 s one), wav2vec2-base
    features    feature-extraction throughput over the corpus vs the librosa baseline
    long_audio  1/5/10-minute recordings through the app: wall time, peak memory
    training    one CNN epoch on a real fold; a wav2vec2-base training step on the CPU
    app_load    1/4/16 concurrent /predict callers against local servers in two serving
                configurations; files of visitors left on disk, downloads of them by others
    app_start   import and model load times, resident memory with both bundled models
    live        live mode: speech detection in noise and music, window/step/smoothing, latency,
                simultaneous sessions, agreement with the offline timeline

The machine is shared: every ratio (1 vs all threads, ours vs the baseline) comes from cases
measured in turns within this run. RESULTS.md records the date, the machine and this command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from benchmarks import app_load, app_start, features, latency, live, long_audio, training
from benchmarks.corpus import DEFAULT_CORPUS, PROJECT_ROOT
from benchmarks.report import Row, text_table, write_markdown

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
DEFAULT_TRAINING_RUN = PROJECT_ROOT / "runs" / "cnn-3corpora-channel"  # where the bundled model was trained
LONG_AUDIO_MINUTES = {False: [1.0, 5.0, 10.0], True: [3.0]}  # by --quick (one length: no flatness check)

SECTIONS = {
    "latency": lambda args: latency.run(args.corpus, args.quick),
    "features": lambda args: features.run(args.corpus, args.quick, args.clips),
    "long_audio": lambda args: long_audio.run(args.corpus, args.minutes or LONG_AUDIO_MINUTES[args.quick], args.quick),
    "training": lambda args: training.run(args.corpus, args.training_run, args.quick),
    "app_load": lambda args: app_load.run(args.corpus, args.quick),
    "app_start": lambda args: app_start.run(),
    "live": lambda args: live.run(args.corpus, args.quick, args.live_model),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of: %(default)s")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, clips and minutes")
    parser.add_argument("--clips", type=int, help=f"corpus clips for the features section (default: all; --quick: {features.QUICK_CLIPS})")
    parser.add_argument("--minutes", type=lambda text: [float(m) for m in text.split(",")], help="long-audio lengths, e.g. 1,5,10")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="RAVDESS folder (default %(default)s)")
    parser.add_argument("--training-run", type=Path, default=DEFAULT_TRAINING_RUN, help="a finished CNN run folder to time (default %(default)s)")
    parser.add_argument("--live-model", metavar="PATH_OR_HUB_ID", help="model that judges live mode's settings on actors 21-24; one trained without them (default: the bundled model, which heard them)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown results file (default %(default)s)")
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Row] = []
    notes: list[str] = []
    for name in args.sections:
        print(f"== {name} ...", flush=True)
        start = time.perf_counter()
        section_rows, section_notes = SECTIONS[name](args)
        print(text_table(section_rows), f"\n({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)
        rows += section_rows
        notes += section_notes
    print(text_table(rows))
    command = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])
    write_markdown(args.output, rows, command, notes)
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
