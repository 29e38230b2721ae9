"""`python -m ser_train`: one subcommand per job, each a thin layer over a library function.

Errors the user can act on (`SERError`) are printed as one sentence with exit code 2; the
heavy imports (torch, transformers) happen inside the subcommands so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from ser_train.errors import SERError

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.run(args) or 0
    except SERError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ser_train",
        description="Speech emotion recognition on RAVDESS: load data, train, evaluate, predict, publish.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    data = commands.add_parser("data", help="load a RAVDESS source and report what is in it")
    add_dataset_argument(data)
    data.add_argument("--include-song", action="store_true", help="also load song clips (vocal channel 02)")
    data.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    data.set_defaults(run=run_data)

    return parser


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    from ser_train.data import DEFAULT_DATASET

    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        metavar="PATH_OR_HUB_ID",
        help=f"a folder in the RAVDESS layout (Actor_XX/03-01-...wav) or a Hub dataset id (default {DEFAULT_DATASET})",
    )


def run_data(args: argparse.Namespace) -> int:
    from ser_train.data import load_ravdess, summarize

    summary = summarize(load_ravdess(args.dataset, include_song=args.include_song))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"rows           {summary['rows']}")
    print(f"actors         {summary['actors']}")
    print(f"sampling rate  {summary['sampling_rate']} Hz")
    print(f"duration       {summary['duration_s'] / 60:.1f} min ({summary['duration_s']} s)")
    print("clips per emotion:")
    for emotion, count in summary["emotions"].items():
        print(f"  {emotion:<10} {count}")
    return 0
