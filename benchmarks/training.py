"""Training cost: the default CNN's full run and one epoch, and a wav2vec2-base step on the CPU.

The full run's wall time is read from a finished run folder (by default runs/cnn-3corpora-channel,
where the bundled model was trained): the runner writes training_args.json as it starts and
eval_results.json as it ends. A run finished by `--resume` is not timed: its files span two
processes and the time between them. The epochs each fold trained come from its last checkpoint.

One CNN epoch is measured here, with the bundled model's own hyperparameters (from its
training_args.json) on fold 1 of its 6-fold protocol and a fresh feature cache: a first `fit` of
one epoch also extracts the features of the clean, augmented and channel views; then, with the cache
warm, fits of one and of three epochs tell apart what each epoch costs (training pass,
validation pass, checkpoint) and what a fit costs once before its first epoch.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from pathlib import Path

from benchmarks.report import Row

SECTION = "training"
FOLD = 1  # the first of the 6 folds: actors 1-4 tested, 5-8 validating, 9-24 training
EXTRA_EPOCHS = 2  # a warm fit of 1 + this many epochs, less a warm fit of 1, gives the epoch's cost
QUICK_SHARDS = 4  # --quick times the CNN on a quarter of the fold's clips (the rows say how many)
W2V_SIZES = dict(batch_size=1, clip_s=4.0, steps=2, warmup_steps=1)  # one 4 s clip per step


def bundled_hyperparameters():
    """The CNN hyperparameters the bundled model was trained with."""
    from ser_train.augment import AugmentConfig, ChannelConfig
    from ser_train.features import FeatureConfig
    from ser_train.evaluation import TRAINING_ARGS_FILE, read_record
    from ser_train.inference import BUNDLED_CNN
    from ser_train.training.cnn import CNNHyperparameters

    recorded = read_record(Path(BUNDLED_CNN) / TRAINING_ARGS_FILE)["hyperparameters"]
    nested = {
        "feature_config": FeatureConfig.from_dict(recorded.pop("feature_config")),
        "augment": _settings(AugmentConfig, recorded.pop("augment")),
        "channel": _settings(ChannelConfig, recorded.pop("channel", {})),  # models before channel views: the defaults, unused
    }
    return CNNHyperparameters(**recorded, **nested)


def _settings(kind: type, recorded: dict):
    """A frozen settings dataclass from its JSON form (JSON has lists where it had tuples)."""
    return kind(**{key: tuple(value) if isinstance(value, list) else value for key, value in recorded.items()})


def cnn_epoch_rows(corpus: Path, shards: int = 1) -> list[Row]:
    """One CNN epoch and the features before it, on fold FOLD's training and validation clips
    (on the first of `shards` equal parts of each)."""
    from ser_train.data import actor_folds, load_ravdess, split_by_actor, validation_actors
    from ser_train.training.cnn import CNNFamily

    dataset = load_ravdess(str(corpus))
    test = actor_folds()[FOLD - 1]
    parts = {name: part.shard(shards, 0) for name, part in split_by_actor(dataset, test, validation_actors(test)).items()}
    hyperparameters = bundled_hyperparameters()
    with tempfile.TemporaryDirectory(prefix="ser-bench-train-") as folder:
        family = CNNFamily(hyperparameters, cache_dir=Path(folder) / "features")
        seconds = {}
        for attempt, epochs in (("cold", 1), ("warm", 1), ("warm", 1 + EXTRA_EPOCHS)):
            start = time.perf_counter()
            family.fit(parts["train"], parts["validation"], Path(folder) / f"{attempt}-{epochs}", resume=False, max_epochs=epochs)
            seconds[attempt, epochs] = time.perf_counter() - start
    epoch_s = (seconds["warm", 1 + EXTRA_EPOCHS] - seconds["warm", 1]) / EXTRA_EPOCHS
    views = 1 + hyperparameters.augmented_views + hyperparameters.channel_views
    clips = parts["train"].num_rows
    where = f"fold {FOLD}: {clips} training clips, {parts['validation'].num_rows} validation"
    return [
        Row(SECTION, f"default CNN, features of {views} views x {clips} clips, cold cache ({where})", f"{seconds['cold', 1] - seconds['warm', 1]:.1f} s"),
        Row(SECTION, f"default CNN, one epoch: training pass, validation, checkpoint ({where})", f"{epoch_s:.1f} s"),
        Row(SECTION, f"default CNN, start of a fit with features cached: waveforms read, cache looked up ({where})", f"{seconds['warm', 1] - epoch_s:.1f} s"),
    ]


def full_run_rows(run_dir: Path) -> list[Row]:
    """Wall time and epochs of a finished CNN run, from the files it wrote."""
    import torch

    from ser_train.evaluation import EVAL_RESULTS_FILE, TRAINING_ARGS_FILE, read_record
    from ser_train.training.cnn import CHECKPOINT_DIR, CHECKPOINT_FILE
    from ser_train.training.runner import CORPORA_DIR

    started, finished = run_dir / TRAINING_ARGS_FILE, run_dir / EVAL_RESULTS_FILE
    if not finished.is_file():
        return [Row(SECTION, "default CNN, full training run", f"not available: no finished run in {run_dir}")]
    results = read_record(finished)
    if "--resume" in shlex.split(results.get("command", "")):
        # A resumed run's files span both processes and the time between them.
        return [Row(SECTION, "default CNN, full training run", f"not available: {run_dir} was finished by a resumed run")]
    seconds = finished.stat().st_mtime - started.stat().st_mtime
    # Every model the run trained left its last checkpoint: the folds', the held-out corpora's
    # (with their nested temperature fits) and the final model's.
    checkpoints = sorted(run_dir.glob(f"**/{CHECKPOINT_DIR}/{CHECKPOINT_FILE}"))
    epochs = sum(torch.load(path, weights_only=True)["progress"]["epoch"] for path in checkpoints)
    folds = len(results.get("folds", []))
    held_out = sum(CORPORA_DIR in path.relative_to(run_dir).parts for path in checkpoints)
    return [
        Row(
            SECTION,
            f"default CNN, full run: {len(checkpoints)} fits ({folds} folds, {held_out} held-out corpus fits, final model), {epochs} epochs",
            f"{seconds / 60:.1f} min = {seconds / epochs:.1f} s per epoch trained, features and evaluation included",
        )
    ]


def wav2vec2_rows() -> list[Row]:
    from benchmarks.wav2vec2_throughput import Sizes, measure_in_child

    result = measure_in_child("fp32", False, "encoder", Sizes(**W2V_SIZES))
    return [
        Row(
            SECTION,
            "wav2vec2-base training step on the CPU (fp32, encoder mode, 1 x 4 s clip)",
            f"{result['step_s']:.2f} s/step = {result['audio_s_per_s']:.2f} s of audio per s; peak RSS {result['peak_gib']:.1f} GiB",
        )
    ]


def run(corpus: Path, run_dir: Path, quick: bool) -> tuple[list[Row], list[str]]:
    rows = full_run_rows(run_dir)
    rows += cnn_epoch_rows(corpus, QUICK_SHARDS if quick else 1)
    if quick:  # a fresh process that builds wav2vec2-base: half of this section's time
        rows.append(Row(SECTION, "wav2vec2-base training step on the CPU", "not measured: --quick"))
    else:
        rows += wav2vec2_rows()
    rows.append(Row(SECTION, "wav2vec2-base training on a GPU", "not measured: no GPU in this run"))
    notes = [
        f"Training: the full run's wall time is the time between {run_dir.name}'s training_args.json "
        "(written at the start) and eval_results.json (at the end), so it leaves out the few seconds "
        "of process start-up; other work may have shared the machine then. One CNN epoch is measured "
        "with the bundled model's hyperparameters (the family uses 2 torch threads); wav2vec2 through "
        "benchmarks/wav2vec2_throughput.py (`python -m benchmarks.wav2vec2_throughput` measures fp32 "
        "and bf16, and on a GPU also activation checkpointing).",
    ]
    return rows, notes
