"""Any labelled corpus, from a folder with a CSV manifest, and several corpora combined.

A corpus folder holds its audio and two small files:

    manifest.csv     one row per clip: path (relative to the folder, inside it), emotion, speaker, and
                     optionally split (train / validation / test; a speaker stays in one split)
    label_map.json   {"its label": "one of our emotions", "other label": null}; null leaves
                     those clips out. Labels that already name one of our emotions (any
                     spelling `canonical_emotion` knows: "fear", "ANG", "Happy") need no entry.

Every corpus loads into the same columns, so several combine with `concatenate_datasets`:

    audio     Audio feature, mono, 16 kHz
    emotion   ClassLabel over EMOTIONS (a corpus may have only some of them)
    actor     an integer id per speaker, what the actor-disjoint splits key on
    speaker   "corpus/speaker": speaker names namespaced by corpus, so two corpora's
              speaker "1" stay two speakers
    corpus    the corpus name (its folder name)
    split     the manifest's split, or "" when it gives none
    file      the clip's path in the manifest

A single RAVDESS source keeps its own columns (see `ser_train.data.load_ravdess`); in a
combination its actors become speakers "ravdess-folder/01" and so on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import datasets
import numpy as np

from ser_train.audio import SAMPLING_RATE
from ser_train.data import (
    AUDIO_EXTENSIONS,
    EMOTIONS,
    canonical_emotion,
    clip_digests,
    decode_index,
    files_fingerprint,
    load_ravdess,
    parse_file_name,
    unique_values,
)
from ser_train.errors import DataError

@dataclass(frozen=True)
class CorpusInfo:
    """What a model card says about a corpus a model learned from."""

    title: str
    description: str
    language: str  # ISO 639-1 code, for the card's metadata
    licence: str  # as the corpus states it
    citation: str
    acted: bool = True  # actors portraying emotions, not speech as it came


# The corpora this project was measured on, recognised by their folder (or Hub id) name, of which
# each key must be a whole word (see `corpus_info`), and a RAVDESS copy by its layout too. A model
# trained on them is bound by every one of their licences: all are non-commercial or research only.
# EmoDB, URDU, TurEV, nEMO and ASED are public GitHub copies converted by experiments/extra_corpora.py.
KNOWN_CORPORA = {
    "ravdess": CorpusInfo(
        "RAVDESS",
        "24 professional North-American actors (12 female, 12 male), two English sentences in 8 emotions "
        "at two intensities, studio recordings",
        "en",
        "CC BY-NC-SA 4.0 (non-commercial, share-alike)",
        "Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of Emotional Speech and Song "
        "(RAVDESS). PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391",
    ),
    "tess": CorpusInfo(
        "TESS",
        'two female Canadian English speakers aged 26 and 64, "Say the word ___" with 200 words in 7 emotions',
        "en",
        "CC BY-NC-ND 4.0 (non-commercial, no derivatives)",
        "Pichora-Fuller MK, Dupuis K (2020) Toronto emotional speech set (TESS). Borealis. "
        "https://doi.org/10.5683/SP2/E8H2MF",
    ),
    "emovo": CorpusInfo(
        "EMOVO",
        "6 professional Italian actors (3 female, 3 male), 14 Italian sentences in 7 emotions, recorded in Rome",
        "it",
        "free for non-commercial research use with acknowledgment of the source",
        "Costantini G, Iaderola I, Paoloni A, Todisco M (2014) EMOVO Corpus: an Italian Emotional Speech "
        "Database. Proceedings of LREC 2014, 3501-3504.",
    ),
    "emodb": CorpusInfo(
        "EmoDB",
        "10 German actors (5 female, 5 male), 10 German sentences in 6 emotions (its seventh, boredom, left out), "
        "recorded in an anechoic chamber in Berlin",
        "de",
        "made freely available by its authors for research use, with citation (no licence file)",
        "Burkhardt F, Paeschke A, Rolfes M, Sendlmeier W, Weiss B (2005) A Database of German Emotional "
        "Speech. Proceedings of Interspeech 2005, 1517-1520.",
    ),
    "urdu": CorpusInfo(
        "URDU",
        "400 utterances of Urdu talk-show speech from YouTube, 29 speakers, in 4 emotions (natural, not acted)",
        "ur",
        "research purposes only",
        "Latif S, Qayyum A, Usman M, Qadir J (2018) Cross Lingual Speech Emotion Recognition: Urdu vs. "
        "Western Languages. FIT 2018. https://arxiv.org/abs/1812.10411",
        acted=False,
    ),
    "turev": CorpusInfo(
        "TurEV-DB",
        "6 Turkish actors, 82 single words in 4 emotions (angry, calm, happy, sad)",
        "tr",
        "CC BY-NC-ND 4.0 (non-commercial, no derivatives)",
        "Canpolat SF, Ormanoglu Z, Zeyrek D (2020) Turkish Emotion Voice Database (TurEV-DB). "
        "Proceedings of SLTU-CCURL 2020, 368-375.",
    ),
    "nemo": CorpusInfo(
        "nEMO",
        "9 Polish actors (4 female, 5 male), Polish sentences in 6 emotions (angry, fearful, happy, neutral, sad, surprised)",
        "pl",
        "CC BY-NC-SA 4.0 (non-commercial, share-alike)",
        "Christop I (2024) nEMO: Dataset of Emotional Speech in Polish. Proceedings of LREC-COLING 2024, 12111-12116.",
    ),
    "ased": CorpusInfo(
        "ASED",
        "65 Amharic speakers (25 female, 40 male), each recorded where they chose, sentences in 5 emotions, "
        "kept where most of 8 judges agreed",
        "am",
        "none stated; the authors ask to be cited (research use only)",
        "Retta EA, Almekhlafi E, Sutcliffe R, Mhamed M, Ali H, Feng J (2022) A New Amharic Speech Emotion Dataset "
        "and Classification Benchmark. ACM TALLIP. https://doi.org/10.1145/3529759",
    ),
}


def corpus_info(source: str) -> CorpusInfo | None:
    """The known corpus a source (folder path, folder name or Hub id) is a copy of, if any.

    A folder in the official RAVDESS layout (what `load_corpus` loads as RAVDESS: no manifest,
    every audio file named as `parse_file_name` reads them) is RAVDESS whatever its name.
    Otherwise a known corpus's key must be a whole word of the folder (or Hub repo) name, words
    being split at anything but letters and digits: `tess-opus-16k` and `EMOVO` are TESS and
    EMOVO, `contessa-recordings` and `hostess-speech` are not TESS.
    """
    if not source:
        return None
    folder = Path(source).expanduser()
    if folder.is_dir() and not is_manifest_corpus(source):
        audio_files = 0
        try:
            for path in folder.rglob("*"):
                if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                    parse_file_name(path.name)  # as `load_ravdess` reads every file of a RAVDESS folder
                    audio_files += 1
        except DataError:  # not RAVDESS file names: a folder known by its name, if at all
            audio_files = 0
        if audio_files:
            return KNOWN_CORPORA["ravdess"]
    name = Path(source).name or source
    words = set(re.split(r"[^0-9a-z]+", name.lower()))
    return next((info for key, info in KNOWN_CORPORA.items() if key in words), None)


MANIFEST_FILE = "manifest.csv"
LABEL_MAP_FILE = "label_map.json"
REQUIRED_COLUMNS = ("path", "emotion", "speaker")
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}

CORPUS_FEATURES = datasets.Features(
    {
        "audio": datasets.Audio(sampling_rate=SAMPLING_RATE, num_channels=1, decode=False),
        "emotion": datasets.ClassLabel(names=list(EMOTIONS)),
        "actor": datasets.Value("int32"),
        "speaker": datasets.Value("string"),
        "corpus": datasets.Value("string"),
        "split": datasets.Value("string"),
        "file": datasets.Value("string"),
    }
)


def is_manifest_corpus(source: str) -> bool:
    return (Path(source).expanduser() / MANIFEST_FILE).is_file()


def load_corpora(sources: str | list[str]) -> datasets.Dataset:
    """One source as it is (RAVDESS keeps its columns), or several combined with speaker ids
    namespaced by corpus and integer `actor` ids interleaved across corpora."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    if len(sources) == 1:
        return load_corpus(sources[0])
    _check_each_given_once(sources)
    names = corpus_names_of(sources)
    parts = [_common_columns(load_corpus(source), name) for source, name in zip(sources, names)]
    combined = datasets.concatenate_datasets(parts)
    _check_no_recording_in_two_corpora(combined)
    return _with_actor_ids(combined, interleave_speakers([unique_values(part, "speaker") for part in parts]))


def load_corpus(source: str) -> datasets.Dataset:
    """A manifest corpus folder, or RAVDESS (any source `load_ravdess` takes)."""
    if is_manifest_corpus(source):
        return load_manifest_corpus(source)
    return load_ravdess(source)


def load_manifest_corpus(folder: str | Path) -> datasets.Dataset:
    """The clips listed in FOLDER/manifest.csv, decoded to 16 kHz mono once and cached."""
    folder = Path(folder).expanduser()
    name = folder.resolve().name
    rows = _read_manifest(folder / MANIFEST_FILE)
    label_map = _read_label_map(folder / LABEL_MAP_FILE)
    emotions = _map_labels([row["emotion"] for row in rows], label_map, folder)
    kept = [(row, emotion) for row, emotion in zip(rows, emotions) if emotion is not None]
    if not kept:
        raise DataError(f"{folder}: every clip's label maps to null in {LABEL_MAP_FILE}; nothing is left to load.")
    paths = [folder / row["path"] for row, _ in kept]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"{folder}: {len(missing)} file(s) in {MANIFEST_FILE} do not exist, e.g. {missing[0]}.")
    speakers = [f"{name}/{row['speaker']}" for row, _ in kept]
    splits = [_split_of(row, folder) for row, _ in kept]
    _check_speaker_disjoint(speakers, splits, folder)
    actor_ids = {speaker: number for number, speaker in enumerate(sorted(set(speakers)), start=1)}
    index = datasets.Dataset.from_dict(
        {
            "audio": [str(path) for path in paths],
            "emotion": [EMOTIONS.index(emotion) for _, emotion in kept],
            "actor": [actor_ids[speaker] for speaker in speakers],
            "speaker": speakers,
            "corpus": [name] * len(kept),
            "split": splits,
            "file": [row["path"] for row, _ in kept],
        },
        features=CORPUS_FEATURES,
    )
    # As for RAVDESS folders: name the index after what it holds, so the decoded cache is found again.
    stamp = hashlib.sha256()
    for manifest_file in (MANIFEST_FILE, LABEL_MAP_FILE):
        if (folder / manifest_file).is_file():
            stamp.update((folder / manifest_file).read_bytes())
    stamp.update(files_fingerprint(paths).encode())
    stamp.update(name.encode())
    index._fingerprint = f"corpus-{stamp.hexdigest()[:24]}"
    return decode_index(index, SAMPLING_RATE, skip_unreadable=False)


def _read_manifest(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = [column.strip() for column in reader.fieldnames or []]
            rows, line_numbers = [], []  # each row's line in the file (the reader skips blank lines)
            for row in reader:
                rows.append({key.strip(): (value or "").strip() for key, value in row.items() if key})
                line_numbers.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: could not be read as a CSV manifest ({error}).") from error
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise DataError(
            f"{path}: the manifest lacks the column(s) {', '.join(missing)} "
            f"(needed: {', '.join(REQUIRED_COLUMNS)}; optional: split)."
        )
    if not rows:
        raise DataError(f"{path}: the manifest lists no clips.")
    blank = next((number for number, row in zip(line_numbers, rows) if not all(row[c] for c in REQUIRED_COLUMNS)), None)
    if blank:
        raise DataError(f"{path}, line {blank}: path, emotion and speaker must all be filled in.")
    # A path that leaves the folder would make the corpus's name, licence and cache stand for
    # clips it does not hold, and "a/../b.wav" would slip past the check for a clip listed twice.
    outside = next(((number, row["path"]) for number, row in zip(line_numbers, rows) if _leaves_folder(row["path"])), None)
    if outside:
        raise DataError(
            f"{path}, line {outside[0]}: {outside[1]} is not inside the corpus folder; "
            "list each clip by its path relative to the folder, without '..'."
        )
    first_line: dict[tuple[str, ...], int] = {}
    for number, row in zip(line_numbers, rows):  # a clip listed twice would count twice, as "./a.wav" and "a.wav" too
        if (earlier := first_line.setdefault(PurePosixPath(row["path"]).parts, number)) != number:
            raise DataError(f"{path}, lines {earlier} and {number}: {row['path']} is listed twice; list each clip once.")
    return rows


def _leaves_folder(clip_path: str) -> bool:
    """Whether a manifest's clip path is absolute or climbs out with '..' ("/" or "\\" alike)."""
    path = PureWindowsPath(clip_path)  # reads both slashes; "/x" and "C:/x" have an anchor
    return path.anchor != "" or ".." in path.parts


def _read_label_map(path: Path) -> dict[str, str | None]:
    if not path.is_file():
        return {}
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: must be a JSON object mapping the corpus's labels to ours (or null).")
    for label, target in mapping.items():
        if target is not None and target not in EMOTIONS:
            raise DataError(
                f"{path}: '{label}' maps to '{target}', which is not one of our emotions "
                f"({', '.join(EMOTIONS)}) nor null."
            )
    return {str(label).strip(): target for label, target in mapping.items()}


def _map_labels(labels: list[str], label_map: dict[str, str | None], folder: Path) -> list[str | None]:
    """Our emotion name (or None: left out) for each of the corpus's labels."""
    mapped, unknown = [], set()
    for label in labels:
        if label in label_map:
            mapped.append(label_map[label])
            continue
        emotion = canonical_emotion(label)
        if emotion is None:
            unknown.add(label)
        mapped.append(emotion)
    if unknown:
        where = LABEL_MAP_FILE if (folder / LABEL_MAP_FILE).is_file() else f"a {LABEL_MAP_FILE} beside {MANIFEST_FILE} (the folder has none)"
        raise DataError(
            f"{folder}: the label(s) {', '.join(sorted(unknown))} are not among our emotions "
            f"({', '.join(EMOTIONS)}); map each one in {where} to one of ours, or to null "
            "to leave its clips out."
        )
    return mapped


def _split_of(row: dict, folder: Path) -> str:
    value = row.get("split", "").lower()
    if not value:
        return ""
    if value not in SPLIT_NAMES:
        raise DataError(f"{folder}: unknown split '{row['split']}' for {row['path']} (use train, validation or test).")
    return SPLIT_NAMES[value]


def _check_speaker_disjoint(speakers: list[str], splits: list[str], folder: Path) -> None:
    """A speaker in two splits would let a model be tested on a voice it trained on."""
    seen: dict[str, str] = {}
    for speaker, split in zip(speakers, splits):
        if seen.setdefault(speaker, split) != split:
            name = speaker.split("/", 1)[1]
            if not (seen[speaker] and split):
                raise DataError(
                    f"{folder}: speaker {name} has a split for some clips ('{seen[speaker] or split}') and none for "
                    f"others; give every clip of a speaker the same split, or leave the column empty for all."
                )
            raise DataError(
                f"{folder}: speaker {name} is in both the '{seen[speaker]}' and the '{split}' split; splits must be "
                "speaker-disjoint."
            )


def source_location(source: str) -> str:
    """Where a dataset source lies: a folder by its resolved path, however it is spelled; a Hub
    id (or a path not here) as given."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _check_no_recording_in_two_corpora(combined: datasets.Dataset) -> None:
    """The same recording in two corpora (a corpus and a copy of it under another folder name)
    would put its speaker in twice, under two names, so a speaker could be tested on what they
    trained on: refused, by the clips' decoded audio (under a second for 4828 clips)."""
    first_heard: dict[str, tuple[str, str]] = {}
    for digest, corpus, file in zip(clip_digests(combined), combined["corpus"], combined["file"]):
        corpus_first, file_first = first_heard.setdefault(digest, (corpus, file))
        if corpus_first != corpus:
            raise DataError(
                f"{corpus_first}/{file_first} and {corpus}/{file} are the same recording, so {corpus_first} and "
                f"{corpus} share clips (a corpus and a copy of it?): give each corpus once."
            )


def _check_each_given_once(sources: list[str]) -> None:
    """The same corpus twice would put each of its speakers in twice, under two names, so a
    speaker could be tested on what they trained on: refused."""
    where = [source_location(source) for source in sources]
    twice = sorted({source for source, place in zip(sources, where) if where.count(place) > 1})
    if twice:
        raise DataError(f"{', '.join(twice)}: the same corpus is given twice; give each corpus once.")


def corpus_names_of(sources: list[str]) -> list[str]:
    """The corpus names `load_corpora` gives `sources`: folder names (Hub ids with / replaced),
    made unique by a number where two folders of the same name collide."""
    names = [Path(source).expanduser().resolve().name if Path(source).expanduser().is_dir() else source.replace("/", "-") for source in sources]
    return [name if names.count(name) == 1 else f"{name}-{names[:i].count(name) + 1}" for i, name in enumerate(names)]


def _common_columns(dataset: datasets.Dataset, name: str) -> datasets.Dataset:
    """A loaded corpus in CORPUS_FEATURES' columns; RAVDESS actors become speakers 'name/01'."""
    if "speaker" not in dataset.column_names:  # RAVDESS
        speakers = [f"{name}/{actor:02d}" for actor in dataset["actor"]]
        dataset = dataset.add_column("speaker", speakers)
        dataset = dataset.add_column("corpus", [name] * dataset.num_rows)
        dataset = dataset.add_column("split", [""] * dataset.num_rows)
    else:  # a manifest corpus loaded under its folder name: rename to the combination's name
        old = dataset["corpus"][0]
        if old != name:
            speakers = [f"{name}/{speaker.split('/', 1)[1]}" for speaker in dataset["speaker"]]
            dataset = dataset.remove_columns(["speaker", "corpus"])
            dataset = dataset.add_column("speaker", speakers)
            dataset = dataset.add_column("corpus", [name] * dataset.num_rows)
    features = CORPUS_FEATURES.copy()
    features["audio"] = dataset.features["audio"]
    dataset = dataset.select_columns(list(features))
    # `cast` writes the whole corpus, audio and all, to a new cache file (184 MB for nEMO's 4481
    # clips): only where a column's type differs.
    return dataset if dataset.features == features else dataset.cast(features)


def interleave_speakers(speakers_per_corpus: list[list[str]]) -> dict[str, int]:
    """Integer ids 1, 2, ... taking one speaker from each corpus in turn.

    Actor folds are consecutive ids, so interleaving puts speakers of every corpus into every
    fold, and the validation group (the next ids) too.
    """
    queues = [sorted(speakers) for speakers in speakers_per_corpus]
    order = []
    for position in range(max(len(queue) for queue in queues)):
        order += [queue[position] for queue in queues if position < len(queue)]
    return {speaker: number for number, speaker in enumerate(order, start=1)}


def _with_actor_ids(dataset: datasets.Dataset, ids: dict[str, int]) -> datasets.Dataset:
    actors = [ids[speaker] for speaker in dataset["speaker"]]
    dataset = dataset.remove_columns("actor").add_column("actor", actors, feature=datasets.Value("int32"))
    return dataset.select_columns(list(CORPUS_FEATURES))


# --- Who is tested -------------------------------------------------------------------------------


def actors_of_speakers(dataset: datasets.Dataset, names: list[str]) -> list[int]:
    """Integer actor ids of speakers named as in the manifest ("spk1") or namespaced ("corpus/spk1")."""
    if "speaker" not in dataset.column_names:
        raise DataError("This dataset is RAVDESS: name test speakers with --test-actors (e.g. 21-24).")
    ids: dict[str, int] = {}
    bare: dict[str, set[str]] = {}  # a bare name -> the namespaced speakers it could mean
    for speaker, actor in zip(dataset["speaker"], dataset["actor"]):
        ids[speaker] = actor
        bare.setdefault(speaker.split("/", 1)[1], set()).add(speaker)
    ambiguous = [name for name in names if name not in ids and len(bare.get(name, ())) > 1]
    if ambiguous:
        meant = "; ".join(f"{name} is {' and '.join(sorted(bare[name]))}" for name in ambiguous)
        raise DataError(f"Ambiguous speaker name(s): {meant}; write the corpus too, as corpus/speaker.")
    ids.update({name: ids[next(iter(speakers))] for name, speakers in bare.items() if len(speakers) == 1 and name not in ids})
    unknown = [name for name in names if name not in ids]
    if unknown:
        raise DataError(f"Unknown speaker(s) {', '.join(unknown)}; the dataset has {', '.join(sorted(set(dataset['speaker']))[:12])}, ...")
    return sorted({ids[name] for name in names})


def manifest_split_actors(dataset: datasets.Dataset) -> tuple[list[int], list[int]] | None:
    """(test, validation) actor ids from the manifests' split column, or None if none gives one."""
    if "split" not in dataset.column_names:
        return None
    splits = np.asarray(dataset["split"])
    actors = np.asarray(dataset["actor"])
    test = sorted({int(a) for a in actors[splits == "test"]})
    if not test:
        return None
    return test, sorted({int(a) for a in actors[splits == "validation"]})


def speaker_names(dataset: datasets.Dataset, actors: list[int]) -> list[str]:
    """The speaker names of actor ids (RAVDESS: the ids themselves, as text)."""
    if "speaker" not in dataset.column_names:
        return [str(actor) for actor in actors]
    names = dict(zip(dataset["actor"], dataset["speaker"]))
    return [names[actor] for actor in actors]
