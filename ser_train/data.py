"""RAVDESS as a `datasets.Dataset`, from the Hub or a local folder, and actor-disjoint splits.

Every source ends up with the same columns:

    audio       Audio feature, mono, at the requested sampling rate (16 kHz by default)
    emotion     ClassLabel over EMOTIONS, in the official RAVDESS code order
    actor       1..24 (odd actors are male, even actors female)
    gender      "male" / "female"
    intensity   "normal" / "strong"
    statement   1 ("Kids are talking by the door") or 2 ("Dogs are sitting by the door")
    repetition  1 or 2
    file        the source file name, e.g. 03-01-05-02-01-01-12.wav

Splits are always by actor: no speaker is ever on both sides of a train/test boundary.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import soundfile

from ser_train.audio import SAMPLING_RATE
from ser_train.errors import DataError

DEFAULT_DATASET = "xbgoose/ravdess"
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NUM_ACTORS = 24
DEFAULT_NUM_FOLDS = 6  # 6 folds of 4 actors: 1-4, 5-8, ..., 21-24
INTENSITIES = {1: "normal", 2: "strong"}
SONG = 2  # the RAVDESS vocal channel code of song clips (speech is 1)

# Official name: modality-vocal_channel-emotion-intensity-statement-repetition-actor.<extension>
FILE_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.\w+$")
AUDIO_EXTENSIONS = {".wav", ".flac", ".opus", ".ogg", ".mp3", ".m4a", ".webm"}

FEATURES = datasets.Features(
    {
        "audio": datasets.Audio(sampling_rate=SAMPLING_RATE, num_channels=1),
        "emotion": datasets.ClassLabel(names=list(EMOTIONS)),
        "actor": datasets.Value("int32"),
        "gender": datasets.Value("string"),
        "intensity": datasets.Value("string"),
        "statement": datasets.Value("int32"),
        "repetition": datasets.Value("int32"),
        "file": datasets.Value("string"),
    }
)
# An index of clips to decode: the audio column holds paths or encoded bytes (see decode_index).
UNDECODED_FEATURES = datasets.Features({**FEATURES, "audio": datasets.Audio(sampling_rate=SAMPLING_RATE, num_channels=1, decode=False)})


@dataclass(frozen=True)
class RavdessName:
    """The seven fields coded in a RAVDESS file name."""

    modality: int
    vocal_channel: int
    emotion: int  # 1-based code; EMOTIONS[emotion - 1] is its name
    intensity: int
    statement: int
    repetition: int
    actor: int

    def row(self, file_name: str) -> dict:
        return {
            "emotion": self.emotion - 1,
            "actor": self.actor,
            "gender": gender_of(self.actor),
            "intensity": INTENSITIES[self.intensity],
            "statement": self.statement,
            "repetition": self.repetition,
            "file": file_name,
        }


def parse_file_name(file_name: str) -> RavdessName:
    """Parse `03-01-05-02-01-01-12.wav`; raise `DataError` naming the file if it is not one."""
    match = FILE_NAME.match(Path(file_name).name)
    codes = [int(group) for group in match.groups()] if match else []
    if (
        not codes
        or not 1 <= codes[2] <= len(EMOTIONS)
        or codes[3] not in INTENSITIES
        or codes[4] not in (1, 2)
        or codes[5] not in (1, 2)
        or not 1 <= codes[6] <= NUM_ACTORS
    ):
        raise DataError(
            f"{Path(file_name).name}: not a RAVDESS file name "
            "(expected MM-VV-EE-II-SS-RR-AA, e.g. 03-01-05-02-01-01-12.wav)."
        )
    return RavdessName(*codes)


def canonical_emotion(label: str) -> str | None:
    """One of EMOTIONS for another spelling or abbreviation ('fear', 'ANG', 'Neu'), else None.

    Our eight emotion names differ in their first three letters, which is how other datasets'
    spellings and abbreviations are recognised.
    """
    prefix = str(label).strip().lower()[:3]
    return next((emotion for emotion in EMOTIONS if len(prefix) == 3 and emotion.startswith(prefix)), None)


def gender_of(actor: int) -> str:
    return "male" if actor % 2 else "female"


def load_ravdess(
    source: str = DEFAULT_DATASET,
    sampling_rate: int = SAMPLING_RATE,
    include_song: bool = False,
    skip_unreadable: bool = False,
) -> datasets.Dataset:
    """Load RAVDESS speech from a local folder or a Hub dataset id, decoded and cached.

    `source` is a folder in the official layout (Actor_XX/03-01-...wav), a Hub dataset id, or a
    local copy of a Hub dataset (a folder of Parquet files). The audio is decoded once (resampled
    and downmixed by FFmpeg) and kept in the `datasets` cache, so a second load with the same
    files and rate reads the cache instead of decoding. An unreadable file raises `DataError`
    naming it, or is left out with `skip_unreadable`.
    """
    folder = Path(source).expanduser()
    if folder.is_dir():
        # A downloaded Hub dataset keeps Parquet files at the top or under data/.
        has_parquet = any(folder.glob("*.parquet")) or any(folder.glob("data/*.parquet"))
        index = _index_hub_copy(folder, str(folder)) if has_parquet else _index_folder(folder, include_song)
    else:
        index = _index_hub_copy(_download_hub_dataset(source), source)
    return decode_index(index, sampling_rate, skip_unreadable)


def _index_folder(folder: Path, include_song: bool) -> datasets.Dataset:
    """One row per RAVDESS audio file under `folder`, labels parsed from the file names."""
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file()
    )
    if not files:
        raise DataError(
            f"{folder}: no RAVDESS audio files found (expected Actor_XX/03-01-05-02-01-01-12.wav)."
        )
    rows = {name: [] for name in FEATURES}
    for path in files:
        parsed = parse_file_name(path.name)
        if parsed.vocal_channel == SONG and not include_song:
            continue
        for key, value in parsed.row(path.name).items():
            rows[key].append(value)
        rows["audio"].append(str(path))
    if not rows["file"]:
        raise DataError(f"{folder}: only song files found; pass include_song to use them.")
    index = datasets.Dataset.from_dict(rows, features=UNDECODED_FEATURES)
    # from_dict keeps no cache of its own: name the index after what it holds, so that
    # `decode_index`'s cache (and every cache computed from it) is found again on the next load.
    index._fingerprint = f"ravdess-{files_fingerprint(files)[:24]}-song{int(include_song)}"
    return index


def files_fingerprint(paths: list[Path]) -> str:
    """A digest of the files' paths and contents. Contents, not modification times: a corpus
    copied or provisioned again keeps its caches (encoder outputs take an hour on 2 cores)."""
    stamp = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as file:
            stamp.update(f"{path}:".encode() + hashlib.file_digest(file, "sha256").digest())
    return stamp.hexdigest()


def _download_hub_dataset(dataset_id: str) -> Path:
    """The dataset's data files from the Hub, through huggingface_hub's cache (works offline).

    Only data files are fetched (Parquet, as the Hub serves every dataset), so no loading
    script, and no remote code, ever runs.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            snapshot_download(dataset_id, repo_type="dataset", allow_patterns=["*.parquet", "*.md", "*.json"])
        )
    except HFValidationError:
        raise DataError(
            f"'{dataset_id}' is neither a local folder nor a valid Hub dataset id (user/name)."
        ) from None
    except RepositoryNotFoundError:
        raise DataError(
            f"'{dataset_id}' does not exist on the Hugging Face Hub (or is private); check the id, "
            "or pass a local folder in the RAVDESS layout."
        ) from None
    except LocalEntryNotFoundError:
        # A name without "/" is more likely a folder mistyped than a dataset of the Hub's oldest kind.
        no_folder = f"There is no folder '{dataset_id}' here, and it" if "/" not in dataset_id else f"'{dataset_id}'"
        raise DataError(
            f"{no_folder} could not be downloaded from the Hugging Face Hub, which cannot be reached, nor is a "
            "copy cached (offline?). Pass a local folder in the RAVDESS layout instead, e.g. "
            "--dataset ../shared/data/ravdess-opus-16k."
        ) from None


def _index_hub_copy(folder: Path, name: str) -> datasets.Dataset:
    """The `train` split of a Hub-layout dataset folder, with its columns mapped to ours."""
    try:
        hub = datasets.load_dataset(str(folder), split="train")
    except Exception as error:  # datasets reports malformed folders in many ways
        raise DataError(f"{name}: could not be read as a Hub dataset ({error}).") from error
    missing = {"audio", "emotion", "actor"} - set(hub.column_names)
    if missing:
        raise DataError(f"{name}: not a RAVDESS dataset; it lacks the column(s) {', '.join(sorted(missing))}.")
    hub = hub.cast_column("audio", datasets.Audio(decode=False))
    return hub.map(
        _hub_row,
        remove_columns=hub.column_names,
        features=UNDECODED_FEATURES,
        desc="Mapping Hub columns",
    )


def _hub_row(row: dict) -> dict:
    """Map one row of a Hub upload (string `emotion`, int `actor`) to our columns."""
    emotion = canonical_emotion(row["emotion"])  # the same spellings a corpus folder's labels may use
    if emotion is None:
        raise DataError(f"Unknown emotion label {row['emotion']!r} in the Hub dataset.")
    file_name = Path(row["audio"].get("path") or "").name
    try:  # most uploads keep the official file names, which carry the other labels
        parsed = parse_file_name(file_name).row(file_name)
    except DataError:
        parsed = {"intensity": "", "statement": 0, "repetition": 0}
    actor = int(row["actor"])
    return {
        "audio": row["audio"],
        "emotion": EMOTIONS.index(emotion),
        "actor": actor,
        "gender": gender_of(actor),
        "intensity": str(row.get("intensity") or parsed["intensity"]),
        "statement": int(row.get("statement") or parsed["statement"]),
        "repetition": int(row.get("repetition") or parsed["repetition"]),
        "file": file_name,
    }


def decode_index(index: datasets.Dataset, sampling_rate: int, skip_unreadable: bool) -> datasets.Dataset:
    """Decode every clip of an index (its `audio` column: paths or bytes, undecoded) to mono at
    `sampling_rate` once; `datasets` caches the result. The other columns are kept."""
    from ser_train import audio as audio_io

    def decode(row: dict) -> dict:
        audio = row["audio"]
        source = audio.get("path") or ""
        try:
            if audio.get("bytes"):  # Hub datasets embed the encoded file
                waveform = audio_io.decode(audio["bytes"], sampling_rate, name=row["file"])
                waveform = audio_io.check_waveform(waveform, sampling_rate, name=row["file"])
            else:
                waveform = audio_io.load_audio(source, sampling_rate)
        except Exception as error:
            if not skip_unreadable:
                raise DataError(f"{row['file'] or source}: unreadable audio ({str(error).rstrip('.')}).") from error
            waveform = np.zeros(0, dtype=np.float32)
        return {"audio": {"array": waveform, "sampling_rate": sampling_rate}, "readable": len(waveform) > 0}

    features = index.features.copy()
    features["audio"] = datasets.Audio(sampling_rate=sampling_rate, num_channels=1, decode=True)
    features["readable"] = datasets.Value("bool")
    decoded = index.map(
        decode,
        features=features,
        new_fingerprint=f"{index._fingerprint}-decoded{sampling_rate}",
        cache_file_name=_cache_file(index, sampling_rate),
        desc="Decoding audio",
    )
    if skip_unreadable:
        decoded = decoded.filter(lambda readable: readable, input_columns="readable")
    return decoded.remove_columns("readable")


def _cache_file(index: datasets.Dataset, sampling_rate: int) -> str | None:
    """Where the decoded audio is kept: beside a Hub download, or in the `datasets` cache."""
    if index.cache_files:
        return None  # datasets picks a file next to the Arrow data it already caches
    cache_dir = Path(datasets.config.HF_DATASETS_CACHE) / "ser_train"
    cache_dir.mkdir(parents=True, exist_ok=True)
    return str(cache_dir / f"{index._fingerprint}-{sampling_rate}.arrow")


def audio_arrays(dataset: datasets.Dataset) -> list[np.ndarray]:
    """The decoded waveforms of a loaded dataset, as float32 numpy arrays.

    `datasets` keeps the decoded audio as 16-bit WAV bytes, and its Audio feature would read
    them back through FFmpeg one clip at a time (8 s for 960 clips); soundfile reads the same
    samples from the bytes 18 times faster.
    """
    return [soundfile.read(io.BytesIO(wav), dtype="float32")[0] for wav in decoded_wav_bytes(dataset)]


def clip_digests(dataset: datasets.Dataset) -> list[str]:
    """A digest of each loaded clip's decoded audio: the same for the same recording in any
    folder, under any name."""
    return [hashlib.sha256(wav).hexdigest() for wav in decoded_wav_bytes(dataset)]


def data_digest(dataset: datasets.Dataset) -> str:
    """A digest of what a loaded dataset holds: each clip's decoded audio with its emotion and
    speaker, in order, and the emotions' names. Where the files lie and what they are called
    do not count."""
    stamp = hashlib.sha256(json.dumps(dataset.features["emotion"].names).encode())
    for clip, emotion, actor in zip(clip_digests(dataset), dataset["emotion"], dataset["actor"]):
        stamp.update(f"{clip}:{emotion}:{actor};".encode())
    return stamp.hexdigest()


def decoded_wav_bytes(dataset: datasets.Dataset) -> Iterator[bytes]:
    """Each loaded clip's decoded audio as the 16-bit WAV bytes `datasets` keeps, unread, a batch
    of clips at a time in memory."""
    undecoded = dataset.select_columns(["audio"]).cast_column("audio", datasets.Audio(decode=False))
    for batch in undecoded.iter(batch_size=256):
        yield from (audio["bytes"] for audio in batch["audio"])


# --- Actor-disjoint splits -------------------------------------------------------------------


ALL_ACTORS = tuple(range(1, NUM_ACTORS + 1))


def unique_values(dataset: datasets.Dataset, column: str) -> list:
    """What `dataset.unique(column)` gives (the distinct values, in order of first appearance),
    reading that one column only: on a subset (`select`, `filter`), `Dataset.unique` first
    writes the whole subset, every column, to a new cache file, which after the Whisper encoder
    is one to three GB for every fold and held-out fit, never removed."""
    return list(dict.fromkeys(dataset[column]))


def actor_folds(num_folds: int = DEFAULT_NUM_FOLDS, actors: tuple[int, ...] = ALL_ACTORS) -> list[list[int]]:
    """Consecutive actor groups: 6 folds of the 24 actors give [1-4], [5-8], ..., [21-24]."""
    actors = sorted(actors)
    if not 2 <= num_folds <= len(actors):
        raise DataError(f"The number of folds must be between 2 and {len(actors)} (the number of actors), got {num_folds}.")
    return [[int(a) for a in fold] for fold in np.array_split(np.array(actors), num_folds)]


def validation_actors(test_actors: list[int], actors: tuple[int, ...] = ALL_ACTORS) -> list[int]:
    """Validation speakers for a test group: the actors after it, wrapping round, same count.

    A neighbouring group of consecutive RAVDESS actors keeps the 1:1 male/female balance, and
    at least one actor is always left to train on.
    """
    remaining = [actor for actor in sorted(actors) if actor not in test_actors]
    after = [actor for actor in remaining if actor > max(test_actors)]
    count = min(len(test_actors), len(remaining) - 1)
    if count < 1:
        raise DataError("Too few actors: training needs at least one actor beyond the test and validation actors.")
    return (after + remaining)[:count]


def split_by_actor(
    dataset: datasets.Dataset,
    test_actors: list[int],
    validation: list[int] | None = None,
) -> datasets.DatasetDict:
    """Train / validation / test with disjoint actors; validation defaults to `validation_actors`."""
    test_actors = sorted(set(test_actors))
    present = set(unique_values(dataset, "actor"))
    if not test_actors or not set(test_actors) <= present:
        raise DataError(
            f"Test actors {test_actors} are not all in the dataset (it has actors {sorted(present)})."
        )
    validation = sorted(set(validation if validation is not None else validation_actors(test_actors, tuple(present))))
    if set(validation) & set(test_actors):
        raise DataError("Validation and test actors must not overlap.")
    actors = dataset["actor"]
    groups = {
        "test": set(test_actors),
        "validation": set(validation),
        "train": present - set(test_actors) - set(validation),
    }
    return datasets.DatasetDict(
        {
            name: dataset.select([i for i, actor in enumerate(actors) if actor in members])
            for name, members in groups.items()
        }
    )


def parse_actor_list(text: str) -> list[int]:
    """'21,22,23,24' or '21-24' -> [21, 22, 23, 24], with a clear error for anything else."""
    actors: list[int] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            actors.extend(range(int(low), int(high if dash else low) + 1))
    except ValueError:
        raise DataError(f"Could not read actors from {text!r}; write e.g. 21,22,23,24 or 21-24.") from None
    if not actors or not all(1 <= actor <= NUM_ACTORS for actor in actors):
        raise DataError(f"Actors must be numbers from 1 to {NUM_ACTORS}, got {text!r}.")
    return sorted(set(actors))


def summarize(dataset: datasets.Dataset) -> dict:
    """What `python -m ser_train data` reports about a loaded dataset."""
    counts = np.bincount(dataset["emotion"], minlength=len(EMOTIONS))
    sampling_rate = dataset.features["audio"].sampling_rate
    total_samples = sum(len(audio["array"]) for audio in dataset.with_format("numpy")["audio"])
    return {
        "rows": dataset.num_rows,
        "emotions": {name: int(count) for name, count in zip(EMOTIONS, counts)},
        "actors": len(unique_values(dataset, "actor")),
        "sampling_rate": sampling_rate,
        "duration_s": round(total_samples / sampling_rate, 1),
    }
