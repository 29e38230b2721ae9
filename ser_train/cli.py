"""`python -m ser_train`: one subcommand per job, each a thin layer over a library function.

Errors the user can act on (`SERError`) are printed as one sentence with exit code 2; the
heavy imports (torch, transformers) happen inside the subcommands so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from ser_train.errors import SERError
from ser_train.precision import DEFAULT_PRECISION, FP32, PRECISIONS

EXIT_USER_ERROR = 2
# ser_train.inference.DEFAULT_MODEL, named without importing torch (tested equal), so that
# --help stays instant.
DEFAULT_MODEL_HELP = "default: the bundled model that measured best, models/six-corpora-whisper-base"
# ser_train.calibration_prompts.CALIBRATION_PROMPTS' names and ser_train.data.DEFAULT_DATASET,
# for the same reason (tested equal).
CALIBRATION_PROMPT_NAMES = ("moods", "passage")
DEFAULT_DATASET = "xbgoose/ravdess"


def number_type(kind: type, minimum: float, maximum: float | None = None, above: bool = False):
    """An argparse type: a `kind` number of at least `minimum` (above it, with `above`) and at most
    `maximum`, so a bad setting is refused in one line before any data is loaded."""
    bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
    bound += f" and at most {maximum:g}" if maximum is not None else ""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < minimum or (above and value == minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{text} is not allowed: it must be {bound}")
        return value

    return parse


POSITIVE_INT = number_type(int, 1)
COUNT = number_type(int, 0)  # how many views or directions: 0 turns them off
POSITIVE_FLOAT = number_type(float, 0, above=True)
NON_NEGATIVE_FLOAT = number_type(float, 0)
SHARE = number_type(float, 0, maximum=1)


def path_or_name(text: str) -> str:
    """An argparse type for a file, folder, model or dataset: an empty one is refused, since a shell
    variable that was never set would otherwise quietly mean the default model or this folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("it is empty (an unset shell variable?): name a file, folder or Hub id")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:  # said with the usage line of the command they were given to, not the top one
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unrecognized)}")
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.run(args) or 0
    except SERError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # the machine's refusal (a read-only or full disk, a file for a folder)
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        # On a line of its own (a progress bar may be half drawn), with how to go on after a training.
        started = hasattr(args, "resume") and (Path(args.output_dir) / "training_args.json").is_file()
        resuming = " Run the same command with --resume to go on from its last checkpoint." if started else ""
        print(f"\nInterrupted.{resuming}", file=sys.stderr)
        return 130


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command `args` were parsed for (`train`'s family's for a training)."""
    for chosen in (getattr(args, "command", None), getattr(args, "family", None)):
        subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if chosen is None or not subcommands:
            break
        parser = subcommands[0].choices[chosen]
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ser_train",
        description="Speech emotion recognition on RAVDESS: load data, train, evaluate, predict, publish.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    data = commands.add_parser("data", help="load a RAVDESS source and report what is in it")
    add_dataset_argument(data)
    data.add_argument("--include-song", action="store_true", help="also load song clips (vocal channel 02)")
    data.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    data.set_defaults(run=run_data)

    train = commands.add_parser("train", help="train a model family on actor-disjoint splits")
    families = train.add_subparsers(title="families", metavar="FAMILY", required=True)
    cnn = families.add_parser("cnn", help="CNN over handcrafted frame-level features")
    add_training_arguments(cnn)
    add_epoch_arguments(cnn)
    cnn.add_argument(
        "--calibrated-share",
        type=SHARE,
        metavar="P",
        help="share of training clips seen through a speaker calibration from random other clips of "
        "their speaker, so one model serves calibrated and uncalibrated use (default 0: off)",
    )
    add_channel_views_argument(cnn, "clip", "extract features of (each costs one more feature pass over the corpus)", default=2)
    cnn.set_defaults(run=run_train, family="cnn")
    # The families' defaults below, passed or stated in a help text, are named without importing
    # the families, for the same reason (tested equal).
    wav2vec2 = families.add_parser("wav2vec2", help="fine-tune a pretrained speech encoder (transformers)")
    add_training_arguments(wav2vec2)
    add_epoch_arguments(wav2vec2)
    wav2vec2.add_argument(
        "--base",
        type=path_or_name,
        default="facebook/wav2vec2-base",
        metavar="MODEL_ID_OR_PATH",
        help="pretrained wav2vec2/HuBERT/WavLM checkpoint (Hub id or local folder; default %(default)s)",
    )
    wav2vec2.add_argument(
        "--train-mode",
        choices=("head", "encoder"),
        default="encoder",
        help="head: encoder frozen (fast, for CPUs); encoder: fine-tune the transformer layers, "
        "convolutional feature encoder frozen (the usual recipe; default)",
    )
    wav2vec2.set_defaults(run=run_train, family="wav2vec2")
    whisper = families.add_parser("whisper", help="classification head on a frozen Whisper encoder (transformers)")
    add_training_arguments(whisper)
    whisper.add_argument(
        "--base",
        type=path_or_name,
        metavar="PATH_OR_HUB_ID",
        help="Whisper checkpoint (Hub id or local folder; default: the bundled whisper-base encoder, models/whisper-base-encoder)",
    )
    whisper.add_argument(
        "--window-s",
        type=POSITIVE_INT,
        metavar="SECONDS",
        help="input window in seconds (default 5; Whisper's own is 30): shorter clips are padded, longer ones cut",
    )
    whisper.add_argument("--l2", type=NON_NEGATIVE_FLOAT, help="L2 penalty of the linear classifier (default 0.03)")
    whisper.add_argument(
        "--augmented-views",
        type=COUNT,
        metavar="N",
        help="waveform-augmented copies of every clip to encode (speed, gain, noise, cropping; each "
        "costs one more encoder pass over the corpus); only training clips' copies are used (default 2)",
    )
    whisper.add_argument(
        "--cropped-views",
        type=COUNT,
        metavar="N",
        help="random stretches of 0.5 s to the window of every clip's speech to encode (each costs one more "
        "encoder pass over the corpus); only training clips' stretches are used (default 2)",
    )
    add_channel_views_argument(whisper, "clip's speech", "encode (each costs one more encoder pass over the corpus)", default=2)
    whisper.add_argument(
        "--calibrated-views",
        type=COUNT,
        metavar="N",
        help="copies of the training clips with each speaker calibrated on a random sample of their "
        "own clips, so one model serves calibrated and uncalibrated use (default 4; 0: off)",
    )
    whisper.add_argument(
        "--speaker-directions",
        type=COUNT,
        metavar="K",
        help="remove from what the head sees the K directions in which the training speakers' voices "
        "differ most (capped at one less than the training speakers; default 0: none)",
    )
    whisper.set_defaults(run=run_train, family="whisper")

    evaluate = commands.add_parser("evaluate", help="test a saved model on held-out actors: the training metrics, for any model")
    evaluate.add_argument("--model", required=True, type=path_or_name, metavar="PATH_OR_HUB_ID", help="model folder, bundled model's name or Hub id user/name[@revision]")
    add_dataset_argument(evaluate)
    who = evaluate.add_mutually_exclusive_group()
    who.add_argument("--test-actors", metavar="LIST", help="RAVDESS actors to test on, e.g. 21,22,23,24 or 21-24")
    who.add_argument(
        "--held-out-corpora",
        action="store_true",
        help="test every speaker of each corpus given, as corpora the model never trained on: the "
        "leave-one-corpus-out entries (ECE, neutral calibration, 1 s and 2 s of speech)",
    )
    who.add_argument(
        "--test-speakers",
        metavar="NAMES",
        help="speakers of a manifest corpus to test on, comma-separated (default: its manifest's "
        "test split, else every speaker)",
    )
    evaluate.add_argument("--no-calibration", action="store_true", help="skip the speaker-calibration protocol")
    add_precision_argument(evaluate, FP32, "default %(default)s, as training measures; int8 to measure what the app serves")
    evaluate.add_argument(
        "--output-dir",
        type=path_or_name,
        help="where eval_results.json and confusion_matrix.png go (default: the model folder; refused "
        "when the folder already holds results, e.g. from training). With --held-out-corpora, a model "
        "folder that holds training's results gets outside_eval_results.json beside them, which its "
        "card then shows",
    )
    evaluate.set_defaults(run=run_evaluate)

    predict = commands.add_parser("predict", help="emotion probabilities for audio files")
    predict.add_argument("files", nargs="+", type=path_or_name, metavar="FILE", help="audio files (WAV, FLAC, MP3, OGG/Opus, M4A, WebM)")
    predict.add_argument("--model", type=path_or_name, metavar="PATH_OR_HUB_ID", help=f"model folder, bundled model's name or Hub id user/name[@revision] ({DEFAULT_MODEL_HELP})")
    predict.add_argument("--json", action="store_true", help="print one JSON list with an object per file")
    predict.add_argument(
        "--calibration",
        type=path_or_name,
        metavar="FILE",
        help="the same speaker saying a calibration prompt (see --calibration-prompt): calibrate the model to that voice first",
    )
    predict.add_argument(
        "--calibration-prompt",
        choices=CALIBRATION_PROMPT_NAMES,
        default="moods",
        help="what --calibration holds: 'moods' (default), one line said calm, happy, sad and angry, twice round; "
        "'passage', 15-30 s of calm reading",
    )
    add_precision_argument(predict, DEFAULT_PRECISION, "default %(default)s, as the app (SER_PRECISION sets both)")
    predict.set_defaults(run=run_predict)

    live = commands.add_parser("live", help="play an audio file as if it came live from a microphone and print the live answers")
    live.add_argument("file", type=path_or_name, metavar="FILE", help="audio file (WAV, FLAC, MP3, OGG/Opus, M4A, WebM)")
    live.add_argument("--model", type=path_or_name, metavar="PATH_OR_HUB_ID", help=f"model folder, bundled model's name or Hub id user/name[@revision] ({DEFAULT_MODEL_HELP})")
    live.add_argument("--json", action="store_true", help="print one JSON object: the answers with their time stamps, and the summary")
    live.add_argument("--realtime", action="store_true", help="feed the file at the speed it plays (default: as fast as it is answered)")
    add_precision_argument(live, DEFAULT_PRECISION, "default %(default)s, as the app (SER_PRECISION sets both)")
    live.set_defaults(run=run_live)

    push = commands.add_parser("push", help="publish a trained model folder to the Hugging Face Hub in one commit")
    push.add_argument("--model-dir", required=True, type=path_or_name, help="the output folder of a training run")
    push.add_argument("--repo-id", required=True, metavar="USER/NAME", help="Hub model repository (created if needed)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", metavar="BRANCH", help="push to this branch (created if needed) instead of main")
    push.set_defaults(run=run_push)

    card = commands.add_parser("card", help="(re)render a model folder's card (README.md) from its eval_results.json (and outside_eval_results.json)")
    card.add_argument("--model-dir", required=True, type=path_or_name, help="the output folder of a training run")
    card.add_argument("--repo-id", metavar="USER/NAME", help="where the model is published, for the usage example")
    card.set_defaults(run=run_card)

    return parser


def add_channel_views_argument(parser: argparse.ArgumentParser, what: str, cost: str, default: int) -> None:
    parser.add_argument(
        "--channel-views",
        type=COUNT,
        metavar="N",
        help=f"copies of every {what} as if recorded in another room, microphone band and codec to {cost}; "
        f"only training clips' copies are used (default {default})",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    parser.add_argument("--output-dir", required=True, type=path_or_name, help="where the model, metrics and checkpoints go")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test-actors", metavar="LIST", help="hold-out test actors of a RAVDESS folder given alone, e.g. 21,22,23,24 or 21-24")
    split.add_argument("--test-speakers", metavar="NAMES", help="hold-out test speakers of manifest corpora or several corpora, comma-separated as in a manifest (corpus/speaker where a name is in two)")
    split.add_argument("--folds", type=int, metavar="K", help="K-fold actor-disjoint cross-validation, then a final model on all actors")
    parser.add_argument(
        "--folds-within",
        metavar="CORPUS",
        help="with --folds K and several corpora: cross-validate over this corpus's speakers only (its folder "
        "name, e.g. ravdess-opus-16k), the other corpora always training",
    )
    parser.add_argument(
        "--leave-one-corpus-out",
        action="store_true",
        help="with several corpora: also test each corpus with a model trained on the others (temperature "
        "fitted without it too), and train the published model on all of them",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir from its checkpoints")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--push-to-hub", action="store_true", help="push the trained model to the Hub at the end")
    parser.add_argument("--hub-model-id", metavar="USER/NAME", help="repository for --push-to-hub")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")


def add_epoch_arguments(parser: argparse.ArgumentParser) -> None:
    """For the families trained by gradient descent over epochs (not the Whisper head's convex fit)."""
    parser.add_argument("--epochs", type=POSITIVE_INT, help="maximum epochs (family default if omitted)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, help="batch size (family default if omitted)")
    parser.add_argument("--learning-rate", type=POSITIVE_FLOAT, help="peak learning rate (family default if omitted)")


def add_precision_argument(parser: argparse.ArgumentParser, default: str, default_help: str) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help=f"int8 runs a Whisper model's encoder quantised: about 3x faster, but 1.5 points of UA lower and "
        f"another top emotion on 9%% of clips (other families run at fp32 either way); {default_help}",
    )


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        type=path_or_name,
        nargs="+",
        default=[DEFAULT_DATASET],
        metavar="PATH_OR_HUB_ID",
        help="a folder in the RAVDESS layout (Actor_XX/03-01-...wav), a RAVDESS Hub dataset id "
        f"(default {DEFAULT_DATASET}), or a corpus folder with manifest.csv and label_map.json; "
        "several are combined, speaker-disjoint across them",
    )


def run_train(args: argparse.Namespace) -> int:
    import importlib

    from ser_train.data import parse_actor_list
    from ser_train.training import runner

    if args.push_to_hub and not args.hub_model_id:
        raise SERError("--push-to-hub needs --hub-model-id USER/NAME.")
    if args.push_to_hub:  # a token or network problem is told before the training, not after it
        from ser_train.hub import check_can_push

        check_can_push(args.hub_model_id)
    family = importlib.import_module(f"ser_train.training.{args.family}").from_args(args)
    test_actors = parse_actor_list(args.test_actors) if args.test_actors else None
    test_speakers = split_names(args.test_speakers) if args.test_speakers else None
    if args.folds is not None and args.folds < 2:
        raise SERError("--folds K needs K >= 2.")
    # With none of --test-actors, --test-speakers and --folds, a manifest's split column decides.
    runner.run(
        family,
        dataset_sources(args),
        args.output_dir,
        test_actors,
        args.folds,
        resume=args.resume,
        test_speakers=test_speakers,
        folds_within=args.folds_within,
        leave_one_corpus_out=args.leave_one_corpus_out,
    )
    from ser_train.model_card import write_model_card

    # The folder's README.md is its card from the start, so a copy or an upload of the folder by
    # other means than `push` carries the measured figures, not a placeholder.
    print(f"Wrote {write_model_card(args.output_dir, repo_id=args.hub_model_id)}")
    if args.push_to_hub:
        from ser_train.hub import push_model_dir

        print(push_model_dir(args.output_dir, args.hub_model_id, private=args.private))
    return 0


def dataset_sources(args: argparse.Namespace) -> str | list[str]:
    """One source as a string (as the runner always recorded it), several as a list."""
    return args.dataset[0] if len(args.dataset) == 1 else list(args.dataset)


def split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def run_data(args: argparse.Namespace) -> int:
    from ser_train.corpora import is_manifest_corpus, load_corpora
    from ser_train.data import load_ravdess, summarize

    sources = dataset_sources(args)
    if args.include_song:
        if not isinstance(sources, str) or is_manifest_corpus(sources):
            raise SERError("--include-song applies to one RAVDESS source only (song clips are RAVDESS's).")
        dataset = load_ravdess(sources, include_song=True)
    else:
        dataset = load_corpora(sources)
    summary = summarize(dataset)
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


def run_evaluate(args: argparse.Namespace) -> int:
    from ser_train.calibration import calibration_summary
    from ser_train.corpora import actors_of_speakers, load_corpora, manifest_split_actors, speaker_names
    from ser_train.data import parse_actor_list, split_by_actor, unique_values
    from ser_train.evaluation import (
        CONFUSION_MATRIX_FILE,
        EVAL_RESULTS_FILE,
        OUTSIDE_RESULTS_FILE,
        TRAINING_ARGS_FILE,
        eval_results,
        evaluate_model,
        format_metrics_table,
        write_eval_results,
    )
    from ser_train.inference import bundled_model_named, load_model
    from ser_train.training.runner import check_actor_numbers_apply

    args.model = bundled_model_named(args.model)  # its records are read from its folder below
    output_dir = Path(args.output_dir or args.model)
    if output_dir.exists() and not output_dir.is_dir():
        raise SERError(f"{output_dir} is a file, not a folder; choose another --output-dir.")
    # Corpora the model never heard, scored into its own folder, sit beside what training measured
    # there (a folder without it gets eval_results.json, as any other); the card shows both.
    model_folder = Path(args.model)
    into_model = (
        args.held_out_corpora
        and (model_folder / EVAL_RESULTS_FILE).is_file()
        and output_dir.resolve() == model_folder.resolve()
    )
    results_file = OUTSIDE_RESULTS_FILE if into_model else EVAL_RESULTS_FILE
    would_write = [OUTSIDE_RESULTS_FILE] if into_model else [EVAL_RESULTS_FILE, CONFUSION_MATRIX_FILE]
    written = [name for name in would_write if (output_dir / name).exists()]
    if written:  # what evaluate writes: never over a file already there
        raise SERError(
            f"{output_dir} already holds {' and '.join(written)} (from training, an earlier evaluation or "
            "you); pass another --output-dir."
        )
    model = load_model(args.model, precision=args.precision)
    if not output_dir.is_dir() and not args.output_dir:
        raise SERError(f"{args.model} is a Hub model, not a local folder; pass --output-dir for the results.")
    sources = dataset_sources(args)
    dataset = load_corpora(sources)
    recorded = model_record(args.model, TRAINING_ARGS_FILE)
    # Scored on the emotions it trained on, as training scores held-out corpora (records from
    # before 2026-12-06 do not say: all of its emotions).
    trained = model_record(args.model, EVAL_RESULTS_FILE).get("trained_labels")
    if args.held_out_corpora:
        return evaluate_held_out(args, model, dataset, output_dir / results_file, recorded, trained)
    if args.test_actors:  # refused before the heard speakers are worked out, which may read every training clip
        check_actor_numbers_apply(dataset)
    heard = heard_actors(recorded, sources, dataset)
    if args.test_speakers:
        test_actors = actors_of_speakers(dataset, split_names(args.test_speakers))
    elif args.test_actors:
        test_actors = parse_actor_list(args.test_actors)
    elif manifest_split_actors(dataset):
        test_actors = manifest_split_actors(dataset)[0]
    elif "speaker" in dataset.column_names or record_tells_heard_actors(recorded, sources):
        # Every speaker the model's record does not say it heard (all of a corpus it never trained on).
        test_actors = sorted(set(unique_values(dataset, "actor")) - heard)
        if not test_actors:
            raise SERError(f"{args.model} learned from every speaker of this data: evaluate it on a corpus it never heard.")
    else:  # a RAVDESS folder, perhaps a copy of one the model trained on under another name
        why = f"has no training record ({TRAINING_ARGS_FILE})" if not recorded else "trained on data that is not here to compare with"
        raise SERError(f"{args.model} {why}, so which of these actors it heard is not known: pass --test-actors with actors it never heard (e.g. 21-24).")
    check_never_heard(args.model, dataset, test_actors, heard)
    test = split_by_actor(dataset, test_actors, validation=[])["test"]
    fold = {"test_actors": test_actors, "validation_actors": []}
    if "speaker" in dataset.column_names:
        fold["test_speakers"] = speaker_names(dataset, test_actors)
    fold.update(evaluate_model(model, test, calibration=not args.no_calibration, known_labels=trained))
    extra = {
        "labels": fold["scoring"]["scored_labels"],
        "model": args.model,
        "precision": model.precision,
        "scoring": fold["scoring"],
    }
    if "calibration" in fold:
        extra["calibration"] = calibration_summary([fold["calibration"]])
    results = eval_results(model.family, sources if isinstance(sources, str) else " + ".join(sources), [fold], **extra)
    write_eval_results(output_dir, results)
    print(format_metrics_table(results))
    print(f"Wrote {output_dir / EVAL_RESULTS_FILE}")
    return 0


def evaluate_held_out(args: argparse.Namespace, model, dataset, results_path: Path, recorded: dict, trained: list[str] | None) -> int:
    """`evaluate --held-out-corpora`: each corpus given, as one the model never trained on
    (`recorded`: the model's training_args.json, {} without one; `trained`: the emotions it
    trained on, None where unknown), scored on the emotions it trained on; the results are
    written to `results_path`."""
    from ser_train.corpora import corpus_info
    from ser_train.evaluation import OUTSIDE_RESULTS_FILE, eval_results, format_metrics_table, write_eval_results
    from ser_train.held_out import evaluate_held_out_corpora
    from ser_train.training.runner import recorded_locations

    sources = args.dataset
    # A corpus the model heard any speaker of (by name, or a copy found by its clips' audio) ...
    heard_speakers = heard_actors(recorded, sources, dataset)
    heard = {corpus for actor, corpus in zip(dataset["actor"], clip_corpora(dataset, sources)) if actor in heard_speakers}
    # ... and a known corpus under any folder name (a RAVDESS copy named otherwise), even where its
    # training copy is not at hand to compare clips with.
    trained_known = {info.title for source in recorded_locations(recorded) if (info := corpus_info(source))}
    heard |= {Path(source).name for source in sources if (info := corpus_info(source)) and info.title in trained_known}
    if heard:
        raise SERError(
            f"{args.model} heard the speakers of {', '.join(sorted(heard))} (a corpus it trained on, or a copy of one), so it is not held out: "
            "pass corpora the model never heard."
        )
    loco = evaluate_held_out_corpora(model, dataset, single_name=Path(sources[0]).name, known_labels=trained)
    results = eval_results(model.family, " + ".join(sources), [], leave_one_corpus_out=loco, model=args.model)
    write_eval_results(results_path.parent, results, results_path.name)
    print(format_metrics_table(results))
    print(f"Wrote {results_path}")
    if results_path.name == OUTSIDE_RESULTS_FILE:  # not rendered here: the folder's README.md may hold the user's own edits
        print(f"Its card shows these once rendered again: python -m ser_train card --model-dir {shlex.quote(str(results_path.parent))}")
    return 0


def model_record(model_name: str, file_name: str) -> dict:
    """One of a model's JSON records, or {} when it has none: training_args.json (how it was
    trained: data, splits) or eval_results.json (what training measured, and the emotions it
    trained on)."""
    from ser_train.hub import fetch_model_files

    from ser_train.evaluation import read_record

    return read_record(fetch_model_files(model_name, [file_name]) / file_name)


def heard_actors(recorded: dict, sources: str | list[str], dataset) -> set[int]:
    """The actors of `dataset` that a model learned from or was validated on, as its
    training_args.json (`recorded`) tells: with the same data, all but its hold-out test speakers
    (all, for a model trained on everything after its folds); else every speaker of a corpus it
    trained on, and of a copy of one under another name (`heard_in_copies`); none known without
    a record."""
    from ser_train.data import unique_values
    from ser_train.training.runner import recorded_locations, same_sources

    if not recorded:
        return set()
    if same_sources(recorded, sources):
        return set(unique_values(dataset, "actor")) - holdout_test_actors(recorded)
    trained_on = {Path(source).name for source in recorded_locations(recorded)}
    by_name = {actor for actor, corpus in zip(dataset["actor"], clip_corpora(dataset, sources)) if corpus in trained_on}
    return by_name | heard_in_copies(recorded, dataset)


def clip_corpora(dataset, sources: str | list[str]) -> list[str]:
    """Each clip's corpus name: its `corpus` column, or for a single source that has none (a
    RAVDESS folder), that folder's name."""
    if "corpus" in dataset.column_names:
        return dataset["corpus"]
    return [Path(sources if isinstance(sources, str) else sources[0]).name] * dataset.num_rows


def holdout_test_actors(recorded: dict) -> set[int]:
    """The test speakers a hold-out model never heard, as its record names them ({} otherwise)."""
    splits = recorded.get("splits", [])
    return set(splits[0]["test_actors"]) if len(splits) == 1 and splits[0]["name"] == "holdout" else set()


def record_tells_heard_actors(recorded: dict, sources: str | list[str]) -> bool:
    """Whether a model's record tells which actors of a RAVDESS folder (no speaker names) it heard:
    the folder is its training data, or that data is here to find a copy of it by (RAVDESS under
    another folder name has the same actors and no name to know it by)."""
    from ser_train.training.runner import same_sources

    return bool(recorded) and (same_sources(recorded, sources) or training_data_at_hand(recorded))


def training_data_at_hand(recorded: dict) -> bool:
    """Whether every source a model's record says it trained on is a folder here."""
    from ser_train.training.runner import recorded_locations

    trained_on = recorded_locations(recorded)
    return bool(trained_on) and all(Path(source).expanduser().exists() for source in trained_on)


def heard_in_copies(recorded: dict, dataset) -> set[int]:
    """The actors of `dataset` with a clip whose audio is that of a clip the model trained on or
    was validated on: a training corpus copied to a folder of another name, which the record's
    names cannot tell. Compared only where every recorded training source is at hand here (so its
    actor ids are those the record's hold-out test speakers are named by)."""
    from ser_train.corpora import load_corpora
    from ser_train.data import clip_digests
    from ser_train.training.runner import recorded_locations

    if not training_data_at_hand(recorded):
        return set()
    never_heard = holdout_test_actors(recorded)
    training = load_corpora(recorded_locations(recorded)).filter(lambda actor: actor not in never_heard, input_columns="actor")
    heard = set(clip_digests(training))
    return {actor for actor, digest in zip(dataset["actor"], clip_digests(dataset)) if digest in heard}


def check_never_heard(model_name: str, dataset, test_actors: list[int], heard: set[int]) -> None:
    """Refuse to score speakers the model learned from or was validated on (`heard`): the
    figures would not be about voices it never heard."""
    from ser_train.corpora import speaker_names

    scored_but_heard = sorted(set(test_actors) & heard)
    if scored_but_heard:
        raise SERError(
            f"{model_name} learned from or was validated on {', '.join(speaker_names(dataset, scored_but_heard))} (by "
            "its training_args.json, or by their recordings, found in its training data), so scoring them would not "
            "measure voices it never heard: test "
            "its own held-out speakers, or a corpus it never trained on."
        )


def run_predict(args: argparse.Namespace) -> int:
    from ser_train.analysis import analyse_files
    from ser_train.inference import DEFAULT_MODEL, load_model

    model = load_model(args.model or DEFAULT_MODEL, precision=args.precision)  # once, for all files
    if args.calibration:
        from ser_train.calibration_prompts import calibration_prompt_named

        prompt = calibration_prompt_named(args.calibration_prompt)
        model = model.with_calibration(prompt.calibrate(model, args.calibration))
    results = analyse_files(model, args.files, progress_bars())
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print_prediction(result)
    failed = [result for result in results if "error" in result]
    return EXIT_USER_ERROR if failed else 0


PROGRESS_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"  # a share, so no rate


def progress_bars() -> Callable[[str, float], None]:
    """`analyse_files`'s progress as a bar on stderr per long file (stdout stays the results, JSON
    included): a 10-minute recording took about 100 s on 2 cores."""
    from tqdm.auto import tqdm

    bars = {}

    def report(path: str, share: float) -> None:
        if path not in bars:
            bars[path] = tqdm(total=100, desc=Path(path).name, bar_format=PROGRESS_BAR_FORMAT, file=sys.stderr)
        bars[path].update(round(100 * share) - bars[path].n)
        if share >= 1:
            bars.pop(path).close()

    return report


def print_prediction(result: dict) -> None:
    if "error" in result:
        print(f"error: {naming_the_path(result['error'], result['file'])}")
        return
    if result["top"] is None:
        said = "no speech heard, so no verdict (the probabilities are its answer to a sound)"
    else:
        said = result["top"] + (" (unsure: read the probabilities)" if result["unsure"] else "")
    print(f"{result['file']}: {said}")
    for emotion, probability in result["probabilities"].items():
        print(f"  {emotion:<10} {probability:6.3f}")


def naming_the_path(message: str, file: str) -> str:
    """An audio error about `file`, which names the file once, as the path that was given: the
    library's messages start with the file's name alone (on the page, the rest is a temporary folder)."""
    name = Path(file).name
    return f"{file}{message[len(name):]}" if message.startswith(name) else f"{file}: {message}"


def run_live(args: argparse.Namespace) -> int:
    from ser_train.audio import load_audio
    from ser_train.errors import AudioError
    from ser_train.inference import DEFAULT_MODEL, load_model
    from ser_train.live import LiveStream, play

    try:
        waveform = load_audio(args.file)
    except AudioError as error:
        raise AudioError(naming_the_path(str(error), args.file)) from None
    stream = LiveStream(load_model(args.model or DEFAULT_MODEL, precision=args.precision))
    answers = []
    for answer in play(stream, waveform, realtime=args.realtime):
        answers.append(answer)
        if not args.json:
            print_live_answer(answer)
    summary = stream.summary()
    if args.json:
        print(json.dumps({"file": args.file, "answers": [a.as_dict() for a in answers], "summary": summary.as_dict()}, indent=2))
    else:
        print(f"summary: {summary.duration_s:.1f} s, {summary.speech_s:.1f} s of speech: {summary.top_emotion or 'no speech'}")
    return 0


def print_live_answer(answer) -> None:
    if answer.judged:
        said = f"{answer.top_emotion} {answer.confidence:.0%}" + (" (unsure)" if answer.unsure else "")
    else:
        said = "speech, too little yet to judge" if answer.speech else "no speech"
    # An utterance's answer spans from its onset; a step without one is a moment.
    since = f"{answer.start_s:6.1f}-" if answer.start_s < answer.time_s else " " * 7
    print(f"{since}{answer.time_s:6.1f} s  {said}", flush=True)


def run_push(args: argparse.Namespace) -> int:
    from ser_train.hub import push_model_dir

    url = push_model_dir(args.model_dir, args.repo_id, private=args.private, revision=args.revision)
    print(f"Published {args.model_dir} to {args.repo_id}: {url}")
    return 0


def run_card(args: argparse.Namespace) -> int:
    from ser_train.model_card import write_model_card

    print(f"Wrote {write_model_card(args.model_dir, repo_id=args.repo_id)}")
    return 0
